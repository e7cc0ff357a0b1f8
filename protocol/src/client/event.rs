//! What the application gets back: events, publish tokens and errors.

use crate::error::{DecodeError, EncodeError};
use crate::packet::{ConnAck, Publish, QoS, SubAck, UnsubAck};
use crate::prelude::*;
use crate::reason::ReasonCode;

/// Identifies one `publish` call until its outcome arrives as [`Event::Published`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishToken(pub u64);

/// What the application learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNACK accepted the connection.
    Connected {
        /// The server resumed our session.
        session_present: bool,
        /// The whole CONNACK (assigned client id, server limits, ...).
        connack: ConnAck,
    },
    /// An application message arrived (once per message, also at QoS 2).
    Message(Publish),
    /// A publish finished: QoS 0 sent, QoS 1 PUBACK, QoS 2 PUBCOMP, or refused by the
    /// server (an error reason in PUBACK / PUBREC), or too large for the server.
    Published {
        /// Which publish call.
        token: PublishToken,
        /// Success (or No matching subscribers), or why it failed.
        reason: ReasonCode,
    },
    /// SUBACK for a `subscribe` call.
    SubAck(SubAck),
    /// UNSUBACK for an `unsubscribe` call.
    UnsubAck(UnsubAck),
}

/// Why an operation failed or why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `connect` while a connection is open or being opened.
    #[error("already connected or connecting")]
    AlreadyConnected,
    /// The queue of unsent messages is full ([`ClientOptions::max_queued`](super::ClientOptions::max_queued)).
    #[error("the outgoing queue is full")]
    QueueFull,
    /// Every packet identifier is in use.
    #[error("no packet identifier is free")]
    NoPacketId,
    /// The server said it cannot take this QoS (CONNACK Maximum QoS) [MQTT-3.2.2-11].
    #[error("the server does not support QoS {0:?}")]
    QoSNotSupported(QoS),
    /// The server said it does not keep retained messages [MQTT-3.2.2-14].
    #[error("the server does not support retained messages")]
    RetainNotSupported,
    /// The packet cannot be encoded (too large for the server, a field too long, ...).
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// The server sent bytes that are not MQTT.
    #[error("bad packet from the server: {0}")]
    Decode(#[from] DecodeError),
    /// The server refused the connection (CONNACK with an error).
    #[error("connection refused: {0}")]
    Refused(ReasonCode),
    /// The server closed the connection with DISCONNECT (5.0).
    #[error("disconnected by the server: {reason}{}", reason_string.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    DisconnectedByServer {
        /// Its reason code.
        reason: ReasonCode,
        /// Its reason string.
        reason_string: Option<String>,
    },
    /// The server broke the protocol.
    #[error("protocol error by the server: {0}")]
    Protocol(&'static str),
    /// No PINGRESP within the keep-alive after a PINGREQ.
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
    /// No CONNACK within the connect timeout.
    #[error("no CONNACK in time")]
    ConnectTimeout,
}
