//! The HTTP listener: its accept loop, a cap on connections, and per-connection deadlines.
//!
//! axum's own `serve` has neither a header timeout nor an idle timeout nor a connection
//! cap, so a client that opens sockets and sends nothing (or half a header, or nothing
//! after one request) kept them forever, and enough of them took every file descriptor
//! the MQTT listener needed. Here each connection is served by hyper's HTTP/1 server
//! (upgrades on, for `/mqtt`) over a [`TimedIo`] that enforces the `[server]` deadlines:
//!
//! - **header**: a request's header must be whole within `http_header_timeout_secs` of its
//!   first byte; a new connection must send a whole header within that time of its accept
//!   (so "connect and send nothing" and "send half a header" both end there);
//! - **idle**: between requests, a keep-alive connection may wait `http_idle_timeout_secs`
//!   for the next request's first byte; while a request is served, no byte moving either
//!   way for that long (a body that does not come, a response that is not read) also ends
//!   the connection. Time the handler spends computing is not idleness.
//!
//! A connection past its deadline gets a `TimedOut` error from its socket; hyper then
//! drops it. A WebSocket upgrade ends all of this: once the response is 101 the deadlines
//! are switched off, hyper hands the socket over, the connection task ends and gives back
//! its HTTP place (the MQTT connection limits count it from then on, see [`crate::ws`]).
//!
//! At most `max_connections` connections are served at once, HTTP and HTTPS together (both
//! listeners take their places from one [`Semaphore`]); the loop takes a place before it
//! accepts, so beyond the cap new connections wait in the kernel's listen backlog and hold
//! none of the process's file descriptors.
//!
//! # HTTPS
//! The same loop serves `--https` with a [`ServerTls`]: the TLS stream runs over the
//! [`TimedIo`], so the handshake falls under the header deadline (a new connection must
//! finish its handshake *and* send a whole header within `http_header_timeout_secs` of its
//! accept), and everything above stays the same. Every request of a TLS connection carries
//! a [`TlsConnection`] extension (with the client certificate's name, if any); plain HTTP
//! requests carry none.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use broker::ratelog::{RateLimitedLog, LOG_INTERVAL};

use crate::limits::AcceptErrors;
use crate::state::TlsConnection;
use crate::tls::{Listener, ServerTls};

/// hyper's read buffer grows up to this: the longest request header accepted (beyond it
/// the answer is 431), and what one connection's read buffer can cost at most. hyper's own
/// default is about 400 KB.
const MAX_BUF: usize = 64 * 1024;

/// The listener's settings, from the `[server]` table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// Most connections served at once.
    pub(crate) max_connections: usize,
    /// See the module docs.
    pub(crate) header_timeout: Duration,
    /// See the module docs.
    pub(crate) idle_timeout: Duration,
}

/// The places of [`HttpLimits::max_connections`], shared by the HTTP and HTTPS listeners.
pub(crate) fn places(limits: &HttpLimits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.max_connections))
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` is cancelled, then asks
/// every connection to finish its request and close, and returns once all have. Each
/// connection holds one of `places` (made by [`places`]) while it lives.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    places: Arc<Semaphore>,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) {
    // Each connection task holds a clone; `recv` gives `None` once all are gone.
    let (alive, mut finished) = mpsc::channel::<()>(1);
    let mut errors = AcceptErrors::new(if tls.is_some() { "https" } else { "http" });
    let mut full = RateLimitedLog::default();
    loop {
        let place = match Arc::clone(&places).try_acquire_owned() {
            Ok(place) => place,
            Err(_) => {
                if let Some(times) = full.hit(std::time::Instant::now()) {
                    tracing::warn!(
                        max_http_connections = limits.max_connections,
                        times,
                        "HTTP connection cap reached: new connections wait in the listen \
                         backlog until one closes (one line per {LOG_INTERVAL:?})"
                    );
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    place = Arc::clone(&places).acquire_owned() => match place {
                        Ok(place) => place,
                        Err(_) => break,
                    },
                }
            }
        };
        let Some((socket, peer)) = errors.accept(&listener, &stop).await else {
            break;
        };
        let connection = serve_connection(
            socket,
            peer,
            router.clone(),
            limits,
            tls.clone(),
            stop.clone(),
        );
        let alive = alive.clone();
        tokio::spawn(async move {
            connection.await;
            drop((place, alive));
        });
    }
    drop(listener);
    drop(alive);
    let _ = finished.recv().await;
}

/// Serves one HTTP connection (after its TLS handshake, with `tls`) until it closes, times
/// out, is upgraded, or shutdown asks it to finish.
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerTls>>,
    stop: CancellationToken,
) {
    let phase = Arc::new(SharedPhase::default());
    let io = TimedIo::new(socket, Arc::clone(&phase), limits);
    let Some(tls) = tls else {
        return serve_http(io, peer, None, router, phase, stop).await;
    };
    // TimedIo's header deadline ends a handshake that does not finish; no other deadline.
    let accepted = tokio::select! {
        accepted = tls.acceptor(Listener::Https).accept(io) => accepted,
        () = stop.cancelled() => return,
    };
    match accepted {
        Ok(stream) => {
            let secure = TlsConnection {
                certificate_name: crate::tls::certificate_name(stream.get_ref().1),
            };
            serve_http(stream, peer, Some(secure), router, phase, stop).await;
        }
        Err(e) => tls.handshake_failed(Listener::Https, peer, &e),
    }
}

/// Serves HTTP on `io` (a [`TimedIo`], or TLS over one); see [`serve_connection`].
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    secure: Option<TlsConnection>,
    router: Router,
    phase: Arc<SharedPhase>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(secure) = &secure {
            request.extensions_mut().insert(secure.clone());
        }
        let guard = RequestGuard::begin(Arc::clone(&phase));
        let mut router = router.clone();
        async move {
            let response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                guard.upgraded();
            }
            Ok::<_, Infallible>(response.map(|body| GuardedBody {
                body,
                _guard: guard,
            }))
        }
    });
    let connection = http1::Builder::new()
        .max_buf_size(MAX_BUF)
        // The header deadline is TimedIo's: hyper's would also cut idle keep-alive
        // connections at the header timeout.
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades();
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http connection ended");
    }
}

/// Where a connection is between requests, shared by its [`TimedIo`] and its service.
#[derive(Debug, Default)]
struct SharedPhase {
    /// [`IDLE`], [`BUSY`] or [`UPGRADED`].
    phase: AtomicU8,
    /// Requests finished so far: [`TimedIo`] sees a new idle period begin when it changes.
    finished: AtomicU64,
}

/// No request is being served.
const IDLE: u8 = 0;
/// A request's header has been read and its response is not finished.
const BUSY: u8 = 1;
/// The response was 101 Switching Protocols: the socket is no longer HTTP's.
const UPGRADED: u8 = 2;

/// Marks the connection busy for as long as a request is served (until its response body
/// is dropped, which hyper does once the body has ended).
#[derive(Debug)]
struct RequestGuard {
    phase: Arc<SharedPhase>,
}

impl RequestGuard {
    fn begin(phase: Arc<SharedPhase>) -> RequestGuard {
        // Never back from UPGRADED.
        let _ = phase
            .phase
            .compare_exchange(IDLE, BUSY, Ordering::AcqRel, Ordering::Acquire);
        RequestGuard { phase }
    }

    fn upgraded(&self) {
        self.phase.phase.store(UPGRADED, Ordering::Release);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self
            .phase
            .phase
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.phase.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A response body that keeps its request's [`RequestGuard`] until it is dropped.
#[derive(Debug)]
struct GuardedBody {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What the connection is waiting for, and so which deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A request header to complete: absolute deadline.
    Header,
    /// The first byte of the next request on a kept-alive connection: absolute deadline.
    NextRequest,
    /// A request is served: the deadline moves with every byte that moves.
    Progress,
}

/// A socket that fails with [`io::ErrorKind::TimedOut`] once the connection's deadline
/// (see the module docs) has passed, and is a plain socket once upgraded.
#[derive(Debug)]
struct TimedIo {
    socket: TcpStream,
    phase: Arc<SharedPhase>,
    limits: HttpLimits,
    /// Fires at the deadline; `None` once upgraded.
    timer: Option<Pin<Box<Sleep>>>,
    wait: Wait,
    /// [`SharedPhase::finished`] when last looked at.
    finished_seen: u64,
    /// For [`Wait::Progress`]: when a byte last moved. The timer may be set earlier than
    /// `last_progress + idle_timeout`; it is moved on when it fires, not on every byte.
    last_progress: Instant,
}

impl TimedIo {
    fn new(socket: TcpStream, phase: Arc<SharedPhase>, limits: HttpLimits) -> TimedIo {
        let now = Instant::now();
        TimedIo {
            socket,
            phase,
            limits,
            timer: Some(Box::pin(tokio::time::sleep_until(
                now + limits.header_timeout,
            ))),
            wait: Wait::Header,
            finished_seen: 0,
            last_progress: now,
        }
    }

    /// Brings `wait` and the timer up to date after an I/O call; `read` is true when the
    /// call read at least one byte, `moved` when it read or wrote one.
    fn update(&mut self, read: bool, moved: bool) {
        let phase = self.phase.phase.load(Ordering::Acquire);
        if phase == UPGRADED {
            self.timer = None;
            return;
        }
        let Some(timer) = self.timer.as_mut() else {
            return;
        };
        let now = Instant::now();
        let finished = self.phase.finished.load(Ordering::Acquire);
        if finished != self.finished_seen {
            self.finished_seen = finished;
            self.wait = Wait::NextRequest;
            timer.as_mut().reset(now + self.limits.idle_timeout);
        }
        if phase == BUSY && self.wait != Wait::Progress {
            self.wait = Wait::Progress;
            self.last_progress = now;
            timer.as_mut().reset(now + self.limits.idle_timeout);
        }
        if phase == IDLE && read && self.wait == Wait::NextRequest {
            self.wait = Wait::Header;
            timer.as_mut().reset(now + self.limits.header_timeout);
        }
        if moved && self.wait == Wait::Progress {
            self.last_progress = now;
        }
    }

    /// After an I/O call returned `Pending`: registers the timer and says whether the
    /// deadline has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.wait != Wait::Progress {
                return true;
            }
            let deadline = self.last_progress + self.limits.idle_timeout;
            if deadline <= Instant::now() {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
    }

    /// The result of an I/O call, or `TimedOut` once past the deadline.
    fn finish<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        read: bool,
        moved: bool,
    ) -> Poll<io::Result<T>> {
        self.update(read, moved);
        let expired = match &poll {
            Poll::Pending => self.poll_expired(cx),
            // A header arriving a byte at a time never leaves the socket pending for long.
            Poll::Ready(_) => self.wait == Wait::Header && self.past_deadline(),
        };
        if expired {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match self.wait {
                    Wait::Header => "request header not complete in time",
                    Wait::NextRequest => "keep-alive connection idle too long",
                    Wait::Progress => "request made no progress for too long",
                },
            )));
        }
        poll
    }

    fn past_deadline(&self) -> bool {
        self.timer
            .as_ref()
            .is_some_and(|timer| timer.deadline() <= Instant::now())
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.socket).poll_read(cx, buf);
        if this.timer.is_none() {
            return poll;
        }
        let read = matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        this.finish(cx, poll, read, read)
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.socket).poll_write(cx, buf);
        if this.timer.is_none() {
            return poll;
        }
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        this.finish(cx, poll, false, moved)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.socket).poll_write_vectored(cx, bufs);
        if this.timer.is_none() {
            return poll;
        }
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        this.finish(cx, poll, false, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Extension;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers the client certificate's name, `anonymous` over TLS without one, `plain`
    /// without TLS.
    async fn who(secure: Option<Extension<TlsConnection>>) -> String {
        match secure {
            Some(Extension(TlsConnection { certificate_name })) => {
                certificate_name.unwrap_or_else(|| "anonymous".to_owned())
            }
            None => "plain".to_owned(),
        }
    }

    fn start(tls: Option<Arc<ServerTls>>) -> (SocketAddr, CancellationToken) {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let listener = TcpListener::from_std(std_listener).expect("listener");
        let limits = HttpLimits {
            max_connections: 4,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
        };
        let router = Router::new().route("/who", axum::routing::get(who));
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            limits,
            places(&limits),
            tls,
            stop.clone(),
        ));
        (addr, stop)
    }

    async fn get_who<S>(mut stream: S) -> String
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let request = "GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.expect("write");
        stream.flush().await.expect("flush");
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        let answer = String::from_utf8_lossy(&raw).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn requests_over_tls_carry_the_client_certificate_name_and_plain_ones_nothing() {
        let pki = crate::tls::testing::Pki::new("http");
        let (secure, stop_secure) = start(Some(pki.server_tls()));
        let (plain, stop_plain) = start(None);
        assert_eq!(
            get_who(pki.connect(secure).await).await,
            crate::tls::testing::CLIENT_NAME
        );
        let socket = TcpStream::connect(plain).await.expect("connect");
        assert_eq!(get_who(socket).await, "plain");
        stop_secure.cancel();
        stop_plain.cancel();
    }
}
