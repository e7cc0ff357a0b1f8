//! What the application passes in: how to connect and what to accept.

use core::time::Duration;

use bytes::Bytes;

use crate::packet::{ProtocolVersion, Will};
use crate::prelude::*;
use crate::properties::Properties;

/// How the client connects and what it accepts.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// MQTT 3.1.1 or 5.0.
    pub version: ProtocolVersion,
    /// May be empty with `clean_start` (the server assigns one in 5.0).
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 = off. The server's Server Keep Alive replaces it (5.0).
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// The will.
    pub will: Option<Will>,
    /// 5.0 Session Expiry Interval in seconds (absent = 0: the session ends with the
    /// connection).
    pub session_expiry_interval: Option<u32>,
    /// 5.0: how many QoS 2 messages from the server may await PUBREL at once (our Receive
    /// Maximum). QoS 1 messages are acknowledged on arrival.
    pub receive_maximum: u16,
    /// The largest packet we accept (5.0 announces it as Maximum Packet Size).
    pub max_packet_size: u32,
    /// 5.0: the highest Topic Alias the server may use towards us.
    pub topic_alias_maximum: u16,
    /// Extra CONNECT properties (user properties, authentication, ...).
    pub connect_properties: Properties,
    /// Messages waiting to be sent (offline, or beyond the server's Receive Maximum). When
    /// full, `publish` fails with [`ClientError::QueueFull`](super::ClientError::QueueFull): nothing is dropped silently.
    pub max_queued: usize,
    /// Subscribe again to every known subscription when the server has no session for us
    /// (CONNACK session present = 0), whatever `clean_start` was.
    pub resubscribe: bool,
    /// How long to wait for CONNACK.
    pub connect_timeout: Duration,
    /// Record what each step changes in the state worth keeping across a restart of the
    /// host, for [`Client::take_store_ops`](super::Client::take_store_ops)
    /// (see [`StoreOp`](super::StoreOp)). Off by default: it costs a
    /// little on every QoS 1/2 message.
    pub persistent: bool,
}

impl ClientOptions {
    /// Options with the given version, client id and clean flag, and defaults otherwise:
    /// keep-alive 60 s, receive maximum 65 535, 256 KiB packets, 16 aliases, 1 000 queued.
    pub fn new(version: ProtocolVersion, client_id: impl Into<String>, clean_start: bool) -> Self {
        ClientOptions {
            version,
            client_id: client_id.into(),
            clean_start,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            session_expiry_interval: None,
            receive_maximum: u16::MAX,
            max_packet_size: 256 * 1024,
            topic_alias_maximum: 16,
            connect_properties: Properties::default(),
            max_queued: 1000,
            resubscribe: true,
            connect_timeout: Duration::from_secs(30),
            persistent: false,
        }
    }
}
