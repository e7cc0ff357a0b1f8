//! The axum application: MQTT over WebSocket at `/mqtt`, the JSON API under `/api/v1/`, the
//! browser client's package at `/pkg/`, and the static files of the web directory at `/`,
//! all behind the guard ([`crate::guard`]).

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

/// The router: `/mqtt`, `/api/v1/health`, `/metrics` ([`crate::metrics`]), the session-state API ([`crate::api`]), the
/// browser client's npm package `pkg` at `/pkg/` (the dashboard's playground imports
/// `/pkg/client_wasm.js`, which fetches `/pkg/client_wasm_bg.wasm`; `ServeDir` answers it as
/// `application/wasm`, which `WebAssembly.instantiateStreaming` requires), and the web
/// directory for everything else. [`crate::guard::check`] sees every request first (the
/// API's routes also pass [`crate::guard::api_access`]; `/api/v1/health` does not).
pub(crate) fn router(
    state: AppState,
    web: &Path,
    pkg: &Path,
    metrics: std::sync::Arc<crate::metrics::Exporter>,
) -> Router {
    let guard = state.guard.clone();
    Router::new()
        .route("/api/v1/health", get(health))
        .merge(crate::ws::routes())
        .merge(crate::metrics::routes(metrics))
        .merge(crate::api::routes(guard.clone()))
        .merge(crate::web::routes(web, pkg))
        .layer(from_fn_with_state(guard, crate::guard::check))
        .layer(TraceLayer::new_for_http().on_failure(log_failure))
        .with_state(state)
}

/// Logs a failed response as tower-http does, except 503: the WebSocket endpoint answers it
/// when a connection limit is reached, and logs that itself at most once per interval
/// ([`crate::limits`]); one line per refused upgrade would let a client fill the log.
fn log_failure(failure: ServerErrorsFailureClass, latency: Duration, _span: &tracing::Span) {
    if matches!(
        failure,
        ServerErrorsFailureClass::StatusCode(StatusCode::SERVICE_UNAVAILABLE)
    ) {
        return;
    }
    tracing::error!(
        classification = %failure,
        latency = %format_args!("{} ms", latency.as_millis()),
        "response failed"
    );
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
}

/// `GET /api/v1/health`: `{"status":"ok","version":"<crate version>"}`.
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}
