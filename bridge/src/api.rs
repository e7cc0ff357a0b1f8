//! The session-state JSON API under `/api/v1/` (documented in the README, "HTTP API").
//!
//! Every handler asks the broker through its typed queries ([`Broker::sessions`],
//! [`Broker::queue`], [`Broker::kick`], ...); the views of [`broker::view`] are built on the
//! engine's thread and only serialized here. Errors are
//! JSON, `{"error": "..."}`: 400 for a bad query value or an unknown query parameter, 404 for
//! an unknown client id, 503 once the broker is stopping. Query strings are parsed by hand
//! (from axum's map), so a bad value gets our JSON answer rather than axum's plain text.
//!
//! Every route here passes [`crate::guard::api_access`] first: the `[api]` tokens, or
//! without them loopback clients and same-origin changes only (401 / 403, also JSON).
//!
//! # Cluster mode
//! The engine knows only the sessions this node holds; the cluster's
//! [`cluster::Directory`] has every session's record. The session list merges the two
//! (this node's sessions from the engine, every other one summarized from its record) and
//! names the node of each (`node`); the detail of a session another node holds is what its
//! record says ([`RecordDetail`]). What only the holder can do or read (its queued and
//! in-flight messages, kick, discard) answers 409 here, naming the holder. The event stream
//! stays this node's: its sessions' changes, each with `node`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use broker::view::{
    self, MessageView, SessionFilter, SessionPage, SessionSummary, StatsView, SubscriptionView,
};
use broker::{Broker, SessionEvent};
use cluster::directory::Listed;
use cluster::record::SessionRecord;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::guard::Guard;
use crate::state::{AppState, ClusterSessions};

/// Page size when the query gives none.
const DEFAULT_LIMIT: usize = 100;
/// The largest page a query may ask for.
const MAX_LIMIT: usize = 1000;
/// SSE keep-alive comments, so proxies and browsers keep an idle stream open.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The shortest interval the message rates are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The API's routes, with their full paths (merged into the main router), behind `guard`'s
/// access rules.
pub(crate) fn routes(guard: Arc<Guard>) -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions", get(list_sessions))
        .route(
            "/api/v1/sessions/{client_id}",
            get(session_detail).delete(discard),
        )
        .route("/api/v1/sessions/{client_id}/queue", get(queue))
        .route("/api/v1/sessions/{client_id}/inflight", get(inflight))
        .route("/api/v1/sessions/{client_id}/kick", post(kick))
        .route("/api/v1/retained", get(retained))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/events", get(events))
        .route_layer(from_fn_with_state(guard, crate::guard::api_access))
        .layer(Extension(RateTracker::shared()))
}

/// An API error: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn no_session(client_id: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no session for client id `{client_id}`"),
        }
    }

    /// A session this node's engine does not have: 409 naming the node its record names
    /// when the cluster has it (only that node can answer), 404 otherwise.
    fn not_here(state: &AppState, client_id: &str) -> ApiError {
        let record = state
            .cluster
            .as_ref()
            .and_then(|c| c.directory.get(client_id));
        match record {
            Some(record) => ApiError {
                status: StatusCode::CONFLICT,
                message: format!(
                    "the session of `{client_id}` is not held by this node: its record names \
                     node `{}`, ask that node",
                    record.node
                ),
            },
            None => ApiError::no_session(client_id),
        }
    }
}

impl From<broker::Stopped> for ApiError {
    fn from(stopped: broker::Stopped) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: stopped.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The query string as a map, with only `allowed` keys.
fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> ApiResult<HashMap<String, String>> {
    let Query(map) = q.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter `{unknown}` (allowed: {})",
            allowed.join(", ")
        )));
    }
    Ok(map)
}

/// `limit`: 1..=1000, default 100.
fn limit(map: &HashMap<String, String>) -> ApiResult<usize> {
    let Some(raw) = map.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "bad limit `{raw}`: an integer from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// `offset`: a non-negative integer, default 0.
fn offset(map: &HashMap<String, String>) -> ApiResult<usize> {
    let Some(raw) = map.get("offset") else {
        return Ok(0);
    };
    raw.parse::<usize>()
        .map_err(|_| ApiError::bad_request(format!("bad offset `{raw}`: a non-negative integer")))
}

/// The client id of the path.
fn client_id(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(format!("bad client id: {e}")))
}

/// `GET /api/v1/sessions?state=&kind=&prefix=&offset=&limit=`.
async fn list_sessions(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<view::SessionPage>> {
    let map = query(q, &["state", "kind", "prefix", "offset", "limit"])?;
    let online = match map.get("state").map(String::as_str) {
        None => None,
        Some("online") => Some(true),
        Some("offline") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "bad state `{other}`: `online` or `offline`"
            )))
        }
    };
    let persistent = match map.get("kind").map(String::as_str) {
        None => None,
        Some("persistent") => Some(true),
        Some("clean") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "bad kind `{other}`: `clean` or `persistent`"
            )))
        }
    };
    let filter = SessionFilter {
        online,
        persistent,
        prefix: map.get("prefix").filter(|p| !p.is_empty()).cloned(),
        offset: offset(&map)?,
        limit: limit(&map)?,
    };
    let page = match &state.cluster {
        None => state.broker.sessions(filter).await?,
        Some(cluster) => {
            // All of this node's sessions with the prefix: the other filters and the paging
            // apply to the merged list.
            let own = state
                .broker
                .sessions(SessionFilter {
                    prefix: filter.prefix.clone(),
                    limit: usize::MAX,
                    ..SessionFilter::default()
                })
                .await?;
            cluster_page(cluster, own.sessions, cluster.directory.list(), &filter)
        }
    };
    Ok(Json(page))
}

/// A session's detail: from this node's engine, or (cluster mode) from the record of a
/// session another node holds.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Detail {
    Held(view::SessionDetail),
    Recorded(RecordDetail),
}

/// `GET /api/v1/sessions/{client_id}`.
async fn session_detail(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Detail>> {
    let id = client_id(p)?;
    if let Some(mut detail) = state.broker.session(&id).await? {
        detail.node = state.cluster.as_ref().map(|c| c.node.to_string());
        return Ok(Json(Detail::Held(detail)));
    }
    let record = state.cluster.as_ref().and_then(|c| c.directory.get(&id));
    match record {
        Some(record) => Ok(Json(Detail::Recorded(RecordDetail::of(id, record)))),
        None => Err(ApiError::no_session(&id)),
    }
}

#[derive(Debug, Serialize)]
struct Messages {
    messages: Vec<MessageView>,
}

/// `GET /api/v1/sessions/{client_id}/queue?limit=`.
async fn queue(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Messages>> {
    let id = client_id(p)?;
    let limit = limit(&query(q, &["limit"])?)?;
    let messages = state
        .broker
        .queue(&id, limit)
        .await?
        .ok_or_else(|| ApiError::not_here(&state, &id))?;
    Ok(Json(Messages { messages }))
}

/// `GET /api/v1/sessions/{client_id}/inflight?limit=`.
async fn inflight(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Messages>> {
    let id = client_id(p)?;
    let limit = limit(&query(q, &["limit"])?)?;
    let messages = state
        .broker
        .inflight(&id, limit)
        .await?
        .ok_or_else(|| ApiError::not_here(&state, &id))?;
    Ok(Json(Messages { messages }))
}

/// `DELETE /api/v1/sessions/{client_id}`: the session is discarded (see
/// [`Broker::discard`]).
async fn discard(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let id = client_id(p)?;
    let found = state.broker.discard(&id).await?;
    found_here(found, &state, &id)
}

/// `POST /api/v1/sessions/{client_id}/kick`: the client is disconnected, the session kept
/// (see [`Broker::kick`]).
async fn kick(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let id = client_id(p)?;
    let found = state.broker.kick(&id).await?;
    found_here(found, &state, &id)
}

/// 204 if this node had the session; else 409 if another node holds it, 404 if nobody.
fn found_here(found: bool, state: &AppState, id: &str) -> ApiResult<StatusCode> {
    match found {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_here(state, id)),
    }
}

#[derive(Debug, Serialize)]
struct Retained {
    total: usize,
    messages: Vec<MessageView>,
}

/// `GET /api/v1/retained?prefix=&limit=`.
async fn retained(
    State(state): State<AppState>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Retained>> {
    let map = query(q, &["prefix", "limit"])?;
    let limit = limit(&map)?;
    let prefix = map.get("prefix").cloned().unwrap_or_default();
    let (total, messages) = state.broker.retained(&prefix, limit).await?;
    Ok(Json(Retained { total, messages }))
}

/// The rate tracker shared by the `GET /stats` requests.
type Rates = Arc<Mutex<RateTracker>>;

/// Message rates, measured between `GET /stats` calls at least [`RATE_WINDOW`] apart.
#[derive(Debug, Default)]
struct RateTracker {
    /// The last sample: when, messages in, messages out.
    last: Option<(Instant, u64, u64)>,
    /// The rates measured at that sample (in, out), per second.
    rates: (f64, f64),
}

impl RateTracker {
    /// A tracker to share between requests.
    fn shared() -> Rates {
        Arc::default()
    }

    /// Takes a sample of the totals; returns the rates (in, out) per second.
    fn sample(&mut self, now: Instant, msgs_in: u64, msgs_out: u64) -> (f64, f64) {
        match self.last {
            Some((at, _, _)) if now.duration_since(at) < RATE_WINDOW => {}
            Some((at, i, o)) => {
                let secs = now.duration_since(at).as_secs_f64();
                self.rates = (
                    msgs_in.saturating_sub(i) as f64 / secs,
                    msgs_out.saturating_sub(o) as f64 / secs,
                );
                self.last = Some((now, msgs_in, msgs_out));
            }
            None => self.last = Some((now, msgs_in, msgs_out)),
        }
        self.rates
    }
}

#[derive(Debug, Serialize)]
struct Stats {
    #[serde(flatten)]
    totals: StatsView,
    messages_in_per_sec: f64,
    messages_out_per_sec: f64,
}

/// `GET /api/v1/stats`.
async fn stats(
    State(state): State<AppState>,
    Extension(rates): Extension<Rates>,
) -> ApiResult<Json<Stats>> {
    let totals = state.broker.stats().await?;
    let (in_rate, out_rate) = match rates.lock() {
        Ok(mut t) => t.sample(Instant::now(), totals.msgs_in, totals.msgs_out),
        Err(poisoned) => {
            poisoned
                .into_inner()
                .sample(Instant::now(), totals.msgs_in, totals.msgs_out)
        }
    };
    Ok(Json(Stats {
        totals,
        messages_in_per_sec: in_rate,
        messages_out_per_sec: out_rate,
    }))
}

/// The SSE event name of a session event (its `type`).
fn event_name(e: &SessionEvent) -> &'static str {
    match e {
        SessionEvent::Created { .. } => "created",
        SessionEvent::Connected { .. } => "connected",
        SessionEvent::Disconnected { .. } => "disconnected",
        SessionEvent::Ended { .. } => "ended",
        SessionEvent::Subscribed { .. } => "subscribed",
        SessionEvent::Unsubscribed { .. } => "unsubscribed",
        SessionEvent::Queue { .. } => "queue",
    }
}

/// What a listener of the event stream is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    /// A session change.
    Change(SessionEvent),
    /// The listener fell behind and `skipped` changes are lost: it must reload the state.
    Resync {
        /// How many.
        skipped: u64,
    },
}

impl Notice {
    fn into_event(self) -> Event {
        match self {
            Notice::Change(e) => Event::default()
                .event(event_name(&e))
                .json_data(&e)
                .unwrap_or_else(|_| Event::default().comment("unserializable event")),
            Notice::Resync { skipped } => Event::default()
                .event("resync")
                .data(format!("{{\"type\":\"resync\",\"skipped\":{skipped}}}")),
        }
    }
}

/// The notices of an event receiver: a lag becomes one `Resync` and the stream goes on;
/// it ends when the channel closes.
fn notices(rx: broadcast::Receiver<SessionEvent>) -> impl Stream<Item = Notice> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let notice = match rx.recv().await {
            Ok(e) => Notice::Change(e),
            Err(RecvError::Lagged(skipped)) => Notice::Resync { skipped },
            Err(RecvError::Closed) => return None,
        };
        Some((notice, rx))
    })
}

/// `GET /api/v1/events`: Server-Sent Events, one per session change, named by its type,
/// with the event as JSON data. A listener that falls behind gets `resync` (the skipped
/// events are lost: reload the state). The stream ends when the broker stops.
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // In cluster mode each session is this node's, named as in the session list.
    let node = state.cluster.as_ref().map(|c| c.node.to_string());
    let stream = notices(state.broker.events()).map(move |mut n| {
        if let (Some(node), Notice::Change(e)) = (&node, &mut n) {
            if let Some(session) = e.session_mut() {
                session.node = Some(node.clone());
            }
        }
        Ok(n.into_event())
    });
    let broker: Broker = state.broker.clone();
    let stream = stream.take_until(async move { broker.stopped().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
}

// ---------------------------------------------------------------------------------------
// Cluster mode: the sessions other nodes hold, as their records say.

/// One page of the whole cluster's sessions: `own`, this node's (from its engine, sorted by
/// client id, `filter`'s prefix applied), and every session of `listed` (the directory) that
/// this node does not hold, summarized from its record; `filter` selects from the merged
/// list and pages it. A session is listed once: a record may lag behind the engine (a
/// session this node just took, or just let go), and the engine knows its own best.
fn cluster_page(
    cluster: &ClusterSessions,
    mut own: Vec<SessionSummary>,
    listed: Vec<Listed>,
    filter: &SessionFilter,
) -> SessionPage {
    for s in &mut own {
        s.node = Some(cluster.node.to_string());
    }
    let others: Vec<SessionSummary> = listed
        .into_iter()
        .filter(|l| {
            filter
                .prefix
                .as_deref()
                .is_none_or(|p| l.client_id.starts_with(p))
        })
        .filter(|l| {
            own.binary_search_by(|s| s.client_id.as_str().cmp(&l.client_id))
                .is_err()
        })
        .map(|l| record_summary(l.client_id, &l.record))
        .collect();
    let mut all = own;
    all.extend(others);
    all.retain(|s| filter.admits(s));
    all.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
    SessionPage {
        total: all.len(),
        offset: filter.offset,
        limit: filter.limit,
        sessions: all
            .into_iter()
            .skip(filter.offset)
            .take(filter.limit)
            .collect(),
        node: Some(cluster.node.to_string()),
    }
}

/// Whether a record's session is online. A clean session's record (no `meta`) exists only
/// while it is connected. A persistent one's `expires_at` is set when it goes offline and
/// cleared when it connects (`disconnected_at` stays: it is when it *last* went offline),
/// except for a session that never ends (`expiry_interval` u32::MAX, only with an explicit
/// `max_session_expiry` of "never"), which has none either way: it counts as online while
/// its record holds an open connection's will, or while it has never gone offline.
fn record_connected(r: &SessionRecord) -> bool {
    match &r.meta {
        None => true,
        Some(m) if m.expiry_interval == u32::MAX => {
            m.connected_will.is_some() || m.disconnected_at.is_none()
        }
        Some(m) => m.expires_at.is_none(),
    }
}

/// Messages in flight to a record's session (its other deliveries are queued).
fn record_inflight(r: &SessionRecord) -> usize {
    r.deliveries.iter().filter(|d| d.state != 0).count()
}

/// The summary of a session another node holds, from its record. Its record does not keep
/// its protocol version when it is clean (`null`), whether its last connection asked for a
/// clean start (`clean_start` is true only for a clean session), nor when it connected.
fn record_summary(client_id: String, r: &SessionRecord) -> SessionSummary {
    let meta = r.meta.as_ref();
    let connected = record_connected(r);
    let inflight = record_inflight(r);
    SessionSummary {
        client_id,
        protocol_version: meta.map(|m| m.version),
        connected,
        clean_start: meta.is_none(),
        // The record keeps `meta` only for a session that outlives its connection.
        persistent: meta.is_some_and(|m| m.expiry_interval > 0),
        queued: r.deliveries.len() - inflight,
        inflight,
        subscriptions: r.subs.len(),
        connected_at_ms: None,
        disconnected_at_ms: meta.and_then(|m| m.disconnected_at),
        expires_at_ms: meta.and_then(|m| m.expires_at).filter(|_| !connected),
        node: Some(r.node.clone()),
    }
}

/// The detail of a session another node holds, as its record says: the shape of
/// [`view::SessionDetail`] with `node`, and `null` for what only the holder knows (when it
/// connected, its keep-alive and peer, its limits, its message and byte counts; and, for a
/// clean session, its protocol version). Its messages are read on the holder.
#[derive(Debug, Serialize)]
struct RecordDetail {
    client_id: String,
    username: Option<String>,
    /// `None` for a clean session (its record keeps no version).
    protocol_version: Option<u8>,
    /// True only for a clean session: a persistent one's record does not keep the flag.
    clean_start: bool,
    connected: bool,
    /// Always `None`: not in the record.
    connected_at_ms: Option<u64>,
    disconnected_at_ms: Option<u64>,
    session_expiry_interval: u32,
    expires_at_ms: Option<u64>,
    /// Always `None`: not in the record.
    keep_alive: Option<u16>,
    /// Always `None`: not in the record.
    peer: Option<String>,
    subscriptions: Vec<SubscriptionView>,
    inflight: RecordInflight,
    queue: RecordQueue,
    awaiting_pubrel: usize,
    /// The counters are the holder's, kept in its memory only: always `None`.
    msgs_in: Option<u64>,
    msgs_out: Option<u64>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    /// The node that holds it.
    node: String,
}

/// [`view::InflightCounts`] of a record: the holder's window is not in it.
#[derive(Debug, Serialize)]
struct RecordInflight {
    count: usize,
    max: Option<usize>,
}

/// [`view::QueueCounts`] of a record: the holder's limit is not in it.
#[derive(Debug, Serialize)]
struct RecordQueue {
    length: usize,
    max: Option<usize>,
    dropped: u64,
}

impl RecordDetail {
    fn of(client_id: String, r: SessionRecord) -> RecordDetail {
        let meta = r.meta.as_ref();
        let connected = record_connected(&r);
        let inflight = record_inflight(&r);
        let mut subscriptions: Vec<SubscriptionView> = r
            .subs
            .iter()
            .map(|s| SubscriptionView {
                filter: s.filter.clone(),
                qos: s.qos,
                no_local: s.no_local,
                retain_as_published: s.retain_as_published,
                retain_handling: s.retain_handling,
                subscription_identifier: s.id,
            })
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.filter.cmp(&b.filter));
        RecordDetail {
            client_id,
            username: meta.and_then(|m| m.username.clone()),
            protocol_version: meta.map(|m| m.version),
            clean_start: meta.is_none(),
            connected,
            connected_at_ms: None,
            disconnected_at_ms: meta.and_then(|m| m.disconnected_at),
            session_expiry_interval: meta.map_or(0, |m| m.expiry_interval),
            expires_at_ms: meta.and_then(|m| m.expires_at).filter(|_| !connected),
            keep_alive: None,
            peer: None,
            subscriptions,
            inflight: RecordInflight {
                count: inflight,
                max: None,
            },
            queue: RecordQueue {
                length: r.deliveries.len() - inflight,
                max: None,
                dropped: meta.map_or(0, |m| m.dropped),
            },
            awaiting_pubrel: r.inbound_qos2.len(),
            msgs_in: None,
            msgs_out: None,
            bytes_in: None,
            bytes_out: None,
            node: r.node,
        }
    }
}

#[cfg(test)]
mod tests;
