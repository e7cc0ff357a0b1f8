//! Subscriptions: wildcards, the `$` rule, overlapping subscriptions, shared subscriptions,
//! No Local, unsubscribe, the granted QoS.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::protocol::{Properties, ProtocolVersion, QoS, ReasonCode, Subscription};
use e2e::{clean, filter, for_each_transport, for_each_transport_and_version, text, Bridge};

const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn wildcard_filters_match_the_topics_the_rules_say() {
    // [MQTT-4.7.1-1..3] (`#` and `+`), spec 4.7.1.2: `sport/#` also matches `sport`;
    // `+` matches one whole level.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut plus = bridge.client(t, clean(v, "plus")).await;
        plus.subscribe("a/+/c", QoS::AtLeastOnce).await;
        let mut hash = bridge.client(t, clean(v, "hash")).await;
        hash.subscribe("a/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        for topic in ["a/b/c", "a/b/d", "a/b/c/d", "a", "b/b/c", "a//c"] {
            p.publish(topic, topic, QoS::AtLeastOnce, false).await;
        }
        p.publish("end", "end", QoS::AtLeastOnce, false).await;
        assert_eq!(plus.recv_payloads(2).await, ["a/b/c", "a//c"]);
        plus.expect_no_message(Duration::from_millis(100)).await;
        assert_eq!(
            hash.recv_payloads(5).await,
            ["a/b/c", "a/b/d", "a/b/c/d", "a", "a//c"]
        );
        hash.expect_no_message(Duration::from_millis(100)).await;
        plus.disconnect().await;
        hash.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn topics_starting_with_dollar_are_not_matched_by_a_leading_wildcard() {
    // [MQTT-4.7.2-1]: `#` and `+/...` do not match `$...` topics; `$dollar/#` does.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut all = bridge.client(t, clean(v, "all")).await;
        all.subscribe("#", QoS::AtLeastOnce).await;
        all.subscribe("+/x", QoS::AtLeastOnce).await;
        let mut dollar = bridge.client(t, clean(v, "dollar")).await;
        dollar.subscribe("$dollar/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("$dollar/x", "hidden", QoS::AtLeastOnce, false)
            .await;
        p.publish("plain/x", "seen", QoS::AtLeastOnce, false).await;
        assert_eq!(text(&dollar.recv().await), "hidden");
        let got = all.recv().await;
        assert_eq!(
            text(&got),
            "seen",
            "the $ topic must not reach `#` or `+/x`"
        );
        all.expect_no_message(Duration::from_millis(200)).await;
        all.disconnect().await;
        dollar.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_message_at_the_highest_qos() {
    // 3.1.1 [MQTT-3.3.5-1], 5.0 [MQTT-3.3.4-2]: one client, two matching subscriptions
    // (QoS 0 and QoS 2): the message arrives once, at QoS 2.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("o/#", QoS::AtMostOnce).await;
        s.subscribe("o/+", QoS::ExactlyOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("o/x", "both", QoS::ExactlyOnce, false).await;
        let got = s.recv().await;
        assert_eq!((text(&got).as_str(), got.qos), ("both", QoS::ExactlyOnce));
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn overlapping_subscriptions_carry_every_matching_subscription_identifier() {
    // [MQTT-3.3.4-3], [MQTT-3.3.4-4]: the one PUBLISH carries the identifiers of all the
    // matching subscriptions; a subscription without one adds none.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(V5, "s")).await;
        for (f, id) in [("si/#", Some(1)), ("si/+", Some(2)), ("+/x", None)] {
            let props = Properties {
                subscription_identifiers: id.into_iter().collect(),
                ..Properties::default()
            };
            s.subscribe_with(vec![Subscription::new(filter(f), QoS::AtLeastOnce)], props)
                .await;
        }
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish("si/x", "x", QoS::AtLeastOnce, false).await;
        p.publish("si/y/z", "z", QoS::AtLeastOnce, false).await;
        let got = s.recv().await;
        let ids: BTreeSet<u32> = got
            .properties
            .subscription_identifiers
            .iter()
            .copied()
            .collect();
        assert_eq!(ids, BTreeSet::from([1, 2]));
        let got = s.recv().await;
        assert_eq!(got.properties.subscription_identifiers, [1]);
        s.expect_no_message(Duration::from_millis(200)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_shared_subscription_delivers_each_message_to_one_member_of_the_group() {
    // 5.0 spec 4.8.2: each message to one session of the group (load-balanced: both get
    // some), every group gets every message, and a normal subscription gets all of them.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut members = Vec::new();
        for id in ["m1", "m2"] {
            let mut m = bridge.client(t, clean(V5, id)).await;
            m.subscribe("$share/g/sh/#", QoS::AtLeastOnce).await;
            members.push(m);
        }
        let mut other_group = bridge.client(t, clean(V5, "h1")).await;
        other_group
            .subscribe("$share/h/sh/#", QoS::AtLeastOnce)
            .await;
        let mut normal = bridge.client(t, clean(V5, "n")).await;
        normal.subscribe("sh/#", QoS::AtLeastOnce).await;

        let mut p = bridge.client(t, clean(V5, "p")).await;
        let sent: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        for m in &sent {
            p.publish("sh/t", m.clone(), QoS::AtLeastOnce, false).await;
        }
        assert_eq!(normal.recv_payloads(10).await, sent);
        assert_eq!(other_group.recv_payloads(10).await, sent);
        let mut shared = Vec::new();
        for m in members.iter_mut() {
            let mut mine = Vec::new();
            while let Some(msg) = m.try_recv_within(Duration::from_millis(300)).await {
                mine.push(text(&msg));
            }
            assert!(!mine.is_empty(), "each member gets a share: {mine:?}");
            shared.extend(mine);
        }
        shared.sort();
        let mut expected = sent.clone();
        expected.sort();
        assert_eq!(shared, expected, "each message to exactly one member");
    })
    .await;
}

#[tokio::test]
async fn no_local_keeps_a_client_s_own_messages_from_coming_back() {
    // [MQTT-3.8.3-3]: with No Local, messages are not forwarded to the connection with the
    // publisher's client id; other subscribers still get them.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut me = bridge.client(t, clean(V5, "me")).await;
        let mut s = Subscription::new(filter("nl/#"), QoS::AtLeastOnce);
        s.options.no_local = true;
        me.subscribe_with(vec![s], Properties::default()).await;
        let mut echo = bridge.client(t, clean(V5, "echo")).await;
        echo.subscribe("nl/#", QoS::AtLeastOnce).await;

        me.publish("nl/t", "mine", QoS::AtLeastOnce, false).await;
        assert_eq!(text(&echo.recv().await), "mine");
        me.expect_no_message(Duration::from_millis(300)).await;
        echo.publish("nl/t", "theirs", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(text(&me.recv().await), "theirs");
        // Without No Local a client gets its own messages.
        assert_eq!(text(&echo.recv().await), "theirs");
        me.disconnect().await;
        echo.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_says_whether_the_subscription_existed() {
    // [MQTT-3.10.4-1] (the subscription is deleted), [MQTT-3.10.4-4] (UNSUBACK); 5.0 spec
    // 3.11.3: 0x11 No subscription existed.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("un/t", QoS::AtLeastOnce).await;
        let ack = s.unsubscribe("un/t").await;
        if v == V5 {
            assert_eq!(ack.reasons, [ReasonCode::Success]);
            let ack = s.unsubscribe("un/never").await;
            assert_eq!(ack.reasons, [ReasonCode::NoSubscriptionExisted]);
        }
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("un/t", "gone", QoS::AtLeastOnce, false).await;
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_repeated_subscription_replaces_the_first_and_delivers_once() {
    // [MQTT-3.8.4-3]: the new subscription replaces the existing one with the same filter
    // (its QoS now 2); a message is not delivered twice.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("rep/t", QoS::AtMostOnce).await;
        s.subscribe("rep/t", QoS::ExactlyOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("rep/t", "x", QoS::ExactlyOnce, false).await;
        assert_eq!(s.recv().await.qos, QoS::ExactlyOnce);
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_suback_grants_at_most_the_broker_s_maximum_qos() {
    // 3.1.1 [MQTT-3.8.4-5] / 5.0 [MQTT-3.8.4-6]: the granted QoS may be lower than asked;
    // [MQTT-3.9.3-1]: one reason code per filter, in order. Config: maximum_qos = 1.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start_with_config("[broker]\nmaximum_qos = 1\n");
        let mut s = bridge.client(t, clean(v, "s")).await;
        let subs = vec![
            Subscription::new(filter("g/2"), QoS::ExactlyOnce),
            Subscription::new(filter("g/0"), QoS::AtMostOnce),
        ];
        let ack = s.subscribe_with(subs, Properties::default()).await;
        assert_eq!(ack.reasons, [ReasonCode::GrantedQoS1, ReasonCode::Success]);
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn retained_messages_are_not_sent_for_a_shared_subscription() {
    // 5.0 spec 4.8.2: retained messages are not sent to a session when it subscribes to a
    // shared subscription; live messages are.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish("shr/a", "retained", QoS::AtLeastOnce, true).await;
        let mut m = bridge.client(t, clean(V5, "m")).await;
        m.subscribe("$share/g/shr/#", QoS::AtLeastOnce).await;
        m.expect_no_message(Duration::from_millis(300)).await;
        p.publish("shr/a", "live", QoS::AtLeastOnce, false).await;
        assert_eq!(text(&m.recv().await), "live");
        m.disconnect().await;
    })
    .await;
}
