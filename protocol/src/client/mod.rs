//! The client session state machine, sans-io.
//!
//! [`Client`] holds everything an MQTT client must remember: the connect handshake, packet
//! identifiers, the QoS 1 and 2 flows in both directions within the server's Receive
//! Maximum, what to resend when a session resumes, the subscriptions it holds, and the
//! keep-alive deadline. It owns no socket and reads no clock: the driver (the wasm client in
//! the browser, the Rust test client in tests) feeds it bytes and the current time, and takes
//! from it packets to send, events for the application and the next deadline.
//!
//! ```text
//!  driver                          Client
//!  ──────                          ──────
//!  socket opened        ──────▶  connect(now)
//!  bytes received       ──────▶  handle_bytes(bytes, now)     ──▶ Err = connection is over
//!  timer fired          ──────▶  handle_timeout(now)          ──▶ Err = connection is over
//!  socket closed        ──────▶  connection_lost()
//!  app calls            ──────▶  publish / subscribe / unsubscribe / disconnect
//!  after each call      ◀──────  poll_transmit() / encode_transmit(buf), poll_event(),
//!                                poll_timeout()
//! ```
//!
//! When a `handle_*` call returns an error the connection is finished: the machine is already
//! disconnected and may have queued a DISCONNECT (5.0) that the driver should send before it
//! closes the socket. In-flight messages stay and are resent on the next connection.
//!
//! # Layout
//! One documented struct, [`Client`], here with its packet dispatch; one file per concern:
//! - `connection`: CONNECT, CONNACK (resuming or discarding the session), DISCONNECT.
//! - `outgoing`: our PUBLISHes, the queue and the sending window, PUBACK / PUBREC / PUBCOMP.
//! - `incoming`: the server's PUBLISHes and PUBREL.
//! - `subscriptions`: SUBSCRIBE / UNSUBSCRIBE and what the client remembers of them.
//! - `timers`: [`Timestamp`], the keep-alive and the CONNACK deadline.
//! - `view`: [`SessionView`], the session as the application sees it.
//! - `persistence` and `store`: the records that carry a session across a restart of the host.
//! - `options` and `event`: what the application passes in and gets back.
//!
//! Packet identifiers and the PUBREL / PUBCOMP answers come from [`crate::flow`], shared
//! with the broker.

mod connection;
mod event;
mod incoming;
mod options;
mod outgoing;
mod persistence;
mod store;
mod subscriptions;
mod timers;
mod view;

#[cfg(test)]
mod tests;

use alloc::collections::VecDeque;
use core::time::Duration;

use bytes::{BufMut, Bytes};

use crate::decoder::Decoder;
use crate::flow::PacketIds;
use crate::packet::{Disconnect, Packet, PacketId, ProtocolVersion, Publish, QoS};
use crate::reason::{ReasonCode, ReasonContext};
use crate::topic::TopicFilter;
use crate::vecmap::VecMap;

pub use event::{ClientError, Event, PublishToken};
pub use options::ClientOptions;
pub use outgoing::OutboundStage;
pub use store::{RestoreError, StoreKey, StoreOp};
pub use timers::Timestamp;
pub use view::{OutboundView, SessionView};

use crate::prelude::*;
use outgoing::Outbound;
use subscriptions::{PendingRequest, SubRecord};

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No transport, or the connection ended.
    Disconnected,
    /// CONNECT sent at `since`; CONNACK due within the connect timeout.
    Connecting { since: Timestamp },
    /// CONNACK accepted.
    Connected,
}

/// The client session state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    /// The options; `client_id` changes when the server assigns one.
    opts: ClientOptions,
    /// Where the connection is.
    state: State,
    /// Decodes the server's bytes, bounded by our maximum packet size; reset per connection.
    decoder: Decoder,
    /// The last CONNACK's session present flag.
    session_present: bool,
    /// From CONNACK: how many QoS 1/2 PUBLISHes may be unacknowledged [MQTT-4.9.0-2].
    send_window: u16,
    /// From CONNACK: the largest packet the server accepts.
    server_max_packet: usize,
    /// From CONNACK: the highest QoS the server takes [MQTT-3.2.2-11].
    server_max_qos: QoS,
    /// From CONNACK: the server keeps retained messages [MQTT-3.2.2-14].
    server_retain: bool,
    /// The keep-alive in force (ours, or the server's Server Keep Alive).
    keep_alive: Duration,
    /// Packet ids for our PUBLISHes and requests: none in `by_id` or `requests` is reused.
    packet_ids: PacketIds,
    /// The token of the next `publish` call.
    next_token: u64,
    /// Outgoing QoS 1/2 in flight, in the order first sent (resent in that order
    /// [MQTT-4.6.0-1]). Keyed by a sequence number; `by_id` maps packet ids to it. Boxed:
    /// acknowledgements mostly remove the first entry, and the map's `Vec` then moves the
    /// others, 16 bytes each instead of a whole message (hundreds of bytes).
    outbound: VecMap<u64, Box<Outbound>>,
    /// Packet id of each entry of `outbound` to its sequence number.
    by_id: VecMap<u16, u64>,
    /// The sequence number of the next message to go in flight.
    next_seq: u64,
    /// Publishes not yet sent: offline, or the window is full. Bounded by `max_queued`.
    queued: VecDeque<(PublishToken, Publish)>,
    /// SUBSCRIBE / UNSUBSCRIBE awaiting their acknowledgement, by packet id.
    requests: VecMap<u16, PendingRequest>,
    /// Incoming QoS 2 packet ids delivered and awaiting PUBREL: a duplicate PUBLISH with one
    /// of these is not delivered again [MQTT-4.3.3-10].
    inbound_qos2: VecMap<u16, ()>,
    /// The subscriptions the server granted.
    subscriptions: VecMap<TopicFilter, SubRecord>,
    /// Outbound entries with `resend` set.
    pending_resend: usize,
    /// Packets for the driver to send, in order; cleared when the connection ends.
    transmit: VecDeque<Packet>,
    /// Events for the application, in order.
    events: VecDeque<Event>,
    /// When a packet was last queued for sending (the keep-alive counts from it).
    last_sent: Timestamp,
    /// When the PINGREQ awaiting its PINGRESP was sent.
    ping_sent: Option<Timestamp>,
    /// With [`ClientOptions::persistent`]: tokens of outgoing messages and ids of incoming
    /// QoS 2 messages changed since the last [`Client::take_store_ops`].
    touched_out: VecMap<u64, ()>,
    touched_in: VecMap<u16, ()>,
}

impl Client {
    /// A disconnected client.
    pub fn new(opts: ClientOptions) -> Self {
        // 3.1.1 cannot announce a maximum packet size, so a 3.1.1 client accepts what the
        // protocol can carry; 5.0 announces `max_packet_size` and enforces it.
        let max_packet = match opts.version {
            ProtocolVersion::V5 => opts.max_packet_size,
            ProtocolVersion::V311 => crate::wire::MAX_VAR_INT + 5,
        };
        let mut decoder = Decoder::with_version(opts.version, max_packet);
        decoder.set_topic_alias_maximum(opts.topic_alias_maximum);
        Client {
            state: State::Disconnected,
            decoder,
            session_present: false,
            send_window: u16::MAX,
            server_max_packet: usize::MAX,
            server_max_qos: QoS::ExactlyOnce,
            server_retain: true,
            keep_alive: Duration::from_secs(u64::from(opts.keep_alive)),
            packet_ids: PacketIds::new(),
            next_token: 0,
            outbound: VecMap::new(),
            by_id: VecMap::new(),
            next_seq: 0,
            queued: VecDeque::new(),
            requests: VecMap::new(),
            inbound_qos2: VecMap::new(),
            subscriptions: VecMap::new(),
            pending_resend: 0,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_sent: Timestamp::default(),
            ping_sent: None,
            touched_out: VecMap::new(),
            touched_in: VecMap::new(),
            opts,
        }
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Changes the client id (after the server assigned one, to resume that session).
    pub fn set_client_id(&mut self, id: impl Into<String>) {
        self.opts.client_id = id.into();
    }

    /// Changes the user name and password the next CONNECT carries (a short-lived token
    /// fetched again before a reconnection); the current connection is not affected.
    pub fn set_credentials(&mut self, username: Option<String>, password: Option<Bytes>) {
        self.opts.username = username;
        self.opts.password = password;
    }

    /// CONNACK accepted and the connection not yet ended.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Feeds bytes read from the transport.
    pub fn handle_bytes(&mut self, mut bytes: &[u8], now: Timestamp) -> Result<(), ClientError> {
        loop {
            match self.decoder.decode_from_server(&mut bytes) {
                Ok(Some(packet)) => self.handle_packet(packet, now)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.reason_code(), ClientError::Decode(e), now)),
            }
        }
    }

    /// Feeds one decoded packet.
    pub fn handle_packet(&mut self, packet: Packet, now: Timestamp) -> Result<(), ClientError> {
        match (self.state, packet) {
            (State::Connecting { .. }, Packet::ConnAck(ack)) => self.on_connack(ack, now),
            (State::Connecting { .. }, _) => Err(self.fail(
                ReasonCode::ProtocolError,
                ClientError::Protocol("the first packet from the server must be CONNACK"),
                now,
            )),
            (State::Disconnected, _) => Ok(()),
            (State::Connected, Packet::Publish(p)) => self.on_publish(p, now),
            (State::Connected, Packet::PubAck(ack)) => {
                self.on_puback(ack, now);
                Ok(())
            }
            (State::Connected, Packet::PubRec(rec)) => {
                self.on_pubrec(rec, now);
                Ok(())
            }
            (State::Connected, Packet::PubRel(rel)) => {
                self.on_pubrel(rel, now);
                Ok(())
            }
            (State::Connected, Packet::PubComp(comp)) => {
                self.on_pubcomp(comp, now);
                Ok(())
            }
            (State::Connected, Packet::SubAck(ack)) => self.on_suback(ack, now),
            (State::Connected, Packet::UnsubAck(ack)) => self.on_unsuback(ack, now),
            (State::Connected, Packet::PingResp) => {
                self.ping_sent = None;
                Ok(())
            }
            (State::Connected, Packet::Disconnect(d)) => {
                self.connection_lost();
                Err(ClientError::DisconnectedByServer {
                    reason: d.reason,
                    reason_string: d.properties.reason_string,
                })
            }
            (State::Connected, Packet::Auth(_)) => Err(self.fail(
                ReasonCode::ProtocolError,
                ClientError::Protocol("AUTH without an authentication method"),
                now,
            )),
            (State::Connected, _) => Err(self.fail(
                ReasonCode::ProtocolError,
                ClientError::Protocol("a packet only a client may send"),
                now,
            )),
        }
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front()
    }

    /// Encodes every packet waiting to be sent into `buf`; returns how many.
    pub fn encode_transmit(&mut self, buf: &mut impl BufMut) -> Result<usize, ClientError> {
        let mut n = 0;
        while let Some(p) = self.transmit.pop_front() {
            p.encode(self.opts.version, buf)?;
            n += 1;
        }
        Ok(n)
    }

    /// Encodes packets waiting to be sent into `buf` until it holds `limit` bytes or more
    /// (the last packet may cross it) or none is left; returns how many. A driver that sends
    /// each `buf` as one frame bounds its frames so.
    ///
    /// A packet that cannot be encoded is dropped and its error returned; call again for
    /// the packets after it.
    pub fn encode_transmit_upto(
        &mut self,
        buf: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, ClientError> {
        let mut n = 0;
        while buf.len() < limit {
            let Some(p) = self.transmit.pop_front() else {
                break;
            };
            p.encode(self.opts.version, buf)?;
            n += 1;
        }
        Ok(n)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues `packet` for the driver and notes when (the keep-alive counts from it).
    fn send(&mut self, packet: Packet, now: Timestamp) {
        self.transmit.push_back(packet);
        self.last_sent = now;
    }

    /// Ends the connection because of an error of the server's: in 5.0 a DISCONNECT with the
    /// reason is queued first [MQTT-4.13.1-1].
    fn fail(&mut self, reason: ReasonCode, err: ClientError, now: Timestamp) -> ClientError {
        let was_connected = self.state == State::Connected;
        self.connection_lost();
        if was_connected && self.opts.version == ProtocolVersion::V5 {
            // Some decode errors name a code DISCONNECT cannot carry (e.g. 0x84).
            let reason = if reason.allowed_in(ReasonContext::Disconnect) {
                reason
            } else {
                ReasonCode::ProtocolError
            };
            self.send(Packet::Disconnect(Disconnect::new(reason)), now);
        }
        err
    }

    /// A packet id no outgoing message or pending request holds [MQTT-2.2.1-3].
    fn alloc_packet_id(&mut self) -> Result<PacketId, ClientError> {
        let (by_id, requests) = (&self.by_id, &self.requests);
        self.packet_ids
            .next(|id| by_id.contains_key(&id.get()) || requests.contains_key(&id.get()))
            .ok_or(ClientError::NoPacketId)
    }
}
