//! Subscriptions: SUBSCRIBE and UNSUBSCRIBE, their acknowledgements, what the client
//! remembers of what the server granted, and subscribing again when the server lost our
//! session.

use crate::error::EncodeError;
use crate::packet::{
    Packet, PacketId, ProtocolVersion, QoS, SubAck, Subscribe, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};
use crate::properties::Properties;
use crate::reason::ReasonCode;
use crate::topic::TopicFilter;

use super::{Client, ClientError, Event, State, Timestamp};
use crate::prelude::*;

/// One subscription as the client remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SubRecord {
    /// The options asked for (used again when resubscribing).
    pub(super) requested: SubscriptionOptions,
    /// The QoS the server granted.
    pub(super) granted: QoS,
    /// The Subscription Identifier it was made with.
    pub(super) id: Option<u32>,
}

/// A SUBSCRIBE or UNSUBSCRIBE awaiting its acknowledgement.
#[derive(Debug, Clone)]
pub(super) enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
}

/// A request and what became of it.
#[derive(Debug, Clone)]
pub(super) struct PendingRequest {
    /// The request.
    pub(super) request: Request,
    /// Sent by the machine itself (resubscription): its answer is not an event.
    pub(super) internal: bool,
    /// Sent on the current connection.
    pub(super) sent: bool,
}

impl Client {
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

    /// Sends `request` when connected, and keeps it until its acknowledgement.
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

    /// With [`ClientOptions::resubscribe`](super::ClientOptions::resubscribe), when the
    /// server has no session for us: a SUBSCRIBE for every known subscription, with the
    /// options and identifier it was made with, sent with the other unsent requests.
    pub(super) fn resubscribe(&mut self) -> Result<(), ClientError> {
        if !self.opts.resubscribe || self.subscriptions.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }

    /// Sends the requests not sent on this connection (made offline, or left unanswered
    /// by the last one).
    pub(super) fn send_unsent_requests(&mut self, now: Timestamp) {
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
    }

    /// SUBACK: what the server granted, per filter.
    pub(super) fn on_suback(&mut self, ack: SubAck, now: Timestamp) -> Result<(), ClientError> {
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

    /// UNSUBACK: which filters are gone.
    pub(super) fn on_unsuback(
        &mut self,
        mut ack: UnsubAck,
        now: Timestamp,
    ) -> Result<(), ClientError> {
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

/// The packet that carries `r`.
fn request_packet(r: &Request) -> Packet {
    match r {
        Request::Subscribe(s) => Packet::Subscribe(s.clone()),
        Request::Unsubscribe(u) => Packet::Unsubscribe(u.clone()),
    }
}
