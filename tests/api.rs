//! The session-state HTTP API (`/api/v1/`), through HTTP against a real bridge, with real
//! MQTT clients making the state it shows.
//!
//! The HTTP client is a few lines over a TCP socket (HTTP/1.1, `Connection: close`), so the
//! tests need no HTTP library.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::protocol::{ProtocolVersion, QoS, ReasonCode};
use e2e::{clean, persistent, Bridge, Transport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TCP: Transport = Transport::Tcp;
const TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `host:port` of the bridge's HTTP listener.
fn authority(bridge: &Bridge) -> String {
    bridge
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

async fn open(bridge: &Bridge, method: &str, path: &str) -> TcpStream {
    let host = authority(bridge);
    let mut s = TcpStream::connect(&host).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_line = std::str::from_utf8(&raw[..end]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    body
}

async fn request(bridge: &Bridge, method: &str, path: &str) -> Answer {
    let mut s = open(bridge, method, path).await;
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {TIMEOUT:?}"))
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no header end"));
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let rest = &raw[split + 4..];
    let body = if headers.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET path`, expecting 200 and JSON.
async fn get(bridge: &Bridge, path: &str) -> Value {
    let a = request(bridge, "GET", path).await;
    assert_eq!(
        a.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(
        a.headers.contains("content-type: application/json"),
        "GET {path}: {}",
        a.headers
    );
    a.json()
}

/// A request expected to fail with `status` and a JSON `{"error": "..."}`; returns the message.
async fn error(bridge: &Bridge, method: &str, path: &str, status: u16) -> String {
    let a = request(bridge, method, path).await;
    assert_eq!(
        a.status,
        status,
        "{method} {path}: {}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(
        a.headers.contains("content-type: application/json"),
        "{method} {path}: {}",
        a.headers
    );
    let body = a.json();
    let message = body["error"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(!message.is_empty());
    message.to_owned()
}

/// Polls `GET path` until `done` holds for its JSON.
async fn eventually(bridge: &Bridge, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let v = get(bridge, path).await;
        if done(&v) {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("GET {path}: still {v}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(page: &Value) -> Vec<&str> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_persistent_session_appears_in_the_session_list_and_the_filters_select_it() {
    let bridge = Bridge::start();
    let mut online_persistent = bridge.client(TCP, persistent(V5, "api-b")).await;
    online_persistent
        .subscribe("list/+", QoS::AtLeastOnce)
        .await;
    let _online_clean = bridge.client(TCP, clean(V311, "api-c")).await;
    let away = bridge.client(TCP, persistent(V311, "api-a")).await;
    away.disconnect().await;
    let _other = bridge.client(TCP, clean(V5, "zzz")).await;

    let all = eventually(&bridge, "/api/v1/sessions?prefix=api-", |v| {
        v["sessions"][0]["connected"] == false
    })
    .await;
    assert_eq!(all["total"], 3);
    assert_eq!(all["offset"], 0);
    assert_eq!(all["limit"], 100);
    assert_eq!(
        ids(&all),
        ["api-a", "api-b", "api-c"],
        "sorted by client id"
    );
    let b = &all["sessions"][1];
    assert_eq!(b["persistent"], true);
    assert_eq!(b["connected"], true);
    assert_eq!(b["protocol_version"], 5);
    assert_eq!(b["subscriptions"], 1);

    let everyone = get(&bridge, "/api/v1/sessions").await;
    assert_eq!(everyone["total"], 4);
    let online = get(&bridge, "/api/v1/sessions?state=online&prefix=api-").await;
    assert_eq!(ids(&online), ["api-b", "api-c"]);
    let offline = get(&bridge, "/api/v1/sessions?state=offline").await;
    assert_eq!(ids(&offline), ["api-a"]);
    let kept = get(&bridge, "/api/v1/sessions?kind=persistent").await;
    assert_eq!(ids(&kept), ["api-a", "api-b"]);
    let cleans = get(&bridge, "/api/v1/sessions?kind=clean").await;
    assert_eq!(ids(&cleans), ["api-c", "zzz"]);
    let both = get(&bridge, "/api/v1/sessions?kind=persistent&state=online").await;
    assert_eq!(ids(&both), ["api-b"]);
    let page = get(&bridge, "/api/v1/sessions?offset=1&limit=2").await;
    assert_eq!(page["total"], 4);
    assert_eq!(page["limit"], 2);
    assert_eq!(ids(&page), ["api-b", "api-c"]);
    let past_the_end = get(&bridge, "/api/v1/sessions?offset=10").await;
    assert_eq!(past_the_end["total"], 4);
    assert_eq!(ids(&past_the_end), Vec::<&str>::new());
}

#[tokio::test]
async fn the_session_detail_shows_the_subscriptions_the_connection_and_the_expiry() {
    let bridge = Bridge::start();
    let mut c = bridge.client(TCP, persistent(V5, "detail")).await;
    c.subscribe("d/+/x", QoS::AtLeastOnce).await;
    c.subscribe("d/#", QoS::AtMostOnce).await;

    let d = get(&bridge, "/api/v1/sessions/detail").await;
    assert_eq!(d["client_id"], "detail");
    assert_eq!(d["protocol_version"], 5);
    assert_eq!(d["clean_start"], false);
    assert_eq!(d["connected"], true);
    assert!(d["connected_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(d["session_expiry_interval"], 300);
    assert_eq!(d["expires_at_ms"], Value::Null, "online: no end yet");
    assert!(d["keep_alive"].is_u64());
    assert!(d["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let subs = d["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0]["filter"], "d/#");
    assert_eq!(subs[0]["qos"], 0);
    assert_eq!(subs[1]["filter"], "d/+/x");
    assert_eq!(subs[1]["qos"], 1);
    assert_eq!(subs[1]["no_local"], false);
    assert_eq!(subs[1]["retain_as_published"], false);
    assert_eq!(subs[1]["retain_handling"], 0);
    assert_eq!(subs[1]["subscription_identifier"], Value::Null);
    assert_eq!(d["inflight"]["count"], 0);
    assert!(d["inflight"]["max"].as_u64().unwrap() >= 1);
    assert_eq!(d["queue"]["length"], 0);
    assert_eq!(d["queue"]["max"], 10000);
    assert_eq!(d["queue"]["dropped"], 0);
    assert_eq!(d["awaiting_pubrel"], 0);

    c.publish("d/1/x", "hello", QoS::AtLeastOnce, false).await;
    c.recv().await;
    let d = eventually(&bridge, "/api/v1/sessions/detail", |d| d["msgs_out"] == 1).await;
    assert_eq!(d["msgs_in"], 1);
    assert_eq!(d["bytes_in"], 5);
    assert_eq!(d["bytes_out"], 5, "overlapping filters: delivered once");

    c.disconnect().await;
    let d = eventually(&bridge, "/api/v1/sessions/detail", |d| {
        d["connected"] == false
    })
    .await;
    let gone = d["disconnected_at_ms"].as_u64().unwrap();
    let ends = d["expires_at_ms"].as_u64().unwrap();
    assert_eq!(
        ends - gone,
        300_000,
        "the session ends 300 s after it went offline"
    );
    assert_eq!(d["peer"], Value::Null);
    assert_eq!(d["connected_at_ms"], Value::Null);
}

#[tokio::test]
async fn the_queue_grows_while_the_client_is_away_and_drains_to_zero_when_it_returns() {
    let bridge = Bridge::start();
    let mut device = bridge.client(TCP, persistent(V311, "device")).await;
    device.subscribe("q/t", QoS::AtLeastOnce).await;
    device.disconnect().await;

    let mut sender = bridge.client(TCP, clean(V5, "sender")).await;
    for payload in ["m1", "m2", "m3"] {
        sender
            .publish("q/t", payload, QoS::AtLeastOnce, false)
            .await;
    }
    let d = get(&bridge, "/api/v1/sessions/device").await;
    assert_eq!(d["queue"]["length"], 3);
    let q = get(&bridge, "/api/v1/sessions/device/queue").await;
    let messages = q["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    for (m, payload) in messages.iter().zip(["m1", "m2", "m3"]) {
        assert_eq!(m["topic"], "q/t");
        assert_eq!(m["qos"], 1);
        assert_eq!(m["size"], 2);
        assert_eq!(m["payload_preview"], payload);
        assert_eq!(m["from"], "sender");
        assert!(m["enqueued_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    let first = get(&bridge, "/api/v1/sessions/device/queue?limit=1").await;
    assert_eq!(first["messages"].as_array().unwrap().len(), 1);

    let mut device = bridge.client(TCP, persistent(V311, "device")).await;
    assert_eq!(device.recv_payloads(3).await, ["m1", "m2", "m3"]);
    eventually(&bridge, "/api/v1/sessions/device", |d| {
        d["queue"]["length"] == 0 && d["inflight"]["count"] == 0
    })
    .await;
    let q = get(&bridge, "/api/v1/sessions/device/queue").await;
    assert_eq!(q["messages"], serde_json::json!([]));
}

#[tokio::test]
async fn a_long_payload_is_previewed_by_its_first_64_bytes() {
    let bridge = Bridge::start();
    let device = bridge.client(TCP, persistent(V5, "long")).await;
    let mut device = device;
    device.subscribe("long", QoS::AtLeastOnce).await;
    device.disconnect().await;
    let mut sender = bridge.client(TCP, clean(V5, "s")).await;
    sender
        .publish("long", "x".repeat(200), QoS::AtLeastOnce, false)
        .await;
    let q = get(&bridge, "/api/v1/sessions/long/queue").await;
    assert_eq!(q["messages"][0]["size"], 200);
    assert_eq!(q["messages"][0]["payload_preview"], "x".repeat(64));
}

#[tokio::test]
async fn the_inflight_view_lists_the_messages_a_client_has_not_acknowledged() {
    let bridge = Bridge::start();
    let mut slow = bridge.client(TCP, persistent(V5, "slow")).await;
    slow.subscribe("f/t", QoS::AtLeastOnce).await;
    // From here on `slow` reads nothing, so it sends no PUBACK.
    let mut sender = bridge.client(TCP, clean(V5, "sender")).await;
    sender.publish("f/t", "one", QoS::AtLeastOnce, false).await;
    sender.publish("f/t", "two", QoS::AtLeastOnce, false).await;

    let d = eventually(&bridge, "/api/v1/sessions/slow", |d| {
        d["inflight"]["count"] == 2
    })
    .await;
    assert_eq!(d["queue"]["length"], 0);
    let f = get(&bridge, "/api/v1/sessions/slow/inflight").await;
    let messages = f["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["payload_preview"], "one");
    assert_eq!(messages[1]["payload_preview"], "two");
    for m in messages {
        assert_eq!(m["topic"], "f/t");
        assert_eq!(m["qos"], 1);
        assert_eq!(m["from"], "sender");
        assert_eq!(m["stage"], "awaiting_ack");
        assert!(m["packet_id"].as_u64().unwrap() >= 1);
    }

    // Reading acknowledges them.
    slow.recv().await;
    slow.recv().await;
    slow.sync().await;
    eventually(&bridge, "/api/v1/sessions/slow/inflight", |f| {
        f["messages"] == serde_json::json!([])
    })
    .await;
}

#[tokio::test]
async fn kick_disconnects_the_client_with_0x98_in_5_0_and_keeps_the_session() {
    let bridge = Bridge::start();
    let mut v5 = bridge.client(TCP, persistent(V5, "kick5")).await;
    v5.subscribe("k", QoS::AtLeastOnce).await;
    let mut v311 = bridge.client(TCP, persistent(V311, "kick4")).await;

    let a = request(&bridge, "POST", "/api/v1/sessions/kick5/kick").await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    let d = v5
        .expect_closed()
        .await
        .expect("5.0: DISCONNECT before the close");
    assert_eq!(d.reason, ReasonCode::AdministrativeAction);

    let a = request(&bridge, "POST", "/api/v1/sessions/kick4/kick").await;
    assert_eq!(a.status, 204);
    assert_eq!(v311.expect_closed().await, None, "3.1.1: just closed");

    let d = get(&bridge, "/api/v1/sessions/kick5").await;
    assert_eq!(d["connected"], false);
    assert_eq!(d["subscriptions"][0]["filter"], "k", "the session is kept");
    let (_, ack) = bridge.connect(TCP, persistent(V5, "kick5")).await.unwrap();
    assert!(ack.session_present);

    error(&bridge, "POST", "/api/v1/sessions/nobody/kick", 404).await;
}

#[tokio::test]
async fn delete_discards_the_session_and_it_is_gone_afterwards() {
    let bridge = Bridge::start();
    let mut online = bridge.client(TCP, persistent(V5, "gone")).await;
    online.subscribe("g", QoS::AtLeastOnce).await;
    let away = bridge.client(TCP, persistent(V311, "away")).await;
    away.disconnect().await;

    let a = request(&bridge, "DELETE", "/api/v1/sessions/gone").await;
    assert_eq!(a.status, 204);
    let d = online.expect_closed().await.expect("5.0: DISCONNECT");
    assert_eq!(d.reason, ReasonCode::AdministrativeAction);
    let message = error(&bridge, "GET", "/api/v1/sessions/gone", 404).await;
    assert!(message.contains("gone"), "{message}");

    assert_eq!(
        request(&bridge, "DELETE", "/api/v1/sessions/away")
            .await
            .status,
        204
    );
    error(&bridge, "GET", "/api/v1/sessions/away", 404).await;
    error(&bridge, "DELETE", "/api/v1/sessions/away", 404).await;

    let (_, ack) = bridge.connect(TCP, persistent(V5, "gone")).await.unwrap();
    assert!(!ack.session_present, "nothing was kept");
}

#[tokio::test]
async fn the_retained_list_shows_retained_messages_sorted_and_filtered_by_prefix() {
    // Without `$SYS`, whose retained messages would be listed too.
    let bridge = Bridge::start_with_config("[broker]\nsys_interval = 0\n");
    let mut p = bridge.client(TCP, clean(V5, "retainer")).await;
    p.publish("r/b", "two", QoS::AtLeastOnce, true).await;
    p.publish("r/a", "one", QoS::AtMostOnce, true).await;
    p.publish("other", "three", QoS::AtLeastOnce, true).await;
    p.sync().await;

    let all = eventually(&bridge, "/api/v1/retained", |v| v["total"] == 3).await;
    assert_eq!(all["messages"][0]["topic"], "other");
    let r = get(&bridge, "/api/v1/retained?prefix=r/").await;
    assert_eq!(r["total"], 2);
    let messages = r["messages"].as_array().unwrap();
    assert_eq!(messages[0]["topic"], "r/a");
    assert_eq!(messages[0]["qos"], 0);
    assert_eq!(messages[0]["payload_preview"], "one");
    assert_eq!(messages[0]["retain"], true);
    assert_eq!(messages[0]["from"], "retainer");
    assert_eq!(messages[1]["topic"], "r/b");
    assert_eq!(messages[1]["size"], 3);
    let one = get(&bridge, "/api/v1/retained?prefix=r/&limit=1").await;
    assert_eq!(one["total"], 2);
    assert_eq!(one["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_stats_count_connections_sessions_and_messages() {
    let bridge = Bridge::start();
    let before = get(&bridge, "/api/v1/stats").await;
    assert_eq!(before["connections"], 0);
    assert_eq!(before["msgs_in"], 0);

    let mut sub = bridge.client(TCP, persistent(V5, "stat-sub")).await;
    sub.subscribe("s", QoS::AtLeastOnce).await;
    let away = bridge.client(TCP, persistent(V311, "stat-away")).await;
    let mut away = away;
    away.subscribe("s", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let mut p = bridge.client(TCP, clean(V5, "stat-pub")).await;
    for _ in 0..4 {
        p.publish("s", "x", QoS::AtLeastOnce, false).await;
    }
    sub.recv_payloads(4).await;

    let after = eventually(&bridge, "/api/v1/stats", |v| v["msgs_out"] == 4).await;
    assert_eq!(after["connections"], 2);
    assert_eq!(after["sessions_online"], 2);
    assert_eq!(after["sessions_offline"], 1);
    assert_eq!(after["msgs_in"], 4);
    assert_eq!(after["queued"], 4, "queued for the session that is away");
    assert_eq!(after["dropped"], 0);
    assert!(after["messages_in_per_sec"].as_f64().unwrap() >= 0.0);
    assert!(after["messages_out_per_sec"].as_f64().unwrap() >= 0.0);

    // Over at least a second, the rates reflect what moved.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..4 {
        p.publish("s", "y", QoS::AtLeastOnce, false).await;
    }
    let rates = get(&bridge, "/api/v1/stats").await;
    assert!(
        rates["messages_in_per_sec"].as_f64().unwrap() > 0.0,
        "{rates}"
    );
}

/// Reads an SSE stream until `needle` appears (or the timeout).
async fn read_events_until(s: &mut TcpStream, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` in the event stream; got:\n{seen}"))
            .unwrap();
        assert!(n > 0, "the event stream ended; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn the_event_stream_tells_of_a_client_connecting_subscribing_and_its_queue() {
    let bridge = Bridge::start();
    let mut s = open(&bridge, "GET", "/api/v1/events").await;
    let mut seen = String::new();
    read_events_until(&mut s, &mut seen, "\r\n\r\n").await;
    assert!(
        seen.to_ascii_lowercase().contains("text/event-stream"),
        "{seen}"
    );

    let mut c = bridge.client(TCP, persistent(V5, "watched")).await;
    read_events_until(&mut s, &mut seen, "event: created").await;
    read_events_until(
        &mut s,
        &mut seen,
        r#"data: {"type":"connected","client_id":"watched","session":{"client_id":"watched","protocol_version":5,"connected":true,"#,
    )
    .await;
    c.subscribe("e/t", QoS::AtLeastOnce).await;
    read_events_until(
        &mut s,
        &mut seen,
        r#"{"type":"subscribed","client_id":"watched","filters":["e/t"],"session":{"client_id":"watched","#,
    )
    .await;
    c.disconnect().await;
    read_events_until(&mut s, &mut seen, "event: disconnected").await;
    let mut p = bridge.client(TCP, clean(V311, "p")).await;
    p.publish("e/t", "1", QoS::AtLeastOnce, false).await;
    read_events_until(
        &mut s,
        &mut seen,
        r#"{"type":"queue","client_id":"watched","queued":1,"inflight":0,"session":{"client_id":"watched","protocol_version":5,"connected":false,"clean_start":false,"persistent":true,"queued":1,"#,
    )
    .await;
    assert_eq!(
        request(&bridge, "DELETE", "/api/v1/sessions/watched")
            .await
            .status,
        204
    );
    read_events_until(
        &mut s,
        &mut seen,
        r#"{"type":"ended","client_id":"watched"}"#,
    )
    .await;
}

#[tokio::test]
async fn unknown_client_ids_are_404_and_bad_query_values_are_400_both_as_json() {
    let bridge = Bridge::start();
    let _c = bridge.client(TCP, persistent(V5, "known")).await;
    for path in [
        "/api/v1/sessions/unknown",
        "/api/v1/sessions/unknown/queue",
        "/api/v1/sessions/unknown/inflight",
    ] {
        error(&bridge, "GET", path, 404).await;
    }
    error(&bridge, "DELETE", "/api/v1/sessions/unknown", 404).await;
    error(&bridge, "POST", "/api/v1/sessions/unknown/kick", 404).await;
    // A percent-encoded client id is decoded.
    let d = get(&bridge, "/api/v1/sessions/%6Bnown").await;
    assert_eq!(d["client_id"], "known");

    for query in [
        "state=foo",
        "kind=dirty",
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=5000",
        "offset=-3",
        "colour=blue",
    ] {
        let message = error(&bridge, "GET", &format!("/api/v1/sessions?{query}"), 400).await;
        let key = query.split('=').next().unwrap();
        assert!(message.contains(key), "{query}: {message}");
    }
    error(&bridge, "GET", "/api/v1/sessions/known/queue?limit=0", 400).await;
    error(
        &bridge,
        "GET",
        "/api/v1/sessions/known/inflight?limit=x",
        400,
    )
    .await;
    error(&bridge, "GET", "/api/v1/retained?limit=1001", 400).await;
    let ok = get(&bridge, "/api/v1/sessions?limit=1000").await;
    assert_eq!(ok["limit"], 1000);
}

#[tokio::test]
async fn an_open_event_stream_ends_at_shutdown_without_holding_the_bridge_up() {
    let bridge = Bridge::start();
    let mut s = open(&bridge, "GET", "/api/v1/events").await;
    let mut seen = String::new();
    read_events_until(&mut s, &mut seen, "\r\n\r\n").await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || bridge.stop_gracefully())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Shutdown lets connections drain for 2 s before it drops them: the stream must end
    // by itself well before that.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "shutdown took {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the stream is closed");
}
