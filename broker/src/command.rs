//! What flows between the connection tasks, the broker handle and the engine: commands in,
//! packets out, and the typed requests of the HTTP API with their reply channels.
//!
//! A leaf module: the engine, the connection task and the broker handle all speak these
//! types, and none of them needs another to do it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use protocol::{Connect, Packet};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::auth::{ConnectionInfo, Identity};
use crate::config::BrokerConfig;
use crate::ids::ConnId;
use crate::view::{MessageView, SessionDetail, SessionFilter, SessionPage, StatsView};

/// What the engine's one channel carries: from connection tasks, the ticker and the
/// broker handle.
///
/// Inbound packets move by value: boxing them would cost an allocation per packet on the
/// hot path to save a memcpy, and this channel is one for the whole broker.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// A CONNECT arrived on a new connection; answers go to `tx`.
    Connect {
        /// The connection.
        conn: ConnId,
        /// The packet.
        connect: Box<Connect>,
        /// What the transport knows.
        info: Box<ConnectionInfo>,
        /// Who the credentials proved it to be.
        identity: Box<Identity>,
        /// The connection's outgoing channel.
        tx: mpsc::Sender<Outgoing>,
        /// The connection's flow signals (pause its reading, tell when its channel drained).
        flow: Arc<Flow>,
        /// What the claim of its session found (cluster mode).
        claim: Option<Box<crate::cluster::Claim>>,
    },
    /// The connection took items out of its outgoing channel, as the engine asked through
    /// [`Flow::want_drained`]: there is room again for what waits in its session's queue.
    Drained {
        /// The connection.
        conn: ConnId,
    },
    /// Any later packet.
    Packet {
        /// The connection.
        conn: ConnId,
        /// The packet.
        packet: Packet,
    },
    /// The connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A query or an administrative action of the HTTP API; the batch is flushed after it
    /// like after any other command, so what an action sends goes out and is stored.
    Request(Request),
    /// A message the cluster delivered, published on any node (see `Broker::route`).
    Route(Box<crate::store::StoredMessage>),
    /// A message for one member of a shared group (cluster mode, `Broker::route_shared`).
    RouteShared {
        /// The group's name.
        group: Arc<str>,
        /// The message.
        msg: Box<crate::store::StoredMessage>,
        /// Whether a member got it, once that is written.
        done: oneshot::Sender<bool>,
    },
    /// Run the clocks (session expiry, delayed wills, the store's interval sync).
    Tick,
    /// Close every connection (5.0: DISCONNECT 0x8B) and stop accepting.
    Shutdown {
        /// Answered when done.
        done: oneshot::Sender<()>,
    },
}

/// The questions and actions the broker handle can put to the engine, each with the channel
/// its answer goes back on. Views are built on the engine's thread and own their data.
#[derive(Debug)]
pub(crate) enum Request {
    /// The sessions matching a filter, one page.
    Sessions {
        /// Which, and which page.
        filter: SessionFilter,
        /// The answer.
        reply: oneshot::Sender<SessionPage>,
    },
    /// Everything about one session.
    Session {
        /// Its client id.
        client_id: String,
        /// `None`: no such session.
        reply: oneshot::Sender<Option<SessionDetail>>,
    },
    /// The first messages queued for a session (an offline one's are read from the store).
    Queue {
        /// Its client id.
        client_id: String,
        /// How many at most.
        limit: usize,
        /// `None`: no such session.
        reply: oneshot::Sender<Option<Vec<MessageView>>>,
    },
    /// The first messages in flight to a session, in send order.
    Inflight {
        /// Its client id.
        client_id: String,
        /// How many at most.
        limit: usize,
        /// `None`: no such session.
        reply: oneshot::Sender<Option<Vec<MessageView>>>,
    },
    /// Retained messages by topic prefix (payloads read from the store), and how many match.
    Retained {
        /// The topic prefix.
        prefix: String,
        /// How many at most.
        limit: usize,
        /// `(total matching, page)`.
        reply: oneshot::Sender<(usize, Vec<MessageView>)>,
    },
    /// The broker's totals.
    Stats {
        /// The answer.
        reply: oneshot::Sender<StatsView>,
    },
    /// Let another node have a session (cluster mode): its connection here is closed with
    /// 0x8E and the session written for the last time. Answered once written.
    Release {
        /// Its client id.
        client_id: String,
        /// `false`: this node had no such session.
        reply: oneshot::Sender<bool>,
    },
    /// Take a session whose node died, without its client (cluster mode).
    Adopt {
        /// Its client id.
        client_id: String,
        /// What the claim read.
        claim: crate::cluster::Claim,
        /// `false`: not installed (its client came back here meanwhile, or it failed).
        reply: oneshot::Sender<bool>,
    },
    /// Close every connection (5.0: DISCONNECT with the reason), keeping the sessions.
    DisconnectAll {
        /// The DISCONNECT's reason code.
        reason: protocol::ReasonCode,
        /// How many were closed.
        reply: oneshot::Sender<usize>,
    },
    /// Close a session's connection (5.0: DISCONNECT 0x98), keeping the session.
    Kick {
        /// Its client id.
        client_id: String,
        /// `false`: no such session.
        reply: oneshot::Sender<bool>,
    },
    /// End a session (its connection closed first, as by a kick).
    Discard {
        /// Its client id.
        client_id: String,
        /// `false`: no such session.
        reply: oneshot::Sender<bool>,
    },
}

/// Why a connection ended, as its task saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The peer closed, or the socket failed.
    NetworkLoss,
    /// Nothing received within 1.5 times the keep-alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// The peer sent something invalid; the task already sent DISCONNECT (5.0).
    ProtocolError,
    /// The engine asked it to close.
    ServerClosed,
}

/// What the engine sends a connection task.
///
/// The packet is boxed: a tokio channel allocates its slots in blocks of 32 when it is
/// created, and with a `Packet` (~400 bytes) inline every connection, even an idle one,
/// paid ~12.5 KB for its outgoing channel. Boxed, the block is 512 bytes; the price is one
/// small allocation per outgoing packet.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Encode and send.
    Packet(Box<Packet>),
    /// Flush what was sent before, then close the connection.
    Close,
}

/// What the engine and one connection task signal each other beside the channels: the
/// engine pauses the reading of a publisher whose messages a subscriber cannot take, and
/// asks to be told when the connection has taken items out of its outgoing channel (it
/// cannot await the channel itself: it `try_send`s from its own thread).
///
/// Both signals are flags, so a burst of requests costs one command, not one each.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Set by the engine: the connection task reads nothing from its transport (TCP's
    /// window then pushes back on the publisher) until it is cleared.
    paused: AtomicBool,
    /// Woken when `paused` is cleared.
    resumed: Notify,
    /// Set by the engine: send [`Command::Drained`] after the next batch is taken out of
    /// the outgoing channel (once; the engine sets it again if it still waits).
    drained_wanted: AtomicBool,
}

impl Flow {
    /// Stop reading (takes effect before the connection's next read).
    pub(crate) fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Read again.
    pub(crate) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.resumed.notify_one();
    }

    /// Whether reading is paused.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Resolves after a [`Flow::resume`] (at once if one came since the last wait); the
    /// caller checks [`Flow::is_paused`] again.
    pub(crate) async fn resumed(&self) {
        self.resumed.notified().await;
    }

    /// Asks for one [`Command::Drained`] after the connection next takes out what waits
    /// in its channel.
    pub(crate) fn want_drained(&self) {
        self.drained_wanted.store(true, Ordering::SeqCst);
    }

    /// Whether the engine asked to be told (and the request is now taken).
    pub(crate) fn take_drained_wanted(&self) -> bool {
        // A load first: the common case (not asked) costs no write to a shared line.
        self.drained_wanted.load(Ordering::SeqCst)
            && self.drained_wanted.swap(false, Ordering::SeqCst)
    }
}

/// The channel capacity a connection needs for `config`: a full window of messages, the
/// acknowledgements of a full inbound window, QoS 0 headroom and control packets.
pub(crate) fn connection_channel_capacity(config: &BrokerConfig) -> usize {
    usize::from(config.max_inflight) + usize::from(config.receive_maximum) + QOS0_BUDGET + 16
}

/// QoS 0 messages that may wait in a connection's channel; beyond it they wait in the
/// session's queue (see `engine::flow`), so that a slow reader never makes room run out
/// for QoS 1/2.
const QOS0_BUDGET: usize = 1024;
