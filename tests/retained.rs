//! Retained messages: set, replace, delete, delivered on subscribe with RETAIN 1, Retain
//! Handling 0/1/2 and Retain As Published (5.0).
//!
//! Statement numbers are the 5.0 ones unless marked 3.1.1.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::protocol::{Properties, ProtocolVersion, QoS, RetainHandling, Subscription};
use e2e::{clean, filter, for_each_transport, for_each_transport_and_version, text, Bridge};

const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn a_retained_message_is_sent_to_a_new_subscriber_with_retain_set() {
    // [MQTT-3.3.1-5] (stored), [MQTT-3.3.1-9] (sent on subscribe; 3.1.1 [MQTT-3.3.1-6]),
    // 3.1.1 [MQTT-3.3.1-8] (RETAIN 1 when sent for a new subscription).
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("ret/a", "kept", QoS::AtLeastOnce, true).await;
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("ret/#", QoS::AtLeastOnce).await;
        let got = s.recv().await;
        assert_eq!((got.topic.as_str(), text(&got).as_str()), ("ret/a", "kept"));
        assert!(
            got.retain,
            "RETAIN 1 on a retained message sent for a subscription"
        );
        assert_eq!(got.qos, QoS::AtLeastOnce);
        s.expect_no_message(Duration::from_millis(200)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_new_retained_message_replaces_the_previous_one() {
    // [MQTT-3.3.1-5]: it replaces any existing retained message for the topic.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("ret/a", "first", QoS::AtLeastOnce, true).await;
        p.publish("ret/a", "second", QoS::AtLeastOnce, true).await;
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("ret/a", QoS::AtLeastOnce).await;
        assert_eq!(text(&s.recv().await), "second");
        s.expect_no_message(Duration::from_millis(200)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn an_empty_retained_message_deletes_the_retained_message_and_is_still_forwarded() {
    // [MQTT-3.3.1-6] (an empty payload removes the retained message; 3.1.1 [MQTT-3.3.1-10]),
    // [MQTT-3.3.1-7] (and is not stored itself; 3.1.1 [MQTT-3.3.1-11]); current subscribers
    // still get it (3.1.1 spec 3.3.1.3).
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut current = bridge.client(t, clean(v, "current")).await;
        current.subscribe("ret/a", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("ret/a", "kept", QoS::AtLeastOnce, true).await;
        p.publish("ret/a", "", QoS::AtLeastOnce, true).await;
        assert_eq!(text(&current.recv().await), "kept");
        assert_eq!(current.recv().await.payload.len(), 0);
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("ret/#", QoS::AtLeastOnce).await;
        s.expect_no_message(Duration::from_millis(300)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_published_without_retain_leaves_the_retained_message_alone() {
    // [MQTT-3.3.1-8]: RETAIN 0 neither stores nor removes nor replaces a retained message.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("ret/a", "kept", QoS::AtLeastOnce, true).await;
        p.publish("ret/a", "passing", QoS::AtLeastOnce, false).await;
        p.publish("ret/b", "never kept", QoS::AtLeastOnce, false)
            .await;
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("ret/#", QoS::AtLeastOnce).await;
        assert_eq!(text(&s.recv().await), "kept");
        s.expect_no_message(Duration::from_millis(200)).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_retained_message_forwarded_to_an_existing_subscription_has_retain_0() {
    // [MQTT-3.3.1-12] (Retain As Published 0: RETAIN 0; 3.1.1 [MQTT-3.3.1-9]).
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut s = bridge.client(t, clean(v, "s")).await;
        s.subscribe("ret/#", QoS::AtLeastOnce).await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("ret/a", "live", QoS::AtLeastOnce, true).await;
        let got = s.recv().await;
        assert_eq!(text(&got), "live");
        assert!(!got.retain);
        s.disconnect().await;
    })
    .await;
}

/// A subscription to `f` at QoS 1 with a Retain Handling.
fn sub_rh(f: &str, rh: RetainHandling) -> Subscription {
    let mut s = Subscription::new(filter(f), QoS::AtLeastOnce);
    s.options.retain_handling = rh;
    s
}

#[tokio::test]
async fn retain_handling_0_1_and_2_decide_when_retained_messages_are_sent() {
    // [MQTT-3.3.1-9] (0: at every subscribe), [MQTT-3.3.1-10] (1: only if the subscription
    // did not exist), [MQTT-3.3.1-11] (2: never); [MQTT-3.8.4-3] (a repeated subscription
    // replaces the old one and, with 0, resends the retained messages).
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish("rh/a", "kept", QoS::AtLeastOnce, true).await;
        let mut s = bridge.client(t, clean(V5, "s")).await;
        let none = Properties::default;
        let short = Duration::from_millis(200);

        for _ in 0..2 {
            s.subscribe_with(
                vec![sub_rh("rh/#", RetainHandling::SendAtSubscribe)],
                none(),
            )
            .await;
            assert_eq!(text(&s.recv().await), "kept", "0: sent at every subscribe");
            s.expect_no_message(short).await;
        }

        s.subscribe_with(vec![sub_rh("rh/+", RetainHandling::SendIfNew)], none())
            .await;
        assert_eq!(
            text(&s.recv().await),
            "kept",
            "1: sent for a new subscription"
        );
        s.subscribe_with(vec![sub_rh("rh/+", RetainHandling::SendIfNew)], none())
            .await;
        s.expect_no_message(short).await;

        s.subscribe_with(vec![sub_rh("rh/a", RetainHandling::DoNotSend)], none())
            .await;
        s.expect_no_message(short).await;
        s.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_of_forwarded_messages() {
    // [MQTT-3.3.1-12] (0: RETAIN cleared), [MQTT-3.3.1-13] (1: RETAIN as published).
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut rap = bridge.client(t, clean(V5, "rap")).await;
        let mut s = Subscription::new(filter("rap/#"), QoS::AtLeastOnce);
        s.options.retain_as_published = true;
        rap.subscribe_with(vec![s], Properties::default()).await;
        let mut plain = bridge.client(t, clean(V5, "plain")).await;
        plain.subscribe("rap/#", QoS::AtLeastOnce).await;

        let mut p = bridge.client(t, clean(V5, "p")).await;
        p.publish("rap/a", "retained", QoS::AtLeastOnce, true).await;
        p.publish("rap/a", "not", QoS::AtLeastOnce, false).await;
        let (a, b) = (rap.recv().await, rap.recv().await);
        assert_eq!((text(&a).as_str(), a.retain), ("retained", true));
        assert_eq!((text(&b).as_str(), b.retain), ("not", false));
        let (a, b) = (plain.recv().await, plain.recv().await);
        assert_eq!((a.retain, b.retain), (false, false));
        rap.disconnect().await;
        plain.disconnect().await;
    })
    .await;
}
