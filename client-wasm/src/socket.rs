//! The browser WebSocket, owned together with its event handlers.
//!
//! The handlers are `Closure`s stored next to the socket; dropping a [`Socket`] detaches them
//! and closes the socket, so a dead connection can neither call back nor leak
//! (STYLE.md #9: never `.forget()` a closure per connection).

use core::fmt;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::error::Error;
use crate::prelude::*;

/// What a socket reports to its owner.
pub(crate) trait Handler: 'static {
    /// The socket opened.
    fn opened(&self);
    /// A frame arrived: `Ok` with its bytes, `Err` for a text frame.
    fn received(&self, data: Result<Vec<u8>, Error>);
    /// The socket closed (after an error too: browsers always fire `close` last).
    fn closed(&self, code: u16, reason: String);
}

/// One WebSocket connection to the broker, subprotocol `mqtt`, binary frames.
pub(crate) struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(JsValue)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("url", &self.ws.url())
            .field("ready_state", &self.ws.ready_state())
            .finish()
    }
}

impl Socket {
    /// Starts opening a socket to `url`; events go to `handler`.
    pub(crate) fn open<H: Handler + Clone>(url: &str, handler: H) -> Result<Socket, Error> {
        let ws = WebSocket::new_with_str(url, "mqtt").map_err(|e| Error::Open {
            url: url.to_owned(),
            message: crate::js::message(&e),
        })?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let h = handler.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || h.opened());
        let h = handler.clone();
        // Both take a `JsValue`, a closure type the client uses already: every closure type
        // costs its own glue.
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let data = e.unchecked_into::<MessageEvent>().data();
            let bytes = match data.dyn_into::<js_sys::ArrayBuffer>() {
                Ok(buf) => Ok(js_sys::Uint8Array::new(&buf).to_vec()),
                Err(_) => Err(Error::TextFrame),
            };
            h.received(bytes);
        });
        let h = handler;
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let e = e.unchecked_into::<CloseEvent>();
            h.closed(e.code(), e.reason())
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// The socket is open (sending is possible).
    pub(crate) fn is_open(&self) -> bool {
        self.ws.ready_state() == WebSocket::OPEN
    }

    /// Sends one binary frame. A failure means the socket is closing; its `close` event
    /// follows and ends the connection.
    pub(crate) fn send(&self, bytes: &[u8]) {
        let _ = self.ws.send_with_u8_array(bytes);
    }

    /// Starts the closing handshake but keeps the handlers: `closed` still arrives.
    pub(crate) fn close(&self) {
        let _ = self.ws.close();
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}
