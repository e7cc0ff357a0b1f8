//! SUBSCRIBE and UNSUBSCRIBE, and the retained messages a new subscription is sent.

use super::*;

impl Engine {
    pub(super) fn on_subscribe(&mut self, sid: SessionId, sub: Subscribe, now: Instant) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let client_id = s.client_id.clone();
        let max_qos = self.config.max_qos();
        let sub_id = sub.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(sub.subscriptions.len());
        let mut retained: Vec<(TopicName, (Instant, u64), SubEntry)> = Vec::new();
        let max_subs = self.config.max_subscriptions_per_session;
        // The retained messages one SUBSCRIBE may collect: what the session's window and queue
        // can take (the rest would be dropped anyway), so a packet repeating `#` a hundred
        // thousand times, or a thousand filters that all match everything, costs no more
        // than one queue's worth of work and memory.
        let budget = self.sessions.get(&sid).map_or(0, |s| {
            let window = s.online.as_ref().map_or(0, |o| o.window);
            (self.config.max_queued_messages + window).saturating_sub(s.queue.len())
        });
        let mut walked: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for wanted in &sub.subscriptions {
            // Bounded at the door, before anything walks its levels: 5.0 0x8F, 3.1.1 0x80.
            if !self.topic_within_limits(wanted.filter.as_str()) {
                self.log_topic_refusal("topic filter", wanted.filter.as_str(), now);
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            // What is asked is the filter a shared subscription matches with, without its
            // `$share/{group}/`. Refused when no topic it matches may be read (5.0 0x87,
            // 3.1.1 0x80); granted when some may, and the rest held back on delivery.
            let shared_filter = wanted.filter.shared().ok().flatten();
            let matched = shared_filter
                .as_ref()
                .map_or(wanted.filter.as_str(), |s| s.filter.as_str());
            if !self.may(sid, Access::Subscribe(matched)) {
                reasons.push(ReasonCode::NotAuthorized);
                continue;
            }
            let full = self.sessions.get(&sid).is_some_and(|s| {
                s.subscriptions.len() >= max_subs && !s.subscriptions.contains_key(&wanted.filter)
            });
            if full {
                // 5.0 0x97 Quota exceeded; 3.1.1 0x80.
                if let Some(times) = self.logs.subscriptions.hit(now) {
                    tracing::warn!(%client_id, max_subscriptions_per_session = max_subs, times, "subscription limit reached; filter refused");
                }
                reasons.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let shared = shared_filter.is_some();
            let mut options = wanted.options;
            options.qos = options.qos.min(max_qos);
            let entry = SubEntry {
                options,
                id: sub_id,
            };
            // A subscription to the same filter replaces the old one [MQTT-3.8.4-3].
            let existed = self.subs.insert(sid, &wanted.filter, entry);
            self.groups_changed |= is_shared(&wanted.filter);
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.subscriptions.insert(wanted.filter.clone(), entry);
                if s.persistent() {
                    let client = s.client_id.clone();
                    let filter = wanted.filter.clone();
                    self.ops.push(Op::PutSubscription {
                        client,
                        filter,
                        entry,
                    });
                }
            }
            reasons.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            // Retained messages per Retain Handling [MQTT-3.3.1-9], [MQTT-3.3.1-10],
            // [MQTT-3.3.1-11]; none for a shared subscription [MQTT-4.8.2-?].
            let send_retained = !shared
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            // One walk per distinct filter of the packet (a filter repeated in it is one
            // subscription), and none once the budget is spent.
            if send_retained && retained.len() < budget && walked.insert(wanted.filter.as_str()) {
                let start = retained.len();
                // Through the index: a filter visits the topics it can reach, not every
                // retained message, and stops when the budget is spent. Only topics the
                // session may read [MQTT-3.3.1-9 with the ACL's `read`].
                let (auth, session) = (&*self.auth, self.sessions.get(&sid));
                self.retained
                    .for_each_match_while(wanted.filter.as_str(), |topic, r| {
                        let readable =
                            session.is_some_and(|s| may(auth, s, Access::Read(topic.as_str())));
                        if readable && !r.is_expired(now) {
                            retained.push((topic.clone(), (r.received_at, r.id), entry));
                        }
                        retained.len() < budget
                    });
                // Oldest first; ids break ties (times are kept to the millisecond).
                retained[start..].sort_by_key(|&(_, at, _)| at);
            }
        }
        let ack = SubAck {
            packet_id: sub.packet_id,
            reasons,
            properties: Default::default(),
        };
        self.send(sid, Packet::SubAck(ack));
        self.emit_about(sid, |session| SessionEvent::Subscribed {
            client_id: client_id.to_string(),
            filters: sub
                .subscriptions
                .iter()
                .map(|w| w.filter.as_str().to_owned())
                .collect(),
            session,
        });
        // Bounded by the session's queue: what would overflow it is not read from the store
        // at all (counted as dropped), so one SUBSCRIBE of `#` costs at most a queue's worth
        // of reads and memory, whatever is retained.
        let (max_msgs, max_bytes) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        for (topic, _, entry) in retained {
            let full = self.sessions.get(&sid).is_none_or(|s| {
                let size = self.retained.get(topic.as_str()).map_or(0, |r| r.size);
                s.queue.len() >= max_msgs || s.queued_bytes + size > max_bytes
            });
            if full {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.stats.dropped += 1;
                }
                self.metrics.dropped(DropReason::QueueFull, 1);
                continue;
            }
            let Some(msg) = self.load_retained(topic.as_str()) else {
                continue;
            };
            let d = Delivery {
                seq: 0,
                stored: false,
                qos: msg.qos.min(entry.options.qos),
                // Sent because of a new subscription: RETAIN is 1 [MQTT-3.3.1-8].
                retain: true,
                sub_ids: entry.id.into_iter().collect(),
                msg,
                queued_at: now,
            };
            self.deliver(sid, d, now);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, sid: SessionId, unsub: Unsubscribe) {
        let mut reasons = Vec::with_capacity(unsub.filters.len());
        for f in &unsub.filters {
            if !self.topic_within_limits(f.as_str()) {
                // Never subscribed (refused at SUBSCRIBE): nothing to walk.
                reasons.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            let removed = self.subs.remove(sid, f);
            self.groups_changed |= is_shared(f);
            if let Some(s) = self.sessions.get_mut(&sid) {
                if s.subscriptions.remove(f).is_some() && s.persistent() {
                    let client = s.client_id.clone();
                    self.ops.push(Op::DeleteSubscription {
                        client,
                        filter: f.clone(),
                    });
                }
            }
            reasons.push(if removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        let ack = UnsubAck {
            packet_id: unsub.packet_id,
            reasons,
            properties: Default::default(),
        };
        self.send(sid, Packet::UnsubAck(ack));
        self.emit_about(sid, |session| SessionEvent::Unsubscribed {
            client_id: session.client_id.clone(),
            filters: unsub
                .filters
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect(),
            session,
        });
    }
}

/// Whether `f` is a shared subscription's filter (`$share/...`).
pub(super) fn is_shared(f: &protocol::TopicFilter) -> bool {
    f.as_str().starts_with("$share/")
}
