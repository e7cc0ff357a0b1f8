//! What the JavaScript caller asks of `Inner` (publish, subscribe, unsubscribe) and what it
//! is told (listeners, received messages), and the bindings to the JavaScript `Map` that
//! keeps the promises waiting for an answer.

use bytes::Bytes;
use js_sys::{Array, Function, Promise, Uint8Array};
use protocol::{Publish, QoS, RetainHandling, Subscription, SubscriptionOptions, TopicName};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::values::{filter_list, properties_object, publish_packet};
use super::{Inner, MAX_UNHEARD};
use crate::error::Error;
use crate::js;
use crate::options;
use crate::prelude::*;
use crate::store::Held;
use crate::timer::now;

#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    /// A new `Map` for the promises of one client.
    pub(super) fn promises() -> JsValue;
    /// A promise kept in `promises` under `key` until settled.
    pub(super) fn track(promises: &JsValue, key: f64) -> Promise;
    /// Resolves the promises under `keys` with `codes`, in order; unknown keys are skipped.
    pub(super) fn settle(promises: &JsValue, keys: &[f64], codes: &[u8]);
    /// Resolves (`ok`) or rejects the promise under `key` with `value`.
    #[wasm_bindgen(js_name = settleOne)]
    pub(super) fn settle_one(promises: &JsValue, key: f64, value: &JsValue, ok: bool);
    /// Rejects every promise left, each with an `Error(message)`.
    #[wasm_bindgen(js_name = rejectAll)]
    pub(super) fn reject_all(promises: &JsValue, message: &str);
    /// `publish` options read in one call: qos | 4 (retain) | 8 (properties), -1: bad qos.
    #[wasm_bindgen(js_name = pubOpts)]
    fn pub_opts(opts: &JsValue) -> i32;
    /// Calls `f` in a microtask.
    pub(super) fn soon(f: &Function);
}

impl Inner {
    pub(super) fn publish(
        &mut self,
        topic: String,
        payload: &JsValue,
        opts: &JsValue,
    ) -> Result<u64, Error> {
        if self.ended {
            return Err(Error::Ended);
        }
        // Publishes mostly come in runs to one topic: validated once.
        let topic = match &self.last_published {
            Some(t) if t.as_str() == topic => t.clone(),
            _ => {
                let t = TopicName::new(topic)?;
                self.last_published = Some(t.clone());
                t
            }
        };
        let payload = js::bytes(payload, "payload must be a string or a Uint8Array")?;
        let flags = pub_opts(opts);
        let qos = match flags & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(Error::Argument("qos must be 0, 1 or 2")),
        };
        let retain = flags & 4 != 0;
        let properties = if flags & 8 != 0 {
            options::publish_properties(opts).map_err(Error::Js)?
        } else {
            Default::default()
        };
        let token =
            self.client
                .publish(topic, Bytes::from(payload), qos, retain, properties, now())?;
        Ok(token.0)
    }

    pub(super) fn subscribe(&mut self, filters: &JsValue, opts: &JsValue) -> Result<u16, Error> {
        if self.ended {
            return Err(Error::Ended);
        }
        let o = options::sub_opts(opts).map_err(Error::Js)?;
        let options = SubscriptionOptions {
            qos: options::qos_of(Some(f64::from(o & 3))),
            no_local: o & 4 != 0,
            retain_as_published: o & 8 != 0,
            retain_handling: match o >> 4 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        };
        let subs = filter_list(filters)?
            .into_iter()
            .map(|filter| Subscription { filter, options })
            .collect();
        Ok(self
            .client
            .subscribe(subs, Default::default(), now())?
            .get())
    }

    pub(super) fn unsubscribe(&mut self, filters: &JsValue) -> Result<u16, Error> {
        if self.ended {
            return Err(Error::Ended);
        }
        let filters = filter_list(filters)?;
        Ok(self
            .client
            .unsubscribe(filters, Default::default(), now())?
            .get())
    }

    pub(super) fn has_listener(&self, name: &str) -> bool {
        self.listeners.iter().any(|(n, _)| n == name)
    }

    pub(super) fn emit(&mut self, name: &str, args: &[JsValue]) {
        let args: Array = args.iter().collect();
        for (n, f) in &self.listeners {
            if n == name {
                self.calls.push((f.clone(), args.clone()));
            }
        }
    }

    /// A message from the state machine: delivered now, or once the store has written what
    /// came before it.
    pub(super) fn emit_message(&mut self, p: Publish) {
        match self.store.as_mut().filter(|st| st.busy()) {
            Some(st) => st.hold(Held::Message(Box::new(p))),
            None => self.deliver_message(p),
        }
    }

    pub(super) fn deliver_message(&mut self, p: Publish) {
        if !self.has_listener("message") {
            if self.unheard.len() < MAX_UNHEARD {
                self.unheard.push_back(p);
            }
            return;
        }
        // Messages mostly come in runs on one topic: its JavaScript string is made once.
        let topic = match &self.last_topic {
            Some((name, js)) if *name == p.topic => js.clone(),
            _ => {
                let js = JsValue::from_str(p.topic.as_str());
                self.last_topic = Some((p.topic.clone(), js.clone()));
                js
            }
        };
        let payload = JsValue::from(Uint8Array::from(&p.payload[..]));
        let properties = properties_object(&p.properties).map_or(JsValue::UNDEFINED, JsValue::from);
        let packet = publish_packet(
            &topic,
            &payload,
            p.qos as u8,
            p.retain,
            p.dup,
            p.packet_id.map_or(0, |id| id.get()),
            &properties,
        );
        self.emit("message", &[topic, payload, packet]);
    }

    pub(super) fn call(&mut self, f: &Function, arg: JsValue) {
        self.calls.push((f.clone(), Array::of1(&arg)));
    }
}
