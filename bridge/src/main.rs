//! The `bridge` binary: axum serves the dashboard (`web/`), MQTT over WebSocket at `/mqtt` and
//! a JSON API under `/api/v1/`, and a plain TCP listener serves MQTT; all of them feed the one
//! broker engine from the `broker` crate.
//!
//! The foundation issue only reserves this crate; the broker issue builds it. Until then the
//! binary says so and exits with a non-zero status, so nobody mistakes it for a running server.

fn main() -> std::process::ExitCode {
    eprintln!(
        "bridge: not built yet — the broker and its transports arrive with the broker issue \
         (protocol crate version {})",
        protocol::VERSION
    );
    std::process::ExitCode::from(2)
}
