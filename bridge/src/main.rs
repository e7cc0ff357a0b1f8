//! The `bridge` binary: one process that serves MQTT over TCP, MQTT over WebSocket at
//! `/mqtt`, a JSON API under `/api/v1/` and the static dashboard (`web/`), all feeding the
//! one broker engine of the `broker` crate.
//!
//! # Layout, in the order a connection meets it
//! - [`config`]: the command line and the `--config` TOML file, combined.
//! - [`resources`]: the allocator, the open-files limit and HTTP's share of it.
//! - [`tcp`]: the MQTT accept loop (plain and TLS) and its byte `Stream`/`Sink` adapter.
//! - [`http_listener`]: the HTTP accept loop (plain and TLS): a connection cap, header and
//!   idle deadlines.
//! - [`tls`]: the TLS listeners' certificates (reloaded on SIGHUP), client certificates,
//!   and the TLS stream's `Stream`/`Sink` adapter for MQTT.
//! - [`limits`]: MQTT connection limits counted at accept (TCP and WebSocket alike).
//! - [`auth`]: who may connect and what they may touch: password files, mosquitto ACL files,
//!   tokens, as the broker's `Authenticator`; and `bridge passwd`.
//! - [`http`]: the axum router, made of each module's `routes()`: [`ws`] (the WebSocket
//!   endpoint and its adapter), [`api`] (the session-state JSON API and its event stream),
//!   [`web`] (the dashboard and the browser client's package).
//! - [`metrics`]: `GET /metrics` for Prometheus, and the `[metrics]` table.
//! - [`guard`]: who may reach what: `Host`, `Origin`, the admin API's tokens, trusted
//!   proxies.
//! - [`state`]: what every handler can reach.
//! - [`shutdown`]: signals, and waiting for connection tasks before dropping the rest.
//!
//! The broker engine knows no transport; this crate only binds sockets, adapts them and
//! hands each connection to [`broker::Broker::serve`].
//!
//! # Output, signals and exit codes
//! Once every listener is bound, one line goes to stdout (tests read the ports from it):
//! `bridge listening: http=http://ADDR/ ws=ws://ADDR/mqtt mqtt=ADDR`, followed by
//! ` mqtts=ADDR` and ` https=https://ADDR/ wss=wss://ADDR/mqtt` when those listeners are on;
//! a listener turned off (`--http none`, `--mqtt none`) leaves its fields out (see
//! [`listening_line`]). Logs go to stderr (`RUST_LOG`, default `info`). SIGHUP reloads (see
//! [`reload`]). Exit code 0 after SIGINT / SIGTERM, 1 when a listener cannot be bound, 2 for
//! a bad command line, configuration file or TLS certificate.

mod api;
mod auth;
mod config;
mod guard;
mod http;
mod http_listener;
mod limits;
mod metrics;
mod resources;
mod shutdown;
mod state;
mod tcp;
mod tls;
mod web;
mod ws;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use broker::Broker;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{Args, Config, DataDir, LogFormat};
use crate::http_listener::HttpLimits;
use crate::limits::ConnectionLimiter;
use crate::resources::{http_share, raise_open_files_limit, start_memory_purging};
use crate::shutdown::{Signal, Signals, Tracker, ABORT_GRACE, DRAIN_GRACE};
use crate::state::AppState;
use crate::tls::{ServerTls, TlsConfig};

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(command) = args.command.take() {
        return auth::run_command(command);
    }
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bridge: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(config.log_format);
    start_memory_purging();
    // The certificate is read before anything starts: one that cannot be used is a
    // configuration error.
    let tls = if config.mqtts.is_some() || config.https.is_some() {
        match ServerTls::load(&config.tls) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(e) => {
                eprintln!("bridge: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        if config.tls != TlsConfig::default() {
            tracing::warn!("[tls] is set but neither --mqtts nor --https is on: it is not used");
        }
        None
    };
    let security = match auth::setup(&config.auth, config.tls.use_identity_as_username) {
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
    match runtime.block_on(run(config, tls, security)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): lines for people, or one JSON
/// object per event for log shippers (`--log-format json`: `timestamp`, `level`, `target`,
/// `fields` with the message and the event's fields, `span`s).
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
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

/// Connects to the NATS cluster, makes its streams and reads what a starting node needs
/// ([`cluster::feed::snapshot`]). Lowers the broker's packet and topic limits to what NATS
/// carries: a message is one NATS message (at most the servers' `max_payload`, with room for
/// the envelope), and a topic one subject (NATS reads a message's subject on a control line
/// of at most 4 KB; an escaped level can be three times its topic's bytes).
async fn start_cluster(
    cluster: &cluster::ClusterConfig,
    broker: &mut broker::BrokerConfig,
) -> anyhow::Result<(cluster::Nats, cluster::feed::Snapshot)> {
    let nats = cluster::Nats::connect(cluster).await?;
    cluster::claims::check_node_name(&nats).await?;
    let snapshot = cluster::feed::snapshot(&nats).await?;
    let payload = u32::try_from(nats.max_payload().saturating_sub(CLUSTER_ENVELOPE_ROOM))
        .unwrap_or(u32::MAX)
        .max(1024);
    if broker.max_packet_size > payload {
        tracing::info!(
            max_packet_size = payload,
            "max_packet_size lowered to the NATS servers' max_payload, less the envelope's room"
        );
        broker.max_packet_size = payload;
    }
    broker.max_topic_length = broker.max_topic_length.min(CLUSTER_MAX_TOPIC);
    Ok((nats, snapshot))
}

/// Bytes of a NATS message kept for the envelope around an MQTT packet.
const CLUSTER_ENVELOPE_ROOM: usize = 4096;

/// The longest topic in cluster mode: escaped three times over, with its prefix, it stays
/// within NATS's 4 KB control line.
const CLUSTER_MAX_TOPIC: usize = 1000;

/// Binds the listeners, serves until SIGINT or SIGTERM (reloading on SIGHUP), then shuts
/// down gracefully. `tls` is there when a TLS listener is on; `security` is who may connect.
async fn run(
    mut config: Config,
    tls: Option<Arc<ServerTls>>,
    security: auth::Setup,
) -> anyhow::Result<()> {
    let files = raise_open_files_limit();
    let http_listener = bind(config.http.as_deref(), "HTTP").await?;
    let mqtt_listener = bind(config.mqtt.as_deref(), "MQTT").await?;
    let mqtts_listener = bind(config.mqtts.as_deref(), "MQTT over TLS").await?;
    let https_listener = bind(config.https.as_deref(), "HTTPS").await?;
    let http_addr = local_addr(&http_listener)?;
    let https_addr = local_addr(&https_listener)?;
    let mqtt_addr = local_addr(&mqtt_listener)?;
    let mqtts_addr = local_addr(&mqtts_listener)?;
    let line = listening_line(http_addr, mqtt_addr, mqtts_addr, https_addr);
    warn_open_listeners(
        &[
            (http_addr, "HTTP (WebSocket at /mqtt)", false),
            (mqtt_addr, "MQTT", false),
            (mqtts_addr, "MQTT over TLS", true),
            (https_addr, "HTTPS (WebSocket at /mqtt)", true),
        ],
        security.requires_credentials(),
    );
    // Installed before the "listening" line, so a signal sent right after it is handled.
    let mut signals = Signals::new().context("cannot install signal handlers")?;

    // The store before anything is served: a data directory that cannot be used stops the
    // start with the reason (exit 1), and nothing in it is changed. In cluster mode, NATS
    // must answer first (exit 1 with the URLs if not).
    let cluster = match config.cluster.clone() {
        Some(c) => Some(start_cluster(&c, &mut config.broker).await?),
        None => None,
    };
    let (broker, cluster_sessions) = match (&config.data, cluster) {
        (data, Some((nats, snapshot))) => {
            // The cluster holds the sessions: the node keeps its own in memory.
            if let DataDir::Dir(dir) = data {
                tracing::info!(data = %dir.display(), "cluster mode: sessions are kept in JetStream; the data directory is not used");
            }
            let inner = Box::new(broker::MemoryStore::without_restart());
            let next = snapshot.next_sequence;
            let position = Arc::new(std::sync::atomic::AtomicU64::new(next.saturating_sub(1)));
            let store = cluster::ClusterStore::new(
                inner,
                nats.clone(),
                tokio::runtime::Handle::current(),
                snapshot.retained,
                next,
                config.broker.max_queued_messages,
            );
            let groups = store.groups();
            let claims = Arc::new(cluster::Claims::new(nats.clone(), Arc::clone(&position)));
            let (broker, recovered) = Broker::with_cluster(
                config.broker.clone(),
                security.authenticator.clone(),
                Box::new(store),
                claims.clone(),
            )?;
            tracing::info!(
                node = %nats.config.node,
                retained = recovered.retained,
                from_sequence = next,
                "joined the cluster"
            );
            tokio::spawn(cluster::claims::serve_releases(
                nats.clone(),
                broker.clone(),
            ));
            tokio::spawn(cluster::guard::run(nats.clone(), broker.clone()));
            tokio::spawn(cluster::groups::run(nats.clone(), broker.clone(), groups));
            // Every session of the cluster (the API lists them; dead nodes' are adopted).
            let directory = cluster::Directory::default();
            tokio::spawn(directory.clone().run(nats.clone()));
            tokio::spawn(cluster::adoption::run(
                nats.clone(),
                broker.clone(),
                directory.clone(),
                claims,
            ));
            let sessions = state::ClusterSessions {
                node: Arc::from(nats.config.node.as_str()),
                directory,
            };
            tokio::spawn(cluster::feed::run(nats, broker.clone(), next, position));
            (broker, Some(sessions))
        }
        (DataDir::None, None) => {
            tracing::info!("--data none: memory only; sessions are lost when the bridge stops");
            let broker =
                Broker::with_authenticator(config.broker.clone(), security.authenticator.clone());
            (broker, None)
        }
        (DataDir::Dir(dir), None) => {
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
            (broker, None)
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
        // An MQTT connection over TCP takes one descriptor, two while its peer is slow to
        // read (see `tcp::TcpTransport`).
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
    // The default allowed hosts are made from every HTTP listen address.
    let http_addrs: Vec<_> = [http_addr, https_addr].into_iter().flatten().collect();
    let guard = guard::Guard::new(&config.server, &config.api, &http_addrs);
    let app = http::router(
        AppState {
            broker: broker.clone(),
            tracker: tracker.downgrade(),
            limits: limits.clone(),
            guard: std::sync::Arc::new(guard),
            cluster: cluster_sessions,
        },
        &config.web,
        &config.pkg,
        Arc::new(metrics::Exporter::new(&broker, &config.metrics)),
    );
    // HTTP and HTTPS connections count against one cap.
    let http_places = http_listener::places(&http_limits);
    let mut http_tasks = Vec::new();
    for (listener, tls) in [(http_listener, None), (https_listener, tls.clone())] {
        let Some(listener) = listener else { continue };
        http_tasks.push(tokio::spawn(http_listener::serve(
            listener,
            app.clone(),
            http_limits,
            Arc::clone(&http_places),
            tls,
            stop.clone(),
        )));
    }
    let mut tcp_tasks = Vec::new();
    for (listener, tls) in [(mqtt_listener, None), (mqtts_listener, tls.clone())] {
        let Some(listener) = listener else { continue };
        tcp_tasks.push(tokio::spawn(tcp::serve(
            listener,
            broker.clone(),
            limits.clone(),
            stop.clone(),
            tracker.clone(),
            tls,
        )));
    }

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    tracing::info!("{line}");

    let reloadable = Reloadable {
        tls,
        auth: security.files.clone(),
    };
    let signal = loop {
        match signals.recv().await {
            Signal::Reload => reload(&reloadable).await,
            Signal::Stop(name) => break name,
        }
    };
    tracing::info!("{signal} received: shutting down");
    stop.cancel();
    broker.shutdown().await;
    let abort = tracker.abort.clone();
    drop(tracker);
    // Every connection task holds a tracker; `recv` gives `None` once the last one is gone.
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        for task in tcp_tasks {
            let _ = task.await;
        }
        for task in &mut http_tasks {
            let _ = task.await;
        }
        finished.recv().await
    })
    .await;
    if drained.is_err() {
        tracing::info!("closing connections still open after {DRAIN_GRACE:?}");
        abort.cancel();
        for task in &http_tasks {
            task.abort();
        }
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

/// Binds `addr` for `what`, unless the listener is off.
async fn bind(addr: Option<&str>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    Ok(Some(listener))
}

/// Warns, at start, about each listener reachable from other machines that lets anyone in
/// (no `[auth]` method, or `allow_anonymous`) or that carries credentials and messages in
/// clear text (no TLS). Loopback listeners are the machine's own business.
fn warn_open_listeners(listeners: &[(Option<SocketAddr>, &str, bool)], credentials: bool) {
    for &(addr, what, tls) in listeners {
        let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) else {
            continue;
        };
        if !credentials {
            tracing::warn!(
                %addr,
                "{what} listener reachable from other machines lets any client connect, \
                 read and publish: configure [auth] (password_file, [auth.jwt]) and an \
                 acl_file (see the README, Securing the bridge)"
            );
        }
        if !tls {
            tracing::warn!(
                %addr,
                "{what} listener reachable from other machines is not encrypted: passwords, \
                 tokens and messages cross the network in clear text; use --mqtts / --https \
                 with [tls] cert_file and key_file"
            );
        }
    }
}

fn local_addr(listener: &Option<TcpListener>) -> std::io::Result<Option<SocketAddr>> {
    listener.as_ref().map(TcpListener::local_addr).transpose()
}

/// The line printed once every listener is bound: the plain listeners' fields in their
/// historical order, then the TLS ones; a listener that is off has no field.
fn listening_line(
    http: Option<SocketAddr>,
    mqtt: Option<SocketAddr>,
    mqtts: Option<SocketAddr>,
    https: Option<SocketAddr>,
) -> String {
    let mut line = String::from("bridge listening:");
    if let Some(addr) = http {
        line.push_str(&format!(" http=http://{addr}/ ws=ws://{addr}/mqtt"));
    }
    if let Some(addr) = mqtt {
        line.push_str(&format!(" mqtt={addr}"));
    }
    if let Some(addr) = mqtts {
        line.push_str(&format!(" mqtts={addr}"));
    }
    if let Some(addr) = https {
        line.push_str(&format!(" https=https://{addr}/ wss=wss://{addr}/mqtt"));
    }
    line
}

/// What SIGHUP reads again: the files that may change while the bridge runs. Add here
/// anything else read from a file at start that should change without a restart (and to
/// [`reload`]).
#[derive(Debug, Default)]
struct Reloadable {
    /// The TLS listeners' certificate, key and client CA bundle.
    tls: Option<Arc<ServerTls>>,
    /// `[auth]`'s password file, ACL file and token key.
    auth: Option<Arc<auth::FileAuthenticator>>,
}

/// SIGHUP: every part of [`Reloadable`] reads its files again. A part whose new files
/// cannot be used keeps what it had and logs why, so a reload never takes anything away;
/// connections already open are not touched (they keep what they were set up with).
async fn reload(what: &Reloadable) {
    let mut parts = 0;
    if let Some(tls) = &what.tls {
        parts += 1;
        // A few small files: read on this thread.
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded; new connections use it"),
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: TLS certificate not reloaded; the previous one stays in use"
            ),
        }
    }
    if let Some(auth) = &what.auth {
        parts += 1;
        // A password file may hold many users: read on a blocking thread. The new files
        // apply to new connections and to every later ACL decision; a bad file changes
        // nothing (the error names the file and line).
        let auth = Arc::clone(auth);
        match tokio::task::spawn_blocking(move || auth.reload()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "SIGHUP: [auth] files not reloaded; the previous ones stay in force"
            ),
            Err(e) => tracing::error!(error = %e, "SIGHUP: [auth] reload failed"),
        }
    }
    if parts == 0 {
        tracing::info!("SIGHUP: nothing to reload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_keeps_the_plain_fields_first_and_leaves_out_listeners_that_are_off() {
        let a: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:1883".parse().expect("addr");
        let c: SocketAddr = "127.0.0.1:8883".parse().expect("addr");
        let d: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        assert_eq!(
            listening_line(Some(a), Some(b), None, None),
            "bridge listening: http=http://127.0.0.1:8080/ ws=ws://127.0.0.1:8080/mqtt \
             mqtt=127.0.0.1:1883"
        );
        assert_eq!(
            listening_line(Some(a), Some(b), Some(c), Some(d)),
            "bridge listening: http=http://127.0.0.1:8080/ ws=ws://127.0.0.1:8080/mqtt \
             mqtt=127.0.0.1:1883 mqtts=127.0.0.1:8883 https=https://127.0.0.1:8443/ \
             wss=wss://127.0.0.1:8443/mqtt"
        );
        assert_eq!(
            listening_line(None, None, Some(c), None),
            "bridge listening: mqtts=127.0.0.1:8883"
        );
    }
}
