//! Retained messages: set, replace, delete, Retain Handling, limits, payloads in the store.

use super::*;

#[test]
fn retained_messages_are_set_replaced_deleted_and_sent_on_subscribe_mqtt_3_3_1_5_to_8() {
    let mut w = world(BrokerConfig::default());
    let (p, _) = w.connect(V3, "P", true, None);
    w.publish(&p, "r/1", b"old", QoS::AtMostOnce, true, 0);
    w.publish(&p, "r/1", b"new", QoS::AtMostOnce, true, 0);
    w.publish(&p, "r/2", b"gone", QoS::AtMostOnce, true, 0);
    w.publish(&p, "r/2", b"", QoS::AtMostOnce, true, 0);
    let (mut s, _) = w.connect(V3, "S", true, None);
    w.subscribe(&mut s, "r/#", QoS::AtLeastOnce);
    let got = s.publishes();
    assert_eq!(payloads(&got), [b"new"]);
    assert!(got[0].retain);
    // A live retained message to an established subscription has RETAIN 0 (3.1.1).
    w.publish(&p, "r/1", b"live", QoS::AtMostOnce, true, 0);
    assert!(!s.publishes()[0].retain); // [MQTT-3.3.1-9] (3.1.1)
}

#[test]
fn retain_handling_1_sends_retained_only_for_a_new_subscription_and_2_never() {
    let mut w = world(BrokerConfig::default());
    let (p, _) = w.connect(V5, "P", true, None);
    w.publish(&p, "r", b"x", QoS::AtMostOnce, true, 0);
    let (mut s, _) = w.connect(V5, "S", true, None);
    let rh = |retain_handling| SubscriptionOptions {
        retain_handling,
        ..Default::default()
    };
    w.subscribe_with(&mut s, "r", rh(RetainHandling::SendIfNew), None);
    assert_eq!(s.publishes().len(), 1);
    w.subscribe_with(&mut s, "r", rh(RetainHandling::SendIfNew), None);
    assert!(s.publishes().is_empty()); // [MQTT-3.3.1-10]
    let (mut t, _) = w.connect(V5, "T", true, None);
    w.subscribe_with(&mut t, "r", rh(RetainHandling::DoNotSend), None);
    assert!(t.publishes().is_empty()); // [MQTT-3.3.1-11]
}

#[test]
fn retain_as_published_keeps_the_flag_on_forwarded_messages_mqtt_3_3_1_12() {
    let mut w = world(BrokerConfig::default());
    let (mut s, _) = w.connect(V5, "S", true, None);
    let rap = SubscriptionOptions {
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
        ..Default::default()
    };
    w.subscribe_with(&mut s, "r", rap, None);
    let (p, _) = w.connect(V5, "P", true, None);
    w.publish(&p, "r", b"x", QoS::AtMostOnce, true, 0);
    assert!(s.publishes()[0].retain);
}

#[test]
fn retained_messages_are_bounded_by_bytes_and_a_refused_one_removes_the_stale_value() {
    let config = BrokerConfig {
        max_retained_bytes: 10,
        ..Default::default()
    };
    let mut w = world(config);
    let (p, _) = w.connect(V5, "p", true, None);
    w.publish(&p, "a", b"123456", QoS::AtMostOnce, true, 1);
    w.publish(&p, "b", b"1234", QoS::AtMostOnce, true, 2);
    assert_eq!(w.engine.retained().count(), 2);
    // 6 + 4 + 3 > 10: not retained.
    w.publish(&p, "c", b"123", QoS::AtMostOnce, true, 3);
    assert_eq!(w.engine.retained().count(), 2);
    // A larger value for "b" that does not fit removes the old one rather than keep it.
    w.publish(&p, "b", b"123456789", QoS::AtMostOnce, true, 4);
    let topics: Vec<&str> = w.engine.retained().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["a"]);
    assert_eq!(w.engine.retained_bytes, 6);
    // Deleting frees the bytes.
    w.publish(&p, "a", b"", QoS::AtMostOnce, true, 5);
    assert_eq!(w.engine.retained_bytes, 0);
    w.publish(&p, "c", b"123", QoS::AtMostOnce, true, 6);
    assert_eq!(w.engine.retained().count(), 1);
}

#[test]
fn retained_payloads_live_in_the_store_and_are_read_when_a_subscribe_sends_them() {
    let dir = temp_dir("retained-in-store");
    let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
    let (p, _) = w.connect(V5, "p", true, None);
    w.publish(&p, "r/1", b"one", QoS::AtLeastOnce, true, 1);
    // Set and subscribed in one batch: read from the batch, not yet in the store.
    let (mut s, _) = w.connect(V5, "s", true, None);
    let mut t = TopicName::new("r/2").unwrap();
    let mut p2 = Publish::new(t.clone(), Bytes::from_static(b"two"));
    p2.retain = true;
    w.engine.handle(
        Command::Packet {
            conn: p.id,
            packet: Packet::Publish(p2),
        },
        w.now,
    );
    let sub = Subscribe {
        packet_id: pid(7),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new("r/#").unwrap(),
            options: SubscriptionOptions::default(),
        }],
        properties: Properties::default(),
    };
    w.engine.handle(
        Command::Packet {
            conn: s.id,
            packet: Packet::Subscribe(sub),
        },
        w.now,
    );
    w.engine.flush(w.now);
    let got = s.publishes();
    assert_eq!(payloads(&got), vec![&b"one"[..], b"two"]);
    assert!(w.engine.batch_retained.is_empty());
    // After a restart only metadata is in memory; the payload comes from the store.
    drop(w);
    let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
    assert_eq!(w.engine.retained_bytes(), 6);
    let (mut s, _) = w.connect(V5, "s2", true, None);
    w.subscribe(&mut s, "r/+", QoS::AtMostOnce);
    let got = s.publishes();
    assert_eq!(payloads(&got), vec![&b"one"[..], b"two"]);
    assert!(got.iter().all(|p| p.retain), "[MQTT-3.3.1-8]");
    t = TopicName::new("r/1").unwrap();
    assert_eq!(w.engine.load_retained(t.as_str()).unwrap().payload, "one");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_subscribe_matching_more_retained_messages_than_its_queue_holds_reads_only_what_fits() {
    let config = BrokerConfig {
        max_inflight: 2,
        max_queued_messages: 3,
        ..Default::default()
    };
    let mut w = world(config);
    let (p, _) = w.connect(V5, "p", true, None);
    for i in 0..20u16 {
        let topic = format!("many/{i}");
        let mut m = Publish::new(TopicName::new(&topic).unwrap(), Bytes::from_static(b"x"));
        m.retain = true;
        m.qos = QoS::AtLeastOnce;
        m.packet_id = Some(pid(i + 1));
        w.packet(&p, Packet::Publish(m));
    }
    assert_eq!(w.engine.retained().count(), 20);
    let (mut s, _) = w.connect(V5, "s", true, None);
    w.subscribe(&mut s, "many/#", QoS::AtLeastOnce);
    // Two in flight, three queued, the rest never collected nor read.
    assert_eq!(s.publishes().len(), 2);
    let session = w.engine.session("s").unwrap();
    assert_eq!(session.queue.len(), 3);

    // The same filter a hundred thousand times in one SUBSCRIBE is one walk, bounded by the
    // same budget (it used to collect every match once per repetition).
    let (mut t, _) = w.connect(V5, "t", true, None);
    let sub = Subscribe {
        packet_id: pid(9),
        subscriptions: (0..100_000)
            .map(|_| Subscription {
                filter: TopicFilter::new("#").unwrap(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            })
            .collect(),
        properties: Properties::default(),
    };
    w.packet(&t, Packet::Subscribe(sub));
    assert_eq!(t.suback().reasons.len(), 100_000);
    assert_eq!(t.publishes().len(), 2);
    assert_eq!(w.engine.session("t").unwrap().queue.len(), 3);
}

#[test]
fn expired_retained_messages_are_swept_out_and_free_their_bytes_mqtt_3_3_2_5() {
    // Without `$SYS`, whose retained messages would be listed and counted too.
    let mut w = world(BrokerConfig {
        sys_interval: 0,
        ..Default::default()
    });
    let (p, _) = w.connect(V5, "p", true, None);
    let mut m = Publish::new(
        TopicName::new("short").unwrap(),
        Bytes::from_static(b"12345"),
    );
    m.retain = true;
    m.properties.message_expiry_interval = Some(5);
    w.packet(&p, Packet::Publish(m));
    w.publish(&p, "long", b"123", QoS::AtMostOnce, true, 1);
    assert_eq!(w.engine.retained_bytes(), 8);
    w.advance(6);
    w.advance(11);
    let topics: Vec<&str> = w.engine.retained().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, vec!["long"]);
    assert_eq!(w.engine.retained_bytes(), 3);
}
