//! MQTT over WebSocket: the `/mqtt` endpoint and the adapter from a WebSocket to the byte
//! `Stream`/`Sink` that [`broker::Broker::serve`] takes.
//!
//! Each binary frame is one chunk of the byte stream; chunk boundaries mean nothing to the
//! broker, so a frame may carry several MQTT packets or part of one [MQTT-6.0.0-2].
//!
//! # Memory
//! The WebSocket layer (tungstenite) is given small buffers: an idle connection then holds
//! [`READ_BUFFER`] bytes of read buffer and no write buffer, instead of tungstenite's
//! default 128 KiB (which it zero-fills on the first read, so all of it is resident).
//! Larger frames still arrive whole: the read buffer grows to the frame's announced length,
//! up to the frame limit. Outgoing frames are written as soon as they are sent (the broker
//! already batches packets into one chunk), and what the socket does not take is held for
//! at most one chunk: the write buffer is capped, and the broker waits on `poll_ready`.
//!
//! # Control frames
//! tungstenite answers a ping with a pong and keeps at most one pong waiting, so pongs no
//! longer pile up for a peer that does not read (with the write buffer capped, a pong that
//! does not fit waits and is replaced by the next one). A peer sending pings faster than
//! [`PingBudget`] allows (a burst of [`PING_BURST`], then [`PING_REFILL_PER_SEC`] a second)
//! is closed with 1008 (policy violation): no MQTT client needs more, and each ping costs
//! a write.
//!
//! # Who may connect
//! Before anything is counted, the upgrade is refused when the page's `Origin` is not allowed
//! ([`crate::guard::Guard::websocket_origin`]: 403) or when the client offers subprotocols
//! and none is MQTT's (400); a client that offers none is let through, as non-browser
//! clients often do. The connection's address is the guard's client address (a trusted
//! proxy's forwarded one), and a request that came over TLS is passed on as secure, with its
//! client certificate's name.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use broker::{ConnectionInfo, Transport};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};

use crate::guard::RequestContext;
use crate::state::{AppState, TlsConnection};

/// The subprotocols MQTT clients offer: `mqtt` (3.1.1 and 5.0) and the older `mqttv3.1`.
/// axum only answers a subprotocol it is told about, and browsers close a socket whose
/// handshake does not echo one they offered.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Room above the broker's largest packet for a frame that carries several packets.
const FRAME_SLACK: usize = 64 * 1024;

/// tungstenite's read buffer: how much one read from the socket takes at most, and what an
/// idle connection holds. 4 KiB holds a typical MQTT frame (a few hundred bytes) several
/// times over. Measured, an idle WebSocket connection then costs about 8 KB more than an
/// idle TCP one (this buffer, the WebSocket state and the upgrade task); tungstenite's
/// default buffer alone was 128 KiB, all of it resident after the first read.
const READ_BUFFER: usize = 4 * 1024;

/// How long the final close may take when the peer does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pings a peer may send in a burst.
const PING_BURST: u32 = 32;
/// Pings a second a peer may send in the long run.
const PING_REFILL_PER_SEC: u32 = 2;

/// The `/mqtt` route.
pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/mqtt", axum::routing::get(handler))
}

/// `GET /mqtt`: upgrades to a WebSocket and serves one MQTT connection over it.
///
/// Refused first: an `Origin` the guard does not allow (403), subprotocols offered without
/// `mqtt` or `mqttv3.1` among them (400). Then the connection is counted against
/// `max_connections` and `max_connections_per_address` (the client's address, see
/// [`RequestContext::client`]) before the upgrade: over either, the answer is 503 Service
/// Unavailable and no WebSocket is made. The permit then lives in the connection's task.
async fn handler(
    ws: WebSocketUpgrade,
    Extension(ctx): Extension<RequestContext>,
    tls: Option<Extension<TlsConnection>>,
    headers: HeaderMap,
    State(state): State<AppState>,
) -> Response {
    let peer = ctx.client;
    if let Err(refused) = state.guard.websocket_origin(&headers, &ctx) {
        tracing::debug!(
            %peer,
            origin = ?headers.get("origin"),
            "websocket upgrade refused: {}",
            refused.message()
        );
        return refused.into_response();
    }
    let ws = ws.protocols(SUBPROTOCOLS);
    if ws.selected_protocol().is_none() && ws.requested_protocols().next().is_some() {
        tracing::debug!(%peer, "websocket upgrade refused: no MQTT subprotocol offered");
        return (
            StatusCode::BAD_REQUEST,
            "no MQTT subprotocol offered: Sec-WebSocket-Protocol must include mqtt or mqttv3.1",
        )
            .into_response();
    }
    let permit = match state.limits.try_acquire(peer.ip()) {
        Ok(permit) => permit,
        Err(refusal) => {
            return (StatusCode::SERVICE_UNAVAILABLE, refusal.to_string()).into_response();
        }
    };
    let max = usize::try_from(state.broker.config().max_packet_size)
        .unwrap_or(usize::MAX)
        .saturating_add(FRAME_SLACK);
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        // One chunk of the broker (a batch of at most 64 KiB plus one packet) and the
        // pongs: `poll_ready` flushes before each chunk, so no more is ever held.
        .max_write_buffer_size(max.saturating_add(FRAME_SLACK))
        .on_upgrade(move |socket| {
            let AppState {
                broker, tracker, ..
            } = state;
            let tracker = tracker.upgrade();
            let task = move || async move {
                let _permit = permit;
                let mut info = ConnectionInfo::new(Some(peer), Transport::WebSocket);
                if let Some(Extension(tls)) = tls {
                    info.secure = true;
                    info.certificate_name = tls.certificate_name;
                }
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

/// How many more pings a peer may send: a token bucket of [`PING_BURST`] tokens refilled
/// at [`PING_REFILL_PER_SEC`].
#[derive(Debug)]
pub(crate) struct PingBudget {
    /// Tokens left, in thousandths of a ping (so a refill need not be a whole ping).
    millis: u64,
    /// When `millis` was last brought up to date.
    at: Instant,
}

impl PingBudget {
    const FULL: u64 = PING_BURST as u64 * 1000;

    fn new(now: Instant) -> Self {
        PingBudget {
            millis: Self::FULL,
            at: now,
        }
    }

    /// Spends one ping at `now`; `false` when none is left.
    fn spend(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill = elapsed
            .as_millis()
            .saturating_mul(u128::from(PING_REFILL_PER_SEC));
        self.millis = u64::try_from(refill)
            .unwrap_or(u64::MAX)
            .saturating_add(self.millis)
            .min(Self::FULL);
        self.at = now;
        match self.millis.checked_sub(1000) {
            Some(left) => {
                self.millis = left;
                true
            }
            None => false,
        }
    }
}

/// A WebSocket seen as a stream and sink of MQTT byte chunks.
///
/// In: a binary frame is a chunk; a text frame is a protocol violation and ends the
/// connection with an [`io::ErrorKind::InvalidData`] error [MQTT-6.0.0-1]; ping and pong are
/// skipped (the WebSocket layer answers pings itself) as long as pings stay within the
/// [`PingBudget`], beyond which the stream fails the same way; a close frame ends the
/// stream. Out: each chunk is one binary frame. Closing after a text frame sends close code
/// 1002 (protocol error), after too many pings 1008 (policy violation).
#[derive(Debug)]
pub(crate) struct WsTransport {
    socket: WebSocket,
    /// Set once the stream has ended or failed: nothing more is read after that.
    done: bool,
    /// The peer broke a rule; the close frame says which.
    violation: Option<CloseFrame>,
    /// Our close frame has been queued.
    close_sent: bool,
    /// Pings the peer may still send.
    pings: PingBudget,
}

impl WsTransport {
    pub(crate) fn new(socket: WebSocket) -> Self {
        WsTransport {
            socket,
            done: false,
            violation: None,
            close_sent: false,
            pings: PingBudget::new(Instant::now()),
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
                Some(Ok(Message::Ping(_))) if this.pings.spend(Instant::now()) => continue,
                Some(Ok(Message::Ping(_))) => {
                    this.violation = Some(CloseFrame {
                        code: close_code::POLICY,
                        reason: "too many pings".into(),
                    });
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket pings faster than allowed",
                    ))
                }
                Some(Ok(Message::Pong(_))) => continue,
                Some(Ok(Message::Text(_))) => {
                    this.violation = Some(CloseFrame {
                        code: close_code::PROTOCOL,
                        reason: "text frame: MQTT needs binary frames".into(),
                    });
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
        if this.violation.is_some() && !this.close_sent {
            ready!(Pin::new(&mut this.socket).poll_ready(cx)).map_err(to_io)?;
            this.close_sent = true;
            Pin::new(&mut this.socket)
                .start_send(Message::Close(this.violation.take()))
                .map_err(to_io)?;
        }
        Pin::new(&mut this.socket).poll_close(cx).map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_burst_is_allowed_and_a_flood_is_not() {
        let start = Instant::now();
        let mut budget = PingBudget::new(start);
        for i in 0..PING_BURST {
            assert!(budget.spend(start), "ping {i} of the burst");
        }
        assert!(!budget.spend(start), "one more at the same instant");
        // Refilled at PING_REFILL_PER_SEC.
        let later = start + Duration::from_millis(1000 / u64::from(PING_REFILL_PER_SEC));
        assert!(budget.spend(later));
        assert!(!budget.spend(later));
    }

    #[test]
    fn a_client_pinging_every_second_is_never_refused() {
        let start = Instant::now();
        let mut budget = PingBudget::new(start);
        for s in 0..10_000u64 {
            assert!(
                budget.spend(start + Duration::from_secs(s)),
                "ping at {s} s"
            );
        }
    }

    #[test]
    fn the_budget_never_exceeds_the_burst() {
        let start = Instant::now();
        let mut budget = PingBudget::new(start);
        let much_later = start + Duration::from_secs(365 * 24 * 3600);
        let allowed = (0..1000).take_while(|_| budget.spend(much_later)).count();
        assert_eq!(allowed, PING_BURST as usize);
    }
}
