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

use crate::command::{Command, Outgoing};

use crate::auth::{Access, Authenticator, ConnectionInfo, Identity};
use crate::config::{BrokerConfig, OverflowPolicy};
use crate::ids::{ConnId, SessionId};
use crate::message::{Message, Msg};
use crate::metrics::{DropReason, Metrics};
use crate::ratelog::RateLimitedLog;
use crate::retained::RetainedIndex;
use crate::session::{Delivery, HeldAck, Inflight, Online, Session, Stage};
use crate::store::{
    DeliveryState, Op, Recovered, RecoveredSession, SessionMeta, Store, StoreError, StoredDelivery,
    StoredMessage,
};
use crate::subscriptions::{SubEntry, Subscriptions};
use crate::view::{SessionEvent, SessionSummary};

mod backpressure;
mod cluster;
mod connect;
mod inbound;
mod inspect;
mod lifecycle;
mod persistence;
mod routing;
mod subscribe;
mod sys;

/// Whether `s` may be given `access`; a free function so that it can run while the
/// subscription index is borrowed.
fn may(auth: &dyn Authenticator, s: &Session, access: Access<'_>) -> bool {
    auth.authorize(&s.identity, &s.client_id, access)
}

/// Session events the channel holds for a slow listener before it lags (and is told to
/// resynchronize).
pub(crate) const EVENT_CAPACITY: usize = 1024;

/// What the engine found in the store at start ([`Broker::with_store`](crate::Broker::with_store)).
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

/// Totals for the stats API and `$SYS`, read from the broker's metrics (counted once, where
/// they happen).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EngineStats {
    /// Messages received from clients.
    pub(crate) msgs_in: u64,
    /// Messages sent to clients.
    pub(crate) msgs_out: u64,
    /// Messages dropped (queue overflow, expiry, too large, slow QoS 0 reader).
    pub(crate) dropped: u64,
}

/// Converts between the engine's monotonic clock and the wall clock the store keeps
/// (deadlines must survive a restart, so they are stored as absolute times).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    /// Both clocks, now.
    pub(crate) fn now() -> Self {
        Clock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub(crate) fn to_system(self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.system + (at - self.instant)
        } else {
            self.system - (self.instant - at)
        }
    }

    /// The monotonic time of `at` (clamped to the past the monotonic clock can express).
    pub(crate) fn to_instant(self, at: SystemTime) -> Instant {
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
pub(crate) struct Engine {
    config: Arc<BrokerConfig>,
    auth: Arc<dyn Authenticator>,
    /// The Prometheus counters it adds to (see `crate::metrics`).
    metrics: Arc<Metrics>,
    sessions: HashMap<SessionId, Box<Session>>,
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
    /// The id of the next message: above every id the store held at start.
    next_message_id: u64,
    /// Sessions whose connection must be dropped after the current command (channel full).
    to_drop: Vec<SessionId>,
    shutting_down: bool,
    /// Where sessions are kept durably.
    store: Box<dyn Store>,
    /// The store routes between the nodes of a cluster (see `cluster`): published
    /// messages go to it, and come back through [`Command::Route`].
    routes: bool,
    /// QoS 2 packet ids taken in by the current batch while routing through the cluster:
    /// forgotten if the batch fails (see `Engine::forget_batch_qos2`).
    batch_qos2: Vec<(SessionId, u16)>,
    /// The last stream sequence the cluster delivered and this node routed (cluster mode).
    routed_upto: u64,
    /// Which subscriptions the message being routed goes to (see `Routing`).
    routing: Routing,
    /// A shared subscription was made or removed in this batch (cluster mode: the store is
    /// told the groups this node has members in).
    groups_changed: bool,
    /// Cluster mode: sessions whose messages are left in the stream from this sequence on
    /// (their queue was full), read back as it drains (see `cluster`). Online or offline.
    spill_marks: HashMap<SessionId, u64>,
    /// The last `route` found a shared group to pick a member of (cluster mode: whether a
    /// group's message belongs here).
    group_found: bool,
    /// A store write of the current flush failed (release and shared-group answers say so).
    flush_failed: bool,
    /// Answers of shared-group messages routed in this batch, sent once it is written.
    shared_done: Vec<(oneshot::Sender<bool>, bool)>,
    /// Releases of sessions to other nodes, answered once the batch is written.
    release_done: Vec<oneshot::Sender<bool>>,
    /// Changes of the current batch, written by [`Engine::flush`] in one transaction.
    ops: Vec<Op>,
    /// The message the last queued delivery carried, in its stored form: the next
    /// deliveries of the same message share it (an id always names the same message).
    last_stored: Option<Arc<StoredMessage>>,
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
    /// When expired retained messages are next swept out (`None`: at the next tick).
    next_retained_sweep: Option<Instant>,
    /// Routing scratch: where each matched session is in the target list, so a session
    /// matched by many subscriptions is merged in O(1) (kept to reuse its allocation).
    route_index: HashMap<SessionId, usize>,
    /// Log lines for refusals a client can repeat at will, one per interval per kind.
    logs: RefusalLogs,
    /// `$SYS/broker/...`: its counters, schedule and retained payloads (see `sys`).
    sys: sys::SysTree,
    /// Congested subscribers, paused publishers, QoS 0 waiting for room (see
    /// `backpressure`).
    pressure: backpressure::Backpressure,
}

/// Which subscriptions a message is routed to.
#[derive(Debug, Clone, Default)]
pub(crate) enum Routing {
    /// All of them (one node).
    #[default]
    All,
    /// All but shared groups: a cluster's stream message (groups get theirs on their own).
    WithoutGroups,
    /// One member of the group of this name only: a cluster's shared-group message.
    Group(Arc<str>),
}

/// What the engine keeps in memory of a retained message; the rest is in the store.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    /// The message's id in the store.
    pub(crate) id: u64,
    /// Payload bytes (counted against `max_retained_bytes`).
    pub(crate) size: usize,
    /// When its Message Expiry Interval runs out.
    pub(crate) expires_at: Option<Instant>,
    /// When it was received: retained messages go out in this order.
    pub(crate) received_at: Instant,
}

impl Retained {
    fn of(msg: &Message) -> Retained {
        Retained {
            id: msg.id,
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
    /// A CONNECT refused for a session another user owns.
    ownership: RateLimitedLog,
}

impl Engine {
    /// An engine with no sessions, writing to `store` (call [`Engine::recover`] to read
    /// back what the store holds).
    pub(crate) fn new(
        config: Arc<BrokerConfig>,
        auth: Arc<dyn Authenticator>,
        store: Box<dyn Store>,
    ) -> Self {
        let sys = sys::SysTree::new(config.sys_interval);
        Engine {
            config,
            // Clients never write to `$SYS`, whatever the rules say.
            auth: Arc::new(sys::ReservedTopics(auth)),
            metrics: Arc::default(),
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            conns: HashMap::new(),
            subs: Subscriptions::default(),
            retained: RetainedIndex::new(),
            batch_retained: HashMap::new(),
            next_session: 0,
            // In a cluster, messages of the stream have their sequence as id: this node's
            // own ids (QoS 0, retained read at start) stay above any sequence.
            next_message_id: if store.routes() { CLUSTER_LOCAL_IDS } else { 0 },
            to_drop: Vec::new(),
            shutting_down: false,
            routes: store.routes(),
            batch_qos2: Vec::new(),
            routed_upto: 0,
            routing: Routing::All,
            groups_changed: false,
            spill_marks: HashMap::new(),
            group_found: false,
            flush_failed: false,
            shared_done: Vec::new(),
            release_done: Vec::new(),
            store,
            ops: Vec::new(),
            last_stored: None,
            outbox: Vec::new(),
            clock: Clock::now(),
            shutdown_done: Vec::new(),
            batch_failed: false,
            events: broadcast::channel(EVENT_CAPACITY).0,
            dirty: Vec::new(),
            listening: false,
            retained_bytes: 0,
            next_retained_sweep: None,
            route_index: HashMap::new(),
            logs: RefusalLogs::default(),
            sys,
            pressure: backpressure::Backpressure::default(),
        }
    }

    /// Whether a topic name or filter is within `max_topic_length` and `max_topic_levels`.
    /// Checked at the door, before anything walks its levels.
    fn topic_within_limits(&self, topic: &str) -> bool {
        topic.len() <= self.config.max_topic_length
            && topic.bytes().filter(|&b| b == b'/').count() < self.config.max_topic_levels
    }

    /// Whether session `sid` may be given `access` (publish, subscribe, read), as the
    /// identity its last connection proved.
    fn may(&self, sid: SessionId, access: Access<'_>) -> bool {
        self.sessions
            .get(&sid)
            .is_some_and(|s| may(&*self.auth, s, access))
    }

    /// Logs a refused topic, at most once per interval.
    fn log_topic_refusal(&mut self, what: &str, topic: &str, now: Instant) {
        if let Some(times) = self.logs.topic.hit(now) {
            let levels = topic.bytes().filter(|&b| b == b'/').count() + 1;
            tracing::warn!(
                what,
                bytes = topic.len(),
                levels,
                times,
                "topic over max_topic_length / max_topic_levels refused"
            );
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The wall-clock time of an engine instant.
    pub(crate) fn wall_time(&self, at: Instant) -> SystemTime {
        self.clock.to_system(at)
    }

    /// A receiver of session changes (see [`SessionEvent`]).
    #[cfg(test)]
    pub(crate) fn subscribe_events(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    /// The sender of session changes, to subscribe more receivers later.
    pub(crate) fn event_sender(&self) -> broadcast::Sender<SessionEvent> {
        self.events.clone()
    }

    /// Sends an event about session `sid`, with its summary as it is now, if anyone
    /// listens (nothing is built otherwise).
    fn emit_about(&self, sid: SessionId, event: impl FnOnce(SessionSummary) -> SessionEvent) {
        if self.events.receiver_count() == 0 {
            return;
        }
        if let Some(s) = self.sessions.get(&sid) {
            let _ = self.events.send(event(inspect::session_summary(self, s)));
        }
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
    pub(crate) fn stats(&self) -> EngineStats {
        EngineStats {
            msgs_in: self.metrics.received_total(),
            msgs_out: self.metrics.sent_total(),
            dropped: self.metrics.dropped_total(),
        }
    }

    /// All sessions, for inspection.
    pub(crate) fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values().map(|s| &**s)
    }

    /// A session by client id.
    pub(crate) fn session(&self, client_id: &str) -> Option<&Session> {
        self.by_client
            .get(client_id)
            .and_then(|id| self.sessions.get(id))
            .map(|s| &**s)
    }

    /// Retained messages.
    pub(crate) fn retained(&self) -> impl Iterator<Item = (&TopicName, &Retained)> {
        self.retained.iter()
    }

    /// Payload bytes of all retained messages.
    #[cfg(test)]
    pub(crate) fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// Applies one command.
    pub(crate) fn handle(&mut self, cmd: Command, now: Instant) {
        self.listening = self.events.receiver_count() > 0;
        self.count_in(&cmd);
        match cmd {
            Command::Connect {
                conn,
                connect,
                info,
                identity,
                tx,
                flow,
                claim,
            } => {
                if let Some(claim) = claim {
                    if let Err(reason) = self.install_claim(connect.client_id.as_str(), *claim, now)
                    {
                        let ack = Packet::ConnAck(ConnAck::new(false, reason));
                        let _ = tx.try_send(Outgoing::Packet(Box::new(ack)));
                        let _ = tx.try_send(Outgoing::Close);
                        return;
                    }
                }
                self.on_connect(conn, *connect, *info, *identity, (tx, flow), now);
                self.note_connected();
            }
            Command::Packet { conn, packet } => {
                if let Some(&sid) = self.conns.get(&conn) {
                    self.on_packet(sid, packet, now);
                }
            }
            Command::Drained { conn } => {
                if let Some(&sid) = self.conns.get(&conn) {
                    self.on_drained(sid, now);
                }
            }
            Command::Closed { conn, reason } => {
                if let Some(&sid) = self.conns.get(&conn) {
                    if let Some(s) = self.sessions.get(&sid) {
                        tracing::debug!(client_id = %s.client_id, ?reason, "connection ended");
                    }
                    self.go_offline(sid, now);
                }
            }
            Command::Request(request) => {
                // A barrier: what the commands before it changed is written and sent
                // before the answer, so an answer never describes unsent state.
                self.flush(now);
                self.answer(request, now);
            }
            Command::Route(msg) => self.on_routed(*msg, now),
            Command::RouteShared { group, msg, done } => {
                let delivered = self.on_routed_shared(group, *msg, now);
                // Answered once the delivery is written (see `flush`).
                self.shared_done.push((done, delivered));
            }
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
    pub(crate) fn flush(&mut self, now: Instant) {
        if std::mem::take(&mut self.groups_changed) && self.routes {
            self.announce_groups();
        }
        self.flush_batch(now);
        // Shutdown is answered at the end of a batch only (never from a request's flush in
        // the middle of one), once everything the batch changed is written and sent.
        for done in self.shutdown_done.drain(..) {
            let _ = done.send(());
        }
        // Not written: the other node keeps asking (a release) or the message is offered
        // again (a shared group's).
        let written = !std::mem::take(&mut self.flush_failed);
        for done in self.release_done.drain(..) {
            let _ = done.send(written);
        }
        for (done, delivered) in self.shared_done.drain(..) {
            let _ = done.send(delivered && written);
        }
        // One `queue` event per session touched by the batch.
        if !self.dirty.is_empty() {
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for sid in dirty.drain(..) {
                self.emit_about(sid, |session| SessionEvent::Queue {
                    client_id: session.client_id.clone(),
                    queued: session.queued,
                    inflight: session.inflight,
                    session,
                });
            }
            // Keep the allocation for the next batch.
            self.dirty = dirty;
        }
    }

    fn flush_batch(&mut self, now: Instant) {
        loop {
            let mut store_failed = std::mem::take(&mut self.batch_failed);
            self.batch_retained.clear();
            self.last_stored = None;
            if !self.ops.is_empty() {
                if let Err(e) = self.store.apply(&self.ops) {
                    // Nothing of this batch may be acknowledged: the clients will resend.
                    tracing::error!(error = %e, "store write failed; closing the batch's connections");
                    store_failed = true;
                    self.flush_failed = true;
                }
                self.ops.clear();
                if store_failed {
                    self.forget_batch_qos2();
                }
                self.forget_lost();
            }
            self.batch_qos2.clear();
            if self.outbox.is_empty() && self.to_drop.is_empty() {
                // Channels emptied while this batch ran: what waited for their room goes
                // now (and round again, to be written and sent).
                if self.refill_waiting(now) {
                    continue;
                }
                return;
            }
            for (tx, item, sid) in std::mem::take(&mut self.outbox) {
                if let Some(s) = sid.and_then(|sid| self.sessions.get_mut(&sid)) {
                    if let Some(o) = s.online.as_mut() {
                        o.pending_out = 0;
                    }
                }
                // A failed batch acknowledges nothing: its packets become a close. A
                // DISCONNECT acknowledges nothing either, and says why (0x9C when the
                // cluster is gone): it still goes.
                let item = match (store_failed, item) {
                    (true, Outgoing::Packet(p)) if !matches!(*p, Packet::Disconnect(_)) => {
                        Outgoing::Close
                    }
                    (_, item) => item,
                };
                let size = self.size_out(&item, sid);
                if tx.try_send(item).is_err() {
                    self.to_drop.extend(sid);
                } else {
                    self.count_out(size);
                }
            }
            while let Some(sid) = self.to_drop.pop() {
                if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
                    if let Some(times) = self.logs.slow.hit(now) {
                        tracing::warn!(client_id = %self.sessions[&sid].client_id, times, "connection cannot keep up; closing it");
                    }
                    self.go_offline(sid, now);
                }
            }
        }
    }

    /// Runs the clocks: ends expired sessions, publishes delayed wills.
    pub(crate) fn tick(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut wills = Vec::new();
        let mut revoked = Vec::new();
        for s in self.sessions.values_mut() {
            if let Some(online) = &s.online {
                if online.credentials_expire.is_some_and(|t| now >= t) {
                    revoked.push(s.id);
                }
            } else if s.expires_at.is_some_and(|t| now >= t) {
                expired.push(s.id);
            } else if s.pending_will.as_ref().is_some_and(|(_, at)| now >= *at) {
                if let Some((will, _)) = s.pending_will.take() {
                    // Published only if the user may still write there (see `go_offline`).
                    if may(&*self.auth, s, Access::Publish(will.topic.as_str())) {
                        wills.push((will, s.client_id.clone()));
                    }
                }
            }
        }
        for (will, client) in wills {
            if let Some(&sid) = self.by_client.get(&client) {
                self.persist_session(sid);
            }
            self.publish_will(*will, client, now);
        }
        for sid in expired {
            self.end_session(sid, now);
        }
        // Credentials that ran out (a token's `exp`) end their connection: 5.0 DISCONNECT
        // 0x87 Not authorized. The session stays, as after any server-side close.
        for sid in revoked {
            if let Some(s) = self.sessions.get_mut(&sid) {
                tracing::info!(client_id = %s.client_id, "credentials expired; connection closed");
                // Expired credentials no longer vouch for the will either: not published.
                if let Some(online) = s.online.as_mut() {
                    online.will = None;
                }
            }
            self.close(sid, Some(ReasonCode::NotAuthorized));
            self.go_offline(sid, now);
        }
        if self.next_retained_sweep.is_none_or(|at| now >= at) {
            self.next_retained_sweep = Some(now + RETAINED_SWEEP);
            self.sweep_expired_retained(now);
        }
        self.pressure_tick(now);
        self.refill_spilled(now);
        self.sys_tick(now);
    }

    /// Removes retained messages whose Message Expiry Interval has run out, so they stop
    /// counting against `max_retained_messages` and `max_retained_bytes` (they are never
    /// sent anyway [MQTT-3.3.2-5]).
    fn sweep_expired_retained(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.retained.retain(|topic, r| {
            let keep = !r.is_expired(now);
            if !keep {
                gone.push((topic.clone(), r.size));
            }
            keep
        });
        for (topic, size) in gone {
            self.retained_bytes -= size;
            self.batch_retained.remove(&topic);
            self.ops.push(Op::DeleteRetained(topic));
        }
    }
}

/// The first id of a cluster node's own messages: above any stream sequence.
const CLUSTER_LOCAL_IDS: u64 = 1 << 62;

/// The ids of the retained messages a cluster node read at start (up to its own ids): a
/// message id below this is the message's stream sequence.
const CLUSTER_SNAPSHOT_IDS: u64 = 1 << 61;

/// How often expired retained messages are swept out (a scan of the index).
const RETAINED_SWEEP: Duration = Duration::from_secs(10);

/// Channel slots kept free for QoS 1/2 and control packets.
fn connection_reserve(config: &BrokerConfig) -> usize {
    usize::from(config.max_inflight) + usize::from(config.receive_maximum) + 16
}

#[cfg(test)]
mod tests;
