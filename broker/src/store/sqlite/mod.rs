//! [`SqliteStore`]: the embedded, durable store.
//!
//! - `schema`: the tables, checking a file is ours, migrating formats 1 to 4.
//! - `read`: the read path (recovery at start, a session's queue, a retained message).
//! - `rows`: rows to and from the store's types (messages as PUBLISH packets).
//! - `segments`: queue segments, the deliveries a batch queues for one session in one row,
//!   and their index in memory.
//! - `write`: the write path, one batch's operations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::ffi::ErrorCode;
use rusqlite::{
    params, CachedStatement, Connection, OpenFlags, OptionalExtension, TransactionBehavior,
};

use super::{
    DeliveryState, Durability, Op, Recovered, RecoveredSession, RetainedMeta, SessionMeta, Store,
    StoreError, StoredDelivery, StoredMessage,
};

mod checkpoint;
mod read;
mod rows;
mod schema;
mod segments;
mod write;

use checkpoint::Checkpointer;
use segments::SegmentIndex;
use write::{apply_op, Hot};

use crate::Metrics;
use rows::*;
use schema::*;

/// Sessions, subscriptions, deliveries and retained messages in `dir/broker.sqlite3`.
///
/// # Why SQLite
/// It is the most trusted embedded store there is (its file format is a Library of Congress
/// recommended storage format, its test suite is famous), it is what mosquitto 2.1's
/// persistence plugin uses, and it fits the engine's way of writing:
/// - **One transaction per engine batch.** The engine hands over every change of a batch of
///   commands at once ([`Store::apply`]); they become one transaction, so the clients whose
///   commands were in the batch share one commit and one sync (group commit).
/// - **WAL.** A commit appends to the write-ahead log: a sequential write, no rewrite of the
///   database file, and with `synchronous = NORMAL` durable against a crash of the process
///   without an `fsync`; the log is synced and folded into the database at checkpoints, which
///   a thread of the store's runs beside the engine (see the `checkpoint` module), when the
///   log grows and, for [`Durability::Interval`], at every [`Store::tick`] due.
/// - **A locked directory.** The data directory is locked (`flock`) for the life of the
///   store, so a second broker on the same data directory fails at start rather than
///   corrupting it.
///
/// Messages are serialized as MQTT 5.0 PUBLISH packets by the [`protocol`] codec, which is
/// fuzzed and round-trip tested; there is no second serialization to get wrong.
///
/// # Schema (format version [`SqliteStore::FORMAT_VERSION`])
/// ```text
/// meta(key PK, value)                        format_version, program
/// sessions(client_id PK, version, username, expiry_interval, expires_at_ms,
///          disconnected_at_ms, will, will_delay, will_at_ms, dropped)
/// subscriptions(client_id, filter, options, sub_id)            PK (client_id, filter)
/// messages(id PK, payload_len, expires_at_ms, received_at_ms, publisher, message)
/// message_refs(id PK, refs)
/// deliveries(client_id, seq, state, packet_id, qos, retain, sub_ids, message_id)
///                                                               PK (client_id, seq)
/// queue_segments(id PK, client_id, first_seq, last_seq, count, bytes, entries)
/// inbound_qos2(client_id, packet_id)                            PK (client_id, packet_id)
/// retained(topic PK, id, qos, payload_len, expires_at_ms, received_at_ms, publisher,
///          message)
/// ```
/// Times are unix milliseconds. `message` and `will` are PUBLISH packets (packet id 1 at
/// QoS 1/2, ignored on load); the will's delay, which a PUBLISH cannot carry, is
/// `will_delay`. `options` packs the subscription options as the SUBSCRIBE options byte does.
/// `state` is 0 queued, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP. `sub_ids` is the
/// subscription identifiers as big-endian `u32`s. The rows of a session reference it (foreign
/// keys checked at commit; for `queue_segments`, which has none, by the write path): a batch
/// cannot leave rows of a session that is not stored.
///
/// A message queued for several sessions is one row of `messages` (its `id` is the engine's
/// message id), written once and never updated; `message_refs` counts the deliveries that
/// reference it when they are two or more (no row: one). A batch adds up the changes to each count and writes each once before it
/// commits, deleting the messages left without a reference. In `messages` and `retained`
/// the small columns come before `message`, so reading them (the queue sizes, the retained
/// metadata at start) does not read the payloads.
///
/// A delivery is either a row of `deliveries` or an entry of a queue segment (see
/// the `segments` module): the deliveries a batch queues for a session are one row of
/// `queue_segments` when they are two or more, and a row of `deliveries` when it queued one
/// (a one-entry segment costs more than the row). A delivery queued and then sent, acknowledged
/// or dropped in a later batch leaves its segment (which is rewritten, or deleted with its
/// last entry); one sent becomes a row of `deliveries`. `queue_segments` is in the order its
/// rows were written, with no index: where a session's segments are is kept in memory
/// (`segments::SegmentIndex`, read at open), so that a batch's segments for many sessions
/// are appended side by side instead of each going to its session's own page.
///
/// # The write path
/// Queueing a message for N offline sessions in a batch of M messages costs per message
/// one insert and one count, and per session one segment row, or one delivery row when M is 1
/// (with look-ups that find whether it replaces a stored delivery), not N x M delivery rows:
/// the row count of a batch, not the sync, was what bounded the durable throughput (100
/// offline sessions, 20 messages in flight: 2 000 rows a batch). Then the pages did: with
/// the segments keyed by session (format 4), each of the N rows dirtied its session's page,
/// and a batch of 14 messages to 100 sessions wrote 1.6 MB to the log and as much again at
/// checkpoints; appended in write order they fill a few pages (13 times fewer bytes written,
/// 3 times the messages per second). Statements are prepared once and cached. With [`Durability::Always`] each batch is one commit and one sync of
/// the WAL (the clients of the batch share it); checkpoints fold the WAL into the database
/// every 1 000 pages (`checkpoint::CHECKPOINT_PAGES`), so a page written by many
/// batches is copied once, on the checkpointer's thread.
///
/// Version 1 (until the messages were shared) kept the message in each delivery row and no
/// id, QoS or length in `retained`; version 2 kept each message's body in a table of its
/// own and counted its references with triggers (one more row written per delivery);
/// version 3 had a row per delivery and found whether a message was still referenced
/// through an index on `deliveries`; version 4 kept the queue segments under the key
/// (client_id, first_seq). [`SqliteStore::open`] migrates any of them (1 and 2 to 3, then 3
/// to 4, then 4 to 5: a transaction each; a file left between them by a crash migrates on
/// at the next open).
pub struct SqliteStore {
    /// Dropped before `conn`, so that `conn` closes last and removes the log.
    checkpointer: Checkpointer,
    conn: Connection,
    /// The data directory, named in errors.
    dir: PathBuf,
    durability: Durability,
    /// When a checkpoint was last asked for to sync the log (`Interval` policy).
    last_ask: Instant,
    /// `PRAGMA data_version` when the store last looked: it changes when another process
    /// writes the file (see [`SqliteStore::fresh_segments`]).
    data_version: i64,
    /// Where commits and syncs are timed (`mqtt_bridge_store_*`), once the broker says;
    /// shared with the checkpointer's thread.
    metrics: Arc<std::sync::OnceLock<Arc<Metrics>>>,
    /// Scratch of a batch, kept for its allocations (see [`Batch`]).
    batch: Batch,
    /// Where each session's queue segments are (see [`SegmentIndex`]).
    segments: SegmentIndex,
    /// Whether a batch failed since `segments` was read: it may name rows rolled back.
    segments_stale: bool,
    /// The data directory, opened and locked for the life of the store.
    _lock: std::fs::File,
}

/// What a batch remembers while its operations run; emptied at its end.
#[derive(Debug, Default)]
struct Batch {
    /// Messages this batch has inserted (`true`) or found stored (`false`): the next
    /// deliveries of the same message neither encode nor insert it again.
    written: HashMap<i64, bool>,
    /// Messages of the deliveries this batch removed, once per delivery: their reference
    /// counts go down at its end.
    released: Vec<i64>,
    /// The change of each message's reference count in this batch, written at its end;
    /// a message left without a reference is deleted then.
    refs: HashMap<i64, i64>,
    /// The deliveries this batch queued, by session, written at its end as one queue
    /// segment each (a row of `deliveries` for a session with one).
    pending: HashMap<Arc<str>, Vec<segments::Entry>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The version of the schema and of the serialization; versions 1 to 4 are migrated,
    /// another one is refused, untouched.
    pub const FORMAT_VERSION: u32 = 5;

    /// Opens the store in `dir`, creating the directory and the database if missing.
    ///
    /// # Errors
    /// - [`StoreError::Io`]: the directory or the file cannot be created, opened or written
    ///   (or another broker holds the data directory).
    /// - [`StoreError::Version`]: the database has another format version (neither this one
    ///   nor 1 to 4).
    /// - [`StoreError::Corrupt`]: the file is not an SQLite database, or not ours.
    ///
    /// An existing file is never overwritten nor deleted, and one of another version or not
    /// ours is not modified at all. One of format version 1 to 4 is migrated to this version
    /// one transaction per step (1 and 2 to 3, 3 to 4, 4 to 5): if a step fails, the file is
    /// left as the last step that committed made it, and migrates on from there next time.
    pub fn open(dir: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
            path: dir.to_owned(),
            error,
        })?;
        let lock = lock_dir(dir)?;
        let file = dir.join(FILE_NAME);
        let opening = |what: &'static str| {
            let dir = dir.to_owned();
            move |e: rusqlite::Error| open_error(dir, what, e)
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&file, flags).map_err(opening("opening"))?;
        // Neither reads nor writes the file: safe before we know whose it is.
        conn.execute_batch("PRAGMA foreign_keys = ON;")
            .map_err(opening("configuring"))?;
        // Only another process using the file (not a broker: see `lock_dir`) or the
        // checkpointer makes us wait; do not wait long for it.
        conn.busy_timeout(Duration::from_millis(500))
            .map_err(opening("configuring"))?;

        let mut tables = Vec::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'trigger', 'index')",
                )
                .map_err(opening("reading the schema"))?;
            let mut rows = stmt.query([]).map_err(opening("reading the schema"))?;
            while let Some(row) = rows.next().map_err(opening("reading the schema"))? {
                tables.push(text(row, 0, "name").map_err(|d| corrupt(dir, "sqlite_schema", d))?);
            }
        }
        let found = if tables.is_empty() {
            None
        } else {
            Some(check_ours(&conn, dir, &tables)?)
        };
        // Only now that the file is known to be ours (or empty) is it written.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(opening("switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "{}: journal mode is {mode}, not WAL",
                file.display()
            )));
        }
        match found {
            None => {
                let init = format!(
                    "BEGIN IMMEDIATE; {}
                     INSERT INTO meta (key, value) VALUES ('format_version', '{}');
                     INSERT INTO meta (key, value) VALUES ('program', '{PROGRAM}');
                     COMMIT;",
                    schema(),
                    Self::FORMAT_VERSION
                );
                conn.execute_batch(&init)
                    .map_err(opening("writing the database"))?;
            }
            // A write too: a read-only file or directory is found now.
            Some(1) => {
                migrate_v1(&mut conn, dir)?;
                migrate_v3(&mut conn, dir)?;
                migrate_v4(&mut conn, dir)?;
            }
            Some(2) => {
                migrate_v2(&mut conn, dir)?;
                migrate_v3(&mut conn, dir)?;
                migrate_v4(&mut conn, dir)?;
            }
            Some(3) => {
                migrate_v3(&mut conn, dir)?;
                migrate_v4(&mut conn, dir)?;
            }
            Some(4) => migrate_v4(&mut conn, dir)?,
            Some(_) => {
                // A real write, so that a read-only file or directory is found now, not at
                // the first acknowledgement.
                conn.execute_batch(
                    "BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = 'program'; \
                     COMMIT;",
                )
                .map_err(opening("writing the database"))?;
            }
        }
        let synchronous = match durability {
            Durability::Always => "FULL",
            Durability::Interval(_) => "NORMAL",
            Durability::None => "OFF",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(opening("configuring"))?;
        let metrics = Arc::new(std::sync::OnceLock::new());
        let checkpointer = Checkpointer::start(&mut conn, &file, synchronous, metrics.clone())
            .map_err(|e| match e {
                checkpoint::StartError::Sql(e) => {
                    open_error(dir.to_owned(), "starting the checkpointer", e)
                }
                checkpoint::StartError::Thread(error) => StoreError::Io {
                    path: dir.to_owned(),
                    error,
                },
            })?;
        conn.set_prepared_statement_cache_capacity(32);
        let segments = SegmentIndex::read(&conn).map_err(|e| match e {
            Failure::Sql(e) => open_error(dir.to_owned(), "reading the queue segments", e),
            Failure::Invalid(d) => StoreError::Corrupt {
                path: dir.to_owned(),
                detail: d,
            },
        })?;
        let data_version = conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(opening("reading the data version"))?;
        Ok(SqliteStore {
            checkpointer,
            metrics,
            _lock: lock,
            segments,
            segments_stale: false,
            conn,
            dir: dir.to_owned(),
            durability,
            last_ask: Instant::now(),
            data_version,
            batch: Batch::default(),
        })
    }

    fn error(&self, e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
                path: self.dir.clone(),
                detail: e.to_string(),
            },
            _ => StoreError::Database(e.to_string()),
        }
    }

    /// Reads the index of the queue segments again if a failed batch left it stale, or if
    /// another process wrote the file since the store last looked (`PRAGMA data_version`;
    /// the broker's own checkpointer writes none): the index must never name a row that
    /// is not the one it was written for. (Writing the file while the broker runs is not
    /// supported; this keeps it from mixing sessions up.)
    fn fresh_segments(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(|e| self.error(e))?;
        if version != self.data_version {
            self.data_version = version;
            self.segments_stale = true;
        }
        if self.segments_stale {
            self.segments = SegmentIndex::read(&self.conn).map_err(|e| self.failed(e))?;
            self.segments_stale = false;
        }
        Ok(())
    }

    /// A failure outside a batch: an invalid row means a file not written by us.
    fn failed(&self, e: Failure) -> StoreError {
        match e {
            Failure::Sql(e) => self.error(e),
            Failure::Invalid(detail) => StoreError::Corrupt {
                path: self.dir.clone(),
                detail,
            },
        }
    }

    fn corrupt(&self, table: &str, detail: String) -> StoreError {
        corrupt(&self.dir, table, detail)
    }

    fn apply_ops(&mut self, ops: &[Op]) -> Result<(), Failure> {
        let batch = &mut self.batch;
        batch.written.clear();
        batch.released.clear();
        batch.refs.clear();
        batch.pending.clear();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let index = &mut self.segments;
        let mut hot = Hot::default();
        for op in ops {
            apply_op(&tx, op, batch, index, &mut hot)?;
        }
        // The deliveries queued: one segment per session, or a row of `deliveries` for a
        // session that got one only. A segment of one entry costs more than the row it
        // replaces (its range checks and its blob, rewritten again when the delivery goes in
        // flight), which made queueing one message per session a third slower and the drain
        // of such queues half again as long as rows did (BENCHMARKS.md, section 8).
        let mut pending = std::mem::take(&mut batch.pending);
        for (client, mut entries) in pending.drain() {
            if let [entry] = entries.as_slice() {
                write::put_delivery_row(
                    &tx,
                    &mut hot,
                    batch,
                    index,
                    &client,
                    DeliveryState::Queued,
                    entry,
                )?;
            } else {
                entries.sort_unstable_by_key(|e| e.seq);
                segments::insert(&tx, index, &client, entries, &mut batch.released)?;
            }
        }
        batch.pending = pending;
        drop(hot);
        // The reference counts, once per message; the messages whose last delivery went
        // in this batch go with it. A message of one reference has no row in `message_refs`
        // (most messages of a queue that is not a fan-out: one row fewer to write when it
        // is queued, and to read and delete when it is acknowledged).
        for id in batch.released.drain(..) {
            *batch.refs.entry(id).or_default() -= 1;
        }
        for (&id, &delta) in &batch.refs {
            let new = batch.written.get(&id) == Some(&true);
            if delta == 0 && !new {
                continue;
            }
            let counted: Option<i64> = if new {
                None
            } else {
                tx.prepare_cached("SELECT refs FROM message_refs WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))
                    .optional()?
            };
            let before = if new { 0 } else { counted.unwrap_or(1) };
            let after = before + delta;
            if after < 0 {
                return Err(Failure::Invalid(format!(
                    "message {id}: {after} references (a delivery released twice)"
                )));
            }
            if after == 0 {
                tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                    .execute([id])?;
            }
            if after >= 2 {
                tx.prepare_cached(
                    "INSERT INTO message_refs (id, refs) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET refs = excluded.refs",
                )?
                .execute([id, after])?;
            } else if counted.is_some() {
                tx.prepare_cached("DELETE FROM message_refs WHERE id = ?1")?
                    .execute([id])?;
            }
        }
        // Timed only when counted: two clock reads per batch, never per message.
        let started = self.metrics.get().map(|_| Instant::now());
        let committed = tx.commit();
        if let (Some(m), Some(started)) = (self.metrics.get(), started) {
            m.store_committed(started.elapsed());
        }
        committed.map_err(|e| {
            if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) {
                Failure::Invalid(format!(
                    "the batch leaves rows of a session that is not stored ({e})"
                ))
            } else {
                Failure::Sql(e)
            }
        })
    }
}

/// Why a batch failed.
enum Failure {
    Sql(rusqlite::Error),
    Invalid(String),
}

impl From<rusqlite::types::FromSqlError> for Failure {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        Failure::Invalid(format!("a column of the wrong type: {e}"))
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        self.recover()
    }

    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        self.queue(client_id)
    }

    fn load_retained(&mut self, topic: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.retained_message(topic)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.fresh_segments()?;
        let applied = self.apply_ops(ops);
        if applied.is_err() {
            // Rolled back: the index may name rows that are not there. Read now, or at the
            // next use if that fails too.
            self.segments_stale = true;
            let _ = self.fresh_segments();
        }
        match applied {
            Ok(()) => {
                self.checkpointer.committed();
                Ok(())
            }
            Err(Failure::Sql(e)) => Err(self.error(e)),
            Err(Failure::Invalid(detail)) => Err(StoreError::Database(detail)),
        }
    }

    fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        let Durability::Interval(every) = self.durability else {
            return Ok(());
        };
        if self.checkpointer.synced_all() || self.last_ask.elapsed() < every {
            return Ok(());
        }
        // With `synchronous = NORMAL` a checkpoint syncs the WAL before copying it; the
        // checkpointer runs it (and times it), and asked again at the next tick due until
        // one has covered every commit (a reader of the file may hold one up).
        self.checkpointer.ask();
        self.last_ask = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
