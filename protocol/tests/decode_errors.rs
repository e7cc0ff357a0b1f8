//! Every `DecodeError` reached through bytes, with the reason code a receiver would send.
#![allow(clippy::unwrap_used)]

use protocol::packet::PacketType;
use protocol::{DecodeError, Decoder, Packet, ProtocolVersion, ReasonCode, TopicError};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Hex with optional spaces.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The error decoding `s` as one whole packet of version `v`.
fn err(s: &str, v: ProtocolVersion) -> DecodeError {
    let bytes = hex(s);
    match Packet::decode(&bytes, v, u32::MAX) {
        Err(e) => {
            // The streaming decoder agrees with the stateless one.
            let mut d = Decoder::with_version(v, u32::MAX);
            let mut input = &bytes[..];
            assert_eq!(d.decode(&mut input), Err(e), "Decoder on {s}");
            e
        }
        other => panic!("{s} decoded as {other:?}"),
    }
}

fn ok(s: &str, v: ProtocolVersion) -> Packet {
    let bytes = hex(s);
    let (p, used) = Packet::decode(&bytes, v, u32::MAX).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    p
}

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const PROTOCOL_ERROR: ReasonCode = ReasonCode::ProtocolError;

// --- fixed header ---------------------------------------------------------------------

#[test]
fn packet_type_0_is_reserved() {
    // MQTT 5.0 table 2-1 / 3.1.1 table 2.1: 0 is Reserved (Forbidden).
    for v in [V3, V5] {
        let e = err("00 00", v);
        assert_eq!(e, DecodeError::ReservedPacketType(0));
        assert_eq!(e.reason_code(), MALFORMED);
    }
}

#[test]
fn packet_type_15_is_reserved_in_3_1_1_and_auth_in_5() {
    // MQTT 3.1.1 table 2.1: 15 is Reserved; MQTT 5.0 gives it to AUTH.
    let e = err("f0 00", V3);
    assert_eq!(e, DecodeError::ReservedPacketType(15));
    assert_eq!(e.reason_code(), MALFORMED);
    assert!(matches!(
        ok("f0 07 00 05 15 00 02 6d 31", V5),
        Packet::Auth(_)
    ));
    // The short form parses, but an AUTH without an Authentication Method is a Protocol
    // Error (5.0 3.15.2.2.2).
    let e = err("f0 00", V5);
    assert_eq!(e, DecodeError::PropertyValue(0x15));
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn pubrel_subscribe_and_unsubscribe_need_flags_0010() {
    // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: bits 3-0 are 0,0,1,0.
    let cases = [
        ("60 02 00 01", PacketType::PubRel, 0x0),
        ("63 02 00 01", PacketType::PubRel, 0x3),
        ("80 06 00 01 00 01 61 00", PacketType::Subscribe, 0x0),
        ("8a 06 00 01 00 01 61 00", PacketType::Subscribe, 0xA),
        ("a0 05 00 01 00 01 61", PacketType::Unsubscribe, 0x0),
        ("a6 05 00 01 00 01 61", PacketType::Unsubscribe, 0x6),
    ];
    for (bytes, packet_type, flags) in cases {
        let e = err(bytes, V3);
        assert_eq!(
            e,
            DecodeError::InvalidFlags { packet_type, flags },
            "{bytes}"
        );
        assert_eq!(e.reason_code(), MALFORMED);
    }
}

#[test]
fn every_other_packet_needs_flags_0000() {
    // [MQTT-2.1.3-1] (5.0 section 2.1.3: flags are "Reserved" where table 2-2 says so).
    let cases = [
        ("11 00", PacketType::Connect),
        ("22 02 00 00", PacketType::ConnAck),
        ("42 02 00 01", PacketType::PubAck),
        ("52 02 00 01", PacketType::PubRec),
        ("72 02 00 01", PacketType::PubComp),
        ("98 03 00 01 00", PacketType::SubAck),
        ("b1 02 00 01", PacketType::UnsubAck),
        ("c2 00", PacketType::PingReq),
        ("d4 00", PacketType::PingResp),
        ("e1 00", PacketType::Disconnect),
    ];
    for (bytes, packet_type) in cases {
        let flags = hex(bytes)[0] & 0x0F;
        let e = err(bytes, V3);
        assert_eq!(
            e,
            DecodeError::InvalidFlags { packet_type, flags },
            "{bytes}"
        );
    }
    assert_eq!(
        err("f1 00", V5),
        DecodeError::InvalidFlags {
            packet_type: PacketType::Auth,
            flags: 1
        }
    );
}

#[test]
fn connack_acknowledge_flags_other_than_session_present_are_malformed() {
    // [MQTT-3.2.2-1] bits 7-1 of the Connect Acknowledge Flags are reserved, set to 0.
    let e = err("20 02 02 00", V3);
    assert_eq!(
        e,
        DecodeError::InvalidFlags {
            packet_type: PacketType::ConnAck,
            flags: 2
        }
    );
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn a_remaining_length_of_five_bytes_is_malformed() {
    // Spec 1.5.5: at most four bytes.
    let e = err("30 ff ff ff ff 01", V5);
    assert_eq!(e, DecodeError::MalformedVarInt);
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn a_remaining_length_in_a_longer_form_than_needed_is_malformed() {
    // [MQTT-1.5.5-1] the minimum number of bytes: 0 as 80 00 is not.
    assert_eq!(err("c0 80 00", V5), DecodeError::MalformedVarInt);
    // And inside a property block (the property length 0 as 80 00).
    assert_eq!(
        err("40 05 00 01 00 80 00", V5),
        DecodeError::MalformedVarInt
    );
}

#[test]
fn a_packet_over_the_maximum_is_refused_from_its_fixed_header_alone() {
    // [MQTT-3.2.2-15] / 3.1.2.11.4: the size counts the whole packet; five header bytes are
    // all it takes, no body is waited for.
    let header = hex("30 ff ff ff 7f");
    let e = Packet::decode(&header, V5, 1000).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 268_435_455 + 5,
            max: 1000
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PacketTooLarge);
    let mut d = Decoder::with_version(V5, 1000);
    let mut input = &header[..];
    assert_eq!(d.decode(&mut input), Err(e));
    assert_eq!(d.buffered(), 0, "nothing is buffered for a refused packet");
    // Exactly at the limit is fine; one byte over is not.
    assert!(Packet::decode(&hex("c0 00"), V5, 2).unwrap().is_some());
    assert_eq!(
        Packet::decode(&hex("40 02"), V5, 3),
        Err(DecodeError::PacketTooLarge { size: 4, max: 3 })
    );
}

#[test]
fn an_unfinished_header_already_over_a_tiny_maximum_is_refused() {
    // The buffer never holds more than the maximum packet size, even below five bytes: two
    // continuation bytes mean a packet of at least 16 387 bytes.
    let mut d = Decoder::with_version(V5, 3);
    let mut input = &hex("30 80")[..];
    assert_eq!(d.decode(&mut input), Ok(None));
    assert_eq!(d.buffered(), 2);
    let mut input = &hex("80")[..];
    assert_eq!(
        d.decode(&mut input),
        Err(DecodeError::PacketTooLarge { size: 4, max: 3 })
    );
    assert!(d.buffered() <= 3);
}

// --- lengths --------------------------------------------------------------------------

#[test]
fn a_field_cut_off_by_the_remaining_length_is_truncated() {
    let e = err("40 01 00", V3);
    assert_eq!(e, DecodeError::Truncated("packet identifier"));
    assert_eq!(e.reason_code(), MALFORMED);
    // A string whose length prefix runs past the packet.
    assert_eq!(
        err("30 03 00 05 61", V3),
        DecodeError::Truncated("topic name")
    );
    // A property block longer than the packet.
    assert_eq!(
        err("40 04 00 01 00 09", V5),
        DecodeError::Truncated("properties")
    );
    // A CONNECT without its keep alive.
    assert_eq!(
        err("10 08 00 04 4d 51 54 54 04 02", V3),
        DecodeError::Truncated("keep alive")
    );
}

#[test]
fn bytes_after_the_last_field_are_trailing_bytes() {
    let e = err("40 03 00 01 00", V3);
    assert_eq!(e, DecodeError::TrailingBytes(1));
    assert_eq!(e.reason_code(), MALFORMED);
    assert_eq!(err("c0 02 00 00", V5), DecodeError::TrailingBytes(2));
    // A 3.1.1 DISCONNECT has no body (3.14.2).
    assert_eq!(err("e0 01 00", V3), DecodeError::TrailingBytes(1));
}

// --- strings and topics ---------------------------------------------------------------

#[test]
fn a_topic_of_invalid_utf8_is_malformed() {
    // [MQTT-1.5.4-1] well-formed UTF-8: C3 28 is not.
    let e = err("30 04 00 02 c3 28", V3);
    assert_eq!(e, DecodeError::InvalidUtf8);
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn a_topic_with_u0000_is_malformed() {
    // [MQTT-1.5.4-2] a UTF-8 string MUST NOT include U+0000.
    assert_eq!(err("30 04 00 02 61 00", V5), DecodeError::InvalidUtf8);
}

#[test]
fn a_topic_with_an_encoded_surrogate_is_malformed() {
    // [MQTT-1.5.4-1] U+D800..U+DFFF MUST NOT be encoded: ED A0 80 is U+D800.
    assert_eq!(err("30 05 00 03 ed a0 80", V3), DecodeError::InvalidUtf8);
}

#[test]
fn a_wildcard_in_a_publish_topic_is_topic_name_invalid() {
    // [MQTT-3.3.2-2] the Topic Name MUST NOT contain wildcard characters.
    let e = err("30 06 00 03 61 2f 2b 00", V5);
    assert_eq!(e, DecodeError::InvalidTopicName(TopicError::WildcardInName));
    assert_eq!(e.reason_code(), ReasonCode::TopicNameInvalid);
    assert_eq!(e.reason_code().as_u8(), 0x90);
    assert_eq!(
        err("30 04 00 02 23 61", V3),
        DecodeError::InvalidTopicName(TopicError::WildcardInName)
    );
}

#[test]
fn an_empty_topic_is_invalid_in_3_1_1() {
    // [MQTT-4.7.3-1] topic names are at least one character long.
    assert_eq!(
        err("30 02 00 00", V3),
        DecodeError::InvalidTopicName(TopicError::Empty)
    );
}

#[test]
fn an_empty_topic_without_a_topic_alias_is_a_protocol_error_in_5() {
    // 3.3.2.1: a zero-length Topic Name is allowed only with a Topic Alias.
    let e = err("30 03 00 00 00", V5);
    assert_eq!(e, DecodeError::EmptyTopicWithoutAlias);
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn an_invalid_topic_filter_is_topic_filter_invalid() {
    // [MQTT-4.7.1-3] '+' occupies a whole level; [MQTT-4.7.1-2] '#' is last.
    let e = err("82 08 00 01 00 03 61 2b 62 00", V3);
    assert_eq!(
        e,
        DecodeError::InvalidTopicFilter(TopicError::MisplacedSingleLevelWildcard)
    );
    assert_eq!(e.reason_code(), ReasonCode::TopicFilterInvalid);
    assert_eq!(e.reason_code().as_u8(), 0x8F);
    assert_eq!(
        err("a2 08 00 01 00 00 03 23 2f 61", V5),
        DecodeError::InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard)
    );
    // A shared subscription with nothing after the group (4.8.2).
    assert_eq!(
        err("82 0e 00 01 00 00 08 24 73 68 61 72 65 2f 67 00", V5),
        DecodeError::InvalidTopicFilter(TopicError::EmptySharedFilter)
    );
}

#[test]
fn a_will_topic_with_a_wildcard_is_topic_name_invalid() {
    // [MQTT-3.1.3-11] (3.1.1) the Will Topic is a UTF-8 string; as a topic name it has no
    // wildcards [MQTT-3.3.2-2].
    let e = err(
        "10 11 00 04 4d 51 54 54 04 06 00 3c 00 00 00 01 23 00 00",
        V3,
    );
    assert_eq!(e, DecodeError::InvalidTopicName(TopicError::WildcardInName));
}

// --- PUBLISH --------------------------------------------------------------------------

#[test]
fn qos_3_is_malformed() {
    // [MQTT-3.3.1-4] a PUBLISH MUST NOT have both QoS bits set.
    let e = err("36 05 00 01 61 00 01", V3);
    assert_eq!(e, DecodeError::InvalidQoS);
    assert_eq!(e.reason_code(), MALFORMED);
    // A subscription option QoS of 3 (3.8.3.1: Malformed).
    assert_eq!(err("82 06 00 01 00 01 61 03", V3), DecodeError::InvalidQoS);
}

#[test]
fn dup_on_a_qos_0_publish_is_malformed() {
    // [MQTT-3.3.1-2] DUP MUST be 0 for all QoS 0 messages.
    let e = err("38 03 00 01 61", V3);
    assert_eq!(e, DecodeError::DupOnQoS0);
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn packet_identifier_0_is_refused() {
    // [MQTT-2.2.1-3] (3.1.1) / [MQTT-2.2.1-3] (5.0): a non-zero packet identifier.
    let e = err("40 02 00 00", V3);
    assert_eq!(e, DecodeError::ZeroPacketId);
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
    assert_eq!(err("32 05 00 01 61 00 00", V5), DecodeError::ZeroPacketId);
    assert_eq!(
        err("82 06 00 00 00 01 61 00", V3),
        DecodeError::ZeroPacketId
    );
}

// --- CONNECT --------------------------------------------------------------------------

#[test]
fn a_protocol_name_other_than_mqtt_is_malformed() {
    // [MQTT-3.1.2-1] the protocol name MUST be "MQTT".
    let e = err("10 0c 00 04 4d 51 54 58 04 02 00 3c 00 00", V3);
    assert_eq!(e, DecodeError::InvalidProtocolName);
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn protocol_levels_3_and_6_are_unsupported() {
    // [MQTT-3.1.2-2] the server answers 0x01 (3.1.1) / 0x84 (5.0) for a level it does not
    // support: MQTT 3.1 ("MQIsdp", level 3), "MQTT" level 3, and level 6.
    let e = err("10 0e 00 06 4d 51 49 73 64 70 03 02 00 3c 00 00", V3);
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion(3));
    assert_eq!(e.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    assert_eq!(
        err("10 0c 00 04 4d 51 54 54 03 02 00 3c 00 00", V3),
        DecodeError::UnsupportedProtocolVersion(3)
    );
    assert_eq!(
        err("10 0c 00 04 4d 51 54 54 06 02 00 3c 00 00", V5),
        DecodeError::UnsupportedProtocolVersion(6)
    );
}

#[test]
fn the_connect_reserved_flag_is_malformed() {
    // [MQTT-3.1.2-3] the reserved flag MUST be 0.
    let e = err("10 0c 00 04 4d 51 54 54 04 03 00 3c 00 00", V3);
    assert_eq!(e, DecodeError::ConnectReservedFlag);
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn will_qos_or_retain_without_the_will_flag_or_will_qos_3_are_malformed() {
    // 3.1.1: [MQTT-3.1.2-13] Will QoS 0 without the Will Flag, [MQTT-3.1.2-14] Will QoS not
    // 3, [MQTT-3.1.2-15] Will Retain 0 without the Will Flag.
    // 5.0: [MQTT-3.1.2-11], [MQTT-3.1.2-12], [MQTT-3.1.2-13].
    for flags in ["0a", "12", "22"] {
        let e = err(
            &format!("10 0c 00 04 4d 51 54 54 04 {flags} 00 3c 00 00"),
            V3,
        );
        assert_eq!(e, DecodeError::InvalidWillFlags, "flags {flags}");
        assert_eq!(e.reason_code(), MALFORMED);
    }
    // Will Flag with Will QoS 3.
    assert_eq!(
        err("10 0d 00 04 4d 51 54 54 05 1e 00 3c 00 00 00", V5),
        DecodeError::InvalidWillFlags
    );
}

#[test]
fn a_password_without_a_user_name_is_malformed_in_3_1_1_only() {
    // [MQTT-3.1.2-22] (3.1.1) if the User Name Flag is 0, the Password Flag MUST be 0.
    let e = err("10 0f 00 04 4d 51 54 54 04 42 00 3c 00 00 00 01 70", V3);
    assert_eq!(e, DecodeError::PasswordWithoutUsername);
    assert_eq!(e.reason_code(), MALFORMED);
    // MQTT 5.0 (3.1.2.9) allows a password without a user name.
    let Packet::Connect(c) = ok("10 10 00 04 4d 51 54 54 05 42 00 3c 00 00 00 00 01 70", V5) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.username, None);
    assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
}

// --- properties -----------------------------------------------------------------------

#[test]
fn an_unknown_property_is_malformed() {
    // 2.2.2.2: 0x04 is not a property identifier.
    let e = err("30 06 00 01 61 02 04 00", V5);
    assert_eq!(e, DecodeError::InvalidProperty(0x04));
    assert_eq!(e.reason_code(), MALFORMED);
}

#[test]
fn a_property_the_packet_may_not_carry_is_malformed() {
    // 2.2.2.2: Session Expiry Interval (0x11) is not a PUBLISH property.
    let e = err("30 09 00 01 61 05 11 00 00 00 01", V5);
    assert_eq!(e, DecodeError::InvalidProperty(0x11));
    assert_eq!(e.reason_code(), MALFORMED);
    // Topic Alias (0x23) is not a CONNECT property.
    assert_eq!(
        err("10 10 00 04 4d 51 54 54 05 02 00 3c 03 23 00 01 00 00", V5),
        DecodeError::InvalidProperty(0x23)
    );
}

#[test]
fn a_property_given_twice_is_a_protocol_error() {
    // 3.3.2.3.2: it is a Protocol Error to include the Payload Format Indicator more than
    // once (and likewise for every property but User Property and Subscription Identifier).
    let e = err("30 08 00 01 61 04 01 00 01 01", V5);
    assert_eq!(e, DecodeError::DuplicateProperty(0x01));
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
    // Two Subscription Identifiers in a SUBSCRIBE (3.8.2.1.2).
    assert_eq!(
        err("82 0b 00 01 04 0b 01 0b 02 00 01 61 00", V5),
        DecodeError::DuplicateProperty(0x0B)
    );
}

#[test]
fn receive_maximum_0_is_a_protocol_error() {
    // 3.1.2.11.3: it is a Protocol Error to include the Receive Maximum with the value 0.
    let e = err("10 10 00 04 4d 51 54 54 05 02 00 3c 03 21 00 00 00 00", V5);
    assert_eq!(e, DecodeError::PropertyValue(0x21));
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn maximum_packet_size_0_is_a_protocol_error() {
    // 3.1.2.11.4: it is a Protocol Error to include a Maximum Packet Size of zero.
    let e = err(
        "10 12 00 04 4d 51 54 54 05 02 00 3c 05 27 00 00 00 00 00 00",
        V5,
    );
    assert_eq!(e, DecodeError::PropertyValue(0x27));
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn subscription_identifier_0_is_a_protocol_error() {
    // 3.8.2.1.2: it is a Protocol Error if the Subscription Identifier has a value of 0.
    let e = err("82 09 00 01 02 0b 00 00 01 61 00", V5);
    assert_eq!(e, DecodeError::PropertyValue(0x0B));
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn a_byte_property_out_of_its_range_is_a_protocol_error() {
    // 3.3.2.3.2 Payload Format Indicator is 0 or 1; 3.2.2.3.4 Maximum QoS is 0 or 1.
    assert_eq!(
        err("30 06 00 01 61 02 01 02", V5),
        DecodeError::PropertyValue(0x01)
    );
    assert_eq!(
        err("20 05 00 00 02 24 02", V5),
        DecodeError::PropertyValue(0x24)
    );
}

// --- reason codes ---------------------------------------------------------------------

#[test]
fn a_reason_code_not_allowed_in_the_packet_is_malformed() {
    // Each packet's reason code table: 3.2.2.2, 3.4.2.1, 3.6.2.1, 3.9.3, 3.11.3, 3.14.2.1,
    // 3.15.2.1; and 3.1.1's CONNACK return codes 0-5 and SUBACK codes 0, 1, 2, 0x80.
    let cases = [
        ("20 03 00 8e 00", V5, 0x8E), // Session taken over is not a CONNACK code
        ("20 02 00 06", V3, 0x06),    // 3.1.1 return codes stop at 5
        ("40 03 00 01 11", V5, 0x11), // No subscription existed: UNSUBACK only
        ("50 03 00 01 03", V5, 0x03), // not a reason code at all
        ("62 03 00 01 10", V5, 0x10), // PUBREL: 0x00 or 0x92 only
        ("70 03 00 01 80", V5, 0x80), // PUBCOMP likewise
        ("90 04 00 01 00 11", V5, 0x11),
        ("90 03 00 01 87", V3, 0x87), // 3.1.1 SUBACK failure is 0x80 only
        ("b0 04 00 01 00 01", V5, 0x01),
        ("e0 01 84", V5, 0x84), // Unsupported Protocol Version: CONNACK only
        ("f0 01 80", V5, 0x80), // AUTH: 0x00, 0x18, 0x19
    ];
    for (bytes, v, code) in cases {
        let e = err(bytes, v);
        assert_eq!(e, DecodeError::InvalidReasonCode(code), "{bytes}");
        assert_eq!(e.reason_code(), MALFORMED);
    }
}

// --- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------

#[test]
fn subscribe_and_unsubscribe_without_filters_are_protocol_errors() {
    // [MQTT-3.8.3-3] (3.1.1) / [MQTT-3.8.3-2] (5.0) at least one filter in SUBSCRIBE;
    // [MQTT-3.10.3-2] at least one in UNSUBSCRIBE.
    let e = err("82 02 00 01", V3);
    assert_eq!(e, DecodeError::NoTopicFilters);
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
    assert_eq!(err("82 03 00 01 00", V5), DecodeError::NoTopicFilters);
    assert_eq!(err("a2 02 00 01", V3), DecodeError::NoTopicFilters);
    assert_eq!(err("a2 03 00 01 00", V5), DecodeError::NoTopicFilters);
    // A SUBACK without reason codes, likewise (3.9.3: one per subscription).
    assert_eq!(err("90 02 00 01", V3), DecodeError::NoTopicFilters);
    // A 5.0 UNSUBACK has one reason code per filter [MQTT-3.11.3-1]; the 3.1.1 one has none.
    assert_eq!(err("b0 03 00 01 00", V5), DecodeError::NoTopicFilters);
    assert!(matches!(ok("b0 02 00 01", V3), Packet::UnsubAck(_)));
}

#[test]
fn reserved_subscription_option_bits_are_malformed() {
    // [MQTT-3.8.3-5] (5.0) bits 6 and 7 are reserved; [MQTT-3-8.3-4] (3.1.1) bits 2-7.
    let e = err("82 07 00 01 00 00 01 61 40", V5);
    assert_eq!(e, DecodeError::SubscriptionOptionsReserved);
    assert_eq!(e.reason_code(), MALFORMED);
    assert_eq!(
        err("82 06 00 01 00 01 61 04", V3),
        DecodeError::SubscriptionOptionsReserved
    );
}

#[test]
fn retain_handling_3_is_a_protocol_error() {
    // 3.8.3.1: it is a Protocol Error to send a Retain Handling value of 3.
    let e = err("82 07 00 01 00 00 01 61 30", V5);
    assert_eq!(e, DecodeError::InvalidRetainHandling);
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error_in_5() {
    // [MQTT-3.8.3-4] it is a Protocol Error to set No Local on a Shared Subscription.
    // "$share/g/a" with options 0x04.
    let e = err("82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04", V5);
    assert_eq!(e, DecodeError::NoLocalOnSharedSubscription);
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
    // Without No Local it is fine.
    assert!(matches!(
        ok("82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 00", V5),
        Packet::Subscribe(_)
    ));
}

// --- topic aliases --------------------------------------------------------------------

#[test]
fn a_topic_alias_above_the_maximum_is_topic_alias_invalid() {
    // [MQTT-3.3.2-9] no greater than the Topic Alias Maximum the receiver sent.
    let bytes = hex("30 08 00 01 61 03 23 00 05 78");
    let mut d = Decoder::with_version(V5, 1 << 16);
    d.set_topic_alias_maximum(4);
    let mut input = &bytes[..];
    let e = d.decode(&mut input).unwrap_err();
    assert_eq!(e, DecodeError::TopicAliasInvalid(5));
    assert_eq!(e.reason_code(), ReasonCode::TopicAliasInvalid);
    // [MQTT-3.3.2-8] 0 is never a Topic Alias, even statelessly.
    assert_eq!(
        err("30 08 00 01 61 03 23 00 00 78", V5),
        DecodeError::TopicAliasInvalid(0)
    );
}

#[test]
fn an_alias_only_publish_with_an_unset_alias_is_topic_alias_unknown() {
    // [MQTT-3.3.2-8]: an empty topic uses the mapping set earlier; there is none.
    let bytes = hex("30 07 00 00 03 23 00 02 78");
    let mut d = Decoder::with_version(V5, 1 << 16);
    d.set_topic_alias_maximum(4);
    let mut input = &bytes[..];
    let e = d.decode(&mut input).unwrap_err();
    assert_eq!(e, DecodeError::TopicAliasUnknown(2));
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
}

#[test]
fn subscription_qos_3_is_a_protocol_error_in_5_and_malformed_in_3_1_1() {
    // 5.0 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3";
    // 3.1.1 [MQTT-3.8.3-4]: malformed.
    let e = err("82 07 00 01 00 00 01 61 03", V5);
    assert_eq!(e, DecodeError::InvalidSubscriptionQoS);
    assert_eq!(e.reason_code(), PROTOCOL_ERROR);
    assert_eq!(err("82 06 00 01 00 01 61 03", V3), DecodeError::InvalidQoS);
}

#[test]
fn a_bad_first_byte_is_refused_before_the_body_arrives() {
    // [MQTT-2.1.3-1]: the flags are checked from the fixed header, so a peer cannot make the
    // decoder buffer a body for a packet that is already invalid.
    let mut decoder = Decoder::with_version(V5, 1 << 20);
    let header = hex("42 ff ff 03"); // PUBACK with flags 0010, claiming ~64 KiB
    let mut input = &header[..];
    assert_eq!(
        decoder.decode(&mut input),
        Err(DecodeError::InvalidFlags {
            packet_type: PacketType::PubAck,
            flags: 2
        })
    );
    assert_eq!(decoder.buffered(), 0);
}
