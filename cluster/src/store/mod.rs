//! The engine's store in cluster mode: routes messages through NATS, keeps each session it
//! owns as a record in the sessions bucket, and this node's working copy in memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::kv;
use broker::cluster::{Claim, Installed};
use broker::store::{DeliveryState, RecoveredSession};
use broker::{Op, Recovered, Store, StoreError, StoredDelivery, StoredMessage, SubEntry};
use futures_util::StreamExt;
use protocol::{QoS, TopicFilter};

use crate::envelope;
use crate::nats::Nats;
use crate::record::{key_of, DeliveryRecord, MetaRecord, SessionRecord, SubRecord};
use crate::subject::subject_of;

mod stream;

use stream::publish;

/// Ids of the retained messages read at start, above any stream sequence and below the
/// engine's own ids (QoS 0 messages, from `1 << 62`). A message id below it is the
/// message's stream sequence; one at or above is not in the stream, so not recorded.
const SNAPSHOT_IDS: u64 = 1 << 61;

/// What a claim read: the record as written for this node, and its revision.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) record: SessionRecord,
    pub(crate) revision: u64,
}

/// A session this node owns: its record as last written (plus this batch's changes), and
/// the bucket revision writes must match.
#[derive(Debug)]
struct Held {
    record: SessionRecord,
    revision: u64,
    dirty: bool,
    /// Its messages from this sequence on are still in the stream (its queue was full):
    /// its record's `upto` stays below.
    spilled_from: Option<u64>,
}

/// A [`Store`] for a node of a cluster. See the [crate docs](crate).
///
/// Its writes run on the engine's thread, which waits for JetStream's acknowledgements
/// (`block_on` on the bridge's runtime): the batch's acknowledgements wait for them in any
/// case, and one wait covers every message and record of the batch, sent back to back
/// (group commit, as the embedded store's sync).
#[derive(Debug)]
pub struct ClusterStore {
    /// This node's working copy: the queued messages of the sessions it owns, its copy of
    /// the retained messages.
    inner: Box<dyn Store>,
    nats: Nats,
    runtime: tokio::runtime::Handle,
    /// The cluster's retained messages read at start, handed to the engine by `load`.
    retained: Vec<StoredMessage>,
    /// The sessions this node owns.
    held: HashMap<Arc<str>, Held>,
    /// Sessions whose record another node took (a write's revision did not match).
    lost: Vec<Arc<str>>,
    /// The last stream sequence the engine routed (or the stream's end at start).
    routed: u64,
    /// The shared groups this node has members in (read by `groups::run`).
    groups: tokio::sync::watch::Sender<(Vec<crate::groups::Group>, u64)>,
    /// The broker's `max_queued_messages`: a session restored here gets at most this many
    /// queued, the rest read back from the stream as its queue drains.
    max_queued: usize,
    /// Records of sessions that ended in the current batch (revision, epoch): deleted at
    /// its end, unless the same client id starts a session again in the batch (clean start
    /// on a stored session), whose record then replaces it in one compare-and-set write.
    ended: Vec<(Arc<str>, u64, u64)>,
}

impl ClusterStore {
    /// A store routing through `nats`, keeping its working copy in `inner`; `retained` and
    /// `next_sequence` are what [`crate::feed::snapshot`] read. `runtime` runs the NATS
    /// calls (the engine's thread is not one of its workers).
    pub fn new(
        inner: Box<dyn Store>,
        nats: Nats,
        runtime: tokio::runtime::Handle,
        retained: Vec<StoredMessage>,
        next_sequence: u64,
        max_queued: usize,
    ) -> ClusterStore {
        ClusterStore {
            inner,
            nats,
            runtime,
            retained,
            held: HashMap::new(),
            lost: Vec::new(),
            routed: next_sequence.saturating_sub(1),
            groups: tokio::sync::watch::channel((Vec::new(), 0)).0,
            max_queued,
            ended: Vec::new(),
        }
    }

    /// The shared groups this node has members in, as the engine announces them, with the
    /// stream sequence routed then (a new group's readers start after it).
    pub fn groups(&self) -> tokio::sync::watch::Receiver<(Vec<crate::groups::Group>, u64)> {
        self.groups.subscribe()
    }

    fn held_mut(&mut self, client: &Arc<str>) -> &mut Held {
        let node = &self.nats.config.node;
        let ended = &mut self.ended;
        let held = self.held.entry(client.clone()).or_insert_with(|| {
            // A session that ended in this batch and starts again: its record is
            // replaced (same revision), not deleted and made anew.
            let (revision, epoch) = match ended.iter().position(|(c, _, _)| c == client) {
                Some(at) => {
                    let (_, revision, epoch) = ended.swap_remove(at);
                    (revision, epoch)
                }
                None => (0, 1),
            };
            Held {
                record: SessionRecord {
                    node: node.clone(),
                    epoch,
                    ..SessionRecord::default()
                },
                revision,
                dirty: true,
                spilled_from: None,
            }
        });
        held.dirty = true;
        held
    }

    /// Keeps one change in the record of the session it is about.
    fn record(&mut self, op: &Op) {
        match op {
            Op::PutSession(meta) => {
                self.held_mut(&meta.client_id).record.meta = Some(MetaRecord::of(meta));
            }
            Op::PutSubscription {
                client,
                filter,
                entry,
            } => {
                let since = self.routed;
                let subs = &mut self.held_mut(client).record.subs;
                let sub = SubRecord::of(filter, entry, since);
                match subs.iter_mut().find(|s| s.filter == filter.as_str()) {
                    Some(s) => *s = sub,
                    None => subs.push(sub),
                }
            }
            Op::DeleteSubscription { client, filter } => {
                self.held_mut(client)
                    .record
                    .subs
                    .retain(|s| s.filter != filter.as_str());
            }
            Op::PutDelivery { client, delivery } => {
                if delivery.msg.id >= SNAPSHOT_IDS {
                    // Not in the stream: QoS 0 is not kept for another node.
                    return;
                }
                let d = DeliveryRecord::of(delivery);
                let list = &mut self.held_mut(client).record.deliveries;
                match list.iter_mut().rev().find(|x| x.seq == d.seq) {
                    Some(x) => *x = d,
                    None => {
                        let at = list.partition_point(|x| x.seq < d.seq);
                        list.insert(at, d);
                    }
                }
            }
            Op::SetDeliveryState { client, seq, state } => {
                let list = &mut self.held_mut(client).record.deliveries;
                if let Some(x) = list.iter_mut().find(|x| x.seq == *seq) {
                    x.set_state(*state);
                }
            }
            Op::DeleteDelivery { client, seq } => {
                let list = &mut self.held_mut(client).record.deliveries;
                if let Some(at) = list.iter().position(|x| x.seq == *seq) {
                    list.remove(at);
                }
            }
            Op::PutInboundQos2 { client, packet_id } => {
                let ids = &mut self.held_mut(client).record.inbound_qos2;
                if !ids.contains(packet_id) {
                    ids.push(*packet_id);
                }
            }
            Op::DeleteInboundQos2 { client, packet_id } => {
                self.held_mut(client)
                    .record
                    .inbound_qos2
                    .retain(|id| id != packet_id);
            }
            Op::Routed(seq) => self.routed = self.routed.max(*seq),
            Op::Spilled { client, from } => self.held_mut(client).spilled_from = *from,
            _ => {}
        }
    }

    /// Writes the records of the batch: changed ones (compare-and-set on their revision),
    /// deleted ones. A record another node took is lost to this node, not a failure.
    fn write_records(
        &mut self,
        deleted: Vec<(Arc<str>, u64)>,
        released: &[Arc<str>],
    ) -> Result<(), StoreError> {
        let upto = self.routed;
        let mut writes = Vec::new();
        let mut deleted = deleted;
        // A record NATS cannot carry (a session with very many or very long subscriptions)
        // would fail every batch after it: that session is ended instead (its record
        // deleted, its connection closed), and the rest of the bridge goes on.
        let limit = self.nats.max_payload().saturating_sub(RECORD_ROOM);
        let mut too_large = Vec::new();
        for (client, held) in self.held.iter_mut().filter(|(_, h)| h.dirty) {
            held.record.upto = match held.spilled_from {
                Some(from) => upto.min(from.saturating_sub(1)),
                None => upto,
            };
            let body = serde_json::to_vec(&held.record).map_err(|e| failed("session record", e))?;
            if body.len() > limit {
                tracing::error!(client_id = %client, bytes = body.len(), limit, "session record too large for NATS; the session is ended");
                too_large.push((client.clone(), held.revision));
                continue;
            }
            writes.push((client.clone(), held.revision, body));
        }
        for (client, revision) in too_large {
            self.held.remove(&client);
            if revision != 0 {
                deleted.push((client.clone(), revision));
            }
            self.lost.push(client);
        }
        // Released sessions are written (above) for the last time, and forgotten.
        for client in released {
            self.held.remove(client);
        }
        if writes.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        let kv = &self.nats.sessions;
        let results = self.runtime.block_on(async {
            let puts = writes.iter().map(|(client, revision, body)| async move {
                let key = key_of(client);
                let body = bytes::Bytes::from(body.clone());
                let result = if *revision == 0 {
                    kv.create(&key, body).await.map_err(|e| {
                        let taken = e.kind() == kv::CreateErrorKind::AlreadyExists;
                        (taken, e.to_string())
                    })
                } else {
                    kv.update(&key, body, *revision).await.map_err(|e| {
                        let taken = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                        (taken, e.to_string())
                    })
                };
                (client.clone(), result)
            });
            let deletes = deleted.iter().map(|(client, revision)| async move {
                let key = key_of(client);
                // A record that changed since is another node's now: left alone.
                let _ = kv.delete_expect_revision(&key, Some(*revision)).await;
            });
            let (puts, _) = tokio::join!(
                futures_util::future::join_all(puts),
                futures_util::future::join_all(deletes)
            );
            puts
        });
        let mut failure = None;
        for (client, result) in results {
            match result {
                Ok(revision) => {
                    if let Some(h) = self.held.get_mut(&client) {
                        h.revision = revision;
                        h.dirty = false;
                    }
                }
                Err((true, e)) => {
                    tracing::info!(client_id = %client, node = %self.nats.config.node, error = %e, "session record taken by another node");
                    self.held.remove(&client);
                    self.lost.push(client);
                }
                Err((false, e)) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(failed("session record not stored", e)),
            None => Ok(()),
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("cluster: {what}: {e}"))
}

/// Bytes of a NATS message kept free around a session record (the KV headers).
const RECORD_ROOM: usize = 1024;

impl Store for ClusterStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        // Sessions are claimed one by one as their clients come back; retained messages
        // are the cluster's, read at start.
        let mut ops = Vec::new();
        for (i, mut m) in std::mem::take(&mut self.retained).into_iter().enumerate() {
            m.id = SNAPSHOT_IDS + i as u64;
            ops.push(Op::PutRetained(Box::new(m)));
        }
        if !ops.is_empty() {
            self.inner.apply(&ops)?;
        }
        self.inner.load()
    }

    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        self.inner.load_queue(client_id)
    }

    fn load_retained(&mut self, topic: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.load_retained(topic)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let mut routed = Vec::new();
        let mut released = Vec::new();
        for op in ops {
            match op {
                Op::Route(m) => routed.push(&**m),
                Op::DeleteSession(client) => {
                    if let Some(h) = self.held.remove(client) {
                        if h.revision != 0 {
                            self.ended
                                .push((client.clone(), h.revision, h.record.epoch));
                        }
                    }
                }
                Op::Released(client) => released.push(client.clone()),
                Op::SharedGroups(groups) => {
                    self.groups.send_replace((groups.clone(), self.routed));
                }
                op => self.record(op),
            }
        }
        let deleted: Vec<(Arc<str>, u64)> = self
            .ended
            .drain(..)
            .map(|(client, revision, _)| (client, revision))
            .collect();
        // This node's working copy follows the engine whatever NATS says: the engine does
        // not undo a failed batch (it closes the batch's connections instead).
        self.inner.apply(ops)?;
        if !routed.is_empty() {
            self.runtime.block_on(publish(&self.nats, &routed))?;
        }
        self.write_records(deleted, &released)?;
        let mut forget: Vec<Op> = released.into_iter().map(Op::DeleteSession).collect();
        forget.extend(self.lost.iter().cloned().map(Op::DeleteSession));
        if !forget.is_empty() {
            self.inner.apply(&forget)?;
        }
        Ok(())
    }

    fn routes(&self) -> bool {
        true
    }

    fn install(
        &mut self,
        client_id: &str,
        claim: Claim,
        routed_upto: u64,
    ) -> Result<Installed, StoreError> {
        let claimed = claim
            .0
            .downcast::<Claimed>()
            .map_err(|_| failed("claim", "not this store's"))?;
        let Claimed { record, revision } = *claimed;
        let client: Arc<str> = Arc::from(client_id);
        // Held here, and still the session the record describes (not a copy another node
        // took meanwhile without this one hearing of it).
        if record.node == self.nats.config.node
            && self
                .held
                .get(&client)
                .is_some_and(|h| h.record.epoch == record.epoch)
        {
            return Ok(Installed::Held);
        }
        // Whatever this node still had of it is older than the record.
        if self.held.remove(&client).is_some() {
            self.inner.apply(&[Op::DeleteSession(client.clone())])?;
        }
        // A claim of a record this node wrote is not written again (this node may hold the
        // session and write it meanwhile). What it read may be older than what this node
        // did since (the session ended and its record was deleted, in a batch written before
        // this one): read again, so that the next write expects the right revision.
        let (record, revision) = if record.node == self.nats.config.node {
            let key = key_of(client_id);
            let entry = self
                .runtime
                .block_on(self.nats.sessions.entry(&key))
                .map_err(|e| failed("session record", e))?;
            // A read answered by a replica that lags can be older than the claim's own
            // (revisions only grow): the claim's then stands.
            let entry = entry.filter(|e| e.revision >= revision);
            match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let now: SessionRecord = serde_json::from_slice(&e.value)
                        .map_err(|e| failed("session record", e))?;
                    if now.node != self.nats.config.node {
                        // Another node took it between the claim and now.
                        return Err(failed("session record", "taken by another node"));
                    }
                    (now, e.revision)
                }
                Some(e) => (
                    SessionRecord {
                        node: record.node,
                        epoch: record.epoch,
                        ..SessionRecord::default()
                    },
                    e.revision,
                ),
                None => (record, revision),
            }
        } else {
            (record, revision)
        };
        let routed = routed_upto.max(self.routed);
        let Some(meta) = &record.meta else {
            self.held.insert(
                client,
                Held {
                    record: SessionRecord {
                        node: record.node,
                        epoch: record.epoch,
                        ..SessionRecord::default()
                    },
                    revision,
                    dirty: false,
                    spilled_from: None,
                },
            );
            return Ok(Installed::Fresh);
        };
        let bad = |e: crate::record::RecordError| failed("session record", e);
        let meta = meta.meta(client.clone()).map_err(bad)?;
        let mut subs = Vec::with_capacity(record.subs.len());
        for s in &record.subs {
            let (filter, entry) = s.entry().map_err(bad)?;
            subs.push((filter, entry, s.since));
        }
        let runtime = self.runtime.clone();
        let listed = runtime.block_on(async {
            let mut listed = Vec::with_capacity(record.deliveries.len());
            for d in &record.deliveries {
                if let Some(m) = self.fetch(d.msg).await? {
                    listed.push((d, Arc::new(m)));
                }
            }
            Ok::<_, StoreError>(listed)
        })?;
        let mut deliveries = Vec::with_capacity(listed.len());
        for (d, m) in listed {
            deliveries.push(d.delivery(m).map_err(bad)?);
        }
        let mut next_seq = deliveries.last().map_or(0, |d| d.seq + 1);
        // What came after the record, within the queue's bound: the rest stays in the
        // stream, read back as the queue drains (the engine is given the mark).
        let queued = deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Queued)
            .count();
        let room = self.max_queued.saturating_sub(queued);
        let listed_ids: HashSet<u64> = deliveries.iter().map(|d| d.msg.id).collect();
        let (later, spilled_from) = if routed > record.upto {
            runtime.block_on(self.read_back(
                client_id,
                &subs,
                &listed_ids,
                record.upto + 1,
                routed,
                room,
            ))?
        } else {
            (Vec::new(), None)
        };
        for mut d in later {
            d.seq = next_seq;
            next_seq += 1;
            deliveries.push(d);
        }
        let mut ops = vec![Op::PutSession(Box::new(meta.clone()))];
        for d in &deliveries {
            ops.push(Op::PutDelivery {
                client: client.clone(),
                delivery: Box::new(d.clone()),
            });
        }
        self.inner.apply(&ops)?;
        let queued: Vec<&StoredDelivery> = deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Queued)
            .collect();
        let queued = (
            queued.len(),
            queued.iter().map(|d| d.msg.payload.len()).sum(),
        );
        let inflight = deliveries
            .iter()
            .filter(|d| d.state != DeliveryState::Queued)
            .cloned()
            .collect();
        let held = Held {
            record: SessionRecord {
                deliveries: deliveries.iter().map(DeliveryRecord::of).collect(),
                upto: routed,
                ..record.clone()
            },
            revision,
            dirty: true,
            spilled_from,
        };
        self.held.insert(client, held);
        Ok(Installed::Restored(
            Box::new(RecoveredSession {
                meta,
                subscriptions: subs.into_iter().map(|(f, e, _)| (f, e)).collect(),
                inflight,
                inbound_qos2: record.inbound_qos2,
                queued,
                max_seq: next_seq.checked_sub(1),
            }),
            spilled_from,
        ))
    }

    fn refill(
        &mut self,
        client_id: &str,
        subscriptions: &[(TopicFilter, SubEntry)],
        from: u64,
        upto: u64,
        max: usize,
    ) -> Result<(Vec<StoredDelivery>, Option<u64>), StoreError> {
        if from > upto {
            return Ok((Vec::new(), None));
        }
        // A subscription matches only what came after it (its `since`, when recorded).
        let since = |f: &TopicFilter| {
            self.held
                .get(client_id)
                .and_then(|h| h.record.subs.iter().find(|s| s.filter == f.as_str()))
                .map_or(0, |s| s.since)
        };
        let subs: Vec<(TopicFilter, SubEntry, u64)> = subscriptions
            .iter()
            .map(|(f, e)| (f.clone(), *e, since(f)))
            .collect();
        let runtime = self.runtime.clone();
        runtime.block_on(self.read_back(client_id, &subs, &HashSet::new(), from, upto, max))
    }

    fn take_lost(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.lost)
    }

    fn set_metrics(&mut self, metrics: Arc<broker::Metrics>) {
        self.inner.set_metrics(metrics);
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        self.inner.tick()
    }
}
