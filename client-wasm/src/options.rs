//! `connect(url, opts)` options: the JavaScript object to [`ClientOptions`] and
//! [`Reconnect`], and the options of `publish` and `subscribe`.
//!
//! # Why the checks are in JavaScript
//! `js/client.js` reads and checks the option objects and hands over arrays of plain values:
//! each property read and each error message through bindings cost the size-budgeted
//! package far more bytes than the same lines of JavaScript.

use bytes::Bytes;
use js_sys::{Array, Uint8Array};
use protocol::client::ClientOptions;
use protocol::{Properties, ProtocolVersion, QoS, TopicName, Will};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::error::Error;
use crate::js::bytes;
use crate::prelude::*;

/// Auto-reconnect: exponential backoff from `initial_ms` doubling up to `max_ms`, each delay
/// shortened by a random fraction of up to `jitter` so that many clients dropped at once do
/// not return at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reconnect {
    /// Off with `reconnect: false`.
    pub(crate) enabled: bool,
    /// The first delay, in milliseconds.
    pub(crate) initial_ms: f64,
    /// The largest delay, in milliseconds.
    pub(crate) max_ms: f64,
    /// 0..=1: how much of each delay may be taken off at random.
    pub(crate) jitter: f64,
}

impl Reconnect {
    /// The delay before attempt number `attempt` (0 = the first retry).
    pub(crate) fn delay(&self, attempt: u32) -> u64 {
        // 2^attempt as a shift: `powi` needs std (the package builds without it).
        let base = (self.initial_ms * f64::from(1u32 << attempt.min(30))).min(self.max_ms);
        (base * (1.0 - self.jitter * js_sys::Math::random())).max(0.0) as u64
    }
}

/// `persistence`: `None` off, `Some(None)` on with the default database name, `Some(name)`.
pub(crate) type Persistence = Option<Option<String>>;

/// The options read again before every connection attempt (calling those that are
/// functions), so that each attempt can carry fresh credentials (a short-lived token in the
/// URL or the password).
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    /// `transformWsUrl(url)`, giving the URL to open, or `undefined`.
    pub(crate) url: JsValue,
    /// The `username` option: a function giving it, or its value.
    pub(crate) username: JsValue,
    /// The `password` option: a function giving it, or its value.
    pub(crate) password: JsValue,
}

/// A user name and a password as the `username` and `password` options (or the functions
/// standing for them) give them.
pub(crate) fn credentials(
    username: &JsValue,
    password: &JsValue,
) -> Result<(Option<String>, Option<Bytes>), Error> {
    let username = if username.is_null_or_undefined() {
        None
    } else {
        Some(
            username
                .as_string()
                .ok_or(Error::Argument("username must be (or give) a string"))?,
        )
    };
    let password = if password.is_null_or_undefined() {
        None
    } else {
        Some(Bytes::from(bytes(
            password,
            "password must be (or give) a string or a Uint8Array",
        )?))
    };
    Ok((username, password))
}

#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    /// Checks `connect`'s options and gives them as an array (see `js/client.js`); throws
    /// the `Error` the caller gets for a bad one.
    #[wasm_bindgen(catch, js_name = connectOpts)]
    fn connect_opts(opts: &JsValue) -> Result<Array, JsValue>;
    /// `subscribe`'s options: qos | 4 (nl) | 8 (rap) | rh << 4.
    #[wasm_bindgen(catch, js_name = subOpts)]
    pub(crate) fn sub_opts(opts: &JsValue) -> Result<u32, JsValue>;
    /// `publish`'s `properties` as an array (see `js/client.js`).
    #[wasm_bindgen(catch, js_name = pubProps)]
    fn pub_props(opts: &JsValue) -> Result<Array, JsValue>;
}

/// A number of the array, if there.
fn n(a: &Array, i: u32) -> Option<f64> {
    a.get(i).as_f64()
}

/// A string of the array, if there.
fn s(a: &Array, i: u32) -> Option<String> {
    a.get(i).as_string()
}

/// Reads `opts` (an object, or `undefined` for the defaults), checked by `connectOpts`.
pub(crate) fn parse(
    opts: &JsValue,
) -> Result<(ClientOptions, Reconnect, Persistence, Hooks), JsValue> {
    let a = connect_opts(opts)?;
    let version = match n(&a, 0) {
        Some(5.0) => ProtocolVersion::V5,
        _ => ProtocolVersion::V311,
    };
    let mut o = ClientOptions::new(version, s(&a, 1).unwrap_or_default(), a.get(2).is_truthy());
    if let Some(k) = n(&a, 3) {
        o.keep_alive = k as u16;
    }
    o.session_expiry_interval = n(&a, 4).map(|v| v as u32);
    if let Some(limit) = n(&a, 5) {
        o.max_queued = limit as usize;
    }
    if let Some(ms) = n(&a, 6) {
        o.connect_timeout = core::time::Duration::from_millis(ms.max(0.0) as u64);
    }
    let will = a.get(7);
    if will.is_object() {
        let w = Array::from(&will);
        o.will = Some(Will {
            topic: TopicName::new(s(&w, 0).unwrap_or_default()).map_err(Error::from)?,
            payload: Bytes::from(Uint8Array::from(w.get(1)).to_vec()),
            qos: qos_of(n(&w, 2)),
            retain: w.get(3).is_truthy(),
            properties: Default::default(),
        });
    }
    let reconnect = Reconnect {
        enabled: a.get(8).is_truthy(),
        initial_ms: n(&a, 9).unwrap_or(0.0).max(0.0),
        max_ms: n(&a, 10).unwrap_or(0.0).max(0.0),
        jitter: n(&a, 11).unwrap_or(0.0).clamp(0.0, 1.0),
    };
    let p = a.get(12);
    let persistence = (!p.is_undefined()).then(|| p.as_string());
    o.persistent = persistence.is_some();
    let hooks = Hooks {
        url: a.get(13),
        username: a.get(14),
        password: a.get(15),
    };
    Ok((o, reconnect, persistence, hooks))
}

/// `opts.properties` of `publish` (5.0; ignored by a 3.1.1 connection), named as in MQTT.js.
pub(crate) fn publish_properties(opts: &JsValue) -> Result<Properties, JsValue> {
    let a = pub_props(opts)?;
    let mut p = Properties::default();
    let pfi = a.get(0);
    if !pfi.is_undefined() {
        p.payload_format_indicator = Some(pfi.is_truthy());
    }
    p.message_expiry_interval = n(&a, 1).map(|v| v as u32);
    p.content_type = s(&a, 2);
    p.response_topic = s(&a, 3);
    let cd = a.get(4);
    if !cd.is_undefined() {
        p.correlation_data = Some(Bytes::from(Uint8Array::from(cd).to_vec()));
    }
    let kv = Array::from(&a.get(5));
    let mut i = 0;
    while i + 1 < kv.length() {
        p.user_properties.push((
            s(&kv, i).unwrap_or_default(),
            s(&kv, i + 1).unwrap_or_default(),
        ));
        i += 2;
    }
    Ok(p)
}

/// A QoS from its number (0 when absent).
pub(crate) fn qos_of(n: Option<f64>) -> QoS {
    match n {
        Some(1.0) => QoS::AtLeastOnce,
        Some(2.0) => QoS::ExactlyOnce,
        _ => QoS::AtMostOnce,
    }
}
