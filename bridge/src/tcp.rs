//! MQTT over TCP, plain or TLS: the accept loop and the adapter from a socket to the byte
//! `Stream`/`Sink` that [`broker::Broker::serve`] takes.
//!
//! The same loop serves `--mqtt` and `--mqtts`: a TLS connection is counted at accept like
//! a plain one, then runs its handshake (within `connect_timeout_secs`, see
//! [`crate::tls`]) before the broker sees it, over [`crate::tls::TlsTransport`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use broker::{Broker, ConnectionInfo, Transport};
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::limits::{AcceptErrors, ConnectionLimiter};
use crate::shutdown::Tracker;
use crate::tls::{Listener, ServerTls, TlsTransport};

/// The most one read takes from the socket. The bytes are read into the reading thread's
/// buffer ([`READ_BUFFER`]) and copied into a chunk of exactly their size, so an idle
/// connection holds no read buffer at all; 16 KiB keeps the number of reads low for large
/// packets at the price of one copy.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The buffer reads land in, one per runtime thread and zeroed once (a fresh zeroed
    /// array on every read would cost a 16 KiB memset per packet). MQTT over TLS reads its
    /// decrypted bytes into the same one ([`crate::tls::TlsTransport`]).
    pub(crate) static READ_BUFFER: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Accepts MQTT connections until `stop` is cancelled, each served on its own task.
///
/// Each connection is counted by `limits` from the accept on (before CONNECT); over
/// `max_connections` in total or `max_connections_per_address` from its source the socket
/// is closed at once. The permit lives in the connection's task. An accept error never ends
/// the loop ([`AcceptErrors`]). Each connection task runs under a clone of `tracker`, so
/// shutdown can wait for it. With `tls`, each connection first completes a TLS handshake
/// (it holds its permit meanwhile).
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Broker,
    limits: ConnectionLimiter,
    stop: CancellationToken,
    tracker: Tracker,
    tls: Option<Arc<ServerTls>>,
) {
    let mut errors = AcceptErrors::new(if tls.is_some() { "mqtts" } else { "mqtt" });
    loop {
        let Some((socket, peer)) = errors.accept(&listener, &stop).await else {
            break;
        };
        let Ok(permit) = limits.try_acquire(peer.ip()) else {
            // Dropped here: closed at once, before a byte is read.
            continue;
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let broker = broker.clone();
        // One task type per listener kind: a plain connection's task must not be as large
        // as a TLS one's (a handshake and a rustls connection inline, ~15 KB more for every
        // idle connection, measured by the hostile suite's idle-RSS test).
        match tls.clone() {
            None => tokio::spawn(tracker.clone().run(move || async move {
                let _permit = permit;
                serve_plain(&broker, socket, peer).await;
            })),
            Some(tls) => tokio::spawn(tracker.clone().run(move || async move {
                let _permit = permit;
                serve_tls(&broker, &tls, socket, peer).await;
            })),
        };
    }
}

/// Serves one MQTT over TCP connection.
async fn serve_plain(broker: &Broker, socket: TcpStream, peer: SocketAddr) {
    let info = ConnectionInfo::new(Some(peer), Transport::Tcp);
    let transport = match TcpTransport::new(socket) {
        Ok(transport) => transport,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot register the socket");
            return;
        }
    };
    match broker.serve(transport, info).await {
        Ok(()) => tracing::debug!(%peer, "tcp connection closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "tcp connection ended"),
    }
}

/// Serves one MQTT over TLS connection: the handshake, within the broker's connect timeout,
/// then the broker, told the connection is secure and the client certificate's name.
async fn serve_tls(broker: &Broker, tls: &ServerTls, socket: TcpStream, peer: SocketAddr) {
    let deadline = Duration::from_secs(broker.config().connect_timeout_secs);
    let Some((stream, certificate_name)) =
        tls.accept(Listener::Mqtts, socket, peer, deadline).await
    else {
        return;
    };
    let mut info = ConnectionInfo::new(Some(peer), Transport::Tcp);
    info.secure = true;
    info.certificate_name = certificate_name;
    match broker.serve(TlsTransport::new(stream), info).await {
        Ok(()) => tracing::debug!(%peer, "mqtts connection closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "mqtts connection ended"),
    }
}

/// A socket as a stream and sink of byte chunks, holding no buffer while idle.
///
/// In: whatever each read returned, in order, as a chunk of exactly that size (see
/// [`READ_CHUNK`]). Out: each chunk is written as it is, without copying; `poll_ready`
/// waits until the previous one is fully written, so at most one chunk is held.
///
/// # Why the socket is registered for reading only
/// The kernel's ready list (epoll, edge triggered) keeps a socket where its *first* event
/// put it: with one registration for both directions, the acknowledgement of something we
/// wrote (a writable edge) places the socket early in the list, and data arriving on it
/// later is reported before data that arrived earlier on other sockets, so its task reads
/// first. That made a PUBLISH sent just after another client's SUBSCRIBE reach the engine
/// before it, in most tries. With reading registered on its own, sockets are reported, and
/// so read, in the order their data arrived, as in mosquitto's event loop.
///
/// Writes go straight to the socket, which takes them whole unless its send buffer is full.
/// Only then is a duplicate of its descriptor registered for writing, to wait for room, and
/// dropped once the chunk is written out: an idle connection holds one descriptor and one
/// registration (the runtime's per-registration state is a 256-byte allocation), and
/// only a connection whose peer does not keep up holds two.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    /// The socket, registered for reading only.
    reader: AsyncFd<std::net::TcpStream>,
    /// While a write waits for room: a duplicate of its descriptor, registered for writing
    /// only.
    writer: Option<AsyncFd<std::net::TcpStream>>,
    /// The part of the last chunk not written yet.
    unwritten: Bytes,
}

impl TcpTransport {
    /// Takes the socket over from tokio's own registration.
    // `AsyncFd::with_interest` is deprecated because a type may hand out a different
    // descriptor over time; std's `TcpStream` owns its one descriptor for its whole life,
    // which is exactly the contract of the (unsafe) replacement, and this crate forbids
    // `unsafe`. Both descriptors are closed when the transport is dropped.
    #[allow(deprecated)]
    pub(crate) fn new(socket: TcpStream) -> io::Result<Self> {
        // Left non-blocking by `into_std`: writes straight to it never block.
        let socket = socket.into_std()?;
        Ok(TcpTransport {
            reader: AsyncFd::with_interest(socket, Interest::READABLE)?,
            writer: None,
            unwritten: Bytes::new(),
        })
    }

    /// A duplicate of the socket's descriptor, registered for writing only (see the type's
    /// docs).
    #[allow(deprecated)]
    fn register_writer(&self) -> io::Result<AsyncFd<std::net::TcpStream>> {
        AsyncFd::with_interest(self.reader.get_ref().try_clone()?, Interest::WRITABLE)
    }

    /// Writes what is left of the last chunk.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unwritten.is_empty() {
            let unwritten = &self.unwritten;
            let written = match &self.writer {
                None => match self.reader.get_ref().write(unwritten) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The send buffer is full: wait for room on a registration of its
                        // own (registered now, it reports room that came in between).
                        self.writer = Some(self.register_writer()?);
                        continue;
                    }
                    other => other,
                },
                Some(writer) => {
                    let mut guard = ready!(writer.poll_write_ready(cx))?;
                    match guard.try_io(|socket| socket.get_ref().write(unwritten)) {
                        Ok(result) => result,
                        Err(_would_block) => continue,
                    }
                }
            };
            match written {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.unwritten.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // Written out: the peer keeps up again, the duplicate goes.
        self.writer = None;
        Poll::Ready(Ok(()))
    }
}

impl Stream for TcpTransport {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let mut guard = ready!(self.reader.poll_read_ready(cx))?;
            // Never re-entered: nothing in the closure polls or reads another socket.
            let read = READ_BUFFER.with_borrow_mut(|storage| {
                guard
                    .try_io(|socket| socket.get_ref().read(&mut storage[..]))
                    .map(|r| r.map(|n| (n, Bytes::copy_from_slice(&storage[..n]))))
            });
            match read {
                Ok(Ok((0, _))) => return Poll::Ready(None),
                Ok(Ok((n, chunk))) => {
                    if n < READ_CHUNK {
                        // Drained: wait for the runtime to report new data rather than try
                        // the socket again at once, so this task does not read ahead of
                        // sockets whose data came first.
                        guard.clear_ready();
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Sink<Bytes> for TcpTransport {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_out(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> io::Result<()> {
        debug_assert!(self.unwritten.is_empty(), "start_send without poll_ready");
        self.unwritten = item;
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_out(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        match self.reader.get_ref().shutdown(Shutdown::Write) {
            // Already closed by the peer: nothing left to shut down.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpTransport, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (TcpTransport::new(server).expect("register"), client)
    }

    #[tokio::test]
    async fn bytes_written_by_the_peer_come_out_in_order_and_end_with_none() {
        let (mut transport, mut client) = pair().await;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                client.write_all(&sent).await.expect("write");
                client.shutdown().await.expect("shutdown");
            })
        };
        let mut got = Vec::new();
        while let Some(chunk) = transport.next().await {
            let chunk = chunk.expect("read");
            assert!(!chunk.is_empty() && chunk.len() <= READ_CHUNK);
            got.extend_from_slice(&chunk);
        }
        writer.await.expect("writer");
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn chunks_sent_reach_the_peer_whole_and_close_shuts_down_writing() {
        let (mut transport, mut client) = pair().await;
        let big = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        transport
            .send(Bytes::from_static(b"abc"))
            .await
            .expect("send");
        transport.send(big.clone()).await.expect("send big");
        transport.close().await.expect("close");
        let got = reader.await.expect("reader");
        assert_eq!(got.len(), 3 + big.len());
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..].iter().all(|&b| b == 7));
    }

    #[tokio::test]
    async fn a_write_the_peer_does_not_read_waits_on_a_second_registration_dropped_once_written() {
        let (mut transport, mut client) = pair().await;
        assert!(transport.writer.is_none(), "one registration while idle");
        // More than the send and receive buffers of loopback together can hold.
        let big = Bytes::from(vec![3u8; 32 * 1024 * 1024]);
        transport.feed(big.clone()).await.expect("feed");
        assert!(futures_util::FutureExt::now_or_never(transport.flush()).is_none());
        assert!(transport.writer.is_some(), "waiting for room");
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; big.len()];
            client.read_exact(&mut got).await.expect("read");
            got
        });
        transport.flush().await.expect("flush");
        assert!(
            transport.writer.is_none(),
            "written out: the duplicate is gone"
        );
        let got = reader.await.expect("reader");
        assert!(got.iter().all(|&b| b == 3));
    }

    /// Keeps what each connection's transport told the broker.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: std::sync::Mutex<Vec<ConnectionInfo>>,
    }

    impl broker::Authenticator for Recorder {
        fn authenticate<'a>(
            &'a self,
            connect: &'a protocol::Connect,
            info: &'a ConnectionInfo,
        ) -> broker::auth::Authentication<'a> {
            self.seen.lock().expect("lock").push(info.clone());
            broker::AllowAll.authenticate(connect, info)
        }

        fn authorize(
            &self,
            _: &broker::auth::Identity,
            _: &str,
            _: broker::auth::Access<'_>,
        ) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn over_tls_the_broker_is_told_the_connection_is_secure_and_the_certificate_name() {
        let pki = crate::tls::testing::Pki::new("tcp");
        let recorder = std::sync::Arc::new(Recorder::default());
        let broker = Broker::with_authenticator(
            broker::BrokerConfig::default(),
            std::sync::Arc::clone(&recorder) as std::sync::Arc<dyn broker::Authenticator>,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tracker, _finished) = Tracker::new();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            broker.clone(),
            ConnectionLimiter::new(10, 10),
            stop.clone(),
            tracker,
            Some(pki.server_tls()),
        ));

        let mut client = pki.connect(addr).await;
        // CONNECT, MQTT 3.1.1, clean session, keep-alive 0, client id "c".
        let connect = [
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 1, b'c',
        ];
        client.write_all(&connect).await.expect("write");
        client.flush().await.expect("flush");
        let mut connack = [0u8; 4];
        client.read_exact(&mut connack).await.expect("CONNACK");
        assert_eq!(connack, [0x20, 2, 0, 0]);

        let seen = recorder.seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].secure);
        assert_eq!(
            seen[0].certificate_name.as_deref(),
            Some(crate::tls::testing::CLIENT_NAME)
        );
        assert_eq!(seen[0].transport, Transport::Tcp);
        stop.cancel();
    }
}
