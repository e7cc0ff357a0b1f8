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
use broker::view::{self, MessageView, SessionFilter, StatsView};
use broker::{Broker, SessionEvent};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::guard::Guard;
use crate::state::AppState;

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
    let page = state.broker.sessions(filter).await?;
    Ok(Json(page))
}

/// `GET /api/v1/sessions/{client_id}`.
async fn session_detail(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<view::SessionDetail>> {
    let id = client_id(p)?;
    let detail = state.broker.session(&id).await?;
    detail.map(Json).ok_or_else(|| ApiError::no_session(&id))
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
        .ok_or_else(|| ApiError::no_session(&id))?;
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
        .ok_or_else(|| ApiError::no_session(&id))?;
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
    found_or_404(found, &id)
}

/// `POST /api/v1/sessions/{client_id}/kick`: the client is disconnected, the session kept
/// (see [`Broker::kick`]).
async fn kick(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let id = client_id(p)?;
    let found = state.broker.kick(&id).await?;
    found_or_404(found, &id)
}

/// 204 if the session existed, 404 if not.
fn found_or_404(found: bool, id: &str) -> ApiResult<StatusCode> {
    match found {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::no_session(id)),
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
    let stream = notices(state.broker.events()).map(|n| Ok(n.into_event()));
    let broker: Broker = state.broker.clone();
    let stream = stream.take_until(async move { broker.stopped().await });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn connected(id: &str) -> SessionEvent {
        SessionEvent::Connected {
            client_id: id.to_owned(),
            session: view::SessionSummary {
                client_id: id.to_owned(),
                protocol_version: 5,
                connected: true,
                clean_start: true,
                persistent: false,
                queued: 0,
                inflight: 0,
                subscriptions: 0,
                connected_at_ms: Some(1),
                disconnected_at_ms: None,
                expires_at_ms: None,
            },
        }
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_is_told_to_resync_and_then_gets_the_newest_events() {
        let (tx, rx) = broadcast::channel(2);
        for id in ["a", "b", "c", "d", "e"] {
            tx.send(connected(id)).unwrap();
        }
        drop(tx);
        let got: Vec<Notice> = notices(rx).collect().await;
        assert_eq!(
            got,
            [
                Notice::Resync { skipped: 3 },
                Notice::Change(connected("d")),
                Notice::Change(connected("e")),
            ]
        );
    }

    #[test]
    fn message_rates_are_measured_over_at_least_a_second() {
        let mut t = RateTracker::default();
        let start = Instant::now();
        assert_eq!(t.sample(start, 0, 0), (0.0, 0.0));
        assert_eq!(
            t.sample(start + Duration::from_millis(500), 10, 10),
            (0.0, 0.0),
            "too soon: the last measurement"
        );
        assert_eq!(t.sample(start + Duration::from_secs(2), 20, 4), (10.0, 2.0));
        assert_eq!(
            t.sample(start + Duration::from_millis(2100), 99, 99),
            (10.0, 2.0)
        );
    }
}
