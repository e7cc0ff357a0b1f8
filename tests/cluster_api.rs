//! The HTTP API of a cluster (`/api/v1/`): every bridge lists the whole cluster's sessions,
//! each with the node that holds it, whichever bridge is asked.
//!
//! Two bridges (nodes `a` and `b`) on the test binary's shared NATS cluster
//! ([`NatsCluster::shared`]), in a namespace of their own. The other nodes' sessions come from
//! the cluster's directory, a watch of the sessions bucket: eventually consistent, so the
//! tests poll. The HTTP client is a few lines over a TCP socket, as in `api.rs`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::nats::{cluster_table, namespace, NatsCluster};
use e2e::protocol::{ProtocolVersion, QoS};
use e2e::{clean, persistent, Bridge, TempDir, Transport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TCP: Transport = Transport::Tcp;
/// How long a record may take to reach the other bridge's directory (milliseconds on a
/// healthy cluster), and an answer to come.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Bridge `node` of the cluster of namespace `ns`.
fn bridge(ns: &str, node: &str) -> Bridge {
    Bridge::start_with_config(&cluster_table(NatsCluster::shared(), ns, node))
}

/// Sends `GET path` (`Connection: close`) and returns the open socket.
async fn open(bridge: &Bridge, path: &str) -> TcpStream {
    let host = bridge
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = TcpStream::connect(&host).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

/// `GET path`: the status and the JSON body.
async fn get(bridge: &Bridge, path: &str) -> (u16, Value) {
    let mut s = open(bridge, path).await;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer within {TIMEOUT:?}"))
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header end"));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "GET {path}: a chunked answer: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = &raw[split + 4..];
    let json = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: not JSON ({e}): {status} {}",
            String::from_utf8_lossy(body)
        )
    });
    (status, json)
}

/// `GET path`, expecting 200.
async fn get_ok(bridge: &Bridge, path: &str) -> Value {
    let (status, body) = get(bridge, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Polls `GET path` until `done` holds for its JSON.
async fn eventually(bridge: &Bridge, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let v = get_ok(bridge, path).await;
        if done(&v) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("GET {path}: still {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session of `id` in a page of the session list.
fn session<'a>(page: &'a Value, id: &str) -> Option<&'a Value> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["client_id"] == id)
}

fn ids(page: &Value) -> Vec<&str> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap())
        .collect()
}

/// Opens the event stream of `bridge` and reads its answer's head.
async fn event_stream(bridge: &Bridge) -> (TcpStream, String) {
    let mut s = open(bridge, "/api/v1/events").await;
    let mut seen = String::new();
    while !seen.contains("\r\n\r\n") {
        read_more(&mut s, &mut seen, "the answer's head").await;
    }
    assert!(
        seen.to_ascii_lowercase().contains("text/event-stream"),
        "{seen}"
    );
    (s, seen)
}

/// Reads more of an event stream into `seen`, failing after the timeout.
async fn read_more(s: &mut TcpStream, seen: &mut String, wanted: &str) {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no {wanted} in the event stream; got:\n{seen}"))
        .unwrap();
    assert!(n > 0, "the event stream ended; got:\n{seen}");
    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
}

/// The whole `data:` line of the first event whose data contains `needle`.
async fn event_data(s: &mut TcpStream, seen: &mut String, needle: &str) -> String {
    loop {
        if let Some(at) = seen.find(needle) {
            let start = seen[..at]
                .rfind("data: ")
                .map_or(at, |i| i + "data: ".len());
            if let Some(end) = seen[at..].find('\n') {
                return seen[start..at + end].to_owned();
            }
        }
        read_more(s, seen, &format!("`{needle}`")).await;
    }
}

/// A client connected on bridge a and an offline session on bridge b, with a message queued
/// for it, are listed by both bridges with the node that holds each; the filters and paging
/// apply to the whole list; the detail of the other node's session is what its record says;
/// its messages are the holder's to show (409 elsewhere); and when the session moves, both
/// bridges follow it.
#[tokio::test]
async fn every_bridge_lists_the_whole_clusters_sessions_with_the_node_that_holds_each() {
    let ns = namespace("api");
    let a = bridge(&ns, "a");
    let b = bridge(&ns, "b");

    // Bridge a's event stream names its node in each session.
    let (mut events, mut seen) = event_stream(&a).await;
    let mut on_a = a.client(TCP, persistent(V5, "api-on-a")).await;
    on_a.subscribe("x/#", QoS::AtLeastOnce).await;
    for needle in [
        r#"{"type":"connected","client_id":"api-on-a","#,
        r#"{"type":"subscribed","client_id":"api-on-a","#,
    ] {
        let data = event_data(&mut events, &mut seen, needle).await;
        let event: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(event["session"]["node"], "a", "{data}");
    }

    let mut off_b = b.client(TCP, persistent(V311, "api-off-b")).await;
    off_b.subscribe("q/t", QoS::AtLeastOnce).await;
    off_b.disconnect().await;
    let mut publisher = a.client(TCP, clean(V5, "pub")).await;
    publisher
        .publish("q/t", "m1", QoS::AtLeastOnce, false)
        .await;

    let mut pages = Vec::new();
    for (bridge, node) in [(&a, "a"), (&b, "b")] {
        let page = eventually(bridge, "/api/v1/sessions?prefix=api-", |p| {
            session(p, "api-on-a").is_some_and(|s| s["subscriptions"] == 1)
                && session(p, "api-off-b")
                    .is_some_and(|s| s["connected"] == false && s["queued"] == 1)
        })
        .await;
        assert_eq!(page["node"], node, "the node that answered");
        assert_eq!(page["total"], 2);
        assert_eq!(ids(&page), ["api-off-b", "api-on-a"], "sorted by client id");
        let here = session(&page, "api-on-a").unwrap();
        assert_eq!(here["node"], "a", "asked of {node}: {here}");
        assert_eq!(here["connected"], true);
        assert_eq!(here["persistent"], true);
        assert_eq!(here["protocol_version"], 5);
        let away = session(&page, "api-off-b").unwrap();
        assert_eq!(away["node"], "b", "asked of {node}: {away}");
        assert_eq!(away["persistent"], true);
        assert_eq!(away["protocol_version"], 4);
        assert_eq!(away["subscriptions"], 1);
        assert_eq!(away["inflight"], 0);
        let gone = away["disconnected_at_ms"].as_u64().unwrap();
        assert!(gone > 1_600_000_000_000);
        assert!(away["expires_at_ms"].as_u64().unwrap() > gone);
        pages.push(page);

        // The publisher's clean session, on a, is in the whole list too.
        let everyone = eventually(bridge, "/api/v1/sessions", |p| p["total"] == 3).await;
        assert_eq!(ids(&everyone), ["api-off-b", "api-on-a", "pub"]);
        assert_eq!(session(&everyone, "pub").unwrap()["node"], "a");
        let offline = get_ok(bridge, "/api/v1/sessions?state=offline").await;
        assert_eq!(ids(&offline), ["api-off-b"]);
        let kept = get_ok(bridge, "/api/v1/sessions?kind=persistent&state=online").await;
        assert_eq!(ids(&kept), ["api-on-a"]);
        let cleans = get_ok(bridge, "/api/v1/sessions?kind=clean").await;
        assert_eq!(ids(&cleans), ["pub"]);
        let paged = get_ok(bridge, "/api/v1/sessions?offset=1&limit=1").await;
        assert_eq!(paged["total"], 3);
        assert_eq!(ids(&paged), ["api-on-a"]);
    }

    // What a record says of a session is what its holder says, but when it connected.
    for id in ["api-off-b", "api-on-a"] {
        let [mut on_a, mut on_b] = [0, 1].map(|i| session(&pages[i], id).unwrap().clone());
        let (holder, other) = match id {
            "api-on-a" => (&mut on_a, &mut on_b),
            _ => (&mut on_b, &mut on_a),
        };
        assert_eq!(other["connected_at_ms"], Value::Null, "not in the record");
        holder["connected_at_ms"] = Value::Null;
        assert_eq!(on_a, on_b, "{id}");
    }

    // The detail of b's session, asked of a: its record, as b's engine says it.
    let recorded = get_ok(&a, "/api/v1/sessions/api-off-b").await;
    let held = get_ok(&b, "/api/v1/sessions/api-off-b").await;
    for d in [&recorded, &held] {
        assert_eq!(d["node"], "b", "{d}");
        assert_eq!(d["connected"], false);
        assert_eq!(d["protocol_version"], 4);
        assert_eq!(d["subscriptions"][0]["filter"], "q/t");
        assert_eq!(d["subscriptions"][0]["qos"], 1);
        assert_eq!(d["queue"]["length"], 1);
        assert_eq!(d["inflight"]["count"], 0);
    }
    for key in [
        "session_expiry_interval",
        "disconnected_at_ms",
        "expires_at_ms",
        "subscriptions",
        "awaiting_pubrel",
    ] {
        assert_eq!(recorded[key], held[key], "{key}");
    }
    assert_eq!(recorded["queue"]["dropped"], held["queue"]["dropped"]);
    assert_eq!(held["msgs_out"], 0);
    assert_eq!(
        recorded["msgs_out"],
        Value::Null,
        "the holder's counters are not in the record"
    );
    // Its messages are read on b; a says who holds it.
    let (status, body) = get(&a, "/api/v1/sessions/api-off-b/queue").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`b`"), "{body}");
    let q = get_ok(&b, "/api/v1/sessions/api-off-b/queue").await;
    assert_eq!(q["messages"][0]["payload_preview"], "m1");
    let (status, _) = get(&a, "/api/v1/sessions/nobody").await;
    assert_eq!(status, 404);

    // The session moves to a: both bridges list it there.
    let mut back = a.client(TCP, persistent(V311, "api-off-b")).await;
    assert_eq!(back.recv_payloads(1).await, ["m1"]);
    for bridge in [&a, &b] {
        eventually(bridge, "/api/v1/sessions?prefix=api-off-b", |p| {
            session(p, "api-off-b")
                .is_some_and(|s| s["node"] == "a" && s["connected"] == true && s["queued"] == 0)
        })
        .await;
    }
    let d = get_ok(&b, "/api/v1/sessions/api-off-b").await;
    assert_eq!(d["node"], "a");
    back.disconnect().await;
    on_a.disconnect().await;
    publisher.disconnect().await;
}

/// On a single bridge nothing names a node: the lists, the detail and the events are as
/// they were before cluster mode.
#[tokio::test]
async fn a_single_bridge_names_no_node() {
    // On a data directory: one bridge even with `E2E_CLUSTER=1` (which makes `Bridge::start`
    // two bridges of a cluster).
    let dir = TempDir::new("single-api");
    let bridge = Bridge::start_with_data(dir.path(), "");
    let (mut events, mut seen) = event_stream(&bridge).await;
    let _c = bridge.client(TCP, persistent(V5, "alone")).await;
    let data = event_data(&mut events, &mut seen, r#"{"type":"connected","#).await;
    let event: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(event["session"]["client_id"], "alone");
    assert!(event["session"].get("node").is_none(), "{data}");

    let page = get_ok(&bridge, "/api/v1/sessions").await;
    assert_eq!(ids(&page), ["alone"]);
    assert!(page.get("node").is_none(), "{page}");
    assert!(page["sessions"][0].get("node").is_none(), "{page}");
    let d = get_ok(&bridge, "/api/v1/sessions/alone").await;
    assert!(d.get("node").is_none(), "{d}");
}
