//! A node of a cluster: messages leave through the store and come back in the cluster's
//! order.
//!
//! When the store routes ([`Store::routes`]), a message a client publishes here is not
//! matched against this node's subscriptions at once: it is handed to the store
//! ([`Op::Route`]), which makes it safe in the cluster before the batch's acknowledgements go
//! out, and every node, this one included, routes it when the cluster delivers it
//! ([`Engine::on_routed`]). So all nodes see one order, and a message reaches a session
//! once whichever node holds it.

use super::*;
use crate::cluster::{Claim, Installed};

impl Engine {
    /// Routes a message received from a client (or a will): to the cluster when the store
    /// routes, else to this node's sessions at once. Returns what [`Engine::route`] does;
    /// in a cluster the deliveries are not known yet, so one is reported (a 5.0 PUBACK
    /// says Success rather than 0x10 No matching subscribers, which is optional) and no
    /// session is congested.
    pub(super) fn dispatch(
        &mut self,
        msg: Msg,
        publisher: Option<SessionId>,
        now: Instant,
    ) -> (usize, Option<SessionId>) {
        if !self.routes {
            return self.route(msg, publisher, now);
        }
        let stored = self.stored_message(&msg);
        self.ops.push(Op::Route(Box::new(stored)));
        (1, None)
    }

    /// Routes a message the cluster delivered (published on any node) to this node's
    /// sessions, shared groups aside (see `on_routed_shared`).
    pub(super) fn on_routed(&mut self, m: StoredMessage, now: Instant) {
        if m.id != 0 {
            self.routed_upto = self.routed_upto.max(m.id);
            self.ops.push(Op::Routed(m.id));
        }
        self.route_from_cluster(m, Routing::WithoutGroups, now);
    }

    /// Routes a message the cluster gave this node for shared group `group` (its members
    /// on every node take turns through the cluster: see `cluster::groups`): to one member
    /// of that group here. `false` if this node has no member of it (any more): the cluster
    /// then gives the message to another node.
    pub(super) fn on_routed_shared(
        &mut self,
        group: Arc<str>,
        m: StoredMessage,
        now: Instant,
    ) -> bool {
        // An expired message counts as handled (`group_found` is set by `route` only).
        self.group_found = true;
        self.route_from_cluster(m, Routing::Group(group), now);
        // Handled here if the group has members here, even if none of them may read the
        // topic (as on one node, nobody then gets it); offered elsewhere if not.
        self.group_found
    }

    /// Routes a message of the cluster's to the subscriptions `routing` names. A message of
    /// the stream keeps its sequence as its id (what the store records of a session's
    /// queue); a QoS 0 one gets an id of this node's, above every sequence. No Local is kept
    /// by the publisher's client id, which is one session in the whole cluster.
    fn route_from_cluster(&mut self, mut m: StoredMessage, routing: Routing, now: Instant) {
        let publisher = m
            .publisher
            .as_deref()
            .and_then(|c| self.by_client.get(c).copied());
        if m.id == 0 {
            m.id = self.new_message_id();
        }
        let msg = self.message_from_store(m);
        if msg.is_expired(now) {
            return;
        }
        self.routing = routing;
        self.route(msg, publisher, now);
        self.routing = Routing::All;
    }

    /// Tells the store which shared groups this node has members in (after a change).
    pub(super) fn announce_groups(&mut self) {
        let mut groups: Vec<(Arc<str>, String)> = Vec::new();
        for s in self.sessions.values() {
            for f in s.subscriptions.keys() {
                if let Ok(Some(shared)) = f.shared() {
                    groups.push((shared.group.clone(), shared.filter.as_str().to_owned()));
                }
            }
        }
        groups.sort();
        groups.dedup();
        self.ops.push(Op::SharedGroups(groups));
    }

    /// A batch whose store write failed acknowledged nothing: the QoS 2 packet ids it took
    /// in are forgotten, so that the client's resend (DUP) is routed rather than answered
    /// as a duplicate of a message the cluster never stored [MQTT-4.3.3-9].
    pub(super) fn forget_batch_qos2(&mut self) {
        for (sid, id) in self.batch_qos2.drain(..) {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.inbound_qos2.remove(&id);
                // The store kept it in the session's record: it goes from there too.
                if s.persistent() {
                    self.ops.push(Op::DeleteInboundQos2 {
                        client: s.client_id.clone(),
                        packet_id: id,
                    });
                }
            }
        }
    }
}

impl Engine {
    /// Before a CONNECT that claimed its session (cluster mode): restores what the claim
    /// found, in place of any copy this node still had. `Err` is the CONNACK's refusal.
    pub(super) fn install_claim(
        &mut self,
        client_id: &str,
        claim: Claim,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        self.install(client_id, claim, true, now).map_err(|e| {
            tracing::error!(%client_id, error = %e, "session claimed but not installed; CONNECT refused");
            ReasonCode::ServerUnavailable
        })
    }

    /// A session whose node died, taken by this node without its client (see
    /// `Broker::adopt`): restored offline, its expiry running, its wills armed.
    pub(super) fn adopt(&mut self, client_id: &str, claim: Claim, now: Instant) -> bool {
        if self.by_client.contains_key(client_id) {
            // Its client came back here meanwhile.
            return false;
        }
        match self.install(client_id, claim, false, now) {
            Ok(()) => self.by_client.contains_key(client_id),
            Err(e) => {
                tracing::error!(%client_id, error = %e, "session adopted but not installed");
                false
            }
        }
    }

    /// Installs a claimed session. The will of a connection that was open when its node
    /// died is handled as for any connection lost without DISCONNECT [MQTT-3.1.2-8]: due
    /// after its Will Delay Interval (5.0), and not published if the client is back before
    /// then (`returning`: the claim came with its CONNECT) [MQTT-3.1.3-9].
    fn install(
        &mut self,
        client_id: &str,
        claim: Claim,
        returning: bool,
        now: Instant,
    ) -> Result<(), StoreError> {
        match self.store.install(client_id, claim, self.routed_upto)? {
            Installed::Held => Ok(()),
            Installed::Fresh => {
                self.forget_client(client_id);
                Ok(())
            }
            Installed::Restored(mut r, spilled_from) => {
                self.forget_client(client_id);
                let will = r.meta.connected_will.take();
                let client: Arc<str> = r.meta.client_id.clone();
                let version = r.meta.version;
                self.restore_session(*r, now)?;
                if let (Some(from), Some(&sid)) = (spilled_from, self.by_client.get(&client)) {
                    self.spill_marks.insert(sid, from);
                }
                let Some(will) = will else { return Ok(()) };
                let delay = match version {
                    ProtocolVersion::V311 => 0,
                    ProtocolVersion::V5 => will.properties.will_delay_interval.unwrap_or(0),
                };
                if delay == 0 {
                    self.publish_will(will, client.clone(), now);
                } else if !returning {
                    if let Some(&sid) = self.by_client.get(&client) {
                        if let Some(s) = self.sessions.get_mut(&sid) {
                            let due = now + Duration::from_secs(u64::from(delay));
                            s.pending_will = Some((Box::new(will), due));
                        }
                        self.persist_session(sid);
                    }
                }
                if let Some(&sid) = self.by_client.get(&client) {
                    // Written again: the record no longer has an open connection's will.
                    self.persist_session(sid);
                }
                Ok(())
            }
        }
    }

    /// Another node asked for this client's session: its connection here is closed (5.0:
    /// DISCONNECT 0x8E, its will handled as at any takeover), the store writes the session
    /// for the last time, and this node forgets it. `false` if this node had no such
    /// session.
    pub(super) fn release_session(&mut self, client_id: &str, now: Instant) -> bool {
        let Some(&sid) = self.by_client.get(client_id) else {
            return false;
        };
        if self.sessions.get(&sid).is_some_and(|s| s.online.is_some()) {
            self.close(sid, Some(ReasonCode::SessionTakenOver));
            self.go_offline(sid, now);
        }
        // A session that ended with its connection (clean, expiry 0) is gone already.
        let Some(&sid) = self.by_client.get(client_id) else {
            return true;
        };
        if let Some(s) = self.sessions.get(&sid) {
            self.ops.push(Op::Released(s.client_id.clone()));
        }
        self.forget(sid);
        true
    }

    /// Closes every connection (5.0: DISCONNECT `reason`), keeping the sessions; their
    /// wills are handled as for any connection the server closes. Returns how many.
    pub(super) fn disconnect_all(&mut self, reason: ReasonCode, now: Instant) -> usize {
        let online: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.online.is_some())
            .map(|s| s.id)
            .collect();
        for &sid in &online {
            self.close(sid, Some(reason));
            self.go_offline(sid, now);
        }
        online.len()
    }

    /// Sessions another node took (the store lost their records): closed (0x8E) and
    /// forgotten, without writing anything more of them.
    pub(super) fn forget_lost(&mut self) {
        for client in self.store.take_lost() {
            if let Some(&sid) = self.by_client.get(&client) {
                tracing::info!(client_id = %client, "session taken by another node; closing its connection here");
                self.close(sid, Some(ReasonCode::SessionTakenOver));
                self.forget(sid);
            }
        }
    }

    /// Forgets this node's copy of `client_id`'s session, if any (see [`Engine::forget`]).
    fn forget_client(&mut self, client_id: &str) {
        if let Some(&sid) = self.by_client.get(client_id) {
            self.close(sid, Some(ReasonCode::SessionTakenOver));
            self.forget(sid);
        }
    }

    /// Drops a session from this node's maps without a store op: it lives on elsewhere.
    fn forget(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        if let Some(online) = &s.online {
            self.conns.remove(&online.conn);
        }
        self.by_client.remove(&s.client_id);
        self.spill_marks.remove(&sid);
        for f in s.subscriptions.keys() {
            self.subs.remove(sid, f);
            self.groups_changed |= subscribe::is_shared(f);
        }
        self.emit(|| SessionEvent::Ended {
            client_id: s.client_id.to_string(),
        });
    }
}

impl Engine {
    /// Leaves session `sid`'s messages in the stream from sequence `from` on (its queue is
    /// full), and tells the store (its record is then complete only below `from`).
    pub(super) fn spill(&mut self, sid: SessionId, client: Arc<str>, from: u64) {
        self.spill_marks.insert(sid, from);
        self.ops.push(Op::Spilled {
            client,
            from: Some(from),
        });
    }

    /// Reads back what spilled to the stream for sessions whose queue has room again
    /// (online: half the queue limit free; offline: into their stored queue, under its own
    /// limit and overflow policy, as on one node). At each tick.
    pub(super) fn refill_spilled(&mut self, now: Instant) {
        if self.spill_marks.is_empty() {
            return;
        }
        let max = self.config.max_queued_messages;
        let marks: Vec<(SessionId, u64)> = self
            .spill_marks
            .iter()
            .map(|(&sid, &from)| (sid, from))
            .collect();
        for (sid, from) in marks {
            let Some(s) = self.sessions.get(&sid) else {
                self.spill_marks.remove(&sid);
                continue;
            };
            let room = match &s.online {
                Some(_) if s.queue.len() > max / 2 => continue,
                Some(_) => max - s.queue.len(),
                None => max.saturating_sub(s.stored_queue.len()),
            };
            if room > 0 {
                self.refill(sid, from, room, now);
            }
        }
    }

    /// Reads up to `room` of session `sid`'s messages from stream sequence `from` back from
    /// the stream into its queue, and notes where to go on from.
    fn refill(&mut self, sid: SessionId, from: u64, room: usize, now: Instant) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let client = s.client_id.clone();
        let subs: Vec<(protocol::TopicFilter, SubEntry)> = s
            .subscriptions
            .iter()
            .filter(|(f, _)| !subscribe::is_shared(f))
            .map(|(f, e)| (f.clone(), *e))
            .collect();
        let found = self
            .store
            .refill(&client, &subs, from, self.routed_upto, room);
        let (deliveries, next) = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(client_id = %client, error = %e, "cannot read spilled messages back yet");
                return;
            }
        };
        self.spill_marks.remove(&sid);
        for d in deliveries {
            // Only what the session may read, as routing gives it (the rules may have
            // changed since, a reloaded ACL file).
            if !self.may(sid, Access::Read(d.msg.topic.as_str())) {
                continue;
            }
            let mut d = self.delivery_from_store(d, now);
            d.stored = false;
            // May spill again (the byte limit): that earlier mark then stands.
            self.deliver(sid, d, now);
        }
        if let Some(next) = next {
            self.spill_marks.entry(sid).or_insert(next);
        }
        let from = self.spill_marks.get(&sid).copied();
        self.ops.push(Op::Spilled { client, from });
    }
}
