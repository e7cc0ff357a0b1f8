//! The adapter from a TLS stream (any `AsyncRead + AsyncWrite`) to the byte
//! `Stream`/`Sink` that [`broker::Broker::serve`] takes, for MQTT over TLS.
//!
//! Plain TCP keeps its own transport ([`crate::tcp::TcpTransport`]), which reads the socket
//! directly; under TLS the bytes come out of rustls, so this one reads through the stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// As over plain TCP, the bytes land in the runtime thread's buffer (`tcp::READ_BUFFER`, one
// per thread for both transports) and are copied into a chunk of exactly their size, so an
// idle connection holds no read buffer of ours (rustls holds its own: one record at most).
// 16 KiB (`tcp::READ_CHUNK`) is one full TLS record's plaintext.
use crate::tcp::READ_BUFFER;

/// A TLS stream as a stream and sink of byte chunks.
///
/// In: whatever each read returned, in order, as a chunk of exactly that size; a peer that
/// closes the TCP connection without TLS's `close_notify` (most MQTT clients) ends the
/// stream like one that sends it. Out: each chunk is written whole and flushed before the
/// next is taken (`poll_ready`), so at most one chunk is held, plus what rustls holds
/// (capped by its buffer limit, 64 KiB by default).
#[derive(Debug)]
pub(crate) struct TlsTransport<S> {
    io: S,
    /// The part of the last chunk not written yet.
    unwritten: Bytes,
}

impl<S> TlsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) fn new(io: S) -> Self {
        TlsTransport {
            io,
            unwritten: Bytes::new(),
        }
    }

    /// Writes what is left of the last chunk, then flushes.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unwritten.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.unwritten))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unwritten.advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<S> Stream for TlsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Never re-entered: reading the TLS stream reads its socket, not this buffer.
        READ_BUFFER.with_borrow_mut(|storage| {
            let mut buf = ReadBuf::new(&mut storage[..]);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => Poll::Ready(None),
                Ok(()) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(None),
                Err(e) => Poll::Ready(Some(Err(e))),
            }
        })
    }
}

impl<S> Sink<Bytes> for TlsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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

    /// Writes what is left, then sends `close_notify` and shuts down the socket's writing
    /// side.
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        match ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
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

    #[tokio::test]
    async fn bytes_written_by_the_peer_come_out_in_bounded_chunks_and_end_with_none() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut transport = TlsTransport::new(server);
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
            assert!(!chunk.is_empty() && chunk.len() <= crate::tcp::READ_CHUNK);
            got.extend_from_slice(&chunk);
        }
        writer.await.expect("writer");
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn chunks_sent_reach_the_peer_whole_and_close_shuts_down_writing() {
        let (server, mut client) = tokio::io::duplex(4 * 1024);
        let mut transport = TlsTransport::new(server);
        let big = Bytes::from(vec![7u8; 1024 * 1024]);
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
