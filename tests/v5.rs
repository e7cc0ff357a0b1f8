//! MQTT 5.0 only: Message Expiry Interval, topic aliases both ways, Maximum Packet Size
//! towards the client, properties passed through, CONNACK limits, reason codes.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use e2e::protocol::{
    Connect, OutboundAliases, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, Subscribe, Subscription,
};
use e2e::{
    clean, filter, for_each_transport, persistent, text, topic, Bridge, RawClient, Transport,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn expiry(secs: u32) -> Properties {
    Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    }
}

/// A persistent subscriber `s` on `exp/#` that is offline when this returns.
async fn offline_subscriber(bridge: &Bridge, t: Transport) {
    let (mut s, _) = bridge.connect(t, persistent(V5, "s")).await.unwrap();
    s.subscribe("exp/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
}

#[tokio::test]
async fn the_message_expiry_interval_is_lowered_by_the_time_the_message_waited() {
    // [MQTT-3.3.2-6]: the PUBLISH to the subscriber carries the received interval minus
    // the time it waited in the broker (here at least one second).
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        offline_subscriber(&bridge, t).await;
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish_with_properties("exp/t", "waited", QoS::AtLeastOnce, false, expiry(30))
            .await;
        p.publish("exp/t", "forever", QoS::AtLeastOnce, false).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (mut s, _) = bridge.connect(t, persistent(V5, "s")).await.unwrap();
        let got = s.recv().await;
        assert_eq!(text(&got), "waited");
        let left = got.properties.message_expiry_interval.unwrap();
        assert!(
            (1..=29).contains(&left),
            "expiry interval forwarded as {left}"
        );
        let got = s.recv().await;
        assert_eq!(
            got.properties.message_expiry_interval, None,
            "none set, none sent"
        );
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_queued_message_is_not_delivered() {
    // [MQTT-3.3.2-5]: a message whose expiry interval passed before onward delivery
    // started is deleted for that subscriber.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        offline_subscriber(&bridge, t).await;
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish_with_properties("exp/t", "short", QoS::AtLeastOnce, false, expiry(1))
            .await;
        p.publish_with_properties("exp/t", "long", QoS::AtLeastOnce, false, expiry(60))
            .await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let (mut s, ack) = bridge.connect(t, persistent(V5, "s")).await.unwrap();
        assert!(ack.session_present);
        assert_eq!(s.recv_payloads(1).await, ["long"]);
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn an_expired_retained_message_is_not_sent_to_new_subscribers() {
    // [MQTT-3.3.2-5] applied to the retained store (spec 3.3.2.3.3).
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish_with_properties("exp/r", "short", QoS::AtLeastOnce, true, expiry(1))
            .await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut s = bridge.client(t, clean(V5, "s")).await;
        s.subscribe("exp/#", QoS::AtLeastOnce).await;
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// A raw 5.0 client connected with `setup` applied to its CONNECT.
async fn raw_v5(
    bridge: &Bridge,
    t: Transport,
    id: &str,
    setup: impl FnOnce(&mut Connect),
) -> RawClient {
    let mut raw = bridge.raw(t).await;
    let mut c = Connect::new(V5, id, true);
    setup(&mut c);
    let ack = raw.connect(c).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    raw
}

async fn raw_subscribe(raw: &mut RawClient, f: &str) {
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: vec![Subscription::new(filter(f), QoS::AtMostOnce)],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(raw.read_packet().await, Some(Packet::SubAck(_))));
}

#[tokio::test]
async fn a_topic_alias_set_by_the_client_is_resolved_by_the_broker() {
    // [MQTT-3.3.2-12]: the broker accepts aliases up to the Topic Alias Maximum it
    // announced; an alias-only PUBLISH (empty topic) goes to the topic mapped earlier.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(V5, "s")).await;
        s.subscribe("alias/#", QoS::AtLeastOnce).await;
        let mut raw = bridge.raw(t).await;
        let ack = raw.connect(Connect::new(V5, "raw", true)).await;
        let max = ack.properties.topic_alias_maximum.unwrap_or(0);
        assert!(max > 0, "the broker announces a Topic Alias Maximum");
        let mut aliases = OutboundAliases::new(max);
        for payload in ["1", "2", "3"] {
            let mut p = Publish::new(topic("alias/long/topic"), payload);
            aliases.apply(&mut p);
            raw.send(Packet::Publish(p)).await;
        }
        for expected in ["1", "2", "3"] {
            let got = s.recv().await;
            assert_eq!(
                (got.topic.as_str(), text(&got).as_str()),
                ("alias/long/topic", expected)
            );
            assert_eq!(
                got.properties.topic_alias, None,
                "aliases are per connection"
            );
        }
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_broker_uses_topic_aliases_towards_a_client_that_allows_them_and_only_then() {
    // [MQTT-3.3.2-11]: never above the client's Topic Alias Maximum - none at all when the
    // client announced none [MQTT-3.3.2-8]; the decoding client sees full topics.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut allows = raw_v5(&bridge, t, "allows", |c| {
            c.properties.topic_alias_maximum = Some(1)
        })
        .await;
        raw_subscribe(&mut allows, "ta/#").await;
        let mut refuses = raw_v5(&bridge, t, "refuses", |_| {}).await;
        raw_subscribe(&mut refuses, "ta/#").await;
        let mut decoding = bridge.client(t, clean(V5, "decoding")).await;
        decoding.subscribe("ta/#", QoS::AtMostOnce).await;

        let mut p = bridge.client(t, clean(V5, "p")).await;
        for topic in ["ta/first", "ta/first", "ta/second", "ta/first"] {
            p.publish(topic, topic, QoS::AtMostOnce, false).await;
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            match allows.read_packet().await {
                Some(Packet::Publish(p)) => {
                    let alias = p.properties.topic_alias;
                    assert!(
                        alias.is_none_or(|a| a == 1),
                        "alias {alias:?} over the maximum 1"
                    );
                    seen.push((p.topic.to_string(), alias));
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                ("ta/first".to_owned(), Some(1)),
                (String::new(), Some(1)),
                ("ta/second".to_owned(), None),
                (String::new(), Some(1)),
            ]
        );
        for expected in ["ta/first", "ta/first", "ta/second", "ta/first"] {
            match refuses.read_packet().await {
                Some(Packet::Publish(p)) => {
                    assert_eq!(
                        (p.topic.as_str(), p.properties.topic_alias),
                        (expected, None)
                    )
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
            assert_eq!(decoding.recv().await.topic.as_str(), expected);
        }
        decoding.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_larger_than_the_client_s_maximum_packet_size_is_not_sent_to_it() {
    // [MQTT-3.1.2-24]: the broker never sends a packet over the client's Maximum Packet
    // Size; [MQTT-3.1.2-25]: it discards it as if sent, and goes on with the next.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut o = clean(V5, "small");
        o.max_packet_size = 128;
        let (mut small, _) = bridge.connect(t, o).await.unwrap();
        small.subscribe("mps/#", QoS::AtLeastOnce).await;
        let mut big = bridge.client(t, clean(V5, "big")).await;
        big.subscribe("mps/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish("mps/t", vec![b'x'; 1000], QoS::AtLeastOnce, false)
            .await;
        p.publish("mps/t", "small", QoS::AtLeastOnce, false).await;
        assert_eq!(text(&small.recv().await), "small");
        assert_eq!(big.recv().await.payload.len(), 1000);
        assert_eq!(text(&big.recv().await), "small");
        small.disconnect().await;
        big.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn application_properties_are_passed_through_to_subscribers() {
    // [MQTT-3.3.2-4] (Payload Format Indicator), [MQTT-3.3.2-15] (Response Topic),
    // [MQTT-3.3.2-16] (Correlation Data), [MQTT-3.3.2-17] / [MQTT-3.3.2-18] (User
    // Properties, in order), [MQTT-3.3.2-20] (Content Type): forwarded unaltered.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(V5, "s")).await;
        s.subscribe("props/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(V5, "p")).await;
        let props = Properties {
            payload_format_indicator: Some(true),
            content_type: Some("application/json".into()),
            response_topic: Some("props/reply".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
                ("b".into(), "3".into()),
            ],
            ..Properties::default()
        };
        p.publish_with_properties("props/t", "{}", QoS::AtLeastOnce, false, props.clone())
            .await;
        let got = s.recv().await;
        assert_eq!(got.properties, props);
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_connack_announces_the_broker_s_limits() {
    // Spec 3.2.2.3: Receive Maximum, Maximum Packet Size, Topic Alias Maximum, Maximum QoS
    // as configured.
    for_each_transport(|t| async move {
        let config = "[broker]\nmax_packet_size = 2048\nreceive_maximum = 10\n\
                      topic_alias_maximum = 5\nmaximum_qos = 1\n";
        let bridge = Bridge::start_with_config(config);
        let (c, ack) = bridge.connect(t, clean(V5, "c")).await.unwrap();
        let p = &ack.properties;
        assert_eq!(p.maximum_packet_size, Some(2048));
        assert_eq!(p.receive_maximum, Some(10));
        assert_eq!(p.topic_alias_maximum, Some(5));
        assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
        c.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_publish_nobody_subscribed_to_is_acknowledged_with_0x10() {
    // Spec 3.4.2.1 / 3.5.2.1: 0x10 No matching subscribers, in PUBACK and PUBREC.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(V5, "p")).await;
        let reason = p.publish("nobody/here", "x", QoS::AtLeastOnce, false).await;
        assert_eq!(reason, e2e::no_matching_subscribers());
        // QoS 2: the PUBREC says so (the client reports PUBCOMP's reason, Success).
        p.publish("nobody/here", "x", QoS::ExactlyOnce, false).await;
        let pubrec = p.received().iter().find_map(|p| match p {
            Packet::PubRec(r) => Some(r.reason),
            _ => None,
        });
        assert_eq!(pubrec, Some(e2e::no_matching_subscribers()));
        let mut raw = raw_v5(&bridge, t, "raw", |_| {}).await;
        let mut p = Publish::new(topic("nobody/here"), "x");
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(pid(5));
        raw.send(Packet::Publish(p)).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubAck(PubResp::with_reason(
                pid(5),
                e2e::no_matching_subscribers()
            )))
        );
    })
    .await;
}

#[tokio::test]
async fn a_message_that_fits_the_client_s_maximum_packet_size_only_without_a_topic_alias_is_delivered(
) {
    // [MQTT-3.1.2-24] with topic aliases: a message exactly at the client's Maximum Packet
    // Size cannot also carry a Topic Alias (3 more bytes). It must still arrive, and the
    // messages after it on the same topic must be ones the client can decode [MQTT-3.3.2-10].
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        // As delivered: QoS 1, with a packet id, without an alias.
        let mut exact = Publish::new(topic("edge/topic"), vec![b'x'; 1]);
        exact.qos = QoS::AtLeastOnce;
        exact.packet_id = Some(pid(1));
        let overhead = Packet::Publish(exact.clone()).encoded_len(V5).unwrap() - 1;
        exact.payload = vec![b'x'; 100 - overhead].into();
        assert_eq!(Packet::Publish(exact.clone()).encoded_len(V5).unwrap(), 100);

        let mut o = clean(V5, "s");
        o.max_packet_size = 100;
        o.topic_alias_maximum = 5;
        let (mut s, _) = bridge.connect(t, o).await.unwrap();
        s.subscribe("edge/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish("edge/topic", exact.payload.clone(), QoS::AtLeastOnce, false)
            .await;
        p.publish("edge/topic", "after", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(s.recv().await.payload.len(), exact.payload.len());
        assert_eq!(text(&s.recv().await), "after");
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_connect_with_an_authentication_method_the_broker_does_not_support_is_refused() {
    // [MQTT-4.12.0-1]: the broker supports no extended authentication, so it refuses the
    // CONNECT (0x8C Bad authentication method or 0x87 Not authorized) and closes.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut o = clean(V5, "scram");
        o.connect_properties.authentication_method = Some("SCRAM-SHA-1".into());
        o.connect_properties.authentication_data = Some(Bytes::from_static(b"client-first"));
        let ack = bridge.expect_refused(t, o).await;
        assert!(
            matches!(
                ack.reason,
                ReasonCode::BadAuthenticationMethod | ReasonCode::NotAuthorized
            ),
            "{ack:?}"
        );
    })
    .await;
}
