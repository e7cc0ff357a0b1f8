//! The clock and the timers, taken from the global scope so they work on a page and in a
//! Web Worker alike (no `window`).

use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use protocol::client::Timestamp;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// The current time for the state machine: `performance.now()` in whole milliseconds.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millis(performance_now().max(0.0) as u64)
}

/// One re-armable `setTimeout`. It owns its callback (created once, reused by every
/// `schedule`) and clears the pending timeout when dropped, so nothing fires into freed
/// memory.
pub(crate) struct Timer {
    /// Called when the timeout fires; lives as long as the timer.
    callback: Closure<dyn FnMut()>,
    /// The id of the pending timeout, if one is armed.
    pending: Option<JsValue>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("armed", &self.pending.is_some())
            .finish()
    }
}

impl Timer {
    /// A disarmed timer that runs `f` whenever it fires.
    pub(crate) fn new(f: impl FnMut() + 'static) -> Self {
        Timer {
            callback: Closure::new(f),
            pending: None,
        }
    }

    /// Arms the timer `ms` milliseconds from now, replacing any pending timeout.
    pub(crate) fn schedule(&mut self, ms: u64) {
        self.cancel();
        // Browsers clamp larger delays (> 2^31 - 1 ms) to 0: never ask for more.
        let ms = ms.min(i32::MAX as u64) as f64;
        self.pending = Some(set_timeout(self.callback.as_ref().unchecked_ref(), ms));
    }

    /// Forgets that the timeout fired (called from the callback itself).
    pub(crate) fn fired(&mut self) {
        self.pending = None;
    }

    /// Disarms the timer.
    pub(crate) fn cancel(&mut self) {
        if let Some(id) = self.pending.take() {
            clear_timeout(&id);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.cancel();
    }
}
