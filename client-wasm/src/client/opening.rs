//! Opening a connection: the WebSocket URL and the credentials, read again for every
//! attempt (calling `transformWsUrl`, and `username` and `password` when they are
//! functions), then the socket.
//!
//! # Why every attempt reads them, and before the socket opens
//! A browser app that connects with a short-lived token (a JWT from its backend, in the
//! password or the URL) needs a fresh one for each reconnection: the CONNECT is the only
//! place the broker looks at it. The URL is needed to open the socket, and the three are
//! awaited together in `js/client.js`: one wait per attempt (a microtask when none is a
//! function), and a function that fails costs no socket. What they give is at most one
//! WebSocket handshake old when the CONNECT carries it.
//!
//! # When a function fails
//! It throws, rejects, or gives a value of the wrong type: that attempt fails as a network
//! failure would. The first `connect()` rejects with the error; after that, the client emits
//! `error` and `close` and tries again after the backoff (a token service may be down for a
//! moment, as a network may), until `end()`.

use alloc::rc::Weak;
use core::cell::RefCell;

use js_sys::Array;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use super::{run, Inner, Link};
use crate::error::Error;
use crate::options::{self, Hooks};
use crate::prelude::*;
use crate::socket::Socket;

#[wasm_bindgen(module = "/js/client.js")]
extern "C" {
    /// Calls the functions among `transform`, `username` and `password` and passes
    /// `[url, username, password]`, or a message saying which one failed, to `done`.
    fn prepare(
        url: &str,
        transform: &JsValue,
        username: &JsValue,
        password: &JsValue,
        done: &JsValue,
    );
}

/// The options read before every attempt and the callback their values come back through:
/// made once per client, reused by every attempt, freed with the client (never `forget`).
pub(super) struct Preparer {
    hooks: Hooks,
    done: Closure<dyn FnMut(JsValue)>,
    /// An attempt waits for the functions; only then is an answer taken.
    waiting: bool,
}

impl Preparer {
    pub(super) fn new(hooks: Hooks, this: &Weak<RefCell<Inner>>) -> Self {
        let w = this.clone();
        Preparer {
            hooks,
            done: Closure::new(move |v| run(&w, |i| i.prepared(v))),
            waiting: false,
        }
    }
}

impl Inner {
    /// Starts a connection attempt: the URL and credentials first.
    pub(super) fn open_socket(&mut self) {
        let p = &mut self.preparer;
        p.waiting = true;
        let h = &p.hooks;
        prepare(&self.url, &h.url, &h.username, &h.password, p.done.as_ref());
    }

    fn open_url(&mut self, url: String) {
        self.generation = self.generation.wrapping_add(1);
        match Socket::open(&url, Link(self.this.clone())) {
            Ok(s) => self.socket = Some(s),
            Err(e) => self.connection_down(Some(e)),
        }
    }

    /// The functions answered: `[url, username, password]`, or why one failed. Ignored
    /// unless an attempt waits for it (not after `end()`).
    fn prepared(&mut self, v: JsValue) {
        if !core::mem::take(&mut self.preparer.waiting) || self.ended {
            return;
        }
        let url = match v.as_string() {
            Some(message) => Err(Error::Open {
                url: self.url.clone(),
                message,
            }),
            None => self.take_credentials(&Array::from(&v)),
        };
        match url {
            Ok(url) => self.open_url(url),
            Err(e) => self.connection_down(Some(e)),
        }
    }

    /// Gives the state machine the user name and password for its next CONNECT and returns
    /// the URL to open.
    fn take_credentials(&mut self, v: &Array) -> Result<String, Error> {
        let url = v.get(0).as_string().ok_or(Error::Argument(
            "transformWsUrl must give a string or a promise of one",
        ))?;
        let (username, password) = options::credentials(&v.get(1), &v.get(2))?;
        self.client.set_credentials(username, password);
        Ok(url)
    }
}
