//! The browser MQTT client: wasm-bindgen glue over the [`protocol`] crate's sans-io client
//! state machine, exposed to JavaScript with an MQTT.js-shaped API (`connect(url, opts)`).
//!
//! # Why it is thin
//! Everything MQTT (the codec, packet ids, QoS flows, keep-alive deadlines) lives in
//! `protocol`, the same code the broker runs. This crate only owns the browser's WebSocket,
//! its timers and the JavaScript-facing types. The foundation issue reserves the crate; the
//! wasm client issue fills it.

use wasm_bindgen::prelude::wasm_bindgen;

/// The version of the MQTT codec this package was built with.
#[wasm_bindgen(js_name = protocolCrateVersion)]
pub fn protocol_crate_version() -> String {
    protocol::VERSION.to_string()
}
