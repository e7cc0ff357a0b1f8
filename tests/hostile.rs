//! Hostile clients (issue 10): every attack the issue reproduced, against the real bridge
//! binary through real sockets, while a bystander ([`Bystander`]: a subscriber and a
//! publisher doing QoS 1 round trips) must keep its latency bounded, the bridge's RSS
//! (`/proc/<pid>/status`) must stay under a bound, and the bridge must be alive at the end.
//!
//! One section per finding of the issue:
//! 1. topics and filters of 8 000 levels (the stack overflow), the level and length limits;
//! 2. a WebSocket ping flood that never reads its pongs;
//! 3. idle and half-sent HTTP connections, a flood of them, a low descriptor limit;
//! 4. a half-sent packet with keep-alive 0, a byte trickle, a receive-only client
//!    [MQTT-3.1.2-24];
//! 5. engine stalls: one SUBSCRIBE against many retained messages, many shared groups;
//! 6. memory and disk bounds: retained bytes, one message for many offline sessions,
//!    sessions in total, session expiry, subscriptions per session, rate-limited logs;
//! 7. memory per idle connection, and after a burst.
//!
//! Sizes are those that run in seconds; `scripts/soak.sh` runs the same tests at the
//! issue's sizes (100 000 retained messages and groups, 2 000 connections) through the
//! `HOSTILE_*` variables read by [`scale`].
//!
//! Tests that configure the `[server]` table (HTTP timeouts and cap) need a bridge that
//! knows it; an older one refuses the file at start and the test fails saying so.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::hostile::{
    connect_or_panic, dir_size, http, Attack, Bystander, Checks, Launch, WatchedBridge,
};
use e2e::protocol::client::ClientOptions;
use e2e::protocol::{
    Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, Subscription, Unsubscribe,
};
use e2e::{
    disconnect_in, encode, filter, persistent, topic, version_name, Bridge, Endpoint, RawClient,
    Read, TempDir, TestClient, Transport, DEFAULT_TIMEOUT,
};
use futures_util::future::join_all;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TCP: Transport = Transport::Tcp;
const WS: Transport = Transport::Ws;

/// The slowest bystander round trip allowed during an attack. A QoS 1 round trip takes
/// about a millisecond here; one second leaves room for a loaded 2-core machine running the
/// debug build, and is still far below every stall the issue measured (seconds to minutes).
const LATENCY_BOUND: Duration = Duration::from_secs(1);

/// The slowest bystander round trip while thousands of clients connect or publish at once:
/// that is load to share, not an attack to shrug off, and the debug build's handshakes
/// compete with the bystander for the same 2 cores.
const LOAD_LATENCY_BOUND: Duration = Duration::from_secs(2);

/// How much the bridge's RSS may grow during an attack that should cost it nothing lasting.
const RSS_GROWTH_BOUND_MB: u64 = 64;

const MB: u64 = 1024 * 1024;

/// A size for this run: `$var` if set (the soak script), else `default`.
fn scale(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether the bridge under test is a debug build (the default `target/debug/bridge`).
fn debug_bridge() -> bool {
    !Bridge::binary().to_string_lossy().contains("/release/")
}

// ----- helpers -----------------------------------------------------------------------------

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// `a/a/.../a` with `n` levels.
fn levels(n: usize) -> String {
    vec!["a"; n].join("/")
}

fn subscribe_packet(id: u16, filters: &[String], qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        subscriptions: filters
            .iter()
            .map(|f| Subscription::new(filter(f), qos))
            .collect(),
        properties: Properties::default(),
    })
}

fn unsubscribe_packet(id: u16, filters: &[String]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        filters: filters.iter().map(|f| filter(f)).collect(),
        properties: Properties::default(),
    })
}

fn publish_packet(t: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) -> Packet {
    let mut p = Publish::new(topic(t), payload);
    p.qos = qos;
    p.retain = retain;
    if qos != QoS::AtMostOnce {
        p.packet_id = Some(pid(1));
    }
    Packet::Publish(p)
}

fn disconnect_packet() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    })
}

/// A raw client, connected (keep-alive as given; persistent: clean 0 and, in 5.0, a
/// Session Expiry Interval of 300 s).
async fn raw_connected(
    ep: &Endpoint,
    v: ProtocolVersion,
    id: &str,
    keep_alive: u16,
    persistent: bool,
) -> RawClient {
    let mut raw = RawClient::open(ep).await;
    let mut c = Connect::new(v, id, !persistent);
    c.keep_alive = keep_alive;
    if persistent && v == V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    let ack = raw.connect(c).await;
    assert_eq!(
        ack.reason,
        ReasonCode::Success,
        "`{id}` was refused: {ack:?}"
    );
    raw
}

/// Reads until the broker closes the connection: `Ok(packets)` if it did within
/// `timeout`, `Err(packets)` if the connection is still open then.
async fn closed_within(raw: &mut RawClient, timeout: Duration) -> Result<Vec<Packet>, Vec<Packet>> {
    let deadline = Instant::now() + timeout;
    let mut packets = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.read_within(left).await {
            Read::Packet(p) => packets.push(p),
            Read::Closed => return Ok(packets),
            Read::Nothing => return Err(packets),
        }
    }
}

/// Sends `packet` (if the connection still takes it) and returns what comes back within
/// [`DEFAULT_TIMEOUT`] (`Closed` if it was closed already).
async fn exchange(raw: &mut RawClient, v: ProtocolVersion, packet: Packet) -> Read {
    if !raw.try_send_bytes(&encode(&packet, v)).await {
        return Read::Closed;
    }
    raw.read_within(DEFAULT_TIMEOUT).await
}

/// The SUBACK's reasons, or what came instead.
async fn suback_reasons(raw: &mut RawClient, timeout: Duration) -> Result<Vec<ReasonCode>, String> {
    match raw.read_within(timeout).await {
        Read::Packet(Packet::SubAck(ack)) => Ok(ack.reasons),
        other => Err(format!("expected SUBACK, got {other:?}")),
    }
}

/// What a refused filter gets: 0x8F Topic Filter invalid (5.0), 0x80 Failure (3.1.1).
fn filter_refused(v: ProtocolVersion) -> ReasonCode {
    match v {
        ProtocolVersion::V5 => ReasonCode::TopicFilterInvalid,
        ProtocolVersion::V311 => ReasonCode::UnspecifiedError,
    }
}

/// A 5.0 connection closed with DISCONNECT `reason` last; a 3.1.1 one closed silently.
fn closed_with(
    v: ProtocolVersion,
    outcome: &Result<Vec<Packet>, Vec<Packet>>,
    reason: ReasonCode,
) -> Result<(), String> {
    match (outcome, v) {
        (Err(packets), _) => Err(format!("still open (received {} packets)", packets.len())),
        (Ok(packets), ProtocolVersion::V5) => match disconnect_in(packets).map(|d| d.reason) {
            Some(r) if r == reason => Ok(()),
            other => Err(format!(
                "closed with DISCONNECT {other:?}, expected {reason:?}"
            )),
        },
        (Ok(_), ProtocolVersion::V311) => Ok(()),
    }
}

/// `GET path` as JSON, expecting 200.
async fn get_json(bridge: &WatchedBridge, path: &str) -> Value {
    let (status, body) = http(bridge.http_authority(), "GET", path, DEFAULT_TIMEOUT).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Polls `/api/v1/stats` until `field` reaches `at_least` (or `timeout` passes); the last value.
async fn wait_stat(bridge: &WatchedBridge, field: &str, at_least: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = get_json(bridge, "/api/v1/stats").await[field]
            .as_u64()
            .unwrap_or(0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes `count` retained QoS 0 messages `{prefix}/{i}` through one raw connection as
/// fast as the socket takes them, then waits for a PINGRESP (all read by the bridge).
async fn flood_retained(bridge: &WatchedBridge, prefix: &str, count: usize) {
    let mut raw = raw_connected(
        &bridge.endpoint(TCP),
        V311,
        &format!("{prefix}-filler"),
        0,
        false,
    )
    .await;
    let mut buf = Vec::with_capacity(256 * 1024);
    for i in 0..count {
        buf.extend(encode(
            &publish_packet(&format!("{prefix}/{i}"), "r", QoS::AtMostOnce, true),
            V311,
        ));
        if buf.len() > 200 * 1024 {
            raw.send_bytes(&buf).await;
            buf.clear();
        }
    }
    buf.extend(encode(&Packet::PingReq, V311));
    raw.send_bytes(&buf).await;
    match raw.read_within(Duration::from_secs(60)).await {
        Read::Packet(Packet::PingResp) => {}
        other => panic!("{prefix}: expected PINGRESP after the retained flood, got {other:?}"),
    }
    raw.send(disconnect_packet()).await;
}

// ----- 1. deep topics ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_topics_of_8000_levels_are_refused_and_crash_nothing_even_after_a_restart() {
    // The issue's finding 1: one SUBSCRIBE of 8 000 levels, then a PUBLISH, UNSUBSCRIBE,
    // DISCONNECT or DELETE overflowed the engine's stack; with --data the filter was stored
    // and the bridge crashed again after a restart.
    let dir = TempDir::new("hostile-deep");
    let mut attack = Attack::start(Launch::new("").data(dir.path()), "deep").await;
    let bridge = &mut attack.bridge;
    let deep = levels(8000);
    let one = std::slice::from_ref(&deep);
    let cases = [(TCP, V311), (TCP, V5), (WS, V5)];
    let mut answers = Vec::new();

    for (t, v) in cases {
        let case = format!("{t}, MQTT {}", version_name(v));
        let id = format!("deep-{}-{}", t, version_name(v));
        // A persistent session: with --data whatever it subscribes to is stored.
        let mut raw = raw_connected(&bridge.endpoint(t), v, &id, 0, true).await;
        let suback = match exchange(&mut raw, v, subscribe_packet(1, one, QoS::AtLeastOnce)).await {
            Read::Packet(Packet::SubAck(ack)) => Ok(ack.reasons),
            other => Err(format!("expected SUBACK, got {other:?}")),
        };
        bridge.assert_alive(&format!("after a SUBSCRIBE of 8 000 levels ({case})"));
        // Each of these walked the filter recursively.
        exchange(&mut raw, v, unsubscribe_packet(2, one)).await;
        bridge.assert_alive(&format!("after an UNSUBSCRIBE of 8 000 levels ({case})"));
        exchange(&mut raw, v, subscribe_packet(3, one, QoS::AtLeastOnce)).await;
        bridge.assert_alive(&format!(
            "after a second SUBSCRIBE of 8 000 levels ({case})"
        ));
        exchange(&mut raw, v, disconnect_packet()).await;
        bridge.assert_alive(&format!("after a DISCONNECT ({case})"));

        // A PUBLISH to a topic of 8 000 levels.
        let mut publisher =
            raw_connected(&bridge.endpoint(t), v, &format!("{id}-pub"), 0, false).await;
        publisher
            .send(publish_packet(&deep, "x", QoS::AtLeastOnce, false))
            .await;
        let published = closed_within(&mut publisher, Duration::from_secs(3)).await;
        bridge.assert_alive(&format!("after a PUBLISH to 8 000 levels ({case})"));
        answers.push((case, v, id, suback, published));
    }

    // DELETE through the API (the TCP sessions; the WebSocket one is left for the restart).
    for (case, _, id, _, _) in &answers[..2] {
        let (status, body) = http(
            bridge.http_authority(),
            "DELETE",
            &format!("/api/v1/sessions/{id}"),
            DEFAULT_TIMEOUT,
        )
        .await;
        bridge.assert_alive(&format!("after DELETE of the session ({case})"));
        assert!(
            status == 200 || status == 204,
            "DELETE /api/v1/sessions/{id}: {status} {body}"
        );
    }

    let mut checks = Checks::default();
    let mut bridge = attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;

    // The bridge starts again on its data and serves.
    if let Err(e) = bridge.restart() {
        panic!("after the attack, the bridge does not start again on its data: {e}");
    }
    std::thread::sleep(Duration::from_millis(500));
    bridge.assert_alive("after the restart");
    let after = Bystander::start(&bridge.endpoint(TCP), "deep-restarted").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    after.finish().await.assert_bounded(LATENCY_BOUND);
    bridge.assert_alive("after the restart and a round trip");

    for (case, v, _, suback, published) in answers {
        // 5.0: 0x8F Topic Filter invalid; 3.1.1: 0x80 Failure.
        checks.check(suback.as_ref() == Ok(&vec![filter_refused(v)]), || {
            format!(
                "{case}: SUBACK to a filter of 8 000 levels: {suback:?}, expected {:?}",
                filter_refused(v)
            )
        });
        // 5.0: DISCONNECT 0x90 Topic Name invalid; 3.1.1: the connection is closed.
        if let Err(e) = closed_with(v, &published, ReasonCode::TopicNameInvalid) {
            checks.push(format!("{case}: PUBLISH to a topic of 8 000 levels: {e}"));
        }
    }
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_limits_128_levels_work_end_to_end_and_129_levels_or_5000_bytes_are_refused()
{
    // Defaults: max_topic_levels = 128, max_topic_length = 4096 bytes.
    let attack = Attack::start(Launch::new(""), "limits").await;
    let bridge = &attack.bridge;
    let mut checks = Checks::default();
    let at_limit = levels(128);
    for v in [V311, V5] {
        let vn = version_name(v);
        // Everything works at 128 levels: subscribe, publish and receive, unsubscribe,
        // discard the session through the API.
        let sub_id = format!("limit-sub-{vn}");
        let mut sub = bridge_client(bridge, persistent(v, &sub_id)).await;
        let ack = sub.subscribe(&at_limit, QoS::AtLeastOnce).await;
        assert_eq!(
            ack.reasons,
            vec![ReasonCode::GrantedQoS1],
            "{vn}: 128 levels"
        );
        let mut publisher = bridge_client(bridge, persistent(v, &format!("limit-pub-{vn}"))).await;
        let reason = publisher
            .publish(&at_limit, "deep enough", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(reason, ReasonCode::Success, "{vn}: PUBLISH to 128 levels");
        assert_eq!(&sub.recv().await.payload[..], b"deep enough");
        let unack = sub.unsubscribe(&at_limit).await;
        assert!(
            !unack.reasons.iter().any(|r| r.is_error()),
            "{vn}: {unack:?}"
        );
        sub.subscribe(&at_limit, QoS::AtLeastOnce).await;
        sub.disconnect().await;
        let (status, body) = http(
            bridge.http_authority(),
            "DELETE",
            &format!("/api/v1/sessions/{sub_id}"),
            DEFAULT_TIMEOUT,
        )
        .await;
        assert!(
            status == 200 || status == 204,
            "{vn}: DELETE: {status} {body}"
        );
        publisher.disconnect().await;

        // One level more, or 5 000 bytes, is refused; 4 096 bytes is not.
        let mut raw = raw_connected(
            &bridge.endpoint(TCP),
            v,
            &format!("limit-raw-{vn}"),
            0,
            false,
        )
        .await;
        let filters = vec![levels(129), "x".repeat(5000), "y".repeat(4096)];
        raw.send(subscribe_packet(1, &filters, QoS::AtMostOnce))
            .await;
        let got = suback_reasons(&mut raw, DEFAULT_TIMEOUT).await;
        let want = vec![filter_refused(v), filter_refused(v), ReasonCode::Success];
        checks.check(got.as_ref() == Ok(&want), || {
            format!(
                "{vn}: SUBACK to [129 levels, 5000 bytes, 4096 bytes]: {got:?}, expected {want:?}"
            )
        });
        raw.send(publish_packet(&levels(129), "x", QoS::AtMostOnce, false))
            .await;
        let outcome = closed_within(&mut raw, Duration::from_secs(3)).await;
        if let Err(e) = closed_with(v, &outcome, ReasonCode::TopicNameInvalid) {
            checks.push(format!("{vn}: PUBLISH to 129 levels: {e}"));
        }
    }
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

async fn bridge_client(bridge: &WatchedBridge, opts: ClientOptions) -> TestClient {
    let id = opts.client_id.clone();
    match TestClient::connect(&bridge.endpoint(TCP), opts).await {
        Ok((c, _)) => c,
        Err(e) => panic!("`{id}` could not connect: {e}"),
    }
}

// ----- 2. WebSocket ping flood ---------------------------------------------------------------

/// Opens a WebSocket to `/mqtt` by hand (so nothing reads what the server sends).
async fn ws_handshake(authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(authority).await.unwrap();
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEFAULT_TIMEOUT, s.read(&mut byte))
            .await
            .expect("no WebSocket handshake answer")
            .unwrap();
        assert_eq!(n, 1, "closed during the WebSocket handshake");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Writes masked 125-byte ping frames as fast as the socket takes them until `stop` or
/// `budget` bytes; returns the bytes written and whether the server closed the connection.
async fn ping_flood(mut s: TcpStream, stop: Arc<AtomicBool>, budget: u64) -> (u64, bool) {
    let mut frame = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    frame.extend(std::iter::repeat_n(b'p', 125));
    let chunk = frame.repeat(500);
    let (mut pos, mut sent) = (0, 0u64);
    while !stop.load(Ordering::Relaxed) && sent < budget {
        // `write` (not `write_all`) so a timeout never leaves half a frame behind.
        match tokio::time::timeout(Duration::from_millis(100), s.write(&chunk[pos..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (sent, true),
            Ok(Ok(n)) => {
                sent += n as u64;
                pos = (pos + n) % chunk.len();
            }
            Err(_) => {}
        }
    }
    (sent, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pings_sent_without_reading_the_pongs_keep_the_bridge_s_memory_bounded() {
    // The issue's finding 2: two such connections took RSS from 7 MB to 5.5 GB in 12 s.
    // Each flooder sends 64 MiB of pings (or floods for 10 s if the bridge stops reading
    // them): unbounded pongs would then hold more than the 64 MiB bound, whatever the
    // speed of the machine.
    let mut attack = Attack::start(Launch::new(""), "pingflood").await;
    let rss0 = attack.rebase_rss();
    let bridge = &attack.bridge;
    let limit = rss0 + RSS_GROWTH_BOUND_MB * 1024;
    let stop = Arc::new(AtomicBool::new(false));
    let budget = scale("HOSTILE_FLOOD_MB", 64) as u64 * MB;
    let mut flooders = Vec::new();
    for _ in 0..2 {
        let s = ws_handshake(bridge.http_authority()).await;
        flooders.push(tokio::spawn(ping_flood(s, Arc::clone(&stop), budget)));
    }
    let flood = Duration::from_secs(scale("HOSTILE_FLOOD_SECS", 10) as u64);
    let started = Instant::now();
    let mut peak = rss0;
    while started.elapsed() < flood && !flooders.iter().all(|f| f.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(rss) = e2e::hostile::rss_kb_of(bridge.pid()) else {
            break;
        };
        peak = peak.max(rss);
        if peak > limit {
            // Failed already; stop before the machine runs out of memory.
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut report = Vec::new();
    for f in flooders {
        report.push(f.await.unwrap());
    }
    let mut checks = Checks::default();
    checks.check(peak <= limit, || {
        format!(
            "RSS went from {rss0} KiB to {peak} KiB within {:?} of the flood (bound +{RSS_GROWTH_BOUND_MB} MiB); \
             flooders (bytes sent, closed by the server): {report:?}",
            started.elapsed()
        )
    });
    attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
    eprintln!("ping flood: RSS {rss0} -> peak {peak} KiB; flooders {report:?}");
    checks.finish();
}

// ----- 3. idle HTTP --------------------------------------------------------------------------

/// HTTP timeouts of 2 s and a cap of 64 HTTP connections.
const SERVER_LIMITS: &str = "[server]\nmax_http_connections = 64\n\
                             http_header_timeout_secs = 2\nhttp_idle_timeout_secs = 2\n";

/// Reads (and drops) whatever comes until the server closes: the time that took, or `Err`
/// with what was read if it is still open after `timeout`.
async fn server_closes_within(
    s: &mut TcpStream,
    timeout: Duration,
) -> Result<(Duration, Vec<u8>), String> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok((started.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Err(format!(
                    "still open after {timeout:?} (received {:?})",
                    String::from_utf8_lossy(&got)
                ))
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_sent_and_idle_keep_alive_http_connections_are_closed_within_the_configured_timeouts(
) {
    // The issue's finding 3: such connections stayed open for 330 s and more.
    let attack = Attack::start(Launch::new(SERVER_LIMITS), "idlehttp").await;
    let authority = attack.bridge.http_authority().to_owned();
    // 3 × the 2 s timeouts.
    let within = Duration::from_secs(6);
    let silent = async {
        let mut s = TcpStream::connect(&authority).await.unwrap();
        server_closes_within(&mut s, within).await
    };
    let half_header = async {
        let mut s = TcpStream::connect(&authority).await.unwrap();
        s.write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: {authority}\r\n").as_bytes())
            .await
            .unwrap();
        server_closes_within(&mut s, within).await
    };
    let idle_keep_alive = async {
        let mut s = TcpStream::connect(&authority).await.unwrap();
        s.write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let r = server_closes_within(&mut s, within).await;
        match r {
            Ok((_, got)) if !got.starts_with(b"HTTP/1.1 200") => Err(format!(
                "closed without answering: {:?}",
                String::from_utf8_lossy(&got)
            )),
            other => other,
        }
    };
    let (a, b, c) = tokio::join!(silent, half_header, idle_keep_alive);
    let mut checks = Checks::default();
    for (what, r) in [
        ("silent socket", a),
        ("half a request header", b),
        ("idle keep-alive after one request", c),
    ] {
        if let Err(e) = r {
            checks.push(format!("{what}: {e}"));
        }
    }
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

/// Opens `n` TCP sockets to `authority` and keeps them, sending nothing.
async fn idle_sockets(authority: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(authority)).await {
            Ok(Ok(s)) => out.push(s),
            // A full backlog is the attack succeeding; keep what we have.
            _ => break,
        }
    }
    out
}

/// A new MQTT over TCP client connects and completes a QoS 1 round trip.
async fn mqtt_still_serves(bridge: &WatchedBridge, id: &str) -> Result<(), String> {
    let (mut c, _) = TestClient::connect(&bridge.endpoint(TCP), e2e::clean(V5, id))
        .await
        .map_err(|e| format!("a new MQTT over TCP client could not connect: {e}"))?;
    c.subscribe(&format!("fresh/{id}"), QoS::AtLeastOnce).await;
    c.publish(&format!("fresh/{id}"), "hello", QoS::AtLeastOnce, false)
        .await;
    match c.try_recv_within(DEFAULT_TIMEOUT).await {
        Some(_) => {
            c.disconnect().await;
            Ok(())
        }
        None => Err("the new client's message did not come back".to_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_http_sockets_beyond_the_http_cap_leave_mqtt_over_tcp_working() {
    let attack = Attack::start(Launch::new(SERVER_LIMITS), "httpcap").await;
    let held = idle_sockets(attack.bridge.http_authority(), 300).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut checks = Checks::default();
    if let Err(e) = mqtt_still_serves(&attack.bridge, "after-http-flood").await {
        checks.push(format!("with {} idle HTTP sockets: {e}", held.len()));
    }
    attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
    drop(held);
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_256_descriptor_limit_400_http_sockets_do_not_lock_mqtt_over_tcp_out() {
    // The issue: 1 100 idle sockets under `ulimit -n 1024` locked every MQTT client out for
    // over a minute. Default configuration: the bridge must keep descriptors for MQTT by
    // itself (an HTTP cap below the descriptor limit, or a reserve).
    let attack = Attack::start(Launch::new("").nofile(256), "lowfd").await;
    let held = idle_sockets(attack.bridge.http_authority(), 400).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut checks = Checks::default();
    if let Err(e) = mqtt_still_serves(&attack.bridge, "after-fd-flood").await {
        checks.push(format!(
            "with {} idle HTTP sockets under nofile 256: {e}",
            held.len()
        ));
    }
    let bridge = attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
    drop(held);
    let too_many = bridge
        .log_since_listening()
        .iter()
        .filter(|l| l.contains("Too many open files"))
        .count();
    checks.check(too_many <= 10, || {
        format!("{too_many} \"Too many open files\" log lines (rate-limited logs expected)")
    });
    checks.finish();
}

// ----- 4. packet deadlines and keep-alive ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_packet_held_with_keep_alive_0_is_closed_after_the_packet_timeout() {
    // The issue's finding 4: 150 connections holding half a 1 MB PUBLISH: +145 MB, never
    // closed. packet_timeout_secs = 2: closed within 3 × that.
    let attack = Attack::start(
        Launch::new("[broker]\npacket_timeout_secs = 2\n"),
        "halfpacket",
    )
    .await;
    let cases = [(TCP, V311), (TCP, V5), (WS, V5)];
    let runs = cases.into_iter().map(|(t, v)| {
        let ep = attack.bridge.endpoint(t);
        async move {
            let case = format!("{t}, MQTT {}", version_name(v));
            let mut raw =
                raw_connected(&ep, v, &format!("half-{t}-{}", version_name(v)), 0, false).await;
            let whole = encode(
                &publish_packet("half", vec![0u8; 1_000_000], QoS::AtMostOnce, false),
                v,
            );
            raw.send_bytes(&whole[..whole.len() / 2]).await;
            match closed_within(&mut raw, Duration::from_secs(6)).await {
                Ok(_) => Ok(()),
                Err(_) => Err(format!(
                    "{case}: half a 1 MB PUBLISH held with keep-alive 0 is still open after 6 s"
                )),
            }
        }
    });
    let results = join_all(runs).await;
    let mut checks = Checks::default();
    checks.extend(results.into_iter().filter_map(Result::err));
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_counts_whole_packets_so_trickles_and_receive_only_clients_are_disconnected()
{
    // [MQTT-3.1.2-24]: no Control Packet from the client within 1.5 × keep-alive: the
    // server closes the connection. A byte trickle sends no whole packet; a client that
    // only receives sends none. Default packet_timeout_secs (30), so the keep-alive alone
    // must close them. Keep-alive 2 s.
    let attack = Attack::start(Launch::new(""), "keepalive").await;
    let ep = attack.bridge.endpoint(TCP);

    // One byte per second of a PUBLISH, forever: closed within 3 × 1.5 × 2 s.
    let trickle = |v: ProtocolVersion| {
        let ep = ep.clone();
        async move {
            let vn = version_name(v);
            let mut raw = raw_connected(&ep, v, &format!("trickle-{vn}"), 2, false).await;
            let bytes = encode(
                &publish_packet("trickle", vec![b't'; 1000], QoS::AtMostOnce, false),
                v,
            );
            let started = Instant::now();
            for b in &bytes {
                if started.elapsed() > Duration::from_secs(9) {
                    break;
                }
                if !raw.try_send_bytes(&[*b]).await {
                    return Ok(());
                }
                if let Read::Closed = raw.read_within(Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
            Err(format!(
                "MQTT {vn}: a 1 byte/s trickle with keep-alive 2 is still open after {:?}",
                started.elapsed()
            ))
        }
    };
    // A subscriber that never sends, while messages come every 0.5 s: closed within
    // 2 × 1.5 × 2 s, 5.0 with DISCONNECT 0x8D Keep Alive timeout.
    let receive_only = |v: ProtocolVersion| {
        let ep = ep.clone();
        async move {
            let vn = version_name(v);
            let t = format!("ka/{vn}");
            let mut raw = raw_connected(&ep, v, &format!("receive-only-{vn}"), 2, false).await;
            raw.send(subscribe_packet(
                1,
                std::slice::from_ref(&t),
                QoS::AtMostOnce,
            ))
            .await;
            suback_reasons(&mut raw, DEFAULT_TIMEOUT).await.unwrap();
            let mut publisher = connect_or_panic(&ep, &format!("ka-pub-{vn}"), V5).await;
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            let t2 = t.clone();
            let feeder = tokio::spawn(async move {
                while !stop2.load(Ordering::Relaxed) {
                    publisher.publish(&t2, "tick", QoS::AtMostOnce, false).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
            let outcome = closed_within(&mut raw, Duration::from_millis(6500)).await;
            stop.store(true, Ordering::Relaxed);
            feeder.await.unwrap();
            closed_with(v, &outcome, ReasonCode::KeepAliveTimeout)
                .map_err(|e| format!("MQTT {vn}: a receive-only subscriber with keep-alive 2: {e}"))
        }
    };
    let (t3, t5, r3, r5) = tokio::join!(
        trickle(V311),
        trickle(V5),
        receive_only(V311),
        receive_only(V5)
    );
    let mut checks = Checks::default();
    checks.extend([t3, t5, r3, r5].into_iter().filter_map(Result::err));
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

// ----- 5. engine stalls ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscribe_of_1000_filters_against_many_retained_messages_does_not_stall_other_clients()
{
    // The issue's finding 5: with 100 000 retained messages, one SUBSCRIBE of 1 000 filters
    // matching none of them froze every client for 37 s (each filter scanned them all).
    let n = scale("HOSTILE_RETAINED", 20_000);
    // Without `$SYS`, whose retained messages the stats would count too.
    let bridge = Launch::new(&format!(
        "[broker]\nmax_retained_messages = {}\nsys_interval = 0\n",
        n * 2
    ))
    .start();
    flood_retained(&bridge, "stored", n).await;
    let stored = wait_stat(&bridge, "retained", n as u64, Duration::from_secs(60)).await;
    assert_eq!(
        stored, n as u64,
        "retained messages stored before the attack"
    );
    let attack = Attack::on(bridge, "retainedstall").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut raw = raw_connected(&attack.bridge.endpoint(TCP), V5, "many-filters", 0, false).await;
    let filters: Vec<String> = (0..1000).map(|i| format!("stored/none{i}/#")).collect();
    let started = Instant::now();
    raw.send(subscribe_packet(1, &filters, QoS::AtMostOnce))
        .await;
    let reasons = suback_reasons(&mut raw, Duration::from_secs(120)).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut checks = Checks::default();
    checks.check(
        reasons
            .as_ref()
            .is_ok_and(|r| r.len() == 1000 && !r.iter().any(|c| c.is_error())),
        || format!("SUBACK: {reasons:?}"),
    );
    // The contract: the bystander's QoS 1 round trip stays under 500 ms.
    attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, Duration::from_millis(500))
        .await;
    eprintln!("SUBSCRIBE of 1 000 filters against {n} retained: SUBACK after {took:?}");
    checks.finish();
}

/// Sequential QoS 1 round trips (publish, PUBACK, received) per second over `window`.
async fn round_trip_rate(ep: &Endpoint, label: &str, window: Duration) -> f64 {
    let t = format!("rate/{label}");
    let mut sub = connect_or_panic(ep, &format!("{label}-sub"), V5).await;
    sub.subscribe(&t, QoS::AtLeastOnce).await;
    let mut publisher = connect_or_panic(ep, &format!("{label}-pub"), V5).await;
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < window {
        publisher.publish(&t, "r", QoS::AtLeastOnce, false).await;
        sub.recv().await;
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    sub.disconnect().await;
    publisher.disconnect().await;
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_shared_subscription_groups_do_not_collapse_everyone_s_publish_rate() {
    // The issue's finding 5: 100 000 `$share/gN/...` groups cut QoS 1 round trips for
    // everyone from 10 477/s to 54/s (every PUBLISH scanned every group).
    let groups = scale("HOSTILE_GROUPS", 20_000);
    let sessions = 4;
    let bridge = Launch::new(&format!(
        "[broker]\nmax_subscriptions_per_session = {}\n",
        groups / sessions + 1000
    ))
    .start();
    let ep = bridge.endpoint(TCP);
    let window = Duration::from_secs(2);
    let before = round_trip_rate(&ep, "rate-before", window).await;

    let attack = Attack::on(bridge, "sharedstall").await;
    let mut holders = Vec::new();
    for s in 0..sessions {
        let mut raw = raw_connected(&ep, V5, &format!("groups-{s}"), 0, false).await;
        let mine: Vec<usize> = (0..groups).filter(|g| g % sessions == s).collect();
        for (k, chunk) in mine.chunks(1000).enumerate() {
            let filters: Vec<String> = chunk.iter().map(|g| format!("$share/g{g}/x/{g}")).collect();
            raw.send(subscribe_packet(k as u16 + 1, &filters, QoS::AtMostOnce))
                .await;
            let reasons = suback_reasons(&mut raw, Duration::from_secs(60))
                .await
                .unwrap();
            assert!(
                !reasons.iter().any(|r| r.is_error()),
                "shared subscriptions refused: {:?}",
                reasons.iter().find(|r| r.is_error())
            );
        }
        holders.push(raw);
    }
    let after = round_trip_rate(&ep, "rate-after", window).await;
    let mut checks = Checks::default();
    checks.check(after >= 0.5 * before, || {
        format!("QoS 1 round trips: {before:.0}/s before {groups} shared groups, {after:.0}/s after (bound: at least half)")
    });
    attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
    eprintln!("{groups} shared groups: {before:.0}/s before, {after:.0}/s after");
    drop(holders);
    checks.finish();
}

// ----- 6. memory and disk bounds -------------------------------------------------------------

/// 60 retained messages of 1 MB under `max_retained_bytes` = 20 MiB.
async fn retained_bytes_are_capped(data: Option<&TempDir>, rss_bound_mb: u64) {
    let launch = Launch::new("[broker]\nmax_retained_bytes = 20971520\n");
    let launch = match data {
        Some(dir) => launch.data(dir.path()),
        None => launch,
    };
    let mut attack = Attack::start(launch, "retainedbytes").await;
    let mut sub_opts = e2e::clean(V5, "big-sub");
    sub_opts.max_packet_size = 2 * 1024 * 1024;
    let mut sub = bridge_client(&attack.bridge, sub_opts).await;
    sub.subscribe("big/#", QoS::AtLeastOnce).await;
    let mut publisher = bridge_client(&attack.bridge, e2e::clean(V5, "big-pub")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = attack.rebase_rss();
    let bridge = &attack.bridge;
    let mut routed = 0;
    for i in 0..60u8 {
        let reason = publisher
            .publish(
                &format!("big/{i}"),
                vec![i; 1_000_000],
                QoS::AtLeastOnce,
                true,
            )
            .await;
        assert_eq!(reason, ReasonCode::Success, "retained PUBLISH {i}");
        if sub.recv_within(Duration::from_secs(10)).await.payload.len() == 1_000_000 {
            routed += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = bridge.rss_kb();
    let total = get_json(bridge, "/api/v1/retained?prefix=big/&limit=1").await["total"]
        .as_u64()
        .unwrap();
    let mut checks = Checks::default();
    checks.check(routed == 60, || format!("{routed} of 60 messages routed"));
    // 20 × 1 000 000 bytes fit in 20 MiB, 21 do not.
    checks.check((18..=20).contains(&total), || {
        format!("{total} of 60 retained messages of 1 MB kept under max_retained_bytes = 20 MiB (expected ~20)")
    });
    checks.check(rss1.saturating_sub(rss0) < rss_bound_mb * 1024, || {
        format!(
            "RSS grew by {} KiB storing retained messages (bound {rss_bound_mb} MiB)",
            rss1.saturating_sub(rss0)
        )
    });
    sub.disconnect().await;
    publisher.disconnect().await;
    attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
    eprintln!(
        "retained bytes (data: {}): RSS {rss0} -> {rss1} KiB, {total} retained",
        data.is_some()
    );
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_capped_by_bytes_and_still_routed_beyond_the_cap() {
    // The issue's finding 6: retained messages were capped by count only. In memory the
    // 20 MiB kept are in RAM: bound 20 MiB + 32 MiB for the messages in transit and the
    // allocator's slack (keeping all 60 would be 60 MB and more).
    retained_bytes_are_capped(None, 52).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_retained_payloads_live_on_disk_not_in_ram() {
    // The issue: 300 × 1 MB retained → +318 MB RSS even with SQLite. With the payloads on
    // disk, ~20 MB retained must cost well under 20 MB of RSS: 16 MiB covers SQLite's page
    // cache (2 MiB by default), the one 1 MB message being decoded and sent, and allocator
    // slack; anything near 20 MiB means the payloads stayed in RAM.
    let dir = TempDir::new("hostile-retained");
    retained_bytes_are_capped(Some(&dir), 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_for_200_offline_sessions_is_stored_once_not_200_times() {
    // The issue: one 1 MB QoS 1 PUBLISH to 200 offline sessions took the store from 1.9 MB
    // to 387 MB.
    let dir = TempDir::new("hostile-fanout");
    let attack = Attack::start(Launch::new("").data(dir.path()), "fanout").await;
    let bridge = &attack.bridge;
    let ep = bridge.endpoint(TCP);
    let ids: Vec<String> = (0..200).map(|i| format!("fan-{i}")).collect();
    for batch in ids.chunks(20) {
        join_all(batch.iter().map(|id| {
            let ep = ep.clone();
            async move {
                let (mut c, _) = TestClient::connect(&ep, persistent(V5, id)).await.unwrap();
                c.subscribe("fan/#", QoS::AtLeastOnce).await;
                c.drop_connection();
            }
        }))
        .await;
    }
    wait_stat(bridge, "sessions_offline", 200, Duration::from_secs(10)).await;
    let size0 = dir_size(dir.path());
    let mut publisher = bridge_client(bridge, e2e::clean(V5, "fan-pub")).await;
    let started = Instant::now();
    let token = publisher
        .start_publish(
            "fan/x",
            vec![7u8; 1_000_000],
            QoS::AtLeastOnce,
            false,
            Properties::default(),
        )
        .await;
    // Generous: the point is the size on disk, measured once the message is stored.
    let reason = publisher
        .published_within(token, Duration::from_secs(120))
        .await;
    assert_eq!(reason, Some(ReasonCode::Success), "the 1 MB PUBLISH");
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let size1 = dir_size(dir.path());
    let mut checks = Checks::default();
    checks.check(size1.saturating_sub(size0) < 20 * MB, || {
        format!("the data directory grew from {size0} to {size1} bytes for one 1 MB message to 200 offline sessions (bound +20 MiB)")
    });
    // The message is still delivered to each.
    let mut opts = persistent(V5, "fan-0");
    opts.max_packet_size = 2 * 1024 * 1024;
    let mut back = bridge_client(bridge, opts).await;
    let p = back.recv_within(Duration::from_secs(10)).await;
    checks.check(p.payload.len() == 1_000_000, || {
        format!("fan-0 got {} bytes back", p.payload.len())
    });
    back.disconnect().await;
    attack
        .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
    eprintln!(
        "fan-out to 200 offline sessions: store {size0} -> {size1} bytes, PUBACK after {took:?}"
    );
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_sessions_a_new_session_is_refused_with_quota_exceeded_and_an_existing_one_resumes()
{
    // max_sessions = 50: the bystander's 2 sessions and 48 persistent ones fill it.
    let attack = Attack::start(Launch::new("[broker]\nmax_sessions = 50\n"), "maxsessions").await;
    let ep = attack.bridge.endpoint(TCP);
    for i in 0..48 {
        let v = if i % 2 == 0 { V5 } else { V311 };
        let (c, _) = TestClient::connect(&ep, persistent(v, &format!("held-{i}")))
            .await
            .unwrap_or_else(|e| panic!("session {i} of 48 refused: {e}"));
        c.disconnect().await;
    }
    let mut checks = Checks::default();
    for (v, want) in [
        (V5, ReasonCode::QuotaExceeded),
        (V311, ReasonCode::ServerUnavailable),
    ] {
        let vn = version_name(v);
        match TestClient::connect(&ep, persistent(v, &format!("one-too-many-{vn}"))).await {
            Err(e) if e.refused_reason() == Some(want) => {}
            Err(e) => checks.push(format!(
                "MQTT {vn}: the 51st session: {e}, expected CONNACK {want:?}"
            )),
            Ok(_) => checks.push(format!(
                "MQTT {vn}: the 51st session was accepted (max_sessions = 50)"
            )),
        }
    }
    match TestClient::connect(&ep, persistent(V5, "held-0")).await {
        Ok((c, ack)) => {
            checks.check(ack.session_present, || {
                "held-0 resumed without its session".to_owned()
            });
            c.disconnect().await;
        }
        Err(e) => checks.push(format!(
            "an existing session could not resume at the limit: {e}"
        )),
    }
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expiry_of_0xffffffff_is_capped_to_the_configured_maximum() {
    // The issue: 5 000 anonymous sessions with expiry 0xFFFFFFFF were all accepted, never
    // to expire. The cap (default 7 days = 604 800 s) is told in CONNACK [MQTT-3.2.2-?]:
    // 5.0 CONNACK Session Expiry Interval.
    let mut checks = Checks::default();
    for (config, cap) in [
        ("", 604_800u32),
        ("[broker]\nmax_session_expiry = 3600\n", 3600),
    ] {
        let attack = Attack::start(Launch::new(config), "expiry").await;
        let bridge = &attack.bridge;
        let mut opts = persistent(V5, "forever");
        opts.session_expiry_interval = Some(u32::MAX);
        let (c, ack) = TestClient::connect(&bridge.endpoint(TCP), opts)
            .await
            .unwrap();
        checks.check(ack.properties.session_expiry_interval == Some(cap), || {
            format!(
                "cap {cap}: CONNACK Session Expiry Interval {:?}, expected Some({cap})",
                ack.properties.session_expiry_interval
            )
        });
        c.disconnect().await;
        let (c, _) = TestClient::connect(&bridge.endpoint(TCP), persistent(V311, "forever-311"))
            .await
            .unwrap();
        c.disconnect().await;
        for id in ["forever", "forever-311"] {
            let s = get_json(bridge, &format!("/api/v1/sessions/{id}")).await;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            let expected = now_ms + u64::from(cap) * 1000;
            let ok = s["expires_at_ms"]
                .as_u64()
                .is_some_and(|at| at.abs_diff(expected) < 60_000);
            checks.check(ok, || {
                format!(
                    "cap {cap}: session `{id}` expires_at_ms = {}, expected about now + {cap} s",
                    s["expires_at_ms"]
                )
            });
        }
        attack
            .end(&mut checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
            .await;
    }
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_beyond_max_subscriptions_per_session_is_refused_for_the_filters_over_the_limit(
) {
    // The issue: 100 000 filters in one session: +49 MB and a 12.7 MB session JSON.
    let attack = Attack::start(
        Launch::new("[broker]\nmax_subscriptions_per_session = 10\n"),
        "maxsubs",
    )
    .await;
    let mut checks = Checks::default();
    for (v, over) in [
        (V5, ReasonCode::QuotaExceeded),
        (V311, ReasonCode::UnspecifiedError),
    ] {
        let vn = version_name(v);
        let mut raw = raw_connected(
            &attack.bridge.endpoint(TCP),
            v,
            &format!("subs-{vn}"),
            0,
            false,
        )
        .await;
        let filters: Vec<String> = (0..11).map(|i| format!("lim/{i}")).collect();
        raw.send(subscribe_packet(1, &filters, QoS::AtLeastOnce))
            .await;
        let got = suback_reasons(&mut raw, DEFAULT_TIMEOUT).await;
        let mut want = vec![ReasonCode::GrantedQoS1; 10];
        want.push(over);
        checks.check(got.as_ref() == Ok(&want), || {
            format!(
                "MQTT {vn}: SUBACK to 11 filters with a limit of 10: {got:?}, expected {want:?}"
            )
        });
        // At the limit, subscribing again to a filter held replaces it [MQTT-3.8.4-3].
        raw.send(subscribe_packet(2, &filters[..1], QoS::AtMostOnce))
            .await;
        let again = suback_reasons(&mut raw, DEFAULT_TIMEOUT).await;
        checks.check(again.as_ref() == Ok(&vec![ReasonCode::Success]), || {
            format!("MQTT {vn}: re-SUBSCRIBE to a held filter at the limit: {again:?}")
        });
    }
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_refused_retained_messages_log_only_a_handful_of_warnings() {
    // The issue: each refused retained message logged one WARN line (100 000 lines, 11.5 MB).
    let attack = Attack::start(
        // Without `$SYS`, whose retained messages the stats would count too.
        Launch::new("[broker]\nmax_retained_messages = 10\nsys_interval = 0\n"),
        "quietlogs",
    )
    .await;
    let bridge = &attack.bridge;
    flood_retained(bridge, "refused", 2010).await;
    wait_stat(bridge, "msgs_in", 2010, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let warnings = bridge
        .log_since_listening()
        .iter()
        .filter(|l| l.contains("WARN"))
        .count();
    let retained = get_json(bridge, "/api/v1/stats").await["retained"]
        .as_u64()
        .unwrap();
    let mut checks = Checks::default();
    checks.check(retained == 10, || {
        format!("{retained} retained, expected 10")
    });
    checks.check(warnings <= 10, || {
        format!("{warnings} WARN lines for 2 000 refused retained messages (bound 10)")
    });
    attack
        .finish(checks, RSS_GROWTH_BOUND_MB, LATENCY_BOUND)
        .await;
}

// ----- 7. memory per connection --------------------------------------------------------------

/// `n` idle connections (CONNECT keep-alive 0, CONNACK read), opened 50 at a time.
async fn idle_connections(ep: &Endpoint, prefix: &str, n: usize) -> Vec<RawClient> {
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(50) {
        let batch = join_all((start..n.min(start + 50)).map(|i| {
            let ep = ep.clone();
            let id = format!("{prefix}-{i}");
            async move { raw_connected(&ep, V311, &id, 0, false).await }
        }))
        .await;
        out.extend(batch);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_a_few_kilobytes_of_rss() {
    // The issue's finding 7: an idle WebSocket connection cost 73-85 KB (mosquitto: well
    // under 10 KB). Bounds for the release build: 4 KiB per TCP, 16 KiB per WebSocket
    // connection. The debug build (the test command's) runs larger futures and buffers,
    // so it gets twice that; the exact release figures come from the measurement script.
    let n = scale("HOSTILE_IDLE", 1000);
    let (tcp_bound, ws_bound) = if debug_bridge() {
        (8192, 32768)
    } else {
        (4096, 16384)
    };
    let attack = Attack::start(
        Launch::new("[broker]\nmax_connections_per_address = 100000\n"),
        "idleconns",
    )
    .await;
    let bridge = &attack.bridge;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = bridge.rss_kb();
    let tcp = idle_connections(&bridge.endpoint(TCP), "idle-tcp", n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = bridge.rss_kb();
    let ws = idle_connections(&bridge.endpoint(WS), "idle-ws", n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss2 = bridge.rss_kb();
    let per_tcp = rss1.saturating_sub(rss0) * 1024 / n as u64;
    let per_ws = rss2.saturating_sub(rss1) * 1024 / n as u64;
    let mut checks = Checks::default();
    checks.check(per_tcp <= tcp_bound, || {
        format!("an idle TCP connection costs {per_tcp} bytes of RSS (bound {tcp_bound}; {n} connections)")
    });
    checks.check(per_ws <= ws_bound, || {
        format!("an idle WebSocket connection costs {per_ws} bytes of RSS (bound {ws_bound}; {n} connections)")
    });
    drop(tcp);
    drop(ws);
    attack.end(&mut checks, 256, LOAD_LATENCY_BOUND).await;
    eprintln!("idle connections ({n} each): {per_tcp} B/TCP, {per_ws} B/WebSocket (RSS {rss0} -> {rss1} -> {rss2} KiB)");
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_offline_session_with_one_subscription_costs_about_three_kilobytes_of_rss() {
    // Issue 13: an offline persistent session with one subscription cost 2.8 KB of RSS in
    // the release build, 3.2 KB in the debug one (mosquitto: about 1.7 KB, measured the same
    // way): the session, its subscription in the session and in the index, and (with
    // `--data none`) its rows in the memory store. Measured after the slimmer session
    // (Online boxed, sorted vectors) and index (subscriptions only where a filter ends):
    // 2.84 KB release, 2.9-3.0 KB debug. Bounds: 3 KiB release, 3.5 KiB debug, a guard
    // against regressions (the issue's goal, 1 KB, needs the store's copy slimmed too). A
    // session outlives its connection with clean session 0 [MQTT-3.1.2-4].
    let n = scale("HOSTILE_IDLE_SESSIONS", 5000);
    let bound = if debug_bridge() { 3584 } else { 3072 };
    let attack = Attack::start(Launch::new(""), "idlesessions").await;
    let bridge = &attack.bridge;
    let ep = bridge.endpoint(TCP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = bridge.rss_kb();
    for start in (0..n).step_by(50) {
        join_all((start..n.min(start + 50)).map(|i| {
            let ep = ep.clone();
            async move {
                let id = format!("sensor-{i:06}");
                let mut raw = raw_connected(&ep, V311, &id, 0, true).await;
                let wanted = [format!("home/{id}/cmd")];
                match exchange(
                    &mut raw,
                    V311,
                    subscribe_packet(1, &wanted, QoS::AtLeastOnce),
                )
                .await
                {
                    Read::Packet(Packet::SubAck(_)) => {}
                    other => panic!("`{id}`: expected SUBACK, got {other:?}"),
                }
                raw.send(disconnect_packet()).await;
                // Gone once the broker has closed it: the session is offline.
                closed_within(&mut raw, DEFAULT_TIMEOUT).await.unwrap();
            }
        }))
        .await;
    }
    let offline = get_json(bridge, "/api/v1/stats").await["sessions_offline"].as_u64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = bridge.rss_kb();
    let per_session = rss1.saturating_sub(rss0) * 1024 / n as u64;
    let mut checks = Checks::default();
    checks.check(offline >= Some(n as u64), || {
        format!("{offline:?} offline sessions in the stats, expected at least {n}")
    });
    checks.check(per_session <= bound, || {
        format!("an idle offline session costs {per_session} bytes of RSS (bound {bound}; {n} sessions)")
    });
    attack.end(&mut checks, 256, LOAD_LATENCY_BOUND).await;
    eprintln!("idle offline sessions ({n}): {per_session} B each (RSS {rss0} -> {rss1} KiB)");
    checks.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_the_rss_returns_within_twice_its_level_before() {
    // The issue's finding 7: after a few minutes of benchmark traffic the process stayed at
    // 378 MB with nothing connected.
    let publishers = scale("HOSTILE_BURST_PUBLISHERS", 50);
    let per_publisher = scale("HOSTILE_BURST_MESSAGES", 1000);
    let mut attack = Attack::start(Launch::new(""), "burst").await;
    let ep = attack.bridge.endpoint(TCP);
    let mut sub = connect_or_panic(&ep, "burst-receiver", V5).await;
    sub.subscribe("burst/#", QoS::AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = attack.rebase_rss();

    let receiver = tokio::spawn(async move {
        let mut n = 0usize;
        while sub.try_recv_within(Duration::from_secs(3)).await.is_some() {
            n += 1;
        }
        sub.disconnect().await;
        n
    });
    let payload = Bytes::from(vec![b'b'; 1024]);
    join_all((0..publishers).map(|p| {
        let ep = ep.clone();
        let payload = payload.clone();
        tokio::spawn(async move {
            let mut c = connect_or_panic(&ep, &format!("burst-sender-{p}"), V5).await;
            let t = format!("burst/{p}");
            for _ in 0..per_publisher / 100 {
                let mut tokens = Vec::with_capacity(100);
                for _ in 0..100 {
                    tokens.push(
                        c.start_publish(
                            &t,
                            payload.clone(),
                            QoS::AtLeastOnce,
                            false,
                            Properties::default(),
                        )
                        .await,
                    );
                }
                for token in tokens {
                    c.wait_published(token).await;
                }
            }
            c.disconnect().await;
        })
    }))
    .await;
    let received = receiver.await.unwrap();
    let rss_peak = attack.bridge.rss_kb();
    let mut checks = Checks::default();
    let mut bridge = attack.end(&mut checks, 1024, LOAD_LATENCY_BOUND).await;
    // Everyone has left; the bridge gives memory back on its allocator's background purge,
    // whose pace depends on the machine's load: look every 250 ms for up to 10 s.
    let left = Instant::now();
    let mut rss_after = bridge.rss_kb();
    while rss_after > 2 * rss0 && left.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss_after = bridge.rss_kb();
    }
    let waited = left.elapsed().as_secs_f64();
    checks.check(rss_after <= 2 * rss0, || {
        format!(
            "RSS {rss0} KiB before the burst ({publishers} × {per_publisher} × 1 KiB, {received} received), \
             {rss_peak} KiB at its end, {rss_after} KiB {waited:.1} s after everyone left (bound 2 × before)"
        )
    });
    bridge.assert_alive("after the burst");
    eprintln!("burst: RSS {rss0} -> {rss_peak} -> {rss_after} KiB; {received} received");
    checks.finish();
}
