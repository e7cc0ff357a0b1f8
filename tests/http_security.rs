//! Who may reach the HTTP side (issue 11): the admin API's tokens, the loopback-only API
//! without them, cross-site requests, DNS rebinding (`Host`), the WebSocket `Origin`
//! allow-list and subprotocols, and client addresses behind a trusted reverse proxy, each
//! through raw HTTP against a real bridge.
//!
//! The HTTP client is a few lines over a TCP socket, so every header is exactly what the test
//! writes: a browser's `Origin`, a foreign `Host`, a proxy's `X-Forwarded-For`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use e2e::protocol::{Connect, Packet, ProtocolVersion, ReasonCode};
use e2e::{encode, persistent, Bridge, Transport};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const V5: ProtocolVersion = ProtocolVersion::V5;
const TIMEOUT: Duration = Duration::from_secs(5);

const FULL_TOKEN: &str = "full-token-7f3a9c1e5b";
const READ_TOKEN: &str = "read-token-2d8e4f6a0c";

/// An HTTP answer; `_stream` keeps the socket open after a 101.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The header block, lowercased.
    headers: String,
    body: String,
    _stream: Option<TcpStream>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .lines()
            .any(|l| l.starts_with(&format!("{name}:")))
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

/// The bridge's own origin, as a page it serves sends it.
fn own_origin(bridge: &Bridge) -> String {
    format!("http://{}", authority(bridge))
}

/// Sends `method path` with `headers` (a `Host` among them replaces the bridge's own) and
/// reads the answer: its head, then `Content-Length` bytes, or up to the close.
async fn request(bridge: &Bridge, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let host = authority(bridge);
    let mut s = TcpStream::connect(&host).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {host}\r\n"));
    }
    let upgrade = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("upgrade"));
    if !upgrade {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(TIMEOUT, read_answer(s))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {TIMEOUT:?}"))
}

async fn read_answer(mut s: TcpStream) -> Answer {
    let mut raw = Vec::new();
    let split = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer's head: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    };
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let mut body = raw[split + 4..].to_vec();
    if status == 101 {
        return Answer {
            status,
            headers,
            body: String::new(),
            _stream: Some(s),
        };
    }
    let length = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed inside the body");
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body).await.unwrap();
        }
    }
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        _stream: None,
    }
}

/// `GET /mqtt` as a WebSocket upgrade offering `mqtt`, with `extra` headers.
async fn upgrade(bridge: &Bridge, extra: &[(&str, &str)]) -> Answer {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    if !extra
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
    {
        headers.push(("Sec-WebSocket-Protocol", "mqtt"));
    }
    headers.extend_from_slice(extra);
    request(bridge, "GET", "/mqtt", &headers).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A bridge with both API tokens, behind a trusted proxy on loopback.
fn token_bridge() -> Bridge {
    Bridge::start_with_config(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n\
         [api]\ntoken = \"{FULL_TOKEN}\"\nread_token = \"{READ_TOKEN}\"\n"
    ))
}

/// A bridge without a token, behind a trusted proxy on loopback, with one extra host name
/// and one extra WebSocket origin.
fn proxied_bridge() -> Bridge {
    Bridge::start_with_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\nallowed_hosts = [\"bridge.example\"]\n\
         allowed_origins = [\"https://app.example\"]\n",
    )
}

#[tokio::test]
async fn with_a_token_the_api_answers_401_without_it_and_the_read_token_may_only_read() {
    let bridge = token_bridge();
    let full = bearer(FULL_TOKEN);
    let read = bearer(READ_TOKEN);
    let wrong = bearer("full-token-7f3a9c1e5c");
    for path in [
        "/api/v1/sessions",
        "/api/v1/stats",
        "/api/v1/retained",
        "/api/v1/events",
    ] {
        let a = request(&bridge, "GET", path, &[]).await;
        assert_eq!(a.status, 401, "GET {path} without a token: {}", a.body);
        assert!(
            a.headers.contains("www-authenticate: bearer"),
            "{path}: {}",
            a.headers
        );
        let a = request(&bridge, "GET", path, &[("Authorization", &wrong)]).await;
        assert_eq!(a.status, 401, "GET {path} with a wrong token");
    }
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions",
        &[("Authorization", &full)],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["total"], 0);
    let a = request(&bridge, "GET", "/api/v1/stats", &[("Authorization", &read)]).await;
    assert_eq!(a.status, 200, "the read token reads: {}", a.body);

    // The read token may not change anything; the full one may (404: it got through).
    let mut client = bridge
        .client(Transport::Tcp, persistent(V5, "token-victim"))
        .await;
    let kick = "/api/v1/sessions/token-victim/kick";
    let a = request(&bridge, "POST", kick, &[("Authorization", &read)]).await;
    assert_eq!(a.status, 403, "a kick with the read token: {}", a.body);
    let a = request(
        &bridge,
        "DELETE",
        "/api/v1/sessions/token-victim",
        &[("Authorization", &read)],
    )
    .await;
    assert_eq!(a.status, 403, "a discard with the read token: {}", a.body);
    let a = request(&bridge, "POST", kick, &[]).await;
    assert_eq!(a.status, 401, "a kick without a token");
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions/token-victim",
        &[("Authorization", &read)],
    )
    .await;
    assert_eq!(a.json()["connected"], true, "refused kicks kicked nobody");
    let a = request(&bridge, "POST", kick, &[("Authorization", &full)]).await;
    assert_eq!(a.status, 204, "a kick with the full token: {}", a.body);
    let d = client
        .expect_closed()
        .await
        .expect("DISCONNECT before the close");
    assert_eq!(d.reason, ReasonCode::AdministrativeAction);
    let a = request(
        &bridge,
        "POST",
        "/api/v1/sessions/nobody/kick",
        &[("Authorization", &full)],
    )
    .await;
    assert_eq!(a.status, 404);

    // A token works from anywhere: here a remote client behind the trusted proxy.
    let remote = [("X-Forwarded-For", "203.0.113.7"), ("Authorization", &full)];
    let a = request(&bridge, "GET", "/api/v1/sessions", &remote).await;
    assert_eq!(a.status, 200, "a remote client with the token: {}", a.body);
}

#[tokio::test]
async fn health_stays_open_and_no_answer_carries_cors_headers_unless_configured() {
    let bridge = token_bridge();
    let a = request(&bridge, "GET", "/api/v1/health", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["status"], "ok");
    let origin = ("Origin", "https://app.example");
    for (method, path, auth) in [
        ("GET", "/api/v1/health", None),
        ("GET", "/api/v1/sessions", Some(bearer(FULL_TOKEN))),
        ("GET", "/api/v1/sessions", None),
        ("OPTIONS", "/api/v1/sessions", None),
        ("GET", "/", None),
    ] {
        let mut headers = vec![origin, ("Access-Control-Request-Method", "POST")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let a = request(&bridge, method, path, &headers).await;
        assert!(
            !a.headers.contains("access-control-"),
            "{method} {path} answered CORS headers: {}",
            a.headers
        );
    }

    // Configured: the listed origin gets them, with a preflight answer; another does not.
    let bridge = Bridge::start_with_config("[api]\ncors_origins = [\"https://app.example\"]\n");
    let a = request(
        &bridge,
        "OPTIONS",
        "/api/v1/sessions/x/kick",
        &[origin, ("Access-Control-Request-Method", "POST")],
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.headers);
    assert!(a
        .headers
        .contains("access-control-allow-origin: https://app.example"));
    assert!(a.headers.contains("access-control-allow-headers:"));
    let a = request(&bridge, "GET", "/api/v1/sessions", &[origin]).await;
    assert_eq!(a.status, 200);
    assert!(a
        .headers
        .contains("access-control-allow-origin: https://app.example"));
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions",
        &[("Origin", "https://other.example")],
    )
    .await;
    assert!(
        !a.has_header("access-control-allow-origin"),
        "{}",
        a.headers
    );
}

#[tokio::test]
async fn without_a_token_a_cross_site_kick_is_refused_and_a_same_origin_one_works() {
    let bridge = proxied_bridge();
    let mut victim = bridge
        .client(Transport::Tcp, persistent(V5, "victim"))
        .await;
    let a = request(&bridge, "GET", "/api/v1/sessions", &[]).await;
    assert_eq!(a.status, 200, "a loopback GET: {}", a.body);

    // What a foreign page can send without a preflight: a "simple" POST.
    let cross_site = [
        ("Origin", "http://evil.example"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "2"),
    ];
    let kick = "/api/v1/sessions/victim/kick";
    let a = request(&bridge, "POST", kick, &cross_site).await;
    assert_eq!(a.status, 403, "a cross-site kick: {}", a.body);
    let a = request(&bridge, "DELETE", "/api/v1/sessions/victim", &cross_site).await;
    assert_eq!(a.status, 403, "a cross-site discard: {}", a.body);
    let a = request(&bridge, "POST", kick, &[("Origin", "null")]).await;
    assert_eq!(a.status, 403, "a kick from an opaque origin: {}", a.body);
    let detail = request(&bridge, "GET", "/api/v1/sessions/victim", &[]).await;
    assert_eq!(detail.json()["connected"], true, "the victim was kicked");

    let own = own_origin(&bridge);
    let a = request(&bridge, "POST", kick, &[("Origin", &own)]).await;
    assert_eq!(a.status, 204, "a same-origin kick: {}", a.body);
    let d = victim
        .expect_closed()
        .await
        .expect("DISCONNECT before the close");
    assert_eq!(d.reason, ReasonCode::AdministrativeAction);
}

#[tokio::test]
async fn a_remote_client_behind_a_trusted_proxy_is_not_loopback_and_an_untrusted_peer_cannot_claim_to_be_a_proxy(
) {
    let bridge = proxied_bridge();
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions",
        &[("X-Forwarded-For", "203.0.113.7")],
    )
    .await;
    assert_eq!(
        a.status, 403,
        "a remote client through the proxy: {}",
        a.body
    );
    // What the client wrote itself stays left of what the proxy appended.
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions",
        &[("X-Forwarded-For", "127.0.0.1, 203.0.113.7")],
    )
    .await;
    assert_eq!(a.status, 403, "a spoofed loopback entry: {}", a.body);
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions",
        &[("Forwarded", "for=\"[2001:db8::7]:443\"")],
    )
    .await;
    assert_eq!(
        a.status, 403,
        "a remote client named by Forwarded: {}",
        a.body
    );
    let a = request(
        &bridge,
        "GET",
        "/api/v1/sessions",
        &[("X-Forwarded-For", "unknown")],
    )
    .await;
    assert_eq!(a.status, 400, "an unreadable forwarded address: {}", a.body);

    // 127.0.0.1 is not a proxy here: its header names no client. A loopback client without
    // one is local; with one, it is a proxy the operator did not list (nginx on the same
    // machine would make every internet client look local), and without a token the API
    // does not take it for a local request.
    let untrusted = Bridge::start_with_config("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let a = request(&untrusted, "GET", "/api/v1/sessions", &[]).await;
    assert_eq!(a.status, 200, "a loopback client: {}", a.body);
    for header in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
        let value = if header == "Forwarded" {
            "for=203.0.113.7"
        } else {
            "203.0.113.7"
        };
        let a = request(&untrusted, "GET", "/api/v1/sessions", &[(header, value)]).await;
        assert_eq!(a.status, 403, "{header} from an unlisted proxy: {}", a.body);
    }
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_every_route_and_the_listed_names_are_answered() {
    let bridge = proxied_bridge();
    for host in [
        "evil.example",
        "evil.example:80",
        "rebind.attacker.test:8080",
    ] {
        for path in ["/", "/index.html", "/api/v1/sessions", "/api/v1/health"] {
            let a = request(&bridge, "GET", path, &[("Host", host)]).await;
            assert_eq!(a.status, 403, "Host {host} on {path}: {}", a.body);
        }
        let a = upgrade(&bridge, &[("Host", host)]).await;
        assert_eq!(a.status, 403, "Host {host} on /mqtt");
    }
    let a = request(
        &bridge,
        "GET",
        "/api/v1/health",
        &[("Host", "bridge.example")],
    )
    .await;
    assert_eq!(a.status, 200, "a listed name");
    let a = request(
        &bridge,
        "GET",
        "/api/v1/health",
        &[("Host", "BRIDGE.example:9999")],
    )
    .await;
    assert_eq!(a.status, 200, "a listed name without port allows any port");
    let port = authority(&bridge).rsplit(':').next().unwrap().to_owned();
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let a = request(&bridge, "GET", "/api/v1/health", &[("Host", &host)]).await;
        assert_eq!(a.status, 200, "Host {host}");
    }
    let a = request(&bridge, "GET", "http://evil.example/api/v1/health", &[]).await;
    assert_eq!(a.status, 403, "an absolute URI for another host");

    let open = Bridge::start_with_config("[server]\nallowed_hosts = [\"*\"]\n");
    let a = request(&open, "GET", "/api/v1/health", &[("Host", "evil.example")]).await;
    assert_eq!(a.status, 200, "allowed_hosts = [\"*\"]");
}

#[tokio::test]
async fn a_websocket_upgrade_needs_an_allowed_origin_and_an_mqtt_subprotocol() {
    let bridge = token_bridge();
    let own = own_origin(&bridge);
    // Default: the own origin and no Origin at all.
    assert_eq!(upgrade(&bridge, &[]).await.status, 101, "without Origin");
    assert_eq!(upgrade(&bridge, &[("Origin", &own)]).await.status, 101);
    for origin in [
        "http://evil.example",
        "https://app.example",
        "null",
        &own.replace("http://", "https://"),
        &own.replace("127.0.0.1", "localhost"),
    ] {
        let a = upgrade(&bridge, &[("Origin", origin)]).await;
        assert_eq!(a.status, 403, "Origin {origin}: {}", a.body);
    }

    // Listed: that origin too, and still the own one.
    let listed = proxied_bridge();
    let own = own_origin(&listed);
    for origin in ["https://app.example", own.as_str()] {
        assert_eq!(
            upgrade(&listed, &[("Origin", origin)]).await.status,
            101,
            "{origin}"
        );
    }
    let a = upgrade(&listed, &[("Origin", "https://other.example")]).await;
    assert_eq!(a.status, 403);
    // Behind a TLS-terminating proxy the page's origin is https.
    let https_own = own.replace("http://", "https://");
    let a = upgrade(&listed, &[("Origin", &https_own)]).await;
    assert_eq!(a.status, 403, "https without the proxy saying so");
    let a = upgrade(
        &listed,
        &[("Origin", &https_own), ("X-Forwarded-Proto", "https")],
    )
    .await;
    assert_eq!(a.status, 101, "https as the trusted proxy says");

    let any = Bridge::start_with_config("[server]\nallowed_origins = [\"*\"]\n");
    let a = upgrade(&any, &[("Origin", "http://whatever.example")]).await;
    assert_eq!(a.status, 101, "allowed_origins = [\"*\"]");

    // Subprotocols: one of MQTT's must be among those offered, if any are.
    for (offered, status) in [
        ("graphql-ws", 400),
        ("MQTT", 400),
        ("graphql-ws, mqtt", 101),
        ("mqttv3.1", 101),
    ] {
        let a = upgrade(&bridge, &[("Sec-WebSocket-Protocol", offered)]).await;
        assert_eq!(a.status, status, "offered {offered}: {}", a.body);
    }
    let a = request(
        &bridge,
        "GET",
        "/mqtt",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    .await;
    assert_eq!(
        a.status, 101,
        "no subprotocol offered (a non-browser client)"
    );
}

/// Opens an MQTT connection over WebSocket with `headers`, CONNECTs as `client_id`, and
/// returns the socket once the CONNACK came.
async fn mqtt_over_ws(
    bridge: &Bridge,
    headers: &[(&'static str, &str)],
    client_id: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut request = bridge.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let socket = TcpStream::connect(authority(bridge)).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, socket)
        .await
        .unwrap();
    let connect = Packet::Connect(Box::new(Connect::new(V5, client_id, true)));
    ws.send(Message::Binary(Bytes::from(encode(&connect, V5))))
        .await
        .unwrap();
    let frame = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("CONNACK in time")
        .expect("a frame")
        .unwrap();
    let Message::Binary(bytes) = frame else {
        panic!("expected a binary frame, got {frame:?}");
    };
    assert_eq!(bytes.first(), Some(&0x20), "CONNACK: {bytes:?}");
    ws
}

#[tokio::test]
async fn the_address_a_trusted_proxy_forwards_is_the_sessions_peer() {
    let bridge = proxied_bridge();
    let _ws = mqtt_over_ws(
        &bridge,
        &[("X-Forwarded-For", "198.51.100.1, 203.0.113.7")],
        "behind-proxy",
    )
    .await;
    let a = request(&bridge, "GET", "/api/v1/sessions/behind-proxy", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["peer"], "203.0.113.7:0");

    // From an untrusted peer the header is ignored: the peer is the socket's.
    let untrusted = Bridge::start_with_config("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let _ws = mqtt_over_ws(&untrusted, &[("X-Forwarded-For", "203.0.113.7")], "direct").await;
    let a = request(&untrusted, "GET", "/api/v1/sessions/direct", &[]).await;
    let peer = a.json()["peer"].as_str().unwrap().to_owned();
    assert!(peer.starts_with("127.0.0.1:"), "peer {peer}");
}

#[tokio::test]
async fn the_per_address_connection_limit_counts_the_forwarded_client_address() {
    let bridge = Bridge::start_with_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[broker]\nmax_connections_per_address = 1\n",
    );
    let first = upgrade(&bridge, &[("X-Forwarded-For", "203.0.113.1")]).await;
    assert_eq!(first.status, 101);
    let again = upgrade(&bridge, &[("X-Forwarded-For", "203.0.113.1")]).await;
    assert_eq!(again.status, 503, "a second connection from 203.0.113.1");
    let other = upgrade(&bridge, &[("X-Forwarded-For", "203.0.113.2")]).await;
    assert_eq!(other.status, 101, "another client behind the same proxy");
    let direct = upgrade(&bridge, &[]).await;
    assert_eq!(direct.status, 101, "the proxy's own address");
    drop((first, other, direct));
}

/// RFC 9112 §3.2: a server MUST answer 400 to a request with more than one `Host` line. (The
/// guard once read the first one only: `Host: localhost` then `Host: evil.example` was
/// answered 200, while a proxy in front that routes by the last line saw another host.)
#[tokio::test]
async fn a_request_with_two_host_lines_is_refused_with_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bridge = Bridge::start_with_config("");
    let addr = bridge
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\
          Connection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}
