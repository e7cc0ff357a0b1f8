//! Wills: published on network loss and on keep-alive timeout, not on a normal DISCONNECT,
//! published on DISCONNECT 0x04, the 5.0 Will Delay Interval.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::protocol::client::ClientOptions;
use e2e::protocol::{Properties, ProtocolVersion, QoS, ReasonCode, Will};
use e2e::{clean, for_each_transport, for_each_transport_and_version, persistent, topic, Bridge};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// `opts` with a QoS 1 will on `will/{id}` saying "gone", and a Will Delay Interval (5.0).
fn with_will(mut opts: ClientOptions, delay: Option<u32>) -> ClientOptions {
    let properties = Properties {
        will_delay_interval: delay,
        ..Properties::default()
    };
    opts.will = Some(Will {
        topic: topic(&format!("will/{}", opts.client_id)),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
    });
    opts
}

#[tokio::test]
async fn the_will_is_published_when_the_network_connection_is_lost() {
    // [MQTT-3.1.2-8]: the connection closed without DISCONNECT, so the will is published.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(v, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let w = bridge.client(t, with_will(clean(v, "w"), None)).await;
        w.drop_connection();
        let got = watcher.recv().await;
        assert_eq!(got.topic.as_str(), "will/w");
        assert_eq!(&got.payload[..], b"gone");
        assert_eq!(got.qos, QoS::AtLeastOnce);
        watcher.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_will_is_not_published_after_a_normal_disconnect() {
    // [MQTT-3.1.2-10] (the will is removed on DISCONNECT), [MQTT-3.14.4-3] (5.0: DISCONNECT
    // 0x00 discards it without publishing).
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(v, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let w = bridge.client(t, with_will(clean(v, "w"), None)).await;
        w.disconnect().await;
        watcher.expect_no_message(Duration::from_millis(400)).await;
        watcher.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_one_and_a_half_times_its_keep_alive_and_its_will_published(
) {
    // 3.1.1 [MQTT-3.1.2-24] / 5.0 [MQTT-3.1.2-22]: nothing for 1.5 x the keep-alive (1 s)
    // closes the connection (5.0: DISCONNECT 0x8D Keep Alive timeout first); the close is
    // not a normal disconnection, so the will goes out [MQTT-3.1.2-8].
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(v, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let mut o = with_will(clean(v, "sleepy"), None);
        o.keep_alive = 1;
        let (mut sleepy, ack) = bridge.connect(t, o).await.unwrap();
        assert_eq!(
            ack.properties.server_keep_alive, None,
            "1 s is accepted as is"
        );
        sleepy.go_silent();
        let started = Instant::now();
        let d = sleepy.expect_closed_within(Duration::from_secs(4)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took <= Duration::from_millis(2500),
            "closed after {took:?}, expected about 1.5 s"
        );
        match v {
            ProtocolVersion::V5 => {
                assert_eq!(d.map(|d| d.reason), Some(ReasonCode::KeepAliveTimeout))
            }
            ProtocolVersion::V311 => assert_eq!(d, None),
        }
        let got = watcher.recv().await;
        assert_eq!(got.topic.as_str(), "will/sleepy");
        watcher.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn disconnect_with_reason_0x04_publishes_the_will() {
    // 5.0 spec 3.14.2.1: 0x04 Disconnect with Will Message - the client disconnects but
    // wants its will published.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(V5, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let w = bridge.client(t, with_will(clean(V5, "w"), None)).await;
        w.disconnect_with(ReasonCode::DisconnectWithWill, Properties::default())
            .await;
        let got = watcher.recv().await;
        assert_eq!(got.topic.as_str(), "will/w");
        watcher.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_will_delay_interval_postpones_the_will() {
    // [MQTT-3.1.3-9] and spec 3.1.3.2.2: the will goes out once the Will Delay Interval
    // (1 s) has passed, not before.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(V5, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let w = bridge
            .client(t, with_will(persistent(V5, "w"), Some(1)))
            .await;
        let started = Instant::now();
        w.drop_connection();
        let got = watcher.recv_within(Duration::from_secs(3)).await;
        let took = started.elapsed();
        assert_eq!(got.topic.as_str(), "will/w");
        assert_eq!(got.properties.will_delay_interval, None);
        assert!(
            took >= Duration::from_millis(900),
            "the will came after {took:?}, before its 1 s delay"
        );
        watcher.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_reconnection_before_the_will_delay_has_passed_cancels_the_will() {
    // [MQTT-3.1.3-9]: a new network connection to the session before the Will Delay
    // Interval has passed: the will is not sent.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(V5, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let w = bridge
            .client(t, with_will(persistent(V5, "w"), Some(1)))
            .await;
        w.drop_connection();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (back, ack) = bridge.connect(t, persistent(V5, "w")).await.unwrap();
        assert!(ack.session_present);
        watcher.expect_no_message(Duration::from_millis(1500)).await;
        back.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_will_is_published_when_the_session_ends_before_the_will_delay() {
    // Spec 3.1.3.2.2: the will is published when the Will Delay Interval passes or the
    // session ends, whichever is first: here the session (1 s) ends before the delay (60 s).
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(V5, "watcher")).await;
        watcher.subscribe("will/#", QoS::AtLeastOnce).await;
        let mut o = with_will(persistent(V5, "w"), Some(60));
        o.session_expiry_interval = Some(1);
        let w = bridge.client(t, o).await;
        w.drop_connection();
        let got = watcher.recv_within(Duration::from_secs(3)).await;
        assert_eq!(got.topic.as_str(), "will/w");
        watcher.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_will_with_retain_set_is_published_as_a_retained_message() {
    // 3.1.1 [MQTT-3.1.2-17] / 5.0 [MQTT-3.1.2-15]: Will Retain 1 publishes the will as a
    // retained message, so a later subscriber gets it.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let mut o = with_will(clean(v, "w"), None);
        if let Some(will) = o.will.as_mut() {
            will.retain = true;
        }
        let w = bridge.client(t, o).await;
        w.drop_connection();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut late = bridge.client(t, clean(v, "late")).await;
        late.subscribe("will/#", QoS::AtLeastOnce).await;
        let got = late.recv().await;
        assert_eq!(got.topic.as_str(), "will/w");
        assert!(got.retain, "sent for a new subscription: RETAIN 1");
        late.disconnect().await;
    })
    .await;
}
