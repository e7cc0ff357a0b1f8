//! `GET /metrics`: the broker's metrics and the process's own, in the Prometheus text format
//! (version 0.0.4), for a Prometheus server to scrape.
//!
//! # Why here and not in the broker
//! The broker crate owns its counters ([`broker::Metrics`]) and adds to them where things
//! happen; this module only registers them, adds the process's resident memory and open
//! file descriptors (read from `/proc/self` at scrape), asks the engine once per scrape for
//! the totals over sessions ([`broker::Broker::refresh_metrics`]), and encodes.
//!
//! # Who may scrape
//! Like the admin API ([`crate::guard`]): with `[api] token` or `read_token` set,
//! `Authorization: Bearer` with either; without one, clients on this machine only. A
//! `[metrics] token` also opens `/metrics` (and nothing else) to whoever presents it, so a
//! Prometheus server needs no admin token.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::guard::{bearer, ApiToken, RequestContext};
use crate::state::AppState;

/// The Prometheus text format's content type.
const CONTENT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `[metrics]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    /// `Authorization: Bearer <token>` may read `/metrics` (and nothing else).
    pub(crate) token: Option<ApiToken>,
}

/// What `/metrics` serves: the registry and the scrape token.
#[derive(Debug)]
pub(crate) struct Exporter {
    registry: Registry,
    token: Option<ApiToken>,
    /// `process_resident_memory_bytes`, read at scrape.
    resident: Gauge,
    /// `process_open_fds`, read at scrape.
    open_fds: Gauge,
}

impl Exporter {
    /// The exporter of `broker`'s metrics and the process's.
    pub(crate) fn new(broker: &broker::Broker, config: &MetricsConfig) -> Exporter {
        let mut registry = Registry::default();
        broker.metrics().register(&mut registry);
        let resident = Gauge::default();
        let open_fds = Gauge::default();
        // The names every Prometheus client library's process collector uses.
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            open_fds.clone(),
        );
        Exporter {
            registry,
            token: config.token.clone(),
            resident,
            open_fds,
        }
    }

    /// The text of one scrape.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Some(bytes) = resident_bytes() {
            self.resident.set(bytes);
        }
        if let Some(n) = open_fds() {
            self.open_fds.set(n);
        }
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The route `GET /metrics` (HEAD too).
pub(crate) fn routes(exporter: Arc<Exporter>) -> Router<AppState> {
    Router::new().route(
        "/metrics",
        get(
            move |state: State<AppState>, ctx: Extension<RequestContext>, headers: HeaderMap| {
                scrape(exporter, state, ctx, headers)
            },
        ),
    )
}

async fn scrape(
    exporter: Arc<Exporter>,
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    headers: HeaderMap,
) -> Response {
    let by_token = exporter
        .token
        .as_ref()
        .zip(bearer(&headers))
        .is_some_and(|(token, given)| token.matches(given));
    if !by_token {
        if let Err(refused) = state.guard.api(&Method::GET, &headers, &ctx) {
            tracing::debug!(client = %ctx.client, "/metrics refused: {}", refused.message());
            if exporter.token.is_some() {
                // The scrape token would have opened it: say that it is wanted.
                return unauthorized();
            }
            return refused.into_response();
        }
    }
    if state.broker.refresh_metrics().await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match exporter.encode() {
        Ok(text) => ([(CONTENT_TYPE, HeaderValue::from_static(CONTENT))], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// 401 with a Bearer challenge, for a client without the `[metrics] token`.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        Json(serde_json::json!({
            "error": "/metrics needs Authorization: Bearer <[metrics] token>"
        })),
    )
        .into_response()
}

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`); `None` where
/// there is no such file.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The process's open file descriptors (entries of `/proc/self/fd`, the one reading it
/// included, as other exporters count); `None` where there is no such directory.
fn open_fds() -> Option<i64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    i64::try_from(n).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_readings_are_found_on_linux() {
        assert!(resident_bytes().is_some_and(|b| b > 0));
        assert!(open_fds().is_some_and(|n| n >= 3));
    }
}
