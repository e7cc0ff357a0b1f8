//! MQTT over TCP: the accept loop and the adapter from a socket to the byte `Stream`/`Sink`
//! that [`broker::Broker::serve`] takes.

use std::io;
use std::time::Duration;

use broker::{Broker, ConnectionInfo, Transport};
use bytes::BytesMut;
use futures_util::TryStreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{BytesCodec, Framed};
use tokio_util::sync::CancellationToken;

use crate::Tracker;

/// Accepts MQTT connections until `stop` is cancelled, each served on its own task.
///
/// An accept error never ends the loop: a connection reset before it was accepted is
/// skipped, anything else (such as running out of file descriptors) is logged and retried
/// after a short pause, as axum's own `serve` does. Each connection task runs under a clone
/// of `tracker`, so shutdown can wait for it.
pub(crate) async fn serve(
    listener: TcpListener,
    broker: Broker,
    stop: CancellationToken,
    tracker: Tracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, "mqtt accept error; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let broker = broker.clone();
        let task = tracker.clone().run(async move {
            let info = ConnectionInfo {
                peer: Some(peer),
                transport: Transport::Tcp,
            };
            match broker.serve(transport(socket), info).await {
                Ok(()) => tracing::debug!(%peer, "tcp connection closed"),
                Err(e) => tracing::debug!(%peer, error = %e, "tcp connection ended"),
            }
        });
        tokio::spawn(task);
    }
}

/// A socket as a stream and sink of byte chunks: whatever each read returned, in order.
fn transport(
    socket: TcpStream,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>>
       + futures_util::Sink<bytes::Bytes, Error = io::Error>
       + Unpin {
    Framed::new(socket, BytesCodec::new()).map_ok(BytesMut::freeze)
}

/// Errors of one half-open connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
