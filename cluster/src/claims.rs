//! Who owns a session: the claim a CONNECT makes before the engine sees it, and the
//! answer a node gives when another claims a session it holds.
//!
//! A claim reads the session's record. If another node owns it, that node is asked, on its
//! subject `<ns>.node.<node>.release`, to let go: it closes its connection (5.0: DISCONNECT
//! 0x8E), writes the record for the last time and answers. A node that is gone has no
//! subscription there, and NATS answers "no responders" at once: its record is taken as it
//! was last written. The claim then writes the record with this node as owner and the
//! epoch raised, compare-and-set on the revision it read: of two claims racing, one wins
//! and the other starts over (and asks the winner to let go). Only then does the CONNECT
//! reach the engine, so the old connection is closed before the new CONNACK is sent.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use broker::cluster::{BoxFuture, Claim, SessionClaims};
use broker::Broker;
use bytes::Bytes;
use futures_util::StreamExt;
use protocol::ReasonCode;

use crate::nats::{ClusterError, Nats};
use crate::record::{key_of, SessionRecord};
use crate::store::Claimed;

/// Why a claim is refused.
#[derive(Debug)]
enum Refusal {
    /// The session is another user's.
    NotOwner,
    /// The cluster failed (or the claim lost every race).
    Failed(String),
}

impl From<String> for Refusal {
    fn from(e: String) -> Refusal {
        Refusal::Failed(e)
    }
}

/// How long the holder of a session has to let go before it is taken anyway.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a claim waits for this node's reading of the stream to reach what the record
/// says its last owner had routed.
const FEED_WAIT: Duration = Duration::from_secs(10);

/// How many times a claim starts over after losing a race.
const ATTEMPTS: usize = 8;

/// The [`SessionClaims`] of a node.
#[derive(Debug)]
pub struct Claims {
    nats: Nats,
    /// The last stream sequence this node's feed handed to the engine.
    position: Arc<AtomicU64>,
}

impl Claims {
    /// Claims for this node; `position` is the feed's (see [`crate::feed::run`]).
    pub fn new(nats: Nats, position: Arc<AtomicU64>) -> Claims {
        Claims { nats, position }
    }

    fn node(&self) -> &str {
        &self.nats.config.node
    }

    /// The record of `key` and its revision (0: none yet).
    async fn read(&self, key: &str) -> Result<(SessionRecord, u64), String> {
        match self.nats.sessions.entry(key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => {
                let record = serde_json::from_slice(&e.value).map_err(|e| e.to_string())?;
                Ok((record, e.revision))
            }
            Ok(Some(e)) => Ok((SessionRecord::default(), e.revision)),
            Ok(None) => Ok((SessionRecord::default(), 0)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn claim_for(
        &self,
        client_id: &str,
        owner: Option<Option<&str>>,
    ) -> Result<Claim, Refusal> {
        let key = key_of(client_id);
        let mut asked = HashSet::new();
        for _ in 0..ATTEMPTS {
            let (mut record, revision) = self.read(&key).await?;
            // A session belongs to the user who made it: another user's CONNECT does not
            // get to close its connection elsewhere (the engine refuses it too).
            if let (Some(user), Some(meta)) = (owner, &record.meta) {
                if meta.username.as_deref() != user {
                    return Err(Refusal::NotOwner);
                }
            }
            tracing::debug!(%client_id, node = %self.node(), holder = %record.node, revision, "claim");
            if record.node == self.node() {
                self.wait_for_feed(record.upto).await?;
                return Ok(Claim(Box::new(Claimed { record, revision })));
            }
            if !record.node.is_empty() && asked.insert(record.node.clone()) {
                self.ask_release(&record.node, client_id).await;
                continue;
            }
            record.node = self.node().to_owned();
            record.epoch += 1;
            let body = Bytes::from(serde_json::to_vec(&record).map_err(|e| e.to_string())?);
            let written: Result<u64, (bool, String)> = if revision == 0 {
                self.nats.sessions.create(&key, body).await.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                })
            } else {
                self.nats
                    .sessions
                    .update(&key, body, revision)
                    .await
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    })
            };
            match written {
                Ok(revision) => {
                    self.wait_for_feed(record.upto).await?;
                    return Ok(Claim(Box::new(Claimed { record, revision })));
                }
                // Another claim won the race: start over (and ask it to let go).
                Err((true, _)) => continue,
                Err((false, e)) => return Err(e.into()),
            }
        }
        Err("lost every race for the session".to_owned().into())
    }

    /// Takes `client_id`'s session from `dead`, a node that is gone, if its record still
    /// names it (compare-and-set: of several nodes adopting, one wins). A clean session's
    /// record (nothing to keep) is deleted instead. `None`: nothing to adopt.
    pub async fn take_from(&self, client_id: &str, dead: &str) -> Result<Option<Claim>, String> {
        let key = key_of(client_id);
        let (mut record, revision) = self.read(&key).await?;
        if record.node != dead {
            return Ok(None);
        }
        if record.meta.is_none() {
            let _ = self
                .nats
                .sessions
                .delete_expect_revision(&key, Some(revision))
                .await;
            return Ok(None);
        }
        record.node = self.node().to_owned();
        record.epoch += 1;
        let body = Bytes::from(serde_json::to_vec(&record).map_err(|e| e.to_string())?);
        match self.nats.sessions.update(&key, body, revision).await {
            Ok(revision) => {
                self.wait_for_feed(record.upto).await?;
                Ok(Some(Claim(Box::new(Claimed { record, revision }))))
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Asks `node` to let go of `client_id`'s session, and waits for it to have done so. A
    /// node that is gone ("no responders") or does not answer in time keeps nothing that
    /// counts: its writes fail once the record is taken.
    async fn ask_release(&self, node: &str, client_id: &str) {
        let subject = release_subject(&self.nats, node);
        let ask = self
            .nats
            .client
            .request(subject, Bytes::copy_from_slice(client_id.as_bytes()));
        match tokio::time::timeout(RELEASE_TIMEOUT, ask).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::info!(%node, %client_id, error = %e, "holder of the session did not answer; taking it")
            }
            Err(_) => {
                tracing::warn!(%node, %client_id, "holder of the session did not let go in time; taking it")
            }
        }
    }

    /// Waits until this node's feed has handed the engine every stream message up to
    /// `upto`: the engine then routes the rest to the session once it is installed, and
    /// what came before is in its record.
    async fn wait_for_feed(&self, upto: u64) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + FEED_WAIT;
        while self.position.load(Ordering::Acquire) < upto {
            if tokio::time::Instant::now() > deadline {
                return Err("this node's reading of the message stream is behind".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

impl SessionClaims for Claims {
    fn claim<'a>(
        &'a self,
        client_id: &'a str,
        owner: Option<Option<&'a str>>,
    ) -> BoxFuture<'a, Result<Claim, ReasonCode>> {
        Box::pin(async move {
            self.claim_for(client_id, owner).await.map_err(|e| match e {
                Refusal::NotOwner => ReasonCode::NotAuthorized,
                Refusal::Failed(e) => {
                    tracing::warn!(%client_id, error = %e, "session not claimed; CONNECT refused (server unavailable)");
                    ReasonCode::ServerUnavailable
                }
            })
        })
    }
}

pub(crate) fn release_subject(nats: &Nats, node: &str) -> String {
    format!("{}.{node}.release", nats.names.node_subjects)
}

/// Refuses to start a node whose name a running node already uses.
pub async fn check_node_name(nats: &Nats) -> Result<(), ClusterError> {
    let subject = release_subject(nats, &nats.config.node);
    let ask = nats.client.request(subject, Bytes::new());
    match tokio::time::timeout(Duration::from_secs(2), ask).await {
        Ok(Ok(_)) => Err(ClusterError::JetStream(format!(
            "node name {:?} is in use by a running bridge: give each bridge its own [cluster] node",
            nats.config.node
        ))),
        _ => Ok(()),
    }
}

/// Answers other nodes' claims of sessions this node holds, until the broker stops.
pub async fn serve_releases(nats: Nats, broker: Broker) {
    let subject = release_subject(&nats, &nats.config.node);
    let mut requests = match nats.client.subscribe(subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for session releases; other nodes will take this node's sessions without asking");
            return;
        }
    };
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let nats = nats.clone();
        let broker = broker.clone();
        tokio::spawn(async move {
            // An empty request is another node starting under this name (see
            // `check_node_name`): answered, so that it refuses to start.
            let released = match std::str::from_utf8(&request.payload) {
                Ok("") | Err(_) => false,
                Ok(client_id) => broker.release(client_id).await.unwrap_or(false),
            };
            let answer = if released { "released" } else { "not held" };
            let _ = nats.client.publish(reply, answer.into()).await;
        });
    }
}
