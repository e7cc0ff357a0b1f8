//! Session storage: the trait the engine writes through, and its two implementations.
//!
//! The engine owns the live state; the store keeps a durable copy of everything a session
//! is (spec 4.1): its subscriptions, the messages queued for it and in flight both ways
//! (QoS 2 state included), its will and its expiry deadline, and the retained messages.
//!
//! # How the engine uses it
//! While the engine handles a batch of commands it records every change as an [`Op`]. At
//! the end of the batch it calls [`Store::apply`] once: one transaction, made durable per
//! the [`Durability`] policy, and only then are the batch's acknowledgements (PUBACK,
//! PUBREC, SUBACK, CONNACK) sent. Concurrent clients therefore share one sync (group
//! commit), and nothing acknowledged can be lost by a crash.
//!
//! Queued messages of offline sessions live in the store only (the engine keeps their count
//! and size); they come back with [`Store::load_queue`] when the client returns.
//!
//! # One copy of a message
//! A message queued for many sessions is stored once: every [`StoredMessage`] carries the
//! engine's message id, [`Op::PutDelivery`] stores the message under that id if it is not
//! stored yet and counts one more reference to it, and removing a delivery
//! ([`Op::DeleteDelivery`], [`Op::DeleteSession`], or a `PutDelivery` replacing one) releases
//! its reference; the message goes with the last one, in the same batch. So one PUBLISH to
//! many offline sessions costs its payload once, plus a small entry per session (the
//! SQLite store keeps the entries a batch queues for a session in one row). The same id
//! must therefore always name the same message.
//!
//! # Retained messages
//! At start [`Store::load`] returns only what the engine needs to know about each retained
//! message ([`RetainedMeta`]: no payload, no properties); the message itself is read with
//! [`Store::load_retained`] when a subscription needs it, so retained payloads need not be
//! held in memory.
//!
//! Times are absolute (`SystemTime`), so a session that expired while the broker was down is
//! gone after a restart and one that did not keeps its remaining time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use protocol::{Properties, ProtocolVersion, QoS, TopicFilter, TopicName, Will};

use crate::subscriptions::SubEntry;

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

/// When the store's writes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the acknowledgements of a batch go out.
    Always,
    /// Written before the acknowledgements go out (safe against a crash of the process),
    /// and a sync asked for this long after (again at each period until one has covered
    /// the write: a program reading the file may hold it up).
    Interval(Duration),
    /// Written before the acknowledgements go out, synced when the OS decides.
    None,
}

/// A message as stored: what a `Message` holds, with absolute times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The engine's id of the message: the same id is always the same message (see the
    /// [module docs](self#one-copy-of-a-message)).
    pub id: u64,
    /// Topic.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// Properties passed through to subscribers.
    pub properties: Properties,
    /// When it expires.
    pub expires_at: Option<SystemTime>,
    /// When the broker received it.
    pub received_at: SystemTime,
    /// The publisher's client id.
    pub publisher: Option<Arc<str>>,
}

/// Where a delivery to a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting to be sent.
    Queued,
    /// Sent with this packet id; PUBACK / PUBREC due.
    AwaitingAck(u16),
    /// PUBREC received, PUBREL sent; PUBCOMP due.
    AwaitingComp(u16),
}

/// One message queued for, or in flight to, a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    /// Its place in the session's order (queue order, then send order).
    pub seq: u64,
    /// Where it is.
    pub state: DeliveryState,
    /// The QoS it is delivered at.
    pub qos: QoS,
    /// The RETAIN flag it is delivered with.
    pub retain: bool,
    /// Subscription identifiers.
    pub sub_ids: Vec<u32>,
    /// The message, shared: a message queued for many sessions in a batch is converted
    /// once, and each of its deliveries holds a reference.
    pub msg: Arc<StoredMessage>,
}

/// A session's own fields (not its subscriptions, messages or QoS 2 ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMeta {
    /// Client id.
    pub client_id: Arc<str>,
    /// Protocol of its last connection.
    pub version: ProtocolVersion,
    /// User name of its last connection.
    pub username: Option<String>,
    /// Seconds it outlives its connection (`u32::MAX` = never).
    pub expiry_interval: u32,
    /// When it ends, if offline and not "never".
    pub expires_at: Option<SystemTime>,
    /// When it last went offline.
    pub disconnected_at: Option<SystemTime>,
    /// A will waiting for its delay, and when it is due.
    pub pending_will: Option<(Will, SystemTime)>,
    /// Messages dropped by its queue policy so far.
    pub dropped: u64,
    /// The will of its open connection, if it is connected with one. Only a store that
    /// routes keeps it (cluster mode: the node that takes over a session whose node died
    /// publishes it); the embedded store leaves it out.
    pub connected_will: Option<Will>,
}

/// A change to the stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace a session's own fields.
    PutSession(Box<SessionMeta>),
    /// Remove a session and everything of it (its deliveries release their messages).
    DeleteSession(Arc<str>),
    /// Insert or replace a subscription.
    PutSubscription {
        /// Client id.
        client: Arc<str>,
        /// Filter (a shared one included).
        filter: TopicFilter,
        /// Options and identifier.
        entry: SubEntry,
    },
    /// Remove a subscription.
    DeleteSubscription {
        /// Client id.
        client: Arc<str>,
        /// Filter.
        filter: TopicFilter,
    },
    /// Insert or replace a delivery (by client and seq). Its message is stored if its id is
    /// not, and gains a reference; a replaced delivery releases its own.
    PutDelivery {
        /// Client id.
        client: Arc<str>,
        /// The delivery.
        delivery: Box<StoredDelivery>,
    },
    /// Change the state of a stored delivery (queued → in flight → awaiting PUBCOMP).
    SetDeliveryState {
        /// Client id.
        client: Arc<str>,
        /// Which.
        seq: u64,
        /// New state.
        state: DeliveryState,
    },
    /// Remove a delivery (acknowledged, dropped or expired), releasing its message's
    /// reference (the message goes with the last).
    DeleteDelivery {
        /// Client id.
        client: Arc<str>,
        /// Which.
        seq: u64,
    },
    /// An incoming QoS 2 packet id is awaiting PUBREL.
    PutInboundQos2 {
        /// Client id.
        client: Arc<str>,
        /// Packet id.
        packet_id: u16,
    },
    /// PUBREL came for it.
    DeleteInboundQos2 {
        /// Client id.
        client: Arc<str>,
        /// Packet id.
        packet_id: u16,
    },
    /// Set the retained message of its topic.
    PutRetained(Box<StoredMessage>),
    /// Remove the retained message of a topic.
    DeleteRetained(TopicName),
    /// Hand a message to the other nodes of a cluster (a store whose [`Store::routes`] is
    /// true): the engine has not routed it to its own sessions, it comes back from the
    /// cluster in the cluster's order like everyone else's. Like every op of the batch it
    /// is safe before [`Store::apply`] returns: a QoS 1/2 or retained message is stored by
    /// the cluster before its PUBACK / PUBREC goes out. Stores that do not route ignore it.
    Route(Box<StoredMessage>),
    /// The engine has routed the cluster's message of this stream sequence (the ops of its
    /// deliveries come before this one). Stores that do not route ignore it.
    Routed(u64),
    /// The session of this client went to another node: the store writes what it knows of
    /// it for the last time and forgets it, keeping it for the new owner (unlike
    /// [`Op::DeleteSession`]). Stores that do not route ignore it.
    Released(Arc<str>),
    /// The shared subscription groups this node has members in now, as (group name,
    /// filter), after a change (cluster mode: the store fetches their messages). Stores
    /// that do not route ignore it.
    SharedGroups(Vec<(Arc<str>, String)>),
    /// Cluster mode: the session's messages from this stream sequence on are left in the
    /// stream (its queue is full), until `None` (caught up). Its record must then say it
    /// has what came before only. Stores that do not route ignore it.
    Spilled {
        /// Client id.
        client: Arc<str>,
        /// The first sequence left in the stream, or `None`.
        from: Option<u64>,
    },
}

/// A session as recovered at start: everything but its queued messages, which stay in the
/// store until the client returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSession {
    /// Its own fields.
    pub meta: SessionMeta,
    /// Subscriptions.
    pub subscriptions: Vec<(TopicFilter, SubEntry)>,
    /// Deliveries in flight (state not `Queued`), in seq order.
    pub inflight: Vec<StoredDelivery>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
    /// How many deliveries are queued, and their payload bytes.
    pub queued: (usize, usize),
    /// The highest seq stored for it (the next one is above).
    pub max_seq: Option<u64>,
}

/// What is known at start of a retained message without reading it: enough for the
/// engine's limits, expiry and ordering. The message is read by [`Store::load_retained`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedMeta {
    /// Its topic (one retained message per topic).
    pub topic: TopicName,
    /// The engine's id of the message.
    pub id: u64,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The length of its payload in bytes.
    pub payload_len: usize,
    /// When it expires.
    pub expires_at: Option<SystemTime>,
    /// When the broker received it.
    pub received_at: SystemTime,
}

impl RetainedMeta {
    /// The metadata of a message.
    pub fn of(m: &StoredMessage) -> RetainedMeta {
        RetainedMeta {
            topic: m.topic.clone(),
            id: m.id,
            qos: m.qos,
            payload_len: m.payload.len(),
            expires_at: m.expires_at,
            received_at: m.received_at,
        }
    }
}

/// Everything recovered at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sessions.
    pub sessions: Vec<RecoveredSession>,
    /// Retained messages, without their payloads, by topic.
    pub retained: Vec<RetainedMeta>,
    /// The highest message id stored (in a delivery or a retained message): the engine's
    /// next ids must be above it.
    pub max_message_id: Option<u64>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory cannot be created, opened or written.
    // `error`, not `source`: the message already carries it, and a source would make error
    // chains (anyhow's `{:#}`) print it twice.
    #[error("data directory {path}: {error}")]
    Io {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The data was written by an incompatible version of this program.
    #[error("data directory {path} holds format version {found}, this program reads {expected}; it is left untouched")]
    Version {
        /// The directory.
        path: std::path::PathBuf,
        /// Its version.
        found: String,
        /// Ours.
        expected: u32,
    },
    /// The data is not readable as ours: corrupt, or not our file.
    #[error("data in {path} is corrupt or not ours: {detail}; it is left untouched")]
    Corrupt {
        /// The directory.
        path: std::path::PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The database failed.
    #[error("storage: {0}")]
    Database(String),
}

/// Durable session storage. See the [module docs](self).
pub trait Store: Send + std::fmt::Debug {
    /// Reads back everything at start.
    fn load(&mut self) -> Result<Recovered, StoreError>;
    /// The queued deliveries of one session, oldest first.
    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError>;
    /// The retained message of a topic, if there is one.
    fn load_retained(&mut self, topic: &str) -> Result<Option<StoredMessage>, StoreError>;
    /// Applies one batch of changes atomically, durable per the policy when it returns.
    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError>;
    /// Where to count commits and syncs (`mqtt_bridge_store_*`); by default nowhere.
    fn set_metrics(&mut self, metrics: std::sync::Arc<crate::Metrics>) {
        let _ = metrics;
    }
    /// Whether this store routes published messages between the nodes of a cluster: if so
    /// the engine hands each message it receives to the store ([`Op::Route`]) instead of
    /// routing it itself, and routes what the cluster gives back (`Broker::route`).
    fn routes(&self) -> bool {
        false
    }
    /// Restores the session `claim` found for `client_id` (cluster mode: see
    /// [`crate::cluster`]), with what the cluster routed up to stream sequence
    /// `routed_upto` queued for it. Stores that do not route have no claims.
    fn install(
        &mut self,
        client_id: &str,
        claim: crate::cluster::Claim,
        routed_upto: u64,
    ) -> Result<crate::cluster::Installed, StoreError> {
        let _ = (client_id, claim, routed_upto);
        Err(StoreError::Database("this store has no claims".into()))
    }
    /// Cluster mode: up to `max` deliveries, in stream order, of the stream's messages from
    /// sequence `from` up to `upto` to the session of `client_id` with `subscriptions`
    /// (shared ones aside), and the sequence to go on from if more may remain.
    fn refill(
        &mut self,
        client_id: &str,
        subscriptions: &[(TopicFilter, SubEntry)],
        from: u64,
        upto: u64,
        max: usize,
    ) -> Result<(Vec<StoredDelivery>, Option<u64>), StoreError> {
        let _ = (client_id, subscriptions, from, upto, max);
        Err(StoreError::Database(
            "this store has no stream to refill from".into(),
        ))
    }
    /// Sessions another node took since the last call (cluster mode): the engine closes
    /// their connections (0x8E) and forgets them.
    fn take_lost(&mut self) -> Vec<Arc<str>> {
        Vec::new()
    }
    /// Called periodically: the `Interval` policy asks for its sync here.
    fn tick(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
