//! The engine's store in cluster mode: routes messages through NATS, keeps the rest in the
//! node's own store.

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use broker::{Op, Recovered, Store, StoreError, StoredDelivery, StoredMessage};
use protocol::QoS;

use crate::envelope;
use crate::nats::Nats;
use crate::subject::subject_of;

/// A [`Store`] that sends each [`Op::Route`] to the cluster before the batch's
/// acknowledgements go out, and keeps everything else (this node's sessions, its copy of the
/// retained messages) in an inner store: the embedded one, or memory.
///
/// Its writes run on the engine's thread, which waits for JetStream's acknowledgements
/// (`block_on` on the bridge's runtime): the batch's PUBACKs wait for them in any case, and
/// one wait covers every message of the batch, sent back to back (group commit, as the
/// embedded store's sync).
#[derive(Debug)]
pub struct ClusterStore {
    inner: Box<dyn Store>,
    nats: Nats,
    runtime: tokio::runtime::Handle,
    /// The cluster's retained messages read at start, handed to the engine by `load`.
    retained: Vec<StoredMessage>,
}

impl ClusterStore {
    /// A store routing through `nats`, keeping the rest in `inner`; `retained` is what
    /// [`crate::feed::snapshot`] read. `runtime` runs the NATS calls (the engine's thread is
    /// not one of its workers).
    pub fn new(
        inner: Box<dyn Store>,
        nats: Nats,
        runtime: tokio::runtime::Handle,
        retained: Vec<StoredMessage>,
    ) -> ClusterStore {
        ClusterStore {
            inner,
            nats,
            runtime,
            retained,
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("cluster: {what}: {e}"))
}

/// Sends the batch's messages: retained ones to the retained stream first (acknowledged
/// before their message is in the message stream, so that a node starting between the two
/// finds it in one or the other: see [`crate::feed::snapshot`]), then every message to the
/// message stream (QoS 1/2, retained) or its core subject (QoS 0), and waits for every
/// acknowledgement.
async fn publish(nats: &Nats, msgs: &[&StoredMessage]) -> Result<(), StoreError> {
    let timeout = Duration::from_millis(nats.config.ack_timeout_ms);
    let names = &nats.names;
    let mut acks = Vec::with_capacity(msgs.len());
    let mut bodies = Vec::with_capacity(msgs.len());
    for m in msgs {
        bodies.push(envelope::encode(m).map_err(|e| failed("message", e))?);
    }
    for (m, body) in msgs.iter().zip(&bodies).filter(|(m, _)| m.retain) {
        let subject = subject_of(&names.retained_subjects, m.topic.as_str());
        let ack = nats.js.publish(subject, body.clone()).await;
        acks.push(ack.map_err(|e| failed("retained message", e))?);
    }
    settle(&mut acks, timeout).await?;
    for (m, body) in msgs.iter().zip(bodies) {
        if m.qos == QoS::AtMostOnce && !m.retain {
            let subject = subject_of(&names.qos0_subjects, m.topic.as_str());
            nats.client
                .publish(subject, body)
                .await
                .map_err(|e| failed("QoS 0 message", e))?;
        } else {
            let subject = subject_of(&names.msg_subjects, m.topic.as_str());
            let ack = nats.js.publish(subject, body).await;
            acks.push(ack.map_err(|e| failed("message", e))?);
        }
    }
    settle(&mut acks, timeout).await
}

/// Waits for every acknowledgement, all within `timeout`.
async fn settle(acks: &mut Vec<PublishAckFuture>, timeout: Duration) -> Result<(), StoreError> {
    let all = async {
        for ack in acks.drain(..) {
            ack.await.map_err(|e| failed("not stored", e))?;
        }
        Ok(())
    };
    tokio::time::timeout(timeout, all)
        .await
        .map_err(|_| failed("not stored", "no acknowledgement in time"))?
}

impl Store for ClusterStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        // Retained messages are the cluster's: what the local store kept of them (from before
        // a restart) is replaced by what the cluster holds now.
        let old = self.inner.load()?;
        let mut ops: Vec<Op> = old
            .retained
            .iter()
            .map(|r| Op::DeleteRetained(r.topic.clone()))
            .collect();
        let mut id = old.max_message_id.unwrap_or(0);
        for mut m in std::mem::take(&mut self.retained) {
            id += 1;
            m.id = id;
            ops.push(Op::PutRetained(Box::new(m)));
        }
        if ops.is_empty() {
            return Ok(old);
        }
        self.inner.apply(&ops)?;
        self.inner.load()
    }

    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        self.inner.load_queue(client_id)
    }

    fn load_retained(&mut self, topic: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.load_retained(topic)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let routed: Vec<&StoredMessage> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Route(m) => Some(&**m),
                _ => None,
            })
            .collect();
        if !routed.is_empty() {
            self.runtime.block_on(publish(&self.nats, &routed))?;
        }
        self.inner.apply(ops)
    }

    fn routes(&self) -> bool {
        true
    }

    fn set_metrics(&mut self, metrics: std::sync::Arc<broker::Metrics>) {
        self.inner.set_metrics(metrics);
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        self.inner.tick()
    }
}
