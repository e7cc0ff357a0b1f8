//! The broker handle and the engine thread: what every connection shares.
//!
//! [`Broker`] starts the engine on a thread of its own (it owns all session state and does
//! the store's synchronous writes), feeds it through one bounded channel, and hands each
//! new transport to `connection`, which serves it. A transport is a `Stream` of
//! byte chunks and a `Sink` of byte chunks: TCP (a framed socket) and WebSocket (binary
//! frames) both fit, so one connection loop serves both; the bridge only adapts its
//! sockets. Chunk boundaries mean nothing: a chunk may hold several packets or part of one
//! [MQTT-6.0.0-2].

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::auth::{AllowAll, Authenticator, ConnectionInfo};
use crate::cluster::SessionClaims;
use crate::command::{Command, Request};
use crate::config::BrokerConfig;
use crate::connection::Connection;
pub use crate::connection::ConnectionError;
use crate::engine::{Engine, RecoverStats};
use crate::ids::ConnId;
use crate::metrics::Metrics;
use crate::store::{MemoryStore, Store, StoreError};
use crate::view::{
    MessageView, SessionDetail, SessionEvent, SessionFilter, SessionPage, StatsView,
};

/// The broker has stopped (or is stopping): its engine no longer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker is stopping")]
pub struct Stopped;

/// A handle on a running broker; cheap to clone, one per listener.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<BrokerConfig>,
    /// Asked by each connection task at CONNECT (the engine has its own handle for the
    /// authorization questions).
    auth: Arc<dyn Authenticator>,
    tx: mpsc::Sender<Command>,
    next_conn: AtomicU64,
    /// Set at shutdown: connections still waiting for CONNECT end at once.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The engine's session events, to subscribe listeners (the dashboard's stream).
    events: broadcast::Sender<SessionEvent>,
    /// The Prometheus handles the engine, the connections and the store add to.
    metrics: Arc<Metrics>,
    /// Cluster mode: claims each CONNECT's session for this node first.
    claims: Option<Arc<dyn SessionClaims>>,
    /// Cleared while what the broker depends on (the cluster) cannot be reached: CONNECTs
    /// are then refused with 0x88 Server unavailable (3.1.1: 3).
    available: Arc<std::sync::atomic::AtomicBool>,
}

impl Broker {
    /// Starts the engine task on the current tokio runtime, allowing every client.
    pub fn start(config: BrokerConfig) -> Broker {
        Broker::with_authenticator(config, Arc::new(AllowAll))
    }

    /// Starts the engine with an authenticator, in memory only (`--data none`).
    pub fn with_authenticator(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> Broker {
        let config = Arc::new(config);
        let engine = Engine::new(
            config.clone(),
            auth.clone(),
            Box::new(MemoryStore::without_restart()),
        );
        Broker::launch(config, auth, engine, None)
    }

    /// Starts the engine on `store`, after reading back the sessions and retained messages
    /// it holds. Fails, without touching the data, if the store cannot be read.
    pub fn with_store(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        store: Box<dyn Store>,
    ) -> Result<(Broker, RecoverStats), StoreError> {
        let config = Arc::new(config);
        let mut engine = Engine::new(config.clone(), auth.clone(), store);
        let stats = engine.recover(Instant::now())?;
        Ok((Broker::launch(config, auth, engine, None), stats))
    }

    /// Starts the engine as a node of a cluster: `store` routes through the cluster
    /// ([`Store::routes`]) and `claims` claims each CONNECT's session for this node first
    /// (see [`crate::cluster`]).
    pub fn with_cluster(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        store: Box<dyn Store>,
        claims: Arc<dyn SessionClaims>,
    ) -> Result<(Broker, RecoverStats), StoreError> {
        let config = Arc::new(config);
        let mut engine = Engine::new(config.clone(), auth.clone(), store);
        let stats = engine.recover(Instant::now())?;
        Ok((Broker::launch(config, auth, engine, Some(claims)), stats))
    }

    /// Lets another node of the cluster have `client_id`'s session: its connection here is
    /// closed (5.0: DISCONNECT 0x8E) and the session written for the last time before this
    /// returns. `false` if this node had no such session.
    pub async fn release(&self, client_id: &str) -> Result<bool, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Release { client_id, reply })
            .await
    }

    /// Runs the engine on a thread of its own (it owns all session state and does the
    /// store's synchronous writes, so it must not stall the async workers), fed by one
    /// bounded channel, with a timer task sending it `Tick`s.
    fn launch(
        config: Arc<BrokerConfig>,
        auth: Arc<dyn Authenticator>,
        mut engine: Engine,
        claims: Option<Arc<dyn SessionClaims>>,
    ) -> Broker {
        let metrics = Arc::new(Metrics::new());
        engine.set_metrics(Arc::clone(&metrics));
        let events = engine.event_sender();
        let (tx, rx) = mpsc::channel(config.engine_queue.max(1));
        let spawned = std::thread::Builder::new()
            .name("broker-engine".into())
            .spawn({
                let metrics = Arc::clone(&metrics);
                move || run_engine(engine, rx, &metrics)
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the engine thread");
        }
        let ticker = tx.downgrade();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(tx) = ticker.upgrade() else { break };
                if tx.send(Command::Tick).await.is_err() {
                    break;
                }
            }
        });
        Broker {
            inner: Arc::new(Inner {
                config,
                auth,
                tx,
                next_conn: AtomicU64::new(0),
                stopping: tokio::sync::watch::channel(false).0,
                events,
                metrics,
                claims,
                available: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// Puts one request to the engine and waits for its answer; `Err(Stopped)` once the
    /// engine is gone.
    async fn ask<R>(
        &self,
        request: impl FnOnce(oneshot::Sender<R>) -> Request,
    ) -> Result<R, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Request(request(reply)))
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }

    /// The sessions matching `filter`, sorted by client id, one page.
    pub async fn sessions(&self, filter: SessionFilter) -> Result<SessionPage, Stopped> {
        self.ask(|reply| Request::Sessions { filter, reply }).await
    }

    /// Everything about the session of `client_id`; `None` if there is none.
    pub async fn session(&self, client_id: &str) -> Result<Option<SessionDetail>, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Session { client_id, reply })
            .await
    }

    /// The first `limit` messages queued for a session, oldest first (an offline session's
    /// are read from the store); `None` if there is no such session.
    pub async fn queue(
        &self,
        client_id: &str,
        limit: usize,
    ) -> Result<Option<Vec<MessageView>>, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Queue {
            client_id,
            limit,
            reply,
        })
        .await
    }

    /// The first `limit` messages in flight to a session, in send order; `None` if there
    /// is no such session.
    pub async fn inflight(
        &self,
        client_id: &str,
        limit: usize,
    ) -> Result<Option<Vec<MessageView>>, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Inflight {
            client_id,
            limit,
            reply,
        })
        .await
    }

    /// Retained messages whose topic starts with `prefix`, sorted by topic, at most
    /// `limit`, and how many match.
    pub async fn retained(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(usize, Vec<MessageView>), Stopped> {
        let prefix = prefix.to_owned();
        self.ask(|reply| Request::Retained {
            prefix,
            limit,
            reply,
        })
        .await
    }

    /// The Prometheus handles of this broker, to register with
    /// [`Metrics::register`]; call [`Broker::refresh_metrics`] before each scrape.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Sets the gauges that are totals over sessions (online, offline, queued, in flight,
    /// retained) from the engine's answer: one request per scrape, nothing per change.
    pub async fn refresh_metrics(&self) -> Result<(), Stopped> {
        let stats = self.stats().await?;
        self.inner.metrics.set_totals(&stats);
        Ok(())
    }

    /// The broker's totals.
    pub async fn stats(&self) -> Result<StatsView, Stopped> {
        self.ask(|reply| Request::Stats { reply }).await
    }

    /// Closes the connection of `client_id` by an administrator's decision (5.0: DISCONNECT
    /// 0x98 Administrative action, and the will is published); the session is kept per its
    /// expiry. `false` if there is no such session.
    pub async fn kick(&self, client_id: &str) -> Result<bool, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Kick { client_id, reply }).await
    }

    /// Ends the session of `client_id` (its connection closed first, as by [`Broker::kick`];
    /// a will still waiting for its delay is published now). `false` if there is no such
    /// session.
    pub async fn discard(&self, client_id: &str) -> Result<bool, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Discard { client_id, reply })
            .await
    }

    /// Routes a message the cluster delivered to this node's sessions, in the order of the
    /// calls (see `Store::routes`). Waits while the engine's channel is full, so the
    /// cluster's reader is held back by a busy engine rather than buffering without bound.
    pub async fn route(&self, msg: crate::store::StoredMessage) -> Result<(), Stopped> {
        self.inner
            .tx
            .send(Command::Route(Box::new(msg)))
            .await
            .map_err(|_| Stopped)
    }

    /// Takes the session of `client_id`, whose node died, without its client (cluster
    /// mode): `claim` is what the adopting claim read. The session is restored offline, its
    /// expiry running and its wills armed. `false` if it was not installed.
    pub async fn adopt(
        &self,
        client_id: &str,
        claim: crate::cluster::Claim,
    ) -> Result<bool, Stopped> {
        let client_id = client_id.to_owned();
        self.ask(|reply| Request::Adopt {
            client_id,
            claim,
            reply,
        })
        .await
    }

    /// Marks what the broker depends on as reachable or not (cluster mode: NATS). While
    /// unreachable, new CONNECTs are refused with 0x88 Server unavailable (3.1.1: return
    /// code 3); [`Broker::disconnect_all`] ends the connections already open.
    pub fn set_available(&self, available: bool) {
        self.inner.available.store(available, Ordering::Release);
    }

    /// Closes every client connection (5.0: DISCONNECT with `reason`), keeping the
    /// sessions, as when the broker can no longer store what clients send. Returns how many
    /// were closed.
    pub async fn disconnect_all(&self, reason: protocol::ReasonCode) -> Result<usize, Stopped> {
        self.ask(|reply| Request::DisconnectAll { reason, reply })
            .await
    }

    /// Routes a message the cluster gave this node for the shared subscription group
    /// `group` to one member of it here. Returns once the delivery is written: `true` if a
    /// member got it, `false` if this node has no member of that group (any more).
    pub async fn route_shared(
        &self,
        group: Arc<str>,
        msg: crate::store::StoredMessage,
    ) -> Result<bool, Stopped> {
        let (done, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::RouteShared {
                group,
                msg: Box::new(msg),
                done,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// A receiver of session changes. A receiver that falls more than
    /// 1024 events behind gets `RecvError::Lagged` and skips
    /// them: this is a UI stream, never the path of a QoS 1/2 message.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Resolves once shutdown has begun (long-lived HTTP streams end then).
    pub async fn stopped(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        let _ = stopping.wait_for(|&stop| stop).await;
    }

    /// Closes every connection (5.0 clients get DISCONNECT 0x8B) and refuses new ones.
    pub async fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
        let (done, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Serves one MQTT connection over `transport` until it ends: CONNECT within
    /// `connect_timeout_secs`; then a complete packet at least every 1.5 × the keep-alive
    /// [MQTT-3.1.2-24] (what the broker sends does not count); and any packet, once begun,
    /// finished within `packet_timeout_secs`, keep-alive 0 or not. Read and write buffers
    /// are held only while in use.
    ///
    /// Not an `async fn`: its arguments would stay in the returned future for the
    /// connection's whole life, beside the copies the connection task makes of them, and
    /// every idle connection would pay for them twice.
    pub fn serve<'a, T>(
        &'a self,
        transport: T,
        info: ConnectionInfo,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send + 'a
    where
        T: Stream<Item = io::Result<Bytes>> + Sink<Bytes, Error = io::Error> + Unpin + Send + 'a,
    {
        let id = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        Connection::serve(
            id,
            &self.inner.config,
            &self.inner.metrics,
            &*self.inner.auth,
            self.inner.claims.as_deref(),
            &self.inner.available,
            &self.inner.tx,
            self.inner.stopping.subscribe(),
            transport,
            // Boxed: held across the connection's first awaits, it would otherwise add its
            // size to every connection's task.
            Box::new(info),
        )
    }
}

/// The engine thread: a batch is the first command waiting and all that is already queued
/// behind it (up to 1025), then one flush. Two clock reads per batch (its start, which is
/// the batch's `now`, and its end, for `mqtt_bridge_engine_busy_seconds_total`).
fn run_engine(mut engine: Engine, mut rx: mpsc::Receiver<Command>, metrics: &Metrics) {
    while let Some(cmd) = rx.blocking_recv() {
        let now = Instant::now();
        engine.handle(cmd, now);
        let mut commands = 1;
        // Everything else already waiting joins the batch: one store commit for all of it.
        for _ in 0..1024 {
            match rx.try_recv() {
                Ok(cmd) => {
                    engine.handle(cmd, now);
                    commands += 1;
                }
                Err(_) => break,
            }
        }
        engine.flush(now);
        metrics.set_retained_bytes(engine.retained_payload_bytes());
        metrics.engine_batch(commands, now.elapsed());
    }
    engine.flush(Instant::now());
}
