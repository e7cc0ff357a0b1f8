//! The broker engine: one owner for all session state.
//!
//! Connection tasks decode bytes into packets and send them here as [`Command`]s over one
//! bounded channel; the engine routes, queues and acknowledges, and answers each
//! connection through that connection's own bounded channel of [`Outgoing`] items. The
//! engine itself is synchronous and takes the time as an argument, so every rule below is
//! unit-tested without sockets or sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use protocol::{
    ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, TopicName, UnsubAck, Unsubscribe, Will,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::auth::{Authenticator, ConnectionInfo};
use crate::config::{BrokerConfig, OverflowPolicy};
use crate::message::{Message, Msg};
use crate::ratelog::RateLimitedLog;
use crate::retained::RetainedIndex;
use crate::session::{ConnId, Delivery, HeldAck, Inflight, Online, Session, SessionId, Stage};
use crate::store::{
    DeliveryState, Op, Recovered, SessionMeta, Store, StoreError, StoredDelivery, StoredMessage,
};
use crate::subscriptions::{SubEntry, Subscriptions};
use crate::view::{MessageView, SessionEvent};

/// What a connection task sends the engine.
///
/// Packets move by value through the bounded channels: boxing them would cost an
/// allocation per packet on the hot path to save a memcpy.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// A CONNECT arrived on a new connection; answers go to `tx`.
    Connect {
        /// The connection.
        conn: ConnId,
        /// The packet.
        connect: Box<Connect>,
        /// What the transport knows.
        info: ConnectionInfo,
        /// The connection's outgoing channel.
        tx: mpsc::Sender<Outgoing>,
    },
    /// Any later packet.
    Packet {
        /// The connection.
        conn: ConnId,
        /// The packet.
        packet: Packet,
    },
    /// The connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Run a query on the engine (the HTTP API's view of sessions).
    Inspect(Inspector),
    /// Run an administrative change on the engine (kick, discard; reading an offline
    /// queue from the store); the batch is flushed after it like any other command.
    Admin(Admin),
    /// Run the clocks (session expiry, delayed wills, the store's interval sync).
    Tick,
    /// Close every connection (5.0: DISCONNECT 0x8B) and stop accepting.
    Shutdown {
        /// Answered when done.
        done: oneshot::Sender<()>,
    },
}

/// A query run on the engine's task.
pub struct Inspector(pub Box<dyn FnOnce(&Engine) + Send>);

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inspector")
    }
}

/// The closure of an [`Admin`] command.
pub type AdminFn = Box<dyn FnOnce(&mut Engine, Instant) + Send>;

/// An administrative operation run on the engine's task, with the batch's time.
pub struct Admin(pub AdminFn);

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

/// Session events the channel holds for a slow listener before it lags (and is told to
/// resynchronize).
pub const EVENT_CAPACITY: usize = 1024;

/// Why a connection ended, as its task saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed, or the socket failed.
    NetworkLoss,
    /// Nothing received within 1.5 times the keep-alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// The peer sent something invalid; the task already sent DISCONNECT (5.0).
    ProtocolError,
    /// The engine asked it to close.
    ServerClosed,
}

/// What the engine sends a connection task.
///
/// The packet is boxed: a tokio channel allocates its slots in blocks of 32 when it is
/// created, and with a `Packet` (~400 bytes) inline every connection, even an idle one,
/// paid ~12.5 KB for its outgoing channel. Boxed, the block is 512 bytes; the price is one
/// small allocation per outgoing packet.
#[derive(Debug)]
pub enum Outgoing {
    /// Encode and send.
    Packet(Box<Packet>),
    /// Flush what was sent before, then close the connection.
    Close,
}

/// The channel capacity a connection needs for `config`: a full window of messages, the
/// acknowledgements of a full inbound window, QoS 0 headroom and control packets.
pub fn connection_channel_capacity(config: &BrokerConfig) -> usize {
    usize::from(config.max_inflight) + usize::from(config.receive_maximum) + QOS0_BUDGET + 16
}

/// QoS 0 messages that may wait in a connection's channel; beyond it they are dropped
/// (QoS 0 is at most once), so that a slow reader never makes room run out for QoS 1/2.
const QOS0_BUDGET: usize = 1024;

/// What [`Engine::recover`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoverStats {
    /// Sessions recovered.
    pub sessions: usize,
    /// Sessions that had expired while the broker was down.
    pub expired: usize,
    /// Messages queued for them.
    pub queued: usize,
    /// Messages in flight to them.
    pub inflight: usize,
    /// Retained messages.
    pub retained: usize,
}

/// Totals for the stats API.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    /// Messages received from clients.
    pub msgs_in: u64,
    /// Messages sent to clients.
    pub msgs_out: u64,
    /// Messages dropped (queue overflow, expiry, too large, slow QoS 0 reader).
    pub dropped: u64,
}

/// Converts between the engine's monotonic clock and the wall clock the store keeps
/// (deadlines must survive a restart, so they are stored as absolute times).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    /// Both clocks, now.
    pub fn now() -> Self {
        Clock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn to_system(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.system + (at - self.instant)
        } else {
            self.system - (self.instant - at)
        }
    }

    /// The monotonic time of `at` (clamped to the past the monotonic clock can express).
    pub fn to_instant(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.system) {
            Ok(ahead) => self.instant + ahead,
            Err(e) => self
                .instant
                .checked_sub(e.duration())
                .unwrap_or(self.instant),
        }
    }
}

/// The broker engine. See the [module docs](self).
#[derive(Debug)]
pub struct Engine {
    config: Arc<BrokerConfig>,
    auth: Arc<dyn Authenticator>,
    sessions: HashMap<SessionId, Session>,
    by_client: HashMap<Arc<str>, SessionId>,
    conns: HashMap<ConnId, SessionId>,
    subs: Subscriptions,
    /// Retained messages by topic, in a trie a SUBSCRIBE walks: it costs what it matches.
    /// Only what matching, bounding and listing need is in memory; payloads stay in the
    /// store (read when a SUBSCRIBE sends them).
    retained: RetainedIndex<Retained>,
    /// Retained messages set in the current batch, not yet in the store (written at
    /// `flush`); a SUBSCRIBE in the same batch reads them from here.
    batch_retained: HashMap<TopicName, Msg>,
    next_session: u64,
    next_assigned: u64,
    /// The id of the next message: above every id the store held at start.
    next_message_id: u64,
    /// Sessions whose connection must be dropped after the current command (channel full).
    to_drop: Vec<SessionId>,
    shutting_down: bool,
    stats: EngineStats,
    /// Where sessions are kept durably.
    store: Box<dyn Store>,
    /// Changes of the current batch, written by [`Engine::flush`] in one transaction.
    ops: Vec<Op>,
    /// What the current batch sends, held until its changes are durable (group commit).
    outbox: Vec<(mpsc::Sender<Outgoing>, Outgoing, Option<SessionId>)>,
    clock: Clock,
    /// Shutdown requests, answered when the state is flushed.
    shutdown_done: Vec<oneshot::Sender<()>>,
    /// A write of the current batch failed: none of its acknowledgements may go out.
    batch_failed: bool,
    /// Session changes for the dashboard (a UI stream: a lagging listener skips events).
    events: broadcast::Sender<SessionEvent>,
    /// Sessions whose queue or in-flight count may have changed in this batch; filled only
    /// while someone listens, turned into one `queue` event each by [`Engine::flush`].
    dirty: Vec<SessionId>,
    /// Someone listened when the current command began (checked once per command, not once
    /// per delivery: the channel's receiver count is behind a lock).
    listening: bool,
    /// Payload bytes of all retained messages; at most `max_retained_bytes`.
    retained_bytes: usize,
    /// Routing scratch: where each matched session is in the target list, so a session
    /// matched by many subscriptions is merged in O(1) (kept to reuse its allocation).
    route_index: HashMap<SessionId, usize>,
    /// Log lines for refusals a client can repeat at will, one per interval per kind.
    logs: RefusalLogs,
}

/// What the engine keeps in memory of a retained message; the rest is in the store.
#[derive(Debug, Clone)]
pub struct Retained {
    /// The message's id in the store.
    pub id: u64,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Payload bytes (counted against `max_retained_bytes`).
    pub size: usize,
    /// When its Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// When it was received: retained messages go out in this order.
    pub received_at: Instant,
}

impl Retained {
    fn of(msg: &Message) -> Retained {
        Retained {
            id: msg.id,
            qos: msg.qos,
            size: msg.payload.len(),
            expires_at: msg.expires_at,
            received_at: msg.received_at,
        }
    }

    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// The rate-limited log lines of the engine (see `ratelog`).
#[derive(Debug, Default)]
struct RefusalLogs {
    /// A retained message over the count or byte limit.
    retained: RateLimitedLog,
    /// A topic name or filter over the length or level limit.
    topic: RateLimitedLog,
    /// A new session refused at `max_sessions`.
    sessions: RateLimitedLog,
    /// A subscription refused at `max_subscriptions_per_session`.
    subscriptions: RateLimitedLog,
    /// A connection closed because it could not keep up.
    slow: RateLimitedLog,
}

impl Engine {
    /// An engine with no sessions, writing to `store` (call [`Engine::recover`] to read
    /// back what the store holds).
    pub fn new(
        config: Arc<BrokerConfig>,
        auth: Arc<dyn Authenticator>,
        store: Box<dyn Store>,
    ) -> Self {
        Engine {
            config,
            auth,
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            conns: HashMap::new(),
            subs: Subscriptions::default(),
            retained: RetainedIndex::new(),
            batch_retained: HashMap::new(),
            next_session: 0,
            next_assigned: 0,
            next_message_id: 0,
            to_drop: Vec::new(),
            shutting_down: false,
            stats: EngineStats::default(),
            store,
            ops: Vec::new(),
            outbox: Vec::new(),
            clock: Clock::now(),
            shutdown_done: Vec::new(),
            batch_failed: false,
            events: broadcast::channel(EVENT_CAPACITY).0,
            dirty: Vec::new(),
            listening: false,
            retained_bytes: 0,
            route_index: HashMap::new(),
            logs: RefusalLogs::default(),
        }
    }

    /// Whether a topic name or filter is within `max_topic_length` and `max_topic_levels`.
    /// Checked at the door, before anything walks its levels.
    fn topic_within_limits(&self, topic: &str) -> bool {
        topic.len() <= self.config.max_topic_length
            && topic.bytes().filter(|&b| b == b'/').count() < self.config.max_topic_levels
    }

    /// Logs a refused topic, at most once per interval.
    fn log_topic_refusal(&mut self, what: &str, topic: &str, now: Instant) {
        if let Some(suppressed) = self.logs.topic.hit(now) {
            let levels = topic.bytes().filter(|&b| b == b'/').count() + 1;
            tracing::warn!(
                what,
                bytes = topic.len(),
                levels,
                suppressed,
                "topic over max_topic_length / max_topic_levels refused"
            );
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The wall-clock time of an engine instant.
    pub fn wall_time(&self, at: Instant) -> SystemTime {
        self.clock.to_system(at)
    }

    /// A receiver of session changes (see [`SessionEvent`]).
    pub fn subscribe_events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The sender of session changes, to subscribe more receivers later.
    pub fn event_sender(&self) -> broadcast::Sender<SessionEvent> {
        self.events.clone()
    }

    /// The first `limit` messages queued for an offline session, read from the store
    /// (empty if there is no such session or the store cannot be read).
    pub fn stored_queue_view(&mut self, client_id: &str, limit: usize) -> Vec<MessageView> {
        match self.load_queue(client_id) {
            Ok(stored) => stored
                .into_iter()
                .take(limit)
                .map(|d| {
                    let at = d.msg.received_at;
                    let msg = self.message_from_store(d.msg);
                    crate::view::message_view(&msg, d.qos as u8, d.retain, at)
                })
                .collect(),
            Err(e) => {
                tracing::error!(client_id, error = %e, "cannot read the queued messages");
                Vec::new()
            }
        }
    }

    /// Disconnects the client of `client_id` by an administrator's decision (5.0:
    /// DISCONNECT 0x98 Administrative action); the session is kept per its expiry. The
    /// server closed the connection, so the will is published (after its delay).
    /// Returns false if there is no such session.
    pub fn kick(&mut self, client_id: &str, now: Instant) -> bool {
        let Some(&sid) = self.by_client.get(client_id) else {
            return false;
        };
        if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
            self.close(sid, Some(ReasonCode::AdministrativeAction));
            self.go_offline(sid, now);
        }
        true
    }

    /// Discards the session of `client_id`: its connection, if any, is closed as by
    /// [`Engine::kick`] (will published), then the session ends as when it expires (a will
    /// still waiting for its delay is published now). Returns false if there is no such
    /// session.
    pub fn discard(&mut self, client_id: &str, now: Instant) -> bool {
        if !self.kick(client_id, now) {
            return false;
        }
        if let Some(&sid) = self.by_client.get(client_id) {
            self.end_session(sid, now);
        }
        true
    }

    /// Sends a session event if anyone listens (no allocation otherwise).
    fn emit(&self, event: impl FnOnce() -> SessionEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event());
        }
    }

    /// Notes that a session's queue or in-flight count may have changed in this batch.
    fn touch(&mut self, sid: SessionId) {
        if self.listening {
            self.dirty.push(sid);
        }
    }

    /// Totals.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// All sessions, for inspection.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// A session by client id.
    pub fn session(&self, client_id: &str) -> Option<&Session> {
        self.by_client
            .get(client_id)
            .and_then(|id| self.sessions.get(id))
    }

    /// Retained messages.
    pub fn retained(&self) -> impl Iterator<Item = (&TopicName, &Retained)> {
        self.retained.iter()
    }

    /// Payload bytes of all retained messages.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// The whole retained message of `topic`, read from the store (or from the current
    /// batch, not yet written); `None` if there is none or it cannot be read.
    pub fn load_retained(&mut self, topic: &str) -> Option<Msg> {
        if !self.retained.contains_key(topic) {
            return None;
        }
        if let Some(m) = self.batch_retained.get(topic) {
            return Some(m.clone());
        }
        match self.store.load_retained(topic) {
            Ok(Some(m)) => Some(self.message_from_store(m)),
            Ok(None) => {
                tracing::error!(topic, "retained message missing from the store");
                None
            }
            Err(e) => {
                tracing::error!(topic, error = %e, "cannot read the retained message");
                None
            }
        }
    }

    /// Applies one command.
    pub fn handle(&mut self, cmd: Command, now: Instant) {
        self.listening = self.events.receiver_count() > 0;
        match cmd {
            Command::Connect {
                conn,
                connect,
                info,
                tx,
            } => self.on_connect(conn, *connect, info, tx, now),
            Command::Packet { conn, packet } => {
                if let Some(&sid) = self.conns.get(&conn) {
                    self.on_packet(sid, packet, now);
                }
            }
            Command::Closed { conn, .. } => {
                if let Some(&sid) = self.conns.get(&conn) {
                    self.go_offline(sid, now);
                }
            }
            Command::Inspect(Inspector(f)) => f(self),
            Command::Admin(Admin(f)) => f(self, now),
            Command::Tick => {
                self.tick(now);
                if let Err(e) = self.store.tick() {
                    tracing::error!(error = %e, "store sync failed");
                }
            }
            Command::Shutdown { done } => {
                self.shutdown(now);
                // Answered once the batch is written and sent (see `flush`).
                self.shutdown_done.push(done);
            }
        }
    }

    /// Ends a batch: writes its changes to the store in one transaction (durable per the
    /// policy), then sends what the batch produced. Acknowledgements therefore never go
    /// out before the state they acknowledge is stored.
    pub fn flush(&mut self, now: Instant) {
        self.flush_batch(now);
        // One `queue` event per session touched by the batch.
        if !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for sid in dirty.drain(..) {
                if let Some(s) = self.sessions.get(&sid) {
                    self.emit(|| SessionEvent::Queue {
                        client_id: s.client_id.to_string(),
                        queued: s.queued_len(),
                        inflight: s.inflight.len(),
                    });
                }
            }
            // Keep the allocation for the next batch.
            self.dirty = dirty;
        }
    }

    fn flush_batch(&mut self, now: Instant) {
        loop {
            let mut store_failed = std::mem::take(&mut self.batch_failed);
            self.batch_retained.clear();
            if !self.ops.is_empty() {
                if let Err(e) = self.store.apply(&self.ops) {
                    // Nothing of this batch may be acknowledged: the clients will resend.
                    tracing::error!(error = %e, "store write failed; closing the batch's connections");
                    store_failed = true;
                }
                self.ops.clear();
            }
            if self.outbox.is_empty() && self.to_drop.is_empty() {
                for done in self.shutdown_done.drain(..) {
                    let _ = done.send(());
                }
                return;
            }
            for (tx, item, sid) in std::mem::take(&mut self.outbox) {
                if let Some(s) = sid.and_then(|sid| self.sessions.get_mut(&sid)) {
                    if let Some(o) = s.online.as_mut() {
                        o.pending_out = 0;
                    }
                }
                let item = match (store_failed, item) {
                    (true, Outgoing::Packet(_)) => Outgoing::Close,
                    (_, item) => item,
                };
                if tx.try_send(item).is_err() {
                    self.to_drop.extend(sid);
                }
            }
            while let Some(sid) = self.to_drop.pop() {
                if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
                    if let Some(suppressed) = self.logs.slow.hit(now) {
                        tracing::warn!(client_id = %self.sessions[&sid].client_id, suppressed, "connection cannot keep up; closing it");
                    }
                    self.go_offline(sid, now);
                }
            }
        }
    }

    /// Runs the clocks: ends expired sessions, publishes delayed wills.
    pub fn tick(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut wills = Vec::new();
        for s in self.sessions.values_mut() {
            if s.online.is_none() && s.expires_at.is_some_and(|t| now >= t) {
                expired.push(s.id);
            } else if s.pending_will.as_ref().is_some_and(|(_, at)| now >= *at) {
                if let Some((will, _)) = s.pending_will.take() {
                    wills.push((will, s.client_id.clone()));
                }
            }
        }
        for (will, client) in wills {
            if let Some(&sid) = self.by_client.get(&client) {
                self.persist_session(sid);
            }
            self.publish_will(will, client, now);
        }
        for sid in expired {
            self.end_session(sid, now);
        }
    }

    // ----- sending -----

    fn send(&mut self, sid: SessionId, packet: Packet) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(online) = s.online.as_mut() else {
            return;
        };
        online.pending_out += 1;
        self.outbox.push((
            online.tx.clone(),
            Outgoing::Packet(Box::new(packet)),
            Some(sid),
        ));
    }

    fn close(&mut self, sid: SessionId, reason: Option<ReasonCode>) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let Some(online) = &s.online else { return };
        let tx = online.tx.clone();
        if let (Some(reason), ProtocolVersion::V5) = (reason, s.version) {
            let packet = Packet::Disconnect(Disconnect::new(reason));
            self.outbox
                .push((tx.clone(), Outgoing::Packet(Box::new(packet)), None));
        }
        self.outbox.push((tx, Outgoing::Close, None));
    }

    // ----- the store -----

    fn session_meta(&self, s: &Session) -> SessionMeta {
        SessionMeta {
            client_id: s.client_id.clone(),
            version: s.version,
            username: s.username.clone(),
            expiry_interval: s.expiry_interval,
            expires_at: s.expires_at.map(|t| self.clock.to_system(t)),
            disconnected_at: s.disconnected_at.map(|t| self.clock.to_system(t)),
            pending_will: s
                .pending_will
                .as_ref()
                .map(|(w, at)| (w.clone(), self.clock.to_system(*at))),
            dropped: s.stats.dropped,
        }
    }

    /// Writes a persistent session's own fields.
    fn persist_session(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if s.persistent() {
            let meta = self.session_meta(s);
            self.ops.push(Op::PutSession(Box::new(meta)));
        }
    }

    fn stored_message(&self, m: &Message) -> StoredMessage {
        StoredMessage {
            id: m.id,
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            retain: m.retain,
            properties: m.properties.clone(),
            expires_at: m.expires_at.map(|t| self.clock.to_system(t)),
            received_at: self.clock.to_system(m.received_at),
            publisher: m.publisher.clone(),
        }
    }

    fn message_from_store(&self, m: StoredMessage) -> Msg {
        Arc::new(Message {
            id: m.id,
            topic: m.topic,
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            properties: m.properties,
            expires_at: m.expires_at.map(|t| self.clock.to_instant(t)),
            received_at: self.clock.to_instant(m.received_at),
            publisher: m.publisher,
        })
    }

    fn put_delivery(&mut self, client: &Arc<str>, d: &Delivery, state: DeliveryState) {
        let delivery = StoredDelivery {
            seq: d.seq,
            state,
            qos: d.qos,
            retain: d.retain,
            sub_ids: d.sub_ids.clone(),
            msg: self.stored_message(&d.msg),
        };
        self.ops.push(Op::PutDelivery {
            client: client.clone(),
            delivery: Box::new(delivery),
        });
    }

    fn delivery_from_store(&self, d: StoredDelivery, now: Instant) -> Delivery {
        Delivery {
            seq: d.seq,
            stored: true,
            qos: d.qos,
            retain: d.retain,
            sub_ids: d.sub_ids,
            msg: self.message_from_store(d.msg),
            queued_at: now,
        }
    }

    /// A session's queued messages from the store. The batch so far may hold some of them
    /// (a takeover moves the queue to the store in the same batch), so it is written first;
    /// a failed write withholds the batch's acknowledgements (see `flush`).
    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        if !self.ops.is_empty() {
            let written = self.store.apply(&self.ops);
            self.ops.clear();
            if let Err(e) = written {
                self.batch_failed = true;
                return Err(e);
            }
        }
        self.store.load_queue(client_id)
    }

    /// A new message id.
    fn new_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// Reads back what the store holds: sessions (a session whose expiry passed while the
    /// broker was down is ended now), their subscriptions, in-flight messages and QoS 2
    /// state, and the retained messages. Queued messages stay in the store.
    pub fn recover(&mut self, now: Instant) -> Result<RecoverStats, StoreError> {
        let Recovered {
            sessions,
            retained,
            max_message_id,
        } = self.store.load()?;
        if let Some(max) = max_message_id {
            self.next_message_id = self.next_message_id.max(max.saturating_add(1));
        }
        let wall = self.clock.to_system(now);
        let mut stats = RecoverStats::default();
        let mut wills = Vec::new();
        for r in sessions {
            let meta = r.meta;
            if meta.expires_at.is_some_and(|t| t <= wall) {
                // Ended while the broker was down; its delayed will is due now, once every
                // session that may want it is back.
                if let Some((will, _)) = meta.pending_will {
                    wills.push((will, meta.client_id.clone()));
                }
                self.ops.push(Op::DeleteSession(meta.client_id));
                stats.expired += 1;
                continue;
            }
            let sid = SessionId(self.next_session);
            self.next_session += 1;
            let mut s = Session::new(sid, meta.client_id.clone(), meta.version);
            s.clean_start = false;
            s.username = meta.username;
            s.expiry_interval = meta.expiry_interval;
            // Offline from now on; a session of a client that was connected when the broker
            // stopped starts its expiry now.
            s.expires_at = match meta.expires_at {
                Some(t) => Some(self.clock.to_instant(t)),
                None if meta.expiry_interval == u32::MAX => None,
                None => Some(now + Duration::from_secs(u64::from(meta.expiry_interval))),
            };
            s.disconnected_at = Some(
                meta.disconnected_at
                    .map_or(now, |t| self.clock.to_instant(t)),
            );
            s.pending_will = meta
                .pending_will
                .map(|(w, at)| (w, self.clock.to_instant(at)));
            s.stats.dropped = meta.dropped;
            for (filter, entry) in r.subscriptions {
                self.subs.insert(sid, &filter, entry);
                s.subscriptions.insert(filter, entry);
            }
            for d in r.inflight {
                let (id, stage) = match d.state {
                    DeliveryState::AwaitingAck(id) => (id, Stage::AwaitingAck),
                    DeliveryState::AwaitingComp(id) => (id, Stage::AwaitingComp),
                    DeliveryState::Queued => continue,
                };
                let seq = d.seq;
                let delivery = self.delivery_from_store(d, now);
                s.inflight.insert(
                    id,
                    Inflight {
                        seq,
                        delivery,
                        stage,
                    },
                );
            }
            s.inbound_qos2.extend(r.inbound_qos2);
            s.next_seq = r.max_seq.map_or(0, |m| m + 1);
            if r.queued.0 > 0 {
                for d in self.store.load_queue(&s.client_id)? {
                    let size = d.msg.payload.len();
                    s.stored_queue.push_back((d.seq, size));
                    s.queued_bytes += size;
                }
            }
            stats.sessions += 1;
            stats.queued += s.stored_queue.len();
            stats.inflight += s.inflight.len();
            self.by_client.insert(s.client_id.clone(), sid);
            self.sessions.insert(sid, s);
        }
        for (will, client) in wills {
            self.publish_will(will, client, now);
        }
        // Metadata only: the payloads stay in the store until a SUBSCRIBE sends them.
        for meta in retained {
            let entry = Retained {
                id: meta.id,
                qos: meta.qos,
                size: meta.payload_len,
                expires_at: meta.expires_at.map(|t| self.clock.to_instant(t)),
                received_at: self.clock.to_instant(meta.received_at),
            };
            if entry.is_expired(now) {
                self.ops.push(Op::DeleteRetained(meta.topic));
            } else {
                self.retained_bytes += entry.size;
                self.retained.insert(&meta.topic, entry);
                stats.retained += 1;
            }
        }
        self.flush(now);
        Ok(stats)
    }

    /// Ends the connection because of the client's error: DISCONNECT with the reason (5.0),
    /// close, and the will is published [MQTT-3.1.2-8].
    fn fail(&mut self, sid: SessionId, reason: ReasonCode, now: Instant) {
        if let Some(s) = self.sessions.get(&sid) {
            tracing::debug!(client_id = %s.client_id, %reason, "closing connection");
        }
        self.close(sid, Some(reason));
        self.go_offline(sid, now);
    }

    // ----- CONNECT -----

    fn on_connect(
        &mut self,
        conn: ConnId,
        connect: Connect,
        info: ConnectionInfo,
        tx: mpsc::Sender<Outgoing>,
        now: Instant,
    ) {
        let v = connect.protocol;
        let refuse = |reason: ReasonCode| {
            let ack = Packet::ConnAck(ConnAck::new(false, reason));
            let _ = tx.try_send(Outgoing::Packet(Box::new(ack)));
            let _ = tx.try_send(Outgoing::Close);
        };
        if self.shutting_down {
            return refuse(ReasonCode::ServerUnavailable);
        }
        if self.conns.len() >= self.config.max_connections {
            return refuse(match v {
                ProtocolVersion::V5 => ReasonCode::ServerBusy,
                ProtocolVersion::V311 => ReasonCode::ServerUnavailable,
            });
        }
        let mut assigned = None;
        let client_id: Arc<str> = if connect.client_id.is_empty() {
            if v == ProtocolVersion::V311 && !connect.clean_start {
                // [MQTT-3.1.3-8]: a zero-byte client id needs clean session = 1.
                return refuse(ReasonCode::ClientIdentifierNotValid);
            }
            self.next_assigned += 1;
            let id = format!(
                "auto-{:x}-{}",
                now.elapsed().as_nanos() as u32 ^ 0x5bd1_e995,
                self.next_assigned
            );
            assigned = Some(id.clone());
            id.into()
        } else {
            connect.client_id.as_str().into()
        };
        if connect.properties.authentication_method.is_some() {
            // No extended authentication (no AUTH exchange): refuse and close
            // [MQTT-4.12.0-1].
            return refuse(ReasonCode::BadAuthenticationMethod);
        }
        if let Err(reason) = self.auth.authenticate(&connect, &info) {
            return refuse(reason);
        }
        if let Some(will) = &connect.will {
            if !self.topic_within_limits(will.topic.as_str()) {
                self.log_topic_refusal("will topic", will.topic.as_str(), now);
                return refuse(ReasonCode::TopicNameInvalid);
            }
            if will.qos as u8 > self.config.maximum_qos {
                return refuse(ReasonCode::QoSNotSupported); // [MQTT-3.2.2-12]
            }
            if will.retain && !self.config.retain_available {
                return refuse(ReasonCode::RetainNotSupported); // [MQTT-3.2.2-13]
            }
            if !self
                .auth
                .authorize_publish(&client_id, connect.username.as_deref(), &will.topic)
            {
                return refuse(ReasonCode::NotAuthorized);
            }
        }

        // The session table is bounded: a new session beyond it is refused, nothing is
        // evicted (an existing one may still resume, or start clean in its own place).
        if !self.by_client.contains_key(&client_id)
            && self.sessions.len() >= self.config.max_sessions
        {
            if let Some(suppressed) = self.logs.sessions.hit(now) {
                tracing::warn!(
                    max_sessions = self.config.max_sessions,
                    suppressed,
                    "session limit reached; new session refused"
                );
            }
            return refuse(match v {
                ProtocolVersion::V5 => ReasonCode::QuotaExceeded,
                ProtocolVersion::V311 => ReasonCode::ServerUnavailable,
            });
        }

        // Takeover: the existing connection is closed [MQTT-3.1.4-3] (5.0: DISCONNECT 0x8E).
        if let Some(&old) = self.by_client.get(&client_id) {
            if self.sessions.get(&old).is_some_and(|s| s.online.is_some()) {
                self.close(old, Some(ReasonCode::SessionTakenOver));
                self.go_offline(old, now);
            }
        }
        let existing = self.by_client.get(&client_id).copied();
        if let (Some(sid), true) = (existing, connect.clean_start) {
            self.end_session(sid, now);
        }
        let session_present = existing.is_some() && !connect.clean_start;
        let sid = match self.by_client.get(&client_id) {
            Some(&sid) => sid,
            None => {
                let sid = SessionId(self.next_session);
                self.next_session += 1;
                self.sessions
                    .insert(sid, Session::new(sid, client_id.clone(), v));
                self.by_client.insert(client_id.clone(), sid);
                self.emit(|| SessionEvent::Created {
                    client_id: client_id.to_string(),
                });
                sid
            }
        };

        let cfg = self.config.clone();
        let requested_expiry = match v {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => u32::MAX,
        };
        let expiry = cfg
            .max_session_expiry
            .map_or(requested_expiry, |m| requested_expiry.min(m));
        let keep_alive = cfg.effective_keep_alive(connect.keep_alive, v);
        let client_window = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.version = v;
        s.clean_start = connect.clean_start;
        s.username = connect.username.clone();
        s.expiry_interval = expiry;
        s.expires_at = None;
        // Back before the will delay ran out: no will [MQTT-3.1.3-9].
        s.pending_will = None;
        s.online = Some(Online {
            conn,
            tx,
            window: usize::from(client_window.min(cfg.max_inflight).max(1)),
            max_packet_size: connect.properties.maximum_packet_size,
            inbound_unacked: u16::try_from(s.inbound_qos2.len()).unwrap_or(u16::MAX),
            will: connect.will,
            connected_at: now,
            peer: info.peer,
            keep_alive,
            disconnected_normally: false,
            pending_out: 0,
        });
        self.conns.insert(conn, sid);
        // Messages queued while it was away come back from the store [MQTT-3.1.2-5], read
        // before this CONNECT's own changes to the session are recorded (a resume with
        // expiry 0 deletes the stored session below, and reading after that read nothing).
        let s = &self.sessions[&sid];
        if !s.stored_queue.is_empty() {
            let client = s.client_id.clone();
            match self.load_queue(&client) {
                Ok(stored) => {
                    let queue: VecDeque<Delivery> = stored
                        .into_iter()
                        .map(|d| self.delivery_from_store(d, now))
                        .collect();
                    if let Some(s) = self.sessions.get_mut(&sid) {
                        s.stored_queue.clear();
                        s.queue = queue;
                        s.queued_bytes = s.queue.iter().map(|d| d.msg.payload.len()).sum();
                    }
                }
                Err(e) => {
                    tracing::error!(client_id = %client, error = %e, "cannot read the queued messages")
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            if s.persistent() {
                self.persist_session(sid);
            } else if session_present {
                // Resumed with expiry 0: it ends with this connection, so it is no longer
                // kept; what it resumed now lives in memory only.
                for d in s.queue.iter_mut() {
                    d.stored = false;
                }
                for f in s.inflight.values_mut() {
                    f.delivery.stored = false;
                }
                self.ops.push(Op::DeleteSession(client_id.clone()));
            }
        }

        let mut ack = ConnAck::new(session_present, ReasonCode::Success);
        if v == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            if expiry != requested_expiry {
                p.session_expiry_interval = Some(expiry);
            }
            p.receive_maximum = (cfg.receive_maximum != u16::MAX).then_some(cfg.receive_maximum);
            p.maximum_qos = match cfg.maximum_qos {
                0 => Some(QoS::AtMostOnce),
                1 => Some(QoS::AtLeastOnce),
                _ => None,
            };
            p.retain_available = (!cfg.retain_available).then_some(false);
            p.maximum_packet_size = Some(cfg.max_packet_size);
            p.assigned_client_identifier = assigned;
            p.topic_alias_maximum =
                (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum);
            if keep_alive != connect.keep_alive {
                p.server_keep_alive = Some(keep_alive);
            }
        }
        self.send(sid, Packet::ConnAck(ack));
        self.emit(|| SessionEvent::Connected {
            client_id: client_id.to_string(),
        });
        self.touch(sid);

        // Resume: resend what is unacknowledged, in order, PUBLISH with DUP [MQTT-4.4.0-1].
        if session_present {
            let mut inflight: Vec<(u64, u16, Stage)> = self.sessions[&sid]
                .inflight
                .iter()
                .map(|(&id, f)| (f.seq, id, f.stage))
                .collect();
            inflight.sort_unstable_by_key(|&(seq, _, _)| seq);
            for (_, id, stage) in inflight {
                let Some(pid) = PacketId::new(id) else {
                    continue;
                };
                let packet = match stage {
                    Stage::AwaitingComp => Packet::PubRel(PubResp::new(pid)),
                    Stage::AwaitingAck => {
                        let f = &self.sessions[&sid].inflight[&id];
                        let mut p = f.delivery.msg.to_publish(
                            f.delivery.qos,
                            f.delivery.retain,
                            &f.delivery.sub_ids,
                            now,
                        );
                        p.packet_id = Some(pid);
                        p.dup = true;
                        Packet::Publish(p)
                    }
                };
                self.send(sid, packet);
            }
        }
        self.drain(sid, now);
    }

    // ----- packets on an open connection -----

    fn on_packet(&mut self, sid: SessionId, packet: Packet, now: Instant) {
        match packet {
            Packet::Publish(p) => self.on_publish(sid, p, now),
            Packet::PubAck(a) => {
                self.on_ack(sid, a.packet_id, Stage::AwaitingAck, QoS::AtLeastOnce, now)
            }
            Packet::PubRec(r) => self.on_pubrec(sid, r, now),
            Packet::PubRel(r) => self.on_pubrel(sid, r),
            Packet::PubComp(c) => {
                self.on_ack(sid, c.packet_id, Stage::AwaitingComp, QoS::ExactlyOnce, now)
            }
            Packet::Subscribe(s) => self.on_subscribe(sid, s, now),
            Packet::Unsubscribe(u) => self.on_unsubscribe(sid, u),
            Packet::PingReq => self.send(sid, Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(sid, d, now),
            // A second CONNECT is a protocol error [MQTT-3.1.0-2]; the others are the
            // server's packets, or AUTH without an authentication method in use.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => self.fail(sid, ReasonCode::ProtocolError, now),
        }
    }

    fn on_publish(&mut self, sid: SessionId, p: Publish, now: Instant) {
        let cfg = self.config.clone();
        if !self.topic_within_limits(p.topic.as_str()) {
            // 5.0: DISCONNECT 0x90 Topic Name invalid; 3.1.1 can only close.
            self.log_topic_refusal("topic name", p.topic.as_str(), now);
            return self.fail(sid, ReasonCode::TopicNameInvalid, now);
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let v = s.version;
        let Some(online) = s.online.as_mut() else {
            return;
        };
        if !p.properties.subscription_identifiers.is_empty() {
            return self.fail(sid, ReasonCode::ProtocolError, now); // [MQTT-3.3.4-6]
        }
        if p.qos as u8 > cfg.maximum_qos {
            return self.fail(sid, ReasonCode::QoSNotSupported, now); // [MQTT-3.2.2-11]
        }
        if p.retain && !cfg.retain_available {
            return self.fail(sid, ReasonCode::RetainNotSupported, now); // [MQTT-3.2.2-14]
        }
        let pid = p.packet_id;
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, pid) {
            if s.inbound_qos2.contains(&id.get()) {
                // Already routed: acknowledge again, do not route again [MQTT-4.3.3-9].
                return self.send(sid, Packet::PubRec(PubResp::new(id)));
            }
        }
        if p.qos != QoS::AtMostOnce {
            if online.inbound_unacked >= cfg.receive_maximum {
                return self.fail(sid, ReasonCode::ReceiveMaximumExceeded, now); // [MQTT-3.3.4-9]
            }
            online.inbound_unacked += 1;
        }
        s.stats.msgs_in += 1;
        s.stats.bytes_in += p.payload.len() as u64;
        self.stats.msgs_in += 1;
        let conn = online.conn;
        let client_id = s.client_id.clone();
        let allowed = self
            .auth
            .authorize_publish(&client_id, s.username.as_deref(), &p.topic);
        let qos = p.qos;
        let (matched, congested) = if allowed {
            if let (QoS::ExactlyOnce, Some(id)) = (qos, pid) {
                s.inbound_qos2.insert(id.get());
                if s.persistent() {
                    let client = s.client_id.clone();
                    self.ops.push(Op::PutInboundQos2 {
                        client,
                        packet_id: id.get(),
                    });
                }
            }
            let id = self.new_message_id();
            let msg = Arc::new(Message::from_publish(p, id, Some(client_id), now));
            self.route(msg, Some(sid), now)
        } else {
            (0, None)
        };
        let Some(id) = pid else { return };
        let reason = match (allowed, v) {
            (false, ProtocolVersion::V5) => ReasonCode::NotAuthorized,
            // 3.1.1 cannot refuse a PUBLISH: acknowledge and drop [MQTT-3.3.5-2].
            (false, ProtocolVersion::V311) => ReasonCode::Success,
            (true, ProtocolVersion::V5) if matched == 0 => ReasonCode::NoMatchingSubscribers,
            (true, _) => ReasonCode::Success,
        };
        if let (Some(target), ReasonCode::Success | ReasonCode::NoMatchingSubscribers) =
            (congested, reason)
        {
            // Backpressure: the acknowledgement waits until the slow session drains.
            if let Some(t) = self.sessions.get_mut(&target) {
                t.held_acks.push_back(HeldAck {
                    conn,
                    packet_id: id,
                    qos,
                });
                return;
            }
        }
        self.ack_publish(sid, id, qos, reason);
    }

    /// Sends PUBACK / PUBREC for an incoming message and frees its Receive Maximum slot
    /// (QoS 1; a QoS 2 slot frees at PUBCOMP).
    fn ack_publish(&mut self, sid: SessionId, id: PacketId, qos: QoS, reason: ReasonCode) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let persistent = s.persistent();
        let Some(online) = s.online.as_mut() else {
            return;
        };
        let packet = match qos {
            QoS::AtLeastOnce => {
                online.inbound_unacked = online.inbound_unacked.saturating_sub(1);
                Packet::PubAck(PubResp::with_reason(id, reason))
            }
            _ => {
                if reason.is_error() {
                    // A refused QoS 2 message ends its flow here.
                    if s.inbound_qos2.remove(&id.get()) && persistent {
                        let client = s.client_id.clone();
                        self.ops.push(Op::DeleteInboundQos2 {
                            client,
                            packet_id: id.get(),
                        });
                    }
                    online.inbound_unacked = online.inbound_unacked.saturating_sub(1);
                }
                Packet::PubRec(PubResp::with_reason(id, reason))
            }
        };
        self.send(sid, packet);
    }

    fn on_pubrel(&mut self, sid: SessionId, rel: PubResp) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let known = s.inbound_qos2.remove(&rel.packet_id.get());
        if known {
            if let Some(o) = s.online.as_mut() {
                o.inbound_unacked = o.inbound_unacked.saturating_sub(1);
            }
            if s.persistent() {
                let client = s.client_id.clone();
                self.ops.push(Op::DeleteInboundQos2 {
                    client,
                    packet_id: rel.packet_id.get(),
                });
            }
        }
        let reason = if known || s.version == ProtocolVersion::V311 {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        };
        self.send(
            sid,
            Packet::PubComp(PubResp::with_reason(rel.packet_id, reason)),
        );
    }

    fn on_ack(&mut self, sid: SessionId, id: PacketId, stage: Stage, qos: QoS, now: Instant) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let matches = s
            .inflight
            .get(&id.get())
            .is_some_and(|f| f.stage == stage && f.delivery.qos == qos);
        if matches {
            self.touch(sid);
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if let Some(f) = s.inflight.remove(&id.get()) {
                if f.delivery.stored {
                    let client = s.client_id.clone();
                    self.ops.push(Op::DeleteDelivery { client, seq: f.seq });
                }
            }
            self.drain(sid, now);
        }
    }

    fn on_pubrec(&mut self, sid: SessionId, rec: PubResp, now: Instant) {
        self.touch(sid);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let id = rec.packet_id;
        match s.inflight.get_mut(&id.get()) {
            Some(f) if f.delivery.qos == QoS::ExactlyOnce && f.stage == Stage::AwaitingAck => {
                let (seq, stored) = (f.seq, f.delivery.stored);
                let client = s.client_id.clone();
                if rec.reason.is_error() {
                    s.inflight.remove(&id.get());
                    if stored {
                        self.ops.push(Op::DeleteDelivery { client, seq });
                    }
                    self.drain(sid, now);
                } else {
                    f.stage = Stage::AwaitingComp;
                    if stored {
                        let state = DeliveryState::AwaitingComp(id.get());
                        self.ops.push(Op::SetDeliveryState { client, seq, state });
                    }
                    self.send(sid, Packet::PubRel(PubResp::new(id)));
                }
            }
            Some(f) if f.stage == Stage::AwaitingComp => {
                self.send(sid, Packet::PubRel(PubResp::new(id)))
            }
            _ => {
                let reason = match s.version {
                    ProtocolVersion::V5 => ReasonCode::PacketIdentifierNotFound,
                    ProtocolVersion::V311 => ReasonCode::Success,
                };
                self.send(sid, Packet::PubRel(PubResp::with_reason(id, reason)));
            }
        }
    }

    fn on_subscribe(&mut self, sid: SessionId, sub: Subscribe, now: Instant) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let client_id = s.client_id.clone();
        let username = s.username.clone();
        let max_qos = self.config.max_qos();
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.subscriptions.len());
        let mut retained: Vec<(TopicName, (Instant, u64), SubEntry)> = Vec::new();
        let max_subs = self.config.max_subscriptions_per_session;
        for wanted in &sub.subscriptions {
            // Bounded at the door, before anything walks its levels: 5.0 0x8F, 3.1.1 0x80.
            if !self.topic_within_limits(wanted.filter.as_str()) {
                self.log_topic_refusal("topic filter", wanted.filter.as_str(), now);
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            if !self
                .auth
                .authorize_subscribe(&client_id, username.as_deref(), &wanted.filter)
            {
                reasons.push(ReasonCode::NotAuthorized);
                continue;
            }
            let full = self.sessions.get(&sid).is_some_and(|s| {
                s.subscriptions.len() >= max_subs && !s.subscriptions.contains_key(&wanted.filter)
            });
            if full {
                // 5.0 0x97 Quota exceeded; 3.1.1 0x80.
                if let Some(suppressed) = self.logs.subscriptions.hit(now) {
                    tracing::warn!(%client_id, max_subscriptions_per_session = max_subs, suppressed, "subscription limit reached; filter refused");
                }
                reasons.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let shared = matches!(wanted.filter.shared(), Ok(Some(_)));
            let mut options = wanted.options;
            options.qos = options.qos.min(max_qos);
            let entry = SubEntry {
                options,
                id: sub_id,
            };
            // A subscription to the same filter replaces the old one [MQTT-3.8.4-3].
            let existed = self.subs.insert(sid, &wanted.filter, entry);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.subscriptions.insert(wanted.filter.clone(), entry);
                if s.persistent() {
                    let client = s.client_id.clone();
                    let filter = wanted.filter.clone();
                    self.ops.push(Op::PutSubscription {
                        client,
                        filter,
                        entry,
                    });
                }
            }
            reasons.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages per Retain Handling [MQTT-3.3.1-9], [MQTT-3.3.1-10],
            // [MQTT-3.3.1-11]; none for a shared subscription [MQTT-4.8.2-?].
            let send_retained = !shared
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                let start = retained.len();
                // Through the index: a filter visits the topics it can reach, not every
                // retained message.
                self.retained
                    .for_each_match(wanted.filter.as_str(), |topic, r| {
                        if !r.is_expired(now) {
                            retained.push((topic.clone(), (r.received_at, r.id), entry));
                        }
                    });
                // Oldest first; ids break ties (times are kept to the millisecond).
                retained[start..].sort_by_key(|&(_, at, _)| at);
            }
        }
        let ack = SubAck {
            packet_id: sub.packet_id,
            reasons,
            properties: Default::default(),
        };
        self.send(sid, Packet::SubAck(ack));
        self.emit(|| SessionEvent::Subscribed {
            client_id: client_id.to_string(),
            filters: sub
                .subscriptions
                .iter()
                .map(|w| w.filter.as_str().to_owned())
                .collect(),
        });
        // Bounded by the session's queue: what would overflow it is not read from the store
        // at all (counted as dropped), so one SUBSCRIBE of `#` costs at most a queue's worth
        // of reads and memory, whatever is retained.
        let (max_msgs, max_bytes) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        for (topic, _, entry) in retained {
            let full = self.sessions.get(&sid).is_none_or(|s| {
                let size = self.retained.get(topic.as_str()).map_or(0, |r| r.size);
                s.queue.len() >= max_msgs || s.queued_bytes + size > max_bytes
            });
            if full {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.stats.dropped += 1;
                }
                self.stats.dropped += 1;
                continue;
            }
            let Some(msg) = self.load_retained(topic.as_str()) else {
                continue;
            };
            let d = Delivery {
                seq: 0,
                stored: false,
                qos: msg.qos.min(entry.options.qos),
                // Sent because of a new subscription: RETAIN is 1 [MQTT-3.3.1-8].
                retain: true,
                sub_ids: entry.id.into_iter().collect(),
                msg,
                queued_at: now,
            };
            self.deliver(sid, d, now);
        }
    }

    fn on_unsubscribe(&mut self, sid: SessionId, unsub: Unsubscribe) {
        let mut reasons = Vec::with_capacity(unsub.filters.len());
        for f in &unsub.filters {
            if !self.topic_within_limits(f.as_str()) {
                // Never subscribed (refused at SUBSCRIBE): nothing to walk.
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            let removed = self.subs.remove(sid, f);
            if let Some(s) = self.sessions.get_mut(&sid) {
                if s.subscriptions.remove(f).is_some() && s.persistent() {
                    let client = s.client_id.clone();
                    self.ops.push(Op::DeleteSubscription {
                        client,
                        filter: f.clone(),
                    });
                }
            }
            reasons.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        let ack = UnsubAck {
            packet_id: unsub.packet_id,
            reasons,
            properties: Default::default(),
        };
        self.send(sid, Packet::UnsubAck(ack));
        if let Some(s) = self.sessions.get(&sid) {
            self.emit(|| SessionEvent::Unsubscribed {
                client_id: s.client_id.to_string(),
                filters: unsub
                    .filters
                    .iter()
                    .map(|f| f.as_str().to_owned())
                    .collect(),
            });
        }
    }

    fn on_disconnect(&mut self, sid: SessionId, d: Disconnect, now: Instant) {
        let max_expiry = self.config.max_session_expiry;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(new) = d.properties.session_expiry_interval {
            if s.expiry_interval == 0 && new != 0 {
                // [MQTT-3.14.2-2]: a session that ends with its connection cannot be
                // extended at DISCONNECT.
                return self.fail(sid, ReasonCode::ProtocolError, now);
            }
            s.expiry_interval = max_expiry.map_or(new, |m| new.min(m));
        }
        if let Some(o) = s.online.as_mut() {
            // Normal disconnection: the will is discarded [MQTT-3.1.2-10]; 0x04 keeps it.
            o.disconnected_normally = d.reason != ReasonCode::DisconnectWithWill;
        }
        // The server closes the connection after DISCONNECT [MQTT-3.14.4-1].
        self.close(sid, None);
        self.go_offline(sid, now);
    }

    // ----- routing and delivery -----

    /// Routes a message to every matching session: retained store, normal subscriptions
    /// (one delivery per session at the highest matching QoS, with every matching
    /// subscription identifier), and one member of each matching shared group. Returns how
    /// many deliveries were made and a session now over its queue limit, if any.
    fn route(
        &mut self,
        msg: Msg,
        publisher: Option<SessionId>,
        now: Instant,
    ) -> (usize, Option<SessionId>) {
        if msg.retain {
            self.retain(&msg, now);
        }
        let mut targets: Vec<(SessionId, QoS, bool, Vec<u32>)> = Vec::new();
        // One delivery per session: overlapping subscriptions merge through an index, O(1)
        // per match (a linear search was quadratic in the subscribers of a topic).
        let mut index = std::mem::take(&mut self.route_index);
        self.subs.for_each_match(msg.topic.as_str(), |sid, e| {
            if e.options.no_local && Some(sid) == publisher {
                return; // [MQTT-3.8.3-3]
            }
            match index.entry(sid) {
                std::collections::hash_map::Entry::Occupied(at) => {
                    let t = &mut targets[*at.get()];
                    t.1 = t.1.max(e.options.qos);
                    t.2 |= e.options.retain_as_published;
                    t.3.extend(e.id);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(targets.len());
                    targets.push((
                        sid,
                        e.options.qos,
                        e.options.retain_as_published,
                        e.id.into_iter().collect(),
                    ));
                }
            }
        });
        index.clear();
        self.route_index = index;
        let sessions = &self.sessions;
        self.subs
            .for_each_matching_group(msg.topic.as_str(), |group| {
                let n = group.members.len();
                if n == 0 {
                    return;
                }
                // Take turns, preferring a member that is online with room in its window.
                let pick = (0..n)
                    .map(|i| (group.next + i) % n)
                    .find(|&i| {
                        sessions
                            .get(&group.members[i].0)
                            .is_some_and(Session::window_open)
                    })
                    .or_else(|| {
                        (0..n).map(|i| (group.next + i) % n).find(|&i| {
                            sessions
                                .get(&group.members[i].0)
                                .is_some_and(|s| s.online.is_some())
                        })
                    })
                    .unwrap_or(group.next % n);
                group.next = pick + 1;
                let (sid, e) = group.members[pick];
                targets.push((
                    sid,
                    e.options.qos,
                    e.options.retain_as_published,
                    e.id.into_iter().collect(),
                ));
            });
        let mut congested = None;
        let count = targets.len();
        for (sid, sub_qos, rap, sub_ids) in targets {
            let d = Delivery {
                seq: 0,
                stored: false,
                qos: msg.qos.min(sub_qos),
                // [MQTT-3.3.1-12], [MQTT-3.3.1-13]; 3.1.1 always 0 here [MQTT-3.3.1-9].
                retain: rap && msg.retain,
                sub_ids,
                msg: msg.clone(),
                queued_at: now,
            };
            if self.deliver(sid, d, now) && congested.is_none() {
                congested = Some(sid);
            }
        }
        (count, congested)
    }

    /// Keeps, replaces or deletes (empty payload) the retained message of a topic
    /// [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7].
    ///
    /// Bounded by `max_retained_messages` and `max_retained_bytes`: a message that does not
    /// fit is routed but not retained, and it also removes the topic's older retained
    /// message, which it was meant to replace (a stale value is worse than none).
    fn retain(&mut self, msg: &Msg, now: Instant) {
        let old = self.retained.get(msg.topic.as_str()).map(|r| r.size);
        let size = msg.payload.len();
        let fits = size > 0
            && (old.is_some() || self.retained.len() < self.config.max_retained_messages)
            && self.retained_bytes - old.unwrap_or(0) + size <= self.config.max_retained_bytes;
        if fits {
            self.retained.insert(&msg.topic, Retained::of(msg));
            self.batch_retained.insert(msg.topic.clone(), msg.clone());
            self.retained_bytes = self.retained_bytes - old.unwrap_or(0) + size;
            let stored = self.stored_message(msg);
            self.ops.push(Op::PutRetained(Box::new(stored)));
            return;
        }
        if size > 0 {
            if let Some(suppressed) = self.logs.retained.hit(now) {
                tracing::warn!(
                    topic = %msg.topic,
                    bytes = size,
                    retained = self.retained.len(),
                    retained_bytes = self.retained_bytes,
                    suppressed,
                    "retained message limit (max_retained_messages / max_retained_bytes) reached; not retained"
                );
            }
        }
        self.batch_retained.remove(&msg.topic);
        if let Some(old) = self.retained.remove(msg.topic.as_str()) {
            self.retained_bytes -= old.size;
            self.ops.push(Op::DeleteRetained(msg.topic.clone()));
        }
    }

    /// Delivers to one session: sends now if online and the window allows, else queues.
    /// Returns true if an online session is now over its queue limit (backpressure).
    fn deliver(&mut self, sid: SessionId, mut d: Delivery, now: Instant) -> bool {
        let cfg = self.config.clone();
        self.touch(sid);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        d.seq = s.take_seq();
        let client = s.client_id.clone();
        if s.online.is_some() {
            if d.qos == QoS::AtMostOnce || (s.queue.is_empty() && s.window_open()) {
                self.transmit(sid, d, now);
                return false;
            }
            let over = s.queue.len() >= cfg.max_queued_messages
                || s.queued_bytes + d.msg.payload.len() > cfg.max_queued_bytes;
            let persistent = s.persistent();
            if persistent {
                d.stored = true;
                self.put_delivery(&client, &d, DeliveryState::Queued);
            }
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.push_queue(d);
            }
            return over;
        }
        // Offline (only persistent sessions are): the message goes to the store, only its
        // seq and size stay in memory.
        if d.qos == QoS::AtMostOnce && !cfg.queue_qos0 {
            return false;
        }
        let size = d.msg.payload.len();
        while !s.stored_queue.is_empty()
            && (s.stored_queue.len() >= cfg.max_queued_messages
                || s.queued_bytes + size > cfg.max_queued_bytes)
        {
            s.stats.dropped += 1;
            self.stats.dropped += 1;
            match cfg.overflow_policy {
                OverflowPolicy::DropOldest => {
                    if let Some((seq, old)) = s.stored_queue.pop_front() {
                        s.queued_bytes -= old;
                        self.ops.push(Op::DeleteDelivery {
                            client: client.clone(),
                            seq,
                        });
                    }
                }
                OverflowPolicy::DropNewest => return false,
            }
        }
        if size > cfg.max_queued_bytes || cfg.max_queued_messages == 0 {
            s.stats.dropped += 1;
            self.stats.dropped += 1;
            return false;
        }
        s.stored_queue.push_back((d.seq, size));
        s.queued_bytes += size;
        d.stored = true;
        self.put_delivery(&client, &d, DeliveryState::Queued);
        false
    }

    /// Sends one delivery on an online session: QoS 0 directly, QoS 1/2 with a packet id,
    /// into the in-flight set (and, for a persistent session, the store).
    fn transmit(&mut self, sid: SessionId, mut d: Delivery, now: Instant) {
        let reserve = connection_reserve(&self.config);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(online) = &s.online else { return };
        let client = s.client_id.clone();
        let qos0 = d.qos == QoS::AtMostOnce;
        // [MQTT-3.3.2-5]: an expired message is not delivered. A QoS 0 message towards a
        // connection whose channel is nearly full is dropped (at most once).
        let room = online.tx.capacity().saturating_sub(online.pending_out);
        let max_packet_size = online.max_packet_size;
        let dropped = d.msg.is_expired(now) || (qos0 && room <= reserve);
        let id = if dropped || qos0 {
            None
        } else {
            match s.alloc_packet_id() {
                Some(id) => Some(id),
                None => {
                    s.push_queue(d);
                    return;
                }
            }
        };
        let mut p = d.msg.to_publish(d.qos, d.retain, &d.sub_ids, now);
        p.packet_id = id;
        // Too large for the client: discarded as if sent [MQTT-3.1.2-25].
        let too_large = max_packet_size.is_some_and(|max| {
            !Packet::Publish(p.clone())
                .encoded_len(s.version)
                .is_ok_and(|n| n <= max as usize)
        });
        if dropped || too_large {
            s.stats.dropped += 1;
            self.stats.dropped += 1;
            if d.stored {
                self.ops.push(Op::DeleteDelivery { client, seq: d.seq });
            }
            return;
        }
        s.stats.msgs_out += 1;
        s.stats.bytes_out += p.payload.len() as u64;
        self.stats.msgs_out += 1;
        let persistent = s.persistent();
        match id {
            Some(id) => {
                let state = DeliveryState::AwaitingAck(id.get());
                if d.stored {
                    self.ops.push(Op::SetDeliveryState {
                        client,
                        seq: d.seq,
                        state,
                    });
                } else if persistent {
                    d.stored = true;
                    self.put_delivery(&client, &d, state);
                }
                if let Some(s) = self.sessions.get_mut(&sid) {
                    let seq = d.seq;
                    s.inflight.insert(
                        id.get(),
                        Inflight {
                            seq,
                            delivery: d,
                            stage: Stage::AwaitingAck,
                        },
                    );
                }
            }
            None if d.stored => self.ops.push(Op::DeleteDelivery { client, seq: d.seq }),
            None => {}
        }
        self.send(sid, Packet::Publish(p));
    }

    /// Moves queued messages into the window, then releases held acknowledgements once the
    /// queue is back under its limit.
    fn drain(&mut self, sid: SessionId, now: Instant) {
        loop {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if !s.window_open() {
                break;
            }
            let Some(d) = s.pop_queue() else { break };
            self.transmit(sid, d, now);
        }
        let limit = self.config.max_queued_messages;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.queue.len() > limit || s.held_acks.is_empty() {
            return;
        }
        let held: Vec<HeldAck> = s.held_acks.drain(..).collect();
        for h in held {
            if let Some(&publisher) = self.conns.get(&h.conn) {
                let reason = ReasonCode::Success;
                self.ack_publish(publisher, h.packet_id, h.qos, reason);
            }
        }
    }

    // ----- ends of connections and sessions -----

    /// The session's connection is gone: will per its delay, session kept or ended per its
    /// expiry interval.
    fn go_offline(&mut self, sid: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(online) = s.online.take() else {
            return;
        };
        self.conns.remove(&online.conn);
        s.disconnected_at = Some(now);
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(SessionEvent::Disconnected {
                client_id: s.client_id.to_string(),
            });
            self.dirty.push(sid);
        }
        let mut will_now = None;
        if !online.disconnected_normally {
            if let Some(will) = online.will {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                if delay == 0 || s.version == ProtocolVersion::V311 {
                    will_now = Some(will);
                } else {
                    s.pending_will = Some((will, now + Duration::from_secs(u64::from(delay))));
                }
            }
        }
        let client = s.client_id.clone();
        s.expires_at = match s.expiry_interval {
            u32::MAX => None,
            secs => Some(now + Duration::from_secs(u64::from(secs))),
        };
        let ends = s.expiry_interval == 0;
        // Its queue now waits in the store; memory keeps only seq and size.
        let mut unstored = Vec::new();
        if !ends {
            let queue = std::mem::take(&mut s.queue);
            for d in queue {
                s.stored_queue.push_back((d.seq, d.msg.payload.len()));
                if !d.stored {
                    unstored.push(d);
                }
            }
        }
        // Acks held for publishers: the slow reader is gone, so they are released.
        let held: Vec<HeldAck> = s.held_acks.drain(..).collect();
        for d in unstored {
            self.put_delivery(&client, &d, DeliveryState::Queued);
        }
        if !ends {
            self.persist_session(sid);
        }
        if let Some(will) = will_now {
            self.publish_will(will, client, now);
        }
        for h in held {
            if let Some(&publisher) = self.conns.get(&h.conn) {
                self.ack_publish(publisher, h.packet_id, h.qos, ReasonCode::Success);
            }
        }
        if ends {
            self.end_session(sid, now);
        }
    }

    /// Removes a session and its subscriptions; a will still waiting for its delay is
    /// published now (the session ended first) [MQTT-3.1.3-9].
    fn end_session(&mut self, sid: SessionId, now: Instant) {
        if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
            self.go_offline(sid, now);
        }
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.by_client.remove(&s.client_id);
        self.ops.push(Op::DeleteSession(s.client_id.clone()));
        self.emit(|| SessionEvent::Ended {
            client_id: s.client_id.to_string(),
        });
        for f in s.subscriptions.keys() {
            self.subs.remove(sid, f);
        }
        if let Some((will, _)) = s.pending_will {
            self.publish_will(will, s.client_id.clone(), now);
        }
    }

    fn publish_will(&mut self, will: Will, client: Arc<str>, now: Instant) {
        let mut properties = will.properties;
        properties.will_delay_interval = None;
        let p = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            payload: will.payload,
            properties,
        };
        let id = self.new_message_id();
        let msg = Arc::new(Message::from_publish(p, id, Some(client), now));
        self.route(msg, None, now);
    }

    fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let online: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.online.is_some())
            .map(|s| s.id)
            .collect();
        for sid in online {
            self.close(sid, Some(ReasonCode::ServerShuttingDown));
            // Not a network loss of the client's making: keep the will unpublished, as the
            // session continues after a restart.
            if let Some(o) = self.sessions.get_mut(&sid).and_then(|s| s.online.as_mut()) {
                o.disconnected_normally = true;
            }
            self.go_offline(sid, now);
        }
    }
}

/// Channel slots kept free for QoS 1/2 and control packets.
fn connection_reserve(config: &BrokerConfig) -> usize {
    usize::from(config.max_inflight) + usize::from(config.receive_maximum) + 16
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::{AllowAll, Transport};
    use bytes::Bytes;
    use protocol::{Properties, Subscription, SubscriptionOptions, TopicFilter};

    struct Conn {
        id: ConnId,
        rx: mpsc::Receiver<Outgoing>,
        buf: std::collections::VecDeque<Packet>,
        closed: bool,
    }

    impl Conn {
        fn fill(&mut self) {
            while let Ok(item) = self.rx.try_recv() {
                match item {
                    Outgoing::Packet(p) => self.buf.push_back(*p),
                    Outgoing::Close => self.closed = true,
                }
            }
        }

        /// Everything sent to this connection since the last call.
        fn packets(&mut self) -> Vec<Packet> {
            self.fill();
            self.buf.drain(..).collect()
        }

        /// The first SUBACK, leaving what came after it.
        fn suback(&mut self) -> SubAck {
            self.fill();
            let i = self
                .buf
                .iter()
                .position(|p| matches!(p, Packet::SubAck(_)))
                .unwrap();
            let rest = self.buf.split_off(i + 1);
            let ack = self.buf.pop_back();
            self.buf = rest;
            match ack {
                Some(Packet::SubAck(a)) => a,
                _ => unreachable!(),
            }
        }

        fn publishes(&mut self) -> Vec<Publish> {
            self.packets()
                .into_iter()
                .filter_map(|p| match p {
                    Packet::Publish(p) => Some(p),
                    _ => None,
                })
                .collect()
        }
    }

    struct World {
        engine: Engine,
        now: Instant,
        next_conn: u64,
    }

    fn world_on(config: BrokerConfig, store: Box<dyn Store>) -> World {
        let mut engine = Engine::new(Arc::new(config), Arc::new(AllowAll), store);
        let now = Instant::now();
        engine.recover(now).unwrap();
        World {
            engine,
            now,
            next_conn: 0,
        }
    }

    fn world(config: BrokerConfig) -> World {
        World {
            engine: Engine::new(
                Arc::new(config),
                Arc::new(AllowAll),
                Box::new(crate::store::MemoryStore::new()),
            ),
            now: Instant::now(),
            next_conn: 0,
        }
    }

    impl World {
        fn advance(&mut self, secs: u64) {
            self.now += Duration::from_secs(secs);
            self.engine.tick(self.now);
            self.engine.flush(self.now);
        }

        fn connect_with(&mut self, connect: Connect) -> (Conn, ConnAck) {
            let (tx, rx) = mpsc::channel(connection_channel_capacity(&self.engine.config));
            let id = ConnId(self.next_conn);
            self.next_conn += 1;
            let info = ConnectionInfo {
                peer: None,
                transport: Transport::Tcp,
            };
            self.engine.handle(
                Command::Connect {
                    conn: id,
                    connect: Box::new(connect),
                    info,
                    tx,
                },
                self.now,
            );
            self.engine.flush(self.now);
            let mut conn = Conn {
                id,
                rx,
                buf: Default::default(),
                closed: false,
            };
            let ack = match conn.rx.try_recv() {
                Ok(Outgoing::Packet(p)) if matches!(*p, Packet::ConnAck(_)) => match *p {
                    Packet::ConnAck(ack) => ack,
                    _ => unreachable!(),
                },
                other => panic!("expected CONNACK, got {other:?}"),
            };
            (conn, ack)
        }

        fn connect(
            &mut self,
            v: ProtocolVersion,
            id: &str,
            clean: bool,
            expiry: Option<u32>,
        ) -> (Conn, ConnAck) {
            let mut c = Connect::new(v, id, clean);
            c.properties.session_expiry_interval = expiry;
            self.connect_with(c)
        }

        fn packet(&mut self, conn: &Conn, packet: Packet) {
            self.engine.handle(
                Command::Packet {
                    conn: conn.id,
                    packet,
                },
                self.now,
            );
            self.engine.flush(self.now);
        }

        fn subscribe(&mut self, conn: &mut Conn, filter: &str, qos: QoS) -> SubAck {
            self.subscribe_with(
                conn,
                filter,
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
                None,
            )
        }

        fn subscribe_with(
            &mut self,
            conn: &mut Conn,
            filter: &str,
            options: SubscriptionOptions,
            id: Option<u32>,
        ) -> SubAck {
            let mut properties = Properties::default();
            properties.subscription_identifiers.extend(id);
            let sub = Subscribe {
                packet_id: pid(100),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::new(filter).unwrap(),
                    options,
                }],
                properties,
            };
            self.packet(conn, Packet::Subscribe(sub));
            conn.suback()
        }

        fn publish(
            &mut self,
            conn: &Conn,
            topic: &str,
            payload: &'static [u8],
            qos: QoS,
            retain: bool,
            id: u16,
        ) {
            let mut p = Publish::new(TopicName::new(topic).unwrap(), Bytes::from_static(payload));
            p.qos = qos;
            p.retain = retain;
            p.packet_id = (qos != QoS::AtMostOnce).then(|| pid(id));
            self.packet(conn, Packet::Publish(p));
        }

        fn close(&mut self, conn: &Conn) {
            self.engine.handle(
                Command::Closed {
                    conn: conn.id,
                    reason: CloseReason::NetworkLoss,
                },
                self.now,
            );
            self.engine.flush(self.now);
        }

        fn disconnect(&mut self, conn: &Conn) {
            self.packet(conn, Packet::Disconnect(Disconnect::default()));
        }
    }

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn payloads(ps: &[Publish]) -> Vec<&[u8]> {
        ps.iter().map(|p| &p.payload[..]).collect()
    }

    const V3: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn a_persistent_session_keeps_subscriptions_and_queues_qos1_while_offline() {
        let mut w = world(BrokerConfig::default());
        let (mut a, ack) = w.connect(V3, "A", false, None);
        assert!(!ack.session_present);
        w.subscribe(&mut a, "seed/cmd", QoS::AtLeastOnce);
        w.disconnect(&a);
        let (b, _) = w.connect(V3, "B", true, None);
        for (i, m) in [b"1", b"2", b"3"].into_iter().enumerate() {
            w.publish(&b, "seed/cmd", m, QoS::AtLeastOnce, false, i as u16 + 1);
        }
        assert_eq!(w.engine.session("A").unwrap().queued_len(), 3);
        // [MQTT-3.2.2-3]: session present = 1 on resume; queued messages follow in order.
        let (mut a, ack) = w.connect(V3, "A", false, None);
        assert!(ack.session_present);
        let got = a.publishes();
        assert_eq!(payloads(&got), [b"1", b"2", b"3"]);
        assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    }

    #[test]
    fn a_clean_session_keeps_nothing_mqtt_3_1_2_6() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V3, "A", true, None);
        w.subscribe(&mut a, "seed/cmd", QoS::AtLeastOnce);
        w.disconnect(&a);
        assert!(w.engine.session("A").is_none());
        let (b, _) = w.connect(V3, "B", true, None);
        w.publish(&b, "seed/cmd", b"1", QoS::AtLeastOnce, false, 1);
        let (mut a, ack) = w.connect(V3, "A", true, None);
        assert!(!ack.session_present);
        assert!(a.publishes().is_empty());
    }

    #[test]
    fn clean_start_discards_an_existing_session_mqtt_3_1_2_4() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V5, "A", false, Some(600));
        w.subscribe(&mut a, "t", QoS::AtLeastOnce);
        w.disconnect(&a);
        let (_a, ack) = w.connect(V5, "A", true, Some(600));
        assert!(!ack.session_present);
        assert!(w.engine.session("A").unwrap().subscriptions.is_empty());
    }

    #[test]
    fn unacknowledged_messages_are_resent_with_dup_on_resume_mqtt_4_4_0_1() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V5, "A", false, Some(600));
        w.subscribe(&mut a, "t", QoS::ExactlyOnce);
        let (b, _) = w.connect(V5, "B", true, None);
        w.publish(&b, "t", b"q1", QoS::AtLeastOnce, false, 1);
        w.publish(&b, "t", b"q2", QoS::ExactlyOnce, false, 2);
        let first = a.publishes();
        assert_eq!(first.len(), 2);
        // PUBREC for the QoS 2 one: it moves to awaiting PUBCOMP.
        w.packet(
            &a,
            Packet::PubRec(PubResp::new(first[1].packet_id.unwrap())),
        );
        w.close(&a);
        let (mut a, ack) = w.connect(V5, "A", false, Some(600));
        assert!(ack.session_present);
        let again = a.packets();
        assert!(
            matches!(&again[0], Packet::Publish(p) if p.dup && p.packet_id == first[0].packet_id)
        );
        assert_eq!(
            again[1],
            Packet::PubRel(PubResp::new(first[1].packet_id.unwrap()))
        );
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn a_resent_qos2_publish_is_routed_once_mqtt_4_3_3_9() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V3, "S", true, None);
        w.subscribe(&mut s, "t", QoS::ExactlyOnce);
        let (mut p, _) = w.connect(V3, "P", false, None);
        w.publish(&p, "t", b"x", QoS::ExactlyOnce, false, 7);
        w.publish(&p, "t", b"x", QoS::ExactlyOnce, false, 7);
        assert_eq!(p.packets(), vec![Packet::PubRec(PubResp::new(pid(7))); 2]);
        assert_eq!(s.publishes().len(), 1);
        w.packet(&p, Packet::PubRel(PubResp::new(pid(7))));
        assert_eq!(p.packets(), vec![Packet::PubComp(PubResp::new(pid(7)))]);
        // After PUBREL the id is free again: a new message with it is routed.
        w.publish(&p, "t", b"y", QoS::ExactlyOnce, false, 7);
        assert_eq!(s.publishes().len(), 1);
    }

    #[test]
    fn a_takeover_closes_the_old_connection_with_0x8e_mqtt_3_1_4_3() {
        let mut w = world(BrokerConfig::default());
        let (mut old, _) = w.connect(V5, "A", false, Some(600));
        w.subscribe(&mut old, "t", QoS::AtLeastOnce);
        let (_new, ack) = w.connect(V5, "A", false, Some(600));
        assert!(ack.session_present);
        assert_eq!(
            old.packets(),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::SessionTakenOver
            ))]
        );
        assert!(old.closed);
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_the_highest_qos_with_every_identifier() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        let o = |qos| SubscriptionOptions {
            qos,
            ..Default::default()
        };
        w.subscribe_with(&mut s, "a/+", o(QoS::AtMostOnce), Some(1));
        w.subscribe_with(&mut s, "a/#", o(QoS::AtLeastOnce), Some(2));
        let (p, _) = w.connect(V5, "P", true, None);
        w.publish(&p, "a/b", b"x", QoS::ExactlyOnce, false, 1);
        let got = s.publishes();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        let mut ids = got[0].properties.subscription_identifiers.clone();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]); // [MQTT-3.3.4-3]
    }

    #[test]
    fn no_local_keeps_a_clients_own_messages_away_from_it_mqtt_3_8_3_3() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        w.subscribe_with(
            &mut s,
            "t",
            SubscriptionOptions {
                no_local: true,
                ..Default::default()
            },
            None,
        );
        w.publish(&s, "t", b"own", QoS::AtMostOnce, false, 0);
        assert!(s.publishes().is_empty());
        let (p, _) = w.connect(V5, "P", true, None);
        w.publish(&p, "t", b"other", QoS::AtMostOnce, false, 0);
        assert_eq!(payloads(&s.publishes()), [b"other"]);
    }

    #[test]
    fn retained_messages_are_set_replaced_deleted_and_sent_on_subscribe_mqtt_3_3_1_5_to_8() {
        let mut w = world(BrokerConfig::default());
        let (p, _) = w.connect(V3, "P", true, None);
        w.publish(&p, "r/1", b"old", QoS::AtMostOnce, true, 0);
        w.publish(&p, "r/1", b"new", QoS::AtMostOnce, true, 0);
        w.publish(&p, "r/2", b"gone", QoS::AtMostOnce, true, 0);
        w.publish(&p, "r/2", b"", QoS::AtMostOnce, true, 0);
        let (mut s, _) = w.connect(V3, "S", true, None);
        w.subscribe(&mut s, "r/#", QoS::AtLeastOnce);
        let got = s.publishes();
        assert_eq!(payloads(&got), [b"new"]);
        assert!(got[0].retain);
        // A live retained message to an established subscription has RETAIN 0 (3.1.1).
        w.publish(&p, "r/1", b"live", QoS::AtMostOnce, true, 0);
        assert!(!s.publishes()[0].retain); // [MQTT-3.3.1-9] (3.1.1)
    }

    #[test]
    fn retain_handling_1_sends_retained_only_for_a_new_subscription_and_2_never() {
        let mut w = world(BrokerConfig::default());
        let (p, _) = w.connect(V5, "P", true, None);
        w.publish(&p, "r", b"x", QoS::AtMostOnce, true, 0);
        let (mut s, _) = w.connect(V5, "S", true, None);
        let rh = |retain_handling| SubscriptionOptions {
            retain_handling,
            ..Default::default()
        };
        w.subscribe_with(&mut s, "r", rh(RetainHandling::SendIfNew), None);
        assert_eq!(s.publishes().len(), 1);
        w.subscribe_with(&mut s, "r", rh(RetainHandling::SendIfNew), None);
        assert!(s.publishes().is_empty()); // [MQTT-3.3.1-10]
        let (mut t, _) = w.connect(V5, "T", true, None);
        w.subscribe_with(&mut t, "r", rh(RetainHandling::DoNotSend), None);
        assert!(t.publishes().is_empty()); // [MQTT-3.3.1-11]
    }

    #[test]
    fn retain_as_published_keeps_the_flag_on_forwarded_messages_mqtt_3_3_1_12() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        let rap = SubscriptionOptions {
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
            ..Default::default()
        };
        w.subscribe_with(&mut s, "r", rap, None);
        let (p, _) = w.connect(V5, "P", true, None);
        w.publish(&p, "r", b"x", QoS::AtMostOnce, true, 0);
        assert!(s.publishes()[0].retain);
    }

    fn connect_with_will(
        w: &mut World,
        v: ProtocolVersion,
        id: &str,
        delay: Option<u32>,
        expiry: Option<u32>,
    ) -> Conn {
        let mut c = Connect::new(v, id, false);
        c.properties.session_expiry_interval = expiry;
        let mut will = Will {
            topic: TopicName::new("will/t").unwrap(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        };
        will.properties.will_delay_interval = delay;
        c.will = Some(will);
        w.connect_with(c).0
    }

    #[test]
    fn the_will_is_published_on_network_loss_but_not_after_a_normal_disconnect_mqtt_3_1_2_8_and_10()
    {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V3, "S", true, None);
        w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
        let a = connect_with_will(&mut w, V3, "A", None, None);
        w.disconnect(&a);
        assert!(s.publishes().is_empty());
        let a = connect_with_will(&mut w, V3, "A", None, None);
        w.close(&a);
        assert_eq!(payloads(&s.publishes()), [b"gone"]);
    }

    #[test]
    fn disconnect_with_will_message_publishes_the_will() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
        let a = connect_with_will(&mut w, V5, "A", None, None);
        w.packet(
            &a,
            Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
        );
        assert_eq!(payloads(&s.publishes()), [b"gone"]);
    }

    #[test]
    fn a_delayed_will_waits_and_a_reconnect_in_time_cancels_it_mqtt_3_1_3_9() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
        let a = connect_with_will(&mut w, V5, "A", Some(10), Some(600));
        w.close(&a);
        w.advance(5);
        assert!(s.publishes().is_empty());
        let _a = w.connect(V5, "A", false, Some(600));
        w.advance(10);
        assert!(s.publishes().is_empty());
        // Without a reconnect it is published when the delay runs out.
        let b = connect_with_will(&mut w, V5, "B", Some(10), Some(600));
        w.close(&b);
        w.advance(9);
        assert!(s.publishes().is_empty());
        w.advance(1);
        assert_eq!(payloads(&s.publishes()), [b"gone"]);
    }

    #[test]
    fn a_session_ends_when_its_expiry_interval_runs_out() {
        let mut w = world(BrokerConfig::default());
        let (a, _) = w.connect(V5, "A", false, Some(30));
        w.disconnect(&a);
        w.advance(29);
        assert!(w.engine.session("A").is_some());
        w.advance(1);
        assert!(w.engine.session("A").is_none());
    }

    #[test]
    fn a_non_zero_expiry_at_disconnect_after_zero_at_connect_is_a_protocol_error_mqtt_3_14_2_2() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V5, "A", true, None);
        let mut d = Disconnect::default();
        d.properties.session_expiry_interval = Some(60);
        w.packet(&a, Packet::Disconnect(d));
        assert_eq!(
            a.packets(),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::ProtocolError
            ))]
        );
    }

    #[test]
    fn offline_queues_are_bounded_with_drop_oldest_and_count_drops() {
        let config = BrokerConfig {
            max_queued_messages: 2,
            ..Default::default()
        };
        let mut w = world(config);
        let (mut a, _) = w.connect(V3, "A", false, None);
        w.subscribe(&mut a, "t", QoS::AtLeastOnce);
        w.disconnect(&a);
        let (p, _) = w.connect(V3, "P", true, None);
        for (i, m) in [b"1", b"2", b"3"].into_iter().enumerate() {
            w.publish(&p, "t", m, QoS::AtLeastOnce, false, i as u16 + 1);
        }
        w.publish(&p, "t", b"q0", QoS::AtMostOnce, false, 0);
        assert_eq!(w.engine.session("A").unwrap().stats.dropped, 1);
        let (mut a, _) = w.connect(V3, "A", false, None);
        assert_eq!(payloads(&a.publishes()), [b"2", b"3"]);
    }

    #[test]
    fn drop_newest_keeps_the_oldest_messages() {
        let config = BrokerConfig {
            max_queued_messages: 2,
            overflow_policy: OverflowPolicy::DropNewest,
            ..Default::default()
        };
        let mut w = world(config);
        let (mut a, _) = w.connect(V3, "A", false, None);
        w.subscribe(&mut a, "t", QoS::AtLeastOnce);
        w.disconnect(&a);
        let (p, _) = w.connect(V3, "P", true, None);
        for (i, m) in [b"1", b"2", b"3"].into_iter().enumerate() {
            w.publish(&p, "t", m, QoS::AtLeastOnce, false, i as u16 + 1);
        }
        let (mut a, _) = w.connect(V3, "A", false, None);
        assert_eq!(payloads(&a.publishes()), [b"1", b"2"]);
    }

    #[test]
    fn qos0_is_queued_for_offline_sessions_only_when_configured() {
        for queue_qos0 in [false, true] {
            let mut w = world(BrokerConfig {
                queue_qos0,
                ..Default::default()
            });
            let (mut a, _) = w.connect(V3, "A", false, None);
            w.subscribe(&mut a, "t", QoS::AtMostOnce);
            w.disconnect(&a);
            let (p, _) = w.connect(V3, "P", true, None);
            w.publish(&p, "t", b"x", QoS::AtMostOnce, false, 0);
            let (mut a, _) = w.connect(V3, "A", false, None);
            assert_eq!(a.publishes().len(), usize::from(queue_qos0));
        }
    }

    #[test]
    fn the_broker_keeps_within_the_clients_receive_maximum_mqtt_3_3_4_9() {
        let mut w = world(BrokerConfig::default());
        let mut c = Connect::new(V5, "S", true);
        c.properties.receive_maximum = Some(2);
        let (mut s, _) = w.connect_with(c);
        w.subscribe(&mut s, "t", QoS::AtLeastOnce);
        let (p, _) = w.connect(V5, "P", true, None);
        for i in 1..=5 {
            w.publish(&p, "t", b"x", QoS::AtLeastOnce, false, i);
        }
        let first = s.publishes();
        assert_eq!(first.len(), 2);
        w.packet(
            &s,
            Packet::PubAck(PubResp::new(first[0].packet_id.unwrap())),
        );
        assert_eq!(s.publishes().len(), 1);
    }

    #[test]
    fn a_slow_subscriber_holds_back_the_publishers_acknowledgements_instead_of_dropping() {
        let config = BrokerConfig {
            max_queued_messages: 1,
            ..Default::default()
        };
        let mut w = world(config);
        let mut c = Connect::new(V3, "S", true);
        c.properties.receive_maximum = Some(1);
        let (mut s, _) = w.connect_with(c);
        w.subscribe(&mut s, "t", QoS::AtLeastOnce);
        let (mut p, _) = w.connect(V3, "P", true, None);
        w.publish(&p, "t", b"1", QoS::AtLeastOnce, false, 1); // sent (window 1)
        w.publish(&p, "t", b"2", QoS::AtLeastOnce, false, 2); // queued (at limit)
        w.publish(&p, "t", b"3", QoS::AtLeastOnce, false, 3); // queued past limit: ack held
        let acks = p.packets();
        assert_eq!(
            acks,
            vec![
                Packet::PubAck(PubResp::new(pid(1))),
                Packet::PubAck(PubResp::new(pid(2)))
            ]
        );
        let sent = s.publishes();
        assert_eq!(payloads(&sent), [b"1"]);
        w.packet(&s, Packet::PubAck(PubResp::new(sent[0].packet_id.unwrap())));
        // "2" goes out, the queue is back under its limit, the held ack is released.
        assert_eq!(payloads(&s.publishes()), [b"2"]);
        assert_eq!(p.packets(), vec![Packet::PubAck(PubResp::new(pid(3)))]);
        assert_eq!(w.engine.stats().dropped, 0);
    }

    #[test]
    fn exceeding_the_brokers_receive_maximum_closes_with_0x93() {
        let config = BrokerConfig {
            receive_maximum: 1,
            ..Default::default()
        };
        let mut w = world(config);
        let (mut p, _) = w.connect(V5, "P", false, Some(60));
        w.publish(&p, "t", b"1", QoS::ExactlyOnce, false, 1);
        w.publish(&p, "t", b"2", QoS::ExactlyOnce, false, 2);
        let out = p.packets();
        assert_eq!(
            out.last(),
            Some(&Packet::Disconnect(Disconnect::new(
                ReasonCode::ReceiveMaximumExceeded
            )))
        );
    }

    #[test]
    fn expired_queued_messages_are_not_delivered_and_the_rest_have_their_expiry_lowered() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V5, "A", false, Some(600));
        w.subscribe(&mut a, "t", QoS::AtLeastOnce);
        w.disconnect(&a);
        let (p, _) = w.connect(V5, "P", true, None);
        for (expiry, body, id) in [(5u32, &b"short"[..], 1u16), (100, &b"long"[..], 2)] {
            let mut m = Publish::new(TopicName::new("t").unwrap(), Bytes::from_static(body));
            m.qos = QoS::AtLeastOnce;
            m.packet_id = Some(pid(id));
            m.properties.message_expiry_interval = Some(expiry);
            w.packet(&p, Packet::Publish(m));
        }
        w.advance(10);
        let (mut a, _) = w.connect(V5, "A", false, Some(600));
        let got = a.publishes();
        assert_eq!(payloads(&got), [b"long"]); // [MQTT-3.3.2-5]
        assert_eq!(got[0].properties.message_expiry_interval, Some(90)); // [MQTT-3.3.2-6]
    }

    #[test]
    fn shared_subscriptions_give_each_message_to_one_member_in_turn() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V5, "A", true, None);
        let (mut b, _) = w.connect(V5, "B", true, None);
        w.subscribe(&mut a, "$share/g/jobs/#", QoS::AtLeastOnce);
        w.subscribe(&mut b, "$share/g/jobs/#", QoS::AtLeastOnce);
        let (p, _) = w.connect(V5, "P", true, None);
        for i in 1..=4 {
            w.publish(&p, "jobs/x", b"j", QoS::AtMostOnce, false, i);
        }
        assert_eq!(a.publishes().len(), 2);
        assert_eq!(b.publishes().len(), 2);
    }

    #[test]
    fn an_empty_client_id_gets_an_assigned_one_in_5_0_and_is_refused_with_clean_0_in_3_1_1() {
        let mut w = world(BrokerConfig::default());
        let (_c, ack) = w.connect(V5, "", true, None);
        assert!(ack.properties.assigned_client_identifier.is_some()); // [MQTT-3.2.2-16]
        let (_c, ack) = w.connect(V3, "", false, None);
        assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid); // [MQTT-3.1.3-8]
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards_mqtt_4_7_2_1() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V3, "S", true, None);
        w.subscribe(&mut s, "#", QoS::AtMostOnce);
        let (p, _) = w.connect(V3, "P", true, None);
        w.publish(&p, "$SYS/x", b"x", QoS::AtMostOnce, false, 0);
        assert!(s.publishes().is_empty());
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn sqlite(dir: &std::path::Path) -> Box<dyn Store> {
        Box::new(crate::store::SqliteStore::open(dir, crate::store::Durability::Always).unwrap())
    }

    #[test]
    fn a_restart_gives_back_the_session_its_queue_its_inflight_messages_and_qos2_state() {
        let dir = temp_dir("restart");
        let config = BrokerConfig::default();
        {
            let mut w = world_on(config.clone(), sqlite(&dir));
            let mut c = Connect::new(V5, "A", false);
            c.properties.session_expiry_interval = Some(600);
            c.properties.receive_maximum = Some(2);
            let (mut a, _) = w.connect_with(c);
            w.subscribe(&mut a, "t", QoS::ExactlyOnce);
            let (mut p, _) = w.connect(V5, "P", false, Some(600));
            w.publish(&p, "t", b"1", QoS::ExactlyOnce, false, 1); // in flight, PUBREC below
            w.publish(&p, "t", b"2", QoS::AtLeastOnce, false, 2); // in flight, unacked
            w.publish(&p, "t", b"3", QoS::AtLeastOnce, false, 3); // queued (window 2)
            let sent = a.publishes();
            assert_eq!(payloads(&sent), [b"1", b"2"]);
            w.packet(&a, Packet::PubRec(PubResp::new(sent[0].packet_id.unwrap())));
            // The publisher's QoS 2 message 1 awaits its PUBREL.
            p.packets();
            w.close(&a);
            w.publish(&p, "t", b"4", QoS::AtLeastOnce, false, 4); // queued while offline
            assert!(
                w.engine.session("A").unwrap().queue.is_empty(),
                "offline queue on disk"
            );
            assert_eq!(w.engine.session("A").unwrap().stored_queue.len(), 2);
        }
        // The engine (and its store) is gone, as after a crash: a new one reads it back.
        let mut w = world_on(config, sqlite(&dir));
        let (mut p, ack) = w.connect(V5, "P", false, Some(600));
        assert!(ack.session_present);
        // The publisher's PUBREL is answered: the id was still known [MQTT-4.3.3-9].
        w.packet(&p, Packet::PubRel(PubResp::new(pid(1))));
        assert_eq!(p.packets(), vec![Packet::PubComp(PubResp::new(pid(1)))]);
        let mut c = Connect::new(V5, "A", false);
        c.properties.session_expiry_interval = Some(600);
        let (mut a, ack) = w.connect_with(c);
        assert!(ack.session_present); // [MQTT-3.2.2-3]
        let out = a.packets();
        // PUBREL for 1, PUBLISH 2 again with DUP [MQTT-4.4.0-1], then the queued 3 and 4.
        assert!(matches!(&out[0], Packet::PubRel(_)), "{out:?}");
        let ps: Vec<&Publish> = out
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p),
                _ => None,
            })
            .collect();
        let got: Vec<(&[u8], bool)> = ps.iter().map(|p| (&p.payload[..], p.dup)).collect();
        assert_eq!(
            got,
            [(&b"2"[..], true), (&b"3"[..], false), (&b"4"[..], false)]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_session_that_expired_while_the_broker_was_down_is_gone_after_recovery() {
        let dir = temp_dir("expiry");
        {
            let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
            let (a, _) = w.connect(V5, "short", false, Some(1));
            w.disconnect(&a);
            let (b, _) = w.connect(V5, "long", false, Some(3600));
            w.disconnect(&b);
        }
        std::thread::sleep(Duration::from_millis(1100));
        let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
        assert!(w.engine.session("short").is_none());
        let (_b, ack) = w.connect(V5, "long", false, Some(3600));
        assert!(ack.session_present);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_takeover_in_the_same_batch_as_new_messages_loses_none_of_them() {
        let dir = temp_dir("takeover-batch");
        let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
        let mut c = Connect::new(V3, "A", false);
        c.properties.receive_maximum = Some(1);
        let (mut a, _) = w.connect_with(c.clone());
        w.subscribe(&mut a, "t", QoS::AtLeastOnce);
        let (p, _) = w.connect(V3, "P", true, None);
        // One batch: three messages (one sent, two queued) and the takeover.
        for (i, m) in [b"1", b"2", b"3"].into_iter().enumerate() {
            let mut publish = Publish::new(TopicName::new("t").unwrap(), Bytes::from_static(m));
            publish.qos = QoS::AtLeastOnce;
            publish.packet_id = Some(pid(i as u16 + 1));
            let cmd = Command::Packet {
                conn: p.id,
                packet: Packet::Publish(publish),
            };
            w.engine.handle(cmd, w.now);
        }
        let (tx, rx) = mpsc::channel(connection_channel_capacity(&w.engine.config));
        let info = ConnectionInfo {
            peer: None,
            transport: Transport::Tcp,
        };
        let cmd = Command::Connect {
            conn: ConnId(99),
            connect: Box::new(c),
            info,
            tx,
        };
        w.engine.handle(cmd, w.now);
        w.engine.flush(w.now);
        let mut b = Conn {
            id: ConnId(99),
            rx,
            buf: Default::default(),
            closed: false,
        };
        let out = b.packets();
        assert!(matches!(&out[0], Packet::ConnAck(ack) if ack.session_present));
        let got: Vec<&[u8]> = out
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(&p.payload[..]),
                _ => None,
            })
            .collect();
        // "1" again (it was in flight); "2" and "3" wait for the window of one.
        assert_eq!(got, [b"1"]);
        assert_eq!(w.engine.session("A").unwrap().queued_len(), 2);
        let first = out.iter().find_map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        });
        w.packet(&b, Packet::PubAck(PubResp::new(first.unwrap())));
        let mut rest = Vec::new();
        for _ in 0..3 {
            let sent = b.publishes();
            let Some(last) = sent.last() else { break };
            rest.extend(sent.iter().map(|p| p.payload.clone()));
            w.packet(&b, Packet::PubAck(PubResp::new(last.packet_id.unwrap())));
        }
        assert_eq!(rest, [Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kick_closes_with_0x98_publishes_the_will_and_keeps_the_session() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
        let mut a = connect_with_will(&mut w, V5, "A", None, Some(60));
        a.packets();
        assert!(w.engine.kick("A", w.now));
        w.engine.flush(w.now);
        let sent = a.packets();
        assert!(
            matches!(&sent[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::AdministrativeAction)
        );
        assert!(a.closed);
        assert_eq!(
            payloads(&s.publishes()),
            [b"gone"],
            "closed by the server: the will goes"
        );
        let session = w.engine.session("A").unwrap();
        assert!(session.online.is_none());
        assert!(
            session.expires_at.is_some(),
            "kept, with its expiry running"
        );
        assert!(!w.engine.kick("nobody", w.now));
    }

    #[test]
    fn discard_ends_the_session_and_publishes_a_will_still_waiting_for_its_delay() {
        let mut w = world(BrokerConfig::default());
        let (mut s, _) = w.connect(V5, "S", true, None);
        w.subscribe(&mut s, "will/#", QoS::AtLeastOnce);
        let a = connect_with_will(&mut w, V5, "A", Some(30), Some(60));
        w.close(&a);
        assert!(s.publishes().is_empty(), "the will waits for its delay");
        assert!(w.engine.discard("A", w.now));
        w.engine.flush(w.now);
        assert!(w.engine.session("A").is_none());
        assert_eq!(payloads(&s.publishes()), [b"gone"]);
        assert!(!w.engine.discard("A", w.now));
    }

    #[test]
    fn session_events_go_to_listeners_with_one_queue_event_per_session_per_batch() {
        let mut w = world(BrokerConfig::default());
        let (mut a, _) = w.connect(V5, "A", false, Some(60));
        w.subscribe(&mut a, "t", QoS::AtLeastOnce);
        assert!(w.engine.dirty.is_empty(), "nobody listens: nothing noted");
        let mut events = w.engine.subscribe_events();
        w.disconnect(&a);
        let (p, _) = w.connect(V5, "P", true, None);
        // Three messages in one batch: one queue event.
        for id in 1..=3 {
            let mut publish = Publish::new(TopicName::new("t").unwrap(), Bytes::from_static(b"x"));
            publish.qos = QoS::AtLeastOnce;
            publish.packet_id = Some(pid(id));
            w.engine.handle(
                Command::Packet {
                    conn: p.id,
                    packet: Packet::Publish(publish),
                },
                w.now,
            );
        }
        w.engine.flush(w.now);
        let mut got = Vec::new();
        while let Ok(e) = events.try_recv() {
            got.push(e);
        }
        let id = |s: &str| s.to_owned();
        assert_eq!(
            got,
            [
                SessionEvent::Disconnected { client_id: id("A") },
                SessionEvent::Queue {
                    client_id: id("A"),
                    queued: 0,
                    inflight: 0
                },
                SessionEvent::Created { client_id: id("P") },
                SessionEvent::Connected { client_id: id("P") },
                SessionEvent::Queue {
                    client_id: id("P"),
                    queued: 0,
                    inflight: 0
                },
                SessionEvent::Queue {
                    client_id: id("A"),
                    queued: 3,
                    inflight: 0
                },
            ]
        );
    }

    // ----- limits (issue: no input can crash, stall or exhaust the broker) -----

    fn deep(levels: usize) -> String {
        vec!["a"; levels].join("/")
    }

    #[test]
    fn a_filter_over_the_level_or_length_limit_is_refused_with_0x8f_and_never_reaches_the_trie() {
        let mut w = world(BrokerConfig::default());
        let (mut c, _) = w.connect(V5, "deep", true, None);
        // 8 000 levels used to overflow the engine thread's stack.
        let ack = w.subscribe(&mut c, &deep(8_000), QoS::AtLeastOnce);
        assert_eq!(ack.reasons, vec![ReasonCode::TopicFilterInvalid]);
        let ack = w.subscribe(&mut c, &"x".repeat(5_000), QoS::AtLeastOnce);
        assert_eq!(ack.reasons, vec![ReasonCode::TopicFilterInvalid]);
        // At the limit it works.
        let ack = w.subscribe(&mut c, &deep(128), QoS::AtLeastOnce);
        assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS1]);
        assert_eq!(w.engine.subs.len(), 1);
        assert_eq!(w.engine.session("deep").unwrap().subscriptions.len(), 1);
    }

    #[test]
    fn a_publish_to_a_topic_over_the_limit_ends_the_connection_with_0x90_in_5_0_and_a_close_in_3_1_1(
    ) {
        let mut w = world(BrokerConfig::default());
        let (mut sub, _) = w.connect(V5, "s", true, None);
        w.subscribe(&mut sub, "#", QoS::AtMostOnce);
        let (mut p5, _) = w.connect(V5, "p5", true, None);
        w.publish(&p5, &deep(129), b"x", QoS::AtLeastOnce, false, 1);
        let sent = p5.packets();
        assert!(
            matches!(sent.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::TopicNameInvalid),
            "{sent:?}"
        );
        assert!(p5.closed);
        let (mut p3, _) = w.connect(V3, "p3", true, None);
        w.publish(&p3, &deep(129), b"x", QoS::AtMostOnce, false, 1);
        assert!(p3.packets().is_empty());
        assert!(p3.closed);
        assert!(sub.publishes().is_empty(), "nothing routed");
    }

    #[test]
    fn a_subscribe_beyond_the_subscription_limit_gets_0x97_for_the_filters_over_it() {
        let config = BrokerConfig {
            max_subscriptions_per_session: 2,
            ..Default::default()
        };
        let mut w = world(config);
        let (mut c, _) = w.connect(V5, "c", true, None);
        let filters = ["a", "b", "c"];
        let sub = Subscribe {
            packet_id: pid(1),
            subscriptions: filters
                .iter()
                .map(|f| Subscription {
                    filter: TopicFilter::new(f).unwrap(),
                    options: SubscriptionOptions::default(),
                })
                .collect(),
            properties: Properties::default(),
        };
        w.packet(&c, Packet::Subscribe(sub));
        let ack = c.suback();
        assert_eq!(
            ack.reasons,
            vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::QuotaExceeded
            ]
        );
        // Replacing an existing subscription is not a new one [MQTT-3.8.4-3].
        let ack = w.subscribe(&mut c, "a", QoS::AtLeastOnce);
        assert_eq!(ack.reasons, vec![ReasonCode::GrantedQoS1]);
    }

    #[test]
    fn a_new_session_beyond_max_sessions_is_refused_with_0x97_while_existing_ones_resume() {
        let config = BrokerConfig {
            max_sessions: 2,
            ..Default::default()
        };
        let mut w = world(config);
        let (a, _) = w.connect(V5, "a", false, Some(600));
        w.disconnect(&a);
        let (_b, _) = w.connect(V5, "b", true, None);
        let (c, ack) = w.connect(V5, "c", true, None);
        assert_eq!(ack.reason, ReasonCode::QuotaExceeded);
        let (d, ack) = w.connect(V3, "d", true, None);
        assert_eq!(ack.reason, ReasonCode::ServerUnavailable);
        drop((c, d));
        let (_a, ack) = w.connect(V5, "a", false, Some(600));
        assert_eq!(ack.reason, ReasonCode::Success);
        assert!(ack.session_present);
        assert_eq!(w.engine.sessions.len(), 2);
    }

    #[test]
    fn the_session_expiry_is_capped_by_default_and_the_client_is_told_mqtt_3_2_2_3_2() {
        let mut w = world(BrokerConfig::default());
        let (c, ack) = w.connect(V5, "forever", false, Some(u32::MAX));
        assert_eq!(
            ack.properties.session_expiry_interval,
            Some(crate::config::DEFAULT_MAX_SESSION_EXPIRY)
        );
        w.disconnect(&c);
        assert!(w.engine.session("forever").unwrap().expires_at.is_some());
        // A 3.1.1 clean-session-0 session ends too, once its client has been gone that long.
        let (c3, _) = w.connect(V3, "old", false, None);
        w.close(&c3);
        assert!(w.engine.session("old").unwrap().expires_at.is_some());
    }

    #[test]
    fn retained_messages_are_bounded_by_bytes_and_a_refused_one_removes_the_stale_value() {
        let config = BrokerConfig {
            max_retained_bytes: 10,
            ..Default::default()
        };
        let mut w = world(config);
        let (p, _) = w.connect(V5, "p", true, None);
        w.publish(&p, "a", b"123456", QoS::AtMostOnce, true, 1);
        w.publish(&p, "b", b"1234", QoS::AtMostOnce, true, 2);
        assert_eq!(w.engine.retained().count(), 2);
        // 6 + 4 + 3 > 10: not retained.
        w.publish(&p, "c", b"123", QoS::AtMostOnce, true, 3);
        assert_eq!(w.engine.retained().count(), 2);
        // A larger value for "b" that does not fit removes the old one rather than keep it.
        w.publish(&p, "b", b"123456789", QoS::AtMostOnce, true, 4);
        let topics: Vec<&str> = w.engine.retained().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, vec!["a"]);
        assert_eq!(w.engine.retained_bytes, 6);
        // Deleting frees the bytes.
        w.publish(&p, "a", b"", QoS::AtMostOnce, true, 5);
        assert_eq!(w.engine.retained_bytes, 0);
        w.publish(&p, "c", b"123", QoS::AtMostOnce, true, 6);
        assert_eq!(w.engine.retained().count(), 1);
    }

    #[test]
    fn ten_thousand_subscribers_of_one_topic_each_get_one_delivery() {
        let mut w = world(BrokerConfig::default());
        let mut subs = Vec::new();
        for i in 0..10_000 {
            let (mut c, _) = w.connect(V5, &format!("s{i}"), true, None);
            w.subscribe(&mut c, "fan/+", QoS::AtMostOnce);
            w.subscribe(&mut c, "fan/#", QoS::AtMostOnce);
            subs.push(c);
        }
        let (p, _) = w.connect(V5, "p", true, None);
        w.publish(&p, "fan/out", b"x", QoS::AtMostOnce, false, 1);
        for c in &mut subs {
            assert_eq!(c.publishes().len(), 1);
        }
    }

    #[test]
    fn a_5_0_resume_without_a_session_expiry_gets_its_queued_messages_mqtt_3_1_2_5_and_4_4_0_1() {
        for store in ["memory", "sqlite"] {
            let dir = temp_dir(&format!("resume-no-expiry-{store}"));
            let backing: Box<dyn Store> = match store {
                "memory" => Box::new(crate::store::MemoryStore::new()),
                _ => sqlite(&dir),
            };
            let mut w = world_on(BrokerConfig::default(), backing);
            let (mut a, _) = w.connect(V5, "a", true, Some(99_999));
            w.subscribe(&mut a, "TopicA/+", QoS::ExactlyOnce);
            w.disconnect(&a);
            let (b, _) = w.connect(V5, "b", true, None);
            w.publish(&b, "TopicA/B", b"qos0", QoS::AtMostOnce, false, 1);
            w.publish(&b, "TopicA/C", b"qos1", QoS::AtLeastOnce, false, 2);
            w.publish(&b, "TopicA/D", b"qos2", QoS::ExactlyOnce, false, 3);
            // Clean Start 0 and no Session Expiry property: expiry 0 from now on, but the
            // session is resumed and its messages are sent.
            let (mut a, ack) = w.connect(V5, "a", false, None);
            assert!(ack.session_present, "{store}");
            let got = a.publishes();
            assert_eq!(payloads(&got), vec![&b"qos1"[..], b"qos2"], "{store}");
            // It ends with this connection.
            w.disconnect(&a);
            assert!(w.engine.session("a").is_none(), "{store}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn retained_payloads_live_in_the_store_and_are_read_when_a_subscribe_sends_them() {
        let dir = temp_dir("retained-in-store");
        let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
        let (p, _) = w.connect(V5, "p", true, None);
        w.publish(&p, "r/1", b"one", QoS::AtLeastOnce, true, 1);
        // Set and subscribed in one batch: read from the batch, not yet in the store.
        let (mut s, _) = w.connect(V5, "s", true, None);
        let mut t = TopicName::new("r/2").unwrap();
        let mut p2 = Publish::new(t.clone(), Bytes::from_static(b"two"));
        p2.retain = true;
        w.engine.handle(
            Command::Packet {
                conn: p.id,
                packet: Packet::Publish(p2),
            },
            w.now,
        );
        let sub = Subscribe {
            packet_id: pid(7),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new("r/#").unwrap(),
                options: SubscriptionOptions::default(),
            }],
            properties: Properties::default(),
        };
        w.engine.handle(
            Command::Packet {
                conn: s.id,
                packet: Packet::Subscribe(sub),
            },
            w.now,
        );
        w.engine.flush(w.now);
        let got = s.publishes();
        assert_eq!(payloads(&got), vec![&b"one"[..], b"two"]);
        assert!(w.engine.batch_retained.is_empty());
        // After a restart only metadata is in memory; the payload comes from the store.
        drop(w);
        let mut w = world_on(BrokerConfig::default(), sqlite(&dir));
        assert_eq!(w.engine.retained_bytes(), 6);
        let (mut s, _) = w.connect(V5, "s2", true, None);
        w.subscribe(&mut s, "r/+", QoS::AtMostOnce);
        let got = s.publishes();
        assert_eq!(payloads(&got), vec![&b"one"[..], b"two"]);
        assert!(got.iter().all(|p| p.retain), "[MQTT-3.3.1-8]");
        t = TopicName::new("r/1").unwrap();
        assert_eq!(w.engine.load_retained(t.as_str()).unwrap().payload, "one");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_subscribe_matching_more_retained_messages_than_its_queue_holds_reads_only_what_fits() {
        let config = BrokerConfig {
            max_inflight: 2,
            max_queued_messages: 3,
            ..Default::default()
        };
        let mut w = world(config);
        let (p, _) = w.connect(V5, "p", true, None);
        for i in 0..20u16 {
            let topic = format!("many/{i}");
            let mut m = Publish::new(TopicName::new(&topic).unwrap(), Bytes::from_static(b"x"));
            m.retain = true;
            m.qos = QoS::AtLeastOnce;
            m.packet_id = Some(pid(i + 1));
            w.packet(&p, Packet::Publish(m));
        }
        assert_eq!(w.engine.retained().count(), 20);
        let (mut s, _) = w.connect(V5, "s", true, None);
        w.subscribe(&mut s, "many/#", QoS::AtLeastOnce);
        // Two in flight, three queued, the rest never read.
        assert_eq!(s.publishes().len(), 2);
        let session = w.engine.session("s").unwrap();
        assert_eq!(session.queue.len(), 3);
        assert_eq!(session.stats.dropped, 15);
    }
}
