//! QoS 0, 1 and 2 in both directions, the in-flight window (Receive Maximum), resending on
//! session resume, and exactly-once on the inbound side.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::protocol::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish, QoS, ReasonCode,
    Subscribe, Subscription,
};
use e2e::{
    clean, filter, for_each_transport, for_each_transport_and_version, text, topic, Bridge,
    RawClient, Read, Transport,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// A raw CONNECT: clean session 0 and (5.0) a long session expiry when `persistent`.
fn raw_connect(v: ProtocolVersion, id: &str, persistent: bool) -> Connect {
    let mut c = Connect::new(v, id, !persistent);
    if persistent && v == V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

/// Subscribes a raw client and checks the SUBACK.
async fn raw_subscribe(raw: &mut RawClient, f: &str, qos: QoS) {
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: vec![Subscription::new(filter(f), qos)],
        properties: Properties::default(),
    }))
    .await;
    match raw.read_packet().await {
        Some(Packet::SubAck(ack)) => assert!(!ack.reasons[0].is_error(), "{ack:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// The next packet, which must be a PUBLISH.
async fn raw_publish_in(raw: &mut RawClient) -> Publish {
    match raw.read_packet().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn publish(t: &str, payload: &'static str, qos: QoS, id: Option<u16>) -> Publish {
    let mut p = Publish::new(topic(t), payload);
    p.qos = qos;
    p.packet_id = id.map(pid);
    p
}

#[tokio::test]
async fn qos_0_1_and_2_messages_flow_from_publisher_to_subscriber_at_their_qos() {
    // [MQTT-4.3.1-1], [MQTT-4.3.2-1..2], [MQTT-4.3.3-1..3] (the flows, both sides of the
    // broker), and the QoS delivered is min(published, granted) (5.0 spec 3.8.4, 3.1.1
    // spec 3.8.4).
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut s2 = bridge.client(t, clean(v, "s2")).await;
        s2.subscribe("q/#", QoS::ExactlyOnce).await;
        let mut s1 = bridge.client(t, clean(v, "s1")).await;
        s1.subscribe("q/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let reason = p.publish("q/x", format!("{qos:?}"), qos, false).await;
            assert_eq!(reason, ReasonCode::Success);
            let got = s2.recv().await;
            assert_eq!((got.qos, text(&got)), (qos, format!("{qos:?}")));
            let got = s1.recv().await;
            assert_eq!(got.qos, qos.min(QoS::AtLeastOnce), "granted QoS 1 caps it");
        }
        // Both QoS 2 flows ran to their end: PUBREC/PUBCOMP to the publisher, PUBREL to
        // the subscriber.
        assert!(p.received().iter().any(|p| matches!(p, Packet::PubRec(_))));
        assert!(p.received().iter().any(|p| matches!(p, Packet::PubComp(_))));
        s2.sync().await;
        assert!(s2.received().iter().any(|p| matches!(p, Packet::PubRel(_))));
        assert!(s2.client().session().inbound_awaiting_pubrel.is_empty());
        for c in [s1, s2, p] {
            c.disconnect().await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_broker_never_has_more_messages_in_flight_than_the_client_s_receive_maximum() {
    // [MQTT-3.3.4-9]: no more than Receive Maximum (2) QoS 1/2 PUBLISHes unacknowledged;
    // the rest wait and follow, in order, as acknowledgements come.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut sub = bridge.raw(t).await;
        let mut c = raw_connect(V5, "slow", false);
        c.properties.receive_maximum = Some(2);
        sub.connect(c).await;
        raw_subscribe(&mut sub, "rm/t", QoS::ExactlyOnce).await;

        let mut p = bridge.client(t, clean(V5, "p")).await;
        for i in 0..5 {
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            p.publish("rm/t", format!("m{i}"), qos, false).await;
        }
        let mut got = Vec::new();
        let mut window = vec![
            raw_publish_in(&mut sub).await,
            raw_publish_in(&mut sub).await,
        ];
        while !window.is_empty() {
            sub.expect_silence(Duration::from_millis(200)).await;
            let first = window.remove(0);
            got.push(text(&first));
            let id = first.packet_id.unwrap();
            match first.qos {
                QoS::AtLeastOnce => sub.send(Packet::PubAck(PubResp::new(id))).await,
                _ => {
                    // A QoS 2 message holds its slot until PUBCOMP: PUBREC, then PUBREL.
                    sub.send(Packet::PubRec(PubResp::new(id))).await;
                    assert_eq!(
                        sub.read_packet().await,
                        Some(Packet::PubRel(PubResp::new(id)))
                    );
                    sub.expect_silence(Duration::from_millis(100)).await;
                    sub.send(Packet::PubComp(PubResp::new(id))).await;
                }
            }
            if got.len() + window.len() < 5 {
                window.push(raw_publish_in(&mut sub).await);
            }
        }
        assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
        sub.expect_silence(Duration::from_millis(200)).await;
    })
    .await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_when_the_session_resumes() {
    // [MQTT-4.4.0-1]: on reconnection with a kept session, unacknowledged PUBLISH packets
    // are resent with their original packet ids, with DUP set [MQTT-3.3.1-1], and PUBREL for
    // messages whose PUBREC came; in the original order [MQTT-4.6.0-1].
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut sub = bridge.raw(t).await;
        sub.connect(raw_connect(v, "sub", true)).await;
        raw_subscribe(&mut sub, "dup/#", QoS::ExactlyOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("dup/a", "qos1", QoS::AtLeastOnce, false).await;
        p.publish("dup/b", "qos2", QoS::ExactlyOnce, false).await;
        p.publish("dup/c", "qos2-received", QoS::ExactlyOnce, false)
            .await;
        let first = raw_publish_in(&mut sub).await;
        let second = raw_publish_in(&mut sub).await;
        let third = raw_publish_in(&mut sub).await;
        assert!(!first.dup && !second.dup && !third.dup);
        // The third is received (PUBREC), its PUBREL is left unanswered.
        let third_id = third.packet_id.unwrap();
        sub.send(Packet::PubRec(PubResp::new(third_id))).await;
        assert_eq!(
            sub.read_packet().await,
            Some(Packet::PubRel(PubResp::new(third_id)))
        );
        sub.drop_connection();

        let mut sub = bridge.raw(t).await;
        let ack = sub.connect(raw_connect(v, "sub", true)).await;
        assert!(ack.session_present);
        let again1 = raw_publish_in(&mut sub).await;
        let again2 = raw_publish_in(&mut sub).await;
        assert_eq!(
            (again1.dup, again1.packet_id, text(&again1)),
            (true, first.packet_id, "qos1".to_owned())
        );
        assert_eq!(
            (again2.dup, again2.packet_id, text(&again2)),
            (true, second.packet_id, "qos2".to_owned())
        );
        assert_eq!(
            sub.read_packet().await,
            Some(Packet::PubRel(PubResp::new(third_id)))
        );
        // Finish every flow; nothing more comes.
        sub.send(Packet::PubAck(PubResp::new(first.packet_id.unwrap())))
            .await;
        let id2 = second.packet_id.unwrap();
        sub.send(Packet::PubRec(PubResp::new(id2))).await;
        assert_eq!(
            sub.read_packet().await,
            Some(Packet::PubRel(PubResp::new(id2)))
        );
        sub.send(Packet::PubComp(PubResp::new(id2))).await;
        sub.send(Packet::PubComp(PubResp::new(third_id))).await;
        sub.expect_silence(Duration::from_millis(300)).await;
    })
    .await;
}

/// A subscriber on `eo/#` and a raw publisher, connected.
async fn exactly_once_setup(
    bridge: &Bridge,
    t: Transport,
    v: ProtocolVersion,
) -> (e2e::TestClient, RawClient) {
    let mut s = bridge.client(t, clean(v, "s")).await;
    s.subscribe("eo/#", QoS::ExactlyOnce).await;
    let mut raw = bridge.raw(t).await;
    raw.connect(raw_connect(v, "raw-pub", true)).await;
    (s, raw)
}

#[tokio::test]
async fn a_qos_2_publish_resent_before_pubrel_is_delivered_only_once() {
    // 5.0 [MQTT-4.3.3-9] / 3.1.1 [MQTT-4.3.3-2]: until PUBREL the receiver answers a
    // repeated PUBLISH with the same packet id with PUBREC and does not deliver it again.
    // After PUBCOMP the packet id is free: the same id is a new message.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let (mut s, mut raw) = exactly_once_setup(&bridge, t, v).await;
        let p = publish("eo/t", "once", QoS::ExactlyOnce, Some(7));
        raw.send(Packet::Publish(p.clone())).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubRec(PubResp::new(pid(7))))
        );
        raw.send(Packet::Publish(Publish {
            dup: true,
            ..p.clone()
        }))
        .await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubRec(PubResp::new(pid(7))))
        );
        assert_eq!(text(&s.recv().await), "once");
        s.expect_no_message(Duration::from_millis(300)).await;
        raw.send(Packet::PubRel(PubResp::new(pid(7)))).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubComp(PubResp::new(pid(7))))
        );

        let next = publish("eo/t", "next", QoS::ExactlyOnce, Some(7));
        raw.send(Packet::Publish(next)).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubRec(PubResp::new(pid(7))))
        );
        assert_eq!(text(&s.recv().await), "next");
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn qos_2_packet_id_state_survives_a_reconnection_until_pubrel() {
    // Spec 4.1: the packet ids of QoS 2 messages received and not yet released are part of
    // the session state; a resend on the next connection is not delivered twice.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let (mut s, mut raw) = exactly_once_setup(&bridge, t, v).await;
        let p = publish("eo/t", "once", QoS::ExactlyOnce, Some(9));
        raw.send(Packet::Publish(p.clone())).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubRec(PubResp::new(pid(9))))
        );
        raw.drop_connection();

        let mut raw = bridge.raw(t).await;
        assert!(
            raw.connect(raw_connect(v, "raw-pub", true))
                .await
                .session_present
        );
        raw.send(Packet::Publish(Publish { dup: true, ..p })).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubRec(PubResp::new(pid(9))))
        );
        raw.send(Packet::PubRel(PubResp::new(pid(9)))).await;
        assert_eq!(
            raw.read_packet().await,
            Some(Packet::PubComp(PubResp::new(pid(9))))
        );
        assert_eq!(text(&s.recv().await), "once");
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_qos_1_publish_is_acknowledged_and_a_qos_0_publish_is_not() {
    // [MQTT-4.3.2-4] (PUBACK for QoS 1), [MQTT-4.3.1-1] (nothing back for QoS 0), seen on
    // the wire of a raw publisher.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut raw = bridge.raw(t).await;
        raw.connect(raw_connect(v, "raw", false)).await;
        raw.send(Packet::Publish(publish("a/b", "0", QoS::AtMostOnce, None)))
            .await;
        raw.expect_silence(Duration::from_millis(200)).await;
        raw.send(Packet::Publish(publish(
            "a/b",
            "1",
            QoS::AtLeastOnce,
            Some(3),
        )))
        .await;
        match raw.read_within(Duration::from_secs(5)).await {
            Read::Packet(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, pid(3)),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn messages_cross_between_mqtt_3_1_1_and_5_0_clients() {
    // Spec 3.3.2.3 (5.0 properties are dropped towards a 3.1.1 client), QoS and payload
    // kept both ways.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut old = bridge.client(t, clean(ProtocolVersion::V311, "old")).await;
        old.subscribe("mix/#", QoS::ExactlyOnce).await;
        let mut new = bridge.client(t, clean(V5, "new")).await;
        new.subscribe("mix/#", QoS::ExactlyOnce).await;
        let props = Properties {
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        new.publish_with_properties("mix/from5", "hello", QoS::ExactlyOnce, false, props)
            .await;
        let got = old.recv().await;
        assert_eq!(
            (got.topic.as_str(), text(&got).as_str()),
            ("mix/from5", "hello")
        );
        assert_eq!(got.qos, QoS::ExactlyOnce);
        let own = new.recv().await;
        assert_eq!(own.properties.user_properties, [("k".into(), "v".into())]);
        old.publish("mix/from3", "hi", QoS::AtLeastOnce, false)
            .await;
        let got = new.recv().await;
        assert_eq!(
            (got.topic.as_str(), text(&got).as_str()),
            ("mix/from3", "hi")
        );
        assert_eq!(got.qos, QoS::AtLeastOnce);
        old.disconnect().await;
        new.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_slow_subscriber_holds_back_the_publisher_s_acknowledgements_instead_of_losing_messages()
{
    // Issue 3 / README "Flow control and the queue policy": an online subscriber that does
    // not keep up never loses a QoS 1 message a publisher had acknowledged; past the queue
    // limit (3) the publisher's PUBACKs wait until the subscriber drains.
    for_each_transport_and_version(|t, v| async move {
        // The broker's own window (max_inflight) is 1 for 3.1.1; 5.0 announces 1 as well.
        let config = "[broker]\nmax_queued_messages = 3\nmax_inflight = 1\n";
        let bridge = Bridge::start_with_config(config);
        let mut slow = bridge.raw(t).await;
        let mut c = raw_connect(v, "slow", false);
        if v == V5 {
            c.properties.receive_maximum = Some(1);
        }
        slow.connect(c).await;
        raw_subscribe(&mut slow, "bp/t", QoS::AtLeastOnce).await;

        let mut p = bridge.client(t, clean(v, "p")).await;
        let mut tokens = Vec::new();
        for i in 0..6 {
            let payload = format!("m{i}");
            tokens.push(
                p.start_publish(
                    "bp/t",
                    payload,
                    QoS::AtLeastOnce,
                    false,
                    Properties::default(),
                )
                .await,
            );
        }
        let mut acked = 0;
        for token in &tokens {
            if p.published_within(*token, Duration::from_millis(300))
                .await
                .is_some()
            {
                acked += 1;
            } else {
                break;
            }
        }
        if e2e::clustered() {
            // In a cluster the publisher's bridge does not hold the subscriber: its
            // messages are stored in the stream before their PUBACKs, and the subscriber's
            // bridge leaves what does not fit its queue (3) there, reading it back as the
            // queue drains (docs/cluster.md). Nothing is lost either way.
            assert_eq!(acked, 6, "in a cluster, stored is acknowledged");
        } else {
            assert!(
                acked < 6,
                "a publisher must be held back by a subscriber that is stuck"
            );
        }

        // The subscriber catches up: every message arrives, in order, and every
        // acknowledgement reaches the publisher.
        let mut got = Vec::new();
        while got.len() < 6 {
            let m = raw_publish_in(&mut slow).await;
            got.push(text(&m));
            slow.send(Packet::PubAck(PubResp::new(m.packet_id.unwrap())))
                .await;
        }
        assert_eq!(got, ["m0", "m1", "m2", "m3", "m4", "m5"]);
        for token in &tokens[acked..] {
            assert_eq!(p.wait_published(*token).await, ReasonCode::Success);
        }
        p.disconnect().await;
    })
    .await;
}
