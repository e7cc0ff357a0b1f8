//! What the JavaScript caller asks of `Inner` (publish, subscribe, unsubscribe) and what it
//! is told (listeners, received messages), and the promises waiting for an answer.

use bytes::Bytes;
use js_sys::{Array, Function, Uint8Array};
use protocol::{Publish, RetainHandling, Subscription, SubscriptionOptions, TopicName};
use wasm_bindgen::JsValue;

use super::values::{filter_list, properties_object, publish_packet};
use super::{Inner, MAX_UNHEARD};
use crate::error::Error;
use crate::js::{self, Settle};
use crate::options;
use crate::store::Held;
use crate::timer::now;

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
        let topic = TopicName::new(topic)?;
        let payload = js::bytes(payload, "payload must be a string or a Uint8Array")?;
        let qos = options::qos(opts)?;
        let retain = js::get_bool(opts, "retain").unwrap_or(false);
        let properties = options::publish_properties(opts)?;
        let token =
            self.client
                .publish(topic, Bytes::from(payload), qos, retain, properties, now())?;
        Ok(token.0)
    }

    pub(super) fn subscribe(&mut self, filters: &JsValue, opts: &JsValue) -> Result<u16, Error> {
        if self.ended {
            return Err(Error::Ended);
        }
        let options = SubscriptionOptions {
            qos: options::qos(opts)?,
            no_local: js::get_bool(opts, "nl").unwrap_or(false),
            retain_as_published: js::get_bool(opts, "rap").unwrap_or(false),
            retain_handling: match js::get_uint(opts, "rh", 2, "rh must be 0, 1 or 2")? {
                None | Some(0) => RetainHandling::SendAtSubscribe,
                Some(1) => RetainHandling::SendIfNew,
                Some(_) => RetainHandling::DoNotSend,
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

/// Promises waiting for an answer, by key.
#[derive(Debug)]
pub(super) struct Pending<K>(Vec<(K, Settle)>);

impl<K> Default for Pending<K> {
    fn default() -> Self {
        Pending(Vec::new())
    }
}

impl<K: PartialEq> Pending<K> {
    pub(super) fn insert(&mut self, key: K, settle: Settle) {
        self.0.push((key, settle));
    }

    pub(super) fn remove(&mut self, key: K) -> Option<Settle> {
        let at = self.0.iter().position(|(k, _)| *k == key)?;
        Some(self.0.swap_remove(at).1)
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Settle> + '_ {
        self.0.drain(..).map(|(_, s)| s)
    }
}
