//! Our messages: `publish`, the bounded queue, the server's Receive Maximum as our sending
//! window, and the acknowledgements PUBACK, PUBREC and PUBCOMP.

use bytes::Bytes;

use crate::error::EncodeError;
use crate::flow;
use crate::packet::{Packet, PacketId, PubResp, Publish, QoS};
use crate::properties::Properties;
use crate::reason::ReasonCode;
use crate::topic::TopicName;

use super::{Client, ClientError, Event, PublishToken, State, Timestamp};

pub use crate::flow::OutboundStage;
use crate::prelude::*;

/// One outgoing QoS 1/2 message in flight.
#[derive(Debug, Clone)]
pub(super) struct Outbound {
    /// The `publish` call it came from.
    pub(super) token: PublishToken,
    /// What was sent, with its packet id (the payload is dropped once PUBREC is in).
    pub(super) publish: Publish,
    /// Where it is.
    pub(super) stage: OutboundStage,
    /// Unacknowledged from an earlier connection and not yet resent on this one: it waits
    /// for room in the server's Receive Maximum [MQTT-4.9.0-1].
    pub(super) resend: bool,
}

impl Client {
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

    /// Sends queued publishes while connected and the window allows: first what an earlier
    /// connection left unacknowledged, then the queue.
    pub(super) fn drain_queue(&mut self, now: Timestamp) {
        if self.state != State::Connected {
            return;
        }
        self.resend_waiting(now);
        self.send_queued(now);
    }

    /// Resends, oldest first, the unacknowledged messages that waited for room in the
    /// window after the session resumed.
    fn resend_waiting(&mut self, now: Timestamp) {
        let window = usize::from(self.send_window);
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
    }

    /// Sends queued messages in order until the window is full or no packet id is free.
    fn send_queued(&mut self, now: Timestamp) {
        let window = usize::from(self.send_window);
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
            if let Some(reason) = self.refusal(&publish) {
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
            self.start_flight(token, publish, id, now);
        }
    }

    /// Why the server would refuse a message queued while offline, when its limits were
    /// not known yet [MQTT-3.2.2-11], [MQTT-3.2.2-14].
    fn refusal(&self, publish: &Publish) -> Option<ReasonCode> {
        if publish.qos > self.server_max_qos {
            Some(ReasonCode::QoSNotSupported)
        } else if publish.retain && !self.server_retain {
            Some(ReasonCode::RetainNotSupported)
        } else {
            None
        }
    }

    /// Sends a QoS 1/2 message that just got packet id `id` and keeps it in flight, unless
    /// it is too large for the server.
    fn start_flight(
        &mut self,
        token: PublishToken,
        publish: Publish,
        id: PacketId,
        now: Timestamp,
    ) {
        let size = Packet::Publish(publish.clone()).encoded_len(self.opts.version);
        self.touch_out(token);
        if !matches!(size, Ok(s) if s <= self.server_max_packet) {
            self.events.push_back(Event::Published {
                token,
                reason: ReasonCode::PacketTooLarge,
            });
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.insert(id.get(), seq);
        self.send(Packet::Publish(publish.clone()), now);
        self.outbound.insert(
            seq,
            Box::new(Outbound {
                token,
                publish,
                stage: OutboundStage::AwaitingAck,
                resend: false,
            }),
        );
    }

    /// The session resumed: resend what is unacknowledged, in the original order
    /// [MQTT-4.6.0-1]: every PUBREL, and PUBLISH with DUP set [MQTT-4.4.0-1],
    /// [MQTT-3.3.1-1] as far as the new Receive Maximum allows; the rest follow as
    /// acknowledgements free room.
    pub(super) fn resend_inflight(&mut self, now: Timestamp) {
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
    }

    /// The session is void on the server: a message it already took (PUBREC received) is
    /// done; the others are sent again as new messages, first in line.
    pub(super) fn requeue_inflight(&mut self) {
        self.by_id.clear();
        self.pending_resend = 0;
        let old = core::mem::take(&mut self.outbound);
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
    }

    /// Takes out the message in flight with packet id `id`, if it is at `stage` and `qos`.
    fn take_outbound(
        &mut self,
        id: PacketId,
        stage: OutboundStage,
        qos: QoS,
    ) -> Option<Box<Outbound>> {
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

    /// PUBACK: a QoS 1 message is done, with the server's reason.
    pub(super) fn on_puback(&mut self, ack: PubResp, now: Timestamp) {
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

    /// PUBREC: release a QoS 2 message (PUBREL), or end its flow when the server refused it.
    pub(super) fn on_pubrec(&mut self, rec: PubResp, now: Timestamp) {
        let id = rec.packet_id;
        let Some(&seq) = self.by_id.get(&id.get()) else {
            // Not ours (any more): release it so the server can end the flow.
            self.send(flow::pubrel_for(&rec, false, self.opts.version), now);
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
        self.send(flow::pubrel_for(&rec, true, self.opts.version), now);
    }

    /// PUBCOMP: a QoS 2 message is done.
    pub(super) fn on_pubcomp(&mut self, comp: PubResp, now: Timestamp) {
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
}
