//! `$SYS/broker/...`: what a pass publishes, what a later one leaves out, who sees it, and
//! that clients cannot write there.

use super::*;

fn sys_world(interval: u64) -> World {
    world(BrokerConfig {
        sys_interval: interval,
        ..Default::default()
    })
}

/// Topic and payload of each PUBLISH.
fn texts(ps: &[Publish]) -> Vec<(String, String)> {
    ps.iter()
        .map(|p| {
            (
                p.topic.as_str().to_owned(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            )
        })
        .collect()
}

fn value<'a>(got: &'a [(String, String)], topic: &str) -> Option<&'a str> {
    got.iter()
        .find(|(t, _)| t == topic)
        .map(|(_, p)| p.as_str())
}

#[test]
fn the_first_pass_publishes_everything_and_later_ones_only_what_changed() {
    let mut w = sys_world(1);
    let (mut s, _) = w.connect(V5, "watcher", true, None);
    w.subscribe(&mut s, "$SYS/#", QoS::AtLeastOnce);
    w.advance(1);
    let first = s.publishes();
    assert!(first.iter().all(|p| p.qos == QoS::AtMostOnce));
    let first = texts(&first);
    let version = format!("mqtt-bridge {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(value(&first, "$SYS/broker/version"), Some(version.as_str()));
    assert_eq!(value(&first, "$SYS/broker/uptime"), Some("0 seconds"));
    assert_eq!(value(&first, "$SYS/broker/clients/connected"), Some("1"));
    assert_eq!(value(&first, "$SYS/broker/clients/maximum"), Some("1"));
    assert_eq!(value(&first, "$SYS/broker/subscriptions/count"), Some("1"));
    // CONNECT and SUBSCRIBE in; CONNACK and SUBACK out.
    assert_eq!(value(&first, "$SYS/broker/messages/received"), Some("2"));
    assert_eq!(value(&first, "$SYS/broker/messages/sent"), Some("2"));
    assert_eq!(
        value(&first, "$SYS/broker/load/messages/received/1min"),
        Some("0.00")
    );
    // Nothing published by a client, nothing retained but `$SYS` itself (counted).
    assert_eq!(
        value(&first, "$SYS/broker/publish/messages/received"),
        Some("0")
    );

    w.advance(1);
    let second = texts(&s.publishes());
    assert_eq!(value(&second, "$SYS/broker/uptime"), Some("1 seconds"));
    assert_eq!(
        value(&second, "$SYS/broker/version"),
        None,
        "once, at start"
    );
    assert_eq!(value(&second, "$SYS/broker/clients/connected"), None);
    assert_eq!(value(&second, "$SYS/broker/messages/received"), None);
    // The first pass's messages went out to the watcher: that changed.
    let sent: u64 = value(&second, "$SYS/broker/messages/sent")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sent, 2 + first.len() as u64);
    // A rate of them per minute, on its way up.
    let load: f64 = value(&second, "$SYS/broker/load/messages/sent/1min")
        .unwrap()
        .parse()
        .unwrap();
    assert!(load > 0.0 && load <= first.len() as f64, "{load}");
}

#[test]
fn a_new_subscriber_gets_the_values_as_retained_messages_and_hash_never_matches_them_mqtt_4_7_2_1()
{
    let mut w = sys_world(1);
    let (mut all, _) = w.connect(V5, "all", true, None);
    w.subscribe(&mut all, "#", QoS::AtMostOnce);
    w.subscribe(&mut all, "+/broker/#", QoS::AtMostOnce);
    w.advance(1);
    w.advance(1);
    assert!(all.publishes().is_empty(), "[MQTT-4.7.2-1]");
    let (mut late, _) = w.connect(V3, "late", true, None);
    w.subscribe(&mut late, "$SYS/broker/clients/+", QoS::AtMostOnce);
    let got = late.publishes();
    assert!(got.iter().all(|p| p.retain), "sent on subscribe: RETAIN 1");
    let got = texts(&got);
    assert_eq!(value(&got, "$SYS/broker/clients/connected"), Some("1"));
    assert_eq!(value(&got, "$SYS/broker/clients/total"), Some("1"));
    // Retained in memory only: nothing of `$SYS` was written to the store.
    assert!(w
        .engine
        .retained()
        .any(|(t, _)| t.as_str() == "$SYS/broker/uptime"));
    assert!(w
        .engine
        .store
        .load_retained("$SYS/broker/uptime")
        .unwrap()
        .is_none());
}

#[test]
fn clients_cannot_publish_to_sys_5_0_gets_0x87_3_1_1_is_acknowledged_and_nothing_is_routed() {
    let mut w = sys_world(1);
    let (mut s, _) = w.connect(V5, "watcher", true, None);
    w.subscribe(&mut s, "$SYS/#", QoS::AtLeastOnce);
    for (v, id) in [(V5, "p5"), (V3, "p3")] {
        let (mut p, _) = w.connect(v, id, true, None);
        w.publish(
            &p,
            "$SYS/broker/uptime",
            b"forever",
            QoS::AtLeastOnce,
            true,
            1,
        );
        let acks: Vec<PubResp> = p
            .packets()
            .into_iter()
            .filter_map(|p| match p {
                Packet::PubAck(a) => Some(a),
                _ => None,
            })
            .collect();
        let expected = if v == V5 {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].reason, expected);
    }
    assert!(s.publishes().is_empty());
    assert!(!w
        .engine
        .retained()
        .any(|(t, _)| t.as_str() == "$SYS/broker/uptime"));
    // A will there is refused at CONNECT like any will the user may not write.
    let mut c = Connect::new(V5, "willful", true);
    c.will = Some(Will {
        topic: TopicName::new("$SYS/broker/version").unwrap(),
        payload: Bytes::from_static(b"fake"),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Properties::default(),
    });
    let (_, ack) = w.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
}

#[test]
fn with_sys_interval_0_nothing_is_published_or_retained() {
    let mut w = sys_world(0);
    let (mut s, _) = w.connect(V5, "watcher", true, None);
    w.subscribe(&mut s, "$SYS/#", QoS::AtLeastOnce);
    for _ in 0..15 {
        w.advance(1);
    }
    assert!(s.publishes().is_empty());
    assert_eq!(w.engine.retained().count(), 0);
}

#[test]
fn sys_messages_do_not_use_up_the_clients_retained_limits() {
    let mut w = world(BrokerConfig {
        sys_interval: 1,
        max_retained_messages: 2,
        max_retained_bytes: 6,
        ..Default::default()
    });
    w.advance(1);
    let sys = w.engine.retained().count();
    assert!(sys > 2);
    let (p, _) = w.connect(V5, "p", true, None);
    w.publish(&p, "a", b"abc", QoS::AtMostOnce, true, 0);
    w.publish(&p, "b", b"def", QoS::AtMostOnce, true, 0);
    w.publish(&p, "c", b"g", QoS::AtMostOnce, true, 0);
    let mine: Vec<&str> = w
        .engine
        .retained()
        .map(|(t, _)| t.as_str())
        .filter(|t| !t.starts_with('$'))
        .collect();
    assert_eq!(mine, ["a", "b"]);
    assert_eq!(w.engine.retained_bytes(), 6);
}
