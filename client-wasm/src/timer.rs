//! The clock and the timers. Both work on a page and in a Web Worker alike (no `window`).
//!
//! # Why the timers tick in a Worker
//! Chrome throttles the chained timers of a page hidden for five minutes to one wake-up a
//! minute, open WebSocket or not. A PINGREQ due at 3/4 of a 60 s keep-alive could then wait
//! up to a minute more, and the broker drops a client it has not heard from in 1.5 times the
//! keep-alive [MQTT-3.1.2-24]. Dedicated Workers are not throttled so (MQTT.js's
//! `timerVariant: 'worker'` relies on the same), so on a page the ticks come from one small
//! Worker made from a blob: URL and shared by every client of the page (`js/client.js`). In a
//! Worker, or where a blob: Worker cannot be made (a CSP without `blob:` in `worker-src`),
//! they come from plain `setTimeout`.
//!
//! # How the timers of `js/client.js` work
//! A timer there is an id, a callback and a deadline. The ticker (the Worker, or the local
//! fallback) keeps at most one `setTimeout` per id, replaced by each `[id, ms]` it is sent,
//! and sends the id back when it runs out. A tick only makes the page look at the deadline: past, the
//! callback runs; ahead, a tick is asked for again. So a stale or duplicate tick never fires
//! a timer early or twice, disarming sends nothing, and neither does moving a deadline later
//! (the keep-alive does on every packet): only an earlier one is sent to the Worker. The file
//! ships in the package, comments and all, so its explanation is here.

use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;

use protocol::client::Timestamp;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

// Ids are `i32`, not `u32`: wasm-bindgen then imports the functions as they are, where a
// `u32` costs a JavaScript wrapper each in the glue.
#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    fn timer_new(f: &js_sys::Function) -> i32;
    fn timer_arm(id: i32, ms: f64);
    fn timer_cancel(id: i32);
    fn timer_drop(id: i32);
}

/// The current time for the state machine: `performance.now()` in whole milliseconds.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millis(performance_now().max(0.0) as u64)
}

/// One re-armable timer. It owns its callback (created once, reused by every `schedule`)
/// and unregisters it when dropped, so nothing fires into freed memory.
pub(crate) struct Timer {
    /// Called by JavaScript when the timer fires; held (never read) so that it lives as
    /// long as the timer.
    _callback: Closure<dyn FnMut()>,
    /// The timer's id in `js/client.js`.
    id: i32,
    /// Armed and not yet fired: only then does `cancel` need to tell JavaScript.
    armed: bool,
}

impl core::fmt::Debug for Timer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Timer")
            .field("id", &self.id)
            .field("armed", &self.armed)
            .finish()
    }
}

impl Timer {
    /// A disarmed timer that runs `f` whenever it fires.
    pub(crate) fn new(f: impl FnMut() + 'static) -> Self {
        let callback = Closure::<dyn FnMut()>::new(f);
        let id = timer_new(callback.as_ref().unchecked_ref());
        Timer {
            _callback: callback,
            id,
            armed: false,
        }
    }

    /// Arms the timer `ms` milliseconds from now, replacing any earlier deadline.
    pub(crate) fn schedule(&mut self, ms: u64) {
        // Browsers clamp larger delays (> 2^31 - 1 ms) to 0: never ask for more.
        timer_arm(self.id, ms.min(i32::MAX as u64) as f64);
        self.armed = true;
    }

    /// Forgets that the timer was armed (called from the callback itself).
    pub(crate) fn fired(&mut self) {
        self.armed = false;
    }

    /// Disarms the timer.
    pub(crate) fn cancel(&mut self) {
        if core::mem::take(&mut self.armed) {
            timer_cancel(self.id);
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Before `_callback` is freed: JavaScript must not call it any more.
        timer_drop(self.id);
    }
}
