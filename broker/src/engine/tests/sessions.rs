//! Sessions: clean and persistent, resume, takeover, expiry, kick and discard, events.

use super::*;

#[test]
fn a_persistent_session_keeps_subscriptions_and_queues_qos1_while_offline() {
    let mut w = world(BrokerConfig::default());
    let (mut a, ack) = w.connect(V3, "A", false, None);
    assert!(!ack.session_present);
    w.subscribe(&mut a, "seed/cmd", QoS::AtLeastOnce);
    w.disconnect(&a);
    let (b, _) = w.connect(V3, "B", true, None);
    for (i, m) in [b"1", b"2", b"3"].into_iter().enumerate() {
        w.publish(&b, "seed/cmd", m, QoS::AtLeastOnce, false, i as u16 + 1);
    }
    assert_eq!(w.engine.session("A").unwrap().queued_len(), 3);
    // [MQTT-3.2.2-3]: session present = 1 on resume; queued messages follow in order.
    let (mut a, ack) = w.connect(V3, "A", false, None);
    assert!(ack.session_present);
    let got = a.publishes();
    assert_eq!(payloads(&got), [b"1", b"2", b"3"]);
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
}

#[test]
fn a_clean_session_keeps_nothing_mqtt_3_1_2_6() {
    let mut w = world(BrokerConfig::default());
    let (mut a, _) = w.connect(V3, "A", true, None);
    w.subscribe(&mut a, "seed/cmd", QoS::AtLeastOnce);
    w.disconnect(&a);
    assert!(w.engine.session("A").is_none());
    let (b, _) = w.connect(V3, "B", true, None);
    w.publish(&b, "seed/cmd", b"1", QoS::AtLeastOnce, false, 1);
    let (mut a, ack) = w.connect(V3, "A", true, None);
    assert!(!ack.session_present);
    assert!(a.publishes().is_empty());
}

#[test]
fn clean_start_discards_an_existing_session_mqtt_3_1_2_4() {
    let mut w = world(BrokerConfig::default());
    let (mut a, _) = w.connect(V5, "A", false, Some(600));
    w.subscribe(&mut a, "t", QoS::AtLeastOnce);
    w.disconnect(&a);
    let (_a, ack) = w.connect(V5, "A", true, Some(600));
    assert!(!ack.session_present);
    assert!(w.engine.session("A").unwrap().subscriptions.is_empty());
}

#[test]
fn unacknowledged_messages_are_resent_with_dup_on_resume_mqtt_4_4_0_1() {
    let mut w = world(BrokerConfig::default());
    let (mut a, _) = w.connect(V5, "A", false, Some(600));
    w.subscribe(&mut a, "t", QoS::ExactlyOnce);
    let (b, _) = w.connect(V5, "B", true, None);
    w.publish(&b, "t", b"q1", QoS::AtLeastOnce, false, 1);
    w.publish(&b, "t", b"q2", QoS::ExactlyOnce, false, 2);
    let first = a.publishes();
    assert_eq!(first.len(), 2);
    // PUBREC for the QoS 2 one: it moves to awaiting PUBCOMP.
    w.packet(
        &a,
        Packet::PubRec(PubResp::new(first[1].packet_id.unwrap())),
    );
    w.close(&a);
    let (mut a, ack) = w.connect(V5, "A", false, Some(600));
    assert!(ack.session_present);
    let again = a.packets();
    assert!(matches!(&again[0], Packet::Publish(p) if p.dup && p.packet_id == first[0].packet_id));
    assert_eq!(
        again[1],
        Packet::PubRel(PubResp::new(first[1].packet_id.unwrap()))
    );
    assert_eq!(again.len(), 2);
}

#[test]
fn a_takeover_closes_the_old_connection_with_0x8e_mqtt_3_1_4_3() {
    let mut w = world(BrokerConfig::default());
    let (mut old, _) = w.connect(V5, "A", false, Some(600));
    w.subscribe(&mut old, "t", QoS::AtLeastOnce);
    let (_new, ack) = w.connect(V5, "A", false, Some(600));
    assert!(ack.session_present);
    assert_eq!(
        old.packets(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::SessionTakenOver
        ))]
    );
    assert!(old.closed);
}

#[test]
fn a_session_ends_when_its_expiry_interval_runs_out() {
    let mut w = world(BrokerConfig::default());
    let (a, _) = w.connect(V5, "A", false, Some(30));
    w.disconnect(&a);
    w.advance(29);
    assert!(w.engine.session("A").is_some());
    w.advance(1);
    assert!(w.engine.session("A").is_none());
}

#[test]
fn a_non_zero_expiry_at_disconnect_after_zero_at_connect_is_a_protocol_error_mqtt_3_14_2_2() {
    let mut w = world(BrokerConfig::default());
    let (mut a, _) = w.connect(V5, "A", true, None);
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    w.packet(&a, Packet::Disconnect(d));
    assert_eq!(
        a.packets(),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn an_empty_client_id_gets_an_assigned_one_in_5_0_and_is_refused_with_clean_0_in_3_1_1() {
    let mut w = world(BrokerConfig::default());
    let (_c, ack) = w.connect(V5, "", true, None);
    assert!(ack.properties.assigned_client_identifier.is_some()); // [MQTT-3.2.2-16]
    let (_c, ack) = w.connect(V3, "", false, None);
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid); // [MQTT-3.1.3-8]
}

#[test]
fn kick_closes_with_0x98_publishes_the_will_and_keeps_the_session() {
    let mut w = world(BrokerConfig::default());
    let (mut s, _) = w.connect(V5, "S", true, None);
    w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
    let mut a = connect_with_will(&mut w, V5, "A", None, Some(60));
    a.packets();
    assert!(w.engine.kick("A", w.now));
    w.engine.flush(w.now);
    let sent = a.packets();
    assert!(
        matches!(&sent[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::AdministrativeAction)
    );
    assert!(a.closed);
    assert_eq!(
        payloads(&s.publishes()),
        [b"gone"],
        "closed by the server: the will goes"
    );
    let session = w.engine.session("A").unwrap();
    assert!(session.online.is_none());
    assert!(
        session.expires_at.is_some(),
        "kept, with its expiry running"
    );
    assert!(!w.engine.kick("nobody", w.now));
}

#[test]
fn discard_ends_the_session_and_publishes_a_will_still_waiting_for_its_delay() {
    let mut w = world(BrokerConfig::default());
    let (mut s, _) = w.connect(V5, "S", true, None);
    w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
    let a = connect_with_will(&mut w, V5, "A", Some(30), Some(60));
    w.close(&a);
    assert!(s.publishes().is_empty(), "the will waits for its delay");
    assert!(w.engine.discard("A", w.now));
    w.engine.flush(w.now);
    assert!(w.engine.session("A").is_none());
    assert_eq!(payloads(&s.publishes()), [b"gone"]);
    assert!(!w.engine.discard("A", w.now));
}

#[test]
fn session_events_go_to_listeners_with_one_queue_event_per_session_per_batch() {
    let mut w = world(BrokerConfig::default());
    let (mut a, _) = w.connect(V5, "A", false, Some(60));
    w.subscribe(&mut a, "t", QoS::AtLeastOnce);
    assert!(w.engine.dirty.is_empty(), "nobody listens: nothing noted");
    let mut events = w.engine.subscribe_events();
    w.disconnect(&a);
    let (p, _) = w.connect(V5, "P", true, None);
    // Three messages in one batch: one queue event.
    for id in 1..=3 {
        let mut publish = Publish::new(TopicName::new("t").unwrap(), Bytes::from_static(b"x"));
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = Some(pid(id));
        w.engine.handle(
            Command::Packet {
                conn: p.id,
                packet: Packet::Publish(publish),
            },
            w.now,
        );
    }
    w.engine.flush(w.now);
    let mut got = Vec::new();
    while let Ok(e) = events.try_recv() {
        got.push(e);
    }
    // Each event carries the session's summary as it is after the change.
    let seen: Vec<(&str, &str, usize, bool)> = got
        .iter()
        .map(|e| match e {
            SessionEvent::Disconnected { client_id, session } => (
                "disconnected",
                client_id.as_str(),
                session.queued,
                session.connected,
            ),
            SessionEvent::Created { client_id, session } => (
                "created",
                client_id.as_str(),
                session.queued,
                session.connected,
            ),
            SessionEvent::Connected { client_id, session } => (
                "connected",
                client_id.as_str(),
                session.queued,
                session.connected,
            ),
            SessionEvent::Queue {
                client_id,
                queued,
                session,
                ..
            } => {
                assert_eq!(*queued, session.queued);
                (
                    "queue",
                    client_id.as_str(),
                    session.queued,
                    session.connected,
                )
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("disconnected", "A", 0, false),
            ("queue", "A", 0, false),
            ("created", "P", 0, false),
            ("connected", "P", 0, true),
            ("queue", "P", 0, true),
            ("queue", "A", 3, false),
        ]
    );
    // An offline persistent session's summary says when it ends.
    match &got[0] {
        SessionEvent::Disconnected { session, .. } => assert!(session.expires_at_ms.is_some()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_5_0_resume_without_a_session_expiry_gets_its_queued_messages_mqtt_3_1_2_5_and_4_4_0_1() {
    for store in ["memory", "sqlite"] {
        let dir = temp_dir(&format!("resume-no-expiry-{store}"));
        let backing: Box<dyn Store> = match store {
            "memory" => Box::new(crate::store::MemoryStore::new()),
            _ => sqlite(&dir),
        };
        let mut w = world_on(BrokerConfig::default(), backing);
        let (mut a, _) = w.connect(V5, "a", true, Some(99_999));
        w.subscribe(&mut a, "TopicA/+", QoS::ExactlyOnce);
        w.disconnect(&a);
        let (b, _) = w.connect(V5, "b", true, None);
        w.publish(&b, "TopicA/B", b"qos0", QoS::AtMostOnce, false, 1);
        w.publish(&b, "TopicA/C", b"qos1", QoS::AtLeastOnce, false, 2);
        w.publish(&b, "TopicA/D", b"qos2", QoS::ExactlyOnce, false, 3);
        // Clean Start 0 and no Session Expiry property: expiry 0 from now on, but the
        // session is resumed and its messages are sent.
        let (mut a, ack) = w.connect(V5, "a", false, None);
        assert!(ack.session_present, "{store}");
        let got = a.publishes();
        assert_eq!(payloads(&got), vec![&b"qos1"[..], b"qos2"], "{store}");
        // It ends with this connection.
        w.disconnect(&a);
        assert!(w.engine.session("a").is_none(), "{store}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
