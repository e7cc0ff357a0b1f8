//! The session as the application sees it (`client.session()` in JavaScript).

use crate::packet::{PacketId, QoS, SubscriptionOptions};
use crate::topic::{TopicFilter, TopicName};

use super::{Client, OutboundStage};
use crate::prelude::*;

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
    pub subscriptions: Vec<(TopicFilter, SubscriptionOptions)>,
    /// Outgoing QoS 1/2 messages in flight, oldest first.
    pub outbound_inflight: Vec<OutboundView>,
    /// Incoming QoS 2 messages received and awaiting PUBREL.
    pub inbound_awaiting_pubrel: Vec<PacketId>,
    /// Messages waiting to be sent.
    pub queued: usize,
    /// The server's Receive Maximum (our sending window).
    pub send_window: u16,
}

impl Client {
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
}
