//! Every session of the cluster, as its record says: an index kept by watching the sessions
//! bucket, for the dashboard and the API of any node (which list the whole cluster's
//! sessions, with the node that holds each one).
//!
//! Bounded by the bucket: one entry per record, and the bucket is at most
//! `max_stream_bytes`. A record written is here within the watch's delay (milliseconds on a
//! healthy cluster); the index is rebuilt from the bucket whenever the watch has to start
//! over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use crate::nats::Nats;
use crate::record::{client_of, SessionRecord};

/// One session of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its client id.
    pub client_id: String,
    /// Its record.
    pub record: SessionRecord,
}

/// The index. Cheap to clone: clones share it.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    sessions: Arc<Mutex<BTreeMap<String, SessionRecord>>>,
}

impl Directory {
    /// Every session, by client id.
    pub fn list(&self) -> Vec<Listed> {
        self.lock()
            .iter()
            .map(|(client_id, record)| Listed {
                client_id: client_id.clone(),
                record: record.clone(),
            })
            .collect()
    }

    /// The record of one session.
    pub fn get(&self, client_id: &str) -> Option<SessionRecord> {
        self.lock().get(client_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SessionRecord>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the index up to date until the task is dropped.
    pub async fn run(self, nats: Nats) {
        loop {
            if let Err(e) = self.watch(&nats).await {
                tracing::warn!(error = %e, "watch of the sessions bucket ended; starting over");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn watch(&self, nats: &Nats) -> Result<(), String> {
        // The latest value of every key first, then every change.
        let mut watch = nats.sessions.watch_all().await.map_err(|e| e.to_string())?;
        let mut fresh = true;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            if fresh {
                // The watch starts over from the bucket: forget what it no longer has.
                self.lock().clear();
                fresh = false;
            }
            let Some(client_id) = client_of(&entry.key) else {
                continue;
            };
            match entry.operation {
                kv::Operation::Put => match serde_json::from_slice(&entry.value) {
                    Ok(record) => {
                        self.lock().insert(client_id, record);
                    }
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "unreadable session record")
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    self.lock().remove(&client_id);
                }
            }
        }
        Err("the watch ended".into())
    }
}
