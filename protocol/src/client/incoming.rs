//! The server's messages: PUBLISH delivered once per message, PUBACK / PUBREC for them,
//! and PUBCOMP for PUBREL.

use crate::flow;
use crate::packet::{Packet, ProtocolVersion, PubResp, Publish, QoS};
use crate::reason::ReasonCode;

use super::{Client, ClientError, Event, Timestamp};

impl Client {
    /// PUBLISH from the server: delivered once, and acknowledged per its QoS.
    pub(super) fn on_publish(&mut self, p: Publish, now: Timestamp) -> Result<(), ClientError> {
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

    /// PUBREL: the QoS 2 message is released; PUBCOMP ends its flow [MQTT-4.3.3-11], also
    /// for an id we do not know (a PUBREL resent after our PUBCOMP was lost).
    pub(super) fn on_pubrel(&mut self, rel: PubResp, now: Timestamp) {
        let known = self.inbound_qos2.remove(&rel.packet_id.get()).is_some();
        if known {
            self.touch_in(rel.packet_id.get());
        }
        self.send(flow::pubcomp_for(&rel, known, self.opts.version), now);
    }
}
