//! The one error type of the crate, and the one place it becomes a JavaScript `Error`.

use crate::prelude::*;
use protocol::client::ClientError;
use protocol::{ReasonCode, TopicError};
use wasm_bindgen::JsValue;

/// The message of [`Error::Ended`].
pub(crate) const ENDED: &str = "the client was ended";

/// Everything that can go wrong between JavaScript and the state machine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The state machine refused an operation or ended the connection.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A topic name or filter given by the application is not valid.
    #[error("invalid topic: {0}")]
    Topic(#[from] TopicError),
    /// An option or argument has the wrong type or range.
    #[error("invalid argument: {0}")]
    Argument(&'static str),
    /// `new WebSocket(url)` threw (a malformed URL, a forbidden port, ...), or a
    /// `transformWsUrl`, `username` or `password` function threw or rejected.
    #[error("cannot open a WebSocket to {url}: {message}")]
    Open {
        /// The URL given to `connect` (or the one `transformWsUrl` gave).
        url: String,
        /// What the browser said, or which function failed and what it threw.
        message: String,
    },
    /// The socket closed (or could not connect: the browser reports code 1006).
    #[error("the WebSocket closed (code {code}){}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason, if the server gave one.
        reason: String,
    },
    /// A text frame arrived; MQTT over WebSocket is binary only [MQTT-6.0.0-1].
    #[error("the server sent a text frame; MQTT over WebSocket uses binary frames only")]
    TextFrame,
    /// The server acknowledged a publish with an error reason.
    #[error("the server refused the message: {0}")]
    Refused(ReasonCode),
    /// IndexedDB (the `persistence` option) could not be opened, read or written, or holds
    /// a session this version cannot read.
    #[error("persistence: {0}")]
    Store(String),
    /// A JavaScript error, given as it is (a bad option, checked in `js/client.js`).
    #[error("a JavaScript error")]
    Js(JsValue),
    /// `end()` was called before the operation finished.
    #[error("{}", ENDED)]
    Ended,
}

impl Error {
    /// The MQTT reason code behind the error, when there is one (`error.reasonCode` in JS).
    fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            Error::Refused(r) | Error::Client(ClientError::Refused(r)) => Some(*r),
            Error::Client(ClientError::DisconnectedByServer { reason, .. }) => Some(*reason),
            _ => None,
        }
    }
}

impl From<Error> for JsValue {
    fn from(e: Error) -> JsValue {
        if let Error::Js(v) = e {
            return v;
        }
        let js = js_sys::Error::new(&e.to_string());
        if let Some(code) = e.reason_code() {
            let _ = js_sys::Reflect::set(&js, &"reasonCode".into(), &code.as_u8().into());
        }
        js.into()
    }
}
