//! Views of the engine's state for the HTTP API, built on the engine's thread, and the
//! answers to [`Request`]s (the broker's typed queries and administrative actions).

use std::time::{Instant, SystemTime};

use protocol::{ProtocolVersion, TopicName};

use super::Engine;
use crate::command::Request;
use crate::message::Message;
use crate::session::{Session, Stage};
use crate::view::{
    unix_ms, InflightCounts, MessageView, QueueCounts, SessionDetail, SessionFilter, SessionPage,
    SessionSummary, StatsView, SubscriptionView, PREVIEW_BYTES,
};

impl Engine {
    /// Answers one request from outside the connection path. A reply nobody waits for any
    /// more (the HTTP request went away) is dropped.
    pub(crate) fn answer(&mut self, request: Request, now: Instant) {
        match request {
            Request::Sessions { filter, reply } => {
                let _ = reply.send(session_page(self, &filter));
            }
            Request::Session { client_id, reply } => {
                let _ = reply.send(session_detail(self, &client_id));
            }
            Request::Queue {
                client_id,
                limit,
                reply,
            } => {
                let _ = reply.send(queue_view(self, &client_id, limit));
            }
            Request::Inflight {
                client_id,
                limit,
                reply,
            } => {
                let _ = reply.send(inflight_view(self, &client_id, limit));
            }
            Request::Retained {
                prefix,
                limit,
                reply,
            } => {
                let _ = reply.send(retained_view(self, &prefix, limit));
            }
            Request::Stats { reply } => {
                let _ = reply.send(stats_view(self));
            }
            Request::Release { client_id, reply } => {
                if self.release_session(&client_id, now) {
                    // Answered once the session's last record is written (see `flush`).
                    self.release_done.push(reply);
                } else {
                    let _ = reply.send(false);
                }
            }
            Request::Adopt {
                client_id,
                claim,
                reply,
            } => {
                let _ = reply.send(self.adopt(&client_id, claim, now));
            }
            Request::DisconnectAll { reason, reply } => {
                let _ = reply.send(self.disconnect_all(reason, now));
            }
            Request::Kick { client_id, reply } => {
                let _ = reply.send(self.kick(&client_id, now));
            }
            Request::Discard { client_id, reply } => {
                let _ = reply.send(self.discard(&client_id, now));
            }
        }
    }
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
pub(crate) fn session_summary(engine: &Engine, s: &Session) -> SessionSummary {
    SessionSummary {
        client_id: s.client_id.to_string(),
        protocol_version: Some(version_number(s.version)),
        connected: s.online.is_some(),
        clean_start: s.clean_start,
        persistent: s.persistent(),
        queued: s.queued_len(),
        inflight: s.inflight.len(),
        subscriptions: s.subscriptions.len(),
        connected_at_ms: s.online.as_ref().map(|o| ms(engine, o.connected_at)),
        disconnected_at_ms: s.disconnected_at.map(|t| ms(engine, t)),
        expires_at_ms: s.expires_at.map(|t| ms(engine, t)),
        node: None,
    }
}

/// The sessions matching `filter`, sorted by client id, one page of them.
pub(super) fn session_page(engine: &Engine, filter: &SessionFilter) -> SessionPage {
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
        node: None,
    }
}

/// Everything about the session of `client_id`, if there is one.
pub(super) fn session_detail(engine: &Engine, client_id: &str) -> Option<SessionDetail> {
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
        username: s.identity.username.as_deref().map(str::to_owned),
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
        node: None,
    })
}

/// The view of one message, delivered at `qos` with `retain`, queued at `at` (wall clock).
pub(super) fn message_view(m: &Message, qos: u8, retain: bool, at: SystemTime) -> MessageView {
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
pub(super) fn queue_view(
    engine: &mut Engine,
    client_id: &str,
    limit: usize,
) -> Option<Vec<MessageView>> {
    let s = engine.session(client_id)?;
    if s.online.is_none() && !s.stored_queue.is_empty() {
        return Some(stored_queue_view(engine, client_id, limit));
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
pub(super) fn inflight_view(
    engine: &Engine,
    client_id: &str,
    limit: usize,
) -> Option<Vec<MessageView>> {
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
pub(super) fn retained_view(
    engine: &mut Engine,
    prefix: &str,
    limit: usize,
) -> (usize, Vec<MessageView>) {
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
pub(super) fn stats_view(engine: &Engine) -> StatsView {
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

/// The first `limit` messages queued for an offline session, read from the store (empty if
/// the store cannot be read).
fn stored_queue_view(engine: &mut Engine, client_id: &str, limit: usize) -> Vec<MessageView> {
    match engine.load_queue(client_id) {
        Ok(stored) => stored
            .into_iter()
            .take(limit)
            .map(|d| {
                let at = d.msg.received_at;
                let msg = engine.message_from_store(std::sync::Arc::unwrap_or_clone(d.msg));
                message_view(&msg, d.qos as u8, d.retain, at)
            })
            .collect(),
        Err(e) => {
            tracing::error!(client_id, error = %e, "cannot read the queued messages");
            Vec::new()
        }
    }
}
