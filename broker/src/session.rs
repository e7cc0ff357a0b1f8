//! A session: what the broker keeps for one client id, online or not.
//!
//! Its subscriptions live in the [`crate::subscriptions::Subscriptions`] index (and a copy
//! here, to list and to remove them); its outgoing messages are either in flight (sent,
//! unacknowledged, within the client's Receive Maximum) or queued (bounded by message count
//! and bytes).
//!
//! # Memory
//! A broker may keep many more sessions than connections (persistent sessions of clients
//! that come back now and then), so an idle offline session should cost little: the state
//! only a connected session has ([`Online`]) is boxed, and the per-session collections that
//! are small or empty for most sessions (its subscriptions, the QoS 2 packet ids awaiting
//! PUBREL) are the protocol crate's sorted vectors ([`VecMap`], [`VecSet`]) rather than hash
//! tables: a hash table costs 48 bytes empty and a table of 4 buckets (about 160 bytes) for
//! one entry, a vector 24 bytes empty and exactly its entries for one (a plain `Vec` would
//! reserve 4: 96 bytes more for a session's one subscription). Both stay small by
//! construction: a session's subscriptions are capped by `max_subscriptions_per_session`,
//! its QoS 2 ids by our Receive Maximum.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use protocol::{PacketId, PacketIds, ProtocolVersion, QoS, TopicFilter, VecMap, VecSet, Will};
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::command::{Flow, Outgoing};
pub(crate) use crate::ids::{ConnId, SessionId};
use crate::message::Msg;
use crate::subscriptions::SubEntry;

/// One message waiting for a session, with the QoS and flags of its delivery.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// Its place in the session's order (given when queued or sent; the store's key).
    pub(crate) seq: u64,
    /// Written to the store (a persistent session's QoS 1/2, or queued while offline).
    pub(crate) stored: bool,
    /// The message.
    pub(crate) msg: Msg,
    /// min(published QoS, subscription QoS).
    pub(crate) qos: QoS,
    /// The RETAIN flag to send (Retain As Published, or a retained message on subscribe).
    pub(crate) retain: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub(crate) sub_ids: Vec<u32>,
    /// When it was queued.
    pub(crate) queued_at: Instant,
}

/// Where an outgoing QoS 1/2 message is: the flow both ends share.
pub(crate) use protocol::flow::OutboundStage as Stage;

/// An outgoing message in flight.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    /// Send order, for resending in order [MQTT-4.6.0-1].
    pub(crate) seq: u64,
    /// What was sent.
    pub(crate) delivery: Delivery,
    /// Where it is.
    pub(crate) stage: Stage,
}

/// An acknowledgement held back from a publisher while a session its message went to is
/// over its queue limit (the backpressure policy, see the README).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldAck {
    /// The publisher's connection.
    pub(crate) conn: ConnId,
    /// The publisher's packet id.
    pub(crate) packet_id: PacketId,
    /// QoS 1 (PUBACK) or 2 (PUBREC).
    pub(crate) qos: QoS,
}

/// The state of an online session's network connection.
#[derive(Debug)]
pub(crate) struct Online {
    /// The connection.
    pub(crate) conn: ConnId,
    /// Its outgoing channel (bounded); a full channel closes the connection.
    pub(crate) tx: mpsc::Sender<Outgoing>,
    /// Its flow signals: paused while a subscriber cannot take its QoS 0 messages; asked
    /// to say when its channel has room (see `engine::backpressure`).
    pub(crate) flow: Arc<Flow>,
    /// Our sending window: min(client's Receive Maximum, `max_inflight`).
    pub(crate) window: usize,
    /// The client's Maximum Packet Size.
    pub(crate) max_packet_size: Option<u32>,
    /// QoS 1/2 PUBLISHes received and not yet fully acknowledged (our Receive Maximum).
    pub(crate) inbound_unacked: u16,
    /// The will, published if the connection ends without a normal DISCONNECT.
    pub(crate) will: Option<Box<Will>>,
    /// When it connected.
    pub(crate) connected_at: Instant,
    /// The peer address.
    pub(crate) peer: Option<SocketAddr>,
    /// Keep-alive in force, seconds.
    pub(crate) keep_alive: u16,
    /// A normal DISCONNECT came: no will.
    pub(crate) disconnected_normally: bool,
    /// When the connection's credentials stop being valid (a token's `exp`): it is closed
    /// then, 5.0 with DISCONNECT 0x87.
    pub(crate) credentials_expire: Option<Instant>,
    /// Items waiting in the engine's outbox for this connection (sent at the end of the
    /// batch, after the store's commit).
    pub(crate) pending_out: usize,
}

/// Counters shown by the dashboard.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionStats {
    /// Messages received from this client.
    pub(crate) msgs_in: u64,
    /// Messages sent to this client.
    pub(crate) msgs_out: u64,
    /// Payload bytes received.
    pub(crate) bytes_in: u64,
    /// Payload bytes sent.
    pub(crate) bytes_out: u64,
    /// Messages dropped by the queue's overflow policy, by expiry or for being too large.
    pub(crate) dropped: u64,
}

/// Everything the broker keeps for one client id.
#[derive(Debug)]
pub(crate) struct Session {
    /// Its number.
    pub(crate) id: SessionId,
    /// The client id.
    pub(crate) client_id: Arc<str>,
    /// The protocol of its last connection.
    pub(crate) version: ProtocolVersion,
    /// The clean start flag of its last connection.
    pub(crate) clean_start: bool,
    /// Who its last connection proved to be (its user name is the session's owner when
    /// the authenticator enforces ownership).
    pub(crate) identity: Identity,
    /// Seconds it outlives its connection: 0 = ends with it, `u32::MAX` = never.
    pub(crate) expiry_interval: u32,
    /// When it ends, while offline (`None` online, or never).
    pub(crate) expires_at: Option<Instant>,
    /// When it last went offline.
    pub(crate) disconnected_at: Option<Instant>,
    /// Subscriptions (also in the index).
    pub(crate) subscriptions: VecMap<TopicFilter, SubEntry>,
    /// Messages waiting while online, oldest first.
    pub(crate) queue: VecDeque<Delivery>,
    /// Messages waiting while offline: only their seq and size are in memory, the messages
    /// are in the store until the client returns (bounded memory per idle session).
    pub(crate) stored_queue: VecDeque<(u64, usize)>,
    /// Payload bytes in `queue` and `stored_queue`.
    pub(crate) queued_bytes: usize,
    /// Outgoing QoS 1/2 in flight, by packet id.
    pub(crate) inflight: HashMap<u16, Inflight>,
    /// Packet ids for outgoing messages: none in `inflight` is reused.
    pub(crate) packet_ids: PacketIds,
    /// Next send sequence number.
    pub(crate) next_seq: u64,
    /// Incoming QoS 2 packet ids routed and awaiting PUBREL: a resent PUBLISH with one of
    /// these is not routed again [MQTT-4.3.3-9].
    pub(crate) inbound_qos2: VecSet<u16>,
    /// A will waiting for its Will Delay Interval (5.0), and when it is due. Boxed, as the
    /// connection's will is: few sessions have one, and every session pays for the space.
    pub(crate) pending_will: Option<(Box<Will>, Instant)>,
    /// Acks of other clients held while this session is over its queue limit.
    pub(crate) held_acks: VecDeque<HeldAck>,
    /// The connection, while online. Boxed: an offline session does not pay for its space.
    pub(crate) online: Option<Box<Online>>,
    /// Counters.
    pub(crate) stats: SessionStats,
}

impl Session {
    /// A new, empty, offline session.
    pub(crate) fn new(id: SessionId, client_id: Arc<str>, version: ProtocolVersion) -> Self {
        Session {
            id,
            client_id,
            version,
            clean_start: true,
            identity: Identity::default(),
            expiry_interval: 0,
            expires_at: None,
            disconnected_at: None,
            subscriptions: VecMap::default(),
            queue: VecDeque::new(),
            stored_queue: VecDeque::new(),
            queued_bytes: 0,
            inflight: HashMap::new(),
            packet_ids: PacketIds::new(),
            next_seq: 0,
            inbound_qos2: VecSet::default(),
            pending_will: None,
            held_acks: VecDeque::new(),
            online: None,
            stats: SessionStats::default(),
        }
    }

    /// A free packet id for an outgoing message: never zero, never one in flight
    /// [MQTT-2.2.1-3].
    pub(crate) fn alloc_packet_id(&mut self) -> Option<PacketId> {
        let inflight = &self.inflight;
        self.packet_ids.next(|id| inflight.contains_key(&id.get()))
    }

    /// Room in the sending window.
    pub(crate) fn window_open(&self) -> bool {
        match &self.online {
            Some(o) => self.inflight.len() < o.window,
            None => false,
        }
    }

    /// Removes the oldest message of the online queue.
    pub(crate) fn pop_queue(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queued_bytes -= d.msg.payload.len();
        Some(d)
    }

    /// Appends to the online queue (limits are the caller's business).
    pub(crate) fn push_queue(&mut self, d: Delivery) {
        self.queued_bytes += d.msg.payload.len();
        self.queue.push_back(d);
    }

    /// Messages waiting, online or offline.
    pub(crate) fn queued_len(&self) -> usize {
        self.queue.len() + self.stored_queue.len()
    }

    /// Kept after its connection ends (and so written to the store).
    pub(crate) fn persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    /// The next sequence number.
    pub(crate) fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offline_session_is_small() {
        // What every idle offline session holds before its collections: boxing `Online` and
        // the sorted vectors brought it from 544 bytes (a 640-byte allocation) to this.
        let size = std::mem::size_of::<Session>();
        assert!(size <= 384, "Session is {size} bytes");
    }
}
