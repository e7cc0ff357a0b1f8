//! The store: what the engine writes each batch, and reading it back at start.

use super::*;

impl Engine {
    /// Counts into `metrics` from now on, and has the store time its commits there.
    pub(crate) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.store.set_metrics(Arc::clone(&metrics));
        self.metrics = metrics;
    }

    /// Payload bytes of all retained messages (for the metrics, after each batch).
    pub(crate) fn retained_payload_bytes(&self) -> usize {
        self.retained_bytes
    }

    pub(super) fn session_meta(&self, s: &Session) -> SessionMeta {
        SessionMeta {
            client_id: s.client_id.clone(),
            version: s.version,
            username: s.identity.username.as_deref().map(str::to_owned),
            expiry_interval: s.expiry_interval,
            expires_at: s.expires_at.map(|t| self.clock.to_system(t)),
            disconnected_at: s.disconnected_at.map(|t| self.clock.to_system(t)),
            pending_will: s
                .pending_will
                .as_ref()
                .map(|(w, at)| ((**w).clone(), self.clock.to_system(*at))),
            dropped: s.stats.dropped,
            connected_will: if self.routes {
                s.online.as_ref().and_then(|o| o.will.as_deref().cloned())
            } else {
                None
            },
        }
    }

    /// Writes a persistent session's own fields.
    pub(super) fn persist_session(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        // In a cluster, a session that ends with its connection is written too while the
        // connection has a will: the node that takes over if this one dies publishes it.
        let will_kept = self.routes && s.online.as_ref().is_some_and(|o| o.will.is_some());
        if s.persistent() || will_kept {
            let meta = self.session_meta(s);
            self.ops.push(Op::PutSession(Box::new(meta)));
        }
    }

    pub(super) fn stored_message(&self, m: &Message) -> StoredMessage {
        StoredMessage {
            id: m.id,
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
            retain: m.retain,
            properties: m.properties.clone(),
            expires_at: m.expires_at.map(|t| self.clock.to_system(t)),
            received_at: self.clock.to_system(m.received_at),
            publisher: m.publisher.clone(),
        }
    }

    /// The stored form of a message about to be queued, converted once for all its
    /// deliveries in a row (a fan-out queues the same message for every matched session).
    fn shared_stored_message(&mut self, m: &Message) -> Arc<StoredMessage> {
        match &self.last_stored {
            Some(stored) if stored.id == m.id => stored.clone(),
            _ => {
                let stored = Arc::new(self.stored_message(m));
                self.last_stored = Some(stored.clone());
                stored
            }
        }
    }

    pub(super) fn message_from_store(&self, m: StoredMessage) -> Msg {
        Arc::new(Message {
            id: m.id,
            topic: m.topic,
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            properties: m.properties,
            expires_at: m.expires_at.map(|t| self.clock.to_instant(t)),
            received_at: self.clock.to_instant(m.received_at),
            publisher: m.publisher,
        })
    }

    pub(super) fn put_delivery(&mut self, client: &Arc<str>, d: &Delivery, state: DeliveryState) {
        let delivery = StoredDelivery {
            seq: d.seq,
            state,
            qos: d.qos,
            retain: d.retain,
            sub_ids: d.sub_ids.clone(),
            msg: self.shared_stored_message(&d.msg),
        };
        self.ops.push(Op::PutDelivery {
            client: client.clone(),
            delivery: Box::new(delivery),
        });
    }

    pub(super) fn delivery_from_store(&self, d: StoredDelivery, now: Instant) -> Delivery {
        Delivery {
            seq: d.seq,
            stored: true,
            qos: d.qos,
            retain: d.retain,
            sub_ids: d.sub_ids,
            msg: self.message_from_store(Arc::unwrap_or_clone(d.msg)),
            queued_at: now,
        }
    }

    /// A session's queued messages from the store. The batch so far may hold some of them
    /// (a takeover moves the queue to the store in the same batch), so it is written first;
    /// a failed write withholds the batch's acknowledgements (see `flush`).
    pub(super) fn load_queue(
        &mut self,
        client_id: &str,
    ) -> Result<Vec<StoredDelivery>, StoreError> {
        if !self.ops.is_empty() {
            let written = self.store.apply(&self.ops);
            self.ops.clear();
            if let Err(e) = written {
                self.batch_failed = true;
                return Err(e);
            }
        }
        self.store.load_queue(client_id)
    }

    /// A new message id.
    pub(super) fn new_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// Reads back what the store holds: sessions (a session whose expiry passed while the
    /// broker was down is ended now), their subscriptions, in-flight messages and QoS 2
    /// state, and the retained messages. Queued messages stay in the store.
    pub(crate) fn recover(&mut self, now: Instant) -> Result<RecoverStats, StoreError> {
        let Recovered {
            sessions,
            retained,
            max_message_id,
        } = self.store.load()?;
        if let Some(max) = max_message_id {
            self.next_message_id = self.next_message_id.max(max.saturating_add(1));
        }
        let wall = self.clock.to_system(now);
        let mut stats = RecoverStats::default();
        let mut wills = Vec::new();
        for r in sessions {
            let meta = r.meta;
            if meta.expires_at.is_some_and(|t| t <= wall) {
                // Ended while the broker was down; its delayed will is due now, once every
                // session that may want it is back.
                if let Some((will, _)) = meta.pending_will {
                    wills.push((will, meta.client_id.clone()));
                }
                self.ops.push(Op::DeleteSession(meta.client_id));
                stats.expired += 1;
                continue;
            }
            let (queued, inflight) = self.restore_session(RecoveredSession { meta, ..r }, now)?;
            stats.sessions += 1;
            stats.queued += queued;
            stats.inflight += inflight;
        }
        for (will, client) in wills {
            self.publish_will(will, client, now);
        }
        // Metadata only: the payloads stay in the store until a SUBSCRIBE sends them.
        for meta in retained {
            let entry = Retained {
                id: meta.id,
                size: meta.payload_len,
                expires_at: meta.expires_at.map(|t| self.clock.to_instant(t)),
                received_at: self.clock.to_instant(meta.received_at),
            };
            if entry.is_expired(now) {
                self.ops.push(Op::DeleteRetained(meta.topic));
            } else {
                self.retained_bytes += entry.size;
                self.retained.insert(&meta.topic, entry);
                stats.retained += 1;
            }
        }
        self.flush(now);
        Ok(stats)
    }

    /// Installs a session read back from the store (at start, or claimed from another node
    /// in a cluster): offline, its expiry running, its in-flight messages and its queue
    /// (left in the store) waiting for the client. Returns how many messages are queued and
    /// in flight.
    pub(super) fn restore_session(
        &mut self,
        r: RecoveredSession,
        now: Instant,
    ) -> Result<(usize, usize), StoreError> {
        let meta = r.meta;
        let sid = SessionId(self.next_session);
        self.next_session += 1;
        let mut s = Session::new(sid, meta.client_id.clone(), meta.version);
        s.clean_start = false;
        s.identity = Identity {
            username: meta.username.map(Arc::from),
            ..Identity::default()
        };
        // A `max_session_expiry` lowered since the session was stored applies to it too.
        s.expiry_interval = self
            .config
            .max_session_expiry
            .map_or(meta.expiry_interval, |max| meta.expiry_interval.min(max));
        s.disconnected_at = Some(
            meta.disconnected_at
                .map_or(now, |t| self.clock.to_instant(t)),
        );
        // Offline from now on; a session of a client that was connected when the broker
        // stopped starts its expiry now.
        let capped = (s.expiry_interval != u32::MAX).then(|| {
            s.disconnected_at.unwrap_or(now) + Duration::from_secs(u64::from(s.expiry_interval))
        });
        s.expires_at = match (meta.expires_at, capped) {
            (Some(t), Some(cap)) => Some(self.clock.to_instant(t).min(cap)),
            (Some(t), None) => Some(self.clock.to_instant(t)),
            (None, Some(_)) => Some(now + Duration::from_secs(u64::from(s.expiry_interval))),
            (None, None) => None,
        };
        s.pending_will = meta
            .pending_will
            .map(|(w, at)| (Box::new(w), self.clock.to_instant(at)));
        s.stats.dropped = meta.dropped;
        for (filter, entry) in r.subscriptions {
            self.subs.insert(sid, &filter, entry);
            self.groups_changed |= subscribe::is_shared(&filter);
            s.subscriptions.insert(filter, entry);
        }
        for d in r.inflight {
            let (id, stage) = match d.state {
                DeliveryState::AwaitingAck(id) => (id, Stage::AwaitingAck),
                DeliveryState::AwaitingComp(id) => (id, Stage::AwaitingComp),
                DeliveryState::Queued => continue,
            };
            let seq = d.seq;
            let delivery = self.delivery_from_store(d, now);
            s.inflight.insert(
                id,
                Inflight {
                    seq,
                    delivery,
                    stage,
                },
            );
        }
        s.inbound_qos2.extend(r.inbound_qos2);
        s.next_seq = r.max_seq.map_or(0, |m| m + 1);
        if r.queued.0 > 0 {
            for d in self.store.load_queue(&s.client_id)? {
                let size = d.msg.payload.len();
                s.stored_queue.push_back((d.seq, size));
                s.queued_bytes += size;
            }
        }
        let counts = (s.stored_queue.len(), s.inflight.len());
        self.by_client.insert(s.client_id.clone(), sid);
        self.sessions.insert(sid, Box::new(s));
        Ok(counts)
    }
}
