//! Round trips: every packet type of both versions, generated valid, encoded then decoded,
//! comes back equal, and the decode consumes exactly the encoded bytes.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use protocol::{DecodeError, Decoder, Packet, ProtocolVersion, Publish, QoS, TopicName};

use common::{encode, packet, publish, VERSIONS};

/// Decodes `bytes` statelessly as version `v` with no size limit.
fn decode_all(bytes: &[u8], v: ProtocolVersion) -> (Packet, usize) {
    Packet::decode(bytes, v, u32::MAX)
        .expect("valid bytes decode")
        .expect("the whole packet is there")
}

fn assert_round_trip(p: &Packet, v: ProtocolVersion) {
    let bytes = encode(p, v);
    let (back, used) = decode_all(&bytes, v);
    assert_eq!(
        used,
        bytes.len(),
        "decode consumes exactly the encoded length"
    );
    assert_eq!(&back, p);
    assert_eq!(
        p.encoded_len(v),
        Ok(bytes.len()),
        "encoded_len is the encoded size"
    );
    if let Packet::Connect(c) = p {
        assert_eq!(
            c.encoded_len(),
            Ok(bytes.len()),
            "a CONNECT's own encoded_len"
        );
    }
    // One byte short is never a packet yet.
    assert_eq!(
        Packet::decode(&bytes[..bytes.len() - 1], v, u32::MAX),
        Ok(None)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_mqtt_3_1_1_packet_survives_encode_then_decode(p in packet(ProtocolVersion::V311)) {
        assert_round_trip(&p, ProtocolVersion::V311);
    }

    #[test]
    fn every_mqtt_5_packet_survives_encode_then_decode(p in packet(ProtocolVersion::V5)) {
        assert_round_trip(&p, ProtocolVersion::V5);
    }

    #[test]
    fn a_packet_followed_by_another_decodes_without_touching_the_second(
        a in packet(ProtocolVersion::V5),
        b in packet(ProtocolVersion::V5),
    ) {
        let v = ProtocolVersion::V5;
        let mut bytes = encode(&a, v);
        let first = bytes.len();
        bytes.extend(encode(&b, v));
        let (back, used) = decode_all(&bytes, v);
        prop_assert_eq!(used, first);
        prop_assert_eq!(back, a);
        prop_assert_eq!(decode_all(&bytes[first..], v).0, b);
    }
}

#[test]
fn the_stateless_decode_keeps_the_topic_alias_and_an_alias_only_publish_has_an_empty_topic() {
    // [MQTT-3.3.2-8] an alias-only PUBLISH: topic length 0, Topic Alias 3.
    let bytes = [0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x03, b'h', b'i'];
    let (p, used) = decode_all(&bytes, ProtocolVersion::V5);
    assert_eq!(used, bytes.len());
    let Packet::Publish(publish) = &p else {
        panic!("not a publish: {p:?}")
    };
    assert!(publish.topic.is_empty());
    assert_eq!(publish.properties.topic_alias, Some(3));
    assert_eq!(publish.payload, Bytes::from_static(b"hi"));
    // And it encodes back to the same bytes.
    assert_eq!(encode(&p, ProtocolVersion::V5), bytes);
}

fn alias_publish(topic: &str, alias: u16, payload: &'static [u8]) -> Vec<u8> {
    let mut p = Publish::new(TopicName::new("placeholder").unwrap(), payload);
    p.properties.topic_alias = Some(alias);
    let mut bytes = encode(&Packet::Publish(p), ProtocolVersion::V5);
    if topic.is_empty() {
        // Re-encode by hand with an empty topic: TopicName cannot be empty outside the codec.
        bytes = Vec::new();
        let body_len = 2 + 1 + 3 + payload.len();
        bytes.extend([0x30, body_len as u8, 0x00, 0x00, 0x03, 0x23]);
        bytes.extend(alias.to_be_bytes());
        bytes.extend(payload);
    } else {
        let (Packet::Publish(mut p), _) = decode_all(&bytes, ProtocolVersion::V5) else {
            unreachable!()
        };
        p.topic = TopicName::new(topic).unwrap();
        bytes = encode(&Packet::Publish(p), ProtocolVersion::V5);
    }
    bytes
}

fn decode_one(d: &mut Decoder, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut input = bytes;
    let out = d.decode(&mut input);
    if out.is_ok() {
        assert!(input.is_empty(), "one whole packet is consumed");
    }
    out
}

#[test]
fn the_decoder_resolves_an_alias_set_earlier_and_strips_it() {
    // [MQTT-3.3.2-8] ... the receiver maps the alias to the topic of an earlier PUBLISH.
    let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
    d.set_topic_alias_maximum(10);
    let first = decode_one(&mut d, &alias_publish("a/b", 7, b"one"))
        .unwrap()
        .unwrap();
    let Packet::Publish(first) = first else {
        panic!("not a publish")
    };
    assert_eq!(first.topic, "a/b");
    assert_eq!(
        first.properties.topic_alias, None,
        "the decoder strips the alias"
    );
    let second = decode_one(&mut d, &alias_publish("", 7, b"two"))
        .unwrap()
        .unwrap();
    let Packet::Publish(second) = second else {
        panic!("not a publish")
    };
    assert_eq!(second.topic, "a/b");
    assert_eq!(second.payload, Bytes::from_static(b"two"));
    assert_eq!(second.properties.topic_alias, None);
    // A new topic for the same alias replaces the mapping.
    decode_one(&mut d, &alias_publish("c", 7, b"3")).unwrap();
    let Some(Packet::Publish(third)) = decode_one(&mut d, &alias_publish("", 7, b"4")).unwrap()
    else {
        panic!("not a publish")
    };
    assert_eq!(third.topic, "c");
    assert_eq!(third.qos, QoS::AtMostOnce);
}

#[test]
fn a_topic_alias_above_the_maximum_is_refused() {
    // [MQTT-3.3.2-9] a Topic Alias greater than the receiver's Topic Alias Maximum.
    let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
    d.set_topic_alias_maximum(4);
    let err = decode_one(&mut d, &alias_publish("a", 5, b"x")).unwrap_err();
    assert_eq!(err, DecodeError::TopicAliasInvalid(5));
    assert_eq!(err.reason_code(), protocol::ReasonCode::TopicAliasInvalid);
}

#[test]
fn any_topic_alias_is_refused_when_the_maximum_is_zero() {
    // [MQTT-3.3.2-9] with no Topic Alias Maximum announced, every alias is above it.
    let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
    let err = decode_one(&mut d, &alias_publish("a", 1, b"x")).unwrap_err();
    assert_eq!(err, DecodeError::TopicAliasInvalid(1));
}

#[test]
fn a_topic_alias_of_zero_is_refused() {
    // [MQTT-3.3.2-8] a Topic Alias of 0 is not permitted.
    let bytes = [
        0x30, 0x09, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00, b'h', b'i',
    ];
    let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
    d.set_topic_alias_maximum(10);
    let err = decode_one(&mut d, &bytes).unwrap_err();
    assert_eq!(err, DecodeError::TopicAliasInvalid(0));
    assert_eq!(err.reason_code(), protocol::ReasonCode::TopicAliasInvalid);
    // The stateless decode refuses it too.
    assert_eq!(
        Packet::decode(&bytes, ProtocolVersion::V5, u32::MAX),
        Err(DecodeError::TopicAliasInvalid(0))
    );
}

#[test]
fn an_alias_only_publish_with_an_unknown_alias_is_refused() {
    // [MQTT-3.3.2-8] the alias must have been set on this connection before.
    let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
    d.set_topic_alias_maximum(10);
    decode_one(&mut d, &alias_publish("a", 2, b"x")).unwrap();
    let err = decode_one(&mut d, &alias_publish("", 3, b"x")).unwrap_err();
    assert_eq!(err, DecodeError::TopicAliasUnknown(3));
    assert_eq!(err.reason_code(), protocol::ReasonCode::ProtocolError);
}

#[test]
fn aliases_do_not_survive_a_reset() {
    // [MQTT-3.3.2-7] aliases live only as long as one network connection.
    let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
    d.set_topic_alias_maximum(10);
    decode_one(&mut d, &alias_publish("a", 2, b"x")).unwrap();
    d.reset();
    let err = decode_one(&mut d, &alias_publish("", 2, b"x")).unwrap_err();
    assert_eq!(err, DecodeError::TopicAliasUnknown(2));
}

#[test]
fn encoded_len_matches_encode_for_large_packets_across_the_remaining_length_boundaries() {
    // Table 1.5.2 (5.0) / 2.4 (3.1.1): remaining lengths of 1, 2 and 3 bytes.
    for v in VERSIONS {
        for payload_len in [
            0usize, 100, 118, 119, 120, 127, 128, 16_370, 16_372, 16_400, 70_000,
        ] {
            let mut p = Publish::new(TopicName::new("t/x").unwrap(), vec![0xA5; payload_len]);
            p.qos = QoS::AtLeastOnce;
            p.packet_id = std::num::NonZeroU16::new(9);
            let p = Packet::Publish(p);
            assert_round_trip(&p, v);
        }
    }
}

proptest! {
    #[test]
    fn generated_publishes_of_both_versions_round_trip(
        p3 in publish(ProtocolVersion::V311),
        p5 in publish(ProtocolVersion::V5),
    ) {
        assert_round_trip(&Packet::Publish(p3), ProtocolVersion::V311);
        assert_round_trip(&Packet::Publish(p5), ProtocolVersion::V5);
    }
}
