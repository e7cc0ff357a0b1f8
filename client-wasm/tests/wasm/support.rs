//! What the browser tests share: the bridge's addresses, promises awaited with a timeout,
//! options objects, recorders for messages and events, and the bridge's kick API.

use std::cell::RefCell;
use std::rc::Rc;

use client_wasm::{connect, MqttClient};
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The longest any one step may take (a connect, an acknowledgement, a message to arrive).
/// Generous because a loaded 2-core machine runs cargo, the bridge and Chromium at once; a
/// step that works takes milliseconds, so only a failing test ever waits this long.
pub(crate) const STEP_MS: u32 = 10_000;

/// MQTT 3.1.1 (`protocolVersion: 4`).
pub(crate) const V4: u8 = 4;
/// MQTT 5.0 (`protocolVersion: 5`).
pub(crate) const V5: u8 = 5;

#[wasm_bindgen]
extern "C" {
    /// `setTimeout(handler, ms, arg)`: `handler(arg)` after `ms`. A global in pages and
    /// workers alike, so no browser type bindings are needed.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: u32, arg: &JsValue) -> JsValue;

    /// `fetch(url, init)`.
    #[wasm_bindgen(js_name = fetch)]
    fn fetch(url: &str, init: &JsValue) -> Promise;
}

// --- The bridge ------------------------------------------------------------------------------
// wasm-test.sh starts the bridges and exports their addresses while this crate compiles: the
// test runs inside the browser, which has no environment to read at run time.

fn compiled_in(value: Option<&'static str>, name: &str) -> &'static str {
    value.unwrap_or_else(|| {
        panic!(
            "{name} was not set when the tests were compiled: run client-wasm/tests/wasm-test.sh"
        )
    })
}

/// The bridge's MQTT-over-WebSocket URL (`ws://127.0.0.1:…/mqtt`).
pub(crate) fn ws_url() -> &'static str {
    compiled_in(option_env!("BRIDGE_WS_URL"), "BRIDGE_WS_URL")
}

/// The bridge's HTTP base URL (`http://127.0.0.1:…/`), for its API.
pub(crate) fn http_url() -> &'static str {
    compiled_in(option_env!("BRIDGE_HTTP_URL"), "BRIDGE_HTTP_URL")
}

/// A second bridge, configured with `retain_available = false`, so that a CONNECT with a
/// retained will is refused by CONNACK.
pub(crate) fn no_retain_ws_url() -> &'static str {
    compiled_in(
        option_env!("NO_RETAIN_BRIDGE_WS_URL"),
        "NO_RETAIN_BRIDGE_WS_URL",
    )
}

/// A WebSocket URL on a local port where nothing listens: the connection is refused.
pub(crate) fn refused_ws_url() -> &'static str {
    compiled_in(option_env!("REFUSED_WS_URL"), "REFUSED_WS_URL")
}

/// Closes `client_id`'s connection from the server side: `POST
/// /api/v1/sessions/{client_id}/kick` (5.0 clients get DISCONNECT 0x98 first; the session
/// is kept, the will published).
///
/// The test page and the bridge are different origins and the bridge sends no CORS headers,
/// so the request goes out in `no-cors` mode: delivered, its answer opaque. Callers see the
/// kick through the client instead (its `offline` event), which is what they test.
pub(crate) async fn kick(client_id: &str) {
    let url = format!(
        "{}/api/v1/sessions/{client_id}/kick",
        http_url().trim_end_matches('/')
    );
    let init = obj(&[("method", "POST".into()), ("mode", "no-cors".into())]);
    ok(fetch(&url, &init.into()), &format!("POST {url}")).await;
}

// --- Names, options, plain objects ---------------------------------------------------------

/// `name` with a random suffix: a client id or topic level that no other test, nor another run
/// against the same bridge, uses.
pub(crate) fn unique(name: &str) -> String {
    let r = (js_sys::Math::random() * f64::from(u32::MAX)) as u32;
    format!("{name}-{r:08x}")
}

/// A plain object `{key: value, …}`, as JavaScript writes options.
pub(crate) fn obj(entries: &[(&str, JsValue)]) -> Object {
    let o = Object::new();
    for (key, value) in entries {
        set(&o, key, value.clone());
    }
    o
}

/// `o[key] = value` (on a plain object this cannot fail).
pub(crate) fn set(o: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(o, &JsValue::from_str(key), &value.into());
}

/// `o[key]`, `undefined` when absent.
pub(crate) fn get(o: &JsValue, key: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// `connect` options for a test client: its id, protocol version and clean flag, keepalive
/// 30 s, no auto-reconnect (tests of reconnection set their own). A persistent 5.0 session
/// asks for an expiry: without one it would end with the connection [MQTT-3.1.2-23].
pub(crate) fn options(client_id: &str, version: u8, clean: bool) -> Object {
    let o = obj(&[
        ("clientId", client_id.into()),
        ("protocolVersion", version.into()),
        ("clean", clean.into()),
        ("keepalive", 30.into()),
        ("reconnect", false.into()),
    ]);
    if version == V5 && !clean {
        set(&o, "sessionExpiryInterval", 300);
    }
    o
}

// --- Promises --------------------------------------------------------------------------------

/// The message of a thrown or rejected JavaScript value.
pub(crate) fn message(e: &JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(e) => String::from(e.message()),
        None => format!("{e:?}"),
    }
}

/// Settles as `p` does; `Err(None)` if it has not settled within [`STEP_MS`].
async fn within(p: &Promise) -> Result<JsValue, Option<JsValue>> {
    // The timeout rejects with its own token, so a timeout is never mistaken for `p`
    // rejecting.
    let token = JsValue::from(Object::new());
    let timeout = Promise::new(&mut |_, reject| {
        set_timeout(&reject, STEP_MS, &token);
    });
    match JsFuture::from(Promise::race(&Array::of2(p, &timeout))).await {
        Ok(v) => Ok(v),
        Err(e) if e == token => Err(None),
        Err(e) => Err(Some(e)),
    }
}

/// Awaits `p`; fails the test, naming `what` and why, if it rejects or takes too long.
pub(crate) async fn ok(p: Promise, what: &str) -> JsValue {
    match within(&p).await {
        Ok(v) => v,
        Err(Some(e)) => panic!("{what}: rejected: {}", message(&e)),
        Err(None) => panic!("{what}: not settled within {STEP_MS} ms"),
    }
}

/// Awaits `p` and returns the `Error` it rejects with; fails the test if it resolves, takes
/// too long or rejects with something that is not an `Error`.
pub(crate) async fn rejection(p: Promise, what: &str) -> js_sys::Error {
    match within(&p).await {
        Ok(v) => panic!("{what}: expected a rejection, resolved with {v:?}"),
        Err(None) => panic!("{what}: expected a rejection, not settled within {STEP_MS} ms"),
        Err(Some(e)) => e
            .dyn_into::<js_sys::Error>()
            .unwrap_or_else(|e| panic!("{what}: rejected with {e:?}, not an Error")),
    }
}

/// `setTimeout` as a future. Only for polling: no test asserts on time passing.
pub(crate) async fn sleep(ms: u32) {
    let p = Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms, &JsValue::UNDEFINED);
    });
    let _ = JsFuture::from(p).await;
}

/// Polls `done` until it holds (true) or [`STEP_MS`] passed (false).
pub(crate) async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = js_sys::Date::now() + f64::from(STEP_MS);
    loop {
        if done() {
            return true;
        }
        if js_sys::Date::now() > deadline {
            return false;
        }
        sleep(20).await;
    }
}

// --- The client, as JavaScript calls it ---------------------------------------------------------

/// `await connect(url, opts)`, failing the test if it rejects.
pub(crate) async fn connect_ok(url: &str, opts: &Object, what: &str) -> MqttClient {
    let v = ok(connect(url.to_owned(), opts.into()), what).await;
    MqttClient::try_from_js_value(v)
        .unwrap_or_else(|v| panic!("{what}: connect() resolved with {v:?}, not an MqttClient"))
}

/// `await client.subscribe(filter, { qos })`: the reason codes of the SUBACK.
pub(crate) async fn subscribe(client: &MqttClient, filter: &str, qos: u8) -> Vec<f64> {
    let opts = obj(&[("qos", qos.into())]);
    let codes = ok(
        client.subscribe(filter.into(), opts.into()),
        &format!("subscribe {filter} at QoS {qos}"),
    )
    .await;
    numbers(&codes)
}

/// `await client.publish(topic, payload, { qos, retain })`: the reason code it resolves with.
pub(crate) async fn publish(
    client: &MqttClient,
    topic: &str,
    payload: impl Into<JsValue>,
    qos: u8,
    retain: bool,
) -> f64 {
    let opts = obj(&[("qos", qos.into()), ("retain", retain.into())]);
    let code = ok(
        client.publish(topic.to_owned(), payload.into(), opts.into()),
        &format!("publish to {topic} at QoS {qos}"),
    )
    .await;
    code.as_f64()
        .unwrap_or_else(|| panic!("publish to {topic} resolved with {code:?}, not a number"))
}

/// `await client.end()`, then checks the client says it is no longer connected.
pub(crate) async fn end(client: &MqttClient, what: &str) {
    ok(client.end(), &format!("end() of {what}")).await;
    assert!(!client.connected(), "{what}: `connected` after end()");
}

/// `client.session()[key]`.
pub(crate) fn session(client: &MqttClient, key: &str) -> JsValue {
    get(&client.session(), key)
}

/// A JavaScript array of numbers.
pub(crate) fn numbers(v: &JsValue) -> Vec<f64> {
    assert!(Array::is_array(v), "expected an array, got {v:?}");
    Array::from(v)
        .iter()
        .map(|n| {
            n.as_f64()
                .unwrap_or_else(|| panic!("expected numbers, got {n:?}"))
        })
        .collect()
}

// --- Recorders -------------------------------------------------------------------------------

/// One message as a `message` listener got it: `(topic, payload, packet)`.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) qos: Option<f64>,
    pub(crate) retain: Option<bool>,
    pub(crate) dup: Option<bool>,
    pub(crate) message_id: Option<f64>,
    /// `payload` was a `Uint8Array` and `packet.topic` / `packet.payload` agree with the
    /// listener's first two arguments.
    pub(crate) consistent: bool,
}

impl Received {
    fn from_js(topic: &JsValue, payload: &JsValue, packet: &JsValue) -> Received {
        // Runs inside a listener: never panics (a panic there would be swallowed by the
        // client), anything unexpected shows up in the fields instead.
        let bytes = payload.dyn_ref::<Uint8Array>().map(Uint8Array::to_vec);
        let topic = topic.as_string().unwrap_or_default();
        let consistent = bytes.is_some()
            && get(packet, "topic").as_string().as_deref() == Some(topic.as_str())
            && get(packet, "payload")
                .dyn_ref::<Uint8Array>()
                .map(Uint8Array::to_vec)
                == bytes;
        Received {
            topic,
            payload: bytes.unwrap_or_default(),
            qos: get(packet, "qos").as_f64(),
            retain: get(packet, "retain").as_bool(),
            dup: get(packet, "dup").as_bool(),
            message_id: get(packet, "messageId").as_f64(),
            consistent,
        }
    }

    /// The payload as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Records what a client's `message` listener receives. Dropping it drops the listener's
/// closure: end the client first.
pub(crate) struct Inbox {
    received: Rc<RefCell<Vec<Received>>>,
    _listener: Closure<dyn FnMut(JsValue, JsValue, JsValue)>,
}

impl Inbox {
    /// Registers a `message` listener on `client`.
    pub(crate) fn listen(client: &MqttClient) -> Inbox {
        let received = Rc::new(RefCell::new(Vec::new()));
        let r = received.clone();
        let listener = Closure::<dyn FnMut(JsValue, JsValue, JsValue)>::new(
            move |topic: JsValue, payload: JsValue, packet: JsValue| {
                r.borrow_mut()
                    .push(Received::from_js(&topic, &payload, &packet));
            },
        );
        client.on(
            "message".into(),
            listener.as_ref().unchecked_ref::<Function>().clone(),
        );
        Inbox {
            received,
            _listener: listener,
        }
    }

    /// Everything received so far, in order.
    pub(crate) fn messages(&self) -> Vec<Received> {
        self.received.borrow().clone()
    }

    /// Waits until `n` messages have arrived; returns all received so far.
    pub(crate) async fn wait_for(&self, n: usize, what: &str) -> Vec<Received> {
        if !eventually(|| self.received.borrow().len() >= n).await {
            panic!(
                "{what}: {n} messages expected within {STEP_MS} ms, got {:?}",
                self.messages()
            );
        }
        self.messages()
    }

    /// Waits for a message on `topic`; returns everything received up to and including it.
    /// The way to show that something did not arrive: send a marker after it on the same
    /// path, and look at what came before the marker.
    pub(crate) async fn until_topic(&self, topic: &str, what: &str) -> Vec<Received> {
        let found = || self.received.borrow().iter().position(|m| m.topic == topic);
        if !eventually(|| found().is_some()).await {
            panic!(
                "{what}: no message on {topic} within {STEP_MS} ms; got {:?}",
                self.messages()
            );
        }
        let mut all = self.messages();
        all.truncate(found().map_or(0, |at| at + 1));
        all
    }
}

/// The connection events a client emits, in order, each with its first argument.
const EVENTS: [&str; 5] = ["connect", "reconnect", "offline", "close", "error"];

/// Records a client's `connect`, `reconnect`, `offline`, `close` and `error` events.
pub(crate) struct Events {
    log: Rc<RefCell<Vec<(&'static str, JsValue)>>>,
    _listeners: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl Events {
    /// Registers a listener for each of the events on `client`.
    pub(crate) fn listen(client: &MqttClient) -> Events {
        let log = Rc::new(RefCell::new(Vec::new()));
        let listeners = EVENTS
            .iter()
            .map(|&name| {
                let l = log.clone();
                let f = Closure::<dyn FnMut(JsValue)>::new(move |arg: JsValue| {
                    l.borrow_mut().push((name, arg));
                });
                client.on(name.into(), f.as_ref().unchecked_ref::<Function>().clone());
                f
            })
            .collect();
        Events {
            log,
            _listeners: listeners,
        }
    }

    /// The names of the events so far, in order.
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.log.borrow().iter().map(|(n, _)| *n).collect()
    }

    /// The first argument of each `name` event so far.
    pub(crate) fn args(&self, name: &str) -> Vec<JsValue> {
        self.log
            .borrow()
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Where the first `name` event is in [`Events::names`].
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.log.borrow().iter().position(|(n, _)| *n == name)
    }
}
