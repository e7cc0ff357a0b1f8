//! Interop with real third-party clients: the bridge seen by `mosquitto_pub` /
//! `mosquitto_sub` (Debian `mosquitto-clients` 2.0) over TCP, MQTT.js 5 (npm `mqtt`) over
//! WebSocket, and paho-mqtt 2.x (PyPI) over TCP and over WebSocket, each in MQTT 3.1.1 and 5.0.
//!
//! # How
//! Every case starts its own bridge ([`Bridge::start`]) and runs the clients as child
//! processes, asserting on what they print and how they exit. Node and Python run the helper
//! scripts in `tests/interop/` (`mqttjs.mjs`, `paho_client.py`); both play the same two roles
//! with the same options and print the same lines (`CONNACK session_present=…`, `SUBACK …`,
//! `READY`, `MSG qos retain topic payload`, …), and `mosquitto_sub -d -F 'MSG %q %r %t %p'`
//! prints the same `MSG` lines, so one scenario body serves every client, and a publisher and
//! a subscriber may be different clients.
//!
//! # Layout
//! - [`Client`]: one third-party client at one version on one transport; [`CLIENTS`]
//!   lists all eight.
//! - [`Sub`] and [`Pub`]: what one connection does; [`Client::start_sub`], [`Client::run_sub`],
//!   [`Client::publish`], [`Client::lose_connection`] turn them into command lines.
//! - [`Proc`] and [`Outcome`]: a child process killed on drop, every wait with a deadline,
//!   and its output parsed.
//! - The scenarios (connect/subscribe/publish QoS 0, 1, 2; retained; will; the seed scenario
//!   with clean session 0 and 1), each run for every client concurrently, and across clients.
//!
//! # What mosquitto cannot show
//! `mosquitto_sub` 2.0 prints `received CONNACK (0)` in debug mode but not the session
//! present flag, and it always subscribes after connecting. For mosquitto the seed scenario
//! is asserted through the messages alone: the three messages were published while the
//! client was away, so only a resumed session can deliver them.
//!
//! # Needs
//! `node` with `mqtt` in the repository's `node_modules`, `python3` with paho-mqtt 2.x, and
//! `mosquitto_pub` / `mosquitto_sub`: `scripts/setup.sh` installs all of them. A missing one
//! fails the tests with a message saying so; nothing is skipped.

#![allow(clippy::unwrap_used)]

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use e2e::protocol::ProtocolVersion;
use e2e::{run_cases, version_name, Bridge, Transport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// How long a client process has to connect and subscribe (print `READY`).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a publishing process has to connect, publish everything and disconnect.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a subscriber waits for the messages it expects.
const MESSAGE_WAIT: Duration = Duration::from_secs(15);

/// The Session Expiry Interval of a 5.0 persistent session, in seconds.
const SESSION_EXPIRY: u32 = 60;

// ----- the clients -------------------------------------------------------------------------

/// One third-party client, at one protocol version, on one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// `mosquitto_sub` / `mosquitto_pub`, over TCP.
    Mosquitto(ProtocolVersion),
    /// MQTT.js 5 under Node, over WebSocket.
    MqttJs(ProtocolVersion),
    /// paho-mqtt 2.x under Python.
    Paho(Transport, ProtocolVersion),
}

/// Every client, version and transport the issue asks for.
const CLIENTS: [Client; 8] = [
    Client::Mosquitto(V311),
    Client::Mosquitto(V5),
    Client::MqttJs(V311),
    Client::MqttJs(V5),
    Client::Paho(Transport::Tcp, V311),
    Client::Paho(Transport::Tcp, V5),
    Client::Paho(Transport::Ws, V311),
    Client::Paho(Transport::Ws, V5),
];

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Mosquitto(v) => write!(f, "mosquitto {} over TCP", version_name(*v)),
            Client::MqttJs(v) => write!(f, "MQTT.js {} over WebSocket", version_name(*v)),
            Client::Paho(t, v) => write!(f, "paho-mqtt {} over {t}", version_name(*v)),
        }
    }
}

/// Clean session 1 (5.0: clean start 1, no expiry), or a session kept while away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Clean,
    /// Clean session 0 (5.0: clean start 0 and a Session Expiry Interval of
    /// [`SESSION_EXPIRY`]).
    Persistent,
}

/// A will: topic, payload, QoS (never retained here).
#[derive(Debug, Clone)]
struct Will {
    topic: &'static str,
    payload: &'static str,
    qos: u8,
}

/// How a subscriber connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// DISCONNECT, then close.
    Disconnect,
    /// The socket goes away without DISCONNECT (scripts only; mosquitto is killed instead).
    Abrupt,
    /// Stay connected until killed (mosquitto only).
    Hold,
}

/// What one subscribing connection does.
#[derive(Debug, Clone)]
struct Sub {
    id: Option<&'static str>,
    session: Session,
    topic: &'static str,
    qos: u8,
    /// Subscribe after connecting (mosquitto_sub always does).
    subscribe: bool,
    /// End after this many messages; 0: end after `wait`.
    count: usize,
    /// With `count` > 0 the deadline for the messages, else how long to listen.
    wait: Duration,
    /// How long to keep listening after `count` messages, to catch extra ones (scripts).
    linger: Duration,
    will: Option<Will>,
    end: End,
}

impl Sub {
    /// Subscribe to `topic` at `qos`, then end at once.
    fn new(topic: &'static str, qos: u8) -> Sub {
        Sub {
            id: None,
            session: Session::Clean,
            topic,
            qos,
            subscribe: true,
            count: 0,
            wait: Duration::ZERO,
            linger: Duration::ZERO,
            will: None,
            end: End::Disconnect,
        }
    }

    fn id(mut self, id: &'static str) -> Sub {
        self.id = Some(id);
        self
    }

    fn session(mut self, session: Session) -> Sub {
        self.session = session;
        self
    }

    /// Waits for `n` messages (within [`MESSAGE_WAIT`]).
    fn count(mut self, n: usize) -> Sub {
        self.count = n;
        self.wait = MESSAGE_WAIT;
        self
    }

    /// Listens for `wait`, expecting no particular number of messages.
    fn listen(mut self, wait: Duration) -> Sub {
        self.count = 0;
        self.wait = wait;
        self
    }

    fn linger(mut self, linger: Duration) -> Sub {
        self.linger = linger;
        self
    }

    /// Reconnects without subscribing again (what a client does when its session is kept;
    /// mosquitto_sub subscribes anyway).
    fn no_subscribe(mut self) -> Sub {
        self.subscribe = false;
        self
    }

    fn will(mut self, will: Will) -> Sub {
        self.will = Some(will);
        self
    }
}

/// One message to publish: QoS, retain, payload.
#[derive(Debug, Clone, Copy)]
struct Pub {
    qos: u8,
    retain: bool,
    payload: &'static str,
}

fn publication(qos: u8, payload: &'static str) -> Pub {
    Pub {
        qos,
        retain: false,
        payload,
    }
}

/// Panics, saying what to do, unless `program` is on the `PATH`.
fn require(program: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
        panic!(
            "`{program}` is not installed (needed by the interop tests): run scripts/setup.sh, \
             which installs mosquitto-clients, node with MQTT.js and python3 with paho-mqtt"
        );
    }
}

/// The repository's root.
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A helper script in `tests/interop/`.
fn script(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name);
    path.to_string_lossy().into_owned()
}

/// `--mqtt 4|5` for the scripts.
fn level(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V311 => "4",
        ProtocolVersion::V5 => "5",
    }
}

/// `-V` for mosquitto.
fn mosquitto_version(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V311 => "mqttv311",
        ProtocolVersion::V5 => "mqttv5",
    }
}

/// Whole seconds, at least one (mosquitto's `-W`).
fn whole_secs(d: Duration) -> String {
    d.as_secs_f64().ceil().max(1.0).to_string()
}

impl Client {
    fn version(self) -> ProtocolVersion {
        match self {
            Client::Mosquitto(v) | Client::MqttJs(v) | Client::Paho(_, v) => v,
        }
    }

    fn is_mosquitto(self) -> bool {
        matches!(self, Client::Mosquitto(_))
    }

    /// A command for a script client (node or python) on `bridge`, with the common options.
    fn script_command(self, bridge: &Bridge, role: &str) -> Command {
        let mut cmd = match self {
            Client::Mosquitto(_) => unreachable!("mosquitto runs its own commands"),
            Client::MqttJs(_) => {
                let mqtt = repo_root().join("node_modules").join("mqtt");
                assert!(
                    mqtt.is_dir(),
                    "MQTT.js is not installed at {}: run scripts/setup.sh (npm ci)",
                    mqtt.display()
                );
                let mut cmd = Command::new("node");
                cmd.arg(script("mqttjs.mjs")).arg(bridge.ws_url());
                cmd
            }
            Client::Paho(t, _) => {
                let url = match t {
                    Transport::Tcp => format!("mqtt://{}", bridge.mqtt_addr()),
                    Transport::Ws => bridge.ws_url().to_owned(),
                };
                let mut cmd = Command::new("python3");
                cmd.arg(script("paho_client.py")).arg(url);
                cmd
            }
        };
        cmd.current_dir(repo_root())
            .arg(role)
            .args(["--mqtt", level(self.version())]);
        cmd
    }

    /// The command line of a subscribing connection.
    fn sub_command(self, bridge: &Bridge, sub: &Sub) -> Command {
        let v = self.version();
        if self.is_mosquitto() {
            require("mosquitto_sub");
            // Piped, mosquitto_sub's stdout is block-buffered: stdbuf makes it line-buffered,
            // so its lines (SUBACK, each message) arrive when they happen.
            let mut cmd = Command::new("stdbuf");
            cmd.args(["-oL", "mosquitto_sub"])
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &bridge.mqtt_addr().port().to_string(),
                ])
                .args(["-V", mosquitto_version(v), "-d", "-F", "MSG %q %r %t %p"])
                .args(["-t", sub.topic, "-q", &sub.qos.to_string()]);
            if let Some(id) = sub.id {
                cmd.args(["-i", id]);
            }
            if sub.session == Session::Persistent {
                cmd.arg("-c");
                if v == V5 {
                    cmd.args(["-x", &SESSION_EXPIRY.to_string()]);
                }
            }
            if let Some(w) = &sub.will {
                cmd.args(["--will-topic", w.topic, "--will-payload", w.payload])
                    .args(["--will-qos", &w.qos.to_string()]);
            }
            match (sub.end, sub.count) {
                (End::Hold, _) => {}
                (End::Abrupt, _) => panic!("mosquitto_sub cannot drop its socket: kill it"),
                (End::Disconnect, 0) if sub.wait.is_zero() => {
                    cmd.arg("-E");
                }
                (End::Disconnect, 0) => {
                    cmd.args(["-W", &whole_secs(sub.wait)]);
                }
                (End::Disconnect, n) => {
                    cmd.args(["-C", &n.to_string(), "-W", &whole_secs(sub.wait)]);
                }
            }
            return cmd;
        }
        let mut cmd = self.script_command(bridge, "sub");
        cmd.args(["--topic", sub.topic, "--qos", &sub.qos.to_string()])
            .args(["--count", &sub.count.to_string()])
            .args(["--wait", &sub.wait.as_secs_f64().to_string()])
            .args(["--linger", &sub.linger.as_secs_f64().to_string()]);
        if !sub.subscribe {
            cmd.arg("--no-subscribe");
        }
        if let Some(id) = sub.id {
            cmd.args(["--id", id]);
        }
        match sub.session {
            Session::Clean => {
                cmd.args(["--clean", "1"]);
            }
            Session::Persistent => {
                cmd.args(["--clean", "0"]);
                if v == V5 {
                    cmd.args(["--expiry", &SESSION_EXPIRY.to_string()]);
                }
            }
        }
        if let Some(w) = &sub.will {
            cmd.args(["--will-topic", w.topic, "--will-payload", w.payload])
                .args(["--will-qos", &w.qos.to_string()]);
        }
        match sub.end {
            End::Disconnect => {}
            End::Abrupt => {
                cmd.args(["--end", "abrupt"]);
            }
            End::Hold => panic!("the scripts do not hold; use End::Abrupt"),
        }
        cmd
    }

    /// Starts a subscriber and waits until it has subscribed (`READY`).
    async fn start_sub(self, bridge: &Bridge, sub: Sub) -> Running {
        let label = format!("{self} subscriber ({})", sub.topic);
        // Ready once subscribed; a mosquitto_sub resuming a session may get its messages
        // (and end, with -C) before its SUBACK, so for it connected is ready enough.
        let ready = if self.is_mosquitto() && !sub.subscribe {
            "received CONNACK"
        } else {
            "Subscribed (mid:"
        };
        let proc = Proc::spawn(&label, self.sub_command(bridge, &sub))
            .wait_ready(ready)
            .await;
        let timeout = sub.wait + sub.linger + Duration::from_secs(5);
        // mosquitto_sub -W without -C: listening ends with exit code 27, "timed out".
        let listening = self.is_mosquitto()
            && sub.end == End::Disconnect
            && sub.count == 0
            && !sub.wait.is_zero();
        Running {
            client: self,
            proc,
            timeout,
            listening,
        }
    }

    /// Runs a subscriber to its end and returns what it printed (asserting it succeeded).
    async fn run_sub(self, bridge: &Bridge, sub: Sub) -> Outcome {
        self.start_sub(bridge, sub).await.finish().await
    }

    /// Publishes `messages` to `topic` in order, each acknowledged before the next; panics
    /// unless every one was.
    async fn publish(self, bridge: &Bridge, topic: &str, messages: &[Pub]) {
        if self.is_mosquitto() {
            // mosquitto_pub sends one message per run (and waits for its acknowledgement).
            for m in messages {
                let mut cmd = Command::new("mosquitto_pub");
                cmd.args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &bridge.mqtt_addr().port().to_string(),
                ])
                .args(["-V", mosquitto_version(self.version())])
                .args(["-t", topic, "-q", &m.qos.to_string(), "-m", m.payload]);
                if m.retain {
                    cmd.arg("-r");
                }
                let label = format!("{self} publisher ({topic} {})", m.payload);
                Proc::spawn(&label, cmd)
                    .finish(PUBLISH_TIMEOUT)
                    .await
                    .expect_success();
            }
            return;
        }
        let mut cmd = self.script_command(bridge, "pub");
        cmd.args(["--topic", topic]);
        for m in messages {
            cmd.arg(format!("{}:{}:{}", m.qos, u8::from(m.retain), m.payload));
        }
        let out = Proc::spawn(&format!("{self} publisher ({topic})"), cmd)
            .finish(PUBLISH_TIMEOUT)
            .await;
        out.expect_success();
        let published: Vec<String> = out
            .stdout
            .iter()
            .filter_map(|l| l.strip_prefix("PUBLISHED "))
            .map(str::to_owned)
            .collect();
        let wanted: Vec<String> = messages
            .iter()
            .map(|m| format!("{} {}", m.qos, m.payload))
            .collect();
        assert_eq!(
            published,
            wanted,
            "{self}: not every publication completed\n{}",
            out.transcript()
        );
    }

    /// Connects with `will`, subscribes, and loses the connection without DISCONNECT:
    /// mosquitto_sub is killed with SIGKILL; MQTT.js destroys its stream
    /// (`client.stream.destroy()`); paho has its socket shut down and closed under it.
    async fn lose_connection(self, bridge: &Bridge, will: Will) {
        let mut sub = Sub::new("interop/holder", 0).will(will);
        if self.is_mosquitto() {
            sub.end = End::Hold;
            let mut running = self.start_sub(bridge, sub).await;
            running.proc.kill();
            let out = running.proc.finish(Duration::from_secs(5)).await;
            assert!(
                !out.status.success(),
                "{self}: the killed mosquitto_sub exited normally\n{}",
                out.transcript()
            );
        } else {
            sub.end = End::Abrupt;
            let out = self.run_sub(bridge, sub).await;
            assert!(
                out.stdout.iter().any(|l| l == "ABRUPT"),
                "{self}: the socket was not dropped\n{}",
                out.transcript()
            );
        }
    }
}

/// A subscriber that has subscribed and is still running.
struct Running {
    client: Client,
    proc: Proc,
    /// How long it may still take to end on its own.
    timeout: Duration,
    /// A mosquitto_sub listening for a while: its exit code 27 ("timed out") is success.
    listening: bool,
}

impl Running {
    /// The granted QoS (or reason codes) of its SUBACK.
    fn granted(&self) -> Vec<u8> {
        granted(&self.proc.stdout)
            .unwrap_or_else(|| panic!("{}: no SUBACK\n{}", self.client, self.proc.transcript()))
    }

    /// Waits for it to end, and asserts it succeeded.
    async fn finish(self) -> Outcome {
        let out = self.proc.finish(self.timeout).await;
        if !(self.listening && out.status.code() == Some(27)) {
            out.expect_success();
        }
        out
    }
}

// ----- child processes ---------------------------------------------------------------------

/// A running child process: its stdout read line by line, its stderr collected; killed on
/// drop, and every wait bounded.
struct Proc {
    label: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far.
    stdout: Vec<String>,
    stderr: JoinHandle<String>,
}

impl Proc {
    fn spawn(label: &str, mut cmd: Command) -> Proc {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{program}` is not installed (needed by the interop tests): run \
                 scripts/setup.sh, which installs node, python3 with paho-mqtt and \
                 mosquitto-clients"
            ),
            Err(e) => panic!("{label}: cannot start `{program}`: {e}"),
        };
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf).await;
            buf
        });
        Proc {
            label: label.to_owned(),
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    fn transcript(&self) -> String {
        format!("--- {} stdout ---\n{}", self.label, self.stdout.join("\n"))
    }

    /// Reads lines until one is `READY` (scripts) or contains `mosquitto_ready`.
    async fn wait_ready(mut self, mosquitto_ready: &str) -> Proc {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let ready = line == "READY" || line.contains(mosquitto_ready);
                    self.stdout.push(line);
                    if ready {
                        return self;
                    }
                }
                Ok(None) => {
                    let out = self.finish(Duration::from_secs(5)).await;
                    panic!(
                        "{}: ended before it had subscribed ({})\n{}",
                        out.label,
                        out.status,
                        out.transcript()
                    );
                }
                Err(_) => panic!(
                    "{}: not subscribed within {READY_TIMEOUT:?}\n{}",
                    self.label,
                    self.transcript()
                ),
            }
        }
    }

    /// Sends SIGKILL.
    fn kill(&mut self) {
        if let Err(e) = self.child.start_kill() {
            panic!("{}: cannot kill: {e}", self.label);
        }
    }

    /// Waits (at most `timeout`) for the process to exit and for all its output; kills it
    /// and panics on timeout.
    async fn finish(mut self, timeout: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + timeout;
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("{}: cannot wait for it: {e}", self.label),
            Err(_) => {
                self.kill();
                let _ = self.child.wait().await;
                while let Ok(line) = self.lines.try_recv() {
                    self.stdout.push(line);
                }
                panic!(
                    "{}: did not finish within {timeout:?}\n{}",
                    self.label,
                    self.transcript()
                );
            }
        };
        let grace = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(line)) = tokio::time::timeout_at(grace, self.lines.recv()).await {
            self.stdout.push(line);
        }
        let stderr = tokio::time::timeout_at(grace, &mut self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Outcome {
            label: self.label.clone(),
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr,
        }
    }
}

/// How a client process ended and what it printed.
#[derive(Debug)]
struct Outcome {
    label: String,
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

/// One application message as a client printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    qos: u8,
    retain: bool,
    topic: String,
    payload: String,
}

fn msg(qos: u8, retain: bool, topic: &str, payload: &str) -> Msg {
    Msg {
        qos,
        retain,
        topic: topic.to_owned(),
        payload: payload.to_owned(),
    }
}

/// The granted QoS of the first SUBACK among `lines`: `SUBACK 1` (scripts) or
/// `Subscribed (mid: 1): 1` (mosquitto_sub).
fn granted(lines: &[String]) -> Option<Vec<u8>> {
    lines.iter().find_map(|l| {
        let codes = l.strip_prefix("SUBACK ").or_else(|| {
            l.strip_prefix("Subscribed (mid: ")?
                .split_once("): ")
                .map(|p| p.1)
        })?;
        Some(
            codes
                .split([' ', ','])
                .filter(|c| !c.is_empty())
                .map(|c| c.parse().unwrap())
                .collect(),
        )
    })
}

impl Outcome {
    fn transcript(&self) -> String {
        format!(
            "--- {} ({}) stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.status,
            self.stdout.join("\n"),
            self.stderr
        )
    }

    fn expect_success(&self) {
        assert!(
            self.status.success(),
            "{} failed\n{}",
            self.label,
            self.transcript()
        );
    }

    /// Every `MSG` line, in order.
    fn messages(&self) -> Vec<Msg> {
        self.stdout
            .iter()
            .filter_map(|l| l.strip_prefix("MSG "))
            .map(|rest| {
                let parts: Vec<&str> = rest.splitn(4, ' ').collect();
                let [qos, retain, topic, payload] = parts[..] else {
                    panic!("{}: a bad MSG line: {rest}", self.label);
                };
                msg(qos.parse().unwrap(), retain == "1", topic, payload)
            })
            .collect()
    }

    /// The messages sorted by payload (when their order is not the point).
    fn messages_by_payload(&self) -> Vec<Msg> {
        let mut m = self.messages();
        m.sort_by(|a, b| a.payload.cmp(&b.payload));
        m
    }

    /// The session present flag of the CONNACK, as the scripts print it; `None` for
    /// mosquitto_sub, which does not show it.
    fn session_present(&self) -> Option<bool> {
        self.stdout.iter().find_map(|l| {
            let rest = l.strip_prefix("CONNACK session_present=")?;
            Some(rest.starts_with('1'))
        })
    }

    fn granted(&self) -> Vec<u8> {
        granted(&self.stdout)
            .unwrap_or_else(|| panic!("{}: no SUBACK\n{}", self.label, self.transcript()))
    }
}

/// Asserts the CONNACK's session present flag where the client shows it.
fn assert_session_present(c: Client, out: &Outcome, expected: bool) {
    if c.is_mosquitto() {
        // mosquitto_sub does not print the flag: the messages are the evidence.
        return;
    }
    assert_eq!(
        out.session_present(),
        Some(expected),
        "{c}: CONNACK session present\n{}",
        out.transcript()
    );
}

// ----- running cases -----------------------------------------------------------------------

type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `body` for every client in `clients`, concurrently, each with its own bridge.
async fn for_each_client<F, Fut>(clients: &[Client], body: F)
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cases = clients
        .iter()
        .map(|&c| (c.to_string(), Box::pin(body(c)) as CaseFuture))
        .collect();
    run_cases(cases).await;
}

/// Runs `body` for every (first, second) pair, concurrently.
async fn for_each_pair<F, Fut>(pairs: &[(Client, Client)], body: F)
where
    F: Fn(Client, Client) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cases = pairs
        .iter()
        .map(|&(a, b)| (format!("{a} with {b}"), Box::pin(body(a, b)) as CaseFuture))
        .collect();
    run_cases(cases).await;
}

// ----- the scenarios -------------------------------------------------------------------------

/// `publisher` publishes QoS 0, 1 and 2 to a topic that `subscriber` subscribed to twice, at
/// QoS 2 and at QoS 1.
// The publisher's QoS 1 and 2 flows complete: 3.1.1 [MQTT-4.3.2-4] (PUBACK),
// [MQTT-4.3.3-2] (PUBREC, then PUBCOMP for PUBREL). 3.1.1 [MQTT-3.8.4-6] / 5.0
// [MQTT-3.8.4-8]: delivered at the minimum of the published QoS and the granted QoS.
async fn qos_scenario(publisher: Client, subscriber: Client) {
    let bridge = Bridge::start();
    let topic = "interop/qos";
    let (at2, at1) = tokio::join!(
        subscriber.start_sub(&bridge, Sub::new(topic, 2).count(3)),
        subscriber.start_sub(&bridge, Sub::new(topic, 1).count(3)),
    );
    assert_eq!(at2.granted(), [2], "{subscriber}: SUBACK for QoS 2");
    assert_eq!(at1.granted(), [1], "{subscriber}: SUBACK for QoS 1");
    let messages = [
        publication(0, "q0"),
        publication(1, "q1"),
        publication(2, "q2"),
    ];
    publisher.publish(&bridge, topic, &messages).await;
    let (at2, at1) = tokio::join!(at2.finish(), at1.finish());
    assert_eq!(
        at2.messages_by_payload(),
        [
            msg(0, false, topic, "q0"),
            msg(1, false, topic, "q1"),
            msg(2, false, topic, "q2")
        ],
        "{subscriber} at QoS 2 from {publisher}\n{}",
        at2.transcript()
    );
    assert_eq!(
        at1.messages_by_payload(),
        [
            msg(0, false, topic, "q0"),
            msg(1, false, topic, "q1"),
            msg(1, false, topic, "q2")
        ],
        "{subscriber} at QoS 1 from {publisher}\n{}",
        at1.transcript()
    );
}

/// A retained message goes to the current subscriber with RETAIN 0 and to a later one with
/// RETAIN 1.
// [MQTT-3.3.1-5] (stored), [MQTT-3.3.1-9] (sent on subscribe; 3.1.1 [MQTT-3.3.1-6]),
// 3.1.1 [MQTT-3.3.1-8] (RETAIN 1 when sent for a new subscription), 5.0 [MQTT-3.3.1-12]
// / 3.1.1 [MQTT-3.3.1-9] (RETAIN 0 to an established subscription, Retain As Published 0).
async fn retained_scenario(publisher: Client, subscriber: Client) {
    let bridge = Bridge::start();
    let topic = "interop/retained";
    let live = subscriber
        .start_sub(&bridge, Sub::new(topic, 1).count(1))
        .await;
    let kept = Pub {
        qos: 1,
        retain: true,
        payload: "kept",
    };
    publisher.publish(&bridge, topic, &[kept]).await;
    let live = live.finish().await;
    assert_eq!(
        live.messages(),
        [msg(1, false, topic, "kept")],
        "{subscriber}, subscribed before the publication\n{}",
        live.transcript()
    );
    let later = subscriber
        .run_sub(&bridge, Sub::new(topic, 1).count(1))
        .await;
    assert_eq!(
        later.messages(),
        [msg(1, true, topic, "kept")],
        "{subscriber}, subscribed after the publication\n{}",
        later.transcript()
    );
}

/// A will goes out when `holder`'s connection is lost, not when a connection ends with
/// DISCONNECT; `watcher` sees it.
// [MQTT-3.1.2-8] (published when the network connection closes without DISCONNECT),
// [MQTT-3.1.2-10] (removed, not published, on DISCONNECT).
async fn will_scenario(holder: Client, watcher: Client) {
    let bridge = Bridge::start();
    let topic = "interop/will";
    let watching = watcher
        .start_sub(&bridge, Sub::new(topic, 1).count(1))
        .await;
    let discarded = Will {
        topic,
        payload: "discarded",
        qos: 1,
    };
    holder
        .run_sub(&bridge, Sub::new("interop/holder", 0).will(discarded))
        .await;
    let will = Will {
        topic,
        payload: "gone",
        qos: 1,
    };
    holder.lose_connection(&bridge, will).await;
    let seen = watching.finish().await;
    assert_eq!(
        seen.messages(),
        [msg(1, false, topic, "gone")],
        "{watcher}: only the will of the lost connection, from {holder}\n{}",
        seen.transcript()
    );
}

/// The seed scenario: A subscribes `seed/cmd` at QoS 1 and leaves; B publishes three QoS 1
/// messages; A comes back. With a persistent session: session present = 1 and the three
/// messages in order; with clean session 1: session present = 0 and nothing.
// Persistent: 3.1.1 [MQTT-3.1.2-4] / 5.0 [MQTT-3.1.2-5] (the session is resumed),
// 3.1.1 [MQTT-3.2.2-2] / 5.0 [MQTT-3.2.2-3] (session present = 1), [MQTT-4.6.0-6] (in
// order). Clean: 3.1.1 [MQTT-3.1.2-6] / 5.0 [MQTT-3.1.2-4] (the session is discarded),
// 3.1.1 [MQTT-3.2.2-1] / 5.0 [MQTT-3.2.2-2] (session present = 0).
async fn seed_scenario(a: Client, b: Client, session: Session) {
    let bridge = Bridge::start();
    let topic = "seed/cmd";
    let subscriber = Sub::new(topic, 1).id("seed-a").session(session);
    let first = a.run_sub(&bridge, subscriber.clone()).await;
    assert_session_present(a, &first, false);
    assert_eq!(first.granted(), [1], "{a}: SUBACK\n{}", first.transcript());

    let three = [
        publication(1, "one"),
        publication(1, "two"),
        publication(1, "three"),
    ];
    b.publish(&bridge, topic, &three).await;

    let returning = subscriber.no_subscribe();
    let again = match session {
        Session::Persistent => {
            a.run_sub(
                &bridge,
                returning.count(3).linger(Duration::from_millis(300)),
            )
            .await
        }
        Session::Clean => {
            a.run_sub(&bridge, returning.listen(Duration::from_millis(700)))
                .await
        }
    };
    assert_session_present(a, &again, session == Session::Persistent);
    let expected = match session {
        Session::Persistent => vec![
            msg(1, false, topic, "one"),
            msg(1, false, topic, "two"),
            msg(1, false, topic, "three"),
        ],
        Session::Clean => vec![],
    };
    assert_eq!(
        again.messages(),
        expected,
        "{a} back with session {session:?}, messages from {b}\n{}",
        again.transcript()
    );
}

// ----- the tests ---------------------------------------------------------------------------

/// Each client publishes QoS 0, 1 and 2 and gets them back at the QoS it was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_publishes_and_receives_qos_0_1_2_at_the_granted_qos() {
    for_each_client(&CLIENTS, |c| qos_scenario(c, c)).await;
}

/// Each client's retained message reaches its later subscriber with the retain flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_a_retained_message_with_the_retain_flag_on_a_later_subscribe() {
    for_each_client(&CLIENTS, |c| retained_scenario(c, c)).await;
}

/// Each client's will is published when its connection drops without DISCONNECT, and only
/// then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_will_is_published_when_its_connection_drops_without_disconnect() {
    for_each_client(&CLIENTS, |c| will_scenario(c, c)).await;
}

/// The seed scenario with clean session 0: session present = 1 and the three messages in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_resumes_its_session_and_gets_the_three_seed_messages_in_order() {
    for_each_client(&CLIENTS, |c| seed_scenario(c, c, Session::Persistent)).await;
}

/// The seed scenario with clean session 1: session present = 0 and nothing arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_with_clean_session_gets_no_session_and_no_seed_messages() {
    for_each_client(&CLIENTS, |c| seed_scenario(c, c, Session::Clean)).await;
}

/// Messages cross between clients, transports and versions at the right QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_clients_transports_and_versions_at_the_granted_qos() {
    let pairs = [
        (Client::Mosquitto(V311), Client::Paho(Transport::Ws, V5)),
        (Client::MqttJs(V5), Client::Mosquitto(V311)),
        (Client::Paho(Transport::Tcp, V311), Client::MqttJs(V5)),
    ];
    for_each_pair(&pairs, qos_scenario).await;
}

/// A will set by one client reaches another client, on another transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_reaches_a_different_client_on_another_transport() {
    let pairs = [
        (Client::Mosquitto(V311), Client::Paho(Transport::Ws, V5)),
        (Client::MqttJs(V5), Client::Paho(Transport::Tcp, V311)),
        (Client::Paho(Transport::Ws, V311), Client::Mosquitto(V5)),
    ];
    for_each_pair(&pairs, will_scenario).await;
}

/// A kept session gets the seed messages a different client published, over another
/// transport and version, and a retained message crosses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_gets_seed_messages_published_by_a_different_client() {
    let pairs = [
        (Client::MqttJs(V5), Client::Mosquitto(V311)),
        (Client::Paho(Transport::Ws, V311), Client::MqttJs(V5)),
        (Client::Mosquitto(V5), Client::Paho(Transport::Tcp, V311)),
    ];
    for_each_pair(&pairs, |a, b| seed_scenario(a, b, Session::Persistent)).await;
    let retained = [
        (Client::Paho(Transport::Tcp, V5), Client::MqttJs(V311)),
        (Client::MqttJs(V311), Client::Mosquitto(V5)),
    ];
    for_each_pair(&retained, retained_scenario).await;
}
