//! Hand-checked byte vectors: the examples of the specifications, and packets captured from
//! the real Debian `mosquitto-clients` 2.0.11 talking to a real `mosquitto` 2.0.11 broker.
//!
//! Capture set-up: `mosquitto -c mosq.conf` with `listener 18830 127.0.0.1`,
//! `allow_anonymous true`, `persistence false`, and a Python relay on 127.0.0.1:18831 that
//! forwarded both directions and logged each packet (framed by its fixed header). Every
//! client command below ran with `-h 127.0.0.1 -p 18831`, abbreviated `$H`.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use protocol::wire::read_var_int;
use protocol::{
    FixedHeader, Packet, ProtocolVersion, PubResp, QoS, ReasonCode, RetainHandling, TopicName,
};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes the whole vector as one packet, checking every byte is used.
fn decode(s: &str, v: ProtocolVersion) -> Packet {
    let bytes = hex(s);
    let (p, used) = Packet::decode(&bytes, v, u32::MAX).unwrap().unwrap();
    assert_eq!(used, bytes.len(), "the vector is exactly one packet");
    p
}

fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    let n = p.encode(v, &mut out).unwrap();
    assert_eq!(n, out.len());
    assert_eq!(p.encoded_len(v).unwrap(), n);
    out
}

/// Decodes, and checks that re-encoding gives the identical bytes.
fn decode_exact(s: &str, v: ProtocolVersion) -> Packet {
    let p = decode(s, v);
    assert_eq!(
        encode(&p, v),
        hex(s),
        "re-encoding gives the captured bytes"
    );
    p
}

/// For vectors whose properties are not in identifier order (the spec sets no order, ours
/// is by identifier): re-encoding gives a packet of the same length that decodes equal.
fn decode_reordered(s: &str, v: ProtocolVersion) -> Packet {
    let p = decode(s, v);
    let again = encode(&p, v);
    assert_eq!(again.len(), hex(s).len());
    assert_ne!(again, hex(s), "the captured order differs from ours");
    assert_eq!(Packet::decode(&again, v, u32::MAX).unwrap().unwrap().0, p);
    p
}

fn id(n: u16) -> protocol::PacketId {
    protocol::PacketId::new(n).unwrap()
}

// ---------------------------------------------------------------------------------------
// Specification examples.

#[test]
fn the_remaining_length_table_decodes_and_encodes_at_every_boundary() {
    // MQTT 5.0 table 1-1 / MQTT 3.1.1 table 2.4 [MQTT-1.5.5-1].
    let table: [(u32, &[u8]); 8] = [
        (0, &[0x00]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ];
    for (value, bytes) in table {
        assert_eq!(read_var_int(bytes), Ok(Some((value, bytes.len()))));
        let mut header = vec![0x30];
        header.extend_from_slice(bytes);
        let parsed = FixedHeader::parse(&header).unwrap().unwrap();
        assert_eq!(parsed.remaining, value);
        assert_eq!(parsed.header_len, 1 + bytes.len());
    }
    // Packets whose remaining length is exactly at the boundaries encode those bytes.
    for (remaining, prefix) in [
        (127usize, &[0x30u8, 0x7F][..]),
        (128, &[0x30, 0x80, 0x01]),
        (16_383, &[0x30, 0xFF, 0x7F]),
        (16_384, &[0x30, 0x80, 0x80, 0x01]),
        (2_097_151, &[0x30, 0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x30, 0x80, 0x80, 0x80, 0x01]),
    ] {
        // 3.1.1 QoS 0 PUBLISH to "t": 3 bytes of topic, the rest payload.
        let p = Packet::Publish(protocol::Publish::new(
            TopicName::new("t").unwrap(),
            vec![b'x'; remaining - 3],
        ));
        let bytes = encode(&p, V3);
        assert_eq!(
            &bytes[..prefix.len()],
            prefix,
            "remaining length {remaining}"
        );
        assert_eq!(bytes.len(), prefix.len() + remaining);
        assert_eq!(Packet::decode(&bytes, V3, u32::MAX).unwrap().unwrap().0, p);
    }
}

/// MQTT 5.0 section 3.1.2.12, "Variable Header example" (figure 3-6): protocol name, version
/// 5, flags 0xCE (user name, password, will QoS 1, will, clean start), keep alive 10,
/// properties length 5 with Session Expiry Interval 10. The payload (client id "cid", no
/// will properties, will topic "w", will payload "bye", user "u", password "p") is ours.
const SPEC_V5_CONNECT: &str = concat!(
    "1024",
    "00044d515454",
    "05",
    "ce",
    "000a",
    "05",
    "110000000a",
    "0003636964",
    "00",
    "000177",
    "0003627965",
    "000175",
    "000170",
);

#[test]
fn the_mqtt_5_connect_variable_header_example_decodes() {
    // [MQTT-3.1.2-1] name "MQTT", [MQTT-3.1.2-2] level 5.
    let Packet::Connect(c) = decode_exact(SPEC_V5_CONNECT, V5) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V5);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.properties.session_expiry_interval, Some(10));
    assert_eq!(c.client_id, "cid");
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
    assert_eq!(will.topic, "w");
    assert_eq!(will.payload, Bytes::from_static(b"bye"));
    assert_eq!(c.username.as_deref(), Some("u"));
    assert_eq!(c.password, Some(Bytes::from_static(b"p")));
}

/// MQTT 3.1.1 section 3.1.2.10, "Variable header non normative example" (figure 3.6):
/// "MQTT", level 4, flags 0xCE, keep alive 10; the payload is ours, as above.
const SPEC_V311_CONNECT: &str = concat!(
    "101d",
    "00044d515454",
    "04",
    "ce",
    "000a",
    "0003636964",
    "000177",
    "0003627965",
    "000175",
    "000170",
);

#[test]
fn the_mqtt_3_1_1_connect_variable_header_example_decodes() {
    let Packet::Connect(c) = decode_exact(SPEC_V311_CONNECT, V3) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V3);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.will.as_ref().unwrap().qos, QoS::AtLeastOnce);
    assert_eq!(c.username.as_deref(), Some("u"));
    assert!(c.properties.is_empty());
}

#[test]
fn the_utf8_string_example_is_a_valid_topic() {
    // MQTT 5.0 figure 1-1 / 3.1.1 figure 1.1: "A\u{2A6D4}" is 00 05 41 F0 AA 9B 94.
    for (v, s) in [(V3, "3007000541f0aa9b94"), (V5, "3008000541f0aa9b9400")] {
        let Packet::Publish(p) = decode_exact(s, v) else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.topic, "A\u{2A6D4}");
        assert!(p.payload.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// MQTT 3.1.1, captured.

/// `mosquitto_pub $H -V mqttv311 -i pub311 -t test/topic -m hello -q 0`: client to server.
const MOSQ_V3_CONNECT: &str = "101200044d5154540402003c0006707562333131";
/// Same session, server to client.
const MOSQ_V3_CONNACK: &str = "20020000";
/// Same session.
const MOSQ_V3_PUBLISH_QOS0: &str = "3011000a746573742f746f70696368656c6c6f";
/// Same session.
const MOSQ_V3_DISCONNECT: &str = "e000";
/// `mosquitto_pub $H -V mqttv311 -i pubq1 -t a/b -m payload1 -q 1 -r`.
const MOSQ_V3_PUBLISH_QOS1_RETAIN: &str = "330f0003612f6200017061796c6f616431";
/// Same session, server to client.
const MOSQ_V3_PUBACK: &str = "40020001";
/// `mosquitto_pub $H -V mqttv311 -i pubq2 -t a/b/c -m q2 -q 2`: PUBLISH, then PUBREC from the
/// broker, PUBREL, PUBCOMP from the broker.
const MOSQ_V3_PUBLISH_QOS2: &str = "340b0005612f622f6300017132";
const MOSQ_V3_PUBREC: &str = "50020001";
const MOSQ_V3_PUBREL: &str = "62020001";
const MOSQ_V3_PUBCOMP: &str = "70020001";
/// `mosquitto_pub $H -V mqttv311 -i willy -u alice -P secret --will-topic will/t
/// --will-payload bye --will-qos 1 --will-retain -t x -m y`.
const MOSQ_V3_CONNECT_WILL_LOGIN: &str = concat!(
    "102d00044d51545404ee003c000577696c6c79000677696c6c2f74000362796500",
    "05616c6963650006736563726574"
);
/// `mosquitto_sub $H -V mqttv311 -c -i subid -q 1 -t 'sport/+/score' -t 'x/#' -E`: CONNECT
/// (clean session off), SUBSCRIBE, SUBACK from the broker.
const MOSQ_V3_CONNECT_PERSISTENT: &str = "101100044d5154540400003c00057375626964";
const MOSQ_V3_SUBSCRIBE: &str = "82180001000d73706f72742f2b2f73636f7265010003782f2301";
const MOSQ_V3_SUBACK: &str = "900400010101";
/// `mosquitto_sub $H -V mqttv311 -i pinger -k 5 -t 'p/q' -W 7`: PINGREQ after 5 s, PINGRESP.
const MOSQ_V3_PINGREQ: &str = "c000";
const MOSQ_V3_PINGRESP: &str = "d000";
/// `mosquitto_sub $H -V mqttv311 -i unsub3 -U 'x/#' -U 'sport/+/score' -t keep -E`:
/// UNSUBSCRIBE (one per `-U`), UNSUBACK from the broker.
const MOSQ_V3_UNSUBSCRIBE: &str = "a2110003000d73706f72742f2b2f73636f7265";
const MOSQ_V3_UNSUBACK: &str = "b0020002";

#[test]
fn mosquitto_3_1_1_connect_decodes_and_re_encodes_identically() {
    let Packet::Connect(c) = decode_exact(MOSQ_V3_CONNECT, V3) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V3);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, "pub311");
    assert!(c.will.is_none() && c.username.is_none() && c.password.is_none());

    let Packet::Connect(c) = decode_exact(MOSQ_V3_CONNECT_PERSISTENT, V3) else {
        panic!("not a CONNECT")
    };
    assert!(!c.clean_start, "-c turns clean session off");
    assert_eq!(c.client_id, "subid");
}

#[test]
fn mosquitto_3_1_1_connect_with_will_and_login_decodes() {
    // Flags 0xEE: user name, password, will retain, will QoS 1, will flag, clean session.
    let Packet::Connect(c) = decode_exact(MOSQ_V3_CONNECT_WILL_LOGIN, V3) else {
        panic!("not a CONNECT")
    };
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.topic, "will/t");
    assert_eq!(will.payload, Bytes::from_static(b"bye"));
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(will.retain);
    assert_eq!(c.username.as_deref(), Some("alice"));
    assert_eq!(c.password, Some(Bytes::from_static(b"secret")));
    assert_eq!(c.client_id, "willy");
}

#[test]
fn mosquitto_3_1_1_publishes_of_each_qos_decode() {
    let Packet::Publish(p) = decode_exact(MOSQ_V3_PUBLISH_QOS0, V3) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        (p.qos, p.retain, p.dup, p.packet_id),
        (QoS::AtMostOnce, false, false, None)
    );
    assert_eq!(p.topic, "test/topic");
    assert_eq!(p.payload, Bytes::from_static(b"hello"));

    let Packet::Publish(p) = decode_exact(MOSQ_V3_PUBLISH_QOS1_RETAIN, V3) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        (p.qos, p.retain, p.packet_id),
        (QoS::AtLeastOnce, true, Some(id(1)))
    );
    assert_eq!(p.topic, "a/b");
    assert_eq!(p.payload, Bytes::from_static(b"payload1"));

    let Packet::Publish(p) = decode_exact(MOSQ_V3_PUBLISH_QOS2, V3) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        (p.qos, p.retain, p.packet_id),
        (QoS::ExactlyOnce, false, Some(id(1)))
    );
    assert_eq!(p.topic, "a/b/c");
    assert_eq!(p.payload, Bytes::from_static(b"q2"));
}

#[test]
fn mosquitto_3_1_1_acknowledgements_decode() {
    assert_eq!(
        decode_exact(MOSQ_V3_CONNACK, V3),
        Packet::ConnAck(protocol::ConnAck::new(false, ReasonCode::Success))
    );
    assert_eq!(
        decode_exact(MOSQ_V3_PUBACK, V3),
        Packet::PubAck(PubResp::new(id(1)))
    );
    assert_eq!(
        decode_exact(MOSQ_V3_PUBREC, V3),
        Packet::PubRec(PubResp::new(id(1)))
    );
    // [MQTT-3.6.1-1] PUBREL's flags are 0010.
    assert_eq!(
        decode_exact(MOSQ_V3_PUBREL, V3),
        Packet::PubRel(PubResp::new(id(1)))
    );
    assert_eq!(
        decode_exact(MOSQ_V3_PUBCOMP, V3),
        Packet::PubComp(PubResp::new(id(1)))
    );
    let Packet::UnsubAck(u) = decode_exact(MOSQ_V3_UNSUBACK, V3) else {
        panic!("not an UNSUBACK")
    };
    assert_eq!(u.packet_id, id(2));
    assert!(u.reasons.is_empty());
}

#[test]
fn mosquitto_3_1_1_subscribe_and_suback_decode() {
    // [MQTT-3.8.1-1] SUBSCRIBE's flags are 0010.
    let Packet::Subscribe(s) = decode_exact(MOSQ_V3_SUBSCRIBE, V3) else {
        panic!("not a SUBSCRIBE")
    };
    assert_eq!(s.packet_id, id(1));
    let filters: Vec<_> = s.subscriptions.iter().map(|s| s.filter.as_str()).collect();
    assert_eq!(filters, ["sport/+/score", "x/#"]);
    assert!(s
        .subscriptions
        .iter()
        .all(|s| s.options.qos == QoS::AtLeastOnce));

    let Packet::SubAck(a) = decode_exact(MOSQ_V3_SUBACK, V3) else {
        panic!("not a SUBACK")
    };
    assert_eq!(a.packet_id, id(1));
    assert_eq!(
        a.reasons,
        [ReasonCode::GrantedQoS1, ReasonCode::GrantedQoS1]
    );
}

#[test]
fn mosquitto_3_1_1_unsubscribe_ping_and_disconnect_decode() {
    // [MQTT-3.10.1-1] UNSUBSCRIBE's flags are 0010.
    let Packet::Unsubscribe(u) = decode_exact(MOSQ_V3_UNSUBSCRIBE, V3) else {
        panic!("not an UNSUBSCRIBE")
    };
    assert_eq!(u.packet_id, id(3));
    assert_eq!(u.filters[0], "sport/+/score");
    assert_eq!(decode_exact(MOSQ_V3_PINGREQ, V3), Packet::PingReq);
    assert_eq!(decode_exact(MOSQ_V3_PINGRESP, V3), Packet::PingResp);
    assert_eq!(
        decode_exact(MOSQ_V3_DISCONNECT, V3),
        Packet::Disconnect(protocol::Disconnect::default())
    );
}

// ---------------------------------------------------------------------------------------
// MQTT 5.0, captured.

/// `mosquitto_pub $H -V mqttv5 -i pub5 -t test/topic -m hello -q 0 -D connect
/// session-expiry-interval 3600`: CONNECT with Session Expiry Interval 3600 and Receive
/// Maximum 20, the broker's CONNACK, the PUBLISH.
const MOSQ_V5_CONNECT: &str = "101900044d5154540502003c081100000e10210014000470756235";
const MOSQ_V5_CONNACK: &str = "200900000622000a210014";
const MOSQ_V5_PUBLISH_QOS0: &str = "3012000a746573742f746f7069630068656c6c6f";
/// `mosquitto_pub $H -V mqttv5 -i pub5q1 -t a/b -m payload1 -q 1 -r -D publish
/// user-property k v -D publish message-expiry-interval 60 -D publish content-type
/// text/plain`: the PUBLISH and the broker's PUBACK (0x10 No matching subscribers).
const MOSQ_V5_PUBLISH_QOS1_PROPS: &str = concat!(
    "33290003612f620001192600016b000176020000003c03000a746578742f706c61696e",
    "7061796c6f616431"
);
const MOSQ_V5_PUBACK_NO_SUBSCRIBERS: &str = "4003000110";
/// `mosquitto_pub $H -V mqttv5 -i pub5q2 -t a/b/c -m q2 -q 2`.
const MOSQ_V5_PUBLISH_QOS2: &str = "340c0005612f622f630001007132";
/// `mosquitto_pub $H -V 5 -i will5 -u alice -P secret --will-topic will/t --will-payload bye
/// --will-qos 1 --will-retain -D will will-delay-interval 10 -t x -m y`.
const MOSQ_V5_CONNECT_WILL_LOGIN: &str = concat!(
    "103700044d51545405ee003c03210014000577696c6c3505180000000a000677696c6c2f",
    "7400036279650005616c6963650006736563726574"
);
/// `mosquitto_sub $H -V mqttv5 -c -x 3600 -i sub5 -q 2 -t 'sport/+/score' -t '$share/g/x/#'
/// -D subscribe subscription-identifier 7 -E`: CONNECT, SUBSCRIBE, the broker's SUBACK.
const MOSQ_V5_CONNECT_PERSISTENT: &str = "101900044d5154540500003c081100000e10210014000473756235";
const MOSQ_V5_SUBSCRIBE_SHARED: &str =
    "82240001020b07000d73706f72742f2b2f73636f726502000c2473686172652f672f782f2302";
const MOSQ_V5_SUBACK: &str = "90050001000202";
/// `mosquitto_sub $H -V mqttv5 -i sub5r -q 1 -t a/b -D subscribe subscription-identifier 9
/// -C 1`, after the retained message above: the broker's PUBLISH (with the Subscription
/// Identifier, the Message Expiry Interval counted down to 46) and the client's PUBACK.
const MOSQ_V5_PUBLISH_FROM_BROKER: &str = concat!(
    "332b0003612f6200011b0b092600016b00017603000a746578742f706c61696e020000002e",
    "7061796c6f616431"
);
/// `mosquitto_sub $H -V mqttv5 -i unsub5 -U 'x/#' -t keep -E`: UNSUBSCRIBE and the broker's
/// UNSUBACK (0x11 No subscription existed).
const MOSQ_V5_UNSUBSCRIBE: &str = "a2080002000003782f23";
const MOSQ_V5_UNSUBACK: &str = "b00400020011";
/// `mosquitto_sub $H -V mqttv5 -i ping5 -k 5 -t p/q -W 7`: the DISCONNECT sent on the
/// timeout, reason 0x04 Disconnect with Will Message.
const MOSQ_V5_DISCONNECT_WITH_WILL: &str = "e00104";

#[test]
fn mosquitto_5_connect_with_session_expiry_decodes_and_re_encodes_identically() {
    let Packet::Connect(c) = decode_exact(MOSQ_V5_CONNECT, V5) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, V5);
    assert!(c.clean_start);
    assert_eq!(c.client_id, "pub5");
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
    assert_eq!(c.properties.receive_maximum, Some(20));

    let Packet::Connect(c) = decode_exact(MOSQ_V5_CONNECT_PERSISTENT, V5) else {
        panic!("not a CONNECT")
    };
    assert!(!c.clean_start);
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
}

#[test]
fn mosquitto_5_connect_with_will_properties_and_login_decodes() {
    let Packet::Connect(c) = decode_exact(MOSQ_V5_CONNECT_WILL_LOGIN, V5) else {
        panic!("not a CONNECT")
    };
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.properties.will_delay_interval, Some(10));
    assert_eq!(will.topic, "will/t");
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
    assert_eq!(c.username.as_deref(), Some("alice"));
    assert_eq!(c.password, Some(Bytes::from_static(b"secret")));
}

#[test]
fn mosquitto_5_connack_decodes_with_its_limits() {
    let Packet::ConnAck(a) = decode_reordered(MOSQ_V5_CONNACK, V5) else {
        panic!("not a CONNACK")
    };
    assert!(!a.session_present);
    assert_eq!(a.reason, ReasonCode::Success);
    assert_eq!(a.properties.topic_alias_maximum, Some(10));
    assert_eq!(a.properties.receive_maximum, Some(20));
}

#[test]
fn mosquitto_5_publishes_decode_with_their_properties() {
    let Packet::Publish(p) = decode_exact(MOSQ_V5_PUBLISH_QOS0, V5) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.topic, "test/topic");
    assert!(p.properties.is_empty());

    let Packet::Publish(p) = decode_reordered(MOSQ_V5_PUBLISH_QOS1_PROPS, V5) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        (p.qos, p.retain, p.packet_id),
        (QoS::AtLeastOnce, true, Some(id(1)))
    );
    assert_eq!(
        p.properties.user_properties,
        [("k".to_owned(), "v".to_owned())]
    );
    assert_eq!(p.properties.message_expiry_interval, Some(60));
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.payload, Bytes::from_static(b"payload1"));

    let Packet::Publish(p) = decode_exact(MOSQ_V5_PUBLISH_QOS2, V5) else {
        panic!("not a PUBLISH")
    };
    assert_eq!((p.qos, p.packet_id), (QoS::ExactlyOnce, Some(id(1))));

    let Packet::Publish(p) = decode_reordered(MOSQ_V5_PUBLISH_FROM_BROKER, V5) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.properties.subscription_identifiers, [9]);
    assert_eq!(p.properties.message_expiry_interval, Some(46));
    assert!(
        p.retain,
        "a retained message sent for a new subscription keeps RETAIN"
    );
}

#[test]
fn mosquitto_5_acknowledgements_decode_with_reason_codes() {
    assert_eq!(
        decode_exact(MOSQ_V5_PUBACK_NO_SUBSCRIBERS, V5),
        Packet::PubAck(PubResp::with_reason(
            id(1),
            ReasonCode::NoMatchingSubscribers
        ))
    );
    // A success acknowledgement without properties leaves the reason code out (3.4.2.1).
    assert_eq!(
        decode_exact("40020001", V5),
        Packet::PubAck(PubResp::new(id(1)))
    );
    let Packet::UnsubAck(u) = decode_exact(MOSQ_V5_UNSUBACK, V5) else {
        panic!("not an UNSUBACK")
    };
    assert_eq!(u.reasons, [ReasonCode::NoSubscriptionExisted]);
    let Packet::SubAck(a) = decode_exact(MOSQ_V5_SUBACK, V5) else {
        panic!("not a SUBACK")
    };
    assert_eq!(
        a.reasons,
        [ReasonCode::GrantedQoS2, ReasonCode::GrantedQoS2]
    );
}

#[test]
fn mosquitto_5_subscribe_with_identifier_and_shared_filter_decodes() {
    let Packet::Subscribe(s) = decode_exact(MOSQ_V5_SUBSCRIBE_SHARED, V5) else {
        panic!("not a SUBSCRIBE")
    };
    assert_eq!(s.properties.subscription_identifiers, [7]);
    assert_eq!(s.subscriptions[0].filter, "sport/+/score");
    assert_eq!(s.subscriptions[1].filter, "$share/g/x/#");
    for sub in &s.subscriptions {
        assert_eq!(sub.options.qos, QoS::ExactlyOnce);
        assert!(!sub.options.no_local && !sub.options.retain_as_published);
        assert_eq!(sub.options.retain_handling, RetainHandling::SendAtSubscribe);
    }
    let Packet::Unsubscribe(u) = decode_exact(MOSQ_V5_UNSUBSCRIBE, V5) else {
        panic!("not an UNSUBSCRIBE")
    };
    assert_eq!(u.filters[0], "x/#");
}

#[test]
fn mosquitto_5_disconnect_with_will_decodes() {
    let Packet::Disconnect(d) = decode_exact(MOSQ_V5_DISCONNECT_WITH_WILL, V5) else {
        panic!("not a DISCONNECT")
    };
    assert_eq!(d.reason, ReasonCode::DisconnectWithWill);
    assert_eq!(
        decode_exact("e000", V5),
        Packet::Disconnect(protocol::Disconnect::default())
    );
}

#[test]
fn a_captured_session_decodes_as_one_stream_in_a_server_decoder() {
    // [MQTT-6.0.0-2] the bytes of a whole session, as one chunk, learn the version from the
    // CONNECT (the mosquitto_pub QoS 1 session above, client to server).
    let mut stream = hex(MOSQ_V5_CONNECT);
    stream.extend(hex(MOSQ_V5_PUBLISH_QOS1_PROPS));
    stream.extend(hex(MOSQ_V5_DISCONNECT_WITH_WILL));
    let mut d = protocol::Decoder::new(1 << 16);
    let mut input = &stream[..];
    let mut got = Vec::new();
    while let Some(p) = d.decode(&mut input).unwrap() {
        got.push(p.packet_type());
    }
    assert_eq!(d.version(), Some(V5));
    use protocol::PacketType as T;
    assert_eq!(got, [T::Connect, T::Publish, T::Disconnect]);
}
