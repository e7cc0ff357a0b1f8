//! [`MemoryStore`]: the store of `--data none` and of unit tests.
//!
//! # Two uses, two amounts kept
//! As the model the SQLite store is tested against ([`MemoryStore::new`]) it keeps
//! everything a restart would read back. As the store of `--data none`
//! ([`MemoryStore::without_restart`]) there is no restart: the engine owns the live state of
//! every session (its fields, subscriptions, QoS 2 ids) and reads back from the store only
//! the queued messages of a returning client and retained payloads, so that is all it
//! keeps. A copy of every session's fields and subscriptions was 1.46 KB of the 2.5 KB an
//! idle offline session with one subscription cost (a counting allocator's figure: a
//! 500-byte `SessionMeta` and a B-tree node per session's subscriptions).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use protocol::{QoS, TopicFilter, TopicName};

use super::{
    DeliveryState, Op, Recovered, RecoveredSession, RetainedMeta, SessionMeta, Store, StoreError,
    StoredDelivery, StoredMessage,
};
use crate::subscriptions::SubEntry;

/// Keeps everything in memory: nothing survives the process, which is its purpose.
///
/// It behaves as [`super::SqliteStore`] does, so the engine cannot tell them apart: a batch
/// applies whole or not at all, a batch that would leave rows of a session that is not
/// stored (a subscription, delivery or QoS 2 id without its `PutSession`) is refused, as the
/// database refuses it (its foreign keys, and the write path's check for queue segments),
/// and a message queued for many sessions is held once,
/// counted by reference. It is bounded only by what the engine puts in it (the engine
/// enforces the queue limits). Made [`without_restart`](MemoryStore::without_restart), it
/// keeps only what a running engine reads back (see the [module docs](self)).
#[derive(Debug)]
pub struct MemoryStore {
    /// Keeps what only [`Store::load`] reads: session fields, subscriptions, QoS 2 ids.
    restartable: bool,
    /// The client ids of the stored sessions (kept either way: the batch check needs them).
    sessions: HashSet<Arc<str>>,
    /// The rows of sessions, by client id. An entry is never empty: one left with nothing
    /// is removed.
    clients: BTreeMap<Arc<str>, Client>,
    /// The messages of the deliveries, one copy each, by id.
    messages: HashMap<u64, Shared>,
    /// Retained messages by topic.
    retained: BTreeMap<TopicName, StoredMessage>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// A message and how many deliveries hold it (at least one: it goes with the last).
#[derive(Debug)]
struct Shared {
    msg: Arc<StoredMessage>,
    refs: usize,
}

/// One client id's rows.
#[derive(Debug, Default)]
struct Client {
    /// The session's fields: kept only by a restartable store, and `None` there only in the
    /// middle of a batch that stores rows before the session. Boxed: a store without
    /// restart holds entries (for queued messages) without it.
    meta: Option<Box<SessionMeta>>,
    /// Kept only by a restartable store.
    subscriptions: BTreeMap<TopicFilter, SubEntry>,
    /// Queued and in-flight deliveries by seq.
    deliveries: BTreeMap<u64, Held>,
    /// Kept only by a restartable store.
    inbound_qos2: BTreeSet<u16>,
}

impl Client {
    fn is_empty(&self) -> bool {
        self.meta.is_none()
            && self.subscriptions.is_empty()
            && self.deliveries.is_empty()
            && self.inbound_qos2.is_empty()
    }
}

/// A delivery: its own fields, and its message shared with the other deliveries of it.
#[derive(Debug)]
struct Held {
    state: DeliveryState,
    qos: QoS,
    retain: bool,
    sub_ids: Vec<u32>,
    msg: Arc<StoredMessage>,
}

impl Held {
    fn to_delivery(&self, seq: u64) -> StoredDelivery {
        StoredDelivery {
            seq,
            state: self.state,
            qos: self.qos,
            retain: self.retain,
            sub_ids: self.sub_ids.clone(),
            msg: self.msg.clone(),
        }
    }
}

impl MemoryStore {
    /// An empty store that keeps everything a restart reads back ([`Store::load`]), as the
    /// database does: the model the SQLite store is tested against.
    pub fn new() -> Self {
        MemoryStore {
            restartable: true,
            sessions: HashSet::new(),
            clients: BTreeMap::new(),
            messages: HashMap::new(),
            retained: BTreeMap::new(),
        }
    }

    /// An empty store for a process that never restarts from it (`--data none`): it keeps
    /// the queued and in-flight deliveries, the retained messages and which sessions exist,
    /// and drops what only [`Store::load`] would read, so `load` returns no sessions.
    pub fn without_restart() -> Self {
        MemoryStore {
            restartable: false,
            ..Self::new()
        }
    }

    /// Refuses a batch that would leave rows of a session that is not stored, before
    /// anything of it is applied (the rule the database checks at commit).
    fn check(&self, ops: &[Op]) -> Result<(), StoreError> {
        // Whether each session touched by the batch exists at this point of the batch.
        let mut exists: HashMap<&str, bool> = HashMap::new();
        // Sessions that got a row while they did not exist, and have not been deleted since.
        let mut orphans: BTreeSet<&str> = BTreeSet::new();
        for op in ops {
            let client: &str = match op {
                Op::PutSession(meta) => {
                    exists.insert(&meta.client_id, true);
                    continue;
                }
                Op::DeleteSession(client) => {
                    exists.insert(client, false);
                    orphans.remove(&**client);
                    continue;
                }
                Op::PutSubscription { client, .. }
                | Op::PutDelivery { client, .. }
                | Op::PutInboundQos2 { client, .. } => client,
                Op::DeleteSubscription { .. }
                | Op::SetDeliveryState { .. }
                | Op::DeleteDelivery { .. }
                | Op::DeleteInboundQos2 { .. }
                | Op::PutRetained(_)
                | Op::DeleteRetained(_)
                | Op::Route(_)
                | Op::Routed(_)
                | Op::Released(_)
                | Op::SharedGroups(_)
                | Op::Spilled { .. } => continue,
            };
            let now = *exists
                .entry(client)
                .or_insert_with(|| self.sessions.contains(client));
            if !now {
                orphans.insert(client);
            }
        }
        match orphans
            .into_iter()
            .find(|c| !exists.get(c).copied().unwrap_or(false))
        {
            Some(client) => Err(StoreError::Database(format!(
                "a batch stores rows of session {client:?}, which is not stored"
            ))),
            None => Ok(()),
        }
    }

    /// The shared copy of a message, stored if its id is not, with one more reference.
    fn acquire(&mut self, msg: &Arc<StoredMessage>) -> Arc<StoredMessage> {
        let shared = self.messages.entry(msg.id).or_insert_with(|| Shared {
            msg: msg.clone(),
            refs: 0,
        });
        shared.refs += 1;
        shared.msg.clone()
    }

    /// Drops a delivery's reference to its message; the last one drops the message.
    fn release(&mut self, id: u64) {
        if let Some(shared) = self.messages.get_mut(&id) {
            shared.refs = shared.refs.saturating_sub(1);
            if shared.refs == 0 {
                self.messages.remove(&id);
            }
        }
    }

    /// Removes `client`'s entry if nothing is left in it (a store without restart holds
    /// one only while the session has deliveries).
    fn remove_if_empty(&mut self, client: &str) {
        if self.clients.get(client).is_some_and(Client::is_empty) {
            self.clients.remove(client);
        }
    }

    fn apply_one(&mut self, op: &Op) {
        match op {
            Op::PutSession(meta) => {
                self.sessions.insert(meta.client_id.clone());
                if self.restartable {
                    self.clients.entry(meta.client_id.clone()).or_default().meta =
                        Some(meta.clone());
                }
            }
            Op::DeleteSession(client) => {
                self.sessions.remove(client);
                if let Some(c) = self.clients.remove(client) {
                    for held in c.deliveries.values() {
                        self.release(held.msg.id);
                    }
                }
            }
            Op::PutSubscription { .. }
            | Op::DeleteSubscription { .. }
            | Op::PutInboundQos2 { .. }
            | Op::DeleteInboundQos2 { .. }
                if !self.restartable => {}
            Op::PutSubscription {
                client,
                filter,
                entry,
            } => {
                self.clients
                    .entry(client.clone())
                    .or_default()
                    .subscriptions
                    .insert(filter.clone(), *entry);
            }
            Op::DeleteSubscription { client, filter } => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.subscriptions.remove(filter);
                }
                self.remove_if_empty(client);
            }
            Op::PutDelivery { client, delivery } => {
                let d = &**delivery;
                let held = Held {
                    state: d.state,
                    qos: d.qos,
                    retain: d.retain,
                    sub_ids: d.sub_ids.clone(),
                    msg: self.acquire(&d.msg),
                };
                let replaced = self
                    .clients
                    .entry(client.clone())
                    .or_default()
                    .deliveries
                    .insert(d.seq, held);
                if let Some(old) = replaced {
                    self.release(old.msg.id);
                }
            }
            Op::SetDeliveryState { client, seq, state } => {
                if let Some(d) = self
                    .clients
                    .get_mut(client)
                    .and_then(|c| c.deliveries.get_mut(seq))
                {
                    d.state = *state;
                }
            }
            Op::DeleteDelivery { client, seq } => {
                let removed = self
                    .clients
                    .get_mut(client)
                    .and_then(|c| c.deliveries.remove(seq));
                if let Some(old) = removed {
                    self.release(old.msg.id);
                }
                self.remove_if_empty(client);
            }
            Op::PutInboundQos2 { client, packet_id } => {
                self.clients
                    .entry(client.clone())
                    .or_default()
                    .inbound_qos2
                    .insert(*packet_id);
            }
            Op::DeleteInboundQos2 { client, packet_id } => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.inbound_qos2.remove(packet_id);
                }
                self.remove_if_empty(client);
            }
            Op::PutRetained(msg) => {
                self.retained.insert(msg.topic.clone(), (**msg).clone());
            }
            Op::DeleteRetained(topic) => {
                self.retained.remove(topic);
            }
            // Not a change of this store's state (see `Store::routes`).
            Op::Route(_)
            | Op::Routed(_)
            | Op::Released(_)
            | Op::SharedGroups(_)
            | Op::Spilled { .. } => {}
        }
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        let sessions = self
            .clients
            .values()
            .filter_map(|c| {
                let meta = *c.meta.clone()?;
                let mut queued = (0, 0);
                let mut inflight = Vec::new();
                for (seq, d) in &c.deliveries {
                    if d.state == DeliveryState::Queued {
                        queued.0 += 1;
                        queued.1 += d.msg.payload.len();
                    } else {
                        inflight.push(d.to_delivery(*seq));
                    }
                }
                Some(RecoveredSession {
                    meta,
                    subscriptions: c
                        .subscriptions
                        .iter()
                        .map(|(f, e)| (f.clone(), *e))
                        .collect(),
                    inflight,
                    inbound_qos2: c.inbound_qos2.iter().copied().collect(),
                    queued,
                    max_seq: c.deliveries.keys().next_back().copied(),
                })
            })
            .collect();
        let max_message_id = self
            .messages
            .keys()
            .copied()
            .chain(self.retained.values().map(|m| m.id))
            .max();
        Ok(Recovered {
            sessions,
            retained: self.retained.values().map(RetainedMeta::of).collect(),
            max_message_id,
        })
    }

    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        Ok(self
            .clients
            .get(client_id)
            .map(|c| {
                c.deliveries
                    .iter()
                    .filter(|(_, d)| d.state == DeliveryState::Queued)
                    .map(|(seq, d)| d.to_delivery(*seq))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn load_retained(&mut self, topic: &str) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self.retained.get(topic).cloned())
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        self.check(ops)?;
        for op in ops {
            self.apply_one(op);
        }
        Ok(())
    }
}

/// The test body both stores run, so they are held to the same behaviour.
#[cfg(test)]
pub(super) mod tests;
