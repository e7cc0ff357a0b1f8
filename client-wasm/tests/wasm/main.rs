//! The wasm client in headless Chromium against a real bridge.
//!
//! Run by `client-wasm/tests/wasm-test.sh`, which starts `target/debug/bridge` on
//! 127.0.0.1:0, exports its addresses for compile time (see `support`) and runs
//! `cargo test -p client-wasm --target wasm32-unknown-unknown`; the `.cargo/config.toml` runner,
//! wasm-bindgen-test-runner, loads this test binary into Chromium through chromedriver.
//!
//! The tests drive the crate's public API exactly as JavaScript does: `connect(url, opts)`
//! with a plain options object, methods returning promises, listeners registered with
//! `on(event, function)`. Every client id and topic carries a random suffix, so tests never
//! meet each other's sessions or messages, not even those of another run against the same
//! bridge.
//!
//! # Layout
//! - `support`: the bridge's addresses, promise helpers with timeouts, options objects,
//!   recorders for messages and events, the bridge's kick API.
//! - `messaging`: connect, subscribe, unsubscribe, publish at QoS 0/1/2 both ways, retained
//!   messages, wills.
//! - `session`: the seed scenario: clean = false keeps what was published while away,
//!   clean = true keeps nothing.
//! - `reconnect`: auto-reconnect after the server drops the connection; resubscription when
//!   the server lost the session (clean = true, or a clean = false session taken over).
//! - `errors`: bad URL, refused connection, invalid options, CONNACK refusal.
//!
//! - `persistence`: the `persistence` option across a simulated page reload (a new client
//!   instance over the same IndexedDB).
//!
//! On the host this crate is empty: the browser tests exist for wasm32 only, and their
//! dev-dependencies (wasm-bindgen-test, wasm-bindgen-futures) are wasm32-only too.
#![cfg(target_arch = "wasm32")]

/// `both_versions!(scenario)`: the async fn `scenario(version)` of the module it stands in,
/// as two tests, `scenario::v4` (MQTT 3.1.1) and `scenario::v5` (MQTT 5.0).
macro_rules! both_versions {
    ($scenario:ident) => {
        mod $scenario {
            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn v4() {
                super::$scenario(crate::support::V4).await;
            }

            #[wasm_bindgen_test::wasm_bindgen_test]
            async fn v5() {
                super::$scenario(crate::support::V5).await;
            }
        }
    };
}

mod errors;
mod messaging;
mod persistence;
mod reconnect;
mod session;
mod support;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);
