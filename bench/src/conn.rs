//! One MQTT connection, over TCP or WebSocket, seen as whole packets.
//!
//! The benchmark drives connections by hand rather than through the client state machine:
//! it needs nothing but a window of packet ids and the acknowledgements, and it must not be
//! the bottleneck. Packets are still encoded and decoded by the project's `protocol` crate.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use protocol::{
    Connect, DecodeError, Decoder, Disconnect, EncodeError, Packet, PacketId, PacketType,
    ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription, TopicFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The largest packet accepted from the broker.
const MAX_PACKET_SIZE: u32 = 1 << 20;

/// How long CONNACK and SUBACK may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the broker listens: `mqtt://HOST:PORT` or `ws://HOST:PORT/PATH`.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// MQTT over TCP; the `HOST:PORT`.
    Tcp(String),
    /// MQTT over WebSocket (subprotocol `mqtt`, binary frames); the whole URL.
    Ws(String),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(addr) = s.strip_prefix("mqtt://") {
            Ok(Target::Tcp(addr.trim_end_matches('/').to_owned()))
        } else if s.starts_with("ws://") {
            Ok(Target::Ws(s.to_owned()))
        } else {
            Err(format!(
                "expected mqtt://HOST:PORT or ws://HOST:PORT/PATH, got {s:?}"
            ))
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "mqtt://{addr}"),
            Target::Ws(url) => f.write_str(url),
        }
    }
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("WebSocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("the WebSocket handshake did not select the `mqtt` subprotocol")]
    NoSubprotocol,
    #[error("the broker sent a text frame")]
    TextFrame,
    #[error("malformed packet from the broker: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot encode a packet: {0}")]
    Encode(#[from] EncodeError),
    #[error("the broker closed the connection")]
    Closed,
    #[error("nothing from the broker for {0:?}")]
    Timeout(Duration),
    #[error("the broker answered {0:?}")]
    Refused(ReasonCode),
    #[error("the broker acknowledged packet id {0}, which was not in flight")]
    UnknownPacketId(PacketId),
    #[error("expected {expected:?}, the broker sent {got:?}")]
    Unexpected {
        expected: PacketType,
        got: PacketType,
    },
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The socket.
#[derive(Debug)]
enum Io {
    Tcp(TcpStream),
    Ws(Box<WsStream>),
}

/// An open connection: packets are queued with [`Conn::push`] and written together by
/// [`Conn::flush`] (one write, one WebSocket frame); [`Conn::next`] yields decoded packets.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    version: ProtocolVersion,
    decoder: Decoder,
    /// Packets decoded from the last read and not yet taken by [`Conn::next`].
    inbox: VecDeque<Packet>,
    /// Encoded packets not yet written.
    out: BytesMut,
    /// TCP read buffer; its size bounds one read.
    read_buf: Vec<u8>,
}

impl Conn {
    /// Opens the socket (and the WebSocket handshake); sends nothing.
    pub(crate) async fn open(target: &Target, version: ProtocolVersion) -> Result<Conn, ConnError> {
        let io = match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Io::Tcp(stream)
            }
            Target::Ws(url) => {
                let mut request = url.as_str().into_client_request()?;
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
                let (ws, response) = tokio_tungstenite::connect_async(request).await?;
                let protocol = response.headers().get("Sec-WebSocket-Protocol");
                if protocol.and_then(|p| p.to_str().ok()) != Some("mqtt") {
                    return Err(ConnError::NoSubprotocol);
                }
                Io::Ws(Box::new(ws))
            }
        };
        Ok(Conn {
            io,
            version,
            decoder: Decoder::with_version(version, MAX_PACKET_SIZE),
            inbox: VecDeque::new(),
            out: BytesMut::with_capacity(64 * 1024),
            read_buf: vec![0; 64 * 1024],
        })
    }

    /// Opens the connection and completes CONNECT / CONNACK; returns session present.
    /// A persistent session (`clean` false) asks for the longest session expiry in 5.0.
    pub(crate) async fn connect(
        target: &Target,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
    ) -> Result<(Conn, bool), ConnError> {
        let mut conn = Conn::open(target, version).await?;
        let session_present = conn.handshake(client_id, clean).await?;
        Ok((conn, session_present))
    }

    /// CONNECT / CONNACK on an open connection; returns session present. Separate from
    /// [`Conn::open`] so that a caller can time the handshake alone (`takeover`).
    pub(crate) async fn handshake(
        &mut self,
        client_id: &str,
        clean: bool,
    ) -> Result<bool, ConnError> {
        let mut connect = Connect::new(self.version, client_id, clean);
        connect.keep_alive = 0;
        if !clean && self.version == ProtocolVersion::V5 {
            connect.properties.session_expiry_interval = Some(u32::MAX);
        }
        self.push(&Packet::Connect(Box::new(connect)))?;
        self.flush().await?;
        match self.next_within(HANDSHAKE_TIMEOUT).await? {
            Packet::ConnAck(ack) if ack.reason.is_error() => Err(ConnError::Refused(ack.reason)),
            Packet::ConnAck(ack) => Ok(ack.session_present),
            other => Err(ConnError::Unexpected {
                expected: PacketType::ConnAck,
                got: other.packet_type(),
            }),
        }
    }

    /// Subscribes to one filter and waits for a SUBACK that grants it.
    pub(crate) async fn subscribe(
        &mut self,
        filter: TopicFilter,
        qos: QoS,
    ) -> Result<(), ConnError> {
        let subscribe = Subscribe {
            packet_id: PacketId::MIN,
            subscriptions: vec![Subscription::new(filter, qos)],
            properties: Default::default(),
        };
        self.push(&Packet::Subscribe(subscribe))?;
        self.flush().await?;
        match self.next_within(HANDSHAKE_TIMEOUT).await? {
            Packet::SubAck(ack) => match ack.reasons.iter().find(|r| r.is_error()) {
                Some(&reason) => Err(ConnError::Refused(reason)),
                None => Ok(()),
            },
            other => Err(ConnError::Unexpected {
                expected: PacketType::SubAck,
                got: other.packet_type(),
            }),
        }
    }

    /// Sends DISCONNECT and closes the socket.
    pub(crate) async fn disconnect(mut self) -> Result<(), ConnError> {
        self.push(&Packet::Disconnect(Disconnect::new(ReasonCode::Success)))?;
        self.flush().await?;
        match &mut self.io {
            Io::Tcp(stream) => stream.shutdown().await?,
            Io::Ws(ws) => SinkExt::close(&mut **ws).await?,
        }
        Ok(())
    }

    /// Encodes `packet` into the output buffer.
    pub(crate) fn push(&mut self, packet: &Packet) -> Result<(), ConnError> {
        packet.encode(self.version, &mut self.out)?;
        Ok(())
    }

    /// Writes everything pushed so far.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let data = self.out.split().freeze();
        match &mut self.io {
            Io::Tcp(stream) => stream.write_all(&data).await?,
            Io::Ws(ws) => ws.send(Message::Binary(data)).await?,
        }
        Ok(())
    }

    /// Whether decoded packets are waiting, so that [`Conn::next`] will not read.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// The next packet from the broker. Cancel-safe: a cancelled call loses nothing.
    pub(crate) async fn next(&mut self) -> Result<Packet, ConnError> {
        loop {
            if let Some(packet) = self.inbox.pop_front() {
                return Ok(packet);
            }
            let chunk = self.read().await?;
            let mut input = &chunk[..];
            while let Some(packet) = self.decoder.decode(&mut input)? {
                self.inbox.push_back(packet);
            }
        }
    }

    /// [`Conn::next`] with a time limit.
    pub(crate) async fn next_within(&mut self, limit: Duration) -> Result<Packet, ConnError> {
        tokio::time::timeout(limit, self.next())
            .await
            .map_err(|_| ConnError::Timeout(limit))?
    }

    /// The next chunk of bytes (cancel-safe).
    async fn read(&mut self) -> Result<Bytes, ConnError> {
        match &mut self.io {
            Io::Tcp(stream) => match stream.read(&mut self.read_buf).await? {
                0 => Err(ConnError::Closed),
                n => Ok(Bytes::copy_from_slice(&self.read_buf[..n])),
            },
            Io::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Err(ConnError::Closed),
                    Some(Ok(Message::Binary(data))) => return Ok(data),
                    Some(Ok(Message::Text(_))) => return Err(ConnError::TextFrame),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                }
            },
        }
    }
}
