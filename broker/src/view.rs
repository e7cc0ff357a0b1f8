//! Read-only, serializable views of the engine's state, for the bridge's HTTP API and its
//! live event stream.
//!
//! Every view is built on the engine's thread (inside [`crate::Broker::inspect`] or
//! [`crate::Broker::admin`]) and owns its data, so nothing borrowed from the engine leaves
//! it. Times are wall-clock unix milliseconds (`*_ms` fields), converted from the engine's
//! monotonic clock by [`Engine::wall_time`].

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use protocol::{ProtocolVersion, TopicName};
use serde::Serialize;

use crate::engine::Engine;
use crate::message::Message;
use crate::session::{Session, Stage};

/// Bytes of a payload shown in [`MessageView::payload_preview`].
pub const PREVIEW_BYTES: usize = 64;

/// A change of a session, sent on the engine's event channel ([`Engine::subscribe_events`]).
///
/// Serialized with a `type` tag (`"connected"`, `"queue"`, ...). Queue and in-flight counts
/// are coalesced: at most one `queue` event per session per engine batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A session was created (a client id the broker did not know, or after clean start).
    Created {
        /// The client id.
        client_id: String,
    },
    /// A client connected.
    Connected {
        /// The client id.
        client_id: String,
    },
    /// A client's connection ended (the session may go on).
    Disconnected {
        /// The client id.
        client_id: String,
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
    },
    /// Filters were unsubscribed.
    Unsubscribed {
        /// The client id.
        client_id: String,
        /// The filters.
        filters: Vec<String>,
    },
    /// The queue length or in-flight count may have changed in the last batch.
    Queue {
        /// The client id.
        client_id: String,
        /// Messages queued.
        queued: usize,
        /// Messages in flight.
        inflight: usize,
    },
}

/// One line of the session list.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// The client id.
    pub client_id: String,
    /// 4 (3.1.1) or 5 (5.0).
    pub protocol_version: u8,
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
}

/// Which sessions [`session_page`] lists.
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

fn ms(engine: &Engine, at: Instant) -> u64 {
    unix_ms(engine.wall_time(at))
}

fn version_number(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    }
}

/// The summary of one session.
pub fn session_summary(engine: &Engine, s: &Session) -> SessionSummary {
    SessionSummary {
        client_id: s.client_id.to_string(),
        protocol_version: version_number(s.version),
        connected: s.online.is_some(),
        clean_start: s.clean_start,
        persistent: s.persistent(),
        queued: s.queued_len(),
        inflight: s.inflight.len(),
        subscriptions: s.subscriptions.len(),
        connected_at_ms: s.online.as_ref().map(|o| ms(engine, o.connected_at)),
        disconnected_at_ms: s.disconnected_at.map(|t| ms(engine, t)),
        expires_at_ms: s.expires_at.map(|t| ms(engine, t)),
    }
}

/// The sessions matching `filter`, sorted by client id, one page of them.
pub fn session_page(engine: &Engine, filter: &SessionFilter) -> SessionPage {
    let mut matching: Vec<&Session> = engine
        .sessions()
        .filter(|s| filter.online.is_none_or(|on| s.online.is_some() == on))
        .filter(|s| filter.persistent.is_none_or(|p| s.persistent() == p))
        .filter(|s| {
            filter
                .prefix
                .as_deref()
                .is_none_or(|p| s.client_id.starts_with(p))
        })
        .collect();
    matching.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
    SessionPage {
        total: matching.len(),
        offset: filter.offset,
        limit: filter.limit,
        sessions: matching
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit)
            .map(|s| session_summary(engine, s))
            .collect(),
    }
}

/// Everything about the session of `client_id`, if there is one.
pub fn session_detail(engine: &Engine, client_id: &str) -> Option<SessionDetail> {
    let s = engine.session(client_id)?;
    let config = engine.config();
    let mut subscriptions: Vec<SubscriptionView> = s
        .subscriptions
        .iter()
        .map(|(f, e)| SubscriptionView {
            filter: f.as_str().to_owned(),
            qos: e.options.qos as u8,
            no_local: e.options.no_local,
            retain_as_published: e.options.retain_as_published,
            retain_handling: e.options.retain_handling as u8,
            subscription_identifier: e.id,
        })
        .collect();
    subscriptions.sort_unstable_by(|a, b| a.filter.cmp(&b.filter));
    let online = s.online.as_ref();
    Some(SessionDetail {
        client_id: s.client_id.to_string(),
        username: s.username.clone(),
        protocol_version: version_number(s.version),
        clean_start: s.clean_start,
        connected: online.is_some(),
        connected_at_ms: online.map(|o| ms(engine, o.connected_at)),
        disconnected_at_ms: s.disconnected_at.map(|t| ms(engine, t)),
        session_expiry_interval: s.expiry_interval,
        expires_at_ms: s.expires_at.map(|t| ms(engine, t)),
        keep_alive: online.map(|o| o.keep_alive),
        peer: online.and_then(|o| o.peer).map(|p| p.to_string()),
        subscriptions,
        inflight: InflightCounts {
            count: s.inflight.len(),
            max: online.map_or(usize::from(config.max_inflight), |o| o.window),
        },
        queue: QueueCounts {
            length: s.queued_len(),
            max: config.max_queued_messages,
            dropped: s.stats.dropped,
        },
        awaiting_pubrel: s.inbound_qos2.len(),
        msgs_in: s.stats.msgs_in,
        msgs_out: s.stats.msgs_out,
        bytes_in: s.stats.bytes_in,
        bytes_out: s.stats.bytes_out,
    })
}

/// The view of one message, delivered at `qos` with `retain`, queued at `at` (wall clock).
pub fn message_view(m: &Message, qos: u8, retain: bool, at: SystemTime) -> MessageView {
    let end = m.payload.len().min(PREVIEW_BYTES);
    MessageView {
        topic: m.topic.as_str().to_owned(),
        qos,
        retain,
        size: m.payload.len(),
        payload_preview: String::from_utf8_lossy(&m.payload[..end]).into_owned(),
        enqueued_at_ms: unix_ms(at),
        from: m.publisher.as_deref().map(str::to_owned),
        packet_id: None,
        stage: None,
    }
}

/// The first `limit` queued messages of a session, oldest first; `None` if there is no such
/// session. An offline session's messages are read from the store (hence `&mut`).
pub fn queue_view(engine: &mut Engine, client_id: &str, limit: usize) -> Option<Vec<MessageView>> {
    let s = engine.session(client_id)?;
    if s.online.is_none() && !s.stored_queue.is_empty() {
        return Some(engine.stored_queue_view(client_id, limit));
    }
    Some(
        s.queue
            .iter()
            .take(limit)
            .map(|d| message_view(&d.msg, d.qos as u8, d.retain, engine.wall_time(d.queued_at)))
            .collect(),
    )
}

/// The first `limit` messages in flight to a session, in send order; `None` if there is no
/// such session.
pub fn inflight_view(engine: &Engine, client_id: &str, limit: usize) -> Option<Vec<MessageView>> {
    let s = engine.session(client_id)?;
    let mut inflight: Vec<_> = s.inflight.iter().collect();
    inflight.sort_unstable_by_key(|(_, f)| f.seq);
    Some(
        inflight
            .into_iter()
            .take(limit)
            .map(|(&id, f)| {
                let d = &f.delivery;
                let mut v =
                    message_view(&d.msg, d.qos as u8, d.retain, engine.wall_time(d.queued_at));
                v.packet_id = Some(id);
                v.stage = Some(match f.stage {
                    Stage::AwaitingAck => "awaiting_ack",
                    Stage::AwaitingComp => "awaiting_comp",
                });
                v
            })
            .collect(),
    )
}

/// Retained messages whose topic starts with `prefix`, sorted by topic, at most `limit`;
/// and how many matched. The page's payloads are read from the store (hence `&mut`):
/// memory holds only what matching and bounding need.
pub fn retained_view(engine: &mut Engine, prefix: &str, limit: usize) -> (usize, Vec<MessageView>) {
    let mut matching: Vec<TopicName> = engine
        .retained()
        .filter(|(topic, _)| topic.as_str().starts_with(prefix))
        .map(|(topic, _)| topic.clone())
        .collect();
    matching.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    let total = matching.len();
    let page = matching
        .into_iter()
        .take(limit)
        .filter_map(|topic| {
            let m = engine.load_retained(topic.as_str())?;
            Some(message_view(
                &m,
                m.qos as u8,
                true,
                engine.wall_time(m.received_at),
            ))
        })
        .collect();
    (total, page)
}

/// The broker's totals.
pub fn stats_view(engine: &Engine) -> StatsView {
    let (mut online, mut offline, mut queued, mut inflight) = (0, 0, 0, 0);
    for s in engine.sessions() {
        if s.online.is_some() {
            online += 1;
        } else {
            offline += 1;
        }
        queued += s.queued_len();
        inflight += s.inflight.len();
    }
    let totals = engine.stats();
    StatsView {
        connections: online,
        sessions_online: online,
        sessions_offline: offline,
        queued,
        inflight,
        retained: engine.retained().count(),
        msgs_in: totals.msgs_in,
        msgs_out: totals.msgs_out,
        dropped: totals.dropped,
    }
}
