//! The `persistence` option: the state machine's store records in IndexedDB, and the
//! packets and messages that must wait until the records they depend on are written.
//!
//! # The rule
//! After every step the client writes what the step changed (one IndexedDB transaction),
//! and everything the step would show the outside world (packets to the socket, messages
//! to listeners) waits until that transaction and every earlier one have committed. So a
//! PUBLISH is on the wire only once its record (with its packet id) is stored, and a QoS 2
//! message is delivered, and its PUBREC sent, only once its packet id is stored: a reload
//! at any moment resumes the same messages with the same ids and never delivers a QoS 2
//! message twice. Commits arrive in the order the transactions were made (one object
//! store), so a counter is enough to know what may go.

use std::collections::VecDeque;

use js_sys::{Array, Function, Uint8Array};
use protocol::client::{StoreKey, StoreOp};
use protocol::{PacketId, Publish};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen(module = "/js/store.js")]
extern "C" {
    /// Resolves with `[db, keys, values]`.
    #[wasm_bindgen(js_name = openStore)]
    pub(crate) fn open_store(name: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_name = writeStore)]
    fn write_store(db: &JsValue, keys: &Array, values: &Array, done: &Function);
}

/// Record keys in IndexedDB: outgoing messages by token (≥ 0), incoming QoS 2 by minus
/// their packet id.
fn js_key(key: StoreKey) -> JsValue {
    match key {
        StoreKey::Outbound(token) => JsValue::from(token as f64),
        StoreKey::Inbound(id) => JsValue::from(-f64::from(id.get())),
    }
}

/// The inverse of [`js_key`]; `None` for a key this code never writes.
pub(crate) fn store_key(key: &JsValue) -> Option<StoreKey> {
    let n = key.as_f64().filter(|n| n.fract() == 0.0)?;
    if n >= 0.0 {
        Some(StoreKey::Outbound(n as u64))
    } else {
        PacketId::new(u16::try_from(-n as u64).ok()?).map(StoreKey::Inbound)
    }
}

/// What waits for a write.
#[derive(Debug)]
pub(crate) enum Held {
    /// Bytes for the socket of connection number `.0`.
    Bytes(u32, Vec<u8>),
    /// A message for the listeners.
    Message(Box<Publish>),
}

/// The open database and what waits for it.
#[derive(Debug)]
pub(crate) struct Store {
    /// The `IDBDatabase`.
    db: JsValue,
    /// Transactions started / committed (or failed) so far.
    started: u64,
    done: u64,
    /// What may go once transaction number `.0` is done, in order.
    held: VecDeque<(u64, Held)>,
}

impl Store {
    pub(crate) fn new(db: JsValue) -> Self {
        Store {
            db,
            started: 0,
            done: 0,
            held: VecDeque::new(),
        }
    }

    /// Starts one transaction with `ops`; `done` is called with whether it committed.
    pub(crate) fn write(&mut self, ops: Vec<StoreOp>, done: &Function) {
        let keys = Array::new();
        let values = Array::new();
        for op in ops {
            let (key, value) = match op {
                StoreOp::Put(k, v) => (k, Uint8Array::from(&v[..]).into()),
                StoreOp::Delete(k) => (k, JsValue::UNDEFINED),
            };
            keys.push(&js_key(key));
            values.push(&value);
        }
        self.started += 1;
        write_store(&self.db, &keys, &values, done);
    }

    /// Whether output must wait (a transaction is still open, or output waits already).
    pub(crate) fn busy(&self) -> bool {
        self.done < self.started || !self.held.is_empty()
    }

    /// Keeps `item` until every transaction started so far is done.
    pub(crate) fn hold(&mut self, item: Held) {
        self.held.push_back((self.started, item));
    }

    /// One more transaction is done: returns what may go now, in order.
    pub(crate) fn committed(&mut self) -> Vec<Held> {
        self.done += 1;
        let mut out = Vec::new();
        while let Some((after, _)) = self.held.front() {
            if *after > self.done {
                break;
            }
            if let Some((_, item)) = self.held.pop_front() {
                out.push(item);
            }
        }
        out
    }

    /// Whether nothing waits.
    pub(crate) fn idle(&self) -> bool {
        self.held.is_empty()
    }
}
