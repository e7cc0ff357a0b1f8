//! What brings the cluster's messages to this node's engine.
//!
//! Two readers per node:
//! - the message stream, through an ordered consumer (ephemeral, no acknowledgements, the
//!   client re-creates it past the last sequence seen after any gap), from the sequence
//!   after the one [`snapshot`] read: every node routes the stream in the stream's order;
//! - the QoS 0 subjects, through one core subscription.
//!
//! Each message goes to [`Broker::route`], which waits while the engine's channel is full:
//! a busy engine holds the stream reader back (JetStream keeps the messages) rather than
//! anything buffering without bound. A slow QoS 0 reader loses messages in the client's
//! bounded subscription buffer, as QoS 0 may.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use broker::{Broker, StoredMessage};
use futures_util::StreamExt;

use crate::envelope;
use crate::nats::{ClusterError, Nats};

/// What a node reads when it starts: the cluster's retained messages, and where its reading
/// of the message stream begins.
#[derive(Debug)]
pub struct Snapshot {
    /// The retained messages (the latest of each topic, deletions left out), ids from 1.
    pub retained: Vec<StoredMessage>,
    /// The first sequence of the message stream the node routes.
    pub next_sequence: u64,
}

/// Reads the retained messages and the message stream's end.
///
/// The end is read first: a retained message is acknowledged by the retained stream before
/// it is sent to the message stream, so one whose message-stream sequence is at or below
/// the end read is already in the retained stream, and a later one comes through the feed
/// (and replaces, in stream order, what the snapshot had for its topic).
pub async fn snapshot(nats: &Nats) -> Result<Snapshot, ClusterError> {
    let js_error = |e: &dyn std::fmt::Display| ClusterError::JetStream(e.to_string());
    let mut msgs = nats
        .js
        .get_stream(&nats.names.msgs)
        .await
        .map_err(|e| js_error(&e))?;
    let last = msgs
        .info()
        .await
        .map_err(|e| js_error(&e))?
        .state
        .last_sequence;
    let mut stream = nats
        .js
        .get_stream(&nats.names.retained)
        .await
        .map_err(|e| js_error(&e))?;
    let held = stream
        .info()
        .await
        .map_err(|e| js_error(&e))?
        .state
        .messages;
    let mut retained = Vec::new();
    if held > 0 {
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| js_error(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| js_error(&e))?;
        let read = async {
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| js_error(&e))?;
                let pending = m.info().map_err(|e| js_error(&e))?.pending;
                match envelope::decode(&m.payload, 0) {
                    Ok(msg) if !msg.payload.is_empty() => retained.push(msg),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(subject = %m.subject, error = %e, "retained message unreadable; skipped")
                    }
                }
                if pending == 0 {
                    break;
                }
            }
            Ok::<_, ClusterError>(())
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .map_err(|_| {
                ClusterError::JetStream("reading the retained stream timed out".into())
            })??;
    }
    Ok(Snapshot {
        retained,
        next_sequence: last + 1,
    })
}

/// Routes the cluster's messages into `broker` until it stops: the message stream from
/// `next_sequence`, and the QoS 0 subjects.
/// `position` is kept at the last sequence handed to the engine (claims wait on it).
pub async fn run(nats: Nats, broker: Broker, next_sequence: u64, position: Arc<AtomicU64>) {
    tokio::select! {
        () = stream(&nats, &broker, next_sequence, &position) => {}
        () = qos0(&nats, &broker) => {}
    }
}

/// How long a failed reader waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// How long the stream reader may bring nothing before it checks that it is not stuck.
const STALL: Duration = Duration::from_secs(2);

async fn stream(nats: &Nats, broker: &Broker, mut next: u64, position: &AtomicU64) {
    loop {
        match read_stream(nats, broker, &mut next, position).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, next, "message stream reader failed; reading again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Reads the message stream from `next`, moving `next` past each message routed. `Ok` when
/// the broker has stopped.
async fn read_stream(
    nats: &Nats,
    broker: &Broker,
    next: &mut u64,
    position: &AtomicU64,
) -> Result<(), String> {
    let stream = nats
        .js
        .get_stream(&nats.names.msgs)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: *next,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    // The stream may hold more than the consumer brings: after a NATS server dies, the
    // client can go on waiting on a consumer that is gone. Checked every `STALL` without a
    // message: if the stream has moved past what was routed, the consumer is made again.
    let mut check = tokio::time::interval(STALL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    let mut seen_at_check = *next;
    loop {
        let m = tokio::select! {
            m = messages.next() => m,
            _ = check.tick() => {
                if *next == seen_at_check {
                    if let Ok(stream) = nats.js.get_stream(&nats.names.msgs).await {
                        let last = stream.cached_info().state.last_sequence;
                        if last >= *next {
                            return Err(format!("stalled before sequence {} of {last}", *next));
                        }
                    }
                }
                seen_at_check = *next;
                continue;
            }
        };
        let Some(m) = m else { break };
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq < *next {
            continue;
        }
        *next = seq + 1;
        match envelope::decode(&m.payload, seq) {
            Ok(msg) => {
                if broker.route(msg).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::warn!(subject = %m.subject, seq, error = %e, "message unreadable; skipped")
            }
        }
        position.store(seq, Ordering::Release);
    }
    Err("the consumer ended".into())
}

async fn qos0(nats: &Nats, broker: &Broker) {
    loop {
        let subject = format!("{}.>", nats.names.qos0_subjects);
        let mut sub = match nats.client.subscribe(subject).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the QoS 0 subjects; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Some(m) = sub.next().await {
            match envelope::decode(&m.payload, 0) {
                Ok(msg) => {
                    if broker.route(msg).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(subject = %m.subject, error = %e, "QoS 0 message unreadable; skipped")
                }
            }
        }
    }
}
