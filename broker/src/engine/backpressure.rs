//! QoS 0 without silent loss: bursts wait in bounded queues, and publishers are slowed
//! down at their sockets before anything is dropped.
//!
//! # Why
//! The engine cannot await a connection's outgoing channel (it `try_send`s from its own
//! thread), and QoS 0 has no acknowledgement to hold back. Dropping a QoS 0 message as
//! soon as the channel is short of room loses most of any burst towards a subscriber that
//! reads well but not instantly; mosquitto loses none of it. So:
//!
//! 1. A QoS 0 delivery to an online session whose channel is short of room (or whose queue
//!    is not empty, to keep the order [MQTT-4.6.0-6]) waits in the session's queue,
//!    bounded by `max_queued_messages` / `max_queued_bytes`. The engine asks the
//!    connection ([`Flow::want_drained`]) to say when it has taken items out of its
//!    channel ([`Command::Drained`]), and moves the queue on then.
//! 2. Once the queue is over its **high-water mark** (a quarter of the limits), the connection
//!    whose message is being routed is paused ([`Flow::pause`]): its task stops reading its
//!    transport, and TCP's window (or the WebSocket's) pushes back on the publisher. All
//!    publishers it paused resume when the queue is down to the **low-water mark** (an
//!    eighth), or when the session goes offline. The mark is low so that what is already
//!    on its way when the publishers are paused (the engine's own queue, `engine_queue`
//!    commands, and at most one packet per paused connection: the connection stops between
//!    two packets of a chunk) still fits under the limit.
//! 3. A session that stays over its high-water mark for `max_publisher_pause_ms` is
//!    **stuck**: it releases the publishers it paused and pauses no more, and the QoS 0
//!    messages that would take its queue over the mark are dropped and counted on it (its
//!    `dropped`, and `mqtt_bridge_messages_dropped_total{reason="slow_qos0"}`), so one
//!    stuck subscriber cannot stall the others. It is no longer stuck once it drains to
//!    the low-water mark.
//!
//! Only QoS 0 deliveries pause publishers: QoS 1/2 publishers are already held back by
//! their acknowledgements (`held_acks`), and pausing them too could make two clients that
//! publish to each other wait on each other's unread acknowledgements. At most Receive
//! Maximum acknowledgements are held per publisher: a 5.0 client that sends more breaks the
//! protocol and is closed (0x93); a 3.1.1 client cannot know the window, so past it its
//! messages are acknowledged at once, and an online subscriber over its queue limit does
//! not take them (dropped for it and counted, as an offline queue's overflow is).
//!
//! Every structure here is bounded: one entry per congested online session and one per
//! paused connection; a congested session's set of paused publishers holds the
//! connections that published to it while it was congested (stale ids of closed
//! connections are harmless: connection ids are never reused).

use std::collections::{HashMap, HashSet};

use crate::command::Flow;

use super::*;

/// The backpressure state of the engine (see the [module docs](self)).
#[derive(Debug, Default)]
pub(super) struct Backpressure {
    /// Online sessions over their high-water mark.
    congested: HashMap<SessionId, Congestion>,
    /// Paused connections, with how many congested sessions hold each.
    paused: HashMap<ConnId, Paused>,
    /// Sessions with QoS 0 messages waiting for room in their channel, whose connection
    /// was asked to say when it has made some.
    waiting: HashSet<SessionId>,
    /// Congested sessions that the message being routed was queued for: its publisher is
    /// paused for each (filled by `deliver`, taken by `on_publish`).
    pressing: Vec<SessionId>,
    /// The QoS 1/2 message being routed cannot have its acknowledgement held back: its
    /// publisher (MQTT 3.1.1, which cannot be told a Receive Maximum) is past the window.
    /// An online session over its queue limit then does not take it (see `deliver`).
    pub(super) unheld: bool,
}

/// A session over its high-water mark.
#[derive(Debug)]
struct Congestion {
    /// Since when, without having drained to the low-water mark.
    since: Instant,
    /// The connections it holds paused.
    pausing: HashSet<ConnId>,
    /// Over the mark longer than `max_publisher_pause_ms`: pauses no one, and its QoS 0
    /// overflow is dropped.
    stuck: bool,
}

/// A paused connection.
#[derive(Debug)]
struct Paused {
    flow: Arc<Flow>,
    /// Congested sessions holding it; resumed at 0.
    holders: usize,
}

/// What becomes of a QoS 0 delivery to an online session that cannot send it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qos0Fate {
    /// Waits in the queue.
    Queue,
    /// Waits in the queue, and its publisher is paused.
    QueueAndPause,
    /// Dropped and counted: the session is stuck, or its queue is at its limit.
    Drop,
}

impl Engine {
    /// Whether an online session's channel has room for a QoS 0 message (beyond what is
    /// kept for QoS 1/2 and control packets).
    pub(super) fn qos0_room(&self, sid: SessionId) -> bool {
        let reserve = connection_reserve(&self.config);
        self.sessions
            .get(&sid)
            .and_then(|s| s.online.as_ref())
            .is_some_and(|o| qos0_room(o, reserve))
    }

    /// A QoS 0 delivery to an online session that cannot send it now (no room in its
    /// channel, or messages queued before it): queued, or dropped if the session is stuck
    /// or full. Notes the session for `on_publish` to pause the publisher.
    pub(super) fn queue_qos0(&mut self, sid: SessionId, d: Delivery, now: Instant) {
        let cfg = Arc::clone(&self.config);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let size = d.msg.payload.len();
        let over_high = s.queue.len() >= high_water(cfg.max_queued_messages)
            || s.queued_bytes + size > high_water(cfg.max_queued_bytes);
        let full = s.queue.len() >= cfg.max_queued_messages
            || s.queued_bytes + size > cfg.max_queued_bytes;
        let bound = Duration::from_millis(cfg.max_publisher_pause_ms);
        let fate = if over_high {
            let c = self.pressure.congested.entry(sid).or_insert(Congestion {
                since: now,
                pausing: HashSet::new(),
                stuck: false,
            });
            if !c.stuck && now.saturating_duration_since(c.since) >= bound {
                c.stuck = true;
                let pausing = std::mem::take(&mut c.pausing);
                Self::unpause(&mut self.pressure.paused, pausing);
                if let Some(times) = self.logs.slow.hit(now) {
                    tracing::warn!(client_id = %s.client_id, times, "subscriber over its queue's high-water mark for max_publisher_pause_ms; its QoS 0 overflow is dropped");
                }
            }
            match (c.stuck, full) {
                (false, false) => Qos0Fate::QueueAndPause,
                _ => Qos0Fate::Drop,
            }
        } else if full {
            Qos0Fate::Drop
        } else {
            Qos0Fate::Queue
        };
        match fate {
            Qos0Fate::Drop => {
                s.stats.dropped += 1;
                self.metrics.dropped(DropReason::SlowQos0, 1);
            }
            Qos0Fate::Queue | Qos0Fate::QueueAndPause => {
                // Not written to the store while online: a QoS 0 message is worth a write
                // only if the session goes offline with it (see `go_offline`).
                s.push_queue(d);
                if fate == Qos0Fate::QueueAndPause {
                    self.pressure.pressing.push(sid);
                }
                self.want_drained(sid);
            }
        }
    }

    /// Asks the session's connection to say when it has made room in its channel.
    fn want_drained(&mut self, sid: SessionId) {
        if let Some(o) = self.sessions.get(&sid).and_then(|s| s.online.as_ref()) {
            if self.pressure.waiting.insert(sid) {
                o.flow.want_drained();
            }
        }
    }

    /// Empties the list of congested sessions the next message is routed to.
    pub(super) fn clear_pressing(&mut self) {
        self.pressure.pressing.clear();
    }

    /// Pauses connection `conn` (whose message was just routed) for each congested session
    /// it went to, except its own session `publisher`.
    pub(super) fn pause_publisher(&mut self, publisher: SessionId, conn: ConnId) {
        if self.pressure.pressing.is_empty() {
            return;
        }
        let pressing = std::mem::take(&mut self.pressure.pressing);
        for &sid in &pressing {
            if sid == publisher {
                // Its own reading is what drains it (PUBACKs, PINGREQ): never paused for it.
                continue;
            }
            let Some(c) = self.pressure.congested.get_mut(&sid) else {
                continue;
            };
            if c.stuck || !c.pausing.insert(conn) {
                continue;
            }
            match self.pressure.paused.entry(conn) {
                std::collections::hash_map::Entry::Occupied(mut p) => p.get_mut().holders += 1,
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let flow = self
                        .sessions
                        .get(&publisher)
                        .and_then(|s| s.online.as_ref())
                        .map(|o| Arc::clone(&o.flow));
                    if let Some(flow) = flow {
                        flow.pause();
                        slot.insert(Paused { flow, holders: 1 });
                    } else {
                        c.pausing.remove(&conn);
                    }
                }
            }
        }
        // Keep the allocation.
        self.pressure.pressing = pressing;
        self.pressure.pressing.clear();
    }

    /// Lets go of `pausing`: each connection no other session holds is resumed.
    fn unpause(paused: &mut HashMap<ConnId, Paused>, pausing: HashSet<ConnId>) {
        for conn in pausing {
            if let std::collections::hash_map::Entry::Occupied(mut p) = paused.entry(conn) {
                p.get_mut().holders -= 1;
                if p.get().holders == 0 {
                    p.remove().flow.resume();
                }
            }
        }
    }

    /// After the queue of `sid` moved: if it is down to the low-water mark, the session is
    /// no longer congested and the publishers it paused resume; while QoS 0 messages wait
    /// at its head for room, its connection is asked to say when there is some.
    pub(super) fn eased(&mut self, sid: SessionId) {
        let cfg = Arc::clone(&self.config);
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let waits_for_room = s.queue.front().is_some_and(|d| d.qos == QoS::AtMostOnce);
        let low = s.queue.len() <= low_water(cfg.max_queued_messages)
            && s.queued_bytes <= low_water(cfg.max_queued_bytes);
        if low {
            self.release(sid);
        }
        if waits_for_room {
            self.want_drained(sid);
        } else {
            self.pressure.waiting.remove(&sid);
        }
    }

    /// `sid` is no longer congested: the publishers it paused resume.
    fn release(&mut self, sid: SessionId) {
        if let Some(c) = self.pressure.congested.remove(&sid) {
            Self::unpause(&mut self.pressure.paused, c.pausing);
        }
    }

    /// The connection told the engine it made room in its channel.
    pub(super) fn on_drained(&mut self, sid: SessionId, now: Instant) {
        self.pressure.waiting.remove(&sid);
        self.drain(sid, now);
    }

    /// At the end of a batch, once its items are in the channels: sessions waiting for
    /// room that have some now move their queue on (their connection may have made the
    /// room before it saw the request). Returns whether any did.
    pub(super) fn refill_waiting(&mut self, now: Instant) -> bool {
        if self.pressure.waiting.is_empty() {
            return false;
        }
        let ready: Vec<SessionId> = self
            .pressure
            .waiting
            .iter()
            .copied()
            .filter(|&sid| self.qos0_room(sid))
            .collect();
        for &sid in &ready {
            self.pressure.waiting.remove(&sid);
            self.drain(sid, now);
        }
        !ready.is_empty()
    }

    /// The session `sid` (connection `conn`) went offline: the publishers it paused resume,
    /// and the connection itself, if paused, is forgotten.
    pub(super) fn offline_pressure(&mut self, sid: SessionId, conn: ConnId) {
        self.release(sid);
        self.pressure.waiting.remove(&sid);
        if let Some(p) = self.pressure.paused.remove(&conn) {
            p.flow.resume();
        }
    }

    /// At each tick: sessions congested for longer than `max_publisher_pause_ms` become
    /// stuck and release their publishers.
    pub(super) fn pressure_tick(&mut self, now: Instant) {
        let bound = Duration::from_millis(self.config.max_publisher_pause_ms);
        let mut released = Vec::new();
        for (&sid, c) in &mut self.pressure.congested {
            if !c.stuck && now.saturating_duration_since(c.since) >= bound {
                c.stuck = true;
                released.push((sid, std::mem::take(&mut c.pausing)));
            }
        }
        for (sid, pausing) in released {
            Self::unpause(&mut self.pressure.paused, pausing);
            if let Some(times) = self.logs.slow.hit(now) {
                let client = self.sessions.get(&sid).map(|s| s.client_id.clone());
                tracing::warn!(client_id = ?client, times, "subscriber over its queue's high-water mark for max_publisher_pause_ms; its QoS 0 overflow is dropped");
            }
        }
    }

    /// How many connections are paused (for tests and inspection).
    #[cfg(test)]
    pub(crate) fn paused_connections(&self) -> usize {
        self.pressure.paused.len()
    }
}

/// Whether connection `o` has room in its channel for a QoS 0 message beyond `reserve`.
pub(super) fn qos0_room(o: &Online, reserve: usize) -> bool {
    o.tx.capacity().saturating_sub(o.pending_out) > reserve
}

/// The queue length (or bytes) over which a session's QoS 0 publishers are paused.
fn high_water(limit: usize) -> usize {
    limit / 4
}

/// The queue length (or bytes) down to which a congested session must drain.
fn low_water(limit: usize) -> usize {
    limit / 8
}
