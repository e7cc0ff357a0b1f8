//! MQTT over TCP: the accept loop and the adapter from a socket to the byte `Stream`/`Sink`
//! that [`broker::Broker::serve`] takes.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use broker::{Broker, ConnectionInfo, Transport};
use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::limits::{AcceptErrors, ConnectionLimiter};
use crate::shutdown::Tracker;

/// The most one read takes from the socket. The bytes are read into a buffer on the
/// reading thread's stack and copied into a chunk of exactly their size, so an idle
/// connection holds no read buffer at all; 16 KiB keeps the number of reads low for large
/// packets at the price of one copy.
const READ_CHUNK: usize = 16 * 1024;

/// Accepts MQTT connections until `stop` is cancelled, each served on its own task.
///
/// Each connection is counted by `limits` from the accept on (before CONNECT); over
/// `max_connections` in total or `max_connections_per_address` from its source the socket
/// is closed at once. The permit lives in the connection's task. An accept error never ends
/// the loop ([`AcceptErrors`]). Each connection task runs under a clone of `tracker`, so
/// shutdown can wait for it.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Broker,
    limits: ConnectionLimiter,
    stop: CancellationToken,
    tracker: Tracker,
) {
    let mut errors = AcceptErrors::new("mqtt");
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                errors.handle(&e).await;
                continue;
            }
        };
        let Ok(permit) = limits.try_acquire(peer.ip()) else {
            // Dropped here: closed at once, before a byte is read.
            continue;
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let broker = broker.clone();
        let task = tracker.clone().run(async move {
            let _permit = permit;
            let info = ConnectionInfo {
                peer: Some(peer),
                transport: Transport::Tcp,
            };
            match broker.serve(TcpTransport::new(socket), info).await {
                Ok(()) => tracing::debug!(%peer, "tcp connection closed"),
                Err(e) => tracing::debug!(%peer, error = %e, "tcp connection ended"),
            }
        });
        tokio::spawn(task);
    }
}

/// A socket as a stream and sink of byte chunks, holding no buffer while idle.
///
/// In: whatever each read returned, in order, as a chunk of exactly that size (see
/// [`READ_CHUNK`]). Out: each chunk is written as it is, without copying; `poll_ready`
/// waits until the previous one is fully written, so at most one chunk is held.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    socket: TcpStream,
    /// The part of the last chunk not written yet.
    unwritten: Bytes,
}

impl TcpTransport {
    pub(crate) fn new(socket: TcpStream) -> Self {
        TcpTransport {
            socket,
            unwritten: Bytes::new(),
        }
    }

    /// Writes what is left of the last chunk.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unwritten.is_empty() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.unwritten))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unwritten.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Stream for TcpTransport {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut storage);
        match ready!(Pin::new(&mut self.socket).poll_read(cx, &mut buf)) {
            Err(e) => Poll::Ready(Some(Err(e))),
            Ok(()) if buf.filled().is_empty() => Poll::Ready(None),
            Ok(()) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
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
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.socket).poll_shutdown(cx)
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
        (TcpTransport::new(server), client)
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
}
