//! Sessions whose node died and whose clients have not come back: a live node takes them,
//! so that their expiry runs and their wills (delayed ones, and that of a connection that
//! was open when its node died) are published.
//!
//! Every node looks, every [`EVERY`], at the nodes that own records (from the
//! [`Directory`]), and asks each on its release subject whether it is there: a node with no
//! subscriber there (NATS answers "no responders" at once) in two looks in a row is dead.
//! Each live node then claims that node's sessions, compare-and-set: one claim wins each
//! session, the others see a new owner and leave it. A dead node's clean sessions (records
//! that only said who held a connection) are deleted. A node that starts under the name of
//! one that died takes that node's sessions back the same way.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::RequestErrorKind;
use broker::cluster::Claim;
use broker::Broker;
use bytes::Bytes;

use crate::claims::{release_subject, Claims};
use crate::directory::Directory;
use crate::nats::Nats;
use crate::record::key_of;
use crate::store::Claimed;

/// How often the owners of the cluster's sessions are looked at.
pub const EVERY: Duration = Duration::from_secs(2);

/// Sessions taken per look, so that one look stays short.
const PER_LOOK: usize = 500;

/// Whether a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    /// It answered, or might have (a timeout is not proof of death).
    Alive,
    /// Nobody listens on its subject.
    Gone,
}

async fn ask(nats: &Nats, node: &str) -> Liveness {
    let ask = nats
        .client
        .request(release_subject(nats, node), Bytes::new());
    match tokio::time::timeout(Duration::from_secs(2), ask).await {
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Liveness::Gone,
        _ => Liveness::Alive,
    }
}

/// Takes dead nodes' sessions until the broker stops.
pub async fn run(nats: Nats, broker: Broker, directory: Directory, claims: std::sync::Arc<Claims>) {
    let me = nats.config.node.clone();
    // Seen gone in the last look.
    let mut gone_once: HashMap<String, bool> = HashMap::new();
    // This node's own records left by an earlier process of the same name: taken back once
    // the directory has been read, if they did not change between two looks (a record that
    // changes is a session this process holds and writes).
    let mut own: Option<HashMap<String, crate::record::SessionRecord>> = None;
    let mut own_done = false;
    loop {
        tokio::time::sleep(EVERY).await;
        let list = directory.list();
        if !own_done {
            let now: HashMap<String, crate::record::SessionRecord> = list
                .iter()
                .filter(|l| l.record.node == me && l.record.meta.is_some())
                .map(|l| (l.client_id.clone(), l.record.clone()))
                .collect();
            match own.take() {
                None => own = Some(now),
                Some(before) => {
                    own_done = true;
                    for (client_id, record) in now {
                        if before.get(&client_id) != Some(&record) {
                            continue;
                        }
                        let key = key_of(&client_id);
                        let Ok(Some(entry)) = nats.sessions.entry(&key).await else {
                            continue;
                        };
                        if entry.operation != kv::Operation::Put {
                            continue;
                        }
                        let Ok(record) =
                            serde_json::from_slice::<crate::record::SessionRecord>(&entry.value)
                        else {
                            continue;
                        };
                        if record.node != me || record.meta.is_none() {
                            continue;
                        }
                        let claim = Claim(Box::new(Claimed {
                            record,
                            revision: entry.revision,
                        }));
                        if broker.adopt(&client_id, claim).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let owners: BTreeSet<&str> = list
            .iter()
            .map(|l| l.record.node.as_str())
            .filter(|n| !n.is_empty() && *n != me)
            .collect();
        let mut dead = BTreeSet::new();
        for node in owners {
            let gone = ask(&nats, node).await == Liveness::Gone;
            let before = gone_once.insert(node.to_owned(), gone).unwrap_or(false);
            if gone && before {
                dead.insert(node.to_owned());
            }
        }
        gone_once.retain(|_, gone| *gone);
        let orphans = list.iter().filter(|l| dead.contains(&l.record.node));
        for listed in orphans.take(PER_LOOK) {
            match claims
                .take_from(&listed.client_id, &listed.record.node)
                .await
            {
                Ok(Some(claim)) => match broker.adopt(&listed.client_id, claim).await {
                    Ok(true) => {
                        tracing::info!(client_id = %listed.client_id, from = %listed.record.node, "session of a dead node adopted")
                    }
                    Ok(false) => {}
                    Err(_) => return,
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(client_id = %listed.client_id, error = %e, "session of a dead node not adopted")
                }
            }
        }
    }
}
