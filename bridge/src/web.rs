//! The static files: the dashboard (`web/`) at `/`, and the browser client's npm package at
//! `/pkg/` (the dashboard's playground imports `/pkg/client_wasm.js`, which fetches
//! `/pkg/client_wasm_bg.wasm`; `ServeDir` answers it as `application/wasm`, which
//! `WebAssembly.instantiateStreaming` requires).

use std::path::Path;

use axum::Router;
use tower_http::services::ServeDir;

use crate::state::AppState;

/// `/pkg/` from `pkg`, and everything no other route takes from `web`.
pub(crate) fn routes(web: &Path, pkg: &Path) -> Router<AppState> {
    Router::new()
        .nest_service("/pkg", ServeDir::new(pkg))
        .fallback_service(ServeDir::new(web))
}
