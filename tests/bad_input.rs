//! Bad input: each kind closes the offending connection - with DISCONNECT and the right
//! reason code in MQTT 5.0 [MQTT-4.13.1-1] (spec 4.13.2), without a reply in 3.1.1
//! [MQTT-4.8.0-1] - and never disturbs the others: in every test a well-behaved client
//! connected before the bad one still publishes and receives afterwards.
//!
//! Also here: the edges of framing that are NOT errors (packets across WebSocket frames).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::protocol::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
    Subscription,
};
use e2e::{
    clean, disconnect_in, encode, filter, for_each_transport, for_each_transport_and_version,
    for_each_version, text, topic, Bridge, RawClient, TestClient, Transport,
};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// How long the broker has to close a connection that broke the rules.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// A well-behaved client, subscribed to `ok/#`, connected before any bad one.
async fn bystander(bridge: &Bridge, t: Transport, v: ProtocolVersion) -> TestClient {
    let mut good = bridge.client(t, clean(v, "good")).await;
    good.subscribe("ok/#", QoS::AtLeastOnce).await;
    good
}

/// The bystander can still publish and receive.
async fn still_works(mut good: TestClient) {
    let reason = good
        .publish("ok/after", "still here", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(reason, ReasonCode::Success);
    assert_eq!(text(&good.recv().await), "still here");
    good.disconnect().await;
}

/// A raw client, connected.
async fn connected_raw(bridge: &Bridge, t: Transport, v: ProtocolVersion) -> RawClient {
    let mut raw = bridge.raw(t).await;
    let ack = raw.connect(Connect::new(v, "bad", true)).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    raw
}

/// The broker closed the connection: 5.0 with DISCONNECT `reason` last, 3.1.1 silently.
fn assert_closed_with(v: ProtocolVersion, packets: &[Packet], reason: ReasonCode) {
    match v {
        ProtocolVersion::V5 => assert_eq!(
            disconnect_in(packets).map(|d| d.reason),
            Some(reason),
            "expected DISCONNECT {reason:?} before the close, got {packets:?}"
        ),
        ProtocolVersion::V311 => assert!(
            packets.is_empty(),
            "3.1.1: the connection is closed without a reply, got {packets:?}"
        ),
    }
}

/// The whole scenario: a bystander, a connected raw client that sends `bad`, the close,
/// the bystander still fine.
async fn bad_bytes_close_the_connection(
    bridge: Bridge,
    t: Transport,
    v: ProtocolVersion,
    bad: Vec<u8>,
    reason: ReasonCode,
) {
    let good = bystander(&bridge, t, v).await;
    let mut raw = connected_raw(&bridge, t, v).await;
    raw.send_bytes(&bad).await;
    let packets = raw.expect_closed_within(CLOSE_WITHIN).await;
    assert_closed_with(v, &packets, reason);
    still_works(good).await;
}

/// 5.0 PUBLISH bodies carry a property length (here 0) after the topic (and packet id).
fn props(v: ProtocolVersion) -> &'static [u8] {
    match v {
        ProtocolVersion::V5 => &[0x00],
        ProtocolVersion::V311 => &[],
    }
}

/// A packet: first byte, then the body with its remaining length.
fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![byte1, body.len() as u8];
    out.extend_from_slice(body);
    out
}

fn qos1_publish(v: ProtocolVersion) -> Vec<u8> {
    let mut p = Publish::new(topic("a"), "x");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = PacketId::new(1);
    encode(&Packet::Publish(p), v)
}

#[tokio::test]
async fn a_truncated_packet_closes_the_connection_as_malformed() {
    // [MQTT-4.13.1-1] / 0x81 Malformed Packet: a SUBSCRIBE whose topic filter length (5)
    // runs past the end of the packet.
    for_each_transport_and_version(|t, v| async move {
        let mut body = vec![0x00, 0x01];
        body.extend_from_slice(props(v));
        body.extend_from_slice(&[0x00, 0x05]);
        let bad = packet(0x82, &body);
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_remaining_length_closes_the_connection_as_malformed() {
    // Spec 2.1.4 / 3.12.1: PINGREQ has remaining length 0; 2 leaves bytes the packet cannot
    // hold: 0x81 Malformed Packet.
    for_each_transport_and_version(|t, v| async move {
        let bad = packet(0xC0, &[0x00, 0x00]);
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_remaining_length_of_more_than_four_bytes_closes_the_connection_as_malformed() {
    // [MQTT-1.5.5-1] / spec 1.5.5: a variable byte integer has at most four bytes.
    for_each_transport_and_version(|t, v| async move {
        let bad = vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_in_a_topic_name_closes_the_connection_as_malformed() {
    // [MQTT-1.5.4-1]: ill-formed UTF-8 is a Malformed Packet (0x81).
    for_each_transport_and_version(|t, v| async move {
        let mut body = vec![0x00, 0x02, 0xC3, 0x28];
        body.extend_from_slice(props(v));
        body.push(b'x');
        let bad = packet(0x30, &body);
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_wildcard_in_a_publish_topic_closes_the_connection_with_topic_name_invalid() {
    // [MQTT-3.3.2-2]: no wildcards in a Topic Name; 5.0: 0x90 Topic Name invalid.
    for_each_transport_and_version(|t, v| async move {
        let mut body = vec![0x00, 0x03, b'a', b'/', b'+'];
        body.extend_from_slice(props(v));
        let bad = packet(0x30, &body);
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::TopicNameInvalid)
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_second_connect_closes_the_connection_as_a_protocol_error() {
    // [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error (0x82).
    for_each_transport_and_version(|t, v| async move {
        let bad = encode(&Packet::Connect(Box::new(Connect::new(v, "bad", true))), v);
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::ProtocolError).await;
    })
    .await;
}

#[tokio::test]
async fn a_first_packet_that_is_not_connect_closes_the_connection_without_a_reply() {
    // [MQTT-3.1.0-1]: the first packet must be CONNECT; before it, the broker knows no
    // version and answers nothing.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let good = bystander(&bridge, t, v).await;
        let mut raw = bridge.raw(t).await;
        raw.set_version(v);
        let sub = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            subscriptions: vec![Subscription::new(filter("ok/#"), QoS::AtLeastOnce)],
            properties: Properties::default(),
        };
        raw.send(Packet::Subscribe(sub)).await;
        let packets = raw.expect_closed_within(CLOSE_WITHIN).await;
        assert!(
            packets.is_empty(),
            "no reply before CONNECT, got {packets:?}"
        );
        still_works(good).await;
    })
    .await;
}

#[tokio::test]
async fn a_packet_over_the_broker_s_maximum_packet_size_closes_the_connection_with_0x95() {
    // Spec 3.2.2.3.6 / [MQTT-3.2.2-15]: a packet over the Maximum Packet Size the broker
    // announced; 5.0: DISCONNECT 0x95 Packet too large.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start_with_config("[broker]\nmax_packet_size = 256\n");
        let bad = encode(
            &Packet::Publish(Publish::new(topic("ok/big"), vec![b'x'; 1000])),
            v,
        );
        bad_bytes_close_the_connection(bridge, t, v, bad, ReasonCode::PacketTooLarge).await;
    })
    .await;
}

#[tokio::test]
async fn a_reserved_flag_set_closes_the_connection_as_malformed() {
    // [MQTT-2.2.2-1] / [MQTT-2.2.2-2] (3.1.1: SUBSCRIBE's flags must be 0010) and
    // [MQTT-3.8.1-1]; 5.0: 0x81 Malformed Packet.
    for_each_transport_and_version(|t, v| async move {
        let sub = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            subscriptions: vec![Subscription::new(filter("a"), QoS::AtMostOnce)],
            properties: Properties::default(),
        };
        let mut bad = encode(&Packet::Subscribe(sub), v);
        assert_eq!(bad[0], 0x82);
        bad[0] = 0x80;
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_publish_with_qos_3_closes_the_connection_as_malformed() {
    // [MQTT-3.3.1-4]: both QoS bits set is malformed (0x81).
    for_each_transport_and_version(|t, v| async move {
        let mut bad = qos1_publish(v);
        assert_eq!(bad[0], 0x32);
        bad[0] = 0x36;
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn a_qos_0_publish_with_dup_set_closes_the_connection_as_malformed() {
    // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
    for_each_transport_and_version(|t, v| async move {
        let mut bad = encode(&Packet::Publish(Publish::new(topic("a"), "x")), v);
        bad[0] |= 0x08;
        bad_bytes_close_the_connection(Bridge::start(), t, v, bad, ReasonCode::MalformedPacket)
            .await;
    })
    .await;
}

#[tokio::test]
async fn an_unsupported_protocol_level_is_answered_with_connack_0x01_and_closed() {
    // 3.1.1 [MQTT-3.1.2-2]: CONNACK return code 0x01 (unacceptable protocol level), then
    // the close; 5.0 [MQTT-3.1.2-2] allows the same answer to a client of another version.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let good = bystander(&bridge, t, V311).await;
        for level in [6u8, 3] {
            let mut connect = encode(
                &Packet::Connect(Box::new(Connect::new(V311, "future", true))),
                V311,
            );
            assert_eq!(&connect[2..9], b"\x00\x04MQTT\x04");
            connect[8] = level;
            let mut raw = bridge.raw(t).await;
            raw.send_bytes(&connect).await;
            let packets = raw.expect_closed_within(CLOSE_WITHIN).await;
            assert_eq!(
                packets.iter().map(|p| encode(p, V311)).collect::<Vec<_>>(),
                [vec![0x20, 0x02, 0x00, 0x01]],
                "level {level}: exactly CONNACK 0x01 then the close"
            );
        }
        still_works(good).await;
    })
    .await;
}

#[tokio::test]
async fn a_topic_alias_above_the_maximum_closes_the_connection_with_0x94() {
    // [MQTT-3.3.2-9]: a Topic Alias above the broker's Topic Alias Maximum (2): 0x94.
    for_each_transport(|t| async move {
        let bridge = Bridge::start_with_config("[broker]\ntopic_alias_maximum = 2\n");
        let mut p = Publish::new(topic("ok/alias"), "x");
        p.properties.topic_alias = Some(3);
        let bad = encode(&Packet::Publish(p), V5);
        bad_bytes_close_the_connection(bridge, t, V5, bad, ReasonCode::TopicAliasInvalid).await;
    })
    .await;
}

#[tokio::test]
async fn a_subscription_identifier_in_a_client_publish_closes_the_connection_as_a_protocol_error() {
    // [MQTT-3.3.4-6]: a PUBLISH from a client must not carry a Subscription Identifier.
    for_each_transport(|t| async move {
        let mut p = Publish::new(topic("ok/sid"), "x");
        p.properties.subscription_identifiers = vec![7];
        let bad = encode(&Packet::Publish(p), V5);
        bad_bytes_close_the_connection(Bridge::start(), t, V5, bad, ReasonCode::ProtocolError)
            .await;
    })
    .await;
}

#[tokio::test]
async fn more_unacknowledged_publishes_than_the_broker_s_receive_maximum_close_with_0x93() {
    // [MQTT-3.3.4-7] and spec 3.3.4: a client over the broker's Receive Maximum (2) is
    // disconnected with 0x93 Receive Maximum exceeded. QoS 2 messages hold their slot
    // until PUBREL, which this client never sends.
    for_each_transport(|t| async move {
        let bridge = Bridge::start_with_config("[broker]\nreceive_maximum = 2\n");
        let mut bad = Vec::new();
        for id in 1..=3 {
            let mut p = Publish::new(topic("ok/flood"), "x");
            p.qos = QoS::ExactlyOnce;
            p.packet_id = PacketId::new(id);
            bad.extend(encode(&Packet::Publish(p), V5));
        }
        let good = bystander(&bridge, t, V5).await;
        let mut raw = connected_raw(&bridge, t, V5).await;
        raw.send_bytes(&bad).await;
        let packets = raw.expect_closed_within(CLOSE_WITHIN).await;
        assert_closed_with(V5, &packets, ReasonCode::ReceiveMaximumExceeded);
        let pubrecs = packets
            .iter()
            .filter(|p| matches!(p, Packet::PubRec(_)))
            .count();
        assert_eq!(pubrecs, 2, "the first two were taken: {packets:?}");
        // The bystander gets the two accepted messages, then still works.
        let mut good = good;
        assert_eq!(good.recv_payloads(2).await, ["x", "x"]);
        still_works(good).await;
    })
    .await;
}

#[tokio::test]
async fn a_websocket_text_frame_closes_the_connection() {
    // [MQTT-6.0.0-1]: MQTT over WebSocket uses binary frames; a text frame closes the
    // connection.
    for_each_version(|v| async move {
        let bridge = Bridge::start();
        let good = bystander(&bridge, Transport::Ws, v).await;
        let mut raw = connected_raw(&bridge, Transport::Ws, v).await;
        raw.send_text("\u{c0}\u{0}").await;
        raw.expect_closed_within(CLOSE_WITHIN).await;
        still_works(good).await;
    })
    .await;
}

#[tokio::test]
async fn packets_may_span_websocket_frames_and_one_frame_may_hold_several_packets() {
    // [MQTT-6.0.0-2]: the receiver must not assume packets are aligned on frame
    // boundaries. A SUBSCRIBE sent a byte per frame, then two PUBLISHes in one frame.
    for_each_version(|v| async move {
        let bridge = Bridge::start();
        let mut raw = connected_raw(&bridge, Transport::Ws, v).await;
        let sub = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            subscriptions: vec![Subscription::new(filter("frames/#"), QoS::AtMostOnce)],
            properties: Properties::default(),
        };
        for byte in encode(&Packet::Subscribe(sub), v) {
            raw.send_bytes(&[byte]).await;
        }
        assert!(matches!(raw.read_packet().await, Some(Packet::SubAck(_))));
        let mut two = encode(&Packet::Publish(Publish::new(topic("frames/a"), "1")), v);
        two.extend(encode(
            &Packet::Publish(Publish::new(topic("frames/b"), "2")),
            v,
        ));
        raw.send_bytes(&two).await;
        for expected in ["frames/a", "frames/b"] {
            match raw.read_packet().await {
                Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), expected),
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
        raw.send(Packet::Disconnect(Default::default())).await;
        raw.expect_closed_within(CLOSE_WITHIN).await;
    })
    .await;
}
