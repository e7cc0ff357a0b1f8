//! The ends of connections and sessions: offline, expiry, wills, kick, discard, shutdown.

use super::*;

impl Engine {
    /// Disconnects the client of `client_id` by an administrator's decision (5.0:
    /// DISCONNECT 0x98 Administrative action); the session is kept per its expiry. The
    /// server closed the connection, so the will is published (after its delay).
    /// Returns false if there is no such session.
    pub(crate) fn kick(&mut self, client_id: &str, now: Instant) -> bool {
        let Some(&sid) = self.by_client.get(client_id) else {
            return false;
        };
        if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
            self.close(sid, Some(ReasonCode::AdministrativeAction));
            self.go_offline(sid, now);
        }
        true
    }

    /// Discards the session of `client_id`: its connection, if any, is closed as by
    /// [`Engine::kick`] (will published), then the session ends as when it expires (a will
    /// still waiting for its delay is published now). Returns false if there is no such
    /// session.
    pub(crate) fn discard(&mut self, client_id: &str, now: Instant) -> bool {
        if !self.kick(client_id, now) {
            return false;
        }
        if let Some(&sid) = self.by_client.get(client_id) {
            self.end_session(sid, now);
        }
        true
    }

    /// The session's connection is gone: will per its delay, session kept or ended per its
    /// expiry interval.
    pub(super) fn go_offline(&mut self, sid: SessionId, now: Instant) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(online) = s.online.take() else {
            return;
        };
        self.conns.remove(&online.conn);
        s.disconnected_at = Some(now);
        // QoS 0 messages that waited for room while it was online are kept only if QoS 0 is
        // queued for offline sessions; the others are dropped (and counted).
        let queue_qos0 = self.config.queue_qos0;
        let before = s.queue.len();
        if !queue_qos0 && s.queue.iter().any(|d| d.qos == QoS::AtMostOnce) {
            s.queue.retain(|d| d.qos != QoS::AtMostOnce);
            s.queued_bytes = s.queue.iter().map(|d| d.msg.payload.len()).sum::<usize>()
                + s.stored_queue.iter().map(|&(_, size)| size).sum::<usize>();
        }
        let qos0_dropped = (before - s.queue.len()) as u64;
        if qos0_dropped > 0 {
            s.stats.dropped += qos0_dropped;
            self.metrics.dropped(DropReason::SlowQos0, qos0_dropped);
        }
        let mut will_now = None;
        if !online.disconnected_normally {
            // Asked again now: the rules may have changed since CONNECT (a reloaded ACL
            // file), and a will the user may no longer write is not published.
            let will = online
                .will
                .filter(|w| may(&*self.auth, s, Access::Publish(w.topic.as_str())));
            if let Some(will) = will {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                let due = now + Duration::from_secs(u64::from(delay));
                if delay == 0 || s.version == ProtocolVersion::V311 {
                    will_now = Some(will);
                } else if online.credentials_expire.is_some_and(|end| due >= end) {
                    // Due after the credentials that vouch for it expire (a token's `exp`):
                    // not published, as for a connection closed at its expiry.
                } else {
                    s.pending_will = Some((will, due));
                }
            }
        }
        let client = s.client_id.clone();
        self.offline_pressure(sid, online.conn);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.expires_at = match s.expiry_interval {
            u32::MAX => None,
            secs => Some(now + Duration::from_secs(u64::from(secs))),
        };
        let ends = s.expiry_interval == 0;
        // Its queue now waits in the store; memory keeps only seq and size.
        let mut unstored = Vec::new();
        if !ends {
            let queue = std::mem::take(&mut s.queue);
            for d in queue {
                s.stored_queue.push_back((d.seq, d.msg.payload.len()));
                if !d.stored {
                    unstored.push(d);
                }
            }
        }
        // Acks held for publishers: the slow reader is gone, so they are released.
        let held: Vec<HeldAck> = s.held_acks.drain(..).collect();
        // Told once the session's new state (offline, its end time) is in place.
        if self.events.receiver_count() > 0 {
            self.emit_about(sid, |session| SessionEvent::Disconnected {
                client_id: session.client_id.clone(),
                session,
            });
            self.dirty.push(sid);
        }
        for d in unstored {
            self.put_delivery(&client, &d, DeliveryState::Queued);
        }
        if !ends {
            self.persist_session(sid);
        }
        if let Some(will) = will_now {
            self.publish_will(*will, client, now);
        }
        for h in held {
            if let Some(&publisher) = self.conns.get(&h.conn) {
                self.ack_publish(publisher, h.packet_id, h.qos, ReasonCode::Success);
            }
        }
        if ends {
            self.end_session(sid, now);
        }
    }

    /// Removes a session and its subscriptions; a will still waiting for its delay is
    /// published now (the session ended first) [MQTT-3.1.3-9].
    pub(super) fn end_session(&mut self, sid: SessionId, now: Instant) {
        if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
            self.go_offline(sid, now);
        }
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.spill_marks.remove(&sid);
        self.by_client.remove(&s.client_id);
        self.ops.push(Op::DeleteSession(s.client_id.clone()));
        self.emit(|| SessionEvent::Ended {
            client_id: s.client_id.to_string(),
        });
        for f in s.subscriptions.keys() {
            self.subs.remove(sid, f);
            self.groups_changed |= subscribe::is_shared(f);
        }
        if let Some((will, _)) = &s.pending_will {
            if may(&*self.auth, &s, Access::Publish(will.topic.as_str())) {
                let will = (**will).clone();
                self.publish_will(will, s.client_id.clone(), now);
            }
        }
    }

    pub(super) fn publish_will(&mut self, will: Will, client: Arc<str>, now: Instant) {
        let mut properties = will.properties;
        properties.will_delay_interval = None;
        let p = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic,
            packet_id: None,
            payload: will.payload,
            properties,
        };
        let id = self.new_message_id();
        let msg = Arc::new(Message::from_publish(p, id, Some(client), now));
        self.dispatch(msg, None, now);
    }

    pub(super) fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let online: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.online.is_some())
            .map(|s| s.id)
            .collect();
        for sid in online {
            self.close(sid, Some(ReasonCode::ServerShuttingDown));
            // Not a network loss of the client's making: keep the will unpublished, as the
            // session continues after a restart.
            if let Some(o) = self.sessions.get_mut(&sid).and_then(|s| s.online.as_mut()) {
                o.disconnected_normally = true;
            }
            self.go_offline(sid, now);
        }
    }
}
