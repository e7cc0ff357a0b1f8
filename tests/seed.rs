//! The seed scenario of the project, exactly, in MQTT 3.1.1 and 5.0, over TCP and over
//! WebSocket.
//!
//! Client A connects with clean session 0 (5.0: clean start 0 and a Session Expiry Interval
//! above 0), subscribes to `seed/cmd` at QoS 1 and disconnects; client B publishes three
//! QoS 1 messages to `seed/cmd`; A reconnects with clean session 0 and gets CONNACK with
//! session present = 1 and the three messages, in order. With clean session 1 (5.0: clean
//! start 1, expiry 0) the broker keeps nothing: session present = 0 and nothing arrives.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::protocol::{ProtocolVersion, QoS, ReasonCode};
use e2e::{clean, persistent, Bridge, Transport};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Clean session 0: the subscription and the three messages survive A's absence.
// [MQTT-3.1.2-4] (3.1.1: the session is resumed), [MQTT-3.1.2-5] (5.0: clean start 0
// resumes), [MQTT-3.2.2-2] (session present = 1), [MQTT-3.1.2-5] / [MQTT-4.5.0-1] (QoS 1
// messages queued while offline), [MQTT-4.6.0-6] (in order).
async fn persistent_session_gets_the_three_messages_in_order(t: Transport, v: ProtocolVersion) {
    let bridge = Bridge::start();
    let (mut a, ack) = bridge.connect(t, persistent(v, "A")).await.unwrap();
    assert!(!ack.session_present, "a first connection has no session");
    let sub = a.subscribe("seed/cmd", QoS::AtLeastOnce).await;
    assert_eq!(sub.reasons, vec![ReasonCode::GrantedQoS1]);
    a.disconnect().await;

    let mut b = bridge.client(t, clean(v, "B")).await;
    for payload in ["one", "two", "three"] {
        let reason = b
            .publish("seed/cmd", payload, QoS::AtLeastOnce, false)
            .await;
        assert_eq!(
            reason,
            ReasonCode::Success,
            "A's offline session is a subscriber"
        );
    }
    b.disconnect().await;

    let (mut a, ack) = bridge.connect(t, persistent(v, "A")).await.unwrap();
    assert!(ack.session_present, "CONNACK must say session present = 1");
    assert_eq!(a.recv_payloads(3).await, ["one", "two", "three"]);
    a.expect_no_message(Duration::from_millis(200)).await;
    a.disconnect().await;
}

/// Clean session 1: nothing is kept, nothing arrives.
// [MQTT-3.1.2-6] (3.1.1: clean session 1 discards the session), [MQTT-3.1.2-4] (5.0: clean
// start 1 discards), [MQTT-3.1.2-23] (5.0: expiry 0 ends the session with the connection),
// [MQTT-3.2.2-1] / [MQTT-3.2.2-2] (session present = 0).
async fn clean_session_keeps_nothing(t: Transport, v: ProtocolVersion) {
    let bridge = Bridge::start();
    let (mut a, ack) = bridge.connect(t, clean(v, "A")).await.unwrap();
    assert!(!ack.session_present);
    let sub = a.subscribe("seed/cmd", QoS::AtLeastOnce).await;
    assert_eq!(sub.reasons, vec![ReasonCode::GrantedQoS1]);
    a.disconnect().await;

    let mut b = bridge.client(t, clean(v, "B")).await;
    for payload in ["one", "two", "three"] {
        let reason = b
            .publish("seed/cmd", payload, QoS::AtLeastOnce, false)
            .await;
        let expected = match v {
            ProtocolVersion::V5 => ReasonCode::NoMatchingSubscribers,
            ProtocolVersion::V311 => ReasonCode::Success,
        };
        assert_eq!(reason, expected, "nobody is subscribed any more");
    }
    b.disconnect().await;

    let (mut a, ack) = bridge.connect(t, clean(v, "A")).await.unwrap();
    assert!(!ack.session_present, "CONNACK must say session present = 0");
    a.expect_no_message(Duration::from_millis(300)).await;
    a.disconnect().await;
}

#[tokio::test]
async fn clean_session_0_over_tcp_in_mqtt_3_1_1_delivers_the_three_messages_in_order() {
    persistent_session_gets_the_three_messages_in_order(Transport::Tcp, V311).await;
}

#[tokio::test]
async fn clean_session_0_over_websocket_in_mqtt_3_1_1_delivers_the_three_messages_in_order() {
    persistent_session_gets_the_three_messages_in_order(Transport::Ws, V311).await;
}

#[tokio::test]
async fn clean_start_0_with_expiry_over_tcp_in_mqtt_5_delivers_the_three_messages_in_order() {
    persistent_session_gets_the_three_messages_in_order(Transport::Tcp, V5).await;
}

#[tokio::test]
async fn clean_start_0_with_expiry_over_websocket_in_mqtt_5_delivers_the_three_messages_in_order() {
    persistent_session_gets_the_three_messages_in_order(Transport::Ws, V5).await;
}

#[tokio::test]
async fn clean_session_1_over_tcp_in_mqtt_3_1_1_keeps_nothing() {
    clean_session_keeps_nothing(Transport::Tcp, V311).await;
}

#[tokio::test]
async fn clean_session_1_over_websocket_in_mqtt_3_1_1_keeps_nothing() {
    clean_session_keeps_nothing(Transport::Ws, V311).await;
}

#[tokio::test]
async fn clean_start_1_without_expiry_over_tcp_in_mqtt_5_keeps_nothing() {
    clean_session_keeps_nothing(Transport::Tcp, V5).await;
}

#[tokio::test]
async fn clean_start_1_without_expiry_over_websocket_in_mqtt_5_keeps_nothing() {
    clean_session_keeps_nothing(Transport::Ws, V5).await;
}
