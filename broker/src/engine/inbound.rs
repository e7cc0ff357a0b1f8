//! Packets on an open connection: PUBLISH in and its acknowledgements both ways, DISCONNECT.

use protocol::flow;

use super::*;

impl Engine {
    /// Ends the connection because of the client's error: DISCONNECT with the reason (5.0),
    /// close, and the will is published [MQTT-3.1.2-8].
    pub(super) fn fail(&mut self, sid: SessionId, reason: ReasonCode, now: Instant) {
        if let Some(s) = self.sessions.get(&sid) {
            tracing::debug!(client_id = %s.client_id, %reason, "closing connection");
        }
        self.close(sid, Some(reason));
        self.go_offline(sid, now);
    }

    pub(super) fn on_packet(&mut self, sid: SessionId, packet: Packet, now: Instant) {
        match packet {
            Packet::Publish(p) => self.on_publish(sid, p, now),
            Packet::PubAck(a) => {
                self.on_ack(sid, a.packet_id, Stage::AwaitingAck, QoS::AtLeastOnce, now)
            }
            Packet::PubRec(r) => self.on_pubrec(sid, r, now),
            Packet::PubRel(r) => self.on_pubrel(sid, r),
            Packet::PubComp(c) => {
                self.on_ack(sid, c.packet_id, Stage::AwaitingComp, QoS::ExactlyOnce, now)
            }
            Packet::Subscribe(s) => self.on_subscribe(sid, s, now),
            Packet::Unsubscribe(u) => self.on_unsubscribe(sid, u),
            Packet::PingReq => self.send(sid, Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(sid, d, now),
            // A second CONNECT is a protocol error [MQTT-3.1.0-2]; the others are the
            // server's packets, or AUTH without an authentication method in use.
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => self.fail(sid, ReasonCode::ProtocolError, now),
        }
    }

    pub(super) fn on_publish(&mut self, sid: SessionId, p: Publish, now: Instant) {
        let cfg = self.config.clone();
        if !self.topic_within_limits(p.topic.as_str()) {
            // 5.0: DISCONNECT 0x90 Topic Name invalid; 3.1.1 can only close.
            self.log_topic_refusal("topic name", p.topic.as_str(), now);
            return self.fail(sid, ReasonCode::TopicNameInvalid, now);
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let v = s.version;
        let Some(online) = s.online.as_mut() else {
            return;
        };
        if !p.properties.subscription_identifiers.is_empty() {
            return self.fail(sid, ReasonCode::ProtocolError, now); // [MQTT-3.3.4-6]
        }
        if p.qos as u8 > cfg.maximum_qos {
            return self.fail(sid, ReasonCode::QoSNotSupported, now); // [MQTT-3.2.2-11]
        }
        if p.retain && !cfg.retain_available {
            return self.fail(sid, ReasonCode::RetainNotSupported, now); // [MQTT-3.2.2-14]
        }
        let pid = p.packet_id;
        if let (QoS::ExactlyOnce, Some(id)) = (p.qos, pid) {
            if s.inbound_qos2.contains(&id.get()) {
                // Already routed: acknowledge again, do not route again [MQTT-4.3.3-9].
                return self.send(sid, Packet::PubRec(PubResp::new(id)));
            }
        }
        // Past the Receive Maximum: a protocol error in 5.0, which announces it; a 3.1.1
        // client cannot know it, so its message is taken and acknowledged at once rather
        // than held for a congested subscriber (the window bounds what is held, not what
        // is taken).
        let mut past_window = false;
        if p.qos != QoS::AtMostOnce {
            if online.inbound_unacked >= cfg.receive_maximum {
                if v == ProtocolVersion::V5 {
                    return self.fail(sid, ReasonCode::ReceiveMaximumExceeded, now);
                    // [MQTT-3.3.4-9]
                }
                past_window = true;
            }
            online.inbound_unacked = online.inbound_unacked.saturating_add(1);
        }
        s.stats.msgs_in += 1;
        s.stats.bytes_in += p.payload.len() as u64;
        self.metrics.received(p.qos, p.payload.len());
        let conn = online.conn;
        let client_id = s.client_id.clone();
        let allowed = may(&*self.auth, s, Access::Publish(p.topic.as_str()));
        let qos = p.qos;
        let (matched, congested) = if allowed {
            if let (QoS::ExactlyOnce, Some(id)) = (qos, pid) {
                s.inbound_qos2.insert(id.get());
                if self.routes {
                    self.batch_qos2.push((sid, id.get()));
                }
                if s.persistent() {
                    let client = s.client_id.clone();
                    self.ops.push(Op::PutInboundQos2 {
                        client,
                        packet_id: id.get(),
                    });
                }
            }
            let id = self.new_message_id();
            let msg = Arc::new(Message::from_publish(p, id, Some(client_id), now));
            self.pressure.unheld = past_window;
            let routed = self.dispatch(msg, Some(sid), now);
            self.pressure.unheld = false;
            // A QoS 0 copy waits in a queue over its high-water mark: this connection
            // stops being read until that queue drains (see `backpressure`).
            self.pause_publisher(sid, conn);
            routed
        } else {
            (0, None)
        };
        let Some(id) = pid else { return };
        let reason = match (allowed, v) {
            (false, ProtocolVersion::V5) => ReasonCode::NotAuthorized,
            // 3.1.1 cannot refuse a PUBLISH: acknowledge and drop [MQTT-3.3.5-2].
            (false, ProtocolVersion::V311) => ReasonCode::Success,
            (true, ProtocolVersion::V5) if matched == 0 => ReasonCode::NoMatchingSubscribers,
            (true, _) => ReasonCode::Success,
        };
        if let (Some(target), ReasonCode::Success | ReasonCode::NoMatchingSubscribers, false) =
            (congested, reason, past_window)
        {
            // Backpressure: the acknowledgement waits until the slow session drains.
            if let Some(t) = self.sessions.get_mut(&target) {
                t.held_acks.push_back(HeldAck {
                    conn,
                    packet_id: id,
                    qos,
                });
                return;
            }
        }
        self.ack_publish(sid, id, qos, reason);
    }

    /// Sends PUBACK / PUBREC for an incoming message and frees its Receive Maximum slot
    /// (QoS 1; a QoS 2 slot frees at PUBCOMP).
    pub(super) fn ack_publish(
        &mut self,
        sid: SessionId,
        id: PacketId,
        qos: QoS,
        reason: ReasonCode,
    ) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let persistent = s.persistent();
        let Some(online) = s.online.as_mut() else {
            return;
        };
        let packet = match qos {
            QoS::AtLeastOnce => {
                online.inbound_unacked = online.inbound_unacked.saturating_sub(1);
                Packet::PubAck(PubResp::with_reason(id, reason))
            }
            _ => {
                if reason.is_error() {
                    // A refused QoS 2 message ends its flow here.
                    if s.inbound_qos2.remove(&id.get()) && persistent {
                        let client = s.client_id.clone();
                        self.ops.push(Op::DeleteInboundQos2 {
                            client,
                            packet_id: id.get(),
                        });
                    }
                    online.inbound_unacked = online.inbound_unacked.saturating_sub(1);
                }
                Packet::PubRec(PubResp::with_reason(id, reason))
            }
        };
        self.send(sid, packet);
    }

    pub(super) fn on_pubrel(&mut self, sid: SessionId, rel: PubResp) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let known = s.inbound_qos2.remove(&rel.packet_id.get());
        if known {
            if let Some(o) = s.online.as_mut() {
                o.inbound_unacked = o.inbound_unacked.saturating_sub(1);
            }
            if s.persistent() {
                let client = s.client_id.clone();
                self.ops.push(Op::DeleteInboundQos2 {
                    client,
                    packet_id: rel.packet_id.get(),
                });
            }
        }
        let comp = flow::pubcomp_for(&rel, known, s.version);
        self.send(sid, comp);
    }

    pub(super) fn on_ack(
        &mut self,
        sid: SessionId,
        id: PacketId,
        stage: Stage,
        qos: QoS,
        now: Instant,
    ) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let matches = s
            .inflight
            .get(&id.get())
            .is_some_and(|f| f.stage == stage && f.delivery.qos == qos);
        if matches {
            self.touch(sid);
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if let Some(f) = s.inflight.remove(&id.get()) {
                if f.delivery.stored {
                    let client = s.client_id.clone();
                    self.ops.push(Op::DeleteDelivery { client, seq: f.seq });
                }
            }
            self.drain(sid, now);
        }
    }

    pub(super) fn on_pubrec(&mut self, sid: SessionId, rec: PubResp, now: Instant) {
        self.touch(sid);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let (id, v) = (rec.packet_id, s.version);
        match s.inflight.get_mut(&id.get()) {
            Some(f) if f.delivery.qos == QoS::ExactlyOnce && f.stage == Stage::AwaitingAck => {
                let (seq, stored) = (f.seq, f.delivery.stored);
                let client = s.client_id.clone();
                if rec.reason.is_error() {
                    s.inflight.remove(&id.get());
                    if stored {
                        self.ops.push(Op::DeleteDelivery { client, seq });
                    }
                    self.drain(sid, now);
                } else {
                    f.stage = Stage::AwaitingComp;
                    if stored {
                        let state = DeliveryState::AwaitingComp(id.get());
                        self.ops.push(Op::SetDeliveryState { client, seq, state });
                    }
                    self.send(sid, flow::pubrel_for(&rec, true, v));
                }
            }
            Some(f) if f.stage == Stage::AwaitingComp => {
                self.send(sid, flow::pubrel_for(&rec, true, v))
            }
            _ => self.send(sid, flow::pubrel_for(&rec, false, v)),
        }
    }

    pub(super) fn on_disconnect(&mut self, sid: SessionId, d: Disconnect, now: Instant) {
        let max_expiry = self.config.max_session_expiry;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(new) = d.properties.session_expiry_interval {
            if s.expiry_interval == 0 && new != 0 {
                // [MQTT-3.14.2-2]: a session that ends with its connection cannot be
                // extended at DISCONNECT.
                return self.fail(sid, ReasonCode::ProtocolError, now);
            }
            s.expiry_interval = max_expiry.map_or(new, |m| new.min(m));
        }
        if let Some(o) = s.online.as_mut() {
            // Normal disconnection: the will is discarded [MQTT-3.1.2-10]; 0x04 keeps it.
            o.disconnected_normally = d.reason != ReasonCode::DisconnectWithWill;
        }
        // The server closes the connection after DISCONNECT [MQTT-3.14.4-1].
        self.close(sid, None);
        self.go_offline(sid, now);
    }
}
