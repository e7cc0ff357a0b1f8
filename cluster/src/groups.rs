//! Shared subscriptions across nodes: each message of a group goes to one member of it in
//! the whole cluster.
//!
//! The feed routes stream messages to ordinary subscriptions only. A node with members of
//! group `g` on filter `f` (the engine announces its groups, `Op::SharedGroups`) takes the
//! group's messages from the cluster as one of its competing consumers:
//! - QoS 1/2 and retained: a durable pull consumer of the message stream per group and
//!   subject of the filter (`a/#` is two subjects; nats-server 2.9 has no multi-filter
//!   consumers), named from a hash of both, shared by every node with members. JetStream
//!   gives each message to one puller; the node routes it to one of its members and acks it
//!   once the delivery is written, or NAKs it (redelivered elsewhere after a second) if it has
//!   no member any more. A consumer made by the first node with members starts after what
//!   that node had routed when the group was made, so nothing published after the SUBACK is
//!   missed. A consumer no node pulls from for an hour is removed by NATS.
//! - QoS 0: a core queue subscription per group and subject: NATS gives each message to one
//!   subscriber of the queue group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::AckKind;
use broker::Broker;
use futures_util::StreamExt;
use protocol::TopicFilter;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::envelope;
use crate::nats::Nats;
use crate::subject::subjects_of_filter;

/// A group: its name and its filter (without `$share/<name>/`).
pub type Group = (Arc<str>, String);

/// How long a message NAKed by a node without members waits before it is offered again.
const NAK_DELAY: Duration = Duration::from_secs(1);

/// A name NATS accepts for a consumer or queue group, the same on every node: FNV-1a of
/// the namespace, group and subject.
fn stable_name(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("share_{h:016x}")
}

/// Keeps one set of readers per group this node has members in, until the broker stops.
pub async fn run(nats: Nats, broker: Broker, mut groups: watch::Receiver<(Vec<Group>, u64)>) {
    let mut running: HashMap<Group, JoinSet<()>> = HashMap::new();
    loop {
        // A new group's consumer (if no node made it yet) starts after what this node had
        // routed when the group was made here, so a message published after the SUBACK
        // cannot be missed.
        let (want, routed) = groups.borrow_and_update().clone();
        running.retain(|g, _| want.contains(g));
        for g in want {
            if running.contains_key(&g) {
                continue;
            }
            let Ok(filter) = TopicFilter::new(&g.1) else {
                continue;
            };
            let mut tasks = JoinSet::new();
            for subject in subjects_of_filter(&nats.names.msg_subjects, &filter) {
                tasks.spawn(pull(
                    nats.clone(),
                    broker.clone(),
                    g.0.clone(),
                    subject,
                    routed + 1,
                ));
            }
            for subject in subjects_of_filter(&nats.names.qos0_subjects, &filter) {
                tasks.spawn(qos0(nats.clone(), broker.clone(), g.0.clone(), subject));
            }
            running.insert(g, tasks);
        }
        if groups.changed().await.is_err() {
            return;
        }
    }
}

/// Pulls the group's messages of one subject from its durable consumer, for ever.
async fn pull(nats: Nats, broker: Broker, group: Arc<str>, subject: String, start: u64) {
    let name = stable_name(&[&nats.config.namespace, &group, &subject]);
    loop {
        if let Err(e) = pull_once(&nats, &broker, &group, &subject, &name, start).await {
            tracing::warn!(%group, %subject, error = %e, "shared group reader failed; reading again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pull_once(
    nats: &Nats,
    broker: &Broker,
    group: &Arc<str>,
    subject: &str,
    name: &str,
    start: u64,
) -> Result<(), String> {
    let stream = nats
        .js
        .get_stream_no_info(&nats.names.msgs)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1000,
                inactive_threshold: Duration::from_secs(3600),
                num_replicas: nats.config.replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        let msg = match envelope::decode(&m.payload, seq) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(seq, error = %e, "shared message unreadable; dropped");
                let _ = m.ack_with(AckKind::Term).await;
                continue;
            }
        };
        // `true`: the group has members here (the message went to one, or none of them may
        // read its topic, as on one node); `false`: none here, another node may take it.
        match broker.route_shared(group.clone(), msg).await {
            Ok(true) => m.ack().await.map_err(|e| e.to_string())?,
            Ok(false) => m
                .ack_with(AckKind::Nak(Some(NAK_DELAY)))
                .await
                .map_err(|e| e.to_string())?,
            Err(_) => return Ok(()),
        }
    }
    Err("the consumer ended".into())
}

/// The group's QoS 0 messages of one subject, through a queue subscription.
async fn qos0(nats: Nats, broker: Broker, group: Arc<str>, subject: String) {
    let queue = stable_name(&[&nats.config.namespace, &group, &subject]);
    loop {
        match nats
            .client
            .queue_subscribe(subject.clone(), queue.clone())
            .await
        {
            Ok(mut sub) => {
                while let Some(m) = sub.next().await {
                    if let Ok(msg) = envelope::decode(&m.payload, 0) {
                        if broker.route_shared(group.clone(), msg).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%group, %subject, error = %e, "shared group QoS 0 subscription failed")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
