//! Limits: topic length and levels, subscriptions per session, sessions in total, session expiry.

use super::*;

#[test]
fn a_filter_over_the_level_or_length_limit_is_refused_with_0x8f_and_never_reaches_the_trie() {
    let mut w = world(BrokerConfig::default());
    let (mut c, _) = w.connect(V5, "deep", true, None);
    // 8 000 levels used to overflow the engine thread's stack.
    let ack = w.subscribe(&mut c, &deep(8_000), QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::TopicFilterInvalid]);
    let ack = w.subscribe(&mut c, &"x".repeat(5_000), QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::TopicFilterInvalid]);
    // At the limit it works.
    let ack = w.subscribe(&mut c, &deep(128), QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS1]);
    assert_eq!(w.engine.subs.len(), 1);
    assert_eq!(w.engine.session("deep").unwrap().subscriptions.len(), 1);
}

#[test]
fn a_publish_to_a_topic_over_the_limit_ends_the_connection_with_0x90_in_5_0_and_a_close_in_3_1_1() {
    let mut w = world(BrokerConfig::default());
    let (mut sub, _) = w.connect(V5, "s", true, None);
    w.subscribe(&mut sub, "#", QoS::AtMostOnce);
    let (mut p5, _) = w.connect(V5, "p5", true, None);
    w.publish(&p5, &deep(129), b"x", QoS::AtLeastOnce, false, 1);
    let sent = p5.packets();
    assert!(
        matches!(sent.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::TopicNameInvalid),
        "{sent:?}"
    );
    assert!(p5.closed);
    let (mut p3, _) = w.connect(V3, "p3", true, None);
    w.publish(&p3, &deep(129), b"x", QoS::AtMostOnce, false, 1);
    assert!(p3.packets().is_empty());
    assert!(p3.closed);
    assert!(sub.publishes().is_empty(), "nothing routed");
}

#[test]
fn a_subscribe_beyond_the_subscription_limit_gets_0x97_for_the_filters_over_it() {
    let config = BrokerConfig {
        max_subscriptions_per_session: 2,
        ..Default::default()
    };
    let mut w = world(config);
    let (mut c, _) = w.connect(V5, "c", true, None);
    let filters = ["a", "b", "c"];
    let sub = Subscribe {
        packet_id: pid(1),
        subscriptions: filters
            .iter()
            .map(|f| Subscription {
                filter: TopicFilter::new(f).unwrap(),
                options: SubscriptionOptions::default(),
            })
            .collect(),
        properties: Properties::default(),
    };
    w.packet(&c, Packet::Subscribe(sub));
    let ack = c.suback();
    assert_eq!(
        ack.reasons,
        vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::QuotaExceeded
        ]
    );
    // Replacing an existing subscription is not a new one [MQTT-3.8.4-3].
    let ack = w.subscribe(&mut c, "a", QoS::AtLeastOnce);
    assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS1]);
}

#[test]
fn a_new_session_beyond_max_sessions_is_refused_with_0x97_while_existing_ones_resume() {
    let config = BrokerConfig {
        max_sessions: 2,
        ..Default::default()
    };
    let mut w = world(config);
    let (a, _) = w.connect(V5, "a", false, Some(600));
    w.disconnect(&a);
    let (_b, _) = w.connect(V5, "b", true, None);
    let (c, ack) = w.connect(V5, "c", true, None);
    assert_eq!(ack.reason, ReasonCode::QuotaExceeded);
    let (d, ack) = w.connect(V3, "d", true, None);
    assert_eq!(ack.reason, ReasonCode::ServerUnavailable);
    drop((c, d));
    let (_a, ack) = w.connect(V5, "a", false, Some(600));
    assert_eq!(ack.reason, ReasonCode::Success);
    assert!(ack.session_present);
    assert_eq!(w.engine.sessions.len(), 2);
}

#[test]
fn the_session_expiry_is_capped_by_default_and_the_client_is_told_mqtt_3_2_2_3_2() {
    let mut w = world(BrokerConfig::default());
    let (c, ack) = w.connect(V5, "forever", false, Some(u32::MAX));
    assert_eq!(
        ack.properties.session_expiry_interval,
        Some(crate::config::DEFAULT_MAX_SESSION_EXPIRY)
    );
    w.disconnect(&c);
    assert!(w.engine.session("forever").unwrap().expires_at.is_some());
    // A 3.1.1 clean-session-0 session ends too, once its client has been gone that long.
    let (c3, _) = w.connect(V3, "old", false, None);
    w.close(&c3);
    assert!(w.engine.session("old").unwrap().expires_at.is_some());
}
