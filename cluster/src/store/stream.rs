//! Reading and writing the message stream for the store: a batch's messages out, a
//! session's messages back.

use super::*;

impl ClusterStore {
    /// The message of stream sequence `seq`, if the stream still has it.
    pub(super) async fn fetch(&self, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let stream = self
            .nats
            .js
            .get_stream_no_info(&self.nats.names.msgs)
            .await
            .map_err(|e| failed("message stream", e))?;
        match stream.get_raw_message(seq).await {
            Ok(m) => Ok(envelope::decode(&m.payload, seq).ok()),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(failed("message", e)),
        }
    }

    /// Up to `max` deliveries, in stream order, of the stream's messages of sequences
    /// `from..=upto` to the session of `client_id` with `subs` (each with its `since`),
    /// leaving out the messages of `skip`; and the sequence to go on from if more may
    /// remain. Reads the stream once, keeping only what matches.
    pub(super) async fn read_back(
        &self,
        client_id: &str,
        subs: &[(TopicFilter, SubEntry, u64)],
        skip: &HashSet<u64>,
        from: u64,
        upto: u64,
        max: usize,
    ) -> Result<(Vec<StoredDelivery>, Option<u64>), StoreError> {
        if from > upto || max == 0 {
            return Ok((Vec::new(), (from <= upto).then_some(from)));
        }
        let stream = self
            .nats
            .js
            .get_stream_no_info(&self.nats.names.msgs)
            .await
            .map_err(|e| failed("message stream", e))?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| failed("read back", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| failed("read back", e))?;
        let mut out = Vec::new();
        let now = SystemTime::now();
        let read = async {
            while let Some(m) = messages.next().await {
                let m = m.map_err(|e| failed("read back", e))?;
                let info = m.info().map_err(|e| failed("read back", e))?;
                let seq = info.stream_sequence;
                if seq > upto {
                    return Ok(None);
                }
                if !skip.contains(&seq) {
                    if let Ok(msg) = envelope::decode(&m.payload, seq) {
                        let msg = Arc::new(msg);
                        if let Some(d) = delivery_for(client_id, subs, &msg, 0, now) {
                            out.push(d);
                            if out.len() >= max {
                                return Ok((seq < upto).then_some(seq + 1));
                            }
                        }
                    }
                }
                if seq >= upto || info.pending == 0 {
                    return Ok(None);
                }
            }
            Ok::<_, StoreError>(None)
        };
        let next = tokio::time::timeout(REPLAY_TIMEOUT, read)
            .await
            .map_err(|_| failed("read back", "timed out"))??;
        Ok((out, next))
    }
}

/// How long reading a session's messages back may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(20);

/// The delivery of `msg` to the session of `client` with `subs`, as the engine would have
/// made it: one per session, at the highest granted QoS of the matching subscriptions
/// (no more than the message's), with all their identifiers. Shared subscriptions are left
/// out (a group's message went to one member when it was routed), as is QoS 0 (not queued
/// for offline sessions) and what a subscription made after the message cannot match.
fn delivery_for(
    client: &str,
    subs: &[(TopicFilter, SubEntry, u64)],
    msg: &Arc<StoredMessage>,
    seq: u64,
    now: SystemTime,
) -> Option<StoredDelivery> {
    if msg.expires_at.is_some_and(|t| t <= now) {
        return None;
    }
    let mut best: Option<(QoS, bool, Vec<u32>)> = None;
    for (filter, entry, since) in subs {
        if *since >= msg.id
            || matches!(filter.shared(), Ok(Some(_)))
            || (entry.options.no_local && msg.publisher.as_deref() == Some(client))
            || !filter.matches(&msg.topic)
        {
            continue;
        }
        let b = best.get_or_insert((QoS::AtMostOnce, false, Vec::new()));
        b.0 = b.0.max(entry.options.qos);
        b.1 |= entry.options.retain_as_published;
        b.2.extend(entry.id);
    }
    let (qos, rap, sub_ids) = best?;
    let qos = qos.min(msg.qos);
    if qos == QoS::AtMostOnce {
        return None;
    }
    Some(StoredDelivery {
        seq,
        state: DeliveryState::Queued,
        qos,
        retain: rap && msg.retain,
        sub_ids,
        msg: msg.clone(),
    })
}

/// Sends the batch's messages: retained ones to the retained stream first (acknowledged
/// before their message is in the message stream, so that a node starting between the two
/// finds it in one or the other: see [`crate::feed::snapshot`]), then every message to the
/// message stream (QoS 1/2, retained) or its core subject (QoS 0), and waits for every
/// acknowledgement.
pub(super) async fn publish(nats: &Nats, msgs: &[&StoredMessage]) -> Result<(), StoreError> {
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
            // The client holds a bounded number of acknowledgements pending (5000 in
            // async-nats 0.51, waited for without a deadline): settled in chunks.
            if acks.len() >= ACK_CHUNK {
                settle(&mut acks, timeout).await?;
            }
        }
    }
    settle(&mut acks, timeout).await
}

/// How many acknowledgements a batch's publishing waits for at a time.
const ACK_CHUNK: usize = 1000;

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
