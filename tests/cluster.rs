//! Cluster mode: bridges joined through a 3-node NATS JetStream cluster act as one broker.
//!
//! Every test starts its bridges on the test binary's shared NATS cluster
//! ([`NatsCluster::shared`]), in a namespace of its own, and puts the clients of a scenario
//! on different bridges. The failure tests that kill a NATS server are in
//! `cluster_failover.rs`, on a NATS cluster of their own.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::nats::{cluster_table, namespace, NatsCluster};
use e2e::protocol::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, QoS, ReasonCode, Subscribe,
    Subscription,
};
use e2e::{clean, persistent, Bridge, Transport};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TCP: Transport = Transport::Tcp;
const WS: Transport = Transport::Ws;

/// `n` bridges of one cluster (nodes `a`, `b`, …) in a namespace of their own, each with
/// `extra` in its configuration file.
fn bridges(label: &str, n: usize, extra: &str) -> (String, Vec<Bridge>) {
    let ns = namespace(label);
    let bridges = (0..n).map(|i| bridge_of(&ns, i, extra)).collect();
    (ns, bridges)
}

/// Bridge `i` of the cluster of namespace `ns`.
fn bridge_of(ns: &str, i: usize, extra: &str) -> Bridge {
    let node = char::from(b'a' + u8::try_from(i).unwrap()).to_string();
    let table = cluster_table(NatsCluster::shared(), ns, &node);
    Bridge::start_with_config(&format!("{extra}\n{table}"))
}

/// A message published on one bridge reaches a subscriber on the other, and one on the
/// publisher's own bridge, once each, at every QoS, in order, over TCP and WebSocket.
// [MQTT-4.6.0-6] (a publisher's messages in order), [MQTT-3.8.4-6] (one delivery per
// matching session), [MQTT-3.3.4-1] / [MQTT-3.8.4-8] (delivered at the granted QoS).
#[tokio::test]
async fn a_message_published_on_one_bridge_reaches_subscribers_on_every_bridge_once() {
    let (_, b) = bridges("route", 2, "");
    for (v, t) in [(V311, TCP), (V5, WS)] {
        let mut far = b[1].client(t, clean(v, "far")).await;
        let mut near = b[0].client(t, clean(v, "near")).await;
        for s in [&mut far, &mut near] {
            // Two overlapping subscriptions: still one delivery [MQTT-3.3.4-2].
            s.subscribe("r/#", QoS::ExactlyOnce).await;
            s.subscribe("r/+", QoS::AtLeastOnce).await;
        }
        let mut publisher = b[0].client(t, clean(v, "pub")).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("r/{}", qos as u8);
            for i in 0..20 {
                let reason = publisher.publish(&topic, format!("{i}"), qos, false).await;
                // In a cluster, 0x10 No matching subscribers (optional) is never said: the
                // publisher's node cannot know at once whether a session elsewhere matches.
                assert_eq!(reason, ReasonCode::Success);
            }
            let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
            for s in [&mut far, &mut near] {
                let mut got = Vec::new();
                for _ in 0..20 {
                    let p = s.recv().await;
                    assert_eq!(p.qos, qos, "the message's own QoS (below the granted one)");
                    assert_eq!(p.topic.as_str(), topic);
                    got.push(String::from_utf8_lossy(&p.payload).into_owned());
                }
                assert_eq!(got, want, "{v:?} QoS {qos:?} in order");
            }
        }
        for s in [&mut far, &mut near] {
            s.expect_no_message(Duration::from_millis(300)).await;
        }
        publisher.disconnect().await;
        far.disconnect().await;
        near.disconnect().await;
    }
}

/// Retained messages are the cluster's: set on one bridge, sent by the others at SUBSCRIBE,
/// by a bridge started later too; an empty retained message on any bridge deletes it.
// [MQTT-3.3.1-5] (stored and sent to later subscribers), [MQTT-3.3.1-6] (sent on
// subscribe), [MQTT-3.3.1-10] / [MQTT-3.3.1-11] (an empty payload removes it and is not
// stored).
#[tokio::test]
async fn retained_messages_are_the_clusters() {
    let (ns, b) = bridges("retained", 2, "");
    let mut publisher = b[0].client(TCP, clean(V5, "pub")).await;
    for (topic, payload) in [("t/1", "one"), ("t/2", "two"), ("t/1", "uno")] {
        publisher
            .publish(topic, payload, QoS::AtLeastOnce, true)
            .await;
    }
    let mut sub = b[1].client(TCP, clean(V5, "sub")).await;
    sub.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut got = sub.recv_payloads(2).await;
    got.sort();
    assert_eq!(got, ["two", "uno"], "the latest of each topic");
    sub.expect_no_message(Duration::from_millis(200)).await;

    // A bridge that joins later reads them from the cluster.
    let late = bridge_of(&ns, 2, "");
    let mut sub2 = late.client(WS, clean(V311, "sub2")).await;
    sub2.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut got = sub2.recv_payloads(2).await;
    got.sort();
    assert_eq!(got, ["two", "uno"]);

    // Deleted on the late bridge, gone everywhere.
    sub2.publish("t/1", "", QoS::AtLeastOnce, true).await;
    // Live subscribers get the empty message itself (it is routed like any other).
    assert!(sub.recv().await.payload.is_empty());
    sub.disconnect().await;
    for bridge in [&b[0], &b[1], &late] {
        let mut c = bridge.client(TCP, clean(V5, "check")).await;
        c.subscribe("t/#", QoS::AtLeastOnce).await;
        assert_eq!(c.recv_payloads(1).await, ["two"]);
        c.expect_no_message(Duration::from_millis(200)).await;
        c.disconnect().await;
    }
    publisher.disconnect().await;
}

/// A will goes to subscribers on every bridge.
// [MQTT-3.1.2-8] (published when the network connection is lost).
#[tokio::test]
async fn a_will_reaches_subscribers_on_another_bridge() {
    let (_, b) = bridges("will", 2, "");
    let mut sub = b[1].client(TCP, clean(V5, "watcher")).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await;
    let mut opts = clean(V5, "dying");
    opts.will = Some(protocol_will("status/dying", "gone"));
    let c = b[0].client(TCP, opts).await;
    c.drop_connection();
    let p = sub.recv().await;
    assert_eq!(p.topic.as_str(), "status/dying");
    assert_eq!(&p.payload[..], b"gone");
    sub.disconnect().await;
}

fn protocol_will(topic: &str, payload: &str) -> e2e::protocol::Will {
    e2e::protocol::Will {
        topic: e2e::topic(topic),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

/// NATS unreachable at start: the bridge exits 1 and says which servers it tried.
#[test]
fn a_bridge_whose_nats_cannot_be_reached_exits_1_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = Command::new(Bridge::binary())
        .args([
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--data",
            "none",
        ])
        .args(["--cluster", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to NATS") && stderr.contains(&url),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "never listened"
    );
}

/// The seed scenario across bridges: A subscribes on one bridge and leaves, B publishes on
/// the other, A comes back on the other bridge and gets session present = 1 and the three
/// messages in order; with clean session, nothing.
// [MQTT-3.1.2-4] / [MQTT-3.1.2-5] (the session is resumed), [MQTT-3.2.2-2] (session present
// = 1), [MQTT-4.5.0-1] (QoS 1 messages queued while offline), [MQTT-4.6.0-6] (in order),
// [MQTT-3.1.2-6] (clean session 1 keeps nothing).
#[tokio::test]
async fn the_seed_scenario_holds_with_the_subscriber_moving_between_bridges() {
    let (_, b) = bridges("seed", 2, "");
    for (v, t) in [(V311, TCP), (V5, WS)] {
        let id = format!("A{v:?}");
        let (mut a, ack) = b[0].connect(t, persistent(v, &id)).await.unwrap();
        assert!(!ack.session_present);
        a.subscribe("seed/cmd", QoS::AtLeastOnce).await;
        a.disconnect().await;

        let mut pb = b[1].client(t, clean(v, "B")).await;
        for payload in ["one", "two", "three"] {
            pb.publish("seed/cmd", payload, QoS::AtLeastOnce, false)
                .await;
        }
        pb.disconnect().await;

        // Back on the other bridge.
        let (mut a, ack) = b[1].connect(t, persistent(v, &id)).await.unwrap();
        assert!(ack.session_present, "CONNACK must say session present = 1");
        assert_eq!(a.recv_payloads(3).await, ["one", "two", "three"]);
        a.expect_no_message(Duration::from_millis(200)).await;
        a.disconnect().await;

        // And back again, with one more message queued while away.
        let mut pb = b[1].client(t, clean(v, "B")).await;
        pb.publish("seed/cmd", "four", QoS::AtLeastOnce, false)
            .await;
        pb.disconnect().await;
        let (mut a, ack) = b[0].connect(t, persistent(v, &id)).await.unwrap();
        assert!(ack.session_present);
        assert_eq!(a.recv_payloads(1).await, ["four"]);
        a.disconnect().await;

        // Clean session: nothing is kept, on any bridge.
        let (a, ack) = b[1].connect(t, clean(v, &id)).await.unwrap();
        assert!(!ack.session_present);
        a.disconnect().await;
        let mut pb = b[1].client(t, clean(v, "B")).await;
        pb.publish("seed/cmd", "five", QoS::AtLeastOnce, false)
            .await;
        pb.disconnect().await;
        let (mut a, ack) = b[0].connect(t, persistent(v, &id)).await.unwrap();
        assert!(!ack.session_present, "clean session 1 kept nothing");
        a.expect_no_message(Duration::from_millis(300)).await;
        a.disconnect().await;
    }
}

/// A client id connecting on another bridge takes the session over: the old connection
/// gets DISCONNECT 0x8E (5.0) or is closed (3.1.1) before the new CONNACK, and messages go
/// to the new connection only.
// [MQTT-3.1.4-3] (the existing connection is closed), 5.0 3.14.2.1 (0x8E Session taken over).
#[tokio::test]
async fn a_client_id_connecting_on_another_bridge_takes_the_session_over() {
    let (_, b) = bridges("takeover", 2, "");
    let (mut old, _) = b[0].connect(TCP, persistent(V5, "dup")).await.unwrap();
    old.subscribe("take/#", QoS::AtLeastOnce).await;
    let (mut new, ack) = b[1].connect(TCP, persistent(V5, "dup")).await.unwrap();
    assert!(
        ack.session_present,
        "the session moved with its subscription"
    );
    // The old connection was told before the new CONNACK was sent.
    old.expect_no_message(Duration::from_millis(50)).await;
    match old.ended() {
        Some(e2e::Ended::ByServer(Some(d))) => assert_eq!(d.reason, ReasonCode::SessionTakenOver),
        other => panic!("the old connection should have got DISCONNECT 0x8E, got {other:?}"),
    }
    let mut p = b[0].client(TCP, clean(V5, "p")).await;
    p.publish("take/x", "hello", QoS::AtLeastOnce, false).await;
    assert_eq!(new.recv_payloads(1).await, ["hello"]);
    new.disconnect().await;
}

/// Two CONNECTs with one client id on two bridges at once: one of them owns the session in
/// the end, the other connection is closed, and a message reaches the owner once.
// [MQTT-3.1.4-3]: one connection per client id, across the whole cluster.
#[tokio::test]
async fn two_simultaneous_connects_with_one_client_id_on_two_bridges_leave_one_owner() {
    let (_, b) = bridges("race", 2, "");
    for round in 0..5 {
        let id = format!("racer{round}");
        let (x, y) = tokio::join!(
            b[0].connect(TCP, persistent(V5, &id)),
            b[1].connect(TCP, persistent(V5, &id))
        );
        let mut alive = Vec::new();
        for c in [x, y].into_iter().flatten() {
            let (mut c, _) = c;
            c.sync_or_end().await;
            if c.ended().is_none() {
                alive.push(c);
            }
        }
        assert_eq!(
            alive.len(),
            1,
            "round {round}: exactly one connection survives"
        );
        let mut owner = alive.pop().unwrap();
        owner.subscribe("race/t", QoS::AtLeastOnce).await;
        let mut p = b[round % 2].client(TCP, clean(V5, "p")).await;
        p.publish("race/t", "once", QoS::AtLeastOnce, false).await;
        assert_eq!(owner.recv_payloads(1).await, ["once"]);
        owner.expect_no_message(Duration::from_millis(200)).await;
        owner.disconnect().await;
        p.disconnect().await;
    }
}

/// `kill -9` of the bridge that holds a subscriber with messages in flight: the client
/// comes back on the other bridge, gets session present = 1, the unacknowledged messages
/// again with DUP, then every later one, in order; nothing acknowledged is lost.
// [MQTT-4.4.0-1] (unacknowledged PUBLISHes resent on resume, DUP set [MQTT-3.3.1-1]),
// [MQTT-3.2.2-2] (session present), [MQTT-4.6.0-6] (order).
#[tokio::test]
async fn a_subscriber_whose_bridge_is_killed_resumes_on_the_other_with_its_messages_in_flight() {
    let (_, mut b) = bridges("kill-bridge", 2, "");
    let mut raw = b[0].raw(TCP).await;
    let mut c = Connect::new(V5, "survivor", false);
    c.properties.session_expiry_interval = Some(300);
    raw.connect(c).await;
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        subscriptions: vec![Subscription::new(e2e::filter("k/#"), QoS::AtLeastOnce)],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(raw.read_packet().await, Some(Packet::SubAck(_))));

    let mut p = b[1].client(TCP, clean(V5, "p")).await;
    for i in 0..5 {
        p.publish("k/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
    }
    // Received, never acknowledged.
    for i in 0..5 {
        match raw.read_packet().await {
            Some(Packet::Publish(m)) => assert_eq!(&m.payload[..], format!("{i}").as_bytes()),
            other => panic!("expected PUBLISH {i}, got {other:?}"),
        }
    }
    b[0].kill9();
    drop(raw);
    for i in 5..30 {
        p.publish("k/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
    }

    let (mut s, ack) = b[1].connect(TCP, persistent(V5, "survivor")).await.unwrap();
    assert!(ack.session_present, "the session survived its bridge");
    for i in 0..5 {
        let m = s.recv().await;
        assert!(m.dup, "message {i} was in flight: resent with DUP");
        assert_eq!(&m.payload[..], format!("{i}").as_bytes());
    }
    for i in 30..60 {
        p.publish("k/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
    }
    let got = s.recv_payloads(55).await;
    let want: Vec<String> = (5..60).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every acknowledged message, in order");
    s.expect_no_message(Duration::from_millis(200)).await;
    s.disconnect().await;
    p.disconnect().await;
}

/// `kill -9` of a bridge whose clients do not come back: another bridge adopts its
/// sessions. The will of a connection that was open on it is published, and an offline
/// session's expiry runs (it is gone once its interval has passed).
// [MQTT-3.1.2-8] (the will of a connection lost without DISCONNECT is published),
// [MQTT-3.1.2-23] (a session ends when its expiry interval has passed).
#[tokio::test]
async fn the_sessions_of_a_killed_bridge_are_adopted_their_wills_published_and_expiry_run() {
    let (_, mut b) = bridges("adopt", 2, "");
    let mut watcher = b[1].client(TCP, clean(V5, "watcher")).await;
    watcher.subscribe("gone/#", QoS::AtLeastOnce).await;
    let mut opts = persistent(V5, "lost");
    opts.will = Some(protocol_will("gone/lost", "bye"));
    let _lost = b[0].client(TCP, opts).await;
    let mut short = persistent(V5, "short");
    short.session_expiry_interval = Some(3);
    let (s, _) = b[0].connect(TCP, short.clone()).await.unwrap();
    s.disconnect().await;

    b[0].kill9();
    // Two looks (2 s apart) find the node gone, then its sessions are adopted.
    let will = watcher.recv_within(Duration::from_secs(20)).await;
    assert_eq!(will.topic.as_str(), "gone/lost");
    assert_eq!(&will.payload[..], b"bye");
    // Its expiry (3 s) has passed by now, or passes on the adopting bridge.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s, ack) = b[1].connect(TCP, short).await.unwrap();
    assert!(
        !ack.session_present,
        "the offline session expired on the adopting bridge"
    );
    s.disconnect().await;
    // The session with the will was adopted too: its client finds it on the other bridge.
    let (c, ack) = b[1].connect(TCP, persistent(V5, "lost")).await.unwrap();
    assert!(ack.session_present);
    c.disconnect().await;
    watcher.disconnect().await;
}

/// A shared subscription with members on both bridges: each message goes to one member in
/// the whole cluster, at QoS 0 and QoS 1, and between them the members get every message.
// [MQTT-4.8.2-1] .. 5.0 4.8.2 (a shared subscription's message goes to one session of the
// group).
#[tokio::test]
async fn a_shared_subscription_with_members_on_both_bridges_delivers_each_message_once() {
    let (_, b) = bridges("shared", 2, "");
    let mut m1 = b[0].client(TCP, clean(V5, "m1")).await;
    let mut m2 = b[1].client(TCP, clean(V5, "m2")).await;
    for m in [&mut m1, &mut m2] {
        m.subscribe("$share/g/work/#", QoS::AtLeastOnce).await;
    }
    // Published right after the SUBACKs: a group's readers start from where its bridge
    // was when the group was made, so nothing is missed.
    let mut p = b[0].client(TCP, clean(V5, "p")).await;
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        let n = 40;
        for i in 0..n {
            p.publish("work/item", format!("{i}"), qos, false).await;
        }
        // Until all have come (a group's readers may take a moment to start on a busy
        // machine; they start from where the group was made, so nothing is missed), then a
        // while longer for any duplicate.
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut quiet_rounds = 0;
        while quiet_rounds < 3 && tokio::time::Instant::now() < deadline {
            let before = got.len();
            for m in [&mut m1, &mut m2] {
                while let Some(msg) = m.try_recv_within(Duration::from_millis(100)).await {
                    got.push(String::from_utf8_lossy(&msg.payload).into_owned());
                }
            }
            let enough = got.len() >= n || qos == QoS::AtMostOnce;
            if enough && got.len() == before {
                quiet_rounds += 1;
            }
        }
        got.sort_by_key(|s| s.parse::<u32>().unwrap());
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        if qos == QoS::AtLeastOnce {
            assert_eq!(got, want, "QoS 1: each message once, none lost");
        } else {
            // QoS 0 may be lost, never doubled.
            let mut dedup = got.clone();
            dedup.dedup();
            assert_eq!(dedup, got, "QoS 0: never twice");
        }
    }
    m1.disconnect().await;
    m2.disconnect().await;
}

/// `GET path` on a bridge's HTTP listener, as JSON.
async fn api_get(bridge: &Bridge, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = bridge
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    serde_json::from_slice(&raw[split + 4..]).unwrap()
}

/// An online subscriber that does not keep up: its bridge keeps its queue within
/// `max_queued_messages` (the rest stays in the cluster's stream), the publisher on the
/// other bridge is not held back, and every message arrives, in order, as it catches up.
// [MQTT-4.6.0-6] (order), and nothing acknowledged is lost.
#[tokio::test]
async fn a_stuck_subscriber_s_queue_stays_bounded_and_it_gets_everything_in_order() {
    let (_, b) = bridges("spill", 2, "[broker]\nmax_queued_messages = 20\n");
    let mut slow = b[0].raw(TCP).await;
    let mut c = Connect::new(V5, "stuck", true);
    c.properties.receive_maximum = Some(1);
    slow.connect(c).await;
    slow.send(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        subscriptions: vec![Subscription::new(e2e::filter("s/#"), QoS::AtLeastOnce)],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(slow.read_packet().await, Some(Packet::SubAck(_))));

    let total = 300;
    let mut p = b[1].client(TCP, clean(V5, "p")).await;
    let mut most_queued = 0;
    for i in 0..total {
        p.publish("s/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
        if i % 50 == 49 {
            let list = api_get(&b[0], "/api/v1/sessions").await;
            let queued = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["client_id"] == "stuck")
                .map(|s| s["queued"].as_u64().unwrap())
                .max()
                .unwrap();
            most_queued = most_queued.max(queued);
        }
    }
    assert!(most_queued <= 20, "queue over its bound: {most_queued}");
    let mut got = Vec::new();
    while got.len() < total {
        match slow.read_packet().await {
            Some(Packet::Publish(m)) => {
                got.push(String::from_utf8_lossy(&m.payload).into_owned());
                slow.send(Packet::PubAck(e2e::protocol::PubResp::new(
                    m.packet_id.unwrap(),
                )))
                .await;
            }
            other => panic!("expected PUBLISH {}, got {other:?}", got.len()),
        }
    }
    let want: Vec<String> = (0..total).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    p.disconnect().await;
}

/// Clean start on a stored session, again and again on one bridge: the old session ends and
/// a new one begins in one batch, and the connection stays up (no 0x8E from a race between
/// deleting the old record and writing the new one).
// [MQTT-3.1.2-4] (clean start discards the session), [MQTT-3.2.2-1] (session present 0).
#[tokio::test]
async fn clean_start_on_a_stored_session_keeps_the_new_connection() {
    let (_, b) = bridges("clean-again", 2, "");
    let (c, _) = b[0].connect(TCP, persistent(V5, "again")).await.unwrap();
    c.disconnect().await;
    for round in 0..20 {
        let mut opts = persistent(V5, "again");
        opts.clean_start = true;
        let (mut c, ack) = b[0].connect(TCP, opts).await.unwrap();
        assert!(!ack.session_present, "round {round}");
        c.subscribe("again/t", QoS::AtLeastOnce).await;
        c.sync_or_end().await;
        assert!(
            c.ended().is_none(),
            "round {round}: closed: {:?}",
            c.ended()
        );
        c.disconnect().await;
    }
    // A clean session that ends at DISCONNECT (its record deleted), then at once a stored
    // one with the same client id on the same bridge.
    for round in 0..20 {
        let (c, _) = b[1].connect(TCP, clean(V311, "flip")).await.unwrap();
        c.disconnect().await;
        let (mut c, ack) = b[1].connect(TCP, persistent(V311, "flip")).await.unwrap();
        assert!(!ack.session_present, "round {round}");
        c.subscribe("flip/t", QoS::AtLeastOnce).await;
        c.sync_or_end().await;
        assert!(
            c.ended().is_none(),
            "round {round}: closed: {:?}",
            c.ended()
        );
        c.disconnect().await;
        let (c, _) = b[1].connect(TCP, clean(V311, "flip")).await.unwrap();
        c.disconnect().await;
    }
}

/// A persistent subscriber whose messages spilled to the stream drops its connection and
/// comes back at once on the same bridge, while more are published: it gets every message,
/// once, in order.
// [MQTT-4.6.0-6] (order), [MQTT-4.4.0-1] (resume); nothing acknowledged lost.
#[tokio::test]
async fn a_spilled_subscriber_that_reconnects_gets_everything_once_in_order() {
    let (_, b) = bridges("spill-back", 2, "[broker]\nmax_queued_messages = 10\n");
    let mut raw = b[0].raw(TCP).await;
    let mut c = Connect::new(V5, "back", false);
    c.properties.session_expiry_interval = Some(300);
    c.properties.receive_maximum = Some(1);
    raw.connect(c).await;
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        subscriptions: vec![Subscription::new(e2e::filter("sb/#"), QoS::AtLeastOnce)],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(raw.read_packet().await, Some(Packet::SubAck(_))));
    let mut p = b[1].client(TCP, clean(V5, "p")).await;
    for i in 0..40 {
        p.publish("sb/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
    }
    drop(raw);
    let (mut s, ack) = b[0].connect(TCP, persistent(V5, "back")).await.unwrap();
    assert!(ack.session_present);
    for i in 40..60 {
        p.publish("sb/t", format!("{i}"), QoS::AtLeastOnce, false)
            .await;
    }
    let got = s.recv_payloads(60).await;
    let want: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every message once, in order");
    s.expect_no_message(Duration::from_millis(500)).await;
    s.disconnect().await;
    p.disconnect().await;
}
