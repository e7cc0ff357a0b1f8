//! The `bridge` binary: one process that serves MQTT over TCP, MQTT over WebSocket at
//! `/mqtt`, a JSON API under `/api/v1/` and the static dashboard (`web/`), all feeding the
//! one broker engine of the `broker` crate.
//!
//! # Layout
//! # Layout, in the order a connection meets it
//! - [`config`]: the command line and the `--config` TOML file, combined.
//! - [`resources`]: the allocator, the open-files limit and HTTP's share of it.
//! - [`tcp`]: the MQTT accept loop and its byte `Stream`/`Sink` adapter.
//! - [`http_listener`]: the HTTP accept loop: a connection cap, header and idle deadlines.
//! - [`limits`]: MQTT connection limits counted at accept (TCP and WebSocket alike).
//! - [`http`]: the axum router, made of each module's `routes()`: [`ws`] (the WebSocket
//!   endpoint and its adapter), [`api`] (the session-state JSON API and its event stream),
//!   [`web`] (the dashboard and the browser client's package).
//! - [`state`]: what every handler can reach.
//! - [`shutdown`]: signals, and waiting for connection tasks before dropping the rest.
//!
//! The broker engine knows no transport; this crate only binds sockets, adapts them and
//! hands each connection to [`broker::Broker::serve`].
//!
//! # Output and exit codes
//! Once both listeners are bound, one line goes to stdout (tests read the ports from it):
//! `bridge listening: http=http://ADDR/ ws=ws://ADDR/mqtt mqtt=ADDR`. Logs go to stderr
//! (`RUST_LOG`, default `info`). Exit code 0 after SIGINT / SIGTERM, 1 when a listener
//! cannot be bound, 2 for a bad command line or configuration file.

mod api;
mod auth;
mod config;
mod http;
mod http_listener;
mod limits;
mod resources;
mod shutdown;
mod state;
mod tcp;
mod web;
mod ws;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use broker::Broker;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{Args, Config, DataDir};
use crate::http_listener::HttpLimits;
use crate::limits::ConnectionLimiter;
use crate::resources::{http_share, raise_open_files_limit, start_memory_purging};
use crate::shutdown::{Signals, Tracker, ABORT_GRACE, DRAIN_GRACE};
use crate::state::AppState;

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(command) = args.command.take() {
        return auth::run_command(command);
    }
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
    // `true` once `[tls] use_identity_as_username` exists (the TLS part of issue 11).
    let security = match auth::setup(&config.auth, false) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("bridge: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime(config.server.worker_threads) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bridge: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config, security)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The async runtime of the connections and the HTTP side (the broker engine has a thread
/// of its own).
///
/// One thread (`worker_threads = 1`, the default) polls the connections in the order their
/// sockets became ready, so packets from different connections reach the engine in the
/// order they arrived, as in mosquitto's single event loop: a client that subscribes and,
/// without waiting for the SUBACK, has another client publish gets the message. With
/// several workers, connections are polled in parallel (and tokio runs the most recently
/// woken task first), so a PUBLISH can overtake a SUBSCRIBE that arrived just before it;
/// that trade buys more threads for TLS and WebSocket framing on machines with many cores.
/// 0 means one worker per core.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    builder.enable_all().build()
}

/// Binds both listeners, serves until SIGINT or SIGTERM, then shuts down gracefully.
async fn run(config: Config, security: auth::Setup) -> anyhow::Result<()> {
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
            Broker::with_authenticator(config.broker.clone(), security.authenticator.clone())
        }
        DataDir::Dir(dir) => {
            let durability = config.broker.durability();
            // The store's errors name the directory and what is wrong with it.
            let store = broker::SqliteStore::open(dir, durability)?;
            let (broker, recovered) = Broker::with_store(
                config.broker.clone(),
                security.authenticator.clone(),
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
        // An MQTT connection over TCP takes two descriptors (see `tcp::TcpTransport`).
        let wanted = broker
            .config()
            .max_connections
            .saturating_mul(2)
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
        AppState {
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
