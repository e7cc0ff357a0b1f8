//! Read-only, serializable views of the broker's state, for the bridge's HTTP API and its
//! live event stream: what [`crate::Broker`]'s queries answer and what its event channel
//! carries.
//!
//! A leaf module of plain data: every view is built on the engine's thread and owns its
//! data, so nothing borrowed from the engine leaves it. Times are wall-clock unix
//! milliseconds (`*_ms` fields).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Bytes of a payload shown in [`MessageView::payload_preview`].
pub const PREVIEW_BYTES: usize = 64;

/// A change of a session, sent on the broker's event channel ([`crate::Broker::events`]).
///
/// Serialized with a `type` tag (`"connected"`, `"queue"`, ...). Every event but `ended`
/// carries the session's summary as it is after the change, so a listener keeps a session
/// list without asking for it again. Queue and in-flight counts are coalesced: at most one
/// `queue` event per session per engine batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A session was created (a client id the broker did not know, or after clean start).
    Created {
        /// The client id.
        client_id: String,
        /// The session after the change.
        session: SessionSummary,
    },
    /// A client connected.
    Connected {
        /// The client id.
        client_id: String,
        /// The session after the change.
        session: SessionSummary,
    },
    /// A client's connection ended (the session may go on).
    Disconnected {
        /// The client id.
        client_id: String,
        /// The session after the change.
        session: SessionSummary,
    },
    /// A session ended: expired, clean, discarded, or replaced by a clean start.
    Ended {
        /// The client id.
        client_id: String,
    },
    /// Filters were subscribed (or re-subscribed).
    Subscribed {
        /// The client id.
        client_id: String,
        /// The filters.
        filters: Vec<String>,
        /// The session after the change.
        session: SessionSummary,
    },
    /// Filters were unsubscribed.
    Unsubscribed {
        /// The client id.
        client_id: String,
        /// The filters.
        filters: Vec<String>,
        /// The session after the change.
        session: SessionSummary,
    },
    /// The queue length or in-flight count may have changed in the last batch.
    Queue {
        /// The client id.
        client_id: String,
        /// Messages queued.
        queued: usize,
        /// Messages in flight.
        inflight: usize,
        /// The session after the change.
        session: SessionSummary,
    },
}

impl SessionEvent {
    /// The session summary it carries (every event but `ended` has one).
    pub fn session_mut(&mut self) -> Option<&mut SessionSummary> {
        match self {
            SessionEvent::Created { session, .. }
            | SessionEvent::Connected { session, .. }
            | SessionEvent::Disconnected { session, .. }
            | SessionEvent::Subscribed { session, .. }
            | SessionEvent::Unsubscribed { session, .. }
            | SessionEvent::Queue { session, .. } => Some(session),
            SessionEvent::Ended { .. } => None,
        }
    }
}

/// One line of the session list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The client id.
    pub client_id: String,
    /// 4 (3.1.1) or 5 (5.0). Always known for a session of this engine; `None` only for a
    /// clean session another node of a cluster holds (its record keeps no version).
    pub protocol_version: Option<u8>,
    /// Online now.
    pub connected: bool,
    /// Clean start / clean session of its last connection.
    pub clean_start: bool,
    /// Outlives its connection (Session Expiry Interval > 0, or clean session 0).
    pub persistent: bool,
    /// Messages queued.
    pub queued: usize,
    /// Messages in flight to the client.
    pub inflight: usize,
    /// Number of subscriptions.
    pub subscriptions: usize,
    /// When it connected (online only).
    pub connected_at_ms: Option<u64>,
    /// When it last went offline.
    pub disconnected_at_ms: Option<u64>,
    /// When it ends, while offline (`None` online, or never).
    pub expires_at_ms: Option<u64>,
    /// In cluster mode, the node (bridge) that holds it; `None` (left out of the JSON) on a
    /// single bridge. The engine never sets it: it knows only its own sessions, and the
    /// bridge's API names the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A page of the session list.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPage {
    /// Sessions matching the filter, before paging.
    pub total: usize,
    /// The offset asked for.
    pub offset: usize,
    /// The limit asked for.
    pub limit: usize,
    /// The page, sorted by client id.
    pub sessions: Vec<SessionSummary>,
    /// In cluster mode, the node that answered (its sessions and the other nodes' are
    /// listed); `None` (left out of the JSON) on a single bridge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Which sessions [`Broker::sessions`](crate::Broker::sessions) lists.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// `Some(true)`: online only; `Some(false)`: offline only.
    pub online: Option<bool>,
    /// `Some(true)`: persistent only; `Some(false)`: clean (ends with its connection) only.
    pub persistent: Option<bool>,
    /// Client ids starting with this.
    pub prefix: Option<String>,
    /// Sessions to skip.
    pub offset: usize,
    /// Sessions to return at most.
    pub limit: usize,
}

impl SessionFilter {
    /// Whether `s` is selected by the state, kind and prefix filters (paging aside): the
    /// selection the engine makes of its own sessions, for lists merged outside it.
    pub fn admits(&self, s: &SessionSummary) -> bool {
        self.online.is_none_or(|on| s.connected == on)
            && self.persistent.is_none_or(|p| s.persistent == p)
            && self
                .prefix
                .as_deref()
                .is_none_or(|p| s.client_id.starts_with(p))
    }
}

/// One subscription and its options.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionView {
    /// The topic filter.
    pub filter: String,
    /// The granted QoS.
    pub qos: u8,
    /// No Local (5.0).
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling, 0..=2 (5.0).
    pub retain_handling: u8,
    /// Subscription Identifier (5.0).
    pub subscription_identifier: Option<u32>,
}

/// In-flight count and its maximum.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct InflightCounts {
    /// Messages sent and not yet acknowledged.
    pub count: usize,
    /// The sending window: min(client's Receive Maximum, `max_inflight`); the configured
    /// `max_inflight` while offline.
    pub max: usize,
}

/// Queue length, its maximum and what was dropped.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueCounts {
    /// Messages waiting.
    pub length: usize,
    /// `max_queued_messages`.
    pub max: usize,
    /// Messages dropped over the session's life.
    pub dropped: u64,
}

/// Everything about one session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionDetail {
    /// The client id.
    pub client_id: String,
    /// The user name of its last connection.
    pub username: Option<String>,
    /// 4 (3.1.1) or 5 (5.0).
    pub protocol_version: u8,
    /// Clean start / clean session of its last connection.
    pub clean_start: bool,
    /// Online now.
    pub connected: bool,
    /// When it connected (online only).
    pub connected_at_ms: Option<u64>,
    /// When it last went offline.
    pub disconnected_at_ms: Option<u64>,
    /// Seconds it outlives its connection; `u32::MAX` (4294967295) = never ends.
    pub session_expiry_interval: u32,
    /// When it ends, while offline (`None` online, or never).
    pub expires_at_ms: Option<u64>,
    /// Keep-alive in force, seconds (online only).
    pub keep_alive: Option<u16>,
    /// The peer address (online only).
    pub peer: Option<String>,
    /// Subscriptions, sorted by filter.
    pub subscriptions: Vec<SubscriptionView>,
    /// In flight to the client.
    pub inflight: InflightCounts,
    /// Waiting to be sent.
    pub queue: QueueCounts,
    /// Incoming QoS 2 messages awaiting the client's PUBREL.
    pub awaiting_pubrel: usize,
    /// Messages received from the client.
    pub msgs_in: u64,
    /// Messages sent to the client.
    pub msgs_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// In cluster mode, the node that holds it (this one: the engine's own sessions);
    /// `None` (left out of the JSON) on a single bridge, as in [`SessionSummary::node`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A message, queued, in flight or retained.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// Its topic.
    pub topic: String,
    /// The QoS it is delivered at (retained: published at).
    pub qos: u8,
    /// The RETAIN flag.
    pub retain: bool,
    /// Payload bytes.
    pub size: usize,
    /// The first [`PREVIEW_BYTES`] bytes of the payload as (lossy) UTF-8 text.
    pub payload_preview: String,
    /// When it was queued (retained: received).
    pub enqueued_at_ms: u64,
    /// The publisher's client id.
    pub from: Option<String>,
    /// In flight: its packet id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_id: Option<u16>,
    /// In flight: `"awaiting_ack"` (PUBACK / PUBREC due) or `"awaiting_comp"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
}

/// Totals of the broker.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatsView {
    /// Open MQTT connections.
    pub connections: usize,
    /// Sessions with a connection.
    pub sessions_online: usize,
    /// Sessions kept without one.
    pub sessions_offline: usize,
    /// Messages queued, over all sessions.
    pub queued: usize,
    /// Messages in flight, over all sessions.
    pub inflight: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages received since start.
    pub msgs_in: u64,
    /// Messages sent since start.
    pub msgs_out: u64,
    /// Messages dropped since start.
    pub dropped: u64,
}

/// Unix milliseconds of a wall-clock time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
