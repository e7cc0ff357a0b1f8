//! CONNECT: refusals, takeover [MQTT-3.1.4-3], clean start and resume, CONNACK.

use super::*;

impl Engine {
    /// A client id for a client that sent none: `auto-` and 128 random bits from the
    /// operating system's CSPRNG, never one a session already has. An id that could be
    /// guessed (a counter, the clock) would let a client be handed, or reach, a stranger's
    /// session. `None` if the OS has no randomness to give.
    pub(super) fn assign_client_id(&self) -> Option<String> {
        use std::fmt::Write;
        loop {
            let mut bits = [0u8; 16];
            if let Err(e) = getrandom::fill(&mut bits) {
                tracing::error!(error = %e, "no randomness for a client id; CONNECT refused");
                return None;
            }
            let mut id = String::with_capacity(5 + 32);
            id.push_str("auto-");
            for b in bits {
                let _ = write!(id, "{b:02x}");
            }
            if !self.by_client.contains_key(id.as_str()) {
                return Some(id);
            }
        }
    }

    pub(super) fn on_connect(
        &mut self,
        conn: ConnId,
        connect: Connect,
        info: ConnectionInfo,
        identity: Identity,
        (tx, flow): (mpsc::Sender<Outgoing>, Arc<crate::command::Flow>),
        now: Instant,
    ) {
        let v = connect.protocol;
        let refuse = |reason: ReasonCode| {
            let ack = Packet::ConnAck(ConnAck::new(false, reason));
            let _ = tx.try_send(Outgoing::Packet(Box::new(ack)));
            let _ = tx.try_send(Outgoing::Close);
        };
        if self.shutting_down {
            return refuse(ReasonCode::ServerUnavailable);
        }
        if self.conns.len() >= self.config.max_connections {
            return refuse(match v {
                ProtocolVersion::V5 => ReasonCode::ServerBusy,
                ProtocolVersion::V311 => ReasonCode::ServerUnavailable,
            });
        }
        let mut assigned = None;
        let client_id: Arc<str> = if connect.client_id.is_empty() {
            if v == ProtocolVersion::V311 && !connect.clean_start {
                // [MQTT-3.1.3-8]: a zero-byte client id needs clean session = 1.
                return refuse(ReasonCode::ClientIdentifierNotValid);
            }
            let Some(id) = self.assign_client_id() else {
                return refuse(ReasonCode::ServerUnavailable);
            };
            assigned = Some(id.clone());
            id.into()
        } else {
            connect.client_id.as_str().into()
        };
        if connect.properties.authentication_method.is_some() {
            // No extended authentication (no AUTH exchange): refuse and close
            // [MQTT-4.12.0-1].
            return refuse(ReasonCode::BadAuthenticationMethod);
        }
        if let Some(will) = &connect.will {
            if !self.topic_within_limits(will.topic.as_str()) {
                self.log_topic_refusal("will topic", will.topic.as_str(), now);
                return refuse(ReasonCode::TopicNameInvalid);
            }
            if will.qos as u8 > self.config.maximum_qos {
                return refuse(ReasonCode::QoSNotSupported); // [MQTT-3.2.2-12]
            }
            if will.retain && !self.config.retain_available {
                return refuse(ReasonCode::RetainNotSupported); // [MQTT-3.2.2-13]
            }
            let access = Access::Publish(will.topic.as_str());
            if !self.auth.authorize(&identity, &client_id, access) {
                return refuse(ReasonCode::NotAuthorized);
            }
        }

        // A session belongs to the user who made it: another user can neither resume it,
        // take it over, nor discard it with clean start, now or after a restart (the
        // owner is stored with the session). 5.0 0x87, 3.1.1 5.
        if self.auth.enforces_ownership() {
            let owner = self
                .by_client
                .get(&client_id)
                .and_then(|sid| self.sessions.get(sid))
                .map(|s| s.identity.username.clone());
            if owner.is_some_and(|owner| owner != identity.username) {
                if let Some(times) = self.logs.ownership.hit(now) {
                    tracing::warn!(%client_id, user = ?identity.username, times, "session owned by another user; CONNECT refused");
                }
                return refuse(ReasonCode::NotAuthorized);
            }
        }

        // The session table is bounded: a new session beyond it is refused, nothing is
        // evicted (an existing one may still resume, or start clean in its own place).
        if !self.by_client.contains_key(&client_id)
            && self.sessions.len() >= self.config.max_sessions
        {
            if let Some(times) = self.logs.sessions.hit(now) {
                tracing::warn!(
                    max_sessions = self.config.max_sessions,
                    times,
                    "session limit reached; new session refused"
                );
            }
            return refuse(match v {
                ProtocolVersion::V5 => ReasonCode::QuotaExceeded,
                ProtocolVersion::V311 => ReasonCode::ServerUnavailable,
            });
        }

        // Takeover: the existing connection is closed [MQTT-3.1.4-3] (5.0: DISCONNECT 0x8E).
        if let Some(&old) = self.by_client.get(&client_id) {
            if self.sessions.get(&old).is_some_and(|s| s.online.is_some()) {
                self.close(old, Some(ReasonCode::SessionTakenOver));
                self.go_offline(old, now);
            }
        }
        let existing = self.by_client.get(&client_id).copied();
        if let (Some(sid), true) = (existing, connect.clean_start) {
            self.end_session(sid, now);
        }
        let session_present = existing.is_some() && !connect.clean_start;
        let sid = match self.by_client.get(&client_id) {
            Some(&sid) => sid,
            None => {
                let sid = SessionId(self.next_session);
                self.next_session += 1;
                self.sessions
                    .insert(sid, Box::new(Session::new(sid, client_id.clone(), v)));
                self.by_client.insert(client_id.clone(), sid);
                self.emit_about(sid, |session| SessionEvent::Created {
                    client_id: client_id.to_string(),
                    session,
                });
                sid
            }
        };

        // Messages queued while it was away come back from the store [MQTT-3.1.2-5], read
        // before this CONNECT changes anything of the session (a resume with expiry 0
        // deletes the stored session below). A store that cannot be read refuses the
        // CONNECT and leaves the session as it was, rather than resume it without them.
        let mut resumed_queue: Option<VecDeque<Delivery>> = None;
        let stored_client = self
            .sessions
            .get(&sid)
            .filter(|s| !s.stored_queue.is_empty())
            .map(|s| s.client_id.clone());
        if let Some(client) = stored_client {
            match self.load_queue(&client) {
                Ok(stored) => {
                    // Asked again as who connects now: the rules (a reloaded ACL file) or
                    // the credentials (a token's grants) may have changed while it was
                    // away, and a message it may no longer read is not delivered.
                    let mut queue = VecDeque::with_capacity(stored.len());
                    let mut withheld = 0;
                    for d in stored {
                        let access = Access::Read(d.msg.topic.as_str());
                        if self.auth.authorize(&identity, &client, access) {
                            queue.push_back(self.delivery_from_store(d, now));
                        } else {
                            let client = client.clone();
                            self.ops.push(Op::DeleteDelivery { client, seq: d.seq });
                            withheld += 1;
                        }
                    }
                    if withheld > 0 {
                        self.metrics.dropped(DropReason::NotAuthorized, withheld);
                        if let Some(s) = self.sessions.get_mut(&sid) {
                            s.stats.dropped += withheld;
                        }
                        tracing::info!(client_id = %client, withheld, "queued messages it may no longer read were dropped at resume");
                    }
                    resumed_queue = Some(queue);
                }
                Err(e) => {
                    tracing::error!(client_id = %client, error = %e, "cannot read the queued messages; CONNECT refused");
                    return refuse(ReasonCode::ServerUnavailable);
                }
            }
        }

        let cfg = self.config.clone();
        let requested_expiry = match v {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V311 => u32::MAX,
        };
        let expiry = cfg
            .max_session_expiry
            .map_or(requested_expiry, |m| requested_expiry.min(m));
        let keep_alive = cfg.effective_keep_alive(connect.keep_alive, v);
        let client_window = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.version = v;
        s.clean_start = connect.clean_start;
        let credentials_expire = identity.expires_at.map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            now + left
        });
        s.identity = identity;
        s.expiry_interval = expiry;
        s.expires_at = None;
        // Back before the will delay ran out: no will [MQTT-3.1.3-9].
        s.pending_will = None;
        s.online = Some(Box::new(Online {
            conn,
            tx,
            flow,
            window: usize::from(client_window.min(cfg.max_inflight).max(1)),
            max_packet_size: connect.properties.maximum_packet_size,
            inbound_unacked: u16::try_from(s.inbound_qos2.len()).unwrap_or(u16::MAX),
            will: connect.will.map(Box::new),
            connected_at: now,
            peer: info.peer,
            keep_alive,
            disconnected_normally: false,
            credentials_expire,
            pending_out: 0,
        }));
        self.conns.insert(conn, sid);
        if let Some(queue) = resumed_queue {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.stored_queue.clear();
                s.queued_bytes = queue.iter().map(|d| d.msg.payload.len()).sum();
                s.queue = queue;
            }
        }
        if self.routes {
            // Its connection's will, for the node that takes over if this one dies.
            self.persist_session(sid);
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            if s.persistent() {
                self.persist_session(sid);
            } else if session_present {
                // Resumed with expiry 0: it ends with this connection, so it is no longer
                // kept; what it resumed now lives in memory only.
                for d in s.queue.iter_mut() {
                    d.stored = false;
                }
                for f in s.inflight.values_mut() {
                    f.delivery.stored = false;
                }
                self.ops.push(Op::DeleteSession(client_id.clone()));
            }
        }

        let mut ack = ConnAck::new(session_present, ReasonCode::Success);
        if v == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            if expiry != requested_expiry {
                p.session_expiry_interval = Some(expiry);
            }
            p.receive_maximum = (cfg.receive_maximum != u16::MAX).then_some(cfg.receive_maximum);
            p.maximum_qos = match cfg.maximum_qos {
                0 => Some(QoS::AtMostOnce),
                1 => Some(QoS::AtLeastOnce),
                _ => None,
            };
            p.retain_available = (!cfg.retain_available).then_some(false);
            p.maximum_packet_size = Some(cfg.max_packet_size);
            p.assigned_client_identifier = assigned;
            p.topic_alias_maximum =
                (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum);
            if keep_alive != connect.keep_alive {
                p.server_keep_alive = Some(keep_alive);
            }
        }
        self.send(sid, Packet::ConnAck(ack));
        self.emit_about(sid, |session| SessionEvent::Connected {
            client_id: client_id.to_string(),
            session,
        });
        self.touch(sid);

        // Resume: resend what is unacknowledged, in order, PUBLISH with DUP [MQTT-4.4.0-1].
        if session_present {
            let mut inflight: Vec<(u64, u16, Stage)> = self.sessions[&sid]
                .inflight
                .iter()
                .map(|(&id, f)| (f.seq, id, f.stage))
                .collect();
            inflight.sort_unstable_by_key(|&(seq, _, _)| seq);
            for (_, id, stage) in inflight {
                let Some(pid) = PacketId::new(id) else {
                    continue;
                };
                let packet = match stage {
                    Stage::AwaitingComp => Packet::PubRel(PubResp::new(pid)),
                    Stage::AwaitingAck => {
                        let f = &self.sessions[&sid].inflight[&id];
                        let mut p = f.delivery.msg.to_publish(
                            f.delivery.qos,
                            f.delivery.retain,
                            &f.delivery.sub_ids,
                            now,
                        );
                        p.packet_id = Some(pid);
                        p.dup = true;
                        Packet::Publish(p)
                    }
                };
                self.send(sid, packet);
            }
        }
        self.drain(sid, now);
    }
}
