//! MQTT over WebSocket: the `/mqtt` endpoint and the adapter from a WebSocket to the byte
//! `Stream`/`Sink` that [`broker::Broker::serve`] takes.
//!
//! Each binary frame is one chunk of the byte stream; chunk boundaries mean nothing to the
//! broker, so a frame may carry several MQTT packets or part of one [MQTT-6.0.0-2].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use broker::{ConnectionInfo, Transport};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};

use crate::http::AppState;

/// The subprotocols MQTT clients offer: `mqtt` (3.1.1 and 5.0) and the older `mqttv3.1`.
/// axum only answers a subprotocol it is told about, and browsers close a socket whose
/// handshake does not echo one they offered.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Room above the broker's largest packet for a frame that carries several packets.
const FRAME_SLACK: usize = 64 * 1024;

/// How long the final close may take when the peer does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /mqtt`: upgrades to a WebSocket and serves one MQTT connection over it.
pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    let max = usize::try_from(state.broker.config().max_packet_size)
        .unwrap_or(usize::MAX)
        .saturating_add(FRAME_SLACK);
    ws.protocols(SUBPROTOCOLS)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let AppState { broker, tracker } = state;
            let tracker = tracker.upgrade();
            let task = async move {
                let info = ConnectionInfo {
                    peer: Some(peer),
                    transport: Transport::WebSocket,
                };
                let mut transport = WsTransport::new(socket);
                match broker.serve(&mut transport, info).await {
                    Ok(()) => tracing::debug!(%peer, "websocket connection closed"),
                    Err(e) => tracing::debug!(%peer, error = %e, "websocket connection ended"),
                }
                // The broker does not close the transport on every path (not before
                // CONNECT); closing twice is harmless, and sends the close code for a
                // protocol violation.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, transport.close()).await;
            };
            async move {
                // No tracker: the bridge is past shutdown; the socket is just dropped.
                if let Some(tracker) = tracker {
                    tracker.run(task).await;
                }
            }
        })
}

/// A WebSocket seen as a stream and sink of MQTT byte chunks.
///
/// In: a binary frame is a chunk; a text frame is a protocol violation and ends the
/// connection with an [`io::ErrorKind::InvalidData`] error [MQTT-6.0.0-1]; ping and pong are
/// skipped (the WebSocket layer answers pings itself); a close frame ends the stream.
/// Out: each chunk is one binary frame. Closing after a text frame sends close code 1002
/// (protocol error).
#[derive(Debug)]
pub(crate) struct WsTransport {
    socket: WebSocket,
    /// Set once the stream has ended or failed: nothing more is read after that.
    done: bool,
    /// The peer sent a text frame; the close frame says so.
    violation: bool,
    /// Our close frame has been queued.
    close_sent: bool,
}

impl WsTransport {
    pub(crate) fn new(socket: WebSocket) -> Self {
        WsTransport {
            socket,
            done: false,
            violation: false,
            close_sent: false,
        }
    }
}

fn to_io(e: axum::Error) -> io::Error {
    io::Error::other(e)
}

impl Stream for WsTransport {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let item = match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(bytes))) => Ok(bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(_))) => {
                    this.violation = true;
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame on an MQTT WebSocket [MQTT-6.0.0-1]",
                    ))
                }
                Some(Ok(Message::Close(_))) | None => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => Err(to_io(e)),
            };
            if item.is_err() {
                this.done = true;
            }
            return Poll::Ready(Some(item));
        }
    }
}

impl Sink<Bytes> for WsTransport {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_ready(cx).map_err(to_io)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> io::Result<()> {
        Pin::new(&mut self.socket)
            .start_send(Message::Binary(item))
            .map_err(to_io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(to_io)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.violation && !this.close_sent {
            ready!(Pin::new(&mut this.socket).poll_ready(cx)).map_err(to_io)?;
            this.close_sent = true;
            Pin::new(&mut this.socket)
                .start_send(Message::Close(Some(CloseFrame {
                    code: close_code::PROTOCOL,
                    reason: "text frame: MQTT needs binary frames".into(),
                })))
                .map_err(to_io)?;
        }
        Pin::new(&mut this.socket).poll_close(cx).map_err(to_io)
    }
}
