//! The `bridge` binary: one process that serves MQTT over TCP, MQTT over WebSocket at
//! `/mqtt`, a JSON API under `/api/v1/` and the static dashboard (`web/`), all feeding the
//! one broker engine of the `broker` crate.
//!
//! # Layout
//! - [`config`]: the command line and the `--config` TOML file, combined.
//! - [`http`]: the axum router (dashboard, browser client package, API, WebSocket endpoint).
//! - [`http_listener`]: the HTTP accept loop: a connection cap, header and idle deadlines.
//! - [`limits`]: MQTT connection limits counted at accept, rate-limited log lines.
//! - [`api`]: the session-state JSON API and its event stream under `/api/v1/`.
//! - [`ws`]: the WebSocket endpoint and its byte `Stream`/`Sink` adapter.
//! - [`tcp`]: the TCP accept loop and its byte `Stream`/`Sink` adapter.
//!
//! The broker engine knows no transport; this crate only binds sockets, adapts them and
//! hands each connection to [`broker::Broker::serve`].
//!
//! # Resources
//! At start the soft limit on open files is raised to the hard limit, and HTTP is held
//! under a quarter of it ([`http_share`]), so a flood of HTTP sockets cannot take the
//! descriptors MQTT clients need. Both accept loops outlive "Too many open files".
//!
//! The global allocator is jemalloc with its background purging threads on: freed pages go
//! back to the OS within about ten seconds (its default `dirty_decay_ms`), whichever thread
//! freed them and whether or not that thread allocates again. With glibc's malloc the peak
//! of a burst stayed in its per-thread arenas for good, and mimalloc kept most of it too
//! (measured: `bench/idle_rss.py`, numbers in the README).
//!
//! # Output and exit codes
//! Once both listeners are bound, one line goes to stdout (tests read the ports from it):
//! `bridge listening: http=http://ADDR/ ws=ws://ADDR/mqtt mqtt=ADDR`. Logs go to stderr
//! (`RUST_LOG`, default `info`). Exit code 0 after SIGINT / SIGTERM, 1 when a listener
//! cannot be bound, 2 for a bad command line or configuration file.

mod api;
mod config;
mod http;
mod http_listener;
mod limits;
mod tcp;
mod ws;

/// See the crate docs, "Resources".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background threads, which return freed pages to the OS over
/// `dirty_decay_ms` even while every other thread is idle; without them jemalloc purges only
/// when an arena is used again, and an idle bridge would keep the peak of its last burst.
fn start_memory_purging() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "cannot start jemalloc's background threads: freed memory \
                                    may stay resident after a burst");
    }
}

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use broker::Broker;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{Args, Config, DataDir};
use crate::http_listener::HttpLimits;
use crate::limits::ConnectionLimiter;

/// How long shutdown lets connections finish by themselves (write the DISCONNECT the broker
/// queued, end an HTTP request) before the rest are dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long dropped connections get to go away after that.
const ABORT_GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    start_memory_purging();
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bridge: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Binds both listeners, serves until SIGINT or SIGTERM, then shuts down gracefully.
async fn run(config: Config) -> anyhow::Result<()> {
    let files = raise_open_files_limit();
    let http_listener = TcpListener::bind(&config.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http))?;
    let mqtt_listener = TcpListener::bind(&config.mqtt)
        .await
        .with_context(|| format!("cannot listen for MQTT on {}", config.mqtt))?;
    let http_addr = http_listener.local_addr()?;
    let mqtt_addr = mqtt_listener.local_addr()?;
    // Installed before the "listening" line, so a signal sent right after it is handled.
    let mut signals = Signals::new().context("cannot install signal handlers")?;

    // The store before anything is served: a data directory that cannot be used stops the
    // start with the reason (exit 1), and nothing in it is changed.
    let broker = match &config.data {
        DataDir::None => {
            tracing::info!("--data none: memory only; sessions are lost when the bridge stops");
            Broker::start(config.broker.clone())
        }
        DataDir::Dir(dir) => {
            let durability = config.broker.durability();
            // The store's errors name the directory and what is wrong with it.
            let store = broker::SqliteStore::open(dir, durability)?;
            let (broker, recovered) = Broker::with_store(
                config.broker.clone(),
                std::sync::Arc::new(broker::AllowAll),
                Box::new(store),
            )?;
            tracing::info!(
                data = %dir.display(),
                ?durability,
                sessions = recovered.sessions,
                expired = recovered.expired,
                queued = recovered.queued,
                inflight = recovered.inflight,
                retained = recovered.retained,
                "store opened"
            );
            broker
        }
    };
    if !config.web.is_dir() {
        tracing::warn!(web = %config.web.display(), "web directory not found; / will answer 404");
    }
    if !config.pkg.join("client_wasm.js").is_file() {
        // Not an error: the dashboard works without it, only its playground says it is missing.
        tracing::warn!(
            pkg = %config.pkg.display(),
            "browser client package not found (build it with client-wasm/build.sh); \
             the dashboard's playground is unavailable"
        );
    }

    let stop = CancellationToken::new();
    let (tracker, mut finished) = Tracker::new();

    let limits = ConnectionLimiter::new(
        broker.config().max_connections,
        broker.config().max_connections_per_address,
    );
    let http_limits = HttpLimits {
        max_connections: http_share(config.server.max_http_connections, files),
        header_timeout: Duration::from_secs(config.server.http_header_timeout_secs),
        idle_timeout: Duration::from_secs(config.server.http_idle_timeout_secs),
    };
    if let Some(files) = files {
        let wanted = broker
            .config()
            .max_connections
            .saturating_add(http_limits.max_connections);
        if u64::try_from(wanted).is_ok_and(|wanted| wanted > files) {
            tracing::info!(
                open_files = files,
                max_connections = broker.config().max_connections,
                max_http_connections = http_limits.max_connections,
                "the open-files limit is below the connection limits: past it, accepting \
                 waits until a connection closes"
            );
        }
    }
    let app = http::router(
        http::AppState {
            broker: broker.clone(),
            tracker: tracker.downgrade(),
            limits: limits.clone(),
        },
        &config.web,
        &config.pkg,
    );
    let http_task = tokio::spawn(http_listener::serve(
        http_listener,
        app,
        http_limits,
        stop.clone(),
    ));
    let tcp_task = tokio::spawn(tcp::serve(
        mqtt_listener,
        broker.clone(),
        limits,
        stop.clone(),
        tracker.clone(),
    ));

    let line = format!(
        "bridge listening: http=http://{http_addr}/ ws=ws://{http_addr}/mqtt mqtt={mqtt_addr}"
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    tracing::info!("{line}");

    let signal = signals.recv().await;
    tracing::info!("{signal} received: shutting down");
    stop.cancel();
    broker.shutdown().await;
    let abort = tracker.abort.clone();
    drop(tracker);
    let mut http_task = http_task;
    // Every connection task holds a tracker; `recv` gives `None` once the last one is gone.
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        let _ = tcp_task.await;
        let _ = (&mut http_task).await;
        finished.recv().await
    })
    .await;
    if drained.is_err() {
        tracing::info!("closing connections still open after {DRAIN_GRACE:?}");
        abort.cancel();
        http_task.abort();
        if tokio::time::timeout(ABORT_GRACE, finished.recv())
            .await
            .is_err()
        {
            tracing::warn!("connections still open; exiting anyway");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit; the limit in force, if known.
fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(files) => {
                tracing::debug!(open_files = files, "open-files limit");
                Some(files)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the open-files limit");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The HTTP connection cap in force: `configured`, but never more than a quarter of the
/// open-files limit, so HTTP leaves three quarters of the descriptors to MQTT, the store
/// and the rest. At least one.
fn http_share(configured: usize, files: Option<u64>) -> usize {
    let Some(files) = files else {
        return configured;
    };
    let quarter = usize::try_from(files / 4).unwrap_or(usize::MAX).max(1);
    if configured > quarter {
        tracing::info!(
            max_http_connections = configured,
            open_files = files,
            "HTTP connections capped at {quarter}, a quarter of the open-files limit"
        );
        quarter
    } else {
        configured
    }
}

/// Shutdown bookkeeping, cloned into every connection task.
///
/// Shutdown first lets the broker close the sessions it knows, which queues DISCONNECT
/// 0x8B for 5.0 clients; connection tasks then end by themselves. What is still running
/// after [`DRAIN_GRACE`] (a socket that never sent CONNECT, a half-sent HTTP request) is
/// dropped through `abort`.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// Dropped with the task; shutdown waits until every clone is gone.
    alive: mpsc::Sender<()>,
    /// Cancelled when the drain grace is over.
    abort: CancellationToken,
}

impl Tracker {
    fn new() -> (Tracker, mpsc::Receiver<()>) {
        let (alive, finished) = mpsc::channel(1);
        let tracker = Tracker {
            alive,
            abort: CancellationToken::new(),
        };
        (tracker, finished)
    }

    /// A handle for the router: it lives as long as the HTTP connections do, which shutdown
    /// does not wait for, so it must not keep shutdown waiting.
    pub(crate) fn downgrade(&self) -> WeakTracker {
        WeakTracker {
            alive: self.alive.downgrade(),
            abort: self.abort.clone(),
        }
    }

    /// Runs `task` until it ends or shutdown aborts it, holding `self` meanwhile.
    pub(crate) async fn run(self, task: impl std::future::Future<Output = ()>) {
        tokio::select! {
            () = task => {}
            () = self.abort.cancelled() => tracing::debug!("connection dropped at shutdown"),
        }
    }
}

/// A [`Tracker`] that does not count as a running task.
#[derive(Debug, Clone)]
pub(crate) struct WeakTracker {
    alive: mpsc::WeakSender<()>,
    abort: CancellationToken,
}

impl WeakTracker {
    /// A tracker for a new task; `None` once every task has ended and shutdown is final.
    pub(crate) fn upgrade(&self) -> Option<Tracker> {
        Some(Tracker {
            alive: self.alive.upgrade()?,
            abort: self.abort.clone(),
        })
    }
}

/// SIGINT and SIGTERM, installed up front.
#[derive(Debug)]
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// Waits for the first signal and names it.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
