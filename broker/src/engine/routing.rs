//! Routing and delivery: matching, one delivery per session, queues, the in-flight window, retained messages.

use super::*;

impl Engine {
    pub(super) fn send(&mut self, sid: SessionId, packet: Packet) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(online) = s.online.as_mut() else {
            return;
        };
        online.pending_out += 1;
        self.outbox.push((
            online.tx.clone(),
            Outgoing::Packet(Box::new(packet)),
            Some(sid),
        ));
    }

    pub(super) fn close(&mut self, sid: SessionId, reason: Option<ReasonCode>) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let Some(online) = &s.online else { return };
        let tx = online.tx.clone();
        if let (Some(reason), ProtocolVersion::V5) = (reason, s.version) {
            let packet = Packet::Disconnect(Disconnect::new(reason));
            self.outbox
                .push((tx.clone(), Outgoing::Packet(Box::new(packet)), None));
        }
        self.outbox.push((tx, Outgoing::Close, None));
    }

    /// Routes a message to every matching session: retained store, normal subscriptions
    /// (one delivery per session at the highest matching QoS, with every matching
    /// subscription identifier), and one member of each matching shared group. Returns how
    /// many deliveries were made and a session now over its queue limit, if any.
    pub(super) fn route(
        &mut self,
        msg: Msg,
        publisher: Option<SessionId>,
        now: Instant,
    ) -> (usize, Option<SessionId>) {
        self.clear_pressing();
        // In a cluster, a shared group's message comes on its own (see `cluster`): to one
        // member of that group only; everything else comes with the stream, without groups.
        let only_group = match &self.routing {
            Routing::Group(name) => Some(name.clone()),
            _ => None,
        };
        let groups = !matches!(self.routing, Routing::WithoutGroups);
        if msg.retain && only_group.is_none() {
            self.retain(&msg, now);
        }
        let mut targets: Vec<(SessionId, QoS, bool, Vec<u32>)> = Vec::new();
        // One delivery per session: overlapping subscriptions merge through an index, O(1)
        // per match (a linear search was quadratic in the subscribers of a topic).
        let mut index = std::mem::take(&mut self.route_index);
        let (auth, sessions) = (&*self.auth, &self.sessions);
        let topic = msg.topic.as_str();
        // Only to sessions that may read the topic: a wildcard subscription granted because
        // it overlaps readable topics does not receive the others.
        let readable = |sid: SessionId| {
            sessions
                .get(&sid)
                .is_some_and(|s| may(auth, s, Access::Read(topic)))
        };
        let ordinary = only_group.is_none();
        self.subs.for_each_match(topic, |sid, e| {
            if !ordinary {
                return;
            }
            if e.options.no_local && Some(sid) == publisher {
                return; // [MQTT-3.8.3-3]
            }
            match index.entry(sid) {
                std::collections::hash_map::Entry::Occupied(at) => {
                    let t = &mut targets[*at.get()];
                    t.1 = t.1.max(e.options.qos);
                    t.2 |= e.options.retain_as_published;
                    t.3.extend(e.id);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    if !readable(sid) {
                        return;
                    }
                    slot.insert(targets.len());
                    targets.push((
                        sid,
                        e.options.qos,
                        e.options.retain_as_published,
                        e.id.into_iter().collect(),
                    ));
                }
            }
        });
        index.clear();
        self.route_index = index;
        let (auth, sessions) = (&*self.auth, &self.sessions);
        let readable = |sid: SessionId| {
            sessions
                .get(&sid)
                .is_some_and(|s| may(auth, s, Access::Read(topic)))
        };
        let mut picked = false;
        let mut group_found = false;
        self.subs
            .for_each_matching_group(msg.topic.as_str(), |name, group| {
                let n = group.members.len();
                if n == 0 || !groups || picked {
                    return;
                }
                if only_group.as_deref().is_some_and(|only| only != name) {
                    return;
                }
                group_found = true;
                // Take turns among the members that may read the topic, preferring one that
                // is online with room in its window, then one that is online.
                let order = || (0..n).map(|i| (group.next + i) % n);
                let member = |i: usize| sessions.get(&group.members[i].0);
                let Some(pick) = order()
                    .find(|&i| {
                        member(i).is_some_and(|s| s.window_open()) && readable(group.members[i].0)
                    })
                    .or_else(|| {
                        order().find(|&i| {
                            member(i).is_some_and(|s| s.online.is_some())
                                && readable(group.members[i].0)
                        })
                    })
                    .or_else(|| order().find(|&i| readable(group.members[i].0)))
                else {
                    return;
                };
                group.next = pick + 1;
                // A cluster's group message goes to one group (of that name) only.
                picked = only_group.is_some();
                let (sid, e) = group.members[pick];
                targets.push((
                    sid,
                    e.options.qos,
                    e.options.retain_as_published,
                    e.id.into_iter().collect(),
                ));
            });
        self.group_found = group_found;
        let mut congested = None;
        let count = targets.len();
        for (sid, sub_qos, rap, sub_ids) in targets {
            let d = Delivery {
                seq: 0,
                stored: false,
                qos: msg.qos.min(sub_qos),
                // [MQTT-3.3.1-12], [MQTT-3.3.1-13]; 3.1.1 always 0 here [MQTT-3.3.1-9].
                retain: rap && msg.retain,
                sub_ids,
                msg: msg.clone(),
                queued_at: now,
            };
            if self.deliver(sid, d, now) && congested.is_none() {
                congested = Some(sid);
            }
        }
        (count, congested)
    }

    /// Keeps, replaces or deletes (empty payload) the retained message of a topic
    /// [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-7].
    ///
    /// Bounded by `max_retained_messages` and `max_retained_bytes`: a message that does not
    /// fit is routed but not retained, and it also removes the topic's older retained
    /// message, which it was meant to replace (a stale value is worse than none).
    pub(super) fn retain(&mut self, msg: &Msg, now: Instant) {
        if sys::is_sys(msg.topic.as_str()) {
            // Only the broker writes there; kept in memory (see `sys`).
            return self.retain_sys(msg);
        }
        let old = self.retained.get(msg.topic.as_str()).map(|r| r.size);
        let size = msg.payload.len();
        let fits = size > 0
            && (old.is_some()
                || self.retained.len() - self.sys_retained() < self.config.max_retained_messages)
            && self.retained_bytes - old.unwrap_or(0) + size <= self.config.max_retained_bytes;
        if fits {
            self.retained.insert(&msg.topic, Retained::of(msg));
            self.batch_retained.insert(msg.topic.clone(), msg.clone());
            self.retained_bytes = self.retained_bytes - old.unwrap_or(0) + size;
            let stored = self.stored_message(msg);
            self.ops.push(Op::PutRetained(Box::new(stored)));
            return;
        }
        if size > 0 {
            if let Some(times) = self.logs.retained.hit(now) {
                tracing::warn!(
                    topic = %msg.topic,
                    bytes = size,
                    retained = self.retained.len(),
                    retained_bytes = self.retained_bytes,
                    times,
                    "retained message limit (max_retained_messages / max_retained_bytes) reached; not retained"
                );
            }
        }
        self.batch_retained.remove(&msg.topic);
        if let Some(old) = self.retained.remove(msg.topic.as_str()) {
            self.retained_bytes -= old.size;
            self.ops.push(Op::DeleteRetained(msg.topic.clone()));
        }
    }

    /// Delivers to one session: sends now if online and the window allows, else queues.
    /// Returns true if an online session is now over its queue limit (backpressure).
    pub(super) fn deliver(&mut self, sid: SessionId, mut d: Delivery, now: Instant) -> bool {
        let cfg = self.config.clone();
        self.touch(sid);
        // In a cluster: this session's messages are being left in the stream from some
        // sequence on (see `cluster`); later ones wait there too, in order.
        let marked = self.routes && self.spill_marks.contains_key(&sid);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        d.seq = s.take_seq();
        let client = s.client_id.clone();
        if s.online.is_some() {
            if d.qos == QoS::AtMostOnce {
                // Behind what is queued, or without room in the channel, it waits (see
                // `backpressure`).
                let reserve = connection_reserve(&cfg);
                let room = s
                    .online
                    .as_ref()
                    .is_some_and(|o| backpressure::qos0_room(o, reserve));
                if s.queue.is_empty() && room {
                    self.transmit(sid, d, now);
                } else {
                    self.queue_qos0(sid, d, now);
                }
                return false;
            }
            let over = s.queue.len() >= cfg.max_queued_messages
                || s.queued_bytes + d.msg.payload.len() > cfg.max_queued_bytes;
            if self.routes && d.msg.id < CLUSTER_SNAPSHOT_IDS {
                // A cluster's stream message beyond a full queue stays in the stream, and
                // so does everything after it until the queue drains (`refill`): the queue
                // keeps its bound, nothing acknowledged is lost, the order holds.
                if marked || (over && !(s.queue.is_empty() && s.window_open())) {
                    if !marked {
                        self.spill(sid, client, d.msg.id);
                    }
                    return false;
                }
            }
            if s.queue.is_empty() && s.window_open() {
                self.transmit(sid, d, now);
                return false;
            }
            if over && self.pressure.unheld {
                // Its publisher's acknowledgement cannot wait (see `backpressure`): the
                // limit holds, the message is dropped for this session and counted.
                s.stats.dropped += 1;
                self.metrics.dropped(DropReason::QueueFull, 1);
                return false;
            }
            let persistent = s.persistent();
            if persistent {
                d.stored = true;
                self.put_delivery(&client, &d, DeliveryState::Queued);
            }
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.push_queue(d);
            }
            return over;
        }
        // Offline (only persistent sessions are): the message goes to the store, only its
        // seq and size stay in memory.
        if d.qos == QoS::AtMostOnce && !cfg.queue_qos0 {
            return false;
        }
        if marked && d.msg.id < CLUSTER_SNAPSHOT_IDS {
            // Read back in order once what spilled before it is (see `refill`).
            return false;
        }
        let size = d.msg.payload.len();
        while !s.stored_queue.is_empty()
            && (s.stored_queue.len() >= cfg.max_queued_messages
                || s.queued_bytes + size > cfg.max_queued_bytes)
        {
            s.stats.dropped += 1;
            self.metrics.dropped(DropReason::QueueFull, 1);
            match cfg.overflow_policy {
                OverflowPolicy::DropOldest => {
                    if let Some((seq, old)) = s.stored_queue.pop_front() {
                        s.queued_bytes -= old;
                        self.ops.push(Op::DeleteDelivery {
                            client: client.clone(),
                            seq,
                        });
                    }
                }
                OverflowPolicy::DropNewest => return false,
            }
        }
        if size > cfg.max_queued_bytes || cfg.max_queued_messages == 0 {
            s.stats.dropped += 1;
            self.metrics.dropped(DropReason::QueueFull, 1);
            return false;
        }
        s.stored_queue.push_back((d.seq, size));
        s.queued_bytes += size;
        d.stored = true;
        self.put_delivery(&client, &d, DeliveryState::Queued);
        false
    }

    /// Sends one delivery on an online session: QoS 0 directly, QoS 1/2 with a packet id,
    /// into the in-flight set (and, for a persistent session, the store). The caller saw
    /// to the room: the window for QoS 1/2, the channel for QoS 0 ([`Engine::qos0_room`]).
    pub(super) fn transmit(&mut self, sid: SessionId, mut d: Delivery, now: Instant) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(online) = &s.online else { return };
        let client = s.client_id.clone();
        let qos0 = d.qos == QoS::AtMostOnce;
        let max_packet_size = online.max_packet_size;
        // [MQTT-3.3.2-5]: an expired message is not delivered.
        let expired = d.msg.is_expired(now);
        let id = if expired || qos0 {
            None
        } else {
            match s.alloc_packet_id() {
                Some(id) => Some(id),
                None => {
                    s.push_queue(d);
                    return;
                }
            }
        };
        let mut p = d.msg.to_publish(d.qos, d.retain, &d.sub_ids, now);
        p.packet_id = id;
        // Too large for the client: discarded as if sent [MQTT-3.1.2-25].
        let too_large = max_packet_size.is_some_and(|max| {
            !Packet::Publish(p.clone())
                .encoded_len(s.version)
                .is_ok_and(|n| n <= max as usize)
        });
        if expired || too_large {
            s.stats.dropped += 1;
            let reason = if expired {
                DropReason::Expired
            } else {
                DropReason::TooLarge
            };
            self.metrics.dropped(reason, 1);
            if d.stored {
                self.ops.push(Op::DeleteDelivery { client, seq: d.seq });
            }
            return;
        }
        s.stats.msgs_out += 1;
        s.stats.bytes_out += p.payload.len() as u64;
        // `now` is the batch's clock: a message delivered in the batch it arrived in counts
        // as 0 (no clock read per message). Only messages routed live are observed (queued at
        // their arrival, possibly waiting for the window since): a retained message sent on
        // subscribe, or one resumed from an offline queue, was queued when it was read back,
        // and its age is not a delivery latency.
        let latency =
            (d.queued_at == d.msg.received_at).then(|| now.saturating_duration_since(d.queued_at));
        self.metrics.sent(p.qos, p.payload.len(), latency);
        let persistent = s.persistent();
        match id {
            Some(id) => {
                let state = DeliveryState::AwaitingAck(id.get());
                if d.stored {
                    self.ops.push(Op::SetDeliveryState {
                        client,
                        seq: d.seq,
                        state,
                    });
                } else if persistent {
                    d.stored = true;
                    self.put_delivery(&client, &d, state);
                }
                if let Some(s) = self.sessions.get_mut(&sid) {
                    let seq = d.seq;
                    s.inflight.insert(
                        id.get(),
                        Inflight {
                            seq,
                            delivery: d,
                            stage: Stage::AwaitingAck,
                        },
                    );
                }
            }
            None if d.stored => self.ops.push(Op::DeleteDelivery { client, seq: d.seq }),
            None => {}
        }
        self.send(sid, Packet::Publish(p));
    }

    /// Moves queued messages out in order while there is room (the window for QoS 1/2,
    /// the channel for QoS 0), then releases held acknowledgements once the queue is back
    /// under its limit, and paused publishers once it is down to its low-water mark.
    pub(super) fn drain(&mut self, sid: SessionId, now: Instant) {
        loop {
            let Some(s) = self.sessions.get(&sid) else {
                return;
            };
            let room = match s.queue.front() {
                None => break,
                Some(d) if d.qos == QoS::AtMostOnce => self.qos0_room(sid),
                Some(_) => s.window_open(),
            };
            if !room {
                break;
            }
            let Some(d) = self.sessions.get_mut(&sid).and_then(|s| s.pop_queue()) else {
                break;
            };
            self.transmit(sid, d, now);
        }
        self.eased(sid);
        let limit = self.config.max_queued_messages;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.queue.len() > limit || s.held_acks.is_empty() {
            return;
        }
        let held: Vec<HeldAck> = s.held_acks.drain(..).collect();
        for h in held {
            if let Some(&publisher) = self.conns.get(&h.conn) {
                let reason = ReasonCode::Success;
                self.ack_publish(publisher, h.packet_id, h.qos, reason);
            }
        }
    }

    /// The whole retained message of `topic`, read from the store (or from the current
    /// batch, not yet written); `None` if there is none or it cannot be read.
    pub(crate) fn load_retained(&mut self, topic: &str) -> Option<Msg> {
        if !self.retained.contains_key(topic) {
            return None;
        }
        if let Some(m) = self.batch_retained.get(topic).or(self.sys.payload(topic)) {
            return Some(m.clone());
        }
        match self.store.load_retained(topic) {
            Ok(Some(m)) => Some(self.message_from_store(m)),
            Ok(None) => {
                tracing::error!(topic, "retained message missing from the store");
                None
            }
            Err(e) => {
                tracing::error!(topic, error = %e, "cannot read the retained message");
                None
            }
        }
    }
}
