//! One client connection, from its first byte to its close: the CONNECT handshake, then
//! packets in to the engine and packets out from it, over any transport.
//!
//! # Why a module of its own
//! [`crate::server`] owns what all connections share (the engine thread, its channel, the
//! shutdown signal); this module owns what each connection holds and when it must end. The
//! two change for different reasons: the rules below are about hostile or broken peers, and
//! they are easier to check when nothing else is in the file.
//!
//! # The clocks of a connection
//! A peer must not be able to keep a connection (and what it holds) open by sending a little
//! at a time, nor by being sent to. So there are exactly three deadlines, each a pinned
//! [`Sleep`] that is reset only when its own condition happens (a timeout rebuilt in every
//! `select!` pass restarts whenever any other branch wakes the task, and never fires while
//! messages flow out):
//! - the **connect timeout**: CONNECT must be complete within `connect_timeout_secs` of the
//!   connection's start [MQTT-3.1.0-1];
//! - the **keep-alive**: once connected with a keep-alive of `k` seconds, a complete packet
//!   must be decoded at least every `1.5 × k` seconds, or the connection is closed (5.0:
//!   DISCONNECT 0x8D first) [MQTT-3.1.2-24]. Outgoing traffic does not count, and neither
//!   do bytes of a packet that is not finished yet (a trickle of one byte a second is not a
//!   packet);
//! - the **packet deadline**: once the first byte of a packet has arrived, the rest must
//!   arrive within `packet_timeout_secs`, whatever the keep-alive, 0 ("none") included: a
//!   peer holding half a packet holds up to `max_packet_size` of our memory.
//!
//! # Memory while idle
//! An idle connection should cost as little as possible (thousands of browsers may keep one
//! open and silent). It holds no read buffer (the decoder frees a large partial-packet
//! buffer once the packet is decoded, see [`protocol::Decoder`]) and no write buffer: each
//! batch of outgoing packets is encoded into a buffer made for it and handed to the
//! transport, which owns it from then on.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use protocol::{
    ConnAck, Connect, Decoder, Disconnect, OutboundAliases, Packet, ProtocolVersion, ReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::auth::{Authenticator, ConnectionInfo, Identity, Transport};
use crate::cluster::{Claim, SessionClaims};
use crate::command::{connection_channel_capacity, CloseReason, Command, Flow, Outgoing};
use crate::config::BrokerConfig;
use crate::ids::ConnId;
use crate::metrics::{Metrics, OpenConnection};

mod deadline;
mod encode;
use deadline::{parked, Deadline};
use encode::{disconnect, encode, encode_batch, encoded, unsupported_version_ack};

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
    /// No complete packet within 1.5 times the keep-alive [MQTT-3.1.2-24].
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
    /// A packet begun and not finished within the packet timeout.
    #[error("packet not completed within the packet timeout")]
    PacketTimeout,
    /// A write to a client that does not read did not finish within the packet timeout.
    #[error("write not completed within the packet timeout")]
    WriteTimeout,
    /// The broker is stopping.
    #[error("broker stopped")]
    Stopped,
    /// The CONNECT's credentials were refused (CONNACK with this reason was sent).
    #[error("CONNECT refused: {0:?}")]
    Refused(ReasonCode),
}

/// The most bytes of outgoing packets gathered into one write (one WebSocket frame).
const MAX_BATCH: usize = 64 * 1024;

/// How long the last bytes of a closing connection (a DISCONNECT, a CONNACK refusal) and
/// the transport's close may take when the peer does not read.
const CLOSING_WRITE: Duration = Duration::from_secs(1);

/// Why the connected loop ended: what the engine is told, and what `serve` returns.
type Ending = (CloseReason, Result<(), ConnectionError>);

/// What woke the connected loop. Outgoing packets are already encoded: a [`Packet`] held
/// here would be held across the write's await (see `encoded`).
enum Event {
    Read(Option<io::Result<Bytes>>),
    /// A batch to write, and whether the engine asked to close after it.
    Write(BytesMut, bool),
    KeepAlive,
    PacketTimeout,
    /// The engine resumed a paused connection.
    Resumed,
}

/// What was agreed at CONNECT and how outgoing packets are encoded for this client.
struct Peer<'a> {
    version: ProtocolVersion,
    /// 1.5 × the keep-alive in force; `None` for keep-alive 0.
    idle: Option<Duration>,
    /// The client's Maximum Packet Size (5.0).
    client_max: usize,
    /// Topic aliases towards the client (5.0).
    aliases: OutboundAliases,
    /// CONNACK has gone out. Nothing else may go before it [MQTT-3.2.0-1], so a protocol
    /// error found before then (bytes that followed CONNECT in its chunk) closes the
    /// connection without a DISCONNECT.
    acked: bool,
    /// Where the CONNACK is counted (`mqtt_bridge_connections` / `_connects_refused_total`).
    metrics: &'a Metrics,
    transport: Transport,
    /// In the open-connections gauge since a successful CONNACK went out; leaves it when
    /// dropped, however the connection ends.
    open: Option<OpenConnection>,
}

/// One connection being served: the transport, its decoder, and the engine it talks to.
pub(crate) struct Connection<'a, T> {
    id: ConnId,
    config: &'a BrokerConfig,
    metrics: &'a Metrics,
    engine: &'a mpsc::Sender<Command>,
    /// Read and written in turn from one task, so not split: a split transport costs a
    /// lock and an allocation per connection for nothing.
    transport: T,
    /// Holds the bytes of at most one unfinished packet.
    decoder: Decoder,
    /// Armed while the decoder holds part of a packet, at the time that packet began plus
    /// `packet_timeout_secs`.
    packet: Deadline<'a>,
}

impl<'a, T> Connection<'a, T>
where
    T: Stream<Item = io::Result<Bytes>> + Sink<Bytes, Error = io::Error> + Unpin,
{
    /// Serves `transport` as connection `id` until it ends.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn serve(
        id: ConnId,
        config: &'a BrokerConfig,
        metrics: &'a Metrics,
        auth: &'a dyn Authenticator,
        claims: Option<&'a dyn SessionClaims>,
        available: &'a std::sync::atomic::AtomicBool,
        engine: &'a mpsc::Sender<Command>,
        stopping: watch::Receiver<bool>,
        transport: T,
        info: Box<ConnectionInfo>,
    ) -> Result<(), ConnectionError> {
        metrics.connection_accepted();
        let packet_sleep = std::pin::pin!(parked());
        let keep_alive_sleep = std::pin::pin!(parked());
        let mut decoder = Decoder::new(config.max_packet_size);
        decoder.set_topic_alias_maximum(config.topic_alias_maximum);
        let mut conn = Connection {
            id,
            config,
            metrics,
            engine,
            transport,
            decoder,
            packet: Deadline::new(packet_sleep),
        };
        let Some((connect, rest)) = conn.read_connect(stopping).await? else {
            return Ok(());
        };
        // Who it is, before the engine hears of it: proving a password may take a while,
        // and only this connection waits for it. A refusal is answered here. (Awaited here
        // rather than in `connected`, so that its state shares space with that future's
        // instead of adding to what every idle connection holds.)
        let identity = match auth.authenticate(&connect, &info).await {
            Ok(identity) => Box::new(identity),
            Err(reason) => {
                metrics.connect_refused(reason);
                let ack = ConnAck::new(false, reason);
                conn.send_last(encoded(&Packet::ConnAck(ack), connect.protocol))
                    .await;
                conn.close().await;
                return Err(ConnectionError::Refused(reason));
            }
        };
        // Cluster mode: the session is claimed for this node first (any other node that
        // holds it lets go), so that two nodes never both own it; and nobody is let in
        // while the cluster cannot be reached.
        let claim = if !available.load(std::sync::atomic::Ordering::Acquire) {
            Some(Err(ReasonCode::ServerUnavailable))
        } else {
            match claims {
                Some(claims) if !connect.client_id.is_empty() => {
                    let owner = auth
                        .enforces_ownership()
                        .then_some(identity.username.as_deref());
                    Some(claims.claim(connect.client_id.as_str(), owner).await)
                }
                _ => None,
            }
        };
        let claim = match claim {
            None => None,
            Some(Ok(claim)) => Some(Box::new(claim)),
            Some(Err(reason)) => {
                // 3.1.1 has no 0x88: its "server unavailable" is return code 3.
                metrics.connect_refused(reason);
                let ack = ConnAck::new(false, reason);
                conn.send_last(encoded(&Packet::ConnAck(ack), connect.protocol))
                    .await;
                conn.close().await;
                return Err(ConnectionError::Refused(reason));
            }
        };
        conn.connected(
            connect,
            rest,
            info,
            identity,
            claim,
            Deadline::new(keep_alive_sleep),
        )
        .await
    }

    /// Reads up to a complete CONNECT, within the connect timeout and the packet deadline.
    /// Returns it with the bytes of the chunk that came after it; `None` if the peer left.
    async fn read_connect(
        &mut self,
        mut stopping: watch::Receiver<bool>,
    ) -> Result<Option<(Box<Connect>, Bytes)>, ConnectionError> {
        let connect_timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let connect_deadline = tokio::time::sleep(connect_timeout);
        tokio::pin!(connect_deadline);
        loop {
            if *stopping.borrow_and_update() {
                self.close().await;
                return Err(ConnectionError::Stopped);
            }
            let next = tokio::select! {
                // Input first: a CONNECT that is there when a deadline passes still counts.
                biased;
                next = self.transport.next() => next,
                // The sender lives as long as the broker, which outlives this call.
                _ = stopping.changed() => continue,
                () = &mut connect_deadline => {
                    self.close().await;
                    return Err(ConnectionError::ConnectTimeout);
                }
                () = self.packet.expired() => {
                    self.close().await;
                    return Err(ConnectionError::PacketTimeout);
                }
            };
            let chunk = match next {
                None => return Ok(None),
                Some(Err(e)) => {
                    self.close().await;
                    return Err(e.into());
                }
                Some(Ok(chunk)) => chunk,
            };
            let now = Instant::now();
            let mut input = &chunk[..];
            // The decoded packet is matched in this statement, not across an await (see
            // `encoded`).
            let first = match self.decoder.decode(&mut input) {
                Ok(None) => None,
                Ok(Some(Packet::Connect(connect))) => Some(Ok(connect)),
                Ok(Some(_)) => Some(Err(ConnectionError::NotConnect)),
                Err(e) => Some(Err(e.into())),
            };
            match first {
                None => {
                    // The chunk ended inside the CONNECT: it began with this chunk's first
                    // byte if nothing was held before, and the deadline runs from then.
                    if self.decoder.buffered() > 0 && !self.packet.armed {
                        self.packet.arm(now + self.packet_timeout());
                    }
                }
                Some(Ok(connect)) => {
                    self.packet.disarm();
                    let rest = chunk.slice(chunk.len() - input.len()..);
                    return Ok(Some((connect, rest)));
                }
                Some(Err(e)) => {
                    // An unsupported protocol level is answered with CONNACK 0x01 in the
                    // 3.1.1 format [MQTT-3.1.2-2]; anything else just closes.
                    if let ConnectionError::Protocol(
                        protocol::DecodeError::UnsupportedProtocolVersion(_),
                    ) = e
                    {
                        self.metrics
                            .connect_refused(ReasonCode::UnsupportedProtocolVersion);
                        self.send_last(unsupported_version_ack()).await;
                    }
                    self.close().await;
                    return Err(e);
                }
            }
        }
    }

    /// Hands CONNECT to the engine and serves the connection until it ends; `rest` is what
    /// followed CONNECT in its chunk.
    async fn connected(
        mut self,
        connect: Box<Connect>,
        rest: Bytes,
        info: Box<ConnectionInfo>,
        identity: Box<Identity>,
        claim: Option<Box<Claim>>,
        mut keep_alive: Deadline<'_>,
    ) -> Result<(), ConnectionError> {
        let version = connect.protocol;
        let keep_alive_secs = self
            .config
            .effective_keep_alive(connect.keep_alive, version);
        let mut peer = Peer {
            version,
            idle: (keep_alive_secs > 0)
                .then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500)),
            client_max: connect
                .properties
                .maximum_packet_size
                .map_or(usize::MAX, |m| m as usize),
            aliases: OutboundAliases::new(connect.properties.topic_alias_maximum.unwrap_or(0)),
            acked: false,
            metrics: self.metrics,
            transport: info.transport,
            open: None,
        };
        let (out_tx, mut out_rx) = mpsc::channel(connection_channel_capacity(self.config));
        let flow = Arc::new(Flow::default());
        let Ok(permit) = self.engine.reserve().await else {
            return Err(ConnectionError::Stopped);
        };
        permit.send(Command::Connect {
            conn: self.id,
            connect,
            info,
            identity,
            tx: out_tx,
            flow: Arc::clone(&flow),
            claim,
        });
        // CONNECT was a complete packet: the keep-alive runs from now.
        if let Some(idle) = peer.idle {
            keep_alive.arm(Instant::now() + idle);
        }
        let (reason, result) = self
            .run(&mut peer, &mut out_rx, &flow, rest, &mut keep_alive)
            .await;
        if let Ok(permit) = self.engine.reserve().await {
            permit.send(Command::Closed {
                conn: self.id,
                reason,
            });
        }
        // Send what the engine queued before it closed us (e.g. DISCONNECT 0x8E).
        let mut out = BytesMut::new();
        while let Ok(Outgoing::Packet(p)) = out_rx.try_recv() {
            encode(*p, &mut peer, &mut out);
        }
        let last = (!out.is_empty()).then(|| out.freeze());
        self.send_last(last).await;
        self.close().await;
        result
    }

    /// The connected loop: packets in to the engine, packets out from it, deadlines.
    /// `held`: input read and not yet decoded (what followed CONNECT in its chunk).
    ///
    /// While the engine has paused the connection ([`Flow`]: a subscriber its messages go
    /// to cannot take more), nothing is read, so the transport's own flow control pushes
    /// back on the client; packets out still go. The clocks that measure the client's
    /// input (keep-alive, packet deadline) stand still meanwhile: it is the server that is
    /// not reading, and a PINGREQ may be waiting unread. They restart when reading does.
    async fn run(
        &mut self,
        peer: &mut Peer<'_>,
        out_rx: &mut mpsc::Receiver<Outgoing>,
        flow: &Flow,
        mut held: Bytes,
        keep_alive: &mut Deadline<'_>,
    ) -> Ending {
        // Reading and writing take turns being first, so that neither a flood in nor a
        // flood out starves the other. Input always comes before the deadlines: bytes that
        // are already here when a deadline passes are looked at first, so a slow pass of
        // this loop (the engine's queue full, say) does not close a client that was on
        // time. The deadlines come before output in the reading turn, so a stream of
        // outgoing messages cannot hide an expired deadline.
        let mut read_first = true;
        let mut paused = false;
        loop {
            if flow.is_paused() != paused {
                paused = !paused;
                self.input_clocks(paused, peer, keep_alive);
            }
            if !paused && !held.is_empty() {
                match self
                    .on_chunk(std::mem::take(&mut held), peer, flow, keep_alive)
                    .await
                {
                    Ok(rest) => held = rest,
                    Err(ending) => return ending,
                }
                continue;
            }
            let event = if read_first {
                tokio::select! {
                    biased;
                    next = self.transport.next(), if !paused => Event::Read(next),
                    () = flow.resumed(), if paused => Event::Resumed,
                    () = keep_alive.expired() => Event::KeepAlive,
                    () = self.packet.expired() => Event::PacketTimeout,
                    item = out_rx.recv() => {
                        let (out, close) = encode_batch(item, peer, out_rx);
                        Event::Write(out, close)
                    }
                }
            } else {
                tokio::select! {
                    biased;
                    item = out_rx.recv() => {
                        let (out, close) = encode_batch(item, peer, out_rx);
                        Event::Write(out, close)
                    }
                    next = self.transport.next(), if !paused => Event::Read(next),
                    () = flow.resumed(), if paused => Event::Resumed,
                    () = keep_alive.expired() => Event::KeepAlive,
                    () = self.packet.expired() => Event::PacketTimeout,
                }
            };
            read_first = !read_first;
            let step = match event {
                Event::Read(None) => Err((CloseReason::NetworkLoss, Ok(()))),
                Event::Read(Some(Err(e))) => Err((CloseReason::NetworkLoss, Err(e.into()))),
                Event::Read(Some(Ok(chunk))) => {
                    match self.on_chunk(chunk, peer, flow, keep_alive).await {
                        Ok(rest) => {
                            held = rest;
                            Ok(())
                        }
                        Err(ending) => Err(ending),
                    }
                }
                Event::Resumed => Ok(()),
                Event::Write(out, close) => {
                    // Room was made in the channel: the engine hears of it before the write
                    // (which may wait for the peer), so it can refill the channel meanwhile.
                    if flow.take_drained_wanted() {
                        if let Ok(permit) = self.engine.reserve().await {
                            permit.send(Command::Drained { conn: self.id });
                        }
                    }
                    let written = self.write(out, close, peer, keep_alive).await;
                    // Having just written, this task goes to the back of the run queue before
                    // it reads again: a client answered now may send its next packet at once,
                    // and packets that arrived on other sockets before it are handled first
                    // (arrival order across connections, as far as one process can keep it).
                    tokio::task::yield_now().await;
                    written
                }
                Event::KeepAlive => Err(self
                    .timed_out(peer, ConnectionError::KeepAliveTimeout)
                    .await),
                Event::PacketTimeout => {
                    Err(self.timed_out(peer, ConnectionError::PacketTimeout).await)
                }
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// Decodes the packets `chunk` completes, hands them to the engine in order, and moves
    /// the deadlines: the keep-alive restarts if a packet was completed, the packet deadline
    /// is armed if a new packet began (and left unchanged while the same one continues).
    ///
    /// Stops between two packets if the engine pauses the connection meanwhile, and returns
    /// the rest of the chunk (empty if all of it was taken): a chunk may hold hundreds of
    /// small packets, and stopping at once is what keeps a congested queue's overshoot to
    /// what the engine's own queue holds.
    async fn on_chunk(
        &mut self,
        chunk: Bytes,
        peer: &Peer<'_>,
        flow: &Flow,
        keep_alive: &mut Deadline<'_>,
    ) -> Result<Bytes, Ending> {
        let now = Instant::now();
        let mut input = &chunk[..];
        let mut completed = false;
        let mut rest = Bytes::new();
        let failed = loop {
            if completed && !input.is_empty() && flow.is_paused() {
                rest = chunk.slice(chunk.len() - input.len()..);
                break None;
            }
            // Room in the engine's queue first, then the packet: no packet is held across
            // the wait, which keeps this task's size (paid by every connection) small.
            let Ok(permit) = self.engine.reserve().await else {
                return Err((CloseReason::ServerClosed, Err(ConnectionError::Stopped)));
            };
            match self.decoder.decode(&mut input) {
                Ok(Some(packet)) => {
                    completed = true;
                    permit.send(Command::Packet {
                        conn: self.id,
                        packet,
                    });
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = failed {
            if peer.version == ProtocolVersion::V5 && peer.acked {
                self.send_last(disconnect(e.reason_code())).await;
            }
            return Err((CloseReason::ProtocolError, Err(e.into())));
        }
        if completed {
            if let Some(idle) = peer.idle {
                keep_alive.arm(now + idle);
            }
        }
        if self.decoder.buffered() == 0 {
            self.packet.disarm();
        } else if completed || !self.packet.armed {
            // The unfinished packet began in this chunk.
            self.packet.arm(now + self.packet_timeout());
        }
        Ok(rest)
    }

    /// Stops (`paused`) or restarts the clocks that measure the client's input: while the
    /// server does not read, neither the keep-alive nor an unfinished packet can be the
    /// client's fault. Restarted, each runs its full length from now.
    fn input_clocks(&mut self, paused: bool, peer: &Peer<'_>, keep_alive: &mut Deadline<'_>) {
        if paused {
            keep_alive.disarm();
            self.packet.disarm();
            return;
        }
        let now = Instant::now();
        if let Some(idle) = peer.idle {
            keep_alive.arm(now + idle);
        }
        if self.decoder.buffered() > 0 {
            self.packet.arm(now + self.packet_timeout());
        }
    }

    /// Writes one batch; `close`: the engine asked to close after it.
    ///
    /// A write waits while the peer does not read, and nothing is read meanwhile; the
    /// keep-alive still runs, so that a client that neither reads nor sends is closed
    /// rather than held for ever. (A client that keeps sending PINGREQ while reading
    /// nothing for that long is closed too: its packets wait unread behind the write.)
    async fn write(
        &mut self,
        out: BytesMut,
        close: bool,
        peer: &Peer<'_>,
        keep_alive: &mut Deadline<'_>,
    ) -> Result<(), Ending> {
        if !out.is_empty() {
            // A write has its own deadline too (`packet_timeout_secs`), whatever the
            // keep-alive: a client with keep-alive 0 (or a very long one) that stops reading
            // must not hold its socket, its batch and its permit for ever.
            let write_deadline = tokio::time::sleep(self.packet_timeout());
            let sent = tokio::select! {
                biased;
                sent = self.transport.send(out.freeze()) => sent,
                () = keep_alive.expired() => {
                    return Err(self.timed_out(peer, ConnectionError::KeepAliveTimeout).await);
                }
                () = write_deadline => {
                    return Err((CloseReason::NetworkLoss, Err(ConnectionError::WriteTimeout)));
                }
            };
            if let Err(e) = sent {
                return Err((CloseReason::NetworkLoss, Err(e.into())));
            }
        }
        if close {
            return Err((CloseReason::ServerClosed, Ok(())));
        }
        Ok(())
    }

    /// A deadline passed: 5.0 clients are told Keep Alive timeout (0x8D), the engine is
    /// told as for a keep-alive timeout (so the will is published) [MQTT-3.1.2-24].
    async fn timed_out(&mut self, peer: &Peer<'_>, error: ConnectionError) -> Ending {
        // Never before CONNACK [MQTT-3.2.0-1] (the engine may not have answered yet).
        if peer.version == ProtocolVersion::V5 && peer.acked {
            self.send_last(disconnect(ReasonCode::KeepAliveTimeout))
                .await;
        }
        (CloseReason::KeepAliveTimeout, Err(error))
    }

    /// Sends the last bytes of a closing connection, if any, ignoring failure; a peer
    /// that does not read gets [`CLOSING_WRITE`] to take them.
    async fn send_last(&mut self, bytes: Option<Bytes>) {
        if let Some(bytes) = bytes {
            let _ = tokio::time::timeout(CLOSING_WRITE, self.transport.send(bytes)).await;
        }
    }

    /// Closes the transport, waiting at most [`CLOSING_WRITE`] for a peer that does not read.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(CLOSING_WRITE, self.transport.close()).await;
    }

    fn packet_timeout(&self) -> Duration {
        Duration::from_secs(self.config.packet_timeout_secs)
    }
}
