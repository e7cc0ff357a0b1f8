//! The end-to-end test harness: a real `bridge` process, and the project's own Rust MQTT
//! client talking to it over real TCP and WebSocket sockets.
//!
//! # Why a harness of our own
//! The point of these tests is that the broker behaves as the specification says, seen from
//! the outside. So nothing here reaches into the broker: the bridge binary runs as a child
//! process on `127.0.0.1:0`, and clients speak MQTT to it through sockets. The well-behaved
//! client is [`TestClient`], a thin async driver around [`protocol::client::Client`], the same
//! sans-io state machine the browser client runs; the misbehaving one is [`RawClient`], which
//! writes whatever bytes a test wants and shows every packet as it came off the wire.
//!
//! # Layout
//! - [`Bridge`]: starts the binary (with an optional TOML configuration, in memory or on a
//!   data directory), reads its `bridge listening: ...` line, stops it (SIGTERM), kills it
//!   (SIGKILL) and starts it again on the same data, kills it on drop.
//! - [`TempDir`]: a fresh directory under the system's temporary directory, removed on drop
//!   (a data directory for [`Bridge::start_with_data`]).
//! - [`Transport`] and [`Endpoint`]: TCP or WebSocket (subprotocol `mqtt`, binary frames);
//!   an endpoint may also be MQTT over TLS or WSS, with a client from [`tls`].
//! - [`tls`]: a test CA (rcgen), its certificates as PEM files, rustls clients.
//! - [`TestClient`]: connect, subscribe, publish, receive, disconnect, lose the network.
//! - [`RawClient`]: raw bytes and packets in and out, for bad-input and flow-control tests.
//! - [`for_each_transport_and_version`] and [`for_each_transport`]: run one test body for
//!   every case, concurrently, each case with its own bridge, and report which cases failed.
//!
//! # Running
//! `cargo build -p bridge` first: `cargo test` does not build another package's binary, and
//! a stale one tests old code (`scripts/test.sh` builds it right before `cargo test`).
//! `BRIDGE_BIN` points at another binary; `E2E_BRIDGE_LOG=debug` (any `RUST_LOG` filter)
//! shows the bridges' logs.
//!
//! # Conventions
//! Test helpers panic with a message that says what was expected (a test failure is the
//! only sensible outcome). Only [`TestClient::connect`] returns a `Result`, because a refused
//! connection is something tests assert on. Every wait has a deadline ([`DEFAULT_TIMEOUT`]
//! unless a test passes its own), so a broker that stays silent fails a test rather than
//! hanging the suite.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use protocol::client::{Client, ClientError, ClientOptions, Event, PublishToken, Timestamp};
use protocol::{
    ConnAck, Connect, Decoder, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, SubAck, Subscription, TopicFilter, TopicName, UnsubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use protocol;

pub mod hostile;
pub mod nats;
pub mod tls;

use crate::tls::TlsClient;

/// How long any single wait lasts before a test fails (a message, an acknowledgement, a
/// close): long enough for a loaded CI machine, short enough to fail fast.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the bridge has to print its listening line.
/// How long a bridge may take to print its listening line. A bridge of a cluster first makes
/// its streams, which takes longer while many tests start bridges at once.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

// ----- the bridge process -----------------------------------------------------------------

/// A running `bridge` process on ephemeral ports, killed when dropped.
#[derive(Debug)]
pub struct Bridge {
    child: Child,
    mqtt_addr: SocketAddr,
    http_url: String,
    ws_url: String,
    /// The TLS listeners' addresses, when the configuration turns them on.
    secure: SecureListening,
    /// The `--config` file written for this process, removed on drop.
    config_file: Option<PathBuf>,
    /// The `--data` directory; `None` is `--data none` (memory only).
    data: Option<PathBuf>,
    /// `E2E_CLUSTER=1`: the second bridge of a two-bridge cluster; clients go to the two
    /// in turn (see [`clustered`]).
    peer: Option<Box<Bridge>>,
    /// Which of the two the next client goes to.
    turn: AtomicU64,
}

/// Whether `E2E_CLUSTER=1` is set: then every [`Bridge::start`] and
/// [`Bridge::start_with_config`] (no data directory) starts two bridges joined in a cluster
/// (on the test binary's shared 3-node NATS cluster, a namespace of their own, streams with
/// one replica), and the clients of a test go to the two bridges in turn, so that the two
/// clients of a scenario are on different bridges. `scripts/test.sh` runs the MQTT
/// behaviour suites this way too.
pub fn clustered() -> bool {
    std::env::var_os("E2E_CLUSTER").is_some_and(|v| v == "1")
}

/// The reason of a 5.0 PUBACK / PUBREC for a message that matched no subscription: 0x10
/// on one bridge; Success in a cluster, where the publisher's bridge cannot know at once
/// whether a session elsewhere matches (0x10 is optional: "MAY").
pub fn no_matching_subscribers() -> ReasonCode {
    if clustered() {
        ReasonCode::Success
    } else {
        ReasonCode::NoMatchingSubscribers
    }
}

impl Bridge {
    /// Starts the bridge with its default configuration (two, with `E2E_CLUSTER=1`: see
    /// [`clustered`]).
    pub fn start() -> Bridge {
        Bridge::start_with_config("")
    }

    /// Starts the bridge with `toml` as its `--config` file (a `[broker]` table sets
    /// `broker::BrokerConfig` fields); two, with `E2E_CLUSTER=1` (see [`clustered`]).
    pub fn start_with_config(toml: &str) -> Bridge {
        if clustered() && !toml.contains("[cluster]") {
            let nats = nats::NatsCluster::shared();
            let ns = nats::namespace("suite");
            let table = |node: &str| {
                nats::cluster_table(nats, &ns, node).replace("replicas = 3", "replicas = 1")
            };
            let mut a = Bridge::launch(
                Some(Bridge::write_config(&format!("{toml}\n{}", table("a")))),
                None,
            );
            let b = Bridge::launch(
                Some(Bridge::write_config(&format!("{toml}\n{}", table("b")))),
                None,
            );
            a.peer = Some(Box::new(b));
            return a;
        }
        if toml.is_empty() {
            return Bridge::launch(None, None);
        }
        Bridge::launch(Some(Bridge::write_config(toml)), None)
    }

    /// Starts the bridge on the data directory `dir` (`--data DIR`: the embedded store,
    /// created if missing) with `toml` as its `--config` file. [`Bridge::restart`] starts it
    /// again on the same directory.
    pub fn start_with_data(dir: &Path, toml: &str) -> Bridge {
        Bridge::launch(Some(Bridge::write_config(toml)), Some(dir.to_owned()))
    }

    /// Writes `toml` to a fresh file for `--config`.
    fn write_config(toml: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "e2e-bridge-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = std::fs::write(&path, toml) {
            panic!("cannot write the bridge config {}: {e}", path.display());
        }
        path
    }

    /// The bridge binary: `$BRIDGE_BIN`, else `target/debug/bridge` of this workspace (for
    /// tests that run it by hand, to see how it fails).
    pub fn binary() -> PathBuf {
        if let Some(bin) = std::env::var_os("BRIDGE_BIN") {
            return PathBuf::from(bin);
        }
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| {
                if t.is_relative() {
                    workspace.join(t)
                } else {
                    t
                }
            })
            .unwrap_or_else(|| workspace.join("target"));
        target.join("debug").join("bridge")
    }

    fn launch(config_file: Option<PathBuf>, data: Option<PathBuf>) -> Bridge {
        let (child, l) = Bridge::spawn(config_file.as_deref(), data.as_deref());
        Bridge {
            child,
            mqtt_addr: l.mqtt_addr,
            http_url: l.http_url,
            ws_url: l.ws_url,
            secure: l.secure,
            config_file,
            data,
            peer: None,
            turn: AtomicU64::new(0),
        }
    }

    /// Starts the process and waits for its listening line: the child and its addresses.
    fn spawn(config_file: Option<&Path>, data: Option<&Path>) -> (Child, Listening) {
        let bin = Bridge::binary();
        if !bin.exists() {
            panic!(
                "no bridge binary at {}: run `cargo build -p bridge` first (or set BRIDGE_BIN)",
                bin.display()
            );
        }
        let mut cmd = Command::new(&bin);
        cmd.args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data"]);
        match data {
            Some(dir) => cmd.arg(dir),
            None => cmd.arg("none"),
        };
        if let Some(path) = config_file {
            cmd.arg("--config").arg(path);
        }
        // Logs only on request: E2E_BRIDGE_LOG=debug (or any RUST_LOG filter).
        match std::env::var("E2E_BRIDGE_LOG") {
            Ok(filter) => {
                cmd.env("RUST_LOG", filter).stderr(Stdio::inherit());
            }
            Err(_) => {
                cmd.stderr(Stdio::null());
            }
        }
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot start {}: {e}", bin.display()),
        };
        let Some(stdout) = child.stdout.take() else {
            panic!("the bridge's stdout was not captured");
        };
        match Listening::read(stdout) {
            Ok(l) => (child, l),
            Err(e) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{e} (exit status: {status:?}); run with E2E_BRIDGE_LOG=debug to see its logs"
                );
            }
        }
    }

    /// The MQTT over TCP address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The MQTT over WebSocket URL (`ws://.../mqtt`).
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// The dashboard and API URL (`http://.../`).
    pub fn http_url(&self) -> &str {
        &self.http_url
    }

    /// The MQTT over TLS address (`mqtts = "127.0.0.1:0"` in the configuration turns it on).
    pub fn mqtts_addr(&self) -> SocketAddr {
        match self.secure.mqtts_addr {
            Some(addr) => addr,
            None => panic!("the bridge has no MQTT over TLS listener (set `mqtts` in its config)"),
        }
    }

    /// The HTTPS URL (`https://.../`; `https = "127.0.0.1:0"` in the configuration).
    pub fn https_url(&self) -> &str {
        match &self.secure.https_url {
            Some(url) => url,
            None => panic!("the bridge has no HTTPS listener (set `https` in its config)"),
        }
    }

    /// The MQTT over secure WebSocket URL (`wss://.../mqtt`).
    pub fn wss_url(&self) -> &str {
        match &self.secure.wss_url {
            Some(url) => url,
            None => panic!("the bridge has no HTTPS listener (set `https` in its config)"),
        }
    }

    /// Sends SIGHUP (reload the certificates) and returns at once (to both bridges of a
    /// cluster: see [`clustered`]).
    pub fn reload(&self) {
        if let Some(peer) = &self.peer {
            peer.reload();
        }
        let pid = self.child.id().to_string();
        match Command::new("kill").args(["-HUP", &pid]).status() {
            Ok(s) if s.success() => {}
            other => panic!("cannot send SIGHUP to the bridge ({pid}): {other:?}"),
        }
    }

    /// Where a client on `transport` connects: in a cluster ([`clustered`]), the two
    /// bridges in turn.
    pub fn endpoint(&self, transport: Transport) -> Endpoint {
        if let Some(peer) = &self.peer {
            if self.turn.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
                return peer.endpoint(transport);
            }
        }
        match transport {
            Transport::Tcp => Endpoint::Tcp(self.mqtt_addr),
            Transport::Ws => Endpoint::Ws(self.ws_url.clone()),
        }
    }

    /// Connects a [`TestClient`] on `transport`: see [`TestClient::connect`].
    pub async fn connect(
        &self,
        transport: Transport,
        opts: ClientOptions,
    ) -> Result<(TestClient, ConnAck), E2eError> {
        TestClient::connect(&self.endpoint(transport), opts).await
    }

    /// Connects a [`TestClient`] on `transport` and returns it; panics if refused.
    pub async fn client(&self, transport: Transport, opts: ClientOptions) -> TestClient {
        let id = opts.client_id.clone();
        match self.connect(transport, opts).await {
            Ok((client, _)) => client,
            Err(e) => panic!("client `{id}` could not connect over {transport}: {e}"),
        }
    }

    /// Connects on `transport` expecting a refusal; returns the refusing CONNACK (panics
    /// if the connection is accepted or fails otherwise).
    pub async fn expect_refused(&self, transport: Transport, opts: ClientOptions) -> ConnAck {
        let id = opts.client_id.clone();
        match self.connect(transport, opts).await {
            Err(E2eError::Refused(ack)) => ack,
            Err(e) => panic!("client `{id}`: expected a refusing CONNACK, got: {e}"),
            Ok((_, ack)) => panic!("client `{id}`: expected a refusal, was accepted: {ack:?}"),
        }
    }

    /// Opens a [`RawClient`] on `transport` (nothing sent yet).
    pub async fn raw(&self, transport: Transport) -> RawClient {
        RawClient::open(&self.endpoint(transport)).await
    }

    /// Sends SIGTERM and waits (at most 10 s) for the process to exit.
    pub fn stop_gracefully(mut self) -> ExitStatus {
        self.stop()
    }

    /// Sends SIGTERM and waits (at most 10 s) for the process to exit, keeping the bridge
    /// for [`Bridge::restart`].
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM")
    }

    /// Kills the process with SIGKILL (no chance to write anything more: a crash) and
    /// waits for it, keeping the bridge for [`Bridge::restart`].
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL")
    }

    /// Starts the process again with the same configuration and data directory, after
    /// [`Bridge::stop`] or [`Bridge::kill9`]. The ports are new ones: connect again through
    /// [`Bridge::endpoint`] and friends.
    pub fn restart(&mut self) {
        match self.child.try_wait() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("restart: the bridge is still running; stop or kill it first"),
            Err(e) => panic!("cannot wait for the bridge: {e}"),
        }
        let (child, l) = Bridge::spawn(self.config_file.as_deref(), self.data.as_deref());
        self.child = child;
        self.mqtt_addr = l.mqtt_addr;
        self.http_url = l.http_url;
        self.ws_url = l.ws_url;
        self.secure = l.secure;
    }

    /// Sends `SIG{name}` with `kill` and waits (at most 10 s) for the process to exit.
    fn signal(&mut self, name: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        match Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
        {
            Ok(s) if s.success() => {}
            other => panic!("cannot send SIG{name} to the bridge ({pid}): {other:?}"),
        }
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => panic!("the bridge did not exit within 10 s of SIG{name}"),
                Err(e) => panic!("cannot wait for the bridge: {e}"),
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.config_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The addresses in the bridge's `bridge listening:` line: `http=http://ADDR/
/// ws=ws://ADDR/mqtt mqtt=ADDR`, then ` mqtts=ADDR` and ` https=https://ADDR/
/// wss=wss://ADDR/mqtt` for the TLS listeners that are on. A listener turned off (`--http
/// none`, `--mqtt none`) has no fields; the harnesses always start the plain ones, so
/// [`Listening::read`] requires them (read such a line with [`Listening::read_line`] and
/// [`Listening::field`]).
#[derive(Debug)]
pub struct Listening {
    /// MQTT over TCP.
    pub mqtt_addr: SocketAddr,
    /// `http://ADDR/`.
    pub http_url: String,
    /// `ws://ADDR/mqtt`.
    pub ws_url: String,
    /// The TLS listeners, when on.
    pub secure: SecureListening,
}

/// The TLS listeners' fields of the listening line, each present when that listener is on.
#[derive(Debug, Clone, Default)]
pub struct SecureListening {
    /// `mqtts=ADDR`: MQTT over TLS.
    pub mqtts_addr: Option<SocketAddr>,
    /// `https=https://ADDR/`.
    pub https_url: Option<String>,
    /// `wss=wss://ADDR/mqtt`.
    pub wss_url: Option<String>,
}

impl Listening {
    /// Waits up to 20 s for the listening line on the bridge's `stdout` and
    /// reads its addresses. A thread keeps draining `stdout` after it, so the bridge never
    /// blocks on a full pipe.
    pub fn read(stdout: std::process::ChildStdout) -> Result<Listening, String> {
        Listening::parse(&Listening::read_line(stdout)?)
    }

    /// The value of field `name` (`"mqtts"`) in a listening line, if there.
    pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    }

    /// Reads the line's addresses; the plain listeners' fields are required.
    pub fn parse(line: &str) -> Result<Listening, String> {
        let field = |name: &str| -> Result<String, String> {
            Listening::field(line, name)
                .map(str::to_owned)
                .ok_or_else(|| format!("no `{name}=` in the bridge's line: {line}"))
        };
        let addr = |name: &str, text: &str| -> Result<SocketAddr, String> {
            text.parse()
                .map_err(|e| format!("bad {name} address `{text}` from the bridge: {e}"))
        };
        let mqtt = field("mqtt")?;
        let mqtts_addr = match Listening::field(line, "mqtts") {
            Some(text) => Some(addr("mqtts", text)?),
            None => None,
        };
        Ok(Listening {
            mqtt_addr: addr("mqtt", &mqtt)?,
            http_url: field("http")?,
            ws_url: field("ws")?,
            secure: SecureListening {
                mqtts_addr,
                https_url: Listening::field(line, "https").map(str::to_owned),
                wss_url: Listening::field(line, "wss").map(str::to_owned),
            },
        })
    }

    /// Waits up to 20 s for the `bridge listening:` line on the bridge's `stdout` and
    /// returns it whole. A thread keeps draining `stdout` after it.
    pub fn read_line(stdout: std::process::ChildStdout) -> Result<String, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Nobody may listen any more; keep draining.
                let _ = tx.send(line);
            }
        });
        let started = Instant::now();
        let line = loop {
            let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("bridge listening:") => break line,
                Ok(_) => continue,
                Err(_) => {
                    return Err(format!(
                        "the bridge did not print its listening line within {STARTUP_TIMEOUT:?}"
                    ))
                }
            }
        };
        Ok(line)
    }
}

/// A fresh, empty directory under [`std::env::temp_dir`], removed with all it holds when
/// dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `e2e-{label}-{pid}-{n}` (emptied first if a previous run left it).
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "e2e-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("cannot create the directory {}: {e}", path.display());
        }
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ----- transports --------------------------------------------------------------------------

/// How a client reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket at `/mqtt`, subprotocol `mqtt`, binary frames.
    Ws,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "TCP",
            Transport::Ws => "WebSocket",
        })
    }
}

/// Both transports.
pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Ws];

/// Both protocol versions.
pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// A broker address on one transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A `ws://` URL.
    Ws(String),
    /// MQTT over TLS at this address, with this client.
    Mqtts(SocketAddr, TlsClient),
    /// A `wss://` URL, with this client.
    Wss(String, TlsClient),
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WssStream = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// One open connection, TCP or WebSocket, plain or TLS, seen as chunks of bytes.
#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    Ws(Box<WsStream>),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Wss(Box<WssStream>),
    Closed,
}

/// A WebSocket request for `url` offering the `mqtt` subprotocol.
fn ws_request(url: &str) -> io::Result<tungstenite::handshake::client::Request> {
    let mut request = url.into_client_request().map_err(io::Error::other)?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    Ok(request)
}

/// Checks that the handshake selected the `mqtt` subprotocol.
fn check_subprotocol(response: &tungstenite::handshake::client::Response) -> io::Result<()> {
    let protocol = response.headers().get("Sec-WebSocket-Protocol");
    if protocol.and_then(|p| p.to_str().ok()) != Some("mqtt") {
        return Err(io::Error::other(format!(
            "the WebSocket handshake did not select the `mqtt` subprotocol: {protocol:?}"
        )));
    }
    Ok(())
}

/// The `host:port` of a `ws://` or `wss://` URL.
fn url_addr(url: &str) -> io::Result<SocketAddr> {
    let rest = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    rest.parse()
        .map_err(|e| io::Error::other(format!("no address in `{url}`: {e}")))
}

/// The next chunk of a WebSocket; `Ok(None)` once the peer closed.
async fn ws_read<S>(ws: &mut WebSocketStream<S>) -> io::Result<Option<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(_))) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the broker sent a text frame",
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                return Ok(None)
            }
            Some(Err(tungstenite::Error::Io(e))) => return Err(e),
            Some(Err(e)) => return Err(io::Error::other(e)),
        }
    }
}

impl Conn {
    async fn open(endpoint: &Endpoint) -> io::Result<Conn> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Conn::Tcp(stream))
            }
            Endpoint::Ws(url) => {
                let (ws, response) = tokio_tungstenite::connect_async(ws_request(url)?)
                    .await
                    .map_err(io::Error::other)?;
                check_subprotocol(&response)?;
                Ok(Conn::Ws(Box::new(ws)))
            }
            Endpoint::Mqtts(addr, client) => {
                Ok(Conn::Tls(Box::new(tls::connect(*addr, client).await?)))
            }
            Endpoint::Wss(url, client) => {
                let stream = tls::connect(url_addr(url)?, &client.with_alpn(&["http/1.1"])).await?;
                let (ws, response) = tokio_tungstenite::client_async(ws_request(url)?, stream)
                    .await
                    .map_err(io::Error::other)?;
                check_subprotocol(&response)?;
                Ok(Conn::Wss(Box::new(ws)))
            }
        }
    }

    /// The next chunk; `Ok(None)` once the peer closed.
    async fn read(&mut self) -> io::Result<Option<Bytes>> {
        match self {
            Conn::Tcp(stream) => {
                let mut buf = vec![0u8; 16 * 1024];
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(Bytes::from(buf)))
            }
            Conn::Tls(stream) => {
                let mut buf = vec![0u8; 16 * 1024];
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(Bytes::from(buf)))
            }
            Conn::Ws(ws) => ws_read(ws).await,
            Conn::Wss(ws) => ws_read(ws).await,
            Conn::Closed => Ok(None),
        }
    }

    /// Writes `data` (one binary frame on a WebSocket).
    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(stream) => stream.write_all(data).await,
            Conn::Tls(stream) => {
                stream.write_all(data).await?;
                stream.flush().await
            }
            Conn::Ws(ws) => ws
                .send(Message::Binary(Bytes::copy_from_slice(data)))
                .await
                .map_err(io::Error::other),
            Conn::Wss(ws) => ws
                .send(Message::Binary(Bytes::copy_from_slice(data)))
                .await
                .map_err(io::Error::other),
            Conn::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Sends a WebSocket text frame (a protocol violation for MQTT [MQTT-6.0.0-1]).
    async fn write_text(&mut self, text: &str) -> io::Result<()> {
        match self {
            Conn::Ws(ws) => ws
                .send(Message::text(text.to_owned()))
                .await
                .map_err(io::Error::other),
            Conn::Wss(ws) => ws
                .send(Message::text(text.to_owned()))
                .await
                .map_err(io::Error::other),
            _ => Err(io::Error::other("text frames exist only on WebSocket")),
        }
    }

    /// Closes our sending side cleanly (TCP FIN, WebSocket close frame); reading goes on
    /// until the peer closes too.
    async fn shutdown(&mut self) {
        match self {
            Conn::Tcp(stream) => {
                let _ = stream.shutdown().await;
            }
            Conn::Tls(stream) => {
                let _ = stream.shutdown().await;
            }
            Conn::Ws(ws) => {
                let _ = SinkExt::close(&mut **ws).await;
            }
            Conn::Wss(ws) => {
                let _ = SinkExt::close(&mut **ws).await;
            }
            Conn::Closed => {}
        }
    }
}

// ----- errors ------------------------------------------------------------------------------

/// Why a [`TestClient`] could not connect.
#[derive(Debug)]
pub enum E2eError {
    /// The socket or the WebSocket handshake failed.
    Io(io::Error),
    /// The broker answered CONNACK with an error; the whole CONNACK.
    Refused(ConnAck),
    /// The client state machine failed.
    Client(ClientError),
    /// The connection ended before CONNACK.
    Closed(Ended),
    /// No CONNACK in time.
    Timeout,
}

impl fmt::Display for E2eError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            E2eError::Io(e) => write!(f, "transport: {e}"),
            E2eError::Refused(ack) => write!(f, "refused: CONNACK {:?}", ack.reason),
            E2eError::Client(e) => write!(f, "client: {e}"),
            E2eError::Closed(how) => write!(f, "closed before CONNACK: {how:?}"),
            E2eError::Timeout => write!(f, "no CONNACK within {DEFAULT_TIMEOUT:?}"),
        }
    }
}

impl std::error::Error for E2eError {}

impl E2eError {
    /// The reason of a refused CONNACK.
    pub fn refused_reason(&self) -> Option<ReasonCode> {
        match self {
            E2eError::Refused(ack) => Some(ack.reason),
            _ => None,
        }
    }
}

impl From<io::Error> for E2eError {
    fn from(e: io::Error) -> Self {
        E2eError::Io(e)
    }
}

impl From<ClientError> for E2eError {
    fn from(e: ClientError) -> Self {
        E2eError::Client(e)
    }
}

/// How a [`TestClient`]'s connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per connection, never on a hot path
pub enum Ended {
    /// The broker closed it, after sending this DISCONNECT (5.0) if it sent one.
    ByServer(Option<Disconnect>),
    /// We closed it (DISCONNECT, or a dropped connection).
    ByUs,
    /// The client state machine gave up (bad bytes from the broker, keep-alive timeout).
    Failed(ClientError),
}

// ----- the test client ---------------------------------------------------------------------

/// Client options with the defaults the tests want: the given version, id and clean flag.
pub fn options(version: ProtocolVersion, client_id: &str, clean_start: bool) -> ClientOptions {
    ClientOptions::new(version, client_id, clean_start)
}

/// Options for a session that outlives its connection: clean session 0 (3.1.1), or clean
/// start 0 with a Session Expiry Interval of 300 s (5.0).
pub fn persistent(version: ProtocolVersion, client_id: &str) -> ClientOptions {
    let mut o = ClientOptions::new(version, client_id, false);
    if version == ProtocolVersion::V5 {
        o.session_expiry_interval = Some(300);
    }
    o
}

/// Options for a session that ends with its connection: clean session 1 (3.1.1), or clean
/// start 1 with Session Expiry Interval 0 (5.0).
pub fn clean(version: ProtocolVersion, client_id: &str) -> ClientOptions {
    ClientOptions::new(version, client_id, true)
}

/// A topic name, for tests (panics on an invalid one: use [`RawClient`] for those).
pub fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap_or_else(|e| panic!("bad topic name `{s}` in a test: {e}"))
}

/// A topic filter, for tests.
pub fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap_or_else(|e| panic!("bad topic filter `{s}` in a test: {e}"))
}

/// An MQTT client over a real socket, driving [`protocol::client::Client`].
///
/// Everything happens inside the calls a test makes: bytes read from the socket are fed to
/// the state machine, whatever it wants to send is written, its timer runs (PINGREQ) unless
/// the client was told to [go silent](TestClient::go_silent). Messages that arrive while a
/// call waits for something else are kept for [`TestClient::recv`].
#[derive(Debug)]
pub struct TestClient {
    conn: Conn,
    client: Client,
    /// Our own decoder, so every packet is seen whole (a DISCONNECT's properties, DUP
    /// flags) before the state machine takes it.
    decoder: Decoder,
    origin: Instant,
    version: ProtocolVersion,
    label: String,
    messages: VecDeque<Publish>,
    published: HashMap<PublishToken, ReasonCode>,
    subacks: HashMap<u16, SubAck>,
    unsubacks: HashMap<u16, UnsubAck>,
    connack: Option<ConnAck>,
    received: Vec<Packet>,
    ended: Option<Ended>,
    silent: bool,
}

impl TestClient {
    /// Opens the transport, sends CONNECT and waits for CONNACK. A refused CONNACK is
    /// [`E2eError::Refused`] with the CONNACK.
    pub async fn connect(
        endpoint: &Endpoint,
        opts: ClientOptions,
    ) -> Result<(TestClient, ConnAck), E2eError> {
        let conn = Conn::open(endpoint).await?;
        let version = opts.version;
        let mut decoder = Decoder::with_version(version, opts.max_packet_size);
        if version == ProtocolVersion::V5 {
            decoder.set_topic_alias_maximum(opts.topic_alias_maximum);
        }
        let label = if opts.client_id.is_empty() {
            "(empty client id)".to_owned()
        } else {
            opts.client_id.clone()
        };
        let mut c = TestClient {
            conn,
            client: Client::new(opts),
            decoder,
            origin: Instant::now(),
            version,
            label,
            messages: VecDeque::new(),
            published: HashMap::new(),
            subacks: HashMap::new(),
            unsubacks: HashMap::new(),
            connack: None,
            received: Vec::new(),
            ended: None,
            silent: false,
        };
        c.client.connect(c.now())?;
        c.flush().await;
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        loop {
            if let Some(ack) = c.connack.take() {
                if ack.reason.is_error() {
                    return Err(E2eError::Refused(ack));
                }
                return Ok((c, ack));
            }
            if let Some(how) = c.ended.take() {
                return Err(E2eError::Closed(how));
            }
            if !c.pump(deadline).await {
                return Err(E2eError::Timeout);
            }
        }
    }

    /// The protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The state machine (its session view, its options).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every packet received so far, in order.
    pub fn received(&self) -> &[Packet] {
        &self.received
    }

    /// How the connection ended, if it did.
    pub fn ended(&self) -> Option<&Ended> {
        self.ended.as_ref()
    }

    /// Stops sending anything on our own: no PINGREQ, so the broker's keep-alive runs out.
    pub fn go_silent(&mut self) {
        self.silent = true;
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant_of(&self, t: Timestamp) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_millis(t.as_millis()))
    }

    /// Writes whatever the state machine has to send.
    async fn flush(&mut self) {
        let mut buf = BytesMut::new();
        if let Err(e) = self.client.encode_transmit(&mut buf) {
            panic!("{}: cannot encode a packet: {e}", self.label);
        }
        if !buf.is_empty() && self.conn.write(&buf).await.is_err() && self.ended.is_none() {
            self.ended = Some(Ended::ByServer(None));
            self.client.connection_lost();
        }
    }

    /// Waits for one thing to happen (bytes, the peer closing, the keep-alive timer) until
    /// `deadline`; returns false once the deadline has passed.
    async fn pump(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.ended.is_some() {
            // Nothing more can arrive; just let the time pass.
            tokio::time::sleep_until(deadline).await;
            return false;
        }
        let timer = if self.silent {
            None
        } else {
            self.client.poll_timeout().map(|t| self.instant_of(t))
        };
        let wake = timer.map_or(deadline, |t| t.min(deadline));
        match tokio::time::timeout_at(wake, self.conn.read()).await {
            Ok(Ok(Some(bytes))) => self.on_bytes(&bytes),
            Ok(Ok(None)) | Ok(Err(_)) => {
                self.client.connection_lost();
                self.ended = Some(Ended::ByServer(None));
                self.conn = Conn::Closed;
            }
            Err(_) => {
                if timer.is_some_and(|t| t <= tokio::time::Instant::now()) {
                    if let Err(e) = self.client.handle_timeout(self.now()) {
                        self.ended = Some(Ended::Failed(e));
                    }
                }
            }
        }
        self.take_events();
        self.flush().await;
        if matches!(self.ended, Some(Ended::Failed(_))) {
            self.conn = Conn::Closed;
        }
        tokio::time::Instant::now() < deadline
    }

    fn on_bytes(&mut self, mut input: &[u8]) {
        loop {
            match self.decoder.decode(&mut input) {
                Ok(Some(packet)) => {
                    self.received.push(packet.clone());
                    let disconnect = match &packet {
                        Packet::Disconnect(d) => Some(d.clone()),
                        Packet::ConnAck(ack) => {
                            self.connack = Some(ack.clone());
                            None
                        }
                        _ => None,
                    };
                    let result = self.client.handle_packet(packet, self.now());
                    if let Some(d) = disconnect {
                        self.ended = Some(Ended::ByServer(Some(d)));
                        return;
                    }
                    if let Err(e) = result {
                        if !matches!(e, ClientError::Refused(_)) {
                            self.ended = Some(Ended::Failed(e));
                        }
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.client.connection_lost();
                    self.ended = Some(Ended::Failed(ClientError::Decode(e)));
                    return;
                }
            }
        }
    }

    fn take_events(&mut self) {
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Connected { .. } => {}
                Event::Message(p) => self.messages.push_back(p),
                Event::Published { token, reason } => {
                    self.published.insert(token, reason);
                }
                Event::SubAck(ack) => {
                    self.subacks.insert(ack.packet_id.get(), ack);
                }
                Event::UnsubAck(ack) => {
                    self.unsubacks.insert(ack.packet_id.get(), ack);
                }
            }
        }
    }

    /// Pumps until `done` returns something or `timeout` passes; panics with `what` then.
    async fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&mut Self) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.take_events();
            if let Some(v) = done(self) {
                return v;
            }
            if let Some(how) = &self.ended {
                panic!(
                    "{}: connection ended ({how:?}) while waiting for {what}",
                    self.label
                );
            }
            if !self.pump(deadline).await {
                if let Some(v) = done(self) {
                    return v;
                }
                panic!("{}: no {what} within {timeout:?}", self.label);
            }
        }
    }

    /// Subscribes to one filter with default options; returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        let sub = Subscription::new(self::filter(filter), qos);
        self.subscribe_with(vec![sub], Properties::default()).await
    }

    /// Subscribes with full control (options, Subscription Identifier, user properties).
    pub async fn subscribe_with(
        &mut self,
        subscriptions: Vec<Subscription>,
        properties: Properties,
    ) -> SubAck {
        let id = match self.client.subscribe(subscriptions, properties, self.now()) {
            Ok(id) => id.get(),
            Err(e) => panic!("{}: cannot subscribe: {e}", self.label),
        };
        self.flush().await;
        self.wait_for(DEFAULT_TIMEOUT, "SUBACK", |c| c.subacks.remove(&id))
            .await
    }

    /// Unsubscribes from one filter; returns the UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) -> UnsubAck {
        let filters = vec![self::filter(filter)];
        let id = match self
            .client
            .unsubscribe(filters, Properties::default(), self.now())
        {
            Ok(id) => id.get(),
            Err(e) => panic!("{}: cannot unsubscribe: {e}", self.label),
        };
        self.flush().await;
        self.wait_for(DEFAULT_TIMEOUT, "UNSUBACK", |c| c.unsubacks.remove(&id))
            .await
    }

    /// Publishes and waits until done: QoS 0 sent, QoS 1 PUBACK, QoS 2 PUBCOMP. Returns the
    /// reason (Success, or 0x10 No matching subscribers in 5.0, or an error).
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> ReasonCode {
        self.publish_with_properties(topic, payload, qos, retain, Properties::default())
            .await
    }

    /// [`TestClient::publish`] with 5.0 properties.
    pub async fn publish_with_properties(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> ReasonCode {
        let token = self
            .start_publish(topic, payload, qos, retain, properties)
            .await;
        self.wait_published(token).await
    }

    /// Starts a publish without waiting for its acknowledgement.
    pub async fn start_publish(
        &mut self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> PublishToken {
        let token = match self.client.publish(
            self::topic(topic),
            payload.into(),
            qos,
            retain,
            properties,
            self.now(),
        ) {
            Ok(token) => token,
            Err(e) => panic!("{}: cannot publish to {topic}: {e}", self.label),
        };
        self.flush().await;
        token
    }

    /// Waits for the outcome of a publish started with [`TestClient::start_publish`].
    pub async fn wait_published(&mut self, token: PublishToken) -> ReasonCode {
        self.wait_for(DEFAULT_TIMEOUT, "publish acknowledgement", |c| {
            c.published.remove(&token)
        })
        .await
    }

    /// The outcome of a publish if it comes within `timeout`.
    pub async fn published_within(
        &mut self,
        token: PublishToken,
        timeout: Duration,
    ) -> Option<ReasonCode> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.take_events();
            if let Some(reason) = self.published.remove(&token) {
                return Some(reason);
            }
            if !self.pump(deadline).await {
                self.take_events();
                return self.published.remove(&token);
            }
        }
    }

    /// The next application message, within [`DEFAULT_TIMEOUT`].
    pub async fn recv(&mut self) -> Publish {
        self.recv_within(DEFAULT_TIMEOUT).await
    }

    /// The next application message, within `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> Publish {
        self.wait_for(timeout, "message", |c| c.messages.pop_front())
            .await
    }

    /// The next message if one arrives within `timeout`.
    pub async fn try_recv_within(&mut self, timeout: Duration) -> Option<Publish> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.take_events();
            if let Some(p) = self.messages.pop_front() {
                return Some(p);
            }
            if !self.pump(deadline).await {
                return self.messages.pop_front();
            }
        }
    }

    /// Receives `n` messages and returns their payloads as strings, in arrival order.
    pub async fn recv_payloads(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let p = self.recv().await;
            out.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
        out
    }

    /// Panics if any message arrives within `wait`.
    pub async fn expect_no_message(&mut self, wait: Duration) {
        if let Some(p) = self.try_recv_within(wait).await {
            panic!(
                "{}: expected no message, got one on `{}`: {:?}",
                self.label, p.topic, p.payload
            );
        }
    }

    /// Waits for whatever is in flight to settle: a PINGREQ round trip.
    pub async fn sync(&mut self) {
        let before = self.count_pingresp();
        let mut buf = BytesMut::new();
        if let Err(e) = Packet::PingReq.encode(self.version, &mut buf) {
            panic!("{}: cannot encode PINGREQ: {e}", self.label);
        }
        if self.conn.write(&buf).await.is_err() {
            panic!("{}: cannot write PINGREQ", self.label);
        }
        self.wait_for(DEFAULT_TIMEOUT, "PINGRESP", |c| {
            (c.count_pingresp() > before).then_some(())
        })
        .await;
    }

    /// A PINGREQ round trip, or the end of the connection, whichever comes first (for a
    /// connection the broker may close meanwhile: see [`TestClient::ended`]).
    pub async fn sync_or_end(&mut self) {
        let before = self.count_pingresp();
        let mut buf = BytesMut::new();
        if let Err(e) = Packet::PingReq.encode(self.version, &mut buf) {
            panic!("{}: cannot encode PINGREQ: {e}", self.label);
        }
        if self.conn.write(&buf).await.is_err() {
            self.ended.get_or_insert(Ended::ByServer(None));
            return;
        }
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        while self.count_pingresp() == before && self.ended.is_none() {
            if !self.pump(deadline).await {
                panic!(
                    "{}: neither PINGRESP nor the end within {DEFAULT_TIMEOUT:?}",
                    self.label
                );
            }
        }
    }

    fn count_pingresp(&self) -> usize {
        self.received
            .iter()
            .filter(|p| matches!(p, Packet::PingResp))
            .count()
    }

    /// A normal disconnection: DISCONNECT (reason 0x00), then the socket is closed once the
    /// broker closed its side (or after a short wait).
    pub async fn disconnect(self) {
        self.disconnect_with(ReasonCode::Success, Properties::default())
            .await
    }

    /// DISCONNECT with a reason and properties (5.0: 0x04 keeps the will; a Session Expiry
    /// Interval changes the session's), then close.
    pub async fn disconnect_with(mut self, reason: ReasonCode, properties: Properties) {
        self.send_disconnect(reason, properties).await;
        self.conn.shutdown().await;
        // Read until the broker closes, so nothing unread makes our close a reset.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.ended.is_none() && self.pump(deadline).await {}
    }

    /// Sends DISCONNECT and keeps the socket open (to see what the broker does next).
    pub async fn send_disconnect(&mut self, reason: ReasonCode, properties: Properties) {
        let d = Disconnect { reason, properties };
        let mut buf = BytesMut::new();
        if let Err(e) = Packet::Disconnect(d).encode(self.version, &mut buf) {
            panic!("{}: cannot encode DISCONNECT: {e}", self.label);
        }
        self.client.connection_lost();
        if self.conn.write(&buf).await.is_err() {
            panic!("{}: cannot write DISCONNECT", self.label);
        }
    }

    /// Closes the socket without DISCONNECT: to the broker, a network loss.
    pub fn drop_connection(self) {
        drop(self);
    }

    /// Waits (at most [`DEFAULT_TIMEOUT`]) for the broker to close the connection; returns
    /// the DISCONNECT it sent first, if any (5.0). Panics if we closed it or the client
    /// failed.
    pub async fn expect_closed(&mut self) -> Option<Disconnect> {
        self.expect_closed_within(DEFAULT_TIMEOUT).await
    }

    /// [`TestClient::expect_closed`] with a deadline.
    pub async fn expect_closed_within(&mut self, timeout: Duration) -> Option<Disconnect> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.ended.is_none() {
            if !self.pump(deadline).await && self.ended.is_none() {
                panic!(
                    "{}: the broker did not close the connection within {timeout:?}",
                    self.label
                );
            }
        }
        match &self.ended {
            Some(Ended::ByServer(d)) => d.clone(),
            other => panic!("{}: connection ended otherwise: {other:?}", self.label),
        }
    }

    /// Writes raw bytes on the connection (to break the protocol on purpose).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if self.conn.write(bytes).await.is_err() {
            panic!("{}: cannot write", self.label);
        }
    }
}

// ----- the raw client ----------------------------------------------------------------------

/// What [`RawClient::read_within`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // returned once per read, moved straight out
pub enum Read {
    /// A whole packet.
    Packet(Packet),
    /// The broker closed the connection.
    Closed,
    /// Nothing within the time given.
    Nothing,
}

/// Raw bytes and packets over TCP or WebSocket: no state machine, nothing automatic (no
/// acknowledgements, no PINGREQ, aliases left unresolved).
#[derive(Debug)]
pub struct RawClient {
    conn: Conn,
    buf: BytesMut,
    version: ProtocolVersion,
    closed: bool,
}

impl RawClient {
    /// Opens the transport; nothing is sent.
    pub async fn open(endpoint: &Endpoint) -> RawClient {
        match Conn::open(endpoint).await {
            Ok(conn) => RawClient {
                conn,
                buf: BytesMut::new(),
                version: ProtocolVersion::V311,
                closed: false,
            },
            Err(e) => panic!("raw client cannot connect to {endpoint:?}: {e}"),
        }
    }

    /// The version packets are encoded and decoded with (set by [`RawClient::connect`]).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// Writes bytes (one WebSocket frame).
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.conn.write(bytes).await {
            panic!("raw client cannot write: {e}");
        }
    }

    /// Writes bytes, ignoring a failure (the broker may already have closed).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.conn.write(bytes).await.is_ok()
    }

    /// Sends a WebSocket text frame.
    pub async fn send_text(&mut self, text: &str) {
        if let Err(e) = self.conn.write_text(text).await {
            panic!("raw client cannot write a text frame: {e}");
        }
    }

    /// Encodes `packet` with the client's version and writes it.
    pub async fn send(&mut self, packet: Packet) {
        let bytes = encode(&packet, self.version);
        self.send_bytes(&bytes).await;
    }

    /// Sends CONNECT (adopting its version) and returns the CONNACK.
    pub async fn connect(&mut self, connect: Connect) -> ConnAck {
        self.version = connect.protocol;
        self.send(Packet::Connect(Box::new(connect))).await;
        match self.read_packet().await {
            Some(Packet::ConnAck(ack)) => ack,
            other => panic!("raw client expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet within [`DEFAULT_TIMEOUT`]; `None` if the broker closed.
    pub async fn read_packet(&mut self) -> Option<Packet> {
        match self.read_within(DEFAULT_TIMEOUT).await {
            Read::Packet(p) => Some(p),
            Read::Closed => None,
            Read::Nothing => panic!("raw client: no packet within {DEFAULT_TIMEOUT:?}"),
        }
    }

    /// The next packet within `timeout`, or how the wait ended.
    pub async fn read_within(&mut self, timeout: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match Packet::decode(&self.buf, self.version, u32::MAX) {
                Ok(Some((p, n))) => {
                    let _ = self.buf.split_to(n);
                    return Read::Packet(p);
                }
                Ok(None) => {}
                Err(e) => panic!("raw client: the broker sent a bad packet: {e}"),
            }
            if self.closed {
                return Read::Closed;
            }
            match tokio::time::timeout_at(deadline, self.conn.read()).await {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    self.closed = true;
                    self.conn = Conn::Closed;
                }
                Err(_) => return Read::Nothing,
            }
        }
    }

    /// Panics if a packet arrives (or the connection closes) within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        match self.read_within(wait).await {
            Read::Nothing => {}
            other => panic!("raw client: expected nothing for {wait:?}, got {other:?}"),
        }
    }

    /// Reads until the broker closes the connection, within `timeout`; returns every
    /// packet that came first (a DISCONNECT, in 5.0, is the last).
    pub async fn expect_closed_within(&mut self, timeout: Duration) -> Vec<Packet> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut packets = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_within(left).await {
                Read::Packet(p) => packets.push(p),
                Read::Closed => return packets,
                Read::Nothing => panic!(
                    "raw client: the broker did not close the connection within {timeout:?} \
                     (received {packets:?})"
                ),
            }
        }
    }

    /// Closes the connection without DISCONNECT.
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// Encodes one packet.
pub fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Err(e) = packet.encode(version, &mut buf) {
        panic!("cannot encode {packet:?}: {e}");
    }
    buf
}

/// The last DISCONNECT among `packets`, if any.
pub fn disconnect_in(packets: &[Packet]) -> Option<&Disconnect> {
    packets.iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d),
        _ => None,
    })
}

// ----- running a body for every case -------------------------------------------------------

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The longest one case may run.
const CASE_TIMEOUT: Duration = Duration::from_secs(40);

/// Runs the cases concurrently (each on its own task), then panics naming every case that
/// failed, with its panic message.
pub async fn run_cases(cases: Vec<(String, CaseFuture)>) {
    let total = cases.len();
    let handles: Vec<(String, tokio::task::JoinHandle<()>)> = cases
        .into_iter()
        .map(|(name, fut)| {
            let handle = tokio::spawn(async move {
                if tokio::time::timeout(CASE_TIMEOUT, fut).await.is_err() {
                    panic!("case did not finish within {CASE_TIMEOUT:?}");
                }
            });
            (name, handle)
        })
        .collect();
    let mut failures = Vec::new();
    for (name, handle) in handles {
        if let Err(e) = handle.await {
            let msg = if e.is_panic() {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(non-string panic)".to_owned())
            } else {
                e.to_string()
            };
            failures.push(format!("[{name}] {msg}"));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {total} cases failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// Runs `body` for TCP and WebSocket × MQTT 3.1.1 and 5.0, concurrently.
pub async fn for_each_transport_and_version<F, Fut>(body: F)
where
    F: Fn(Transport, ProtocolVersion) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut cases: Vec<(String, CaseFuture)> = Vec::new();
    for t in TRANSPORTS {
        for v in VERSIONS {
            cases.push((
                format!("{t}, MQTT {}", version_name(v)),
                Box::pin(body(t, v)),
            ));
        }
    }
    run_cases(cases).await;
}

/// Runs `body` for TCP and WebSocket, concurrently (for behaviours of one version).
pub async fn for_each_transport<F, Fut>(body: F)
where
    F: Fn(Transport) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cases: Vec<(String, CaseFuture)> = TRANSPORTS
        .into_iter()
        .map(|t| (t.to_string(), Box::pin(body(t)) as CaseFuture))
        .collect();
    run_cases(cases).await;
}

/// Runs `body` for MQTT 3.1.1 and 5.0 over TCP, concurrently (for raw-byte behaviours the
/// transport does not change).
pub async fn for_each_version<F, Fut>(body: F)
where
    F: Fn(ProtocolVersion) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cases: Vec<(String, CaseFuture)> = VERSIONS
        .into_iter()
        .map(|v| {
            (
                format!("MQTT {}", version_name(v)),
                Box::pin(body(v)) as CaseFuture,
            )
        })
        .collect();
    run_cases(cases).await;
}

/// "3.1.1" or "5.0".
pub fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// The payload as a string, for assertions.
pub fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}
