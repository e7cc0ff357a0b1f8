//! Tools for the hostile-client suite (`tests/hostile.rs`, `scripts/soak.sh`): a bridge
//! watched from the outside, and a bystander that measures what an attack costs everyone
//! else.
//!
//! - [`WatchedBridge`]: the bridge binary with a configuration, optionally on a data
//!   directory and under a file-descriptor limit (`prlimit`), whose pid is known (RSS from
//!   `/proc/<pid>/status`, [`WatchedBridge::rss_kb`]) and whose stderr is kept (the log lines
//!   a test counts, and the reason when it refuses to start).
//! - [`Bystander`]: a subscriber and a publisher (QoS 1, their own topic) doing round trips
//!   in the background while a test attacks; [`BystanderReport`] says how many went through
//!   and the slowest one.
//! - [`Attack`]: the set-up and tear-down every attack shares: a watched bridge, its RSS
//!   before the attack and a bystander on it; at the end the bridge alive, the bystander's
//!   round trips and the RSS growth bounded, collected in [`Checks`].
//! - [`http`]: one HTTP/1.1 request over a fresh socket (`Connection: close`).
//! - [`dir_size`]: bytes under a directory (the store's growth).
//!
//! [`crate::Bridge`] stays the harness of the functional suites; this one adds what an
//! attack needs to watch (pid, stderr, resource limits) without changing it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{ProtocolVersion, QoS, ReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{clean, Endpoint, TestClient, Transport};

/// How a [`WatchedBridge`] is started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    config: String,
    data: Option<PathBuf>,
    nofile: Option<u64>,
}

impl Launch {
    /// The bridge with `toml` as its `--config` file, memory only (`--data none`).
    pub fn new(toml: &str) -> Launch {
        Launch {
            config: toml.to_owned(),
            ..Launch::default()
        }
    }

    /// On the data directory `dir` (`--data DIR`).
    pub fn data(mut self, dir: &Path) -> Launch {
        self.data = Some(dir.to_owned());
        self
    }

    /// Under a file-descriptor limit (soft and hard), through `prlimit --nofile=N:N`.
    pub fn nofile(mut self, limit: u64) -> Launch {
        self.nofile = Some(limit);
        self
    }

    /// Starts it; panics with the bridge's own words if it does not come up.
    pub fn start(self) -> WatchedBridge {
        match self.try_start() {
            Ok(b) => b,
            Err(why) => panic!("{why}"),
        }
    }

    /// Starts it; `Err` says why it did not come up (exit status and stderr).
    pub fn try_start(self) -> Result<WatchedBridge, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let config_file = std::env::temp_dir().join(format!(
            "e2e-hostile-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&config_file, &self.config)
            .map_err(|e| format!("cannot write {}: {e}", config_file.display()))?;
        let mut bridge = WatchedBridge {
            launch: self,
            config_file,
            child: None,
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_authority: String::new(),
            ws_url: String::new(),
            stderr: Arc::new(Mutex::new(Vec::new())),
            listening_at_line: 0,
        };
        bridge.spawn()?;
        Ok(bridge)
    }
}

/// A running bridge whose pid, RSS and stderr a test can watch; killed when dropped.
#[derive(Debug)]
pub struct WatchedBridge {
    launch: Launch,
    config_file: PathBuf,
    child: Option<Child>,
    mqtt_addr: SocketAddr,
    /// `host:port` of the HTTP listener.
    http_authority: String,
    ws_url: String,
    /// Every stderr line since the first start (a reader thread appends).
    stderr: Arc<Mutex<Vec<String>>>,
    /// How many stderr lines there were when the last start printed its listening line.
    listening_at_line: usize,
}

impl WatchedBridge {
    fn spawn(&mut self) -> Result<(), String> {
        let bin = crate::Bridge::binary();
        if !bin.exists() {
            return Err(format!(
                "no bridge binary at {}: run `cargo build -p bridge` first (or set BRIDGE_BIN)",
                bin.display()
            ));
        }
        let mut cmd = match self.launch.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data"]);
        match &self.launch.data {
            Some(dir) => cmd.arg(dir),
            None => cmd.arg("none"),
        };
        cmd.arg("--config").arg(&self.config_file);
        if let Ok(filter) = std::env::var("E2E_BRIDGE_LOG") {
            cmd.env("RUST_LOG", filter);
        } else {
            cmd.env_remove("RUST_LOG");
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err("the bridge's output was not captured".to_owned());
        };
        let lines = Arc::clone(&self.stderr);
        let echo = std::env::var_os("E2E_BRIDGE_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("[bridge] {line}");
                }
                match lines.lock() {
                    Ok(mut l) => l.push(line),
                    Err(poisoned) => poisoned.into_inner().push(line),
                }
            }
        });
        let listening = match crate::Listening::read(stdout) {
            Ok(listening) => listening,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                let tail = self.stderr_lines().join("\n");
                return Err(format!(
                    "{e}: the bridge did not start (exit status {status:?}); its stderr:\n{tail}"
                ));
            }
        };
        self.mqtt_addr = listening.mqtt_addr;
        self.http_authority = listening
            .http_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        self.ws_url = listening.ws_url;
        // The listening line is printed before tracing's copy of it reaches stderr; what
        // came before is start-up noise.
        std::thread::sleep(Duration::from_millis(50));
        self.listening_at_line = self.stderr_lines().len();
        self.child = Some(child);
        Ok(())
    }

    /// The process id (the bridge itself: `prlimit` execs it).
    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(c) => c.id(),
            None => panic!("the bridge is not running"),
        }
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics, with the end of its stderr, unless the process is still running (checked
    /// after 100 ms, so that a process dying as its sockets close is seen dead).
    pub fn assert_alive(&mut self, when: &str) {
        std::thread::sleep(Duration::from_millis(100));
        if !self.is_alive() {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "the bridge died {when} (exit status {status:?}); the end of its stderr:\n{}",
                self.stderr_tail(20)
            );
        }
    }

    /// VmRSS in KiB, from `/proc/<pid>/status`.
    pub fn rss_kb(&self) -> u64 {
        rss_kb_of(self.pid()).unwrap_or_else(|| panic!("no VmRSS for the bridge ({})", self.pid()))
    }

    /// The MQTT over TCP address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// `host:port` of the HTTP listener (dashboard, API, `/mqtt`).
    pub fn http_authority(&self) -> &str {
        &self.http_authority
    }

    /// The MQTT over WebSocket URL.
    pub fn ws_url(&self) -> &str {
        &self.ws_url
    }

    /// Where a client on `transport` connects.
    pub fn endpoint(&self, transport: Transport) -> Endpoint {
        match transport {
            Transport::Tcp => Endpoint::Tcp(self.mqtt_addr),
            Transport::Ws => Endpoint::Ws(self.ws_url.clone()),
        }
    }

    /// Every stderr line so far (all starts).
    pub fn stderr_lines(&self) -> Vec<String> {
        match self.stderr.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The stderr lines printed since the last start's listening line.
    pub fn log_since_listening(&self) -> Vec<String> {
        let all = self.stderr_lines();
        all.get(self.listening_at_line..)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    /// The last `n` stderr lines, joined.
    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr_lines();
        all[all.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, wait (at most 10 s), start again on the same configuration and data; the
    /// ports are new.
    pub fn restart(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            while matches!(child.try_wait(), Ok(None)) {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.spawn()
    }
}

impl Drop for WatchedBridge {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config_file);
    }
}

/// VmRSS of a process in KiB, if it exists.
pub fn rss_kb_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Bytes in the files under `dir`, recursively (0 for a missing directory).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    let mut stack: Vec<std::fs::ReadDir> = vec![entries];
    while let Some(it) = stack.last_mut() {
        match it.next() {
            None => {
                stack.pop();
            }
            Some(Err(_)) => {}
            Some(Ok(entry)) => match entry.metadata() {
                Ok(m) if m.is_dir() => {
                    if let Ok(sub) = std::fs::read_dir(entry.path()) {
                        stack.push(sub);
                    }
                }
                Ok(m) => total += m.len(),
                Err(_) => {}
            },
        }
    }
    total
}

// ----- HTTP ----------------------------------------------------------------------------------

/// One HTTP/1.1 request (`Connection: close`, no body) to `authority`; the status and the
/// body (de-chunked). Panics if no whole answer comes within `timeout`.
pub async fn http(authority: &str, method: &str, path: &str, timeout: Duration) -> (u16, String) {
    let exchange = async {
        let mut s = TcpStream::connect(authority).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Content-Length: 0\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => panic!("{method} {path}: {e}"),
        Err(_) => panic!("{method} {path}: no answer within {timeout:?}"),
    };
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        panic!(
            "{method} {path}: no header end in {:?}",
            String::from_utf8_lossy(&raw)
        );
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in {head}"));
    let rest = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|l| l.split(';').next())
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < end + 2 + size {
            break;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = raw.get(end + 2 + size + 2..).unwrap_or_default();
    }
    body
}

// ----- the bystander -------------------------------------------------------------------------

/// How long one bystander round trip may take before the bystander gives up on it.
const ROUND_TRIP_GIVE_UP: Duration = Duration::from_secs(10);
/// The pause between round trips (the bystander measures, it does not load the bridge).
const ROUND_TRIP_PAUSE: Duration = Duration::from_millis(10);

/// A well-behaved subscriber and publisher (QoS 1, 5.0, their own topic) doing round trips
/// in the background: publish, PUBACK, the subscriber receives it.
#[derive(Debug)]
pub struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BystanderReport>,
}

/// What a [`Bystander`] saw.
#[derive(Debug, Clone)]
pub struct BystanderReport {
    /// Who (its label).
    pub label: String,
    /// Round trips completed.
    pub round_trips: usize,
    /// The slowest completed round trip.
    pub max_latency: Duration,
    /// Why it stopped early (a round trip that did not complete, a lost connection).
    pub failure: Option<String>,
}

impl BystanderReport {
    /// `Err` (saying what) unless the bystander never failed, completed at least one round
    /// trip and none took longer than `bound`.
    pub fn check(&self, bound: Duration) -> Result<(), String> {
        if let Some(f) = &self.failure {
            return Err(format!(
                "bystander `{}` stopped after {} round trips: {f}",
                self.label, self.round_trips
            ));
        }
        if self.round_trips == 0 {
            return Err(format!(
                "bystander `{}` completed no round trip",
                self.label
            ));
        }
        if self.max_latency > bound {
            return Err(format!(
                "bystander `{}`: slowest of {} QoS 1 round trips took {:?} (bound {bound:?})",
                self.label, self.round_trips, self.max_latency
            ));
        }
        Ok(())
    }

    /// Panics unless [`BystanderReport::check`] passes.
    pub fn assert_bounded(&self, bound: Duration) {
        if let Err(e) = self.check(bound) {
            panic!("{e}");
        }
    }
}

impl Bystander {
    /// Connects `bystander-{label}-sub` and `bystander-{label}-pub` on `endpoint`,
    /// subscribes, and starts the round trips on topic `bystander/{label}`.
    pub async fn start(endpoint: &Endpoint, label: &str) -> Bystander {
        let v = ProtocolVersion::V5;
        let topic = format!("bystander/{label}");
        let mut sub = connect_or_panic(endpoint, &format!("bystander-{label}-sub"), v).await;
        let ack = sub.subscribe(&topic, QoS::AtLeastOnce).await;
        assert!(
            !ack.reasons.iter().any(|r| r.is_error()),
            "bystander `{label}` could not subscribe: {ack:?}"
        );
        let mut publisher = connect_or_panic(endpoint, &format!("bystander-{label}-pub"), v).await;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let label = label.to_owned();
        let task = tokio::spawn(async move {
            let mut report = BystanderReport {
                label,
                round_trips: 0,
                max_latency: Duration::ZERO,
                failure: None,
            };
            let mut seq: u64 = 0;
            while !stop_flag.load(Ordering::Relaxed) {
                seq += 1;
                let started = Instant::now();
                let payload = seq.to_string();
                let token = publisher
                    .start_publish(
                        &topic,
                        payload.clone(),
                        QoS::AtLeastOnce,
                        false,
                        Default::default(),
                    )
                    .await;
                match publisher.published_within(token, ROUND_TRIP_GIVE_UP).await {
                    Some(ReasonCode::Success) => {}
                    other => {
                        report.failure = Some(format!(
                            "publish {seq}: {other:?} within {ROUND_TRIP_GIVE_UP:?} \
                             (publisher connection: {:?})",
                            publisher.ended()
                        ));
                        break;
                    }
                }
                let left = ROUND_TRIP_GIVE_UP.saturating_sub(started.elapsed());
                match sub.try_recv_within(left).await {
                    Some(p) if p.payload == payload.as_bytes() => {}
                    Some(p) => {
                        report.failure = Some(format!(
                            "message {seq}: received {:?} instead",
                            String::from_utf8_lossy(&p.payload)
                        ));
                        break;
                    }
                    None => {
                        report.failure = Some(format!(
                            "message {seq} not received within {ROUND_TRIP_GIVE_UP:?} \
                             (subscriber connection: {:?})",
                            sub.ended()
                        ));
                        break;
                    }
                }
                report.round_trips += 1;
                report.max_latency = report.max_latency.max(started.elapsed());
                tokio::time::sleep(ROUND_TRIP_PAUSE).await;
            }
            if report.failure.is_none() {
                sub.disconnect().await;
                publisher.disconnect().await;
            }
            report
        });
        Bystander { stop, task }
    }

    /// Stops the round trips (after the one under way) and reports.
    pub async fn finish(self) -> BystanderReport {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(report) => report,
            Err(e) => panic!("the bystander task failed: {e}"),
        }
    }
}

/// A clean 5.0 or 3.1.1 [`TestClient`] on `endpoint`, or a panic naming it.
pub async fn connect_or_panic(endpoint: &Endpoint, id: &str, v: ProtocolVersion) -> TestClient {
    match TestClient::connect(endpoint, clean(v, id)).await {
        Ok((c, _)) => c,
        Err(e) => panic!("`{id}` could not connect to {endpoint:?}: {e}"),
    }
}

// ----- the attack ----------------------------------------------------------------------------

/// Failed checks, collected so that one run reports every broken bound at once.
#[derive(Debug, Default)]
pub struct Checks(Vec<String>);

impl Checks {
    /// Records what `what` says unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    /// Records a failed check.
    pub fn push(&mut self, failure: String) {
        self.0.push(failure);
    }

    /// Panics, listing every failed check, if there is one.
    pub fn finish(self) {
        if !self.0.is_empty() {
            panic!(
                "{} check(s) failed:\n- {}",
                self.0.len(),
                self.0.join("\n- ")
            );
        }
    }
}

impl Extend<String> for Checks {
    fn extend<I: IntoIterator<Item = String>>(&mut self, failures: I) {
        self.0.extend(failures);
    }
}

/// One attack under watch: the bridge, its RSS before the attack and a [`Bystander`] doing
/// round trips on it (MQTT over TCP) throughout.
#[derive(Debug)]
pub struct Attack {
    /// The bridge under attack.
    pub bridge: WatchedBridge,
    /// Its RSS in KiB before the attack: what [`Attack::end`] measures the growth from.
    pub rss0: u64,
    bystander: Bystander,
}

impl Attack {
    /// Starts the bridge, takes its RSS, and starts the bystander `label` on it.
    pub async fn start(launch: Launch, label: &str) -> Attack {
        Attack::on(launch.start(), label).await
    }

    /// The same on a bridge already running (one a test prepared before attacking it).
    pub async fn on(bridge: WatchedBridge, label: &str) -> Attack {
        let rss0 = bridge.rss_kb();
        let bystander = Bystander::start(&bridge.endpoint(Transport::Tcp), label).await;
        Attack {
            bridge,
            rss0,
            bystander,
        }
    }

    /// Takes the RSS baseline again, now (once the test has set up what precedes its
    /// attack), and returns it.
    pub fn rebase_rss(&mut self) -> u64 {
        self.rss0 = self.bridge.rss_kb();
        self.rss0
    }

    /// The end of every attack: the bridge is alive, the bystander's round trips were
    /// bounded by `latency`, and the RSS grew by less than `growth_mb` since
    /// [`Attack::rss0`]. Failed bounds go to `checks`, a dead bridge panics; the bridge is
    /// returned for what the test checks after.
    pub async fn end(
        self,
        checks: &mut Checks,
        growth_mb: u64,
        latency: Duration,
    ) -> WatchedBridge {
        let Attack {
            mut bridge,
            rss0,
            bystander,
        } = self;
        bridge.assert_alive("during the attack");
        let report = bystander.finish().await;
        let rss = bridge.rss_kb();
        checks.check(rss.saturating_sub(rss0) < growth_mb * 1024, || {
            format!("RSS grew from {rss0} KiB to {rss} KiB (bound +{growth_mb} MiB)")
        });
        if let Err(e) = report.check(latency) {
            checks.push(e);
        }
        bridge.assert_alive("at the end");
        bridge
    }

    /// [`Attack::end`], then [`Checks::finish`]: the end of a test.
    pub async fn finish(self, mut checks: Checks, growth_mb: u64, latency: Duration) {
        let _bridge = self.end(&mut checks, growth_mb, latency).await;
        checks.finish();
    }
}
