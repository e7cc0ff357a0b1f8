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
    /// sessions. The message gets a new id here (ids are this node's own); No Local is
    /// kept by the publisher's client id, which is one session in the whole cluster.
    pub(super) fn on_routed(&mut self, m: StoredMessage, now: Instant) {
        let publisher = m
            .publisher
            .as_deref()
            .and_then(|c| self.by_client.get(c).copied());
        let msg = Message {
            id: self.new_message_id(),
            topic: m.topic,
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            properties: m.properties,
            expires_at: m.expires_at.map(|t| self.clock.to_instant(t)),
            received_at: self.clock.to_instant(m.received_at),
            publisher: m.publisher,
        };
        if msg.is_expired(now) {
            return;
        }
        self.route(Arc::new(msg), publisher, now);
    }

    /// A batch whose store write failed acknowledged nothing: the QoS 2 packet ids it took
    /// in are forgotten, so that the client's resend (DUP) is routed rather than answered
    /// as a duplicate of a message the cluster never stored [MQTT-4.3.3-9].
    pub(super) fn forget_batch_qos2(&mut self) {
        for (sid, id) in self.batch_qos2.drain(..) {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.inbound_qos2.remove(&id);
            }
        }
    }
}
