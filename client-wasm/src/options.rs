//! `connect(url, opts)` options: the JavaScript object to [`ClientOptions`] and
//! [`Reconnect`].

use bytes::Bytes;
use js_sys::{Array, Object};
use protocol::client::ClientOptions;
use protocol::{Properties, ProtocolVersion, QoS, TopicName, Will};
use wasm_bindgen::JsValue;

use crate::error::Error;
use crate::js::{bytes, get, get_bool, get_f64, get_string, get_uint};

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
        let base = (self.initial_ms * 2f64.powi(attempt.min(30) as i32)).min(self.max_ms);
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

/// Reads `opts` (an object, or `undefined` for the defaults).
pub(crate) fn parse(
    opts: &JsValue,
) -> Result<(ClientOptions, Reconnect, Persistence, Hooks), Error> {
    let version = match get_uint(opts, "protocolVersion", 5, "protocolVersion must be 4 or 5")? {
        None | Some(4) => ProtocolVersion::V311,
        Some(5) => ProtocolVersion::V5,
        Some(_) => return Err(Error::Argument("protocolVersion must be 4 or 5")),
    };
    let client_id = get_string(opts, "clientId", "clientId must be a string")?.unwrap_or_default();
    let clean = get_bool(opts, "clean").unwrap_or(true);
    let mut o = ClientOptions::new(version, client_id, clean);
    if let Some(k) = get_uint(
        opts,
        "keepalive",
        65535,
        "keepalive must be 0..=65535 seconds",
    )? {
        o.keep_alive = k as u16;
    }
    o.session_expiry_interval = get_uint(
        opts,
        "sessionExpiryInterval",
        u32::MAX,
        "sessionExpiryInterval must be 0..=4294967295 seconds",
    )?;
    let hooks = Hooks {
        url: get(opts, "transformWsUrl"),
        username: get(opts, "username"),
        password: get(opts, "password"),
    };
    if !hooks.url.is_undefined() && !hooks.url.is_function() {
        return Err(Error::Argument("transformWsUrl must be a function"));
    }
    if let Some(n) = get_uint(
        opts,
        "queueLimit",
        u32::MAX,
        "queueLimit must be a non-negative integer",
    )? {
        o.max_queued = n as usize;
    }
    if let Some(ms) = get_f64(
        opts,
        "connectTimeout",
        "connectTimeout must be milliseconds",
    )? {
        o.connect_timeout = std::time::Duration::from_millis(ms.max(0.0) as u64);
    }
    let will = get(opts, "will");
    if will.is_object() {
        let topic = get_string(&will, "topic", "will.topic must be a string")?
            .ok_or(Error::Argument("will.topic is required"))?;
        o.will = Some(Will {
            topic: TopicName::new(topic)?,
            payload: Bytes::from(bytes(
                &get(&will, "payload"),
                "will.payload must be a string or a Uint8Array",
            )?),
            qos: qos(&will)?,
            retain: get_bool(&will, "retain").unwrap_or(false),
            properties: Default::default(),
        });
    }
    let r = get(opts, "reconnect");
    let reconnect = Reconnect {
        enabled: r.as_bool() != Some(false),
        initial_ms: get_f64(
            &r,
            "initialDelay",
            "reconnect.initialDelay must be milliseconds",
        )?
        .unwrap_or(1000.0)
        .max(0.0),
        max_ms: get_f64(&r, "maxDelay", "reconnect.maxDelay must be milliseconds")?
            .unwrap_or(30_000.0)
            .max(0.0),
        jitter: get_f64(&r, "jitter", "reconnect.jitter must be 0..1")?
            .unwrap_or(0.5)
            .clamp(0.0, 1.0),
    };
    let p = get(opts, "persistence");
    let persistence = match get_bool(opts, "persistence") {
        Some(true) => Some(get_string(&p, "name", "persistence.name must be a string")?),
        _ => None,
    };
    if persistence.is_some() {
        // Resuming needs the same session on the server: a client id, clean = false and,
        // in 5.0, a session that outlives the connection [MQTT-3.1.2-23].
        if o.client_id.is_empty() || o.clean_start {
            return Err(Error::Argument(
                "persistence needs a clientId and clean: false",
            ));
        }
        if version == ProtocolVersion::V5 && o.session_expiry_interval.unwrap_or(0) == 0 {
            return Err(Error::Argument(
                "persistence with protocolVersion 5 needs a sessionExpiryInterval above 0",
            ));
        }
        o.persistent = true;
    }
    Ok((o, reconnect, persistence, hooks))
}

/// `opts.properties` of `publish` (5.0; ignored by a 3.1.1 connection), named as in MQTT.js.
pub(crate) fn publish_properties(opts: &JsValue) -> Result<Properties, Error> {
    let mut p = Properties::default();
    let v = get(opts, "properties");
    if !v.is_object() {
        return Ok(p);
    }
    p.payload_format_indicator = get_bool(&v, "payloadFormatIndicator");
    p.message_expiry_interval = get_uint(
        &v,
        "messageExpiryInterval",
        u32::MAX,
        "properties.messageExpiryInterval must be 0..=4294967295 seconds",
    )?;
    p.content_type = get_string(&v, "contentType", "properties.contentType must be a string")?;
    p.response_topic = get_string(
        &v,
        "responseTopic",
        "properties.responseTopic must be a string",
    )?;
    let cd = get(&v, "correlationData");
    if !cd.is_undefined() && !cd.is_null() {
        p.correlation_data = Some(Bytes::from(bytes(
            &cd,
            "properties.correlationData must be a string or a Uint8Array",
        )?));
    }
    let up = get(&v, "userProperties");
    if up.is_object() {
        const WHAT: &str = "properties.userProperties values must be strings or arrays of strings";
        for entry in Object::entries(&Object::from(up)).iter() {
            let entry = Array::from(&entry);
            let key = entry.get(0).as_string().unwrap_or_default();
            let value = entry.get(1);
            let values = if Array::is_array(&value) {
                Array::from(&value)
            } else {
                Array::of1(&value)
            };
            for v in values.iter() {
                let v = v.as_string().ok_or(Error::Argument(WHAT))?;
                p.user_properties.push((key.clone(), v));
            }
        }
    }
    Ok(p)
}

/// `obj.qos`, 0 when absent.
pub(crate) fn qos(obj: &JsValue) -> Result<QoS, Error> {
    Ok(match get_uint(obj, "qos", 2, "qos must be 0, 1 or 2")? {
        None | Some(0) => QoS::AtMostOnce,
        Some(1) => QoS::AtLeastOnce,
        Some(_) => QoS::ExactlyOnce,
    })
}
