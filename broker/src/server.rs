//! The async side: the engine task, and the connection task generic over any transport.
//!
//! A transport is a `Stream` of byte chunks and a `Sink` of byte chunks. TCP (a framed
//! socket) and WebSocket (binary frames) both fit, so one connection loop serves both; the
//! bridge only adapts its sockets. Chunk boundaries mean nothing: a chunk may hold several
//! packets or part of one [MQTT-6.0.0-2].

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use protocol::{ConnAck, Decoder, Disconnect, Packet, ProtocolVersion, ReasonCode};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::auth::{AllowAll, Authenticator, ConnectionInfo};
use crate::config::BrokerConfig;
use crate::engine::{
    connection_channel_capacity, Admin, CloseReason, Command, Engine, Outgoing, RecoverStats,
};
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

/// How a connection ended, for the transport's logs.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The transport failed.
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] protocol::DecodeError),
    /// The first packet was not CONNECT [MQTT-3.1.0-1].
    #[error("first packet was not CONNECT")]
    NotConnect,
    /// No CONNECT in time.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// Nothing within 1.5 times the keep-alive.
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
    /// The broker is stopping.
    #[error("broker stopped")]
    Stopped,
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

    /// Serves one MQTT connection over `transport` until it ends.
    pub async fn serve<T>(&self, transport: T, info: ConnectionInfo) -> Result<(), ConnectionError>
    where
        T: Stream<Item = io::Result<Bytes>> + Sink<Bytes, Error = io::Error> + Unpin,
    {
        let conn = ConnId(self.inner.next_conn.fetch_add(1, Ordering::Relaxed));
        let cfg = self.inner.config.clone();
        let (mut sink, mut stream) = transport.split();
        let mut decoder = Decoder::new(cfg.max_packet_size);
        decoder.set_topic_alias_maximum(cfg.topic_alias_maximum);
        let mut pending: Vec<Packet> = Vec::new();

        // 1. CONNECT, within the connect timeout [MQTT-3.1.0-1].
        let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.connect_timeout_secs);
        let mut stopping = self.inner.stopping.subscribe();
        let connect = loop {
            if *stopping.borrow_and_update() {
                let _ = sink.close().await;
                return Err(ConnectionError::Stopped);
            }
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, stream.next()) => next,
                _ = stopping.changed() => continue,
            };
            let chunk = match next {
                Err(_) => {
                    let _ = sink.close().await;
                    return Err(ConnectionError::ConnectTimeout);
                }
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => {
                    let _ = sink.close().await;
                    return Err(e.into());
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let mut input = &chunk[..];
            match decode_all(&mut decoder, &mut input, &mut pending) {
                Ok(()) => {}
                Err(e) => {
                    // An unsupported protocol level is answered with CONNACK 0x01 in the
                    // 3.1.1 format [MQTT-3.1.2-2]; anything else just closes.
                    if let protocol::DecodeError::UnsupportedProtocolVersion(_) = e {
                        let mut buf = BytesMut::new();
                        let ack = Packet::ConnAck(ConnAck::new(
                            false,
                            ReasonCode::UnsupportedProtocolVersion,
                        ));
                        if ack.encode(ProtocolVersion::V311, &mut buf).is_ok() {
                            let _ = sink.send(buf.freeze()).await;
                        }
                    }
                    let _ = sink.close().await;
                    return Err(e.into());
                }
            }
            if pending.is_empty() {
                continue;
            }
            match pending.remove(0) {
                Packet::Connect(c) => break c,
                _ => {
                    let _ = sink.close().await;
                    return Err(ConnectionError::NotConnect);
                }
            }
        };
        let version = connect.protocol;
        let keep_alive = cfg.effective_keep_alive(connect.keep_alive, version);
        let client_max = connect
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize);
        let mut aliases =
            protocol::OutboundAliases::new(connect.properties.topic_alias_maximum.unwrap_or(0));
        let (out_tx, mut out_rx) = mpsc::channel(connection_channel_capacity(&cfg));
        let cmd = Command::Connect {
            conn,
            connect,
            info,
            tx: out_tx,
        };
        if self.inner.tx.send(cmd).await.is_err() {
            return Err(ConnectionError::Stopped);
        }
        for packet in pending.drain(..) {
            if self
                .inner
                .tx
                .send(Command::Packet { conn, packet })
                .await
                .is_err()
            {
                return Err(ConnectionError::Stopped);
            }
        }

        // 2. The connection: packets in to the engine, packets out from it.
        let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut out = BytesMut::with_capacity(8 * 1024);
        let (reason, result) = loop {
            let read = async {
                match idle {
                    Some(d) => tokio::time::timeout(d, stream.next()).await.map_err(|_| ()),
                    None => Ok(stream.next().await),
                }
            };
            tokio::select! {
                item = out_rx.recv() => {
                    let mut close = false;
                    let mut item = item;
                    // Batch what is ready into one write (one WebSocket frame).
                    loop {
                        match item {
                            Some(Outgoing::Packet(mut p)) => {
                                let mut new_alias = false;
                                if let (Packet::Publish(publish), ProtocolVersion::V5) = (&mut p, version) {
                                    new_alias = aliases.apply(publish);
                                }
                                if let Err(e) = p.encode_limited(version, client_max, &mut out) {
                                    // A new alias adds 3 bytes: take it back, and send the
                                    // message without it if that fits [MQTT-3.1.2-24] (the
                                    // engine checked the size without an alias).
                                    let retry = match (&mut p, new_alias) {
                                        (Packet::Publish(publish), true) => {
                                            aliases.forget(&publish.topic);
                                            publish.properties.topic_alias = None;
                                            true
                                        }
                                        _ => false,
                                    };
                                    if !retry || p.encode_limited(version, client_max, &mut out).is_err() {
                                        tracing::debug!(error = %e, "not sent: cannot encode for this client");
                                    }
                                }
                            }
                            Some(Outgoing::Close) | None => { close = true; break; }
                        }
                        if out.len() >= 64 * 1024 { break; }
                        match out_rx.try_recv() {
                            Ok(next) => item = Some(next),
                            Err(_) => break,
                        }
                    }
                    if !out.is_empty() {
                        if let Err(e) = sink.send(out.split().freeze()).await {
                            break (CloseReason::NetworkLoss, Err(e.into()));
                        }
                    }
                    if close {
                        break (CloseReason::ServerClosed, Ok(()));
                    }
                }
                chunk = read => {
                    let chunk = match chunk {
                        Err(()) => {
                            // [MQTT-3.1.2-24]: 1.5 times the keep-alive without a packet.
                            if version == ProtocolVersion::V5 {
                                send_disconnect(&mut sink, ReasonCode::KeepAliveTimeout).await;
                            }
                            break (CloseReason::KeepAliveTimeout, Err(ConnectionError::KeepAliveTimeout));
                        }
                        Ok(None) => break (CloseReason::NetworkLoss, Ok(())),
                        Ok(Some(Err(e))) => break (CloseReason::NetworkLoss, Err(e.into())),
                        Ok(Some(Ok(chunk))) => chunk,
                    };
                    let mut input = &chunk[..];
                    let decoded = decode_all(&mut decoder, &mut input, &mut pending);
                    let mut stopped = false;
                    for packet in pending.drain(..) {
                        if self.inner.tx.send(Command::Packet { conn, packet }).await.is_err() {
                            stopped = true;
                            break;
                        }
                    }
                    if stopped {
                        break (CloseReason::ServerClosed, Err(ConnectionError::Stopped));
                    }
                    if let Err(e) = decoded {
                        if version == ProtocolVersion::V5 {
                            send_disconnect(&mut sink, e.reason_code()).await;
                        }
                        break (CloseReason::ProtocolError, Err(e.into()));
                    }
                }
            }
        };
        let _ = self.inner.tx.send(Command::Closed { conn, reason }).await;
        // Send what the engine queued before it closed us (e.g. DISCONNECT 0x8E).
        while let Ok(Outgoing::Packet(p)) = out_rx.try_recv() {
            let _ = p.encode_limited(version, client_max, &mut out);
        }
        if !out.is_empty() {
            let _ = sink.send(out.split().freeze()).await;
        }
        let _ = sink.close().await;
        result
    }
}

/// Decodes every whole packet in `input`; stops at the first error.
fn decode_all(
    decoder: &mut Decoder,
    input: &mut &[u8],
    out: &mut Vec<Packet>,
) -> Result<(), protocol::DecodeError> {
    while let Some(p) = decoder.decode(input)? {
        out.push(p);
    }
    Ok(())
}

async fn send_disconnect<S: Sink<Bytes, Error = io::Error> + Unpin>(
    sink: &mut S,
    reason: ReasonCode,
) {
    let mut buf = BytesMut::new();
    if Packet::Disconnect(Disconnect::new(reason))
        .encode(ProtocolVersion::V5, &mut buf)
        .is_ok()
    {
        let _ = sink.send(buf.freeze()).await;
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
