//! Sessions: takeover, client identifiers, clean start, Session Expiry Interval, the Server
//! Keep Alive, and the bounded offline queue.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::protocol::{Properties, ProtocolVersion, QoS, ReasonCode};
use e2e::{
    clean, for_each_transport, for_each_transport_and_version, options, persistent, Bridge,
    Transport,
};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    // [MQTT-3.1.4-2] (3.1.1: the existing client is disconnected), [MQTT-3.1.4-3] (5.0: it
    // gets DISCONNECT 0x8E Session taken over and is closed); the session goes on on the
    // new connection [MQTT-3.1.2-4].
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let (mut old, _) = bridge.connect(t, persistent(v, "dup")).await.unwrap();
        old.subscribe("take/over", QoS::AtLeastOnce).await;

        let (mut new, ack) = bridge.connect(t, persistent(v, "dup")).await.unwrap();
        assert!(
            ack.session_present,
            "the new connection continues the session"
        );
        let disconnect = old.expect_closed().await;
        match v {
            ProtocolVersion::V5 => {
                let d = disconnect.expect("5.0: DISCONNECT before the close");
                assert_eq!(d.reason, ReasonCode::SessionTakenOver);
            }
            ProtocolVersion::V311 => assert_eq!(disconnect, None, "3.1.1: just closed"),
        }

        let mut publisher = bridge.client(t, clean(v, "pub")).await;
        publisher
            .publish("take/over", "after", QoS::AtLeastOnce, false)
            .await;
        let got = new.recv().await;
        assert_eq!(
            &got.payload[..],
            b"after",
            "the subscription moved with the session"
        );
        new.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_taken_over_connection_s_will_is_published_unless_a_will_delay_outlasts_the_takeover() {
    // 5.0 spec 3.1.4 point 3: the existing client's will is published per 3.1.2.5, which
    // holds it back when a new connection arrives before the Will Delay Interval has passed
    // [MQTT-3.1.3-9].
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut watcher = bridge.client(t, clean(V5, "watcher")).await;
        watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
        for (id, delay) in [("no-delay", 0), ("delayed", 60)] {
            let mut o = persistent(V5, id);
            let mut will = e2e::protocol::Will {
                topic: e2e::topic(&format!("wills/{id}")),
                payload: "taken over".into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
            };
            will.properties.will_delay_interval = Some(delay);
            o.will = Some(will);
            let (mut old, _) = bridge.connect(t, o).await.unwrap();
            let (new, _) = bridge.connect(t, persistent(V5, id)).await.unwrap();
            old.expect_closed().await;
            if delay == 0 {
                let w = watcher.recv().await;
                assert_eq!(w.topic.as_str(), "wills/no-delay");
            } else {
                watcher.expect_no_message(Duration::from_millis(500)).await;
            }
            new.disconnect().await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_empty_client_id_gets_an_assigned_client_identifier_that_names_the_session() {
    // [MQTT-3.1.3-6] (a zero-length id is accepted), [MQTT-3.2.2-16] (the CONNACK carries
    // the Assigned Client Identifier), and the session can be resumed under it.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut o = clean(V5, "");
        o.session_expiry_interval = Some(300);
        let (mut c, ack) = bridge.connect(t, o).await.unwrap();
        let assigned = ack
            .properties
            .assigned_client_identifier
            .clone()
            .expect("CONNACK must carry the Assigned Client Identifier");
        assert!(!assigned.is_empty());
        c.subscribe("assigned/t", QoS::AtLeastOnce).await;
        c.disconnect().await;

        let (other, ack2) = bridge.connect(t, clean(V5, "")).await.unwrap();
        let second = ack2.properties.assigned_client_identifier.clone().unwrap();
        assert_ne!(second, assigned, "assigned identifiers are unique");
        other.disconnect().await;

        let (c, ack) = bridge.connect(t, persistent(V5, &assigned)).await.unwrap();
        assert!(
            ack.session_present,
            "the assigned id names the session kept"
        );
        assert_eq!(ack.properties.assigned_client_identifier, None);
        c.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn an_empty_client_id_with_clean_session_0_is_refused_with_0x02_in_mqtt_3_1_1() {
    // [MQTT-3.1.3-8]: CONNACK return code 0x02 (Identifier rejected), then the close; with
    // clean session 1 an empty id is accepted [MQTT-3.1.3-6].
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let ack = bridge.expect_refused(t, options(V311, "", false)).await;
        assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
        assert!(!ack.session_present);
        let (c, ack) = bridge.connect(t, options(V311, "", true)).await.unwrap();
        assert!(!ack.session_present);
        c.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn clean_session_1_discards_an_existing_persistent_session() {
    // [MQTT-3.1.2-6] (3.1.1) / [MQTT-3.1.2-4] (5.0): clean start 1 discards the session;
    // [MQTT-3.2.2-1]: session present 0; the old subscription is gone.
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let (mut a, _) = bridge.connect(t, persistent(v, "a")).await.unwrap();
        a.subscribe("discard/t", QoS::AtLeastOnce).await;
        a.disconnect().await;

        let mut o = clean(v, "a");
        if v == V5 {
            o.session_expiry_interval = Some(300);
        }
        let (mut a, ack) = bridge.connect(t, o).await.unwrap();
        assert!(!ack.session_present, "clean start 1: session present 0");
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("discard/t", "x", QoS::AtLeastOnce, false).await;
        a.expect_no_message(Duration::from_millis(300)).await;
        a.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_ends_once_its_session_expiry_interval_has_passed() {
    // [MQTT-3.1.2-23]: the session is kept after the connection closes, until the Session
    // Expiry Interval passes; then it is gone (session present 0).
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        for id in ["short", "long"] {
            let mut o = persistent(V5, id);
            o.session_expiry_interval = Some(if id == "short" { 1 } else { 60 });
            let (mut c, _) = bridge.connect(t, o).await.unwrap();
            c.subscribe("expiry/t", QoS::AtLeastOnce).await;
            c.disconnect().await;
        }
        tokio::time::sleep(Duration::from_millis(1700)).await;
        let (short, ack) = bridge.connect(t, persistent(V5, "short")).await.unwrap();
        assert!(!ack.session_present, "expired after 1 s");
        short.disconnect().await;
        let (long, ack) = bridge.connect(t, persistent(V5, "long")).await.unwrap();
        assert!(ack.session_present, "kept for 60 s");
        long.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_expiry_interval_sent_on_disconnect_replaces_the_one_from_connect() {
    // 5.0 spec 3.14.2.2.2: the Session Expiry Interval on DISCONNECT is the session's new
    // one: 300 -> 0 ends the session at once; 1 -> 300 keeps it past the first second.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let props = |secs| Properties {
            session_expiry_interval: Some(secs),
            ..Properties::default()
        };
        let (c, _) = bridge.connect(t, persistent(V5, "to-zero")).await.unwrap();
        c.disconnect_with(ReasonCode::Success, props(0)).await;
        let mut o = persistent(V5, "longer");
        o.session_expiry_interval = Some(1);
        let (c, _) = bridge.connect(t, o).await.unwrap();
        c.disconnect_with(ReasonCode::Success, props(300)).await;

        let (c, ack) = bridge.connect(t, persistent(V5, "to-zero")).await.unwrap();
        assert!(
            !ack.session_present,
            "expiry 0 on DISCONNECT ends the session"
        );
        c.disconnect().await;
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let (c, ack) = bridge.connect(t, persistent(V5, "longer")).await.unwrap();
        assert!(
            ack.session_present,
            "expiry 300 on DISCONNECT outlasts the 1 s of CONNECT"
        );
        c.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_expiry_of_0_at_connect_then_non_zero_at_disconnect_is_a_protocol_error() {
    // [MQTT-3.14.2-2]: the broker answers DISCONNECT 0x82 Protocol Error and the session,
    // which ended with the connection, is not kept.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let (mut c, _) = bridge.connect(t, clean(V5, "zero")).await.unwrap();
        let props = Properties {
            session_expiry_interval: Some(300),
            ..Properties::default()
        };
        c.send_disconnect(ReasonCode::Success, props).await;
        let d = c.expect_closed().await.expect("DISCONNECT from the broker");
        assert_eq!(d.reason, ReasonCode::ProtocolError);
        let (c, ack) = bridge.connect(t, persistent(V5, "zero")).await.unwrap();
        assert!(!ack.session_present);
        c.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn the_broker_caps_the_keep_alive_and_announces_it_as_server_keep_alive() {
    // [MQTT-3.2.2-21]: the client must use the Server Keep Alive; a client asking 60 s (or 0,
    // none) gets 1 s. It is enforced at 1.5 times ([MQTT-3.1.2-22]) - but a client that
    // pings at the server's value stays connected.
    for_each_transport(|t| async move {
        let bridge = Bridge::start_with_config("[broker]\nmax_keep_alive = 1\n");
        let (mut pinging, ack) = bridge.connect(t, clean(V5, "pinging")).await.unwrap();
        assert_eq!(ack.properties.server_keep_alive, Some(1));
        let mut o = clean(V5, "zero");
        o.keep_alive = 0;
        let (mut silent, ack) = bridge.connect(t, o).await.unwrap();
        assert_eq!(ack.properties.server_keep_alive, Some(1), "0 is capped too");
        silent.go_silent();
        let started = Instant::now();
        // Meanwhile the other client runs its timer, sending PINGREQ every second.
        let (d, ()) = tokio::join!(
            silent.expect_closed_within(Duration::from_secs(4)),
            pinging.expect_no_message(Duration::from_millis(2600)),
        );
        let took = started.elapsed();
        assert_eq!(d.map(|d| d.reason), Some(ReasonCode::KeepAliveTimeout));
        assert!(
            took >= Duration::from_millis(1400) && took <= Duration::from_millis(2700),
            "closed after {took:?}, expected about 1.5 s"
        );
        assert!(
            pinging.ended().is_none(),
            "a client pinging in time is kept"
        );
        pinging.disconnect().await;
    })
    .await;
}

/// The offline queue limit tests: `policy` in the config, five QoS 1 messages into a queue
/// of three, what comes out.
async fn offline_queue(t: Transport, v: ProtocolVersion, policy: &str) -> Vec<String> {
    let config = format!("[broker]\nmax_queued_messages = 3\noverflow_policy = \"{policy}\"\n");
    let bridge = Bridge::start_with_config(&config);
    let (mut a, _) = bridge.connect(t, persistent(v, "a")).await.unwrap();
    a.subscribe("queue/t", QoS::AtLeastOnce).await;
    a.disconnect().await;
    let mut p = bridge.client(t, clean(v, "p")).await;
    for i in 1..=5 {
        p.publish("queue/t", format!("m{i}"), QoS::AtLeastOnce, false)
            .await;
    }
    let (mut a, ack) = bridge.connect(t, persistent(v, "a")).await.unwrap();
    assert!(ack.session_present);
    let got = a.recv_payloads(3).await;
    a.expect_no_message(Duration::from_millis(300)).await;
    a.disconnect().await;
    got
}

#[tokio::test]
async fn a_full_offline_queue_drops_the_oldest_message_with_the_drop_oldest_policy() {
    // README "Flow control and the queue policy": the queue is bounded (config
    // max_queued_messages); drop-oldest keeps the newest messages.
    for_each_transport_and_version(|t, v| async move {
        assert_eq!(offline_queue(t, v, "drop-oldest").await, ["m3", "m4", "m5"]);
    })
    .await;
}

#[tokio::test]
async fn a_full_offline_queue_drops_the_new_message_with_the_drop_newest_policy() {
    // Same bound, drop-newest keeps the first messages.
    for_each_transport_and_version(|t, v| async move {
        assert_eq!(offline_queue(t, v, "drop-newest").await, ["m1", "m2", "m3"]);
    })
    .await;
}

#[tokio::test]
async fn qos_0_messages_are_not_queued_for_an_offline_session_by_default() {
    // 3.1.1 spec 3.1.2.4 / 5.0 spec 4.1: QoS 0 messages may be queued for an offline
    // session; this broker does not unless `queue_qos0` is set. QoS 1 is queued
    // [MQTT-3.1.2-5] (3.1.1).
    for_each_transport_and_version(|t, v| async move {
        let bridge = Bridge::start();
        let (mut a, _) = bridge.connect(t, persistent(v, "a")).await.unwrap();
        a.subscribe("q0/t", QoS::AtLeastOnce).await;
        a.disconnect().await;
        let mut p = bridge.client(t, clean(v, "p")).await;
        p.publish("q0/t", "qos0", QoS::AtMostOnce, false).await;
        p.publish("q0/t", "qos1", QoS::AtLeastOnce, false).await;
        let (mut a, _) = bridge.connect(t, persistent(v, "a")).await.unwrap();
        assert_eq!(a.recv_payloads(1).await, ["qos1"]);
        a.expect_no_message(Duration::from_millis(300)).await;
        a.disconnect().await;
    })
    .await;
}

#[tokio::test]
async fn sigterm_closes_every_connection_and_the_bridge_exits_cleanly() {
    // Issue 3: graceful shutdown on SIGTERM - connections closed cleanly (5.0: DISCONNECT
    // 0x8B Server shutting down, spec 3.14.2.1), exit code 0; no will for the clients the
    // broker closed itself.
    for_each_transport(|t| async move {
        let bridge = Bridge::start();
        let mut new = bridge.client(t, clean(V5, "new")).await;
        let mut old = bridge.client(t, clean(V311, "old")).await;
        let stopping = tokio::task::spawn_blocking(move || bridge.stop_gracefully());
        let d = new.expect_closed().await;
        assert_eq!(d.map(|d| d.reason), Some(ReasonCode::ServerShuttingDown));
        assert_eq!(old.expect_closed().await, None);
        let status = stopping.await.unwrap();
        assert!(status.success(), "exit status {status:?}");
    })
    .await;
}
