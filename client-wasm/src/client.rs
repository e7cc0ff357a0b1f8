//! `MqttClient`: one [`protocol::client::Client`] driven by a browser WebSocket and two
//! timers, with JavaScript listeners and promises around it.
//!
//! # How a call flows
//! Every entry point (a method called from JavaScript, a socket event, a timer) goes through
//! `run`: it borrows the one `Inner`, lets the state machine act, drains its events into
//! a list of JavaScript calls (listeners, promise settlements), flushes the packets to send,
//! re-arms the keep-alive timer, releases the borrow and only then makes the JavaScript
//! calls. So a listener may call back into the client (publish from `on('message')`) without
//! ever meeting a borrowed state.
//!
//! # What a publish costs
//! The promises of `publish`, `subscribe` and `unsubscribe` live in a JavaScript `Map`
//! (`js/client.js`): one call makes a promise, and the publishes acknowledged in one run
//! (all the PUBACKs of a received frame) are settled by one call. The packets of these
//! three methods wait for a microtask, so that the calls of one task leave in one WebSocket
//! frame (see `Inner::after`).

use alloc::collections::VecDeque;
use alloc::rc::{Rc, Weak};
use core::cell::RefCell;

use js_sys::{Array, Function, Promise, Uint8Array};
use protocol::client::{Client, ClientOptions, Event};
use protocol::{Publish, ReasonCode, TopicName};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::{self, Error};
use crate::js::{self, Settle};
use crate::options::{self, Hooks, Reconnect};
use crate::socket::{Handler, Socket};
use crate::store::{self, Commit, Held, Store};
use crate::timer::{now, Timer};

mod calls;
mod opening;
mod values;

use crate::prelude::*;
use opening::Preparer;
use values::{connack_object, session_object};

/// The bytes of packets sent in one WebSocket frame, at most (plus one packet): a burst of
/// publishes goes in frames of this size, which every broker takes (the bridge reads frames
/// up to its maximum packet size plus 64 KiB).
const FRAME_BATCH: usize = 64 * 1024;

/// Messages kept while no `message` listener is registered yet (they can arrive in the
/// CONNACK's frame, before `await connect()` returns); delivered to the first listener.
const MAX_UNHEARD: usize = 1000;

/// `connect(url, opts)`: resolves with a connected [`MqttClient`] once the first CONNACK
/// accepts the connection; rejects with why it did not (bad URL or options, socket refused,
/// CONNACK refused). After that, lost connections are re-established automatically.
#[wasm_bindgen(skip_typescript)]
pub fn connect(url: String, opts: JsValue) -> Promise {
    let (promise, settle) = js::promise();
    let (options, reconnect, persistence, hooks) = match options::parse(&opts) {
        Ok(o) => o,
        Err(e) => {
            let _ = settle.reject.call1(&JsValue::NULL, &e);
            return promise;
        }
    };
    let store_name = persistence.map(|name| {
        name.unwrap_or_else(|| format!("mqtt-bridge-client {url} {}", options.client_id))
    });
    let inner =
        Rc::new_cyclic(|weak| RefCell::new(Inner::new(url, options, reconnect, hooks, weak)));
    let handle = MqttClient {
        inner: inner.clone(),
    };
    let weak = Rc::downgrade(&inner);
    run(&weak, |i| {
        i.connecting = Some((settle, handle));
        if store_name.is_none() {
            i.open_socket();
        }
    });
    if let Some(name) = store_name {
        // The stored session first, then the socket.
        // `FnMut` closures of a type the socket already uses: `Closure::once` would add
        // kilobytes of glue. Handed to JavaScript for good (a few bytes per `connect`).
        let w = weak.clone();
        let opened =
            Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| run(&w, |i| i.store_opened(&v)));
        let failed = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            run(&weak, |i| i.fail_connect(Error::Store(js::message(&e))))
        });
        let _ = store::open_store(&name).then2(&opened, &failed);
        opened.forget();
        failed.forget();
    }
    promise
}

/// The MQTT client handed to JavaScript.
#[wasm_bindgen(skip_typescript)]
#[derive(Debug)]
pub struct MqttClient {
    inner: Rc<RefCell<Inner>>,
}

#[wasm_bindgen]
impl MqttClient {
    /// `publish(topic, payload, { qos, retain })`: resolves with the reason code when the
    /// broker acknowledged (QoS 1 PUBACK, QoS 2 PUBCOMP) or, at QoS 0, once sent.
    pub fn publish(&self, topic: String, payload: JsValue, opts: JsValue) -> Promise {
        self.request(|i| i.publish(topic, &payload, &opts).map(|t| t as f64))
    }

    /// `subscribe(filter | filters, { qos, nl, rap, rh })`: resolves with one reason code per
    /// filter (0, 1, 2 = the granted QoS; 0x80 and up = refused).
    pub fn subscribe(&self, filters: JsValue, opts: JsValue) -> Promise {
        self.request(|i| i.subscribe(&filters, &opts).map(request_key))
    }

    /// `unsubscribe(filter | filters)`: resolves with one reason code per filter.
    pub fn unsubscribe(&self, filters: JsValue) -> Promise {
        self.request(|i| i.unsubscribe(&filters).map(request_key))
    }

    /// `on(event, listener)`.
    pub fn on(&self, event: String, listener: Function) {
        self.run(|i| {
            let first_for_messages = event == "message" && !i.has_listener("message");
            i.listeners.push((event, listener));
            if first_for_messages {
                while let Some(p) = i.unheard.pop_front() {
                    i.deliver_message(p);
                }
            }
        });
    }

    /// `off(event, listener)`.
    pub fn off(&self, event: String, listener: Function) {
        self.run(|i| {
            i.listeners
                .retain(|(e, f)| !(e == &event && JsValue::from(f) == JsValue::from(&listener)))
        });
    }

    /// `end()`: sends DISCONNECT, stops reconnecting, rejects what is still pending, and
    /// resolves once the socket has closed.
    pub fn end(&self) -> Promise {
        let (p, settle) = js::promise();
        self.run(|i| i.end(settle));
        p
    }

    /// `session()`: the state machine's own view of its session, as a plain object.
    pub fn session(&self) -> JsValue {
        let mut out = JsValue::UNDEFINED;
        self.run(|i| out = session_object(&i.client.session()).into());
        out
    }

    /// `connected`: CONNACK accepted and the connection not lost since.
    #[wasm_bindgen(getter)]
    pub fn connected(&self) -> bool {
        let mut out = false;
        self.run(|i| out = i.client.is_connected());
        out
    }
}

impl MqttClient {
    fn run(&self, f: impl FnOnce(&mut Inner)) {
        run(&Rc::downgrade(&self.inner), f);
    }

    /// A publish, subscribe or unsubscribe: `f` gives the key its promise is kept under (see
    /// `calls`). Its packet goes out with the others made in the same task (`Inner::after`).
    fn request(&self, f: impl FnOnce(&mut Inner) -> Result<f64, Error>) -> Promise {
        let mut out = None;
        self.run(|i| {
            i.defer_flush = true;
            out = Some(match f(i) {
                Ok(key) => calls::track(&i.promises, key),
                Err(e) => Promise::reject(&e.into()),
            });
        });
        // Only when called back from inside the client (an option getter): never settled.
        out.unwrap_or_else(|| js::promise().0)
    }
}

/// Requests' promises are kept under minus their packet id, beside the publishes' tokens.
fn request_key(id: u16) -> f64 {
    -f64::from(id)
}

/// Lets `f` act on the client, then makes the JavaScript calls it queued (see the module
/// docs).
fn run(weak: &Weak<RefCell<Inner>>, f: impl FnOnce(&mut Inner)) {
    let mut f = Some(f);
    run_dyn(weak, &mut |i| {
        if let Some(f) = f.take() {
            f(i)
        }
    });
}

/// The body of [`run`], not generic: one copy instead of one per entry point.
fn run_dyn(weak: &Weak<RefCell<Inner>>, f: &mut dyn FnMut(&mut Inner)) {
    let Some(rc) = weak.upgrade() else {
        return;
    };
    let (calls, done) = {
        let Ok(mut inner) = rc.try_borrow_mut() else {
            return;
        };
        f(&mut inner);
        inner.after();
        // The promises' map only when there is something to settle (a clone is a crossing).
        let done = (!inner.done.0.is_empty())
            .then(|| (core::mem::take(&mut inner.done), inner.promises.clone()));
        (core::mem::take(&mut inner.calls), done)
    };
    if let Some(((keys, codes), promises)) = done {
        calls::settle(&promises, &keys, &codes);
    }
    for (f, args) in calls {
        // A throwing listener must not stop the others (nor the client).
        let _ = f.apply(&JsValue::NULL, &args);
    }
}

/// The socket's and the timers' way back to the client: weak, so that they never keep a
/// client alive that JavaScript has let go.
#[derive(Debug, Clone)]
struct Link(Weak<RefCell<Inner>>);

impl Handler for Link {
    fn opened(&self) {
        run(&self.0, |i| {
            if let Err(e) = i.client.connect(now()) {
                i.connection_down(Some(e.into()));
            }
        });
    }

    fn received(&self, data: Result<Vec<u8>, Error>) {
        run(&self.0, |i| {
            let result = data.and_then(|b| Ok(i.client.handle_bytes(&b, now())?));
            if let Err(e) = result {
                i.connection_down(Some(e));
            }
        });
    }

    fn closed(&self, code: u16, reason: String) {
        run(&self.0, |i| {
            if i.ended {
                i.finish_end();
            } else {
                i.connection_down(Some(Error::Closed { code, reason }));
            }
        });
    }
}

/// Everything one client owns. Only [`run`] touches it.
struct Inner {
    client: Client,
    /// The broker's WebSocket URL given to `connect`, reused by every reconnection (through
    /// `transformWsUrl` when given).
    url: String,
    reconnect: Reconnect,
    /// The URL and credentials of each attempt (`transformWsUrl`, and `username` and
    /// `password` when they are functions).
    preparer: Preparer,
    /// The current connection, if any; dropping it detaches its handlers and closes it.
    socket: Option<Socket>,
    /// Fires at the state machine's `poll_timeout()`: PINGREQ, or a late CONNACK/PINGRESP.
    keepalive: Timer,
    /// Fires when the next reconnection attempt is due.
    retry: Timer,
    /// With `persistence`: the IndexedDB store and what waits for its writes.
    store: Option<Store>,
    /// Called by each store write when it is done.
    on_write: Closure<dyn FnMut(JsValue)>,
    /// Counts sockets opened, so that bytes held for a closed one are never sent on the next.
    generation: u32,
    /// `end()` came while output waited for the store: close once it has gone.
    close_when_idle: bool,
    /// Failed attempts since the last accepted CONNACK (drives the backoff).
    attempts: u32,
    /// CONNACK accepted on the current socket.
    online: bool,
    /// `end()` was called, or the first connection failed: no more reconnecting.
    ended: bool,
    /// The `connect()` promise and the handle it resolves with, until the first CONNACK
    /// (holding the handle keeps the client alive until then).
    connecting: Option<(Settle, MqttClient)>,
    /// `end()` promises waiting for the socket to close.
    ending: Vec<Settle>,
    /// The promises of `publish` (by the state machine's token) and of `subscribe` and
    /// `unsubscribe` (by minus their packet id): a JavaScript `Map` (see `calls`).
    promises: JsValue,
    /// Publishes acknowledged in this run: their keys and reason codes, for one
    /// `calls::settle` once the borrow is released.
    done: (Vec<f64>, Vec<u8>),
    /// A publish, subscribe or unsubscribe call: its packet waits for the end of the task.
    defer_flush: bool,
    /// A flush is queued as a microtask.
    flush_queued: bool,
    /// The microtask that flushes what calls made in a row queued.
    on_soon: Closure<dyn FnMut()>,
    listeners: Vec<(String, Function)>,
    /// Messages that arrived before any `message` listener; at most [`MAX_UNHEARD`].
    unheard: VecDeque<Publish>,
    /// JavaScript calls to make once the borrow is released.
    calls: Vec<(Function, Array)>,
    /// The topic of the last message delivered, as a JavaScript string.
    last_topic: Option<(TopicName, JsValue)>,
    /// The topic of the last `publish`, validated.
    last_published: Option<TopicName>,
    /// This client, for the handlers of the sockets it opens.
    this: Weak<RefCell<Inner>>,
}

impl core::fmt::Debug for Inner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inner")
            .field("url", &self.url)
            .field("online", &self.online)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn new(
        url: String,
        options: ClientOptions,
        reconnect: Reconnect,
        hooks: Hooks,
        this: &Weak<RefCell<Inner>>,
    ) -> Self {
        let w = this.clone();
        let keepalive = Timer::new(move || {
            run(&w, |i| {
                i.keepalive.fired();
                if let Err(e) = i.client.handle_timeout(now()) {
                    i.connection_down(Some(e.into()));
                }
            })
        });
        let w = this.clone();
        let retry = Timer::new(move || {
            run(&w, |i| {
                i.retry.fired();
                if !i.ended {
                    i.emit("reconnect", &[]);
                    i.open_socket();
                }
            })
        });
        let w = this.clone();
        let on_write = Closure::new(move |ok: JsValue| run(&w, |i| i.committed(ok.is_truthy())));
        let w = this.clone();
        let on_soon = Closure::new(move || run(&w, |i| i.flush_queued = false));
        Inner {
            client: Client::new(options),
            url,
            reconnect,
            preparer: Preparer::new(hooks, this),
            socket: None,
            keepalive,
            retry,
            store: None,
            on_write,
            generation: 0,
            close_when_idle: false,
            attempts: 0,
            online: false,
            ended: false,
            connecting: None,
            ending: Vec::new(),
            promises: calls::promises(),
            done: Default::default(),
            defer_flush: false,
            flush_queued: false,
            on_soon,
            listeners: Vec::new(),
            unheard: VecDeque::new(),
            calls: Vec::new(),
            last_topic: None,
            last_published: None,
            this: this.clone(),
        }
    }

    /// After every entry point: events to JavaScript, packets to the socket, timer re-armed.
    ///
    /// After `publish`, `subscribe` and `unsubscribe` the packets wait for a microtask, so
    /// that calls made in a row (a loop of publishes, or the publishes a batch of PUBACKs
    /// lets go on) leave in one WebSocket frame instead of one each: a `send` costs tens of
    /// µs in Chromium (a copy and a message to the network process), more than the MQTT work.
    fn after(&mut self) {
        self.drain_events();
        if core::mem::take(&mut self.defer_flush) {
            if !self.flush_queued {
                self.flush_queued = true;
                calls::soon(self.on_soon.as_ref().unchecked_ref());
            }
            return;
        }
        self.flush();
        match self.client.poll_timeout() {
            Some(at) => self
                .keepalive
                .schedule(at.as_millis().saturating_sub(now().as_millis())),
            None => self.keepalive.cancel(),
        }
    }

    /// With `persistence`: starts writing what the state machine changed. Everything shown
    /// to the outside after this waits for the write (see [`crate::store`]).
    fn save(&mut self) {
        if let Some(st) = self.store.as_mut() {
            let ops = self.client.take_store_ops();
            if !ops.is_empty() {
                st.write(ops, self.on_write.as_ref().unchecked_ref());
            }
        }
    }

    /// The store opened: take back the stored session, then connect.
    fn store_opened(&mut self, v: &JsValue) {
        let v = Array::from(v);
        let (keys, values) = (Array::from(&v.get(1)), Array::from(&v.get(2)));
        let mut records = Vec::new();
        for (k, value) in keys.iter().zip(values.iter()) {
            let Some(key) = store::store_key(&k) else {
                continue;
            };
            let bytes = value
                .dyn_ref::<Uint8Array>()
                .map(Uint8Array::to_vec)
                .unwrap_or_default();
            records.push((key, bytes));
        }
        let restored = self
            .client
            .restore(records.iter().map(|(k, b)| (*k, &b[..])));
        let store = Store::new(v.get(0), v.get(3).unchecked_into());
        match restored {
            Ok(()) => {
                self.store = Some(store);
                self.open_socket();
            }
            Err(e) => {
                store.release();
                self.fail_connect(Error::Store(format!(
                    "unreadable stored session ({e}): delete its IndexedDB database"
                )));
            }
        }
    }

    /// A store write is done: send and deliver what waited for it (see [`crate::store`] for
    /// what a failed write leads to).
    fn committed(&mut self, ok: bool) {
        let Some(st) = self.store.as_mut() else {
            return;
        };
        let items = match st.committed(ok) {
            Commit::Release(items) => items,
            Commit::Rewrite => {
                self.client.touch_all();
                let ops = self.client.take_store_ops();
                st.rewrite(ops, self.on_write.as_ref().unchecked_ref());
                let e = "an IndexedDB write failed; rewriting the session";
                self.emit("error", &[Error::Store(e.into()).into()]);
                return;
            }
            Commit::GiveUp(items) => {
                st.release();
                self.store = None;
                let e = "IndexedDB writes keep failing: persistence is off for this client";
                self.emit("error", &[Error::Store(e.into()).into()]);
                items
            }
        };
        for item in items {
            match item {
                Held::Bytes(generation, bytes) => {
                    let socket = self.socket.as_ref().filter(|s| s.is_open());
                    if let Some(s) = socket.filter(|_| generation == self.generation) {
                        s.send(&bytes);
                    }
                }
                Held::Message(p) => self.deliver_message(*p),
            }
        }
        let idle = self.store.as_ref().is_none_or(Store::idle);
        if self.close_when_idle && idle {
            self.close_when_idle = false;
            if let Some(s) = &self.socket {
                s.close();
            }
        }
    }

    /// The first connection cannot be made: `connect()` rejects, nothing is retried.
    fn fail_connect(&mut self, e: Error) {
        if let Some((settle, _handle)) = self.connecting.take() {
            self.call(&settle.reject, e.into());
        }
        self.ended = true;
        self.retry.cancel();
        self.socket = None;
    }

    fn drain_events(&mut self) {
        self.save();
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Connected { connack, .. } => {
                    self.online = true;
                    self.attempts = 0;
                    self.emit("connect", &[connack_object(&connack).into()]);
                    if let Some((settle, handle)) = self.connecting.take() {
                        self.call(&settle.resolve, handle.into());
                    }
                }
                Event::Message(p) => self.emit_message(p),
                Event::Published { token, reason } => {
                    let key = token.0 as f64;
                    if reason.is_error() {
                        let e = Error::Refused(reason).into();
                        calls::settle_one(&self.promises, key, &e, false);
                    } else {
                        self.done.0.push(key);
                        self.done.1.push(reason.as_u8());
                    }
                }
                Event::SubAck(ack) => {
                    self.settle_request(ack.packet_id.get(), &ack.reasons);
                }
                Event::UnsubAck(ack) => {
                    self.settle_request(ack.packet_id.get(), &ack.reasons);
                }
            }
        }
    }

    fn settle_request(&mut self, id: u16, reasons: &[ReasonCode]) {
        let codes = js::numbers(reasons.iter().map(|r| u32::from(r.as_u8())));
        calls::settle_one(&self.promises, request_key(id), &codes, true);
    }

    /// Sends what the state machine queued, if the socket is open (otherwise it is
    /// discarded: the machine only queues packets for a live connection), in frames of
    /// about [`FRAME_BATCH`] bytes.
    fn flush(&mut self) {
        self.save();
        loop {
            let mut buf = Vec::new();
            match self.client.encode_transmit_upto(&mut buf, FRAME_BATCH) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => self.emit("error", &[Error::from(e).into()]),
            }
            if let Some(st) = self.store.as_mut().filter(|st| st.busy()) {
                if !buf.is_empty() {
                    st.hold(Held::Bytes(self.generation, buf));
                }
            } else if let Some(s) = self.socket.as_ref().filter(|s| s.is_open()) {
                if !buf.is_empty() {
                    s.send(&buf);
                }
            }
        }
    }

    /// The connection is over (socket closed, or the state machine ended it): tell the
    /// application, and retry after the backoff unless ended.
    fn connection_down(&mut self, err: Option<Error>) {
        self.drain_events();
        self.flush(); // a DISCONNECT the machine queued when it gave up
        self.client.connection_lost();
        self.socket = None;
        self.keepalive.cancel();
        let was_online = core::mem::take(&mut self.online);
        if self.connecting.is_some() {
            // The first connection failed: `connect()` rejects with why; no retrying.
            // Name the URL: "closed (code 1006)" alone does not say which connection.
            let early = |code: u16| Error::Open {
                url: self.url.clone(),
                message: format!(
                    "the socket closed (code {code}) before the broker accepted the connection"
                ),
            };
            let e = match err {
                Some(Error::Closed { code, .. }) => early(code),
                Some(e) => e,
                None => early(1006),
            };
            self.fail_connect(e);
            return;
        }
        if let Some(e) = err.filter(|e| !matches!(e, Error::Closed { .. })) {
            self.emit("error", &[e.into()]);
        }
        self.emit("close", &[]);
        if was_online {
            self.emit("offline", &[]);
        }
        if self.ended {
            return;
        }
        if !self.reconnect.enabled {
            self.ended = true;
            self.reject_pending();
            return;
        }
        let delay = self.reconnect.delay(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        self.retry.schedule(delay);
    }

    fn end(&mut self, settle: Settle) {
        if !self.ended {
            self.ended = true;
            self.retry.cancel();
            self.client.disconnect(ReasonCode::Success, now());
            self.flush();
            self.reject_pending();
        }
        match &self.socket {
            Some(s) => {
                // Output waiting for the store (the DISCONNECT last) goes first.
                if self.store.as_ref().is_some_and(Store::busy) {
                    self.close_when_idle = true;
                } else {
                    s.close();
                }
                self.ending.push(settle);
            }
            None => {
                if let Some(st) = self.store.take() {
                    st.release();
                }
                self.call(&settle.resolve, JsValue::UNDEFINED)
            }
        }
    }

    /// The socket closed after `end()`.
    fn finish_end(&mut self) {
        self.socket = None;
        if let Some(st) = self.store.take() {
            st.release();
        }
        self.keepalive.cancel();
        for s in core::mem::take(&mut self.ending) {
            self.call(&s.resolve, JsValue::UNDEFINED);
        }
        self.emit("close", &[]);
        if core::mem::take(&mut self.online) {
            self.emit("offline", &[]);
        }
    }

    fn reject_pending(&mut self) {
        // Those acknowledged in this run first: they are done, not ended.
        let (keys, codes) = core::mem::take(&mut self.done);
        calls::settle(&self.promises, &keys, &codes);
        calls::reject_all(&self.promises, error::ENDED);
    }
}
