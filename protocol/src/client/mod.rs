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

mod store;

use std::collections::VecDeque;

use crate::vecmap::VecMap;

use std::time::Duration;
pub use store::{RestoreError, StoreKey, StoreOp};

use bytes::{BufMut, Bytes};

use crate::decoder::Decoder;
use crate::error::{DecodeError, EncodeError};
use crate::packet::{
    ConnAck, Connect, Disconnect, Packet, PacketId, ProtocolVersion, PubResp, Publish, QoS, SubAck,
    Subscribe, Subscription, UnsubAck, Unsubscribe, Will,
};
use crate::properties::Properties;
use crate::reason::{ReasonCode, ReasonContext};
use crate::topic::{TopicFilter, TopicName};

/// A point in time, in milliseconds since an origin the driver chooses (`performance.now()`
/// in a browser, an `Instant` in tests). Only differences matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The time `ms` milliseconds after the origin.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the origin.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    fn after(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

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
    /// full, `publish` fails with [`ClientError::QueueFull`]: nothing is dropped silently.
    pub max_queued: usize,
    /// Subscribe again to every known subscription when the server has no session for us
    /// (CONNACK session present = 0), whatever `clean_start` was.
    pub resubscribe: bool,
    /// How long to wait for CONNACK.
    pub connect_timeout: Duration,
    /// Record what each step changes in the state worth keeping across a restart of the
    /// host, for [`Client::take_store_ops`] (see [`StoreOp`]). Off by default: it costs a
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
    /// The queue of unsent messages is full ([`ClientOptions::max_queued`]).
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

/// Where an outgoing QoS 1/2 message is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundStage {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitingAck,
    /// PUBREL sent, waiting for PUBCOMP (QoS 2).
    AwaitingComp,
}

#[derive(Debug, Clone)]
struct Outbound {
    token: PublishToken,
    publish: Publish,
    stage: OutboundStage,
    /// Unacknowledged from an earlier connection and not yet resent on this one: it waits
    /// for room in the server's Receive Maximum [MQTT-4.9.0-1].
    resend: bool,
}

/// One subscription as the client remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubRecord {
    /// The options asked for (used again when resubscribing).
    requested: crate::packet::SubscriptionOptions,
    /// The QoS the server granted.
    granted: QoS,
    /// The Subscription Identifier it was made with.
    id: Option<u32>,
}

#[derive(Debug, Clone)]
enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
}

#[derive(Debug, Clone)]
struct PendingRequest {
    request: Request,
    /// Sent by the machine itself (resubscription): its answer is not an event.
    internal: bool,
    /// Sent on the current connection.
    sent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Disconnected,
    Connecting { since: Timestamp },
    Connected,
}

/// One outgoing message as [`Client::session`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundView {
    /// Its packet identifier.
    pub packet_id: PacketId,
    /// Its topic.
    pub topic: TopicName,
    /// Its QoS.
    pub qos: QoS,
    /// Its payload size.
    pub size: usize,
    /// Where it is.
    pub stage: OutboundStage,
}

/// The client's own view of its session (for `client.session()` in JavaScript).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// Connected (CONNACK accepted).
    pub connected: bool,
    /// The last CONNACK's session present flag.
    pub session_present: bool,
    /// The subscriptions granted, with the options asked and the QoS granted.
    pub subscriptions: Vec<(TopicFilter, crate::packet::SubscriptionOptions)>,
    /// Outgoing QoS 1/2 messages in flight, oldest first.
    pub outbound_inflight: Vec<OutboundView>,
    /// Incoming QoS 2 messages received and awaiting PUBREL.
    pub inbound_awaiting_pubrel: Vec<PacketId>,
    /// Messages waiting to be sent.
    pub queued: usize,
    /// The server's Receive Maximum (our sending window).
    pub send_window: u16,
}

/// The client session state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    opts: ClientOptions,
    state: State,
    decoder: Decoder,
    session_present: bool,
    /// From CONNACK: how many QoS 1/2 PUBLISHes may be unacknowledged [MQTT-4.9.0-2].
    send_window: u16,
    /// From CONNACK: the largest packet the server accepts.
    server_max_packet: usize,
    server_max_qos: QoS,
    server_retain: bool,
    /// The keep-alive in force (ours, or the server's Server Keep Alive).
    keep_alive: Duration,
    next_packet_id: u16,
    next_token: u64,
    /// Outgoing QoS 1/2 in flight, in the order first sent (resent in that order
    /// [MQTT-4.6.0-1]). Keyed by a sequence number; `by_id` maps packet ids to it.
    outbound: VecMap<u64, Outbound>,
    by_id: VecMap<u16, u64>,
    next_seq: u64,
    /// Publishes not yet sent: offline, or the window is full. Bounded by `max_queued`.
    queued: VecDeque<(PublishToken, Publish)>,
    /// SUBSCRIBE / UNSUBSCRIBE awaiting their acknowledgement, by packet id.
    requests: VecMap<u16, PendingRequest>,
    /// Incoming QoS 2 packet ids delivered and awaiting PUBREL: a duplicate PUBLISH with one
    /// of these is not delivered again [MQTT-4.3.3-10].
    inbound_qos2: VecMap<u16, ()>,
    subscriptions: VecMap<TopicFilter, SubRecord>,
    /// Outbound entries with `resend` set.
    pending_resend: usize,
    transmit: VecDeque<Packet>,
    events: VecDeque<Event>,
    last_sent: Timestamp,
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
            next_packet_id: 1,
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

    /// CONNACK accepted and the connection not yet ended.
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Starts a connection on a freshly opened transport: queues CONNECT.
    pub fn connect(&mut self, now: Timestamp) -> Result<(), ClientError> {
        if self.state != State::Disconnected {
            return Err(ClientError::AlreadyConnected);
        }
        self.decoder.reset();
        self.transmit.clear();
        self.ping_sent = None;
        let mut properties = self.opts.connect_properties.clone();
        if self.opts.version == ProtocolVersion::V5 {
            properties.session_expiry_interval = self.opts.session_expiry_interval;
            if self.opts.receive_maximum != u16::MAX {
                properties.receive_maximum = Some(self.opts.receive_maximum.max(1));
            }
            properties.maximum_packet_size = Some(self.opts.max_packet_size);
            if self.opts.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(self.opts.topic_alias_maximum);
            }
        }
        let connect = Connect {
            protocol: self.opts.version,
            clean_start: self.opts.clean_start,
            keep_alive: self.opts.keep_alive,
            client_id: self.opts.client_id.clone(),
            will: self.opts.will.clone(),
            username: self.opts.username.clone(),
            password: self.opts.password.clone(),
            properties,
        };
        self.keep_alive = Duration::from_secs(u64::from(self.opts.keep_alive));
        self.send(Packet::Connect(Box::new(connect)), now);
        self.state = State::Connecting { since: now };
        Ok(())
    }

    /// The transport closed (or failed). In-flight messages are kept for the next connection.
    pub fn connection_lost(&mut self) {
        self.state = State::Disconnected;
        self.transmit.clear();
        self.ping_sent = None;
        for r in self.requests.values_mut() {
            r.sent = false;
        }
    }

    /// Sends DISCONNECT and ends the connection; the will is not published. A persistent
    /// session's in-flight messages are kept.
    pub fn disconnect(&mut self, reason: ReasonCode, now: Timestamp) {
        if self.state == State::Connected {
            self.send(Packet::Disconnect(Disconnect::new(reason)), now);
        }
        self.state = State::Disconnected;
        self.ping_sent = None;
        for r in self.requests.values_mut() {
            r.sent = false;
        }
    }

    /// Publishes a message. QoS 0 is done once sent; QoS 1 and 2 end with an
    /// [`Event::Published`] carrying the returned token. While offline or when the server's
    /// Receive Maximum is reached, the message waits in a bounded queue.
    pub fn publish(
        &mut self,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
        now: Timestamp,
    ) -> Result<PublishToken, ClientError> {
        if self.state == State::Connected {
            if qos > self.server_max_qos {
                return Err(ClientError::QoSNotSupported(qos));
            }
            if retain && !self.server_retain {
                return Err(ClientError::RetainNotSupported);
            }
        }
        if self.queued.len() >= self.opts.max_queued {
            return Err(ClientError::QueueFull);
        }
        let publish = Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: None,
            payload,
            properties,
        };
        // Refuse now what can never be sent, rather than fail later.
        let size = Packet::Publish(Publish {
            packet_id: (qos != QoS::AtMostOnce).then_some(PacketId::MIN),
            ..publish.clone()
        })
        .encoded_len(self.opts.version)?;
        if size > self.server_max_packet {
            return Err(EncodeError::PacketTooLarge {
                size,
                max: self.server_max_packet,
            }
            .into());
        }
        let token = PublishToken(self.next_token);
        self.next_token += 1;
        if qos != QoS::AtMostOnce {
            self.touch_out(token);
        }
        self.queued.push_back((token, publish));
        self.drain_queue(now);
        Ok(token)
    }

    /// Subscribes; the answer comes as [`Event::SubAck`] with the returned packet id. Sent at
    /// once when connected, else on the next connection.
    pub fn subscribe(
        &mut self,
        subscriptions: Vec<Subscription>,
        properties: Properties,
        now: Timestamp,
    ) -> Result<PacketId, ClientError> {
        if subscriptions.is_empty() {
            return Err(EncodeError::NoTopicFilters.into());
        }
        let packet_id = self.alloc_packet_id()?;
        let sub = Subscribe {
            packet_id,
            subscriptions,
            properties,
        };
        self.request(Request::Subscribe(sub), false, now);
        Ok(packet_id)
    }

    /// Unsubscribes; the answer comes as [`Event::UnsubAck`] with the returned packet id.
    pub fn unsubscribe(
        &mut self,
        filters: Vec<TopicFilter>,
        properties: Properties,
        now: Timestamp,
    ) -> Result<PacketId, ClientError> {
        if filters.is_empty() {
            return Err(EncodeError::NoTopicFilters.into());
        }
        let packet_id = self.alloc_packet_id()?;
        let unsub = Unsubscribe {
            packet_id,
            filters,
            properties,
        };
        self.request(Request::Unsubscribe(unsub), false, now);
        Ok(packet_id)
    }

    fn request(&mut self, request: Request, internal: bool, now: Timestamp) {
        let packet_id = match &request {
            Request::Subscribe(s) => s.packet_id,
            Request::Unsubscribe(u) => u.packet_id,
        };
        let connected = self.state == State::Connected;
        if connected {
            self.send(request_packet(&request), now);
        }
        self.requests.insert(
            packet_id.get(),
            PendingRequest {
                request,
                internal,
                sent: connected,
            },
        );
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
                let known = self.inbound_qos2.remove(&rel.packet_id.get()).is_some();
                if known {
                    self.touch_in(rel.packet_id.get());
                }
                let reason = if known || self.opts.version == ProtocolVersion::V311 {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.send(
                    Packet::PubComp(PubResp::with_reason(rel.packet_id, reason)),
                    now,
                );
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

    /// Runs the timers: sends PINGREQ when the keep-alive is due, ends the connection when
    /// the PINGRESP or the CONNACK is late.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), ClientError> {
        match self.state {
            State::Disconnected => Ok(()),
            State::Connecting { since } => {
                if now >= since.after(self.opts.connect_timeout) {
                    self.connection_lost();
                    return Err(ClientError::ConnectTimeout);
                }
                Ok(())
            }
            State::Connected => {
                if self.keep_alive.is_zero() {
                    return Ok(());
                }
                if let Some(sent) = self.ping_sent {
                    if now >= sent.after(self.keep_alive) {
                        self.connection_lost();
                        return Err(ClientError::KeepAliveTimeout);
                    }
                } else if now >= self.last_sent.after(self.ping_interval()) {
                    self.ping_sent = Some(now);
                    self.send(Packet::PingReq, now);
                }
                Ok(())
            }
        }
    }

    /// When [`Client::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Disconnected => None,
            State::Connecting { since } => Some(since.after(self.opts.connect_timeout)),
            State::Connected if self.keep_alive.is_zero() => None,
            State::Connected => Some(match self.ping_sent {
                Some(sent) => sent.after(self.keep_alive),
                None => self.last_sent.after(self.ping_interval()),
            }),
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

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The client's view of its session.
    pub fn session(&self) -> SessionView {
        SessionView {
            connected: self.is_connected(),
            session_present: self.session_present,
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(f, rec)| {
                    let mut options = rec.requested;
                    options.qos = rec.granted;
                    (f.clone(), options)
                })
                .collect(),
            outbound_inflight: self
                .outbound
                .values()
                .filter_map(|o| {
                    Some(OutboundView {
                        packet_id: o.publish.packet_id?,
                        topic: o.publish.topic.clone(),
                        qos: o.publish.qos,
                        size: o.publish.payload.len(),
                        stage: o.stage,
                    })
                })
                .collect(),
            inbound_awaiting_pubrel: {
                // In packet id order: the map is sorted by key.
                self.inbound_qos2
                    .keys()
                    .filter_map(|&id| PacketId::new(id))
                    .collect()
            },
            queued: self.queued.len(),
            send_window: self.send_window,
        }
    }

    /// With [`ClientOptions::persistent`]: the puts and deletes that bring a store up to
    /// date with what changed since the last call (empty when nothing did). Write them, and
    /// send the packets of the same step only once they are durable (see [`StoreOp`]).
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        if !self.touched_out.is_empty() {
            // Sorted maps, not sorting: every generic sort costs kilobytes of wasm.
            let mut touched = std::mem::take(&mut self.touched_out);
            let v = self.opts.version;
            let current = self
                .outbound
                .iter()
                .map(|(seq, o)| (o.token, Some((*seq, o.stage)), &o.publish))
                .chain(
                    self.queued
                        .iter()
                        .filter(|(_, p)| p.qos != QoS::AtMostOnce)
                        .map(|(t, p)| (*t, None, p)),
                );
            for (token, in_flight, publish) in current {
                if touched.remove(&token.0).is_some() {
                    let value = store::encode_outbound(in_flight, publish, v);
                    ops.push(StoreOp::Put(StoreKey::Outbound(token.0), value));
                }
            }
            for &token in touched.keys() {
                ops.push(StoreOp::Delete(StoreKey::Outbound(token)));
            }
        }
        for &id in std::mem::take(&mut self.touched_in).keys() {
            let Some(pid) = PacketId::new(id) else {
                continue;
            };
            ops.push(if self.inbound_qos2.contains_key(&id) {
                StoreOp::Put(StoreKey::Inbound(pid), Vec::new())
            } else {
                StoreOp::Delete(StoreKey::Inbound(pid))
            });
        }
        ops
    }

    /// Marks every record of the session for the next [`Client::take_store_ops`]: after a
    /// write that failed, the driver clears its store and writes the whole session again.
    pub fn touch_all(&mut self) {
        if !self.opts.persistent {
            return;
        }
        for o in self.outbound.values() {
            self.touched_out.insert(o.token.0, ());
        }
        for (t, p) in &self.queued {
            if p.qos != QoS::AtMostOnce {
                self.touched_out.insert(t.0, ());
            }
        }
        for &id in self.inbound_qos2.keys() {
            self.touched_in.insert(id, ());
        }
    }

    /// Takes back a session stored through [`Client::take_store_ops`], before the first
    /// [`Client::connect`]: messages in flight are resent when the server resumes the
    /// session (or sent again as new messages when it does not), queued ones follow, and
    /// duplicates of incoming QoS 2 messages already delivered are not delivered again.
    /// Their outcomes come as [`Event::Published`] with the stored tokens; new tokens start
    /// after them.
    pub fn restore<'a>(
        &mut self,
        records: impl IntoIterator<Item = (StoreKey, &'a [u8])>,
    ) -> Result<(), RestoreError> {
        let fresh = self.state == State::Disconnected
            && self.outbound.is_empty()
            && self.queued.is_empty()
            && self.inbound_qos2.is_empty()
            && self.next_token == 0;
        if !fresh {
            return Err(RestoreError::NotFresh);
        }
        // Into maps sorted by the first send order and by token.
        let mut queued = VecMap::new();
        for (key, value) in records {
            match key {
                StoreKey::Inbound(id) => {
                    self.inbound_qos2.insert(id.get(), ());
                }
                StoreKey::Outbound(token) => {
                    let stored = store::decode_outbound(key, value)?;
                    self.next_token = self.next_token.max(token.saturating_add(1));
                    let publish = stored.publish;
                    match (stored.in_flight, publish.packet_id) {
                        (Some((order, stage)), Some(id)) => {
                            self.by_id.insert(id.get(), order);
                            self.next_seq = self.next_seq.max(order.saturating_add(1));
                            let outbound = Outbound {
                                token: PublishToken(token),
                                publish,
                                stage,
                                resend: false,
                            };
                            self.outbound.insert(order, outbound);
                        }
                        _ => {
                            queued.insert(token, (PublishToken(token), publish));
                        }
                    }
                }
            }
        }
        self.queued.extend(queued.into_values());
        Ok(())
    }

    // ----- internals -----

    fn touch_out(&mut self, token: PublishToken) {
        if self.opts.persistent {
            self.touched_out.insert(token.0, ());
        }
    }

    fn touch_in(&mut self, id: u16) {
        if self.opts.persistent {
            self.touched_in.insert(id, ());
        }
    }

    /// PINGREQ goes out after three quarters of the keep-alive without sending, so a late
    /// timer (a background browser tab) still lands within the server's 1.5 times.
    fn ping_interval(&self) -> Duration {
        self.keep_alive * 3 / 4
    }

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

    fn alloc_packet_id(&mut self) -> Result<PacketId, ClientError> {
        for _ in 0..=u16::MAX {
            let candidate = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(candidate) {
                if !self.by_id.contains_key(&candidate) && !self.requests.contains_key(&candidate) {
                    return Ok(id);
                }
            }
        }
        Err(ClientError::NoPacketId)
    }

    fn on_connack(&mut self, ack: ConnAck, now: Timestamp) -> Result<(), ClientError> {
        if ack.reason.is_error() {
            self.connection_lost();
            return Err(ClientError::Refused(ack.reason));
        }
        if self.opts.version == ProtocolVersion::V5 && self.opts.clean_start && ack.session_present
        {
            // [MQTT-3.2.2-4]: a session cannot be present after Clean Start.
            self.connection_lost();
            return Err(ClientError::Protocol("session present after clean start"));
        }
        self.state = State::Connected;
        self.session_present = ack.session_present;
        let p = &ack.properties;
        self.send_window = p.receive_maximum.unwrap_or(u16::MAX);
        self.server_max_packet = p.maximum_packet_size.map_or(usize::MAX, |m| m as usize);
        self.server_max_qos = p.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        self.server_retain = p.retain_available.unwrap_or(true);
        if let Some(ka) = p.server_keep_alive {
            self.keep_alive = Duration::from_secs(u64::from(ka));
        }
        if let Some(id) = &p.assigned_client_identifier {
            self.opts.client_id = id.clone();
        }
        if ack.session_present {
            // Resend what is unacknowledged, in the original order [MQTT-4.6.0-1]: every
            // PUBREL, and PUBLISH with DUP set [MQTT-4.4.0-1], [MQTT-3.3.1-1] as far as the
            // new Receive Maximum allows; the rest follow as acknowledgements free room.
            let window = usize::from(self.send_window);
            let mut publishes = 0;
            let mut resend = Vec::new();
            for o in self.outbound.values_mut() {
                match (o.stage, o.publish.packet_id) {
                    (OutboundStage::AwaitingAck, _) if publishes < window => {
                        publishes += 1;
                        o.publish.dup = true;
                        resend.push(Packet::Publish(o.publish.clone()));
                    }
                    (OutboundStage::AwaitingAck, _) => o.resend = true,
                    (OutboundStage::AwaitingComp, Some(id)) => {
                        resend.push(Packet::PubRel(PubResp::new(id)))
                    }
                    (OutboundStage::AwaitingComp, None) => {}
                }
            }
            self.pending_resend = self.outbound.values().filter(|o| o.resend).count();
            for p in resend {
                self.send(p, now);
            }
        } else {
            // No session on the server: our session state is void [MQTT-3.2.2-5]. A message
            // the server already took (PUBREC received) is done; the others are sent again
            // as new messages, first in line.
            // Everything below changes: the store follows.
            self.touch_all();
            self.inbound_qos2.clear();
            self.by_id.clear();
            self.pending_resend = 0;
            let old = std::mem::take(&mut self.outbound);
            for o in old.into_values().rev() {
                match o.stage {
                    OutboundStage::AwaitingComp => self.events.push_back(Event::Published {
                        token: o.token,
                        reason: ReasonCode::Success,
                    }),
                    OutboundStage::AwaitingAck => {
                        let mut p = o.publish;
                        p.dup = false;
                        p.packet_id = None;
                        self.queued.push_front((o.token, p));
                    }
                }
            }
            if self.opts.resubscribe && !self.subscriptions.is_empty() {
                let subs: Vec<(Subscription, Option<u32>)> = self
                    .subscriptions
                    .iter()
                    .map(|(filter, rec)| {
                        let sub = Subscription {
                            filter: filter.clone(),
                            options: rec.requested,
                        };
                        (sub, rec.id)
                    })
                    .collect();
                for (s, id) in subs {
                    let packet_id = self.alloc_packet_id()?;
                    let mut properties = Properties::default();
                    properties.subscription_identifiers.extend(id);
                    let sub = Subscribe {
                        packet_id,
                        subscriptions: vec![s],
                        properties,
                    };
                    self.requests.insert(
                        packet_id.get(),
                        PendingRequest {
                            request: Request::Subscribe(sub),
                            internal: true,
                            sent: false,
                        },
                    );
                }
            }
        }
        let unsent: Vec<Packet> = self
            .requests
            .values_mut()
            .filter(|r| !r.sent)
            .map(|r| {
                r.sent = true;
                request_packet(&r.request)
            })
            .collect();
        for p in unsent {
            self.send(p, now);
        }
        self.events.push_back(Event::Connected {
            session_present: ack.session_present,
            connack: ack,
        });
        self.drain_queue(now);
        Ok(())
    }

    /// Sends queued publishes while connected and the window allows.
    fn drain_queue(&mut self, now: Timestamp) {
        if self.state != State::Connected {
            return;
        }
        let window = usize::from(self.send_window);
        // First what an earlier connection left unacknowledged, oldest first.
        while self.pending_resend > 0 && self.outbound.len() - self.pending_resend < window {
            let Some(o) = self.outbound.values_mut().find(|o| o.resend) else {
                break;
            };
            o.resend = false;
            o.publish.dup = true;
            let packet = Packet::Publish(o.publish.clone());
            self.pending_resend -= 1;
            self.send(packet, now);
        }
        while self.state == State::Connected {
            let Some((_, front)) = self.queued.front() else {
                break;
            };
            let needs_slot = front.qos != QoS::AtMostOnce;
            if needs_slot && self.outbound.len() >= window {
                break;
            }
            let Some((token, mut publish)) = self.queued.pop_front() else {
                break;
            };
            // Queued while offline: the server's limits were not known then
            // [MQTT-3.2.2-11], [MQTT-3.2.2-14].
            let refused = if publish.qos > self.server_max_qos {
                Some(ReasonCode::QoSNotSupported)
            } else if publish.retain && !self.server_retain {
                Some(ReasonCode::RetainNotSupported)
            } else {
                None
            };
            if let Some(reason) = refused {
                self.touch_out(token);
                self.events.push_back(Event::Published { token, reason });
                continue;
            }
            if !needs_slot {
                self.send(Packet::Publish(publish), now);
                self.events.push_back(Event::Published {
                    token,
                    reason: ReasonCode::Success,
                });
                continue;
            }
            let id = match self.alloc_packet_id() {
                Ok(id) => id,
                Err(_) => {
                    self.queued.push_front((token, publish));
                    break;
                }
            };
            publish.packet_id = Some(id);
            let size = Packet::Publish(publish.clone()).encoded_len(self.opts.version);
            self.touch_out(token);
            if !matches!(size, Ok(s) if s <= self.server_max_packet) {
                self.events.push_back(Event::Published {
                    token,
                    reason: ReasonCode::PacketTooLarge,
                });
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.by_id.insert(id.get(), seq);
            self.send(Packet::Publish(publish.clone()), now);
            self.outbound.insert(
                seq,
                Outbound {
                    token,
                    publish,
                    stage: OutboundStage::AwaitingAck,
                    resend: false,
                },
            );
        }
    }

    fn take_outbound(&mut self, id: PacketId, stage: OutboundStage, qos: QoS) -> Option<Outbound> {
        let seq = *self.by_id.get(&id.get())?;
        let o = self.outbound.get(&seq)?;
        if o.stage != stage || o.publish.qos != qos {
            return None;
        }
        self.by_id.remove(&id.get());
        let o = self.outbound.remove(&seq)?;
        if o.resend {
            self.pending_resend -= 1;
        }
        self.touch_out(o.token);
        Some(o)
    }

    fn on_puback(&mut self, ack: PubResp, now: Timestamp) {
        if let Some(o) =
            self.take_outbound(ack.packet_id, OutboundStage::AwaitingAck, QoS::AtLeastOnce)
        {
            self.events.push_back(Event::Published {
                token: o.token,
                reason: ack.reason,
            });
            self.drain_queue(now);
        }
    }

    fn on_pubrec(&mut self, rec: PubResp, now: Timestamp) {
        let id = rec.packet_id;
        let Some(&seq) = self.by_id.get(&id.get()) else {
            // Not ours (any more): release it so the server can end the flow.
            let reason = match self.opts.version {
                ProtocolVersion::V5 => ReasonCode::PacketIdentifierNotFound,
                ProtocolVersion::V311 => ReasonCode::Success,
            };
            self.send(Packet::PubRel(PubResp::with_reason(id, reason)), now);
            return;
        };
        let Some(o) = self.outbound.get_mut(&seq) else {
            return;
        };
        if o.publish.qos != QoS::ExactlyOnce {
            return;
        }
        if rec.reason.is_error() {
            // The flow ends here: the server refused the message [MQTT-4.3.3-4] (5.0).
            let stage = o.stage;
            if let Some(o) = self.take_outbound(id, stage, QoS::ExactlyOnce) {
                self.events.push_back(Event::Published {
                    token: o.token,
                    reason: rec.reason,
                });
            }
            self.drain_queue(now);
            return;
        }
        // Once PUBREC is in, the message is never sent again, only PUBREL [MQTT-4.3.3-5].
        o.stage = OutboundStage::AwaitingComp;
        o.publish.payload = Bytes::new();
        let token = o.token;
        self.touch_out(token);
        self.send(Packet::PubRel(PubResp::new(id)), now);
    }

    fn on_pubcomp(&mut self, comp: PubResp, now: Timestamp) {
        if let Some(o) = self.take_outbound(
            comp.packet_id,
            OutboundStage::AwaitingComp,
            QoS::ExactlyOnce,
        ) {
            self.events.push_back(Event::Published {
                token: o.token,
                reason: comp.reason,
            });
            self.drain_queue(now);
        }
    }

    fn on_publish(&mut self, p: Publish, now: Timestamp) -> Result<(), ClientError> {
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => self.events.push_back(Event::Message(p)),
            (QoS::AtLeastOnce, Some(id)) => {
                self.send(Packet::PubAck(PubResp::new(id)), now);
                self.events.push_back(Event::Message(p));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if !self.inbound_qos2.contains_key(&id.get()) {
                    // Only 5.0 can announce a Receive Maximum [MQTT-3.3.4-9].
                    let max = usize::from(self.opts.receive_maximum.max(1));
                    if self.opts.version == ProtocolVersion::V5 && self.inbound_qos2.len() >= max {
                        return Err(self.fail(
                            ReasonCode::ReceiveMaximumExceeded,
                            ClientError::Protocol("the server exceeded our Receive Maximum"),
                            now,
                        ));
                    }
                    self.inbound_qos2.insert(id.get(), ());
                    self.touch_in(id.get());
                    self.events.push_back(Event::Message(p));
                }
                // A duplicate is acknowledged again, not delivered again [MQTT-4.3.3-10].
                self.send(Packet::PubRec(PubResp::new(id)), now);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_suback(&mut self, ack: SubAck, now: Timestamp) -> Result<(), ClientError> {
        let Some(req) = self.requests.remove(&ack.packet_id.get()) else {
            return Ok(());
        };
        if let Request::Subscribe(sub) = &req.request {
            if sub.subscriptions.len() != ack.reasons.len() {
                // One reason code per subscription, in order [MQTT-3.9.3-1].
                return Err(self.fail(
                    ReasonCode::ProtocolError,
                    ClientError::Protocol("SUBACK with the wrong number of reason codes"),
                    now,
                ));
            }
            let id = sub.properties.subscription_identifiers.first().copied();
            for (s, reason) in sub.subscriptions.iter().zip(&ack.reasons) {
                let granted = match reason {
                    ReasonCode::GrantedQoS2 => QoS::ExactlyOnce,
                    ReasonCode::GrantedQoS1 => QoS::AtLeastOnce,
                    ReasonCode::Success => QoS::AtMostOnce,
                    _ => {
                        self.subscriptions.remove(&s.filter);
                        continue;
                    }
                };
                let rec = SubRecord {
                    requested: s.options,
                    granted,
                    id,
                };
                self.subscriptions.insert(s.filter.clone(), rec);
            }
        }
        if !req.internal {
            self.events.push_back(Event::SubAck(ack));
        }
        Ok(())
    }

    fn on_unsuback(&mut self, mut ack: UnsubAck, now: Timestamp) -> Result<(), ClientError> {
        let Some(req) = self.requests.remove(&ack.packet_id.get()) else {
            return Ok(());
        };
        if let Request::Unsubscribe(unsub) = &req.request {
            let v5 = self.opts.version == ProtocolVersion::V5;
            if v5 && unsub.filters.len() != ack.reasons.len() {
                // One reason code per topic filter [MQTT-3.11.3-1].
                return Err(self.fail(
                    ReasonCode::ProtocolError,
                    ClientError::Protocol("UNSUBACK with the wrong number of reason codes"),
                    now,
                ));
            }
            for (i, f) in unsub.filters.iter().enumerate() {
                // 3.1.1 has no reason codes: the UNSUBACK means done.
                let done = !v5
                    || matches!(
                        ack.reasons.get(i),
                        Some(ReasonCode::Success | ReasonCode::NoSubscriptionExisted)
                    );
                if done {
                    self.subscriptions.remove(f);
                }
            }
            if !v5 {
                // So that the application sees one code per filter in either version.
                ack.reasons = vec![ReasonCode::Success; unsub.filters.len()];
            }
        }
        if !req.internal {
            self.events.push_back(Event::UnsubAck(ack));
        }
        Ok(())
    }
}

fn request_packet(r: &Request) -> Packet {
    match r {
        Request::Subscribe(s) => Packet::Subscribe(s.clone()),
        Request::Unsubscribe(u) => Packet::Unsubscribe(u.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::packet::SubscriptionOptions;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn topic(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn sent(c: &mut Client) -> Vec<Packet> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    fn events(c: &mut Client) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    /// A client of `version` that has connected and got CONNACK with `props`.
    fn connected(version: ProtocolVersion, clean: bool, props: Properties) -> Client {
        let mut c = Client::new(ClientOptions::new(version, "c1", clean));
        c.connect(t(0)).unwrap();
        sent(&mut c);
        let mut ack = ConnAck::new(false, ReasonCode::Success);
        ack.properties = props;
        c.handle_packet(Packet::ConnAck(ack), t(1)).unwrap();
        events(&mut c);
        c
    }

    fn publish(c: &mut Client, qos: QoS, now: u64) -> PublishToken {
        c.publish(
            topic("a/b"),
            Bytes::from_static(b"hi"),
            qos,
            false,
            Properties::default(),
            t(now),
        )
        .unwrap()
    }

    fn published(packets: &[Packet]) -> Vec<(PacketId, bool)> {
        packets
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some((p.packet_id.unwrap(), p.dup)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn connect_sends_connect_with_the_options_and_connack_connects() {
        let mut opts = ClientOptions::new(ProtocolVersion::V5, "dev-1", false);
        opts.session_expiry_interval = Some(3600);
        opts.keep_alive = 30;
        let mut c = Client::new(opts);
        c.connect(t(0)).unwrap();
        let out = sent(&mut c);
        let [Packet::Connect(connect)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(connect.client_id, "dev-1");
        assert!(!connect.clean_start);
        assert_eq!(connect.keep_alive, 30);
        assert_eq!(connect.properties.session_expiry_interval, Some(3600));
        assert!(!c.is_connected());
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
            t(5),
        )
        .unwrap();
        assert!(c.is_connected());
        assert!(matches!(
            &events(&mut c)[..],
            [Event::Connected {
                session_present: true,
                ..
            }]
        ));
        assert_eq!(c.connect(t(6)), Err(ClientError::AlreadyConnected));
    }

    #[test]
    fn the_first_packet_from_the_server_must_be_connack_mqtt_3_2_0_1() {
        let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
        c.connect(t(0)).unwrap();
        let err = c.handle_packet(Packet::PingResp, t(1)).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)));
        assert!(!c.is_connected());
    }

    #[test]
    fn a_refused_connection_reports_its_reason() {
        let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
        c.connect(t(0)).unwrap();
        let err = c
            .handle_packet(
                Packet::ConnAck(ConnAck::new(false, ReasonCode::NotAuthorized)),
                t(1),
            )
            .unwrap_err();
        assert_eq!(err, ClientError::Refused(ReasonCode::NotAuthorized));
        // The machine is disconnected and may connect again.
        c.connect(t(2)).unwrap();
    }

    #[test]
    fn qos1_publish_completes_on_puback_mqtt_4_3_2() {
        let mut c = connected(ProtocolVersion::V311, true, Properties::default());
        let token = publish(&mut c, QoS::AtLeastOnce, 10);
        let out = sent(&mut c);
        assert_eq!(published(&out), vec![(pid(1), false)]);
        assert!(events(&mut c).is_empty());
        c.handle_packet(Packet::PubAck(PubResp::new(pid(1))), t(11))
            .unwrap();
        assert_eq!(
            events(&mut c),
            vec![Event::Published {
                token,
                reason: ReasonCode::Success
            }]
        );
        assert!(c.session().outbound_inflight.is_empty());
    }

    #[test]
    fn qos2_publish_goes_through_pubrec_pubrel_pubcomp_mqtt_4_3_3() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        let token = publish(&mut c, QoS::ExactlyOnce, 10);
        sent(&mut c);
        c.handle_packet(Packet::PubRec(PubResp::new(pid(1))), t(11))
            .unwrap();
        assert_eq!(sent(&mut c), vec![Packet::PubRel(PubResp::new(pid(1)))]);
        assert_eq!(
            c.session().outbound_inflight[0].stage,
            OutboundStage::AwaitingComp
        );
        assert!(events(&mut c).is_empty());
        c.handle_packet(Packet::PubComp(PubResp::new(pid(1))), t(12))
            .unwrap();
        assert_eq!(
            events(&mut c),
            vec![Event::Published {
                token,
                reason: ReasonCode::Success
            }]
        );
    }

    #[test]
    fn a_pubrec_with_an_error_ends_the_qos2_flow_without_pubrel() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        let token = publish(&mut c, QoS::ExactlyOnce, 10);
        sent(&mut c);
        let rec = PubResp::with_reason(pid(1), ReasonCode::QuotaExceeded);
        c.handle_packet(Packet::PubRec(rec), t(11)).unwrap();
        assert!(sent(&mut c).is_empty());
        assert_eq!(
            events(&mut c),
            vec![Event::Published {
                token,
                reason: ReasonCode::QuotaExceeded
            }]
        );
    }

    #[test]
    fn no_more_than_receive_maximum_publishes_are_in_flight_mqtt_4_9_0_2() {
        let props = Properties {
            receive_maximum: Some(2),
            ..Default::default()
        };
        let mut c = connected(ProtocolVersion::V5, true, props);
        for i in 0..4 {
            publish(&mut c, QoS::AtLeastOnce, 10 + i);
        }
        assert_eq!(
            published(&sent(&mut c)),
            vec![(pid(1), false), (pid(2), false)]
        );
        assert_eq!(c.session().queued, 2);
        c.handle_packet(Packet::PubAck(PubResp::new(pid(1))), t(20))
            .unwrap();
        assert_eq!(published(&sent(&mut c)), vec![(pid(3), false)]);
        assert_eq!(c.session().queued, 1);
    }

    #[test]
    fn qos0_is_not_held_back_by_the_window() {
        let props = Properties {
            receive_maximum: Some(1),
            ..Default::default()
        };
        let mut c = connected(ProtocolVersion::V5, true, props);
        publish(&mut c, QoS::AtLeastOnce, 10);
        let token = publish(&mut c, QoS::AtMostOnce, 11);
        let out = sent(&mut c);
        assert_eq!(out.len(), 2);
        assert!(events(&mut c).contains(&Event::Published {
            token,
            reason: ReasonCode::Success
        }));
    }

    #[test]
    fn resuming_a_session_resends_unacknowledged_publishes_with_dup_and_pubrels_mqtt_4_4_0_1() {
        let mut c = connected(ProtocolVersion::V311, false, Properties::default());
        publish(&mut c, QoS::AtLeastOnce, 10); // id 1: no PUBACK
        publish(&mut c, QoS::ExactlyOnce, 11); // id 2: PUBREC received, PUBREL unanswered
        publish(&mut c, QoS::ExactlyOnce, 12); // id 3: no PUBREC
        sent(&mut c);
        c.handle_packet(Packet::PubRec(PubResp::new(pid(2))), t(13))
            .unwrap();
        sent(&mut c);
        c.connection_lost();
        c.connect(t(100)).unwrap();
        sent(&mut c);
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
            t(101),
        )
        .unwrap();
        let out = sent(&mut c);
        // In the original order [MQTT-4.6.0-1]; PUBLISH with DUP [MQTT-3.3.1-1]; never the
        // PUBLISH again once PUBREC arrived [MQTT-4.3.3-5].
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(&out[0], Packet::Publish(p) if p.packet_id == Some(pid(1)) && p.dup));
        assert_eq!(out[1], Packet::PubRel(PubResp::new(pid(2))));
        assert!(matches!(&out[2], Packet::Publish(p) if p.packet_id == Some(pid(3)) && p.dup));
    }

    #[test]
    fn without_a_session_on_the_server_unacknowledged_messages_are_sent_as_new_and_subscriptions_renewed(
    ) {
        let mut c = connected(ProtocolVersion::V311, false, Properties::default());
        let sub = Subscription::new(TopicFilter::new("seed/#").unwrap(), QoS::AtLeastOnce);
        let id = c.subscribe(vec![sub], Properties::default(), t(5)).unwrap();
        sent(&mut c);
        let ack = SubAck {
            packet_id: id,
            reasons: vec![ReasonCode::GrantedQoS1],
            properties: Properties::default(),
        };
        c.handle_packet(Packet::SubAck(ack), t(6)).unwrap();
        events(&mut c);
        let t1 = publish(&mut c, QoS::AtLeastOnce, 10);
        let t2 = publish(&mut c, QoS::ExactlyOnce, 11);
        sent(&mut c);
        let rec_id = c.session().outbound_inflight[1].packet_id;
        c.handle_packet(Packet::PubRec(PubResp::new(rec_id)), t(12))
            .unwrap();
        sent(&mut c);
        c.connection_lost();
        c.connect(t(100)).unwrap();
        sent(&mut c);
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
            t(101),
        )
        .unwrap();
        let out = sent(&mut c);
        // [MQTT-3.2.2-5]: the old session state is discarded.
        assert!(
            matches!(&out[0], Packet::Subscribe(s) if s.subscriptions[0].filter.as_str() == "seed/#")
        );
        assert!(matches!(&out[1], Packet::Publish(p) if !p.dup && p.qos == QoS::AtLeastOnce));
        assert_eq!(out.len(), 2);
        let ev = events(&mut c);
        assert!(ev.contains(&Event::Published {
            token: t2,
            reason: ReasonCode::Success
        }));
        assert!(!ev
            .iter()
            .any(|e| matches!(e, Event::Published { token, .. } if *token == t1)));
        // The resubscription's SUBACK is not an application event.
        let Packet::Subscribe(s) = &out[0] else {
            unreachable!()
        };
        let ack = SubAck {
            packet_id: s.packet_id,
            reasons: vec![ReasonCode::GrantedQoS1],
            properties: Properties::default(),
        };
        c.handle_packet(Packet::SubAck(ack), t(102)).unwrap();
        assert!(!events(&mut c).iter().any(|e| matches!(e, Event::SubAck(_))));
    }

    #[test]
    fn publishes_made_offline_wait_in_the_bounded_queue() {
        let mut opts = ClientOptions::new(ProtocolVersion::V311, "c", false);
        opts.max_queued = 2;
        let mut c = Client::new(opts);
        publish(&mut c, QoS::AtLeastOnce, 0);
        publish(&mut c, QoS::AtMostOnce, 0);
        let err = c
            .publish(
                topic("x"),
                Bytes::new(),
                QoS::AtLeastOnce,
                false,
                Properties::default(),
                t(0),
            )
            .unwrap_err();
        assert_eq!(err, ClientError::QueueFull);
        assert!(sent(&mut c).is_empty());
        c.connect(t(1)).unwrap();
        sent(&mut c);
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
            t(2),
        )
        .unwrap();
        assert_eq!(sent(&mut c).len(), 2);
        assert_eq!(c.session().queued, 0);
    }

    #[test]
    fn incoming_qos1_is_acknowledged_and_delivered() {
        let mut c = connected(ProtocolVersion::V311, true, Properties::default());
        let mut p = Publish::new(topic("a"), Bytes::from_static(b"x"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = Some(pid(7));
        c.handle_packet(Packet::Publish(p.clone()), t(5)).unwrap();
        assert_eq!(sent(&mut c), vec![Packet::PubAck(PubResp::new(pid(7)))]);
        assert_eq!(events(&mut c), vec![Event::Message(p)]);
    }

    #[test]
    fn incoming_qos2_is_delivered_once_even_when_resent_mqtt_4_3_3_10() {
        let mut c = connected(ProtocolVersion::V311, false, Properties::default());
        let mut p = Publish::new(topic("a"), Bytes::from_static(b"x"));
        p.qos = QoS::ExactlyOnce;
        p.packet_id = Some(pid(9));
        c.handle_packet(Packet::Publish(p.clone()), t(5)).unwrap();
        let mut dup = p.clone();
        dup.dup = true;
        c.handle_packet(Packet::Publish(dup), t(6)).unwrap();
        assert_eq!(events(&mut c), vec![Event::Message(p.clone())]);
        assert_eq!(sent(&mut c), vec![Packet::PubRec(PubResp::new(pid(9))); 2]);
        assert_eq!(c.session().inbound_awaiting_pubrel, vec![pid(9)]);
        // Also across a reconnection with the session kept.
        c.connection_lost();
        c.connect(t(10)).unwrap();
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
            t(11),
        )
        .unwrap();
        events(&mut c);
        c.handle_packet(Packet::Publish(Publish { dup: true, ..p }), t(12))
            .unwrap();
        assert!(events(&mut c).is_empty());
        c.handle_packet(Packet::PubRel(PubResp::new(pid(9))), t(13))
            .unwrap();
        assert_eq!(
            sent(&mut c).last(),
            Some(&Packet::PubComp(PubResp::new(pid(9))))
        );
        assert!(c.session().inbound_awaiting_pubrel.is_empty());
    }

    #[test]
    fn more_qos2_messages_than_our_receive_maximum_is_a_protocol_error_mqtt_3_3_4_9() {
        let mut opts = ClientOptions::new(ProtocolVersion::V5, "c", true);
        opts.receive_maximum = 1;
        let mut c = Client::new(opts);
        c.connect(t(0)).unwrap();
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
            t(1),
        )
        .unwrap();
        sent(&mut c);
        let mut p = Publish::new(topic("a"), Bytes::new());
        p.qos = QoS::ExactlyOnce;
        p.packet_id = Some(pid(1));
        c.handle_packet(Packet::Publish(p.clone()), t(2)).unwrap();
        p.packet_id = Some(pid(2));
        assert!(c.handle_packet(Packet::Publish(p), t(3)).is_err());
        let out = sent(&mut c);
        assert_eq!(
            out.last(),
            Some(&Packet::Disconnect(Disconnect::new(
                ReasonCode::ReceiveMaximumExceeded
            )))
        );
        assert!(!c.is_connected());
    }

    #[test]
    fn keep_alive_sends_pingreq_when_idle_and_gives_up_without_pingresp_mqtt_3_1_2_23() {
        let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
        c.connect(t(0)).unwrap();
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
            t(10),
        )
        .unwrap();
        sent(&mut c);
        // PINGREQ at three quarters of the 60 s keep-alive after the last packet sent.
        assert_eq!(c.poll_timeout(), Some(t(45_000)));
        c.handle_timeout(t(44_999)).unwrap();
        assert!(sent(&mut c).is_empty());
        c.handle_timeout(t(45_000)).unwrap();
        assert_eq!(sent(&mut c), vec![Packet::PingReq]);
        c.handle_packet(Packet::PingResp, t(45_100)).unwrap();
        assert_eq!(c.poll_timeout(), Some(t(90_000)));
        c.handle_timeout(t(90_000)).unwrap();
        assert_eq!(sent(&mut c), vec![Packet::PingReq]);
        // No PINGRESP within the keep-alive: the connection is given up.
        assert_eq!(c.poll_timeout(), Some(t(150_000)));
        assert_eq!(
            c.handle_timeout(t(150_000)),
            Err(ClientError::KeepAliveTimeout)
        );
        assert!(!c.is_connected());
    }

    #[test]
    fn sending_anything_postpones_the_pingreq() {
        let mut c = connected(ProtocolVersion::V311, true, Properties::default());
        publish(&mut c, QoS::AtMostOnce, 30_000);
        assert_eq!(c.poll_timeout(), Some(t(75_000)));
    }

    #[test]
    fn server_keep_alive_replaces_ours_mqtt_3_2_2_21() {
        let props = Properties {
            server_keep_alive: Some(8),
            ..Default::default()
        };
        let c = connected(ProtocolVersion::V5, true, props);
        assert_eq!(c.poll_timeout(), Some(t(6_000)));
    }

    #[test]
    fn a_missing_connack_times_out() {
        let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
        c.connect(t(0)).unwrap();
        assert_eq!(c.poll_timeout(), Some(t(30_000)));
        assert_eq!(
            c.handle_timeout(t(30_000)),
            Err(ClientError::ConnectTimeout)
        );
    }

    #[test]
    fn the_server_limits_from_connack_are_respected_mqtt_3_2_2_11_and_14() {
        let props = Properties {
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(20),
            ..Default::default()
        };
        let mut c = connected(ProtocolVersion::V5, true, props);
        let err = c.publish(
            topic("a"),
            Bytes::new(),
            QoS::ExactlyOnce,
            false,
            Properties::default(),
            t(2),
        );
        assert_eq!(err, Err(ClientError::QoSNotSupported(QoS::ExactlyOnce)));
        let err = c.publish(
            topic("a"),
            Bytes::new(),
            QoS::AtMostOnce,
            true,
            Properties::default(),
            t(2),
        );
        assert_eq!(err, Err(ClientError::RetainNotSupported));
        let big = Bytes::from(vec![0u8; 64]);
        let err = c.publish(
            topic("a"),
            big,
            QoS::AtMostOnce,
            false,
            Properties::default(),
            t(2),
        );
        assert!(matches!(
            err,
            Err(ClientError::Encode(EncodeError::PacketTooLarge { .. }))
        ));
    }

    #[test]
    fn packet_ids_are_never_zero_and_never_reused_while_in_flight_mqtt_2_2_1_3() {
        let mut c = connected(ProtocolVersion::V311, true, Properties::default());
        c.next_packet_id = u16::MAX;
        publish(&mut c, QoS::AtLeastOnce, 2); // 65535
        publish(&mut c, QoS::AtLeastOnce, 2); // wraps to 1, never 0
        c.next_packet_id = 1;
        publish(&mut c, QoS::AtLeastOnce, 2); // 1 is taken: 2
        assert_eq!(
            published(&sent(&mut c)),
            vec![(pid(u16::MAX), false), (pid(1), false), (pid(2), false)]
        );
    }

    #[test]
    fn suback_updates_the_session_view_with_the_granted_qos() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        let subs = vec![
            Subscription::new(TopicFilter::new("a/+").unwrap(), QoS::ExactlyOnce),
            Subscription::new(TopicFilter::new("b").unwrap(), QoS::AtLeastOnce),
        ];
        let id = c.subscribe(subs, Properties::default(), t(2)).unwrap();
        let ack = SubAck {
            packet_id: id,
            reasons: vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
            properties: Properties::default(),
        };
        c.handle_packet(Packet::SubAck(ack.clone()), t(3)).unwrap();
        assert_eq!(events(&mut c), vec![Event::SubAck(ack)]);
        let view = c.session();
        let granted = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        };
        assert_eq!(
            view.subscriptions,
            vec![(TopicFilter::new("a/+").unwrap(), granted)]
        );
        let id = c
            .unsubscribe(
                vec![TopicFilter::new("a/+").unwrap()],
                Properties::default(),
                t(4),
            )
            .unwrap();
        let ack = UnsubAck {
            packet_id: id,
            reasons: vec![ReasonCode::Success],
            properties: Properties::default(),
        };
        c.handle_packet(Packet::UnsubAck(ack), t(5)).unwrap();
        assert!(c.session().subscriptions.is_empty());
    }

    #[test]
    fn a_3_1_1_unsuback_reports_success_for_every_filter_mqtt_3_11_3_1() {
        // 3.1.1 UNSUBACK carries only the packet id [MQTT-3.11.3-1]; the event still gives
        // one code per filter, so the application sees the same shape in both versions.
        let mut c = connected(ProtocolVersion::V311, true, Properties::default());
        let filters = vec![
            TopicFilter::new("a").unwrap(),
            TopicFilter::new("b/#").unwrap(),
        ];
        let id = c.unsubscribe(filters, Properties::default(), t(2)).unwrap();
        let ack = UnsubAck {
            packet_id: id,
            reasons: Vec::new(),
            properties: Properties::default(),
        };
        c.handle_packet(Packet::UnsubAck(ack), t(3)).unwrap();
        let [Event::UnsubAck(got)] = &events(&mut c)[..] else {
            panic!("one UnsubAck event expected")
        };
        assert_eq!(got.reasons, vec![ReasonCode::Success; 2]);
    }

    #[test]
    fn a_server_disconnect_ends_the_connection_with_its_reason() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        let mut d = Disconnect::new(ReasonCode::SessionTakenOver);
        d.properties.reason_string = Some("another client".into());
        let err = c.handle_packet(Packet::Disconnect(d), t(5)).unwrap_err();
        assert_eq!(
            err,
            ClientError::DisconnectedByServer {
                reason: ReasonCode::SessionTakenOver,
                reason_string: Some("another client".into())
            }
        );
        assert!(!c.is_connected());
    }

    #[test]
    fn bytes_are_decoded_across_chunks_and_topic_aliases_resolved() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        let mut wire = Vec::new();
        let mut p = Publish::new(topic("long/topic/name"), Bytes::from_static(b"1"));
        p.properties.topic_alias = Some(3);
        Packet::Publish(p.clone())
            .encode(ProtocolVersion::V5, &mut wire)
            .unwrap();
        let mut q = p.clone();
        q.topic = TopicName::alias_placeholder();
        q.payload = Bytes::from_static(b"2");
        Packet::Publish(q)
            .encode(ProtocolVersion::V5, &mut wire)
            .unwrap();
        for chunk in wire.chunks(3) {
            c.handle_bytes(chunk, t(5)).unwrap();
        }
        let got: Vec<(String, Bytes)> = events(&mut c)
            .into_iter()
            .filter_map(|e| match e {
                Event::Message(p) => Some((p.topic.to_string(), p.payload)),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("long/topic/name".to_string(), Bytes::from_static(b"1")),
                ("long/topic/name".to_string(), Bytes::from_static(b"2"))
            ]
        );
    }

    #[test]
    fn malformed_bytes_end_the_connection_with_disconnect_0x81() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        // PUBLISH QoS 3.
        let err = c
            .handle_bytes(&[0x36, 0x03, 0x00, 0x01, b'a'], t(5))
            .unwrap_err();
        assert_eq!(err, ClientError::Decode(DecodeError::InvalidQoS));
        assert_eq!(
            sent(&mut c),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::MalformedPacket
            ))]
        );
    }

    #[test]
    fn resending_on_resume_keeps_within_the_new_receive_maximum_mqtt_4_9_0_1() {
        let mut c = connected(ProtocolVersion::V5, false, Properties::default());
        let tokens: Vec<PublishToken> = (0..5)
            .map(|i| publish(&mut c, QoS::AtLeastOnce, 10 + i))
            .collect();
        sent(&mut c);
        c.connection_lost();
        c.connect(t(100)).unwrap();
        sent(&mut c);
        let mut ack = ConnAck::new(true, ReasonCode::Success);
        ack.properties.receive_maximum = Some(2);
        c.handle_packet(Packet::ConnAck(ack), t(101)).unwrap();
        assert_eq!(
            published(&sent(&mut c)),
            vec![(pid(1), true), (pid(2), true)]
        );
        c.handle_packet(Packet::PubAck(PubResp::new(pid(1))), t(102))
            .unwrap();
        assert_eq!(published(&sent(&mut c)), vec![(pid(3), true)]);
        assert!(events(&mut c).contains(&Event::Published {
            token: tokens[0],
            reason: ReasonCode::Success
        }));
    }

    #[test]
    fn messages_queued_offline_respect_the_limits_of_the_connack_mqtt_3_2_2_11_and_14() {
        let mut c = Client::new(ClientOptions::new(ProtocolVersion::V5, "c", true));
        let q2 = publish(&mut c, QoS::ExactlyOnce, 0);
        let retained = c
            .publish(
                topic("r"),
                Bytes::new(),
                QoS::AtMostOnce,
                true,
                Properties::default(),
                t(0),
            )
            .unwrap();
        c.connect(t(1)).unwrap();
        sent(&mut c);
        let mut ack = ConnAck::new(false, ReasonCode::Success);
        ack.properties.maximum_qos = Some(QoS::AtLeastOnce);
        ack.properties.retain_available = Some(false);
        c.handle_packet(Packet::ConnAck(ack), t(2)).unwrap();
        assert!(published(&sent(&mut c)).is_empty());
        let ev = events(&mut c);
        assert!(ev.contains(&Event::Published {
            token: q2,
            reason: ReasonCode::QoSNotSupported
        }));
        assert!(ev.contains(&Event::Published {
            token: retained,
            reason: ReasonCode::RetainNotSupported
        }));
    }

    #[test]
    fn session_present_after_clean_start_is_a_protocol_error_in_5_mqtt_3_2_2_4() {
        let mut c = Client::new(ClientOptions::new(ProtocolVersion::V5, "c", true));
        c.connect(t(0)).unwrap();
        let err = c
            .handle_packet(
                Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
                t(1),
            )
            .unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)));
        assert!(!c.is_connected());
    }

    #[test]
    fn a_suback_with_the_wrong_number_of_codes_is_a_protocol_error_mqtt_3_9_3_1() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        let subs = vec![
            Subscription::new(TopicFilter::new("a").unwrap(), QoS::AtMostOnce),
            Subscription::new(TopicFilter::new("b").unwrap(), QoS::AtMostOnce),
        ];
        let id = c.subscribe(subs, Properties::default(), t(2)).unwrap();
        sent(&mut c);
        let ack = SubAck {
            packet_id: id,
            reasons: vec![ReasonCode::Success],
            properties: Properties::default(),
        };
        assert!(c.handle_packet(Packet::SubAck(ack), t(3)).is_err());
        assert_eq!(
            sent(&mut c),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::ProtocolError
            ))]
        );
    }

    #[test]
    fn a_3_1_1_client_does_not_enforce_a_receive_maximum_it_cannot_announce() {
        let mut opts = ClientOptions::new(ProtocolVersion::V311, "c", true);
        opts.receive_maximum = 1;
        let mut c = Client::new(opts);
        c.connect(t(0)).unwrap();
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
            t(1),
        )
        .unwrap();
        for id in 1..=3 {
            let mut p = Publish::new(topic("a"), Bytes::new());
            p.qos = QoS::ExactlyOnce;
            p.packet_id = Some(pid(id));
            c.handle_packet(Packet::Publish(p), t(2)).unwrap();
        }
        assert_eq!(c.session().inbound_awaiting_pubrel.len(), 3);
    }

    #[test]
    fn a_packet_only_clients_send_closes_the_connection_with_0x82() {
        let mut c = connected(ProtocolVersion::V5, true, Properties::default());
        // A CONNECT from the server: only clients send it (spec 2.1.2, direction of flow),
        // refused from its fixed header, a Protocol Error.
        let bytes = [0x10, 0x07, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06];
        let err = c.handle_bytes(&bytes, t(5)).unwrap_err();
        assert_eq!(
            err,
            ClientError::Decode(DecodeError::ClientOnlyPacket(crate::PacketType::Connect))
        );
        assert_eq!(
            sent(&mut c),
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::ProtocolError
            ))]
        );
    }

    #[test]
    fn resubscription_asks_for_the_requested_qos_and_identifier_again() {
        let mut c = connected(ProtocolVersion::V5, false, Properties::default());
        let mut props = Properties::default();
        props.subscription_identifiers.push(7);
        let sub = Subscription::new(TopicFilter::new("x").unwrap(), QoS::ExactlyOnce);
        let id = c.subscribe(vec![sub], props, t(2)).unwrap();
        let ack = SubAck {
            packet_id: id,
            reasons: vec![ReasonCode::GrantedQoS1],
            properties: Properties::default(),
        };
        c.handle_packet(Packet::SubAck(ack), t(3)).unwrap();
        assert_eq!(c.session().subscriptions[0].1.qos, QoS::AtLeastOnce);
        c.connection_lost();
        c.connect(t(10)).unwrap();
        sent(&mut c);
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
            t(11),
        )
        .unwrap();
        let out = sent(&mut c);
        let Packet::Subscribe(s) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(s.subscriptions[0].options.qos, QoS::ExactlyOnce);
        assert_eq!(s.properties.subscription_identifiers, vec![7]);
    }

    // ----- persistence across a restart of the host (store.rs) -----

    type Store = std::collections::BTreeMap<StoreKey, Vec<u8>>;

    fn apply(store: &mut Store, c: &mut Client) {
        for op in c.take_store_ops() {
            match op {
                StoreOp::Put(k, v) => {
                    store.insert(k, v);
                }
                StoreOp::Delete(k) => {
                    store.remove(&k);
                }
            }
        }
    }

    fn persistent_opts(version: ProtocolVersion) -> ClientOptions {
        let mut opts = ClientOptions::new(version, "c1", false);
        opts.persistent = true;
        opts
    }

    /// A new client over `store` (a page reload), connected with CONNACK `session_present`.
    fn reloaded(store: &Store, version: ProtocolVersion, session_present: bool) -> Client {
        let mut c = Client::new(persistent_opts(version));
        c.restore(store.iter().map(|(k, v)| (*k, &v[..]))).unwrap();
        c.connect(t(100)).unwrap();
        sent(&mut c);
        c.handle_packet(
            Packet::ConnAck(ConnAck::new(session_present, ReasonCode::Success)),
            t(101),
        )
        .unwrap();
        c
    }

    fn connected_persistent(version: ProtocolVersion) -> Client {
        let mut c = Client::new(persistent_opts(version));
        c.connect(t(0)).unwrap();
        sent(&mut c);
        let ack = ConnAck::new(false, ReasonCode::Success);
        c.handle_packet(Packet::ConnAck(ack), t(1)).unwrap();
        events(&mut c);
        c
    }

    #[test]
    fn without_persistence_nothing_is_recorded() {
        let mut c = connected(ProtocolVersion::V5, false, Properties::default());
        publish(&mut c, QoS::ExactlyOnce, 2);
        assert!(c.take_store_ops().is_empty());
    }

    #[test]
    fn messages_queued_offline_survive_a_reload_and_are_sent_once() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut store = Store::new();
            let mut c = Client::new(persistent_opts(version));
            publish(&mut c, QoS::AtMostOnce, 0);
            let t1 = publish(&mut c, QoS::AtLeastOnce, 0);
            let t2 = publish(&mut c, QoS::ExactlyOnce, 0);
            apply(&mut store, &mut c);
            // QoS 0 is not worth keeping; QoS 1 and 2 are.
            assert_eq!(store.len(), 2);
            drop(c);

            let mut c = reloaded(&store, version, true);
            let out = sent(&mut c);
            let ids: Vec<_> = out
                .iter()
                .map(|p| match p {
                    Packet::Publish(p) => (p.qos, p.dup),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(ids, [(QoS::AtLeastOnce, false), (QoS::ExactlyOnce, false)]);
            apply(&mut store, &mut c);
            assert_eq!(store.len(), 2, "now in flight, still kept");
            let id1 = match &out[0] {
                Packet::Publish(p) => p.packet_id.unwrap(),
                _ => unreachable!(),
            };
            c.handle_packet(Packet::PubAck(PubResp::new(id1)), t(102))
                .unwrap();
            assert!(events(&mut c).contains(&Event::Published {
                token: t1,
                reason: ReasonCode::Success
            }));
            apply(&mut store, &mut c);
            assert_eq!(store.len(), 1, "acknowledged: forgotten");
            assert!(store.contains_key(&StoreKey::Outbound(t2.0)));
            // New publishes do not reuse a stored token.
            assert!(publish(&mut c, QoS::AtLeastOnce, 103).0 > t2.0);
        }
    }

    #[test]
    fn after_a_reload_an_unacknowledged_publish_is_resent_with_dup_and_the_same_id_mqtt_4_4_0_1() {
        let mut store = Store::new();
        let mut c = connected_persistent(ProtocolVersion::V5);
        publish(&mut c, QoS::AtLeastOnce, 2);
        let Packet::Publish(first) = sent(&mut c).remove(0) else {
            panic!()
        };
        apply(&mut store, &mut c);
        drop(c);
        let mut c = reloaded(&store, ProtocolVersion::V5, true);
        let Packet::Publish(again) = sent(&mut c).remove(0) else {
            panic!()
        };
        // [MQTT-4.4.0-1] resend, [MQTT-3.3.1-1] DUP set, same packet id, same message.
        assert!(again.dup);
        assert_eq!(again.packet_id, first.packet_id);
        assert_eq!(again.payload, first.payload);
        assert_eq!(c.session().outbound_inflight.len(), 1);
    }

    #[test]
    fn after_a_reload_a_qos2_message_past_pubrec_gets_pubrel_never_publish_mqtt_4_3_3_5() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut store = Store::new();
            let mut c = connected_persistent(version);
            let token = publish(&mut c, QoS::ExactlyOnce, 2);
            let Packet::Publish(p) = sent(&mut c).remove(0) else {
                panic!()
            };
            let id = p.packet_id.unwrap();
            c.handle_packet(Packet::PubRec(PubResp::new(id)), t(3))
                .unwrap();
            apply(&mut store, &mut c);
            drop(c);

            let mut c = reloaded(&store, version, true);
            // [MQTT-4.3.3-5]: after PUBREC only PUBREL, and it is resent on resume
            // [MQTT-4.4.0-1].
            assert_eq!(sent(&mut c), vec![Packet::PubRel(PubResp::new(id))]);
            c.handle_packet(Packet::PubComp(PubResp::new(id)), t(102))
                .unwrap();
            assert!(events(&mut c).contains(&Event::Published {
                token,
                reason: ReasonCode::Success
            }));
            apply(&mut store, &mut c);
            assert!(store.is_empty());
        }
    }

    #[test]
    fn after_a_reload_a_duplicate_incoming_qos2_message_is_not_delivered_again_mqtt_4_3_3_10() {
        let mut store = Store::new();
        let mut c = connected_persistent(ProtocolVersion::V311);
        let mut incoming = Publish::new(topic("in"), Bytes::from_static(b"once"));
        incoming.qos = QoS::ExactlyOnce;
        incoming.packet_id = Some(pid(7));
        c.handle_packet(Packet::Publish(incoming.clone()), t(2))
            .unwrap();
        assert_eq!(events(&mut c).len(), 1);
        apply(&mut store, &mut c);
        assert!(store.contains_key(&StoreKey::Inbound(pid(7))));
        drop(c);

        let mut c = reloaded(&store, ProtocolVersion::V311, true);
        events(&mut c);
        incoming.dup = true;
        c.handle_packet(Packet::Publish(incoming), t(102)).unwrap();
        // [MQTT-4.3.3-10]: not delivered again, but acknowledged again.
        assert!(events(&mut c).is_empty());
        assert_eq!(sent(&mut c), vec![Packet::PubRec(PubResp::new(pid(7)))]);
        c.handle_packet(Packet::PubRel(PubResp::new(pid(7))), t(103))
            .unwrap();
        assert_eq!(sent(&mut c), vec![Packet::PubComp(PubResp::new(pid(7)))]);
        apply(&mut store, &mut c);
        assert!(store.is_empty());
    }

    #[test]
    fn a_reload_into_a_lost_server_session_sends_the_messages_again_as_new_mqtt_3_2_2_5() {
        let mut store = Store::new();
        let mut c = connected_persistent(ProtocolVersion::V5);
        publish(&mut c, QoS::AtLeastOnce, 2);
        sent(&mut c);
        let mut incoming = Publish::new(topic("in"), Bytes::from_static(b"x"));
        incoming.qos = QoS::ExactlyOnce;
        incoming.packet_id = Some(pid(9));
        c.handle_packet(Packet::Publish(incoming), t(3)).unwrap();
        apply(&mut store, &mut c);
        assert_eq!(store.len(), 2);
        drop(c);

        // Session present = 0: the session state is void; the message goes out as new.
        let mut c = reloaded(&store, ProtocolVersion::V5, false);
        let out = sent(&mut c);
        let [Packet::Publish(p)] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(!p.dup);
        apply(&mut store, &mut c);
        assert!(!store.contains_key(&StoreKey::Inbound(pid(9))));
        assert_eq!(store.len(), 1);
        assert!(c.session().inbound_awaiting_pubrel.is_empty());
    }

    #[test]
    fn touch_all_rewrites_every_record_of_the_session() {
        let mut c = connected_persistent(ProtocolVersion::V5);
        publish(&mut c, QoS::AtLeastOnce, 2); // in flight
        c.connection_lost();
        publish(&mut c, QoS::ExactlyOnce, 3); // queued
        publish(&mut c, QoS::AtMostOnce, 3); // not kept
        let mut store = Store::new();
        apply(&mut store, &mut c);
        assert_eq!(store.len(), 2);
        // A lost write: the driver clears its store and asks for everything again.
        store.clear();
        c.touch_all();
        apply(&mut store, &mut c);
        assert_eq!(store.len(), 2);
        let mut again = Client::new(persistent_opts(ProtocolVersion::V5));
        again
            .restore(store.iter().map(|(k, v)| (*k, &v[..])))
            .unwrap();
        assert_eq!(again.session().outbound_inflight.len(), 1);
        assert_eq!(again.session().queued, 1);
    }

    #[test]
    fn a_publish_the_receiver_would_refuse_is_refused_at_once_mqtt_1_5_4_2() {
        // Otherwise the broker closes the connection as malformed, the client resends the
        // message on every reconnection, and a stored copy cannot be read back.
        let mut c = Client::new(persistent_opts(ProtocolVersion::V5));
        let bad = [
            Properties {
                response_topic: Some("reply/+".into()), // a topic name [MQTT-3.3.2-14]
                ..Properties::default()
            },
            Properties {
                content_type: Some("text\0plain".into()),
                ..Properties::default()
            },
            Properties {
                user_properties: vec![("k".into(), "v\0".into())],
                ..Properties::default()
            },
        ];
        for props in bad {
            let err = c
                .publish(
                    topic("a"),
                    Bytes::new(),
                    QoS::AtLeastOnce,
                    false,
                    props,
                    t(0),
                )
                .unwrap_err();
            assert!(matches!(err, ClientError::Encode(_)), "{err:?}");
        }
        assert!(c.take_store_ops().is_empty());
        assert_eq!(c.session().queued, 0);
    }

    #[test]
    fn restore_is_refused_once_the_client_has_a_session_in_memory() {
        let mut c = connected_persistent(ProtocolVersion::V5);
        assert_eq!(
            c.restore(std::iter::empty()).unwrap_err(),
            RestoreError::NotFresh
        );
        let mut fresh = Client::new(persistent_opts(ProtocolVersion::V5));
        let key = StoreKey::Outbound(1);
        assert_eq!(
            fresh.restore([(key, &b"junk"[..])]).unwrap_err(),
            RestoreError::Format(key)
        );
    }
}
