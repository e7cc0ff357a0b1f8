//! JavaScript values made from the protocol's (received messages, properties, CONNACK, the
//! session view) and the filter lists JavaScript passes in.

use js_sys::{Array, Object, Uint8Array};
use protocol::client::{OutboundStage, SessionView};
use protocol::{ConnAck, Properties, TopicFilter};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::Error;
use crate::js;
use crate::prelude::*;

#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    /// `{ cmd: "publish", topic, payload, qos, retain, dup, messageId?, properties? }`.
    #[wasm_bindgen(js_name = publishPacket)]
    pub(super) fn publish_packet(
        topic: &JsValue,
        payload: &JsValue,
        qos: u8,
        retain: bool,
        dup: bool,
        message_id: u16,
        properties: &JsValue,
    ) -> JsValue;
}

/// A filter or an array of filters.
pub(super) fn filter_list(v: &JsValue) -> Result<Vec<TopicFilter>, Error> {
    const WHAT: &str = "filters must be a string or an array of strings";
    if let Some(s) = v.as_string() {
        return Ok(vec![TopicFilter::new(s)?]);
    }
    if !Array::is_array(v) {
        return Err(Error::Argument(WHAT));
    }
    Array::from(v)
        .iter()
        .map(|f| {
            Ok(TopicFilter::new(
                f.as_string().ok_or(Error::Argument(WHAT))?,
            )?)
        })
        .collect()
}

/// A received message's 5.0 properties as MQTT.js names them; `None` when it has none.
pub(super) fn properties_object(p: &Properties) -> Option<Object> {
    let o = Object::new();
    let mut any = false;
    let mut set = |key: &str, v: JsValue| {
        any = true;
        js::set(&o, key, v);
    };
    if let Some(v) = p.payload_format_indicator {
        set("payloadFormatIndicator", v.into());
    }
    if let Some(v) = p.message_expiry_interval {
        set("messageExpiryInterval", v.into());
    }
    if let Some(v) = &p.content_type {
        set("contentType", v.as_str().into());
    }
    if let Some(v) = &p.response_topic {
        set("responseTopic", v.as_str().into());
    }
    if let Some(v) = &p.correlation_data {
        set("correlationData", Uint8Array::from(&v[..]).into());
    }
    if !p.subscription_identifiers.is_empty() {
        set(
            "subscriptionIdentifier",
            js::numbers(p.subscription_identifiers.iter().copied()).into(),
        );
    }
    if !p.user_properties.is_empty() {
        // A key given once maps to a string, a repeated key to an array (as in MQTT.js). No
        // prototype: a key named `__proto__` or `toString` is just a key.
        let up: Object = Object::create(JsValue::NULL.unchecked_ref::<Object>());
        for (k, v) in &p.user_properties {
            let key = JsValue::from_str(k);
            let old = js::get(&up, k);
            let value: JsValue = if old.is_undefined() {
                v.as_str().into()
            } else if Array::is_array(&old) {
                Array::from(&old).push(&v.as_str().into());
                old
            } else {
                Array::of2(&old, &v.as_str().into()).into()
            };
            let _ = js_sys::Reflect::set(&up, &key, &value);
        }
        set("userProperties", up.into());
    }
    any.then_some(o)
}

pub(super) fn connack_object(ack: &ConnAck) -> Object {
    let o = Object::new();
    js::set(&o, "cmd", "connack");
    js::set(&o, "sessionPresent", ack.session_present);
    js::set(&o, "reasonCode", ack.reason.as_u8());
    o
}

pub(super) fn session_object(s: &SessionView) -> Object {
    let o = Object::new();
    js::set(&o, "connected", s.connected);
    js::set(&o, "sessionPresent", s.session_present);
    let subs: Array = s
        .subscriptions
        .iter()
        .map(|(f, opts)| {
            let sub = Object::new();
            js::set(&sub, "topic", f.as_str());
            js::set(&sub, "qos", opts.qos as u8);
            js::set(&sub, "nl", opts.no_local);
            js::set(&sub, "rap", opts.retain_as_published);
            js::set(&sub, "rh", opts.retain_handling as u8);
            JsValue::from(sub)
        })
        .collect();
    js::set(&o, "subscriptions", subs);
    let out: Array = s
        .outbound_inflight
        .iter()
        .map(|m| {
            let e = Object::new();
            js::set(&e, "messageId", m.packet_id.get());
            js::set(&e, "topic", m.topic.as_str());
            js::set(&e, "qos", m.qos as u8);
            js::set(&e, "size", m.size as u32);
            js::set(
                &e,
                "stage",
                match m.stage {
                    OutboundStage::AwaitingAck => "awaiting-ack",
                    OutboundStage::AwaitingComp => "awaiting-comp",
                },
            );
            JsValue::from(e)
        })
        .collect();
    js::set(&o, "outgoingInflight", out);
    js::set(
        &o,
        "incomingAwaitingPubrel",
        js::numbers(
            s.inbound_awaiting_pubrel
                .iter()
                .map(|id| u32::from(id.get())),
        ),
    );
    js::set(&o, "queued", s.queued as u32);
    js::set(&o, "sendWindow", s.send_window);
    o
}
