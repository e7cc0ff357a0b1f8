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
use e2e::{clean, options, persistent, Bridge, Transport};

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
            ProtocolVersion::V5 => e2e::no_matching_subscribers(),
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

/// 5.0, the resume without a Session Expiry Interval: A subscribes `TopicA/+` at QoS 2 with
/// expiry 99 999 and leaves; B publishes QoS 0, 1 and 2 (the QoS 1 one with a Message
/// Expiry Interval); A comes back with clean start 0 and no Session Expiry property. The
/// session is resumed and its messages are sent [MQTT-3.1.2-5], [MQTT-4.4.0-1]; the new
/// expiry of 0 only means the session ends with this connection [MQTT-3.1.2-11]; the
/// message expiry is lowered by the time the message waited [MQTT-3.3.2-6].
async fn resume_without_a_session_expiry_gets_the_queued_messages(t: Transport) {
    let bridge = Bridge::start();
    let mut opts = clean(V5, "a");
    opts.session_expiry_interval = Some(99_999);
    let (mut a, _) = bridge.connect(t, opts).await.unwrap();
    a.subscribe("TopicA/+", QoS::ExactlyOnce).await;
    a.disconnect().await;

    let mut b = bridge.client(t, clean(V5, "b")).await;
    b.publish("TopicA/B", "qos0", QoS::AtMostOnce, false).await;
    let expiring = e2e::protocol::Properties {
        message_expiry_interval: Some(100),
        ..Default::default()
    };
    b.publish_with_properties("TopicA/C", "qos1", QoS::AtLeastOnce, false, expiring)
        .await;
    b.publish("TopicA/D", "qos2", QoS::ExactlyOnce, false).await;
    b.disconnect().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Clean start 0, and no Session Expiry Interval property at all.
    let (mut a, ack) = bridge.connect(t, options(V5, "a", false)).await.unwrap();
    assert!(ack.session_present, "CONNACK must say session present = 1");
    let first = a.recv().await;
    assert_eq!(first.payload, "qos1");
    let left = first.properties.message_expiry_interval.unwrap();
    assert!(left < 100, "lowered by the time it waited: {left}");
    assert_eq!(a.recv().await.payload, "qos2");
    a.expect_no_message(Duration::from_millis(200)).await;
    a.disconnect().await;
    // The session ended with that connection.
    let (_, ack) = bridge.connect(t, options(V5, "a", false)).await.unwrap();
    assert!(!ack.session_present);
}

#[tokio::test]
async fn a_5_0_resume_without_session_expiry_over_tcp_gets_the_queued_messages() {
    resume_without_a_session_expiry_gets_the_queued_messages(Transport::Tcp).await;
}

#[tokio::test]
async fn a_5_0_resume_without_session_expiry_over_websocket_gets_the_queued_messages() {
    resume_without_a_session_expiry_gets_the_queued_messages(Transport::Ws).await;
}
