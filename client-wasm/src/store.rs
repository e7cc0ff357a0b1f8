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
//!
//! # When a write fails
//! A failed transaction leaves the store behind the session (later writes carry only
//! changes). Its output keeps waiting; the store is cleared and the whole session written
//! again in one transaction ([`Store::rewrite`]), and the output goes once that commits.
//! Writes started before the rewrite may fail too (the same cause): the rewrite supersedes
//! them. If the rewrite or a write after it fails as well, the client stops persisting
//! (it says so with an `error` event) and goes on without it, so that a full disk never
//! stops the connection.

use alloc::collections::VecDeque;

use crate::prelude::*;
use js_sys::{Array, Function, Uint8Array};
use protocol::client::{StoreKey, StoreOp};
use protocol::{PacketId, Publish};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    /// Resolves with `[db, keys, values]`.
    #[wasm_bindgen(js_name = openStore)]
    pub(crate) fn open_store(name: &str) -> js_sys::Promise;
    #[wasm_bindgen(js_name = writeStore)]
    fn write_store(db: &JsValue, clear: bool, keys: &Array, values: &Array, done: &Function);
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
    // `% 1.0` rather than `fract()`, which needs std (the package builds without it).
    let n = key.as_f64().filter(|n| n % 1.0 == 0.0)?;
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
    /// The number of the rewrite transaction while one is pending.
    rewrite_at: Option<u64>,
    /// Lets the Web Lock on the store go (see `js/client.js`).
    release: Function,
}

/// What a finished transaction means for the held output.
#[derive(Debug)]
pub(crate) enum Commit {
    /// These may go now, in order.
    Release(Vec<Held>),
    /// A write failed: rewrite the whole session ([`Store::rewrite`]); output keeps waiting.
    Rewrite,
    /// The rewrite failed too: stop persisting; this is everything that was waiting.
    GiveUp(Vec<Held>),
}

impl Store {
    pub(crate) fn new(db: JsValue, release: Function) -> Self {
        Store {
            db,
            started: 0,
            done: 0,
            held: VecDeque::new(),
            rewrite_at: None,
            release,
        }
    }

    /// Starts one transaction with `ops`; `done` is called with whether it committed.
    pub(crate) fn write(&mut self, ops: Vec<StoreOp>, done: &Function) {
        self.start(false, ops, done);
    }

    /// Starts a transaction that clears the store and writes `ops`, the whole session (from
    /// `Client::touch_all`); everything held waits for it.
    pub(crate) fn rewrite(&mut self, ops: Vec<StoreOp>, done: &Function) {
        self.start(true, ops, done);
        self.rewrite_at = Some(self.started);
        for (after, _) in &mut self.held {
            *after = self.started;
        }
    }

    /// Lets the store's Web Lock go: another client with this id may open it.
    pub(crate) fn release(&self) {
        let _ = self.release.call0(&JsValue::NULL);
    }

    fn start(&mut self, clear: bool, ops: Vec<StoreOp>, done: &Function) {
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
        write_store(&self.db, clear, &keys, &values, done);
    }

    /// Whether output must wait (a transaction is still open, or output waits already).
    pub(crate) fn busy(&self) -> bool {
        self.done < self.started || !self.held.is_empty()
    }

    /// Keeps `item` until every transaction started so far is done.
    pub(crate) fn hold(&mut self, item: Held) {
        self.held.push_back((self.started, item));
    }

    /// One more transaction is done (`ok`: committed): what follows for the held output.
    pub(crate) fn committed(&mut self, ok: bool) -> Commit {
        self.done += 1;
        let n = self.done;
        match (ok, self.rewrite_at) {
            // Superseded by a rewrite started after it.
            (false, Some(r)) if n < r => return Commit::Release(Vec::new()),
            (false, Some(_)) => return Commit::GiveUp(self.ready(u64::MAX)),
            (false, None) => return Commit::Rewrite,
            (true, Some(r)) if n >= r => self.rewrite_at = None,
            (true, _) => {}
        }
        Commit::Release(self.ready(n))
    }

    /// Takes what waits for transactions up to number `n`, in order.
    fn ready(&mut self, n: u64) -> Vec<Held> {
        let mut out = Vec::new();
        while let Some((after, _)) = self.held.front() {
            if *after > n {
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
