//! [`SqliteStore`]: the embedded, durable store.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use protocol::{
    Packet, Properties, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
    TopicFilter, TopicName, Will,
};
use rusqlite::ffi::ErrorCode;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, Row, TransactionBehavior};

use super::{
    DeliveryState, Durability, Op, Recovered, RecoveredSession, RetainedMeta, SessionMeta, Store,
    StoreError, StoredDelivery, StoredMessage,
};
use crate::subscriptions::SubEntry;

/// The database file in the data directory.
const FILE_NAME: &str = "broker.sqlite3";

/// Who writes the database, kept in `meta` so a foreign SQLite file is not taken for ours.
const PROGRAM: &str = "mqtt-bridge";

/// The tables besides `meta`.
const TABLES: [&str; 7] = [
    "sessions",
    "subscriptions",
    "messages",
    "message_bodies",
    "deliveries",
    "inbound_qos2",
    "retained",
];

/// The triggers that keep the messages' reference counts (see [`MESSAGE_TABLES`]).
const TRIGGERS: [&str; 3] = ["delivery_added", "delivery_removed", "message_removed"];

/// The tables besides `meta` in format version 1.
const TABLES_V1: [&str; 5] = [
    "sessions",
    "subscriptions",
    "deliveries",
    "inbound_qos2",
    "retained",
];

const META_TABLE: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;";

/// The tables that did not change from version 1 to 2.
const SESSION_TABLES: &str = "
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL,
    username TEXT,
    expiry_interval INTEGER NOT NULL,
    expires_at_ms INTEGER,
    disconnected_at_ms INTEGER,
    will BLOB,
    will_delay INTEGER,
    will_at_ms INTEGER,
    dropped INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL
        REFERENCES sessions (client_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    filter TEXT NOT NULL,
    options INTEGER NOT NULL,
    sub_id INTEGER,
    PRIMARY KEY (client_id, filter)
) WITHOUT ROWID;
CREATE TABLE inbound_qos2 (
    client_id TEXT NOT NULL
        REFERENCES sessions (client_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
) WITHOUT ROWID;";

/// The tables new in version 2 (or remade: `deliveries` and `retained`), and the triggers
/// that count the references to a message.
///
/// A message's reference count is in a row without its body: SQLite rewrites a whole row
/// to update one column, and counting a reference must not read (nor write) a megabyte.
/// In `retained`, written whole every time, the big column, `message`, comes last, so
/// reading the others does not read through its overflow pages.
///
/// The triggers count every way a delivery comes or goes (the foreign keys' cascade too),
/// in the statement's own transaction; the store never uses `INSERT OR REPLACE` on
/// `deliveries`, whose implicit delete would not fire them.
const MESSAGE_TABLES: &str = "
CREATE TABLE messages (
    id INTEGER PRIMARY KEY NOT NULL,
    refs INTEGER NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT
);
CREATE TABLE message_bodies (
    id INTEGER PRIMARY KEY NOT NULL,
    message BLOB NOT NULL
);
CREATE TABLE deliveries (
    client_id TEXT NOT NULL
        REFERENCES sessions (client_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    seq INTEGER NOT NULL,
    state INTEGER NOT NULL,
    packet_id INTEGER,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    sub_ids BLOB NOT NULL,
    message_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, seq)
) WITHOUT ROWID;
CREATE TABLE retained (
    topic TEXT PRIMARY KEY NOT NULL,
    id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT,
    message BLOB NOT NULL
);
CREATE TRIGGER delivery_added AFTER INSERT ON deliveries BEGIN
    UPDATE messages SET refs = refs + 1 WHERE id = NEW.message_id;
END;
CREATE TRIGGER delivery_removed AFTER DELETE ON deliveries BEGIN
    UPDATE messages SET refs = refs - 1 WHERE id = OLD.message_id;
    DELETE FROM messages WHERE id = OLD.message_id AND refs <= 0;
END;
CREATE TRIGGER message_removed AFTER DELETE ON messages BEGIN
    DELETE FROM message_bodies WHERE id = OLD.id;
END;";

/// Version 1 to 2, before the new tables are made: the old ones step aside.
const MIGRATE_V1_RENAME: &str = "
ALTER TABLE deliveries RENAME TO deliveries_v1;
ALTER TABLE retained RENAME TO retained_v1;";

/// Version 1 to 2, once the new tables are made, the part SQL does alone: every delivery's
/// message becomes a row of `messages` and `message_bodies` (numbered 1, 2, ... in
/// (client_id, seq) order: version 1 kept a copy per delivery), referenced from the new
/// `deliveries`, whose trigger counts the one reference each. The retained rows are copied
/// by [`migrate_v1`], which must read their messages.
const MIGRATE_V1_DELIVERIES: &str = "
INSERT INTO messages (id, refs, payload_len, expires_at_ms, received_at_ms, publisher)
    SELECT row_number() OVER (ORDER BY client_id, seq), 0, payload_len, expires_at_ms,
           received_at_ms, publisher
    FROM deliveries_v1;
INSERT INTO message_bodies (id, message)
    SELECT row_number() OVER (ORDER BY client_id, seq), message FROM deliveries_v1;
INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, sub_ids, message_id)
    SELECT client_id, seq, state, packet_id, qos, retain, sub_ids,
           row_number() OVER (ORDER BY client_id, seq)
    FROM deliveries_v1;
DROP TABLE deliveries_v1;";

/// The whole schema of the current version.
fn schema() -> String {
    format!("{META_TABLE}{SESSION_TABLES}{MESSAGE_TABLES}")
}

/// The columns of a delivery with its message, in the order [`decode_delivery`] reads them.
const DELIVERY_COLUMNS: &str = "d.client_id, d.seq, d.state, d.packet_id, d.qos, d.retain, \
                                d.sub_ids, d.message_id, b.message, m.expires_at_ms, \
                                m.received_at_ms, m.publisher \
                                FROM deliveries d \
                                LEFT JOIN messages m ON m.id = d.message_id \
                                LEFT JOIN message_bodies b ON b.id = d.message_id";

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
///   [`Store::tick`] runs for [`Durability::Interval`].
/// - **Exclusive locking.** The file is locked for the life of the store, so a second broker
///   on the same data directory fails at start rather than corrupting it, and WAL needs no
///   shared-memory file.
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
/// messages(id PK, refs, payload_len, expires_at_ms, received_at_ms, publisher)
/// message_bodies(id PK, message)
/// deliveries(client_id, seq, state, packet_id, qos, retain, sub_ids, message_id)
///                                                               PK (client_id, seq)
/// inbound_qos2(client_id, packet_id)                            PK (client_id, packet_id)
/// retained(topic PK, id, qos, payload_len, expires_at_ms, received_at_ms, publisher,
///          message)
/// ```
/// Times are unix milliseconds. `message` and `will` are PUBLISH packets (packet id 1 at
/// QoS 1/2, ignored on load); the will's delay, which a PUBLISH cannot carry, is
/// `will_delay`. `options` packs the subscription options as the SUBSCRIBE options byte does.
/// `state` is 0 queued, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP. `sub_ids` is the
/// subscription identifiers as big-endian `u32`s. The rows of a session reference it (foreign
/// keys checked at commit): a batch cannot leave rows of a session that is not stored.
///
/// A message queued for several sessions is one row of `messages` and one of
/// `message_bodies` (its `id` is the engine's message id), referenced by `message_id` from
/// each delivery; `refs` counts those, kept by triggers on `deliveries` in the batch's
/// transaction, and both rows are deleted with the last delivery. The count lives apart from
/// the body because SQLite rewrites a whole row to change one column. In `retained` the
/// small columns come before `message`, so reading the retained metadata at start does not
/// read the payloads.
///
/// Version 1 (until the messages were shared) kept the message in each delivery row and no
/// id, QoS or length in `retained`; [`SqliteStore::open`] migrates such a file in one
/// transaction.
pub struct SqliteStore {
    conn: Connection,
    /// The data directory, named in errors.
    dir: PathBuf,
    durability: Durability,
    /// When the WAL was last synced by a checkpoint (`Interval` policy).
    last_sync: Instant,
    /// Whether anything was committed since `last_sync`.
    dirty: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The version of the schema and of the serialization; version 1 is migrated, another
    /// one is refused, untouched.
    pub const FORMAT_VERSION: u32 = 2;

    /// Opens the store in `dir`, creating the directory and the database if missing.
    ///
    /// # Errors
    /// - [`StoreError::Io`]: the directory or the file cannot be created, opened or written
    ///   (or another process holds the database).
    /// - [`StoreError::Version`]: the database has another format version (neither this one
    ///   nor 1).
    /// - [`StoreError::Corrupt`]: the file is not an SQLite database, or not ours.
    ///
    /// An existing file is never overwritten nor deleted, and one of another version or not
    /// ours is not modified at all. One of format version 1 is migrated to this version in
    /// one transaction: if the migration fails, the file is left as it was.
    pub fn open(dir: &Path, durability: Durability) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::Io {
            path: dir.to_owned(),
            error,
        })?;
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
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA locking_mode = EXCLUSIVE;")
            .map_err(opening("configuring"))?;
        // Only another process holding the lock makes us wait; do not wait long for it.
        conn.busy_timeout(Duration::from_millis(500))
            .map_err(opening("configuring"))?;

        let mut tables = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'trigger')")
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
            Some(1) => migrate_v1(&mut conn, dir)?,
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
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteStore {
            conn,
            dir: dir.to_owned(),
            durability,
            last_sync: Instant::now(),
            dirty: false,
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

    fn corrupt(&self, table: &str, detail: String) -> StoreError {
        corrupt(&self.dir, table, detail)
    }

    fn apply_ops(&mut self, ops: &[Op]) -> Result<(), Failure> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in ops {
            apply_op(&tx, op)?;
        }
        tx.commit().map_err(|e| {
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

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

fn apply_op(tx: &Connection, op: &Op) -> Result<(), Failure> {
    match op {
        Op::PutSession(meta) => {
            let (will, will_delay, will_at) = match &meta.pending_will {
                Some((will, at)) => {
                    let mut properties = will.properties.clone();
                    let delay = properties.will_delay_interval.take();
                    let blob = encode_message(
                        &will.topic,
                        &will.payload,
                        will.qos,
                        will.retain,
                        properties,
                    )?;
                    (Some(blob), delay, Some(to_ms(*at)))
                }
                None => (None, None, None),
            };
            tx.prepare_cached(
                "INSERT INTO sessions (client_id, version, username, expiry_interval, \
                 expires_at_ms, disconnected_at_ms, will, will_delay, will_at_ms, dropped) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (client_id) DO UPDATE SET version = excluded.version, \
                 username = excluded.username, expiry_interval = excluded.expiry_interval, \
                 expires_at_ms = excluded.expires_at_ms, \
                 disconnected_at_ms = excluded.disconnected_at_ms, will = excluded.will, \
                 will_delay = excluded.will_delay, will_at_ms = excluded.will_at_ms, \
                 dropped = excluded.dropped",
            )?
            .execute(params![
                &*meta.client_id,
                meta.version.level(),
                meta.username,
                meta.expiry_interval,
                meta.expires_at.map(to_ms),
                meta.disconnected_at.map(to_ms),
                will,
                will_delay,
                will_at,
                i64::try_from(meta.dropped).unwrap_or(i64::MAX),
            ])?;
        }
        Op::DeleteSession(client) => {
            for sql in [
                "DELETE FROM subscriptions WHERE client_id = ?1",
                "DELETE FROM deliveries WHERE client_id = ?1",
                "DELETE FROM inbound_qos2 WHERE client_id = ?1",
                "DELETE FROM sessions WHERE client_id = ?1",
            ] {
                tx.prepare_cached(sql)?.execute([&**client])?;
            }
        }
        Op::PutSubscription {
            client,
            filter,
            entry,
        } => {
            tx.prepare_cached(
                "INSERT INTO subscriptions (client_id, filter, options, sub_id) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (client_id, filter) \
                 DO UPDATE SET options = excluded.options, sub_id = excluded.sub_id",
            )?
            .execute(params![
                &**client,
                filter.as_str(),
                pack_options(entry.options),
                entry.id
            ])?;
        }
        Op::DeleteSubscription { client, filter } => {
            tx.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")?
                .execute(params![&**client, filter.as_str()])?;
        }
        Op::PutDelivery { client, delivery } => {
            let d = &**delivery;
            let m = &d.msg;
            let id = id_to_sql(m.id)?;
            let seq = seq_to_sql(d.seq)?;
            // The message, unless stored already (encoded only then); the delivery's insert
            // counts the reference.
            let added = tx
                .prepare_cached(
                    "INSERT INTO messages (id, refs, payload_len, expires_at_ms, \
                     received_at_ms, publisher) VALUES (?1, 0, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                    m.expires_at.map(to_ms),
                    to_ms(m.received_at),
                    m.publisher.as_deref(),
                ])?;
            if added == 1 {
                let message =
                    encode_message(&m.topic, &m.payload, m.qos, m.retain, m.properties.clone())?;
                tx.prepare_cached("INSERT INTO message_bodies (id, message) VALUES (?1, ?2)")?
                    .execute(params![id, message])?;
            }
            let (state, packet_id) = pack_state(d.state);
            let sub_ids: Vec<u8> = d.sub_ids.iter().flat_map(|id| id.to_be_bytes()).collect();
            let row = params![
                &**client,
                seq,
                state,
                packet_id,
                d.qos as u8,
                d.retain,
                sub_ids,
                id,
            ];
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, \
                     sub_ids, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (client_id, seq) DO NOTHING",
                )?
                .execute(row)?;
            if inserted == 0 {
                // It replaces a delivery, which releases its own message (the new one is
                // counted already: it may be the same). Not `INSERT OR REPLACE`: the
                // replaced row would not fire the trigger that releases its message.
                tx.prepare_cached("DELETE FROM deliveries WHERE client_id = ?1 AND seq = ?2")?
                    .execute(params![&**client, seq])?;
                tx.prepare_cached(
                    "INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, \
                     sub_ids, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(row)?;
            }
        }
        Op::SetDeliveryState { client, seq, state } => {
            let (state, packet_id) = pack_state(*state);
            tx.prepare_cached(
                "UPDATE deliveries SET state = ?3, packet_id = ?4 \
                 WHERE client_id = ?1 AND seq = ?2",
            )?
            .execute(params![&**client, seq_to_sql(*seq)?, state, packet_id])?;
        }
        Op::DeleteDelivery { client, seq } => {
            tx.prepare_cached("DELETE FROM deliveries WHERE client_id = ?1 AND seq = ?2")?
                .execute(params![&**client, seq_to_sql(*seq)?])?;
        }
        Op::PutInboundQos2 { client, packet_id } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES (?1, ?2)",
            )?
            .execute(params![&**client, packet_id])?;
        }
        Op::DeleteInboundQos2 { client, packet_id } => {
            tx.prepare_cached("DELETE FROM inbound_qos2 WHERE client_id = ?1 AND packet_id = ?2")?
                .execute(params![&**client, packet_id])?;
        }
        Op::PutRetained(m) => {
            let message =
                encode_message(&m.topic, &m.payload, m.qos, m.retain, m.properties.clone())?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO retained (topic, id, qos, payload_len, expires_at_ms, \
                 received_at_ms, publisher, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                m.topic.as_str(),
                id_to_sql(m.id)?,
                m.qos as u8,
                i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                m.expires_at.map(to_ms),
                to_ms(m.received_at),
                m.publisher.as_deref(),
                message,
            ])?;
        }
        Op::DeleteRetained(topic) => {
            tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                .execute([topic.as_str()])?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Recovered, StoreError> {
        let mut sessions = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_id, version, username, expiry_interval, expires_at_ms, \
                     disconnected_at_ms, will, will_delay, will_at_ms, dropped \
                     FROM sessions ORDER BY client_id",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let meta = decode_session(row).map_err(|d| self.corrupt("sessions", d))?;
                index.insert(meta.client_id.to_string(), sessions.len());
                sessions.push(RecoveredSession {
                    meta,
                    subscriptions: Vec::new(),
                    inflight: Vec::new(),
                    inbound_qos2: Vec::new(),
                    queued: (0, 0),
                    max_seq: None,
                });
            }
        }
        // Rows of a session not stored cannot be there (foreign keys); if they are anyway,
        // the file was not written by us.
        let find = |client: &str, table: &str| {
            index
                .get(client)
                .copied()
                .ok_or_else(|| self.corrupt(table, format!("key {client:?}: no such session")))
        };
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_id, filter, options, sub_id FROM subscriptions \
                     ORDER BY client_id, filter",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, filter, entry) =
                    decode_subscription(row).map_err(|d| self.corrupt("subscriptions", d))?;
                let i = find(&client, "subscriptions")?;
                sessions[i].subscriptions.push((filter, entry));
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} WHERE d.state <> 0 ORDER BY d.client_id, d.seq"
                ))
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, d) =
                    decode_delivery(row).map_err(|d| self.corrupt("deliveries", d))?;
                let i = find(&client, "deliveries")?;
                sessions[i].inflight.push(d);
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT d.client_id, \
                     count(*) FILTER (WHERE d.state = 0), \
                     total(m.payload_len) FILTER (WHERE d.state = 0), \
                     max(d.seq) \
                     FROM deliveries d LEFT JOIN messages m ON m.id = d.message_id \
                     GROUP BY d.client_id",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, count, bytes, max_seq) = (|| {
                    let client = text(row, 0, "client_id")?;
                    let key = |d: String| format!("key {client:?}: {d}");
                    let count = int_as::<usize>(int(row, 1, "count").map_err(key)?, "count")
                        .map_err(key)?;
                    let bytes = match row.get_ref(2) {
                        Ok(ValueRef::Real(v)) if v >= 0.0 => v as usize,
                        _ => return Err(key("payload_len: bad total".to_owned())),
                    };
                    let max_seq =
                        int_as::<u64>(int(row, 3, "seq").map_err(key)?, "seq").map_err(key)?;
                    Ok((client, count, bytes, max_seq))
                })()
                .map_err(|d| self.corrupt("deliveries", d))?;
                let i = find(&client, "deliveries")?;
                sessions[i].queued = (count, bytes);
                sessions[i].max_seq = Some(max_seq);
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_id, packet_id FROM inbound_qos2 ORDER BY client_id, packet_id",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, id) = (|| {
                    let client = text(row, 0, "client_id")?;
                    let id = int(row, 1, "packet_id")
                        .and_then(|v| int_as::<u16>(v, "packet_id"))
                        .map_err(|d| format!("key ({client:?}, ?): {d}"))?;
                    Ok((client, id))
                })()
                .map_err(|d| self.corrupt("inbound_qos2", d))?;
                let i = find(&client, "inbound_qos2")?;
                sessions[i].inbound_qos2.push(id);
            }
        }
        let mut retained = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT topic, id, qos, payload_len, expires_at_ms, received_at_ms \
                     FROM retained ORDER BY topic",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                retained.push(decode_retained_meta(row).map_err(|d| self.corrupt("retained", d))?);
            }
        }
        let max_message_id = self
            .conn
            .prepare_cached("SELECT max(id) FROM messages")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, Option<i64>>(0)))
            .map_err(|e| self.error(e))?
            .map(|id| int_as::<u64>(id, "id"))
            .transpose()
            .map_err(|d| self.corrupt("messages", d))?
            .into_iter()
            .chain(retained.iter().map(|r| r.id))
            .max();
        Ok(Recovered {
            sessions,
            retained,
            max_message_id,
        })
    }

    fn load_queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} WHERE d.client_id = ?1 AND d.state = 0 ORDER BY d.seq"
            ))
            .map_err(|e| self.error(e))?;
        let mut rows = stmt.query([client_id]).map_err(|e| self.error(e))?;
        let mut queue = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let (_, d) = decode_delivery(row).map_err(|d| self.corrupt("deliveries", d))?;
            queue.push(d);
        }
        Ok(queue)
    }

    fn load_retained(&mut self, topic: &str) -> Result<Option<StoredMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT topic, id, message, expires_at_ms, received_at_ms, publisher \
                 FROM retained WHERE topic = ?1",
            )
            .map_err(|e| self.error(e))?;
        let mut rows = stmt.query([topic]).map_err(|e| self.error(e))?;
        match rows.next().map_err(|e| self.error(e))? {
            Some(row) => Ok(Some(
                decode_retained(row).map_err(|d| self.corrupt("retained", d))?,
            )),
            None => Ok(None),
        }
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        match self.apply_ops(ops) {
            Ok(()) => {
                self.dirty = true;
                Ok(())
            }
            Err(Failure::Sql(e)) => Err(self.error(e)),
            Err(Failure::Invalid(detail)) => Err(StoreError::Database(detail)),
        }
    }

    fn tick(&mut self) -> Result<(), StoreError> {
        let Durability::Interval(every) = self.durability else {
            return Ok(());
        };
        if !self.dirty || self.last_sync.elapsed() < every {
            return Ok(());
        }
        // With `synchronous = NORMAL` a checkpoint syncs the WAL before copying it.
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| self.error(e))?;
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }
}

/// Checks that an existing database is ours and of our version or of version 1, without
/// writing to it; returns its version. `tables` names its tables and triggers.
fn check_ours(conn: &Connection, dir: &Path, tables: &[String]) -> Result<u32, StoreError> {
    if !tables.iter().any(|t| t == "meta") {
        return Err(corrupt(
            dir,
            "meta",
            "missing: not a broker database".to_owned(),
        ));
    }
    let mut meta = HashMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT key, value FROM meta")
            .map_err(|e| open_error(dir.to_owned(), "reading meta", e))?;
        let mut rows = stmt
            .query([])
            .map_err(|e| open_error(dir.to_owned(), "reading meta", e))?;
        while let Some(row) = rows
            .next()
            .map_err(|e| open_error(dir.to_owned(), "reading meta", e))?
        {
            let key = text(row, 0, "key").map_err(|d| corrupt(dir, "meta", d))?;
            let value = match row.get_ref(1) {
                Ok(ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                Ok(ValueRef::Integer(i)) => i.to_string(),
                _ => return Err(corrupt(dir, "meta", format!("key {key:?}: bad value"))),
            };
            meta.insert(key, value);
        }
    }
    match meta.get("program") {
        Some(p) if p == PROGRAM => {}
        Some(p) => {
            return Err(corrupt(
                dir,
                "meta",
                format!("written by {p:?}, not {PROGRAM:?}"),
            ))
        }
        None => {
            return Err(corrupt(
                dir,
                "meta",
                "no program: not a broker database".into(),
            ))
        }
    }
    let (version, expected): (u32, &[&str]) = match meta.get("format_version") {
        Some(v) if *v == SqliteStore::FORMAT_VERSION.to_string() => (
            SqliteStore::FORMAT_VERSION,
            &[TABLES.as_slice(), &TRIGGERS].concat(),
        ),
        Some(v) if v == "1" => (1, &TABLES_V1),
        Some(v) => {
            return Err(StoreError::Version {
                path: dir.to_owned(),
                found: v.clone(),
                expected: SqliteStore::FORMAT_VERSION,
            })
        }
        None => return Err(corrupt(dir, "meta", "no format_version".into())),
    };
    if let Some(missing) = expected
        .iter()
        .find(|t| !tables.iter().any(|have| have == *t))
    {
        return Err(corrupt(dir, missing, "missing".into()));
    }
    Ok(version)
}

/// Migrates a database of format version 1 to the current one, in one transaction (see
/// [`MIGRATE_V1_DELIVERIES`]); a retained message gets the next id after the deliveries'.
fn migrate_v1(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| open_error(dir.to_owned(), "migrating from version 1", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    tx.execute_batch(&format!(
        "{MIGRATE_V1_RENAME}{MESSAGE_TABLES}{MIGRATE_V1_DELIVERIES}"
    ))
    .map_err(failed)?;
    let mut next_id: i64 = tx
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM messages", [], |row| {
            row.get(0)
        })
        .map_err(failed)?;
    {
        let mut read = tx
            .prepare(
                "SELECT topic, message, expires_at_ms, received_at_ms, publisher \
                 FROM retained_v1 ORDER BY topic",
            )
            .map_err(failed)?;
        let mut write = tx
            .prepare(
                "INSERT INTO retained (topic, id, qos, payload_len, expires_at_ms, \
                 received_at_ms, publisher, message) \
                 SELECT topic, ?2, ?3, ?4, expires_at_ms, received_at_ms, publisher, message \
                 FROM retained_v1 WHERE topic = ?1",
            )
            .map_err(failed)?;
        let mut rows = read.query([]).map_err(failed)?;
        while let Some(row) = rows.next().map_err(failed)? {
            let topic = text(row, 0, "topic").map_err(|d| corrupt(dir, "retained", d))?;
            let p =
                decode_message(blob(row, 1, "message").map_err(|d| corrupt(dir, "retained", d))?)
                    .map_err(|d| corrupt(dir, "retained", format!("key {topic:?}: {d}")))?;
            write
                .execute(params![
                    topic,
                    next_id,
                    p.qos as u8,
                    i64::try_from(p.payload.len()).unwrap_or(i64::MAX),
                ])
                .map_err(failed)?;
            next_id += 1;
        }
    }
    tx.execute_batch(&format!(
        "DROP TABLE retained_v1; \
         UPDATE meta SET value = '{}' WHERE key = 'format_version';",
        SqliteStore::FORMAT_VERSION
    ))
    .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// An error while opening: the file system's fault (`Io`), the file's (`Corrupt`), or else.
fn open_error(dir: PathBuf, what: &str, e: rusqlite::Error) -> StoreError {
    let file = dir.join(FILE_NAME);
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            return StoreError::Corrupt {
                path: dir,
                detail: format!("{}: {what}: {e}", file.display()),
            }
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            std::io::ErrorKind::PermissionDenied
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            return StoreError::Io {
                path: dir,
                error: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{}: {what}: {e} (is another broker using this data directory?)",
                        file.display()
                    ),
                ),
            }
        }
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull | ErrorCode::NoLargeFileSupport) => {
            std::io::ErrorKind::Other
        }
        _ => return StoreError::Database(format!("{}: {what}: {e}", file.display())),
    };
    StoreError::Io {
        path: dir,
        error: std::io::Error::new(kind, format!("{}: {what}: {e}", file.display())),
    }
}

fn corrupt(dir: &Path, table: &str, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_owned(),
        detail: format!("table {table}: {detail}"),
    }
}

/// Serializes a message as the MQTT 5.0 PUBLISH that carries it.
fn encode_message(
    topic: &TopicName,
    payload: &Bytes,
    qos: QoS,
    retain: bool,
    properties: Properties,
) -> Result<Vec<u8>, Failure> {
    let publish = Publish {
        dup: false,
        qos,
        retain,
        topic: topic.clone(),
        packet_id: (qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN),
        payload: payload.clone(),
        properties,
    };
    let mut buf = Vec::with_capacity(16 + topic.len() + payload.len());
    Packet::Publish(publish)
        .encode(ProtocolVersion::V5, &mut buf)
        .map_err(|e| Failure::Invalid(format!("cannot store a message to {topic}: {e}")))?;
    Ok(buf)
}

/// Reads back what [`encode_message`] wrote.
fn decode_message(blob: &[u8]) -> Result<Publish, String> {
    match Packet::decode(blob, ProtocolVersion::V5, u32::MAX) {
        Ok(Some((Packet::Publish(p), n))) if n == blob.len() => Ok(p),
        Ok(_) => Err("message: not one whole PUBLISH".to_owned()),
        Err(e) => Err(format!("message: {e}")),
    }
}

/// The subscription options as an integer: the SUBSCRIBE options byte of MQTT 5.0,
/// `qos | no_local << 2 | retain_as_published << 3 | retain_handling << 4`.
fn pack_options(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

/// The inverse of [`pack_options`]; `None` for a value it does not produce.
fn unpack_options(v: i64) -> Option<SubscriptionOptions> {
    let byte = u8::try_from(v).ok()?;
    if byte & 0xC0 != 0 {
        return None;
    }
    Some(SubscriptionOptions {
        qos: QoS::from_u8(byte & 0x03).ok()?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return None,
        },
    })
}

fn pack_state(s: DeliveryState) -> (u8, Option<u16>) {
    match s {
        DeliveryState::Queued => (0, None),
        DeliveryState::AwaitingAck(id) => (1, Some(id)),
        DeliveryState::AwaitingComp(id) => (2, Some(id)),
    }
}

fn unpack_state(state: i64, packet_id: Option<i64>) -> Result<DeliveryState, String> {
    let id = packet_id
        .map(|v| int_as::<u16>(v, "packet_id"))
        .transpose()?;
    match (state, id) {
        (0, None) => Ok(DeliveryState::Queued),
        (1, Some(id)) => Ok(DeliveryState::AwaitingAck(id)),
        (2, Some(id)) => Ok(DeliveryState::AwaitingComp(id)),
        _ => Err(format!("state {state} with packet id {packet_id:?}")),
    }
}

fn seq_to_sql(seq: u64) -> Result<i64, Failure> {
    i64::try_from(seq).map_err(|_| Failure::Invalid(format!("seq {seq} is out of range")))
}

fn id_to_sql(id: u64) -> Result<i64, Failure> {
    i64::try_from(id).map_err(|_| Failure::Invalid(format!("message id {id} is out of range")))
}

/// Unix milliseconds (negative before 1970).
fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn from_ms(ms: i64, name: &str) -> Result<SystemTime, String> {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
    .ok_or_else(|| format!("{name}: time {ms} out of range"))
}

fn opt_time(row: &Row<'_>, i: usize, name: &str) -> Result<Option<SystemTime>, String> {
    opt_int(row, i, name)?
        .map(|ms| from_ms(ms, name))
        .transpose()
}

fn int(row: &Row<'_>, i: usize, name: &str) -> Result<i64, String> {
    opt_int(row, i, name)?.ok_or_else(|| format!("{name} is NULL"))
}

fn opt_int(row: &Row<'_>, i: usize, name: &str) -> Result<Option<i64>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Integer(v)) => Ok(Some(v)),
        Ok(ValueRef::Null) => Ok(None),
        Ok(v) => Err(format!("{name} is {}, not an integer", v.data_type())),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn int_as<T: TryFrom<i64>>(v: i64, name: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{name} {v} out of range"))
}

fn text(row: &Row<'_>, i: usize, name: &str) -> Result<String, String> {
    opt_text(row, i, name)?.ok_or_else(|| format!("{name} is NULL"))
}

fn opt_text(row: &Row<'_>, i: usize, name: &str) -> Result<Option<String>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Text(t)) => std::str::from_utf8(t)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| format!("{name} is not UTF-8")),
        Ok(ValueRef::Null) => Ok(None),
        Ok(v) => Err(format!("{name} is {}, not text", v.data_type())),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn opt_blob<'r>(row: &'r Row<'_>, i: usize, name: &str) -> Result<Option<&'r [u8]>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Blob(b)) => Ok(Some(b)),
        Ok(ValueRef::Null) => Ok(None),
        Ok(v) => Err(format!("{name} is {}, not a blob", v.data_type())),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

fn blob<'r>(row: &'r Row<'_>, i: usize, name: &str) -> Result<&'r [u8], String> {
    opt_blob(row, i, name)?.ok_or_else(|| format!("{name} is NULL"))
}

fn decode_session(row: &Row<'_>) -> Result<SessionMeta, String> {
    let client = text(row, 0, "client_id")?;
    (|| {
        let version = match int(row, 1, "version")? {
            4 => ProtocolVersion::V311,
            5 => ProtocolVersion::V5,
            v => return Err(format!("version {v}")),
        };
        let pending_will = match opt_blob(row, 6, "will")? {
            None => None,
            Some(b) => {
                let p = decode_message(b).map_err(|d| format!("will {d}"))?;
                let mut properties = p.properties;
                properties.will_delay_interval = opt_int(row, 7, "will_delay")?
                    .map(|v| int_as::<u32>(v, "will_delay"))
                    .transpose()?;
                let at = opt_time(row, 8, "will_at_ms")?.ok_or("will_at_ms is NULL")?;
                let will = Will {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    properties,
                };
                Some((will, at))
            }
        };
        Ok(SessionMeta {
            client_id: Arc::from(client.as_str()),
            version,
            username: opt_text(row, 2, "username")?,
            expiry_interval: int_as(int(row, 3, "expiry_interval")?, "expiry_interval")?,
            expires_at: opt_time(row, 4, "expires_at_ms")?,
            disconnected_at: opt_time(row, 5, "disconnected_at_ms")?,
            pending_will,
            dropped: int_as(int(row, 9, "dropped")?, "dropped")?,
        })
    })()
    .map_err(|d: String| format!("key {client:?}: {d}"))
}

fn decode_subscription(row: &Row<'_>) -> Result<(String, TopicFilter, SubEntry), String> {
    let client = text(row, 0, "client_id")?;
    let filter = text(row, 1, "filter")?;
    (|| {
        let options = int(row, 2, "options")?;
        let entry = SubEntry {
            options: unpack_options(options).ok_or(format!("options {options}"))?,
            id: opt_int(row, 3, "sub_id")?
                .map(|v| int_as::<u32>(v, "sub_id"))
                .transpose()?,
        };
        let filter = TopicFilter::new(&filter).map_err(|e| format!("filter: {e}"))?;
        Ok((filter, entry))
    })()
    .map(|(f, e)| (client.clone(), f, e))
    .map_err(|d: String| format!("key ({client:?}, {filter:?}): {d}"))
}

/// Reads a row of [`DELIVERY_COLUMNS`].
fn decode_delivery(row: &Row<'_>) -> Result<(String, StoredDelivery), String> {
    let client = text(row, 0, "client_id")?;
    let seq = int(row, 1, "seq").map_err(|d| format!("key ({client:?}, ?): {d}"))?;
    (|| {
        let state = unpack_state(int(row, 2, "state")?, opt_int(row, 3, "packet_id")?)?;
        let qos = int_as::<u8>(int(row, 4, "qos")?, "qos")?;
        let qos = QoS::from_u8(qos).map_err(|_| format!("qos {qos}"))?;
        let retain = int(row, 5, "retain")? != 0;
        let raw_ids = blob(row, 6, "sub_ids")?;
        if raw_ids.len() % 4 != 0 {
            return Err(format!("sub_ids of {} bytes", raw_ids.len()));
        }
        let sub_ids = raw_ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let id = int(row, 7, "message_id")?;
        let msg = decode_stored_message(row, 7)
            .map_err(|d| format!("message {id} (table messages): {d}"))?;
        Ok(StoredDelivery {
            seq: int_as(seq, "seq")?,
            state,
            qos,
            retain,
            sub_ids,
            msg,
        })
    })()
    .map(|d| (client.clone(), d))
    .map_err(|d: String| format!("key ({client:?}, {seq}): {d}"))
}

/// Reads `id, message, expires_at_ms, received_at_ms, publisher` from column `first` on.
fn decode_stored_message(row: &Row<'_>, first: usize) -> Result<StoredMessage, String> {
    let id = int_as::<u64>(int(row, first, "id")?, "id")?;
    let p = match opt_blob(row, first + 1, "message")? {
        Some(b) => decode_message(b)?,
        None => return Err("missing".to_owned()),
    };
    Ok(StoredMessage {
        id,
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        expires_at: opt_time(row, first + 2, "expires_at_ms")?,
        received_at: from_ms(int(row, first + 3, "received_at_ms")?, "received_at_ms")?,
        publisher: opt_text(row, first + 4, "publisher")?.map(Arc::from),
    })
}

/// Reads `topic`, then a message as [`decode_stored_message`] does.
fn decode_retained(row: &Row<'_>) -> Result<StoredMessage, String> {
    let topic = text(row, 0, "topic")?;
    (|| {
        let msg = decode_stored_message(row, 1)?;
        if msg.topic.as_str() != topic {
            return Err(format!("message is for topic {:?}", msg.topic.as_str()));
        }
        Ok(msg)
    })()
    .map_err(|d: String| format!("key {topic:?}: {d}"))
}

/// Reads `topic, id, qos, payload_len, expires_at_ms, received_at_ms`.
fn decode_retained_meta(row: &Row<'_>) -> Result<RetainedMeta, String> {
    let topic = text(row, 0, "topic")?;
    (|| {
        let qos = int_as::<u8>(int(row, 2, "qos")?, "qos")?;
        Ok(RetainedMeta {
            topic: TopicName::new(&topic).map_err(|e| format!("topic: {e}"))?,
            id: int_as(int(row, 1, "id")?, "id")?,
            qos: QoS::from_u8(qos).map_err(|_| format!("qos {qos}"))?,
            payload_len: int_as(int(row, 3, "payload_len")?, "payload_len")?,
            expires_at: opt_time(row, 4, "expires_at_ms")?,
            received_at: from_ms(int(row, 5, "received_at_ms")?, "received_at_ms")?,
        })
    })()
    .map_err(|d: String| format!("key {topic:?}: {d}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::memory::tests::{
        at, big, client, delivery, exercise, fan_out, msg, put_delivery,
    };
    use super::super::MemoryStore;
    use super::*;

    /// A database written by the code of format version 1 (before messages were shared):
    /// the history of [`exercise`], as it left it.
    const V1_FIXTURE: &[u8] = include_bytes!("testdata/v1.sqlite3");

    /// One integer from a query.
    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// The size of the database, in bytes (the write-ahead log included).
    fn stored_bytes(store: &SqliteStore) -> i64 {
        count(store, "PRAGMA page_count") * count(store, "PRAGMA page_size")
    }

    /// Every message row counts exactly the deliveries that reference it, and every
    /// delivery's message is there.
    fn assert_references_counted(store: &SqliteStore) {
        let miscounted = count(
            store,
            "SELECT count(*) FROM messages m \
             WHERE refs <> (SELECT count(*) FROM deliveries d WHERE d.message_id = m.id)",
        );
        let dangling = count(
            store,
            "SELECT count(*) FROM deliveries d \
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = d.message_id)",
        );
        let unpaired = count(
            store,
            "SELECT (SELECT count(*) FROM messages m \
                     WHERE NOT EXISTS (SELECT 1 FROM message_bodies b WHERE b.id = m.id)) \
                  + (SELECT count(*) FROM message_bodies b \
                     WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = b.id))",
        );
        assert_eq!((miscounted, dangling, unpaired), (0, 0, 0));
    }

    fn message_ids(store: &SqliteStore) -> Vec<u64> {
        let mut stmt = store
            .conn
            .prepare("SELECT id FROM messages ORDER BY id")
            .unwrap();
        let ids = stmt
            .query_map([], |row| row.get::<_, i64>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        ids.into_iter().map(|id| id as u64).collect()
    }

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("broker-store-{}-{}", std::process::id(), n));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            set_mode(&self.0, 0o700);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }

    #[test]
    fn options_pack_into_the_subscribe_options_byte_and_back() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for retain_handling in [
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendIfNew,
                RetainHandling::DoNotSend,
            ] {
                for (no_local, retain_as_published) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    let o = SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    };
                    assert_eq!(unpack_options(i64::from(pack_options(o))), Some(o));
                }
            }
        }
        let o = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::DoNotSend,
        };
        assert_eq!(pack_options(o), 0b10_0110);
        for bad in [3, 0b11_0000, 0x40, 256, -1] {
            assert_eq!(unpack_options(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_kept_to_the_millisecond() {
        for t in [at(0), at(123_456), SystemTime::UNIX_EPOCH] {
            assert_eq!(from_ms(to_ms(t), "t").unwrap(), t);
        }
        let before = SystemTime::UNIX_EPOCH - Duration::from_millis(5);
        assert_eq!(to_ms(before), -5);
        assert_eq!(from_ms(-5, "t").unwrap(), before);
    }

    #[test]
    fn the_sqlite_store_keeps_what_it_is_given_and_recovers_it_after_a_restart() {
        for durability in [
            Durability::Always,
            Durability::Interval(Duration::ZERO),
            Durability::None,
        ] {
            let tmp = TempDir::new();
            let expected = {
                let mut store = SqliteStore::open(&tmp.0, durability).unwrap();
                let expected = exercise(&mut store);
                store.tick().unwrap();
                expected
            };
            let mut store = SqliteStore::open(&tmp.0, durability).unwrap();
            assert_eq!(store.load().unwrap(), expected);
            // Only the messages of the deliveries left are stored: d1, d2 (in flight to
            // `a`), d7, d9 (queued for `a`; also for `c`, `d` and `e`, which are gone), b's.
            assert_eq!(message_ids(&store), vec![1, 2, 7, 9, 11]);
            assert_references_counted(&store);
            let queue = store.load_queue("a").unwrap();
            assert_eq!(
                queue.iter().map(|d| d.seq).collect::<Vec<_>>(),
                vec![7, 9],
                "{durability:?}"
            );
        }
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused() {
        let tmp = TempDir::new();
        let _first = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        // Exclusive locking: the second open waits for the lock (busy timeout), then fails.
        match SqliteStore::open(&tmp.0, Durability::None) {
            Err(StoreError::Io { path, .. }) => assert_eq!(path, tmp.0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_corrupt_and_left_alone() {
        let tmp = TempDir::new();
        let file = tmp.0.join(FILE_NAME);
        let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&file, &garbage).unwrap();
        for _ in 0..2 {
            match SqliteStore::open(&tmp.0, Durability::Always) {
                Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, tmp.0),
                other => panic!("{other:?}"),
            }
            assert_eq!(std::fs::read(&file).unwrap(), garbage);
        }
    }

    #[test]
    fn an_sqlite_file_of_another_program_is_corrupt_and_left_alone() {
        let tmp = TempDir::new();
        let file = tmp.0.join(FILE_NAME);
        {
            let conn = Connection::open(&file).unwrap();
            conn.execute_batch("CREATE TABLE foo (x); INSERT INTO foo VALUES (1);")
                .unwrap();
        }
        let before = std::fs::read(&file).unwrap();
        match SqliteStore::open(&tmp.0, Durability::Always) {
            Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("meta"), "{detail}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    #[test]
    fn a_database_of_another_format_version_is_refused_and_left_alone() {
        let tmp = TempDir::new();
        let file = tmp.0.join(FILE_NAME);
        {
            let conn = Connection::open(&file).unwrap();
            conn.execute_batch(&schema()).unwrap();
            conn.execute_batch(
                "INSERT INTO meta VALUES ('format_version', 999), ('program', 'mqtt-bridge');",
            )
            .unwrap();
        }
        let before = std::fs::read(&file).unwrap();
        match SqliteStore::open(&tmp.0, Durability::Always) {
            Err(StoreError::Version {
                path,
                found,
                expected,
            }) => {
                assert_eq!((path, found.as_str(), expected), (tmp.0.clone(), "999", 2));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    #[test]
    fn a_database_missing_a_table_or_trigger_is_corrupt() {
        let tmp = TempDir::new();
        drop(SqliteStore::open(&tmp.0, Durability::None).unwrap());
        {
            let conn = Connection::open(tmp.0.join(FILE_NAME)).unwrap();
            conn.execute_batch("DROP TABLE retained").unwrap();
        }
        match SqliteStore::open(&tmp.0, Durability::None) {
            Err(StoreError::Corrupt { detail, .. }) => {
                assert!(detail.contains("retained"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // Without a trigger the references would go uncounted.
        let tmp = TempDir::new();
        drop(SqliteStore::open(&tmp.0, Durability::None).unwrap());
        {
            let conn = Connection::open(tmp.0.join(FILE_NAME)).unwrap();
            conn.execute_batch("DROP TRIGGER delivery_removed").unwrap();
        }
        match SqliteStore::open(&tmp.0, Durability::None) {
            Err(StoreError::Corrupt { detail, .. }) => {
                assert!(detail.contains("delivery_removed"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_row_is_corrupt_naming_its_table_and_key() {
        let tmp = TempDir::new();
        {
            let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
            exercise(&mut store);
        }
        let cases = [
            (
                "UPDATE message_bodies SET message = x'30' WHERE id = \
                 (SELECT message_id FROM deliveries WHERE client_id = 'a' AND seq = 1)",
                "deliveries",
                "(\"a\", 1): message 1 (table messages)",
            ),
            (
                "DELETE FROM messages WHERE id = 11; DELETE FROM message_bodies WHERE id = 11",
                "deliveries",
                "(\"b\", 1): message 11 (table messages): missing",
            ),
            (
                "UPDATE deliveries SET qos = 3 WHERE client_id = 'a' AND seq = 2",
                "deliveries",
                "(\"a\", 2)",
            ),
            (
                "UPDATE sessions SET version = 'x' WHERE client_id = 'b'",
                "sessions",
                "\"b\"",
            ),
            (
                "UPDATE subscriptions SET options = 255 WHERE client_id = 'a'",
                "subscriptions",
                "\"a\"",
            ),
            ("UPDATE retained SET qos = 3", "retained", "\"a/b\": qos 3"),
            (
                "UPDATE retained SET topic = 'a/#'",
                "retained",
                "\"a/#\": topic",
            ),
        ];
        for (sql, table, key) in cases {
            let copy = TempDir::new();
            std::fs::copy(tmp.0.join(FILE_NAME), copy.0.join(FILE_NAME)).unwrap();
            {
                let conn = Connection::open(copy.0.join(FILE_NAME)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            let mut store = SqliteStore::open(&copy.0, Durability::None).unwrap();
            match store.load() {
                Err(StoreError::Corrupt { detail, .. }) => {
                    assert!(
                        detail.contains(table) && detail.contains(key),
                        "{sql}: {detail}"
                    );
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        // The queue of a session reads its rows only.
        let copy = TempDir::new();
        std::fs::copy(tmp.0.join(FILE_NAME), copy.0.join(FILE_NAME)).unwrap();
        {
            let conn = Connection::open(copy.0.join(FILE_NAME)).unwrap();
            conn.execute_batch("UPDATE deliveries SET sub_ids = x'00' WHERE seq = 9")
                .unwrap();
        }
        let mut store = SqliteStore::open(&copy.0, Durability::None).unwrap();
        assert!(matches!(
            store.load_queue("a"),
            Err(StoreError::Corrupt { .. })
        ));
        // A retained message is read when asked for: its metadata loads, it does not.
        let copy = TempDir::new();
        std::fs::copy(tmp.0.join(FILE_NAME), copy.0.join(FILE_NAME)).unwrap();
        {
            let conn = Connection::open(copy.0.join(FILE_NAME)).unwrap();
            conn.execute_batch("UPDATE retained SET topic = 'other'")
                .unwrap();
        }
        let mut store = SqliteStore::open(&copy.0, Durability::None).unwrap();
        assert_eq!(store.load().unwrap().retained[0].topic.as_str(), "other");
        match store.load_retained("other") {
            Err(StoreError::Corrupt { detail, .. }) => {
                assert!(
                    detail.contains("retained")
                        && detail.contains("\"other\": message is for topic \"a/b\""),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unusable_directory_is_an_io_error() {
        let tmp = TempDir::new();
        // A path under a regular file can never be a directory, even for root.
        let file = tmp.0.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        match SqliteStore::open(&file.join("data"), Durability::Always) {
            Err(StoreError::Io { path, .. }) => assert_eq!(path, file.join("data")),
            other => panic!("{other:?}"),
        }
        match SqliteStore::open(&file, Durability::Always) {
            Err(StoreError::Io { .. }) => {}
            other => panic!("{other:?}"),
        }

        // A directory without write permission. Root ignores permission bits, so when a
        // probe write succeeds there is nothing meaningful to assert but "no panic".
        let ro = tmp.0.join("read-only");
        std::fs::create_dir(&ro).unwrap();
        let existing = tmp.0.join("read-only-existing");
        drop(SqliteStore::open(&existing, Durability::Always).unwrap());
        set_mode(&ro, 0o500);
        set_mode(&existing, 0o500);
        let probe = ro.join("probe");
        let permissions_enforced = std::fs::write(&probe, b"x").is_err();
        let _ = std::fs::remove_file(&probe);
        let fresh = SqliteStore::open(&ro, Durability::Always);
        let nested = SqliteStore::open(&ro.join("data"), Durability::Always);
        // An existing database in a read-only directory: its WAL cannot be created.
        let old = SqliteStore::open(&existing, Durability::Always);
        if permissions_enforced {
            for result in [fresh, nested, old] {
                match result {
                    Err(StoreError::Io { .. }) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        set_mode(&ro, 0o700);
        set_mode(&existing, 0o700);
    }

    #[test]
    fn one_message_queued_for_200_sessions_is_one_row_and_its_payload_is_stored_once() {
        let tmp = TempDir::new();
        let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        let before = stored_bytes(&store);
        let m = big(42, 1 << 20);
        fan_out(&mut store, 200, &m);
        assert_eq!(count(&store, "SELECT count(*) FROM messages"), 1);
        assert_eq!(
            count(&store, "SELECT refs FROM messages WHERE id = 42"),
            200
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM deliveries WHERE message_id = 42"
            ),
            200
        );
        assert_references_counted(&store);
        // One payload and 200 small rows, where a copy per session took 200 MB.
        let grown = stored_bytes(&store) - before;
        assert!(
            (1 << 20..(1 << 20) * 5 / 4).contains(&grown),
            "grew by {grown} bytes"
        );
        let on_disk: u64 = ["", "-wal"]
            .iter()
            .filter_map(|ext| std::fs::metadata(tmp.0.join(format!("{FILE_NAME}{ext}"))).ok())
            .map(|m| m.len())
            .sum();
        assert!(on_disk < 3 << 20, "{on_disk} bytes on disk");
    }

    #[test]
    fn deleting_the_deliveries_one_by_one_frees_the_message_row_at_the_last() {
        let tmp = TempDir::new();
        let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        fan_out(&mut store, 200, &big(7, 100_000));
        let free_before = count(&store, "PRAGMA freelist_count");
        for i in 0..200 {
            assert_eq!(
                message_ids(&store),
                vec![7],
                "before delivery {i} is deleted"
            );
            store
                .apply(&[Op::DeleteDelivery {
                    client: client(i),
                    seq: 0,
                }])
                .unwrap();
            assert_eq!(
                count(&store, "SELECT coalesce(sum(refs), 0) FROM messages"),
                199 - i as i64
            );
        }
        assert_eq!(message_ids(&store), Vec::<u64>::new());
        // The payload's pages are free for the next messages.
        let freed = count(&store, "PRAGMA freelist_count") - free_before;
        assert!(
            freed * count(&store, "PRAGMA page_size") >= 96_000,
            "{freed} pages"
        );
        assert_eq!(store.load().unwrap().max_message_id, None);
    }

    #[test]
    fn deleting_a_session_releases_the_messages_of_its_deliveries() {
        let tmp = TempDir::new();
        let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        fan_out(
            &mut store,
            2,
            &msg(1, "t", b"shared", QoS::AtLeastOnce, false),
        );
        // Session 0 also holds a message of its own, twice, and replaces a delivery.
        let own = msg(2, "t", b"own", QoS::AtLeastOnce, false);
        let replaced = msg(3, "t", b"replaced", QoS::AtLeastOnce, false);
        store
            .apply(&[
                put_delivery(
                    &client(0),
                    delivery(
                        1,
                        DeliveryState::AwaitingAck(1),
                        QoS::AtLeastOnce,
                        own.clone(),
                    ),
                ),
                put_delivery(
                    &client(0),
                    delivery(2, DeliveryState::Queued, QoS::AtLeastOnce, replaced),
                ),
                put_delivery(
                    &client(0),
                    delivery(2, DeliveryState::Queued, QoS::AtLeastOnce, own.clone()),
                ),
                // The same delivery again: still one reference.
                put_delivery(
                    &client(0),
                    delivery(2, DeliveryState::Queued, QoS::AtLeastOnce, own),
                ),
            ])
            .unwrap();
        assert_eq!(message_ids(&store), vec![1, 2]);
        assert_references_counted(&store);
        store.apply(&[Op::DeleteSession(client(0))]).unwrap();
        assert_eq!(message_ids(&store), vec![1]);
        assert_eq!(count(&store, "SELECT refs FROM messages"), 1);
        store.apply(&[Op::DeleteSession(client(1))]).unwrap();
        assert_eq!(message_ids(&store), Vec::<u64>::new());
    }

    #[test]
    fn a_batch_refused_at_commit_leaves_the_references_as_they_were() {
        let tmp = TempDir::new();
        let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        let m = msg(1, "t", b"m", QoS::AtLeastOnce, false);
        fan_out(&mut store, 1, &m);
        // A delivery to a session that is not stored: the foreign key refuses the batch.
        let refused = store.apply(&[
            put_delivery(
                "ghost",
                delivery(0, DeliveryState::Queued, QoS::AtLeastOnce, m),
            ),
            Op::DeleteDelivery {
                client: client(0),
                seq: 0,
            },
        ]);
        assert!(
            matches!(refused, Err(StoreError::Database(_))),
            "{refused:?}"
        );
        assert_eq!(count(&store, "SELECT refs FROM messages WHERE id = 1"), 1);
        assert_references_counted(&store);
    }

    #[test]
    fn recovery_after_a_restart_gives_back_the_queues_with_their_shared_message() {
        let tmp = TempDir::new();
        let m = big(42, 1 << 20);
        {
            let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
            fan_out(&mut store, 200, &m);
        }
        let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
        let recovered = store.load().unwrap();
        assert_eq!(recovered.max_message_id, Some(42));
        assert_eq!(recovered.sessions.len(), 200);
        for s in &recovered.sessions {
            assert_eq!((s.queued, s.max_seq), ((1, 1 << 20), Some(0)));
        }
        for i in 0..200 {
            assert_eq!(
                store.load_queue(&client(i)).unwrap(),
                vec![delivery(
                    0,
                    DeliveryState::Queued,
                    QoS::AtLeastOnce,
                    m.clone()
                )]
            );
        }
        assert_eq!(message_ids(&store), vec![42]);
        assert_eq!(count(&store, "SELECT refs FROM messages"), 200);
    }

    #[test]
    fn retained_messages_load_as_metadata_and_one_is_read_when_asked_for() {
        let tmp = TempDir::new();
        let retained: Vec<StoredMessage> = (0..3u8)
            .map(|i| StoredMessage {
                topic: TopicName::new(format!("r/{i}")).unwrap(),
                qos: QoS::from_u8(i).unwrap(),
                retain: true,
                expires_at: (i == 1).then(|| at(9_000)),
                received_at: at(u64::from(i)),
                ..big(100 + u64::from(i), 100_000 + usize::from(i))
            })
            .collect();
        {
            let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
            let ops: Vec<Op> = retained
                .iter()
                .map(|m| Op::PutRetained(Box::new(m.clone())))
                .collect();
            store.apply(&ops).unwrap();
        }
        let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        let recovered = store.load().unwrap();
        assert_eq!(
            recovered.retained,
            retained.iter().map(RetainedMeta::of).collect::<Vec<_>>()
        );
        assert_eq!(recovered.retained[2].payload_len, 100_002);
        assert_eq!(recovered.retained[1].expires_at, Some(at(9_000)));
        assert_eq!(recovered.max_message_id, Some(102));
        for m in &retained {
            assert_eq!(store.load_retained(&m.topic).unwrap().as_ref(), Some(m));
        }
        assert_eq!(store.load_retained("r/9").unwrap(), None);
    }

    /// What is left to compare once the message ids are set aside.
    fn without_ids(mut r: Recovered) -> Recovered {
        for s in &mut r.sessions {
            for d in &mut s.inflight {
                d.msg.id = 0;
            }
        }
        for m in &mut r.retained {
            m.id = 0;
        }
        r.max_message_id = None;
        r
    }

    #[test]
    fn a_version_1_database_opens_migrated_with_its_sessions_queues_and_retained_messages() {
        // What the same history leaves in this version's store.
        let mut memory = MemoryStore::new();
        let expected = exercise(&mut memory);
        let tmp = TempDir::new();
        std::fs::write(tmp.0.join(FILE_NAME), V1_FIXTURE).unwrap();
        let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'format_version'"
            ),
            2
        );
        let got = store.load().unwrap();
        // Version 1 had no ids: the deliveries' messages are numbered in (client, seq)
        // order, one each, then the retained messages.
        let inflight: Vec<u64> = got
            .sessions
            .iter()
            .flat_map(|s| s.inflight.iter().map(|d| d.msg.id))
            .collect();
        assert_eq!(inflight, vec![1, 2, 5]);
        assert_eq!(
            got.retained.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![6]
        );
        assert_eq!(got.max_message_id, Some(6));
        assert_eq!(without_ids(got), without_ids(expected));
        let queue = store.load_queue("a").unwrap();
        assert_eq!(
            queue.iter().map(|d| d.msg.id).collect::<Vec<_>>(),
            vec![3, 4]
        );
        let mut expected_queue = memory.load_queue("a").unwrap();
        for (d, id) in expected_queue.iter_mut().zip([3, 4]) {
            d.msg.id = id;
        }
        assert_eq!(queue, expected_queue);
        let mut expected_retained = memory.load_retained("a/b").unwrap().unwrap();
        expected_retained.id = 6;
        assert_eq!(store.load_retained("a/b").unwrap(), Some(expected_retained));
        assert_eq!(message_ids(&store), vec![1, 2, 3, 4, 5]);
        assert_references_counted(&store);

        // It is a database of this version now: it takes batches and opens as it is.
        store.apply(&[Op::DeleteSession("a".into())]).unwrap();
        assert_eq!(message_ids(&store), vec![5]);
        drop(store);
        let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
        assert_eq!(store.load().unwrap().sessions.len(), 1);
        assert_references_counted(&store);
    }

    #[test]
    fn a_version_1_database_that_cannot_be_migrated_is_left_as_it_was() {
        let tmp = TempDir::new();
        let file = tmp.0.join(FILE_NAME);
        std::fs::write(&file, V1_FIXTURE).unwrap();
        {
            let conn = Connection::open(&file).unwrap();
            conn.execute_batch("UPDATE retained SET message = x'30'")
                .unwrap();
        }
        let before = std::fs::read(&file).unwrap();
        match SqliteStore::open(&tmp.0, Durability::Always) {
            Err(StoreError::Corrupt { detail, .. }) => {
                assert!(
                    detail.contains("retained") && detail.contains("a/b"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&file).unwrap(), before);
        let conn = Connection::open(&file).unwrap();
        let version: String = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'format_version'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(version, "1");
    }
}
