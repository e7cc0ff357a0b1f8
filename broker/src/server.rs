//! The broker handle and the engine thread: what every connection shares.
//!
//! [`Broker`] starts the engine on a thread of its own (it owns all session state and does
//! the store's synchronous writes), feeds it through one bounded channel, and hands each
//! new transport to `connection`, which serves it. A transport is a `Stream` of
//! byte chunks and a `Sink` of byte chunks: TCP (a framed socket) and WebSocket (binary
//! frames) both fit, so one connection loop serves both; the bridge only adapts its
//! sockets. Chunk boundaries mean nothing: a chunk may hold several packets or part of one
//! [MQTT-6.0.0-2].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::auth::{AllowAll, Authenticator, ConnectionInfo};
use crate::config::BrokerConfig;
use crate::connection::Connection;
pub use crate::connection::ConnectionError;
use crate::engine::{Admin, Command, Engine, RecoverStats};
use crate::session::ConnId;
use crate::store::{MemoryStore, Store, StoreError};
use crate::view::SessionEvent;

/// A handle on a running broker; cheap to clone, one per listener.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<BrokerConfig>,
    tx: mpsc::Sender<Command>,
    next_conn: AtomicU64,
    /// Set at shutdown: connections still waiting for CONNECT end at once.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The engine's session events, to subscribe listeners (the dashboard's stream).
    events: broadcast::Sender<SessionEvent>,
}

impl Broker {
    /// Starts the engine task on the current tokio runtime, allowing every client.
    pub fn start(config: BrokerConfig) -> Broker {
        Broker::with_authenticator(config, Arc::new(AllowAll))
    }

    /// Starts the engine with an authenticator, in memory only (`--data none`).
    pub fn with_authenticator(config: BrokerConfig, auth: Arc<dyn Authenticator>) -> Broker {
        let config = Arc::new(config);
        let engine = Engine::new(config.clone(), auth, Box::new(MemoryStore::new()));
        Broker::launch(config, engine)
    }

    /// Starts the engine on `store`, after reading back the sessions and retained messages
    /// it holds. Fails, without touching the data, if the store cannot be read.
    pub fn with_store(
        config: BrokerConfig,
        auth: Arc<dyn Authenticator>,
        store: Box<dyn Store>,
    ) -> Result<(Broker, RecoverStats), StoreError> {
        let config = Arc::new(config);
        let mut engine = Engine::new(config.clone(), auth, store);
        let stats = engine.recover(Instant::now())?;
        Ok((Broker::launch(config, engine), stats))
    }

    /// Runs the engine on a thread of its own (it owns all session state and does the
    /// store's synchronous writes, so it must not stall the async workers), fed by one
    /// bounded channel, with a timer task sending it `Tick`s.
    fn launch(config: Arc<BrokerConfig>, engine: Engine) -> Broker {
        let events = engine.event_sender();
        let (tx, rx) = mpsc::channel(config.engine_queue.max(1));
        let spawned = std::thread::Builder::new()
            .name("broker-engine".into())
            .spawn(move || run_engine(engine, rx));
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
                tx,
                next_conn: AtomicU64::new(0),
                stopping: tokio::sync::watch::channel(false).0,
                events,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// Runs an engine query (for the HTTP API) on the engine's task.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Inspect(crate::engine::Inspector(Box::new(move |e: &Engine| {
            let _ = tx.send(f(e));
        })));
        self.inner.tx.send(cmd).await.ok()?;
        rx.await.ok()
    }

    /// Runs an administrative change (kick, discard, reading an offline queue from the
    /// store) on the engine's task, with the batch's time; the batch is flushed after it,
    /// so what it sends goes out and what it changes is stored.
    pub async fn admin<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine, Instant) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Admin(Admin(Box::new(move |e: &mut Engine, now: Instant| {
            let _ = tx.send(f(e, now));
        })));
        self.inner.tx.send(cmd).await.ok()?;
        rx.await.ok()
    }

    /// A receiver of session changes. A receiver that falls more than
    /// [`crate::engine::EVENT_CAPACITY`] events behind gets `RecvError::Lagged` and skips
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
    pub async fn serve<T>(&self, transport: T, info: ConnectionInfo) -> Result<(), ConnectionError>
    where
        T: Stream<Item = io::Result<Bytes>> + Sink<Bytes, Error = io::Error> + Unpin,
    {
        let id = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        Connection::serve(
            id,
            &self.inner.config,
            &self.inner.tx,
            self.inner.stopping.subscribe(),
            transport,
            info,
        )
        .await
    }
}

fn run_engine(mut engine: Engine, mut rx: mpsc::Receiver<Command>) {
    while let Some(cmd) = rx.blocking_recv() {
        let now = Instant::now();
        engine.handle(cmd, now);
        // Everything else already waiting joins the batch: one store commit for all of it.
        for _ in 0..1024 {
            match rx.try_recv() {
                Ok(cmd) => engine.handle(cmd, now),
                Err(_) => break,
            }
        }
        engine.flush(now);
    }
    engine.flush(Instant::now());
}
