//! TLS on both listeners, through a real bridge: MQTT over TLS (`mqtts`) and HTTPS (`https`:
//! the API and MQTT over WSS at `/mqtt`), plain text refused on the TLS ports, client
//! certificates checked against `[tls] client_ca_file`, and the certificate reloaded on
//! SIGHUP while open connections stay up.
//!
//! # How
//! Each test makes its own certificate authority with rcgen ([`e2e::tls::TestCa`]), writes a
//! server certificate for `127.0.0.1` / `localhost` (and client certificates) to a temporary
//! directory, and starts a bridge whose configuration turns on `mqtts` and `https` beside
//! the plain listeners. The clients are rustls clients trusting that CA (the project's
//! test client over [`Endpoint::Mqtts`] / [`Endpoint::Wss`]) and `mosquitto_pub --cafile`.
//! The scenarios of one bridge run concurrently as cases ([`run_cases`]).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::protocol::{Connect, Packet, ProtocolVersion, QoS};
use e2e::tls::{self, self_signed_client, Issued, TestCa, TlsClient};
use e2e::{
    clean, encode, run_cases, text, version_name, Bridge, Endpoint, Listening, TempDir, TestClient,
    Transport, DEFAULT_TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

type Case = (
    String,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

fn case(name: &str, fut: impl std::future::Future<Output = ()> + Send + 'static) -> Case {
    (name.to_owned(), Box::pin(fut))
}

/// A bridge configuration with both TLS listeners on (and the plain ones, which the
/// harness starts), the server certificate in `dir`, and client certificates checked
/// against `client_ca` if given.
fn config(dir: &Path, server: &Issued, client_ca: Option<&TestCa>, require: bool) -> String {
    let (cert, key) = server.write(dir, "server");
    let mut toml = format!(
        "mqtts = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n\n[tls]\ncert_file = {:?}\n\
         key_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    if let Some(ca) = client_ca {
        let path = dir.join("client-ca.pem");
        tls::write_file(&path, &ca.cert_pem);
        toml.push_str(&format!(
            "client_ca_file = {:?}\nrequire_client_certificate = {require}\n",
            path.display().to_string()
        ));
    }
    toml
}

fn mqtts(bridge: &Bridge, client: &TlsClient) -> Endpoint {
    Endpoint::Mqtts(bridge.mqtts_addr(), client.clone())
}

/// The `host:port` of an `https://` URL.
fn https_addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// Connects, subscribes to `topic`, publishes to it and receives the message back.
async fn round_trip(endpoint: &Endpoint, version: ProtocolVersion, id: &str, topic: &str) {
    let (mut c, _) = TestClient::connect(endpoint, clean(version, id))
        .await
        .unwrap_or_else(|e| panic!("{id} could not connect over {endpoint:?}: {e}"));
    c.subscribe(topic, QoS::AtLeastOnce).await;
    c.publish(topic, "over tls", QoS::AtLeastOnce, false).await;
    assert_eq!(text(&c.recv().await), "over tls");
    c.disconnect().await;
}

/// `GET path` over HTTPS with `Connection: close`: the status and the body.
async fn https_get(url: &str, client: &TlsClient, path: &str) -> (u16, String) {
    let addr = https_addr(url);
    let mut s = tls::connect(addr, &client.with_alpn(&["http/1.1"]))
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} failed: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let mut raw = Vec::new();
    // Read to the end; a close without `close_notify` still leaves what came before it.
    let _ = tokio::time::timeout(DEFAULT_TIMEOUT, s.read_to_end(&mut raw)).await;
    let answer = String::from_utf8_lossy(&raw).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Writes `bytes` in clear to `addr` and reads until the bridge closes: what it sent back.
/// Panics if it keeps the connection open.
async fn plain_text_answer(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(DEFAULT_TIMEOUT, read_all)
        .await
        .is_err()
    {
        panic!("the TLS port kept a plain-text connection open for {DEFAULT_TIMEOUT:?}");
    }
    got
}

/// Whether a client presenting `client` is served: the TLS handshake, CONNECT and CONNACK.
/// (With TLS 1.3 a refused client certificate shows only after the client's handshake
/// ends, as an alert instead of the CONNACK.)
async fn served(endpoint: Endpoint, id: &str) -> bool {
    match TestClient::connect(&endpoint, clean(V5, id)).await {
        Ok((c, _)) => {
            c.disconnect().await;
            true
        }
        Err(e) => {
            assert!(
                e.refused_reason().is_none(),
                "{id}: refused by the broker, not by TLS: {e}"
            );
            false
        }
    }
}

#[tokio::test]
async fn mqtt_wss_and_https_are_served_over_tls_and_plain_text_on_the_tls_ports_is_refused() {
    let dir = TempDir::new("tls");
    let ca = TestCa::new("test CA");
    let clients_ca = TestCa::new("clients CA");
    let server = ca.server();
    let bridge = Bridge::start_with_config(&config(dir.path(), &server, Some(&clients_ca), false));
    let trusting = TlsClient::trusting(&[&ca]);
    let ca_file = dir.path().join("ca.pem");
    tls::write_file(&ca_file, &ca.cert_pem);

    let mut cases = Vec::new();
    for version in [V311, V5] {
        let endpoint = mqtts(&bridge, &trusting);
        let v = version_name(version);
        let name = format!("MQTT {v} over TLS: connect, subscribe, publish, receive");
        cases.push(case(&name, async move {
            round_trip(
                &endpoint,
                version,
                &format!("tls-{v}"),
                &format!("tls/mqtts/{v}"),
            )
            .await;
        }));
        let endpoint = Endpoint::Wss(bridge.wss_url().to_owned(), trusting.clone());
        let name = format!("MQTT {v} over WSS at /mqtt: round trip");
        cases.push(case(&name, async move {
            round_trip(
                &endpoint,
                version,
                &format!("wss-{v}"),
                &format!("tls/wss/{v}"),
            )
            .await;
        }));
    }
    {
        let secure = mqtts(&bridge, &trusting);
        let plain = bridge.endpoint(Transport::Tcp);
        cases.push(case(
            "a message published over plain TCP reaches a subscriber over TLS: one broker",
            async move {
                let (mut sub, _) = TestClient::connect(&secure, clean(V5, "tls-sub"))
                    .await
                    .unwrap();
                sub.subscribe("tls/mixed", QoS::AtLeastOnce).await;
                let (mut publisher, _) = TestClient::connect(&plain, clean(V311, "plain-pub"))
                    .await
                    .unwrap();
                publisher
                    .publish("tls/mixed", "from tcp", QoS::AtLeastOnce, false)
                    .await;
                assert_eq!(text(&sub.recv().await), "from tcp");
            },
        ));
    }
    {
        let url = bridge.https_url().to_owned();
        let client = trusting.clone();
        cases.push(case(
            "GET /api/v1/health over HTTPS answers 200",
            async move {
                let (status, body) = https_get(&url, &client, "/api/v1/health").await;
                assert_eq!(status, 200, "{body}");
                assert!(body.contains("\"status\":\"ok\""), "{body}");
            },
        ));
    }
    {
        let secure = mqtts(&bridge, &trusting);
        let port = bridge.mqtts_addr().port().to_string();
        let ca_file = ca_file.display().to_string();
        cases.push(case(
            "mosquitto_pub --cafile publishes over TLS, checking the server's certificate",
            async move {
                let (mut sub, _) = TestClient::connect(&secure, clean(V311, "mosq-sub"))
                    .await
                    .unwrap();
                sub.subscribe("tls/mosquitto", QoS::AtLeastOnce).await;
                let out = tokio::process::Command::new("mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-p", &port, "--cafile", &ca_file])
                    .args(["-t", "tls/mosquitto", "-q", "1", "-m", "from mosquitto"])
                    .stdin(Stdio::null())
                    .output();
                let out = tokio::time::timeout(Duration::from_secs(10), out)
                    .await
                    .expect("mosquitto_pub did not finish within 10 s")
                    .expect("mosquitto_pub (mosquitto-clients, scripts/setup.sh) could not run");
                assert!(
                    out.status.success(),
                    "mosquitto_pub failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(text(&sub.recv().await), "from mosquitto");
            },
        ));
    }
    {
        let addr = bridge.mqtts_addr();
        let secure = mqtts(&bridge, &trusting);
        cases.push(case(
            "an MQTT CONNECT in clear on the MQTTS port is closed without a CONNACK, and TLS \
             clients are still served",
            async move {
                let connect = Connect::new(V311, "plain-on-tls", true);
                let bytes = encode(&Packet::Connect(Box::new(connect)), V311);
                let answer = plain_text_answer(addr, &bytes).await;
                assert!(
                    !answer.starts_with(&[0x20]),
                    "a CONNACK came back in clear: {answer:?}"
                );
                round_trip(&secure, V5, "after-plain", "tls/after-plain").await;
            },
        ));
    }
    {
        let addr = https_addr(bridge.https_url());
        cases.push(case(
            "an HTTP request in clear on the HTTPS port is closed without an HTTP answer",
            async move {
                let request = format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                let answer = plain_text_answer(addr, request.as_bytes()).await;
                assert!(
                    !answer.starts_with(b"HTTP/"),
                    "{}",
                    String::from_utf8_lossy(&answer)
                );
            },
        ));
    }
    {
        let with_cert = TlsClient::with_certificate(&[&ca], &clients_ca.client("device-1"));
        let foreign = TlsClient::with_certificate(&[&ca], &self_signed_client("intruder"));
        let (bridge_mqtts, https) = (bridge.mqtts_addr(), bridge.https_url().to_owned());
        let without = trusting.clone();
        cases.push(case(
            "with client_ca_file and no requirement: a certificate from that CA or none is \
             served, a certificate from elsewhere is refused",
            async move {
                let ep = |c: &TlsClient| Endpoint::Mqtts(bridge_mqtts, c.clone());
                assert!(served(ep(&with_cert), "cert-from-ca").await);
                assert!(served(ep(&without), "no-cert").await);
                assert!(!served(ep(&foreign), "self-signed").await);
                let (status, _) = https_get(&https, &with_cert, "/api/v1/health").await;
                assert_eq!(status, 200);
            },
        ));
    }
    run_cases(cases).await;
}

#[tokio::test]
async fn with_a_client_certificate_required_only_clients_holding_one_from_the_ca_are_served_and_silent_ones_are_dropped_at_the_handshake_deadline(
) {
    let dir = TempDir::new("tls-required");
    let ca = TestCa::new("test CA");
    let clients_ca = TestCa::new("clients CA");
    // Short deadlines, to see a silent client dropped by the handshake's deadline.
    let deadlines =
        "\n[broker]\nconnect_timeout_secs = 2\n[server]\nhttp_header_timeout_secs = 2\n";
    let toml = config(dir.path(), &ca.server(), Some(&clients_ca), true) + deadlines;
    let bridge = Bridge::start_with_config(&toml);
    let silent = |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        // Within the 2 s deadline and the usual wait: a handshake never started is closed.
        let waited =
            tokio::time::timeout(DEFAULT_TIMEOUT + Duration::from_secs(2), s.read(&mut buf));
        assert!(
            waited.await.is_ok(),
            "a client sending nothing on the TLS port {addr} was kept past the deadline"
        );
    };
    let silent_mqtts = tokio::spawn(silent(bridge.mqtts_addr()));
    let silent_https = tokio::spawn(silent(https_addr(bridge.https_url())));
    let with_cert = TlsClient::with_certificate(&[&ca], &clients_ca.client("device-2"));
    let without = TlsClient::trusting(&[&ca]);
    let foreign = TlsClient::with_certificate(&[&ca], &self_signed_client("device-2"));
    let other_ca = TlsClient::with_certificate(&[&ca], &TestCa::new("other").client("device-2"));

    assert!(served(mqtts(&bridge, &with_cert), "with-cert").await);
    assert!(!served(mqtts(&bridge, &without), "without-cert").await);
    assert!(!served(mqtts(&bridge, &foreign), "self-signed").await);
    assert!(!served(mqtts(&bridge, &other_ca), "other-ca").await);

    let wss = |c: &TlsClient| Endpoint::Wss(bridge.wss_url().to_owned(), c.clone());
    assert!(served(wss(&with_cert), "wss-with-cert").await);
    assert!(!served(wss(&without), "wss-without-cert").await);
    let (status, _) = https_get(bridge.https_url(), &with_cert, "/api/v1/health").await;
    assert_eq!(status, 200);

    // The plain listeners are not affected (they have no TLS to ask a certificate with).
    round_trip(&bridge.endpoint(Transport::Tcp), V5, "plain", "req/plain").await;
    silent_mqtts.await.unwrap();
    silent_https.await.unwrap();
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_while_open_ones_stay_up() {
    let dir = TempDir::new("tls-reload");
    let first_ca = TestCa::new("first CA");
    let second_ca = TestCa::new("second CA");
    let first = first_ca.server();
    let bridge = Bridge::start_with_config(&config(dir.path(), &first, None, false));
    // Trusts both, so the test sees which certificate is served rather than a refusal.
    let client = TlsClient::trusting(&[&first_ca, &second_ca]);
    let served_certificate = |addr| {
        let client = client.clone();
        async move {
            let stream = tls::connect(addr, &client).await.unwrap();
            tls::server_certificate(&stream).unwrap()
        }
    };
    assert_eq!(
        served_certificate(bridge.mqtts_addr()).await,
        first.cert_der
    );

    let (mut old, _) = TestClient::connect(&mqtts(&bridge, &client), clean(V5, "old"))
        .await
        .unwrap();
    old.subscribe("reload/#", QoS::AtLeastOnce).await;

    // A file that is not a certificate: the bridge keeps the one it has.
    tls::write_file(&dir.path().join("server.pem"), "not a certificate\n");
    bridge.reload();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_certificate(bridge.mqtts_addr()).await,
        first.cert_der
    );

    // A new chain from another CA: new handshakes get it once the signal is handled.
    let second = second_ca.server();
    second.write(dir.path(), "server");
    bridge.reload();
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    while served_certificate(bridge.mqtts_addr()).await != second.cert_der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within {DEFAULT_TIMEOUT:?} of SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let https = https_addr(bridge.https_url());
    assert_eq!(served_certificate(https).await, second.cert_der);

    // The connection opened before still works, both ways, beside a new one.
    let (mut new, _) = TestClient::connect(&mqtts(&bridge, &client), clean(V311, "new"))
        .await
        .unwrap();
    new.subscribe("reload/#", QoS::AtLeastOnce).await;
    new.publish("reload/new", "from new", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(text(&old.recv().await), "from new");
    old.publish("reload/old", "from old", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(text(&new.recv().await), "from new");
    assert_eq!(text(&new.recv().await), "from old");
    assert!(
        old.ended().is_none(),
        "the old connection ended: {:?}",
        old.ended()
    );
}

/// The bridge binary with `args`, its stdout piped, killed on drop.
struct Process(std::process::Child);

impl Process {
    fn start(args: &[&str]) -> Process {
        let child = Command::new(Bridge::binary())
            .args(args)
            .args(["--data", "none"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Process(child)
    }

    /// Waits for the exit; its code and stderr.
    fn exit(mut self) -> (Option<i32>, String) {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut stderr) = self.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                return (status.code(), err);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the bridge did not exit within 10 s");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn plain_listeners_can_be_turned_off_and_tls_listeners_need_a_usable_certificate() {
    let dir = TempDir::new("tls-listeners");
    let ca = TestCa::new("test CA");
    let config_file = dir.path().join("bridge.toml");
    tls::write_file(&config_file, &config(dir.path(), &ca.server(), None, false));
    let config_arg = config_file.display().to_string();

    // TLS only: the line has no plain fields, and MQTT over TLS works.
    let mut only_tls =
        Process::start(&["--http", "none", "--mqtt", "none", "--config", &config_arg]);
    let stdout = only_tls.0.stdout.take().unwrap();
    let line = Listening::read_line(stdout).unwrap();
    for plain in ["http", "ws", "mqtt"] {
        assert_eq!(Listening::field(&line, plain), None, "{line}");
    }
    let mqtts_addr = Listening::field(&line, "mqtts").unwrap().parse().unwrap();
    assert!(Listening::field(&line, "https").is_some_and(|u| u.starts_with("https://")));
    assert!(Listening::field(&line, "wss").is_some_and(|u| u.starts_with("wss://")));
    let endpoint = Endpoint::Mqtts(mqtts_addr, TlsClient::trusting(&[&ca]));
    round_trip(&endpoint, V5, "tls-only", "only/tls").await;
    drop(only_tls);

    // Configuration errors exit 2 with a message.
    let (code, err) = Process::start(&["--http", "none", "--mqtt", "none"]).exit();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("at least one"), "{err}");
    let (code, err) = Process::start(&["--mqtts", "127.0.0.1:0"]).exit();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cert_file"), "{err}");
    tls::write_file(&dir.path().join("server.key"), "not a key\n");
    let (code, err) = Process::start(&[
        "--config",
        &config_arg,
        "--http",
        "127.0.0.1:0",
        "--mqtt",
        "127.0.0.1:0",
    ])
    .exit();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.key"), "{err}");
}
