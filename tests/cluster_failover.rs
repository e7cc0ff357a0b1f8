//! Cluster mode when NATS fails: each test runs a 3-node NATS cluster of its own (they kill
//! its servers), with two bridges joined to it.
//!
//! - `kill -9` of one of three NATS servers under QoS 2 load: every acknowledged message is
//!   received, none twice.
//! - NATS gone altogether: open connections are closed (5.0: DISCONNECT 0x9C Use another
//!   server), new CONNECTs refused with 0x88 Server unavailable (3.1.1: 3) until it is back.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::nats::{cluster_table, namespace, NatsCluster};
use e2e::protocol::{Properties, ProtocolVersion, QoS, ReasonCode};
use e2e::{clean, persistent, Bridge, E2eError, Ended, TestClient, Transport};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TCP: Transport = Transport::Tcp;

fn bridges(nats: &NatsCluster, label: &str) -> Vec<Bridge> {
    let ns = namespace(label);
    ["a", "b"]
        .iter()
        .map(|node| Bridge::start_with_config(&cluster_table(nats, &ns, node)))
        .collect()
}

/// Connects, trying again while the bridge refuses (it may be between NATS servers).
async fn connect_retrying(
    bridge: &Bridge,
    opts: e2e::protocol::client::ClientOptions,
) -> TestClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match bridge.connect(TCP, opts.clone()).await {
            Ok((c, _)) => return c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect within 60 s: {e}"),
        }
    }
}

/// `kill -9` of one of the three NATS servers while a publisher on one bridge sends 300
/// QoS 2 messages to a subscriber on the other: every message whose PUBCOMP the publisher
/// got arrives, and none arrives twice. Connections the bridges close while JetStream
/// elects new leaders come back (the subscriber resumes its session).
// [MQTT-4.3.3-1] .. [MQTT-4.3.3-13] (QoS 2: exactly once), [MQTT-4.4.0-1] (resend on
// resume).
#[tokio::test]
async fn killing_one_of_three_nats_servers_under_qos2_load_loses_nothing_acknowledged() {
    let nats = NatsCluster::start();
    let b = bridges(&nats, "kill-nats");
    let mut sub = b[1].client(TCP, persistent(V5, "sub")).await;
    sub.subscribe("load/#", QoS::ExactlyOnce).await;

    let total = 300;
    let mut acked = Vec::new();
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    let publish = async {
        let mut p = connect_retrying(&b[0], clean(V5, "pub")).await;
        let mut i = 0;
        while i < total {
            if i == 100 {
                nats.kill9(0);
            }
            let token = p
                .start_publish(
                    "load/t",
                    format!("{i}"),
                    QoS::ExactlyOnce,
                    false,
                    Properties::default(),
                )
                .await;
            match p.published_within(token, Duration::from_secs(15)).await {
                Some(ReasonCode::Success) => {
                    acked.push(i.to_string());
                    i += 1;
                }
                // Not acknowledged: the connection was closed, or no answer. Sent again
                // on a new connection (it may then arrive twice: it was never acknowledged).
                _ => p = connect_retrying(&b[0], clean(V5, "pub")).await,
            }
        }
        p.disconnect().await;
    };
    let receive = async {
        let quiet = Duration::from_secs(5);
        loop {
            match sub.try_recv_within(quiet).await {
                Some(m) => {
                    *received
                        .entry(String::from_utf8_lossy(&m.payload).into_owned())
                        .or_default() += 1
                }
                None if sub.ended().is_some() => {
                    sub = connect_retrying(&b[1], persistent(V5, "sub")).await;
                }
                None if received.len() >= total => break,
                None => {}
            }
        }
    };
    let (_, _) = tokio::join!(publish, async {
        // Receive until the publisher is done and the subscriber has been quiet a while.
        tokio::time::timeout(Duration::from_secs(150), receive)
            .await
            .expect("the subscriber got everything within 150 s")
    });
    let lost: Vec<&String> = acked
        .iter()
        .filter(|m| !received.contains_key(*m))
        .collect();
    let twice: Vec<(&String, &usize)> = received.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "acknowledged {}, received {} distinct, lost {}, duplicates {}",
        acked.len(),
        received.len(),
        lost.len(),
        twice.len()
    );
    assert_eq!(acked.len(), total);
    assert!(lost.is_empty(), "acknowledged but never received: {lost:?}");
    assert!(twice.is_empty(), "QoS 2 received twice: {twice:?}");
    nats.restart(0);
}

/// NATS gone: open connections are closed (5.0: DISCONNECT 0x9C), CONNECTs refused with
/// 0x88 Server unavailable (3.1.1: return code 3) rather than acknowledging what cannot
/// be stored; when NATS is back, clients are let in again.
// 5.0 3.2.2.2 (0x88 Server unavailable), 3.1.1 3.2.2.3 (return code 3), 5.0 3.14.2.1
// (0x9C Use another server).
#[tokio::test]
async fn with_nats_gone_connections_are_closed_and_connects_refused_until_it_is_back() {
    let nats = NatsCluster::start();
    let b = bridges(&nats, "nats-gone");
    let mut open = b[0].client(TCP, clean(V5, "open")).await;
    open.subscribe("x", QoS::AtLeastOnce).await;
    for i in 0..3 {
        nats.kill9(i);
    }
    // The guard waits 2 s for a reconnect before it closes connections; the batch that
    // closes them waits for its writes to time out (5 s) before its DISCONNECTs go.
    let _ = open.try_recv_within(Duration::from_secs(15)).await;
    match open.ended() {
        Some(Ended::ByServer(Some(d))) => assert_eq!(d.reason, ReasonCode::UseAnotherServer),
        other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
    }
    for (v, code) in [
        (V5, ReasonCode::ServerUnavailable),
        (V311, ReasonCode::ServerUnavailable),
    ] {
        match b[1].connect(TCP, clean(v, "late")).await {
            Err(E2eError::Refused(ack)) => assert_eq!(ack.reason, code, "{v:?}"),
            other => panic!("{v:?}: expected CONNACK server unavailable, got {other:?}"),
        }
    }
    for i in 0..3 {
        nats.restart_without_waiting(i);
    }
    nats.wait_ready();
    let mut back = connect_retrying(&b[1], clean(V5, "back")).await;
    back.subscribe("y", QoS::AtLeastOnce).await;
    let mut p = connect_retrying(&b[0], clean(V311, "p")).await;
    p.publish("y", "again", QoS::AtLeastOnce, false).await;
    // The bridges' readers of the stream come back with it (their consumers died with the
    // servers; a stalled reader is made again within seconds).
    let m = back.recv_within(Duration::from_secs(30)).await;
    assert_eq!(&m.payload[..], b"again");
}
