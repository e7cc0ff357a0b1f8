//! The schema of the SQLite store: its tables, the check that an existing file
//! is ours and of a version we read, and the migrations from formats 1 to 4 (1 and 2
//! migrate to 3 first, then 3 to 4, then 4 to 5).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::ffi::ErrorCode;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, TransactionBehavior};

use super::rows::*;
use super::SqliteStore;
use super::StoreError;

/// The database file in the data directory.
pub(super) const FILE_NAME: &str = "broker.sqlite3";

/// Who writes the database, kept in `meta` so a foreign SQLite file is not taken for ours.
pub(super) const PROGRAM: &str = "mqtt-bridge";

/// The tables besides `meta`.
pub(super) const TABLES: [&str; 8] = [
    "sessions",
    "subscriptions",
    "messages",
    "message_refs",
    "deliveries",
    "queue_segments",
    "inbound_qos2",
    "retained",
];

/// The tables besides `meta` in format version 3.
pub(super) const TABLES_V3: [&str; 6] = [
    "sessions",
    "subscriptions",
    "messages",
    "deliveries",
    "inbound_qos2",
    "retained",
];

/// The index of format version 3, which found whether a message was still referenced.
pub(super) const INDEXES_V3: [&str; 1] = ["deliveries_by_message"];

/// The tables besides `meta` in format version 2.
pub(super) const TABLES_V2: [&str; 7] = [
    "sessions",
    "subscriptions",
    "messages",
    "message_bodies",
    "deliveries",
    "inbound_qos2",
    "retained",
];

/// The triggers of format version 2, which counted the references to a message.
pub(super) const TRIGGERS_V2: [&str; 3] = ["delivery_added", "delivery_removed", "message_removed"];

/// The tables besides `meta` in format version 1.
pub(super) const TABLES_V1: [&str; 5] = [
    "sessions",
    "subscriptions",
    "deliveries",
    "inbound_qos2",
    "retained",
];

pub(super) const META_TABLE: &str = "
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;";

/// The tables that did not change since version 1.
pub(super) const SESSION_TABLES: &str = "
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

/// The table of queue segments of format 5, as both the schema and the migration from 4
/// make it.
macro_rules! queue_segments_table {
    () => {
        "
CREATE TABLE queue_segments (
    id INTEGER PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    entries BLOB NOT NULL
);"
    };
}

/// The tables that changed since version 1: `messages`, `deliveries`, `queue_segments` and
/// `retained`.
///
/// A message is one row of `messages`, written once and never updated; `refs` of its row
/// in `message_refs` counts the deliveries that reference it (rows of `deliveries` and
/// entries of `queue_segments`) when they are two or more; a message without a row there
/// has one (most messages of a queue that is not a fan-out: a row fewer to write when it
/// is queued, and to read and delete when it is acknowledged). The count is a table of its own so that changing it does
/// not rewrite the message (an update rewrites the whole row, payload included). A batch
/// adds up its changes to each message's count in memory and writes each count once, at
/// its end, deleting the messages left without a reference. A delivery is either a row of
/// `deliveries` (one per delivery: in flight, queued and then changed, or queued alone: the
/// only delivery a batch queued for its session) or an entry of a queue segment: the
/// deliveries (two or more) queued for one session in one batch, in one row, seq
/// order, between `first_seq` (a lower bound, the key) and `last_seq` (the highest entry).
/// Queueing a message for N offline sessions is so N entries in N segment rows shared with
/// the batch's other messages, not N rows. Taking a delivery out of a segment (sent,
/// acknowledged, dropped) rewrites the segment, or deletes it with its last entry.
/// The ranges of a session's segments never overlap, so the one that may hold a seq is
/// found by one look-up in the index of the segments, which is in memory: the table is in
/// the order its rows were written (see `segments::SegmentIndex` for why).
/// In `retained`, written whole every time, the big column, `message`, comes last, so
/// reading the others does not read through its overflow pages.
pub(super) const MESSAGE_TABLES: &str = concat!(
    "
CREATE TABLE messages (
    id INTEGER PRIMARY KEY NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT,
    message BLOB NOT NULL
);
CREATE TABLE message_refs (
    id INTEGER PRIMARY KEY NOT NULL,
    refs INTEGER NOT NULL
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
",
    queue_segments_table!(),
    "
CREATE TABLE retained (
    topic TEXT PRIMARY KEY NOT NULL,
    id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT,
    message BLOB NOT NULL
);"
);

/// The tables of format version 3 that changed since version 1: `messages`, `deliveries`
/// and `retained` (what [`migrate_v1`] makes, before [`MIGRATE_V3`]).
///
/// A message is one row of `messages`, written once and never updated (its body is its
/// last column); a delivery references it by `message_id`, and the index
/// `deliveries_by_message` finds whether any still does: the store deletes a message in
/// the batch that removes its last delivery. No reference count is kept, so queueing a
/// message costs one insert for the message and one per delivery, and nothing is rewritten
/// as deliveries come and go. In `retained`, written whole every time, the big column,
/// `message`, comes last, so reading the others does not read through its overflow pages.
pub(super) const MESSAGE_TABLES_V3: &str = "
CREATE TABLE messages (
    id INTEGER PRIMARY KEY NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT,
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
CREATE INDEX deliveries_by_message ON deliveries (message_id);
CREATE TABLE retained (
    topic TEXT PRIMARY KEY NOT NULL,
    id INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT,
    message BLOB NOT NULL
);";

/// Version 2 to 3: the reference counts and their triggers go, each message's body joins
/// its row, and deliveries are indexed by message.
pub(super) const MIGRATE_V2: &str = "
DROP TRIGGER delivery_added;
DROP TRIGGER delivery_removed;
DROP TRIGGER message_removed;
ALTER TABLE messages RENAME TO messages_v2;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY NOT NULL,
    payload_len INTEGER NOT NULL,
    expires_at_ms INTEGER,
    received_at_ms INTEGER NOT NULL,
    publisher TEXT,
    message BLOB NOT NULL
);
INSERT INTO messages (id, payload_len, expires_at_ms, received_at_ms, publisher, message)
    SELECT m.id, m.payload_len, m.expires_at_ms, m.received_at_ms, m.publisher, b.message
    FROM messages_v2 m JOIN message_bodies b ON b.id = m.id;
DROP TABLE messages_v2;
DROP TABLE message_bodies;
CREATE INDEX deliveries_by_message ON deliveries (message_id);";

/// Version 3 to 4: the messages get the count of their references, their index goes, and
/// the (empty) queue segments are made; the deliveries stay rows of `deliveries`.
pub(super) const MIGRATE_V3: &str = "
DROP INDEX deliveries_by_message;
CREATE TABLE message_refs (
    id INTEGER PRIMARY KEY NOT NULL,
    refs INTEGER NOT NULL
);
INSERT INTO message_refs (id, refs)
    SELECT message_id, count(*) FROM deliveries GROUP BY message_id;
DELETE FROM messages WHERE id NOT IN (SELECT id FROM message_refs);
CREATE TABLE queue_segments (
    client_id TEXT NOT NULL
        REFERENCES sessions (client_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (client_id, first_seq)
) WITHOUT ROWID;";

/// Version 4 to 5: the queue segments move to a table in the order they are written (a
/// rowid table without an index; the engine's index of them is in memory), copied in
/// (session, `first_seq`) order, and a message of one reference loses its row of
/// `message_refs` (no row now means one).
pub(super) const MIGRATE_V4: &str = concat!(
    "
ALTER TABLE queue_segments RENAME TO queue_segments_v4;
",
    queue_segments_table!(),
    "
INSERT INTO queue_segments (client_id, first_seq, last_seq, count, bytes, entries)
    SELECT client_id, first_seq, last_seq, count, bytes, entries FROM queue_segments_v4
    ORDER BY client_id, first_seq;
DROP TABLE queue_segments_v4;
DELETE FROM message_refs WHERE refs = 1;"
);

/// Version 1 to 3, before the new tables are made: the old ones step aside.
pub(super) const MIGRATE_V1_RENAME: &str = "
ALTER TABLE deliveries RENAME TO deliveries_v1;
ALTER TABLE retained RENAME TO retained_v1;";

/// Version 1 to 3, once the new tables are made, the part SQL does alone: every delivery's
/// message becomes a row of `messages` (numbered 1, 2, ... in (client_id, seq) order:
/// version 1 kept a copy per delivery), referenced from the new `deliveries`. The retained
/// rows are copied by [`migrate_v1`], which must read their messages.
pub(super) const MIGRATE_V1_DELIVERIES: &str = "
INSERT INTO messages (id, payload_len, expires_at_ms, received_at_ms, publisher, message)
    SELECT row_number() OVER (ORDER BY client_id, seq), payload_len, expires_at_ms,
           received_at_ms, publisher, message
    FROM deliveries_v1;
INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, sub_ids, message_id)
    SELECT client_id, seq, state, packet_id, qos, retain, sub_ids,
           row_number() OVER (ORDER BY client_id, seq)
    FROM deliveries_v1;
DROP TABLE deliveries_v1;";

/// The whole schema of the current version.
pub(super) fn schema() -> String {
    format!("{META_TABLE}{SESSION_TABLES}{MESSAGE_TABLES}")
}

/// The columns of a delivery with its message, in the order [`decode_delivery`] reads them.
pub(super) const DELIVERY_COLUMNS: &str =
    "d.client_id, d.seq, d.state, d.packet_id, d.qos, d.retain, \
                                d.sub_ids, d.message_id, m.message, m.expires_at_ms, \
                                m.received_at_ms, m.publisher \
                                FROM deliveries d \
                                LEFT JOIN messages m ON m.id = d.message_id";

/// Checks that an existing database is ours and of our version or of version 1 or 2,
/// without writing to it; returns its version. `tables` names its tables, triggers and
/// indexes.
pub(super) fn check_ours(
    conn: &Connection,
    dir: &Path,
    tables: &[String],
) -> Result<u32, StoreError> {
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
        Some(v) if *v == SqliteStore::FORMAT_VERSION.to_string() => {
            (SqliteStore::FORMAT_VERSION, &TABLES)
        }
        // Version 4 has the same tables as 5 (one of them keyed otherwise).
        Some(v) if v == "4" => (4, &TABLES),
        Some(v) if v == "3" => (3, &[TABLES_V3.as_slice(), &INDEXES_V3].concat()),
        Some(v) if v == "2" => (2, &[TABLES_V2.as_slice(), &TRIGGERS_V2].concat()),
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

/// Migrates a database of format version 1 to version 3 (then [`migrate_v3`]), in one transaction (see
/// [`MIGRATE_V1_DELIVERIES`]); a retained message gets the next id after the deliveries'.
pub(super) fn migrate_v1(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| open_error(dir.to_owned(), "migrating from version 1", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    tx.execute_batch(&format!(
        "{MIGRATE_V1_RENAME}{MESSAGE_TABLES_V3}{MIGRATE_V1_DELIVERIES}"
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
    tx.execute_batch(
        "DROP TABLE retained_v1; \
         UPDATE meta SET value = '3' WHERE key = 'format_version';",
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Migrates a database of format version 2 to version 3 (then [`migrate_v3`]), in one
/// transaction (see [`MIGRATE_V2`]): the same sessions, deliveries, messages (ids kept) and
/// retained rows.
pub(super) fn migrate_v2(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    migrate(conn, dir, 2, MIGRATE_V2, 3)
}

/// Migrates a database of format version 3 to version 4 (then [`migrate_v4`]), in one
/// transaction (see [`MIGRATE_V3`]): the same sessions, deliveries, messages (ids kept) and
/// retained rows. A crash between [`migrate_v1`] or [`migrate_v2`] and this leaves a file
/// of version 3, migrated at the next open.
pub(super) fn migrate_v3(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    migrate(conn, dir, 3, MIGRATE_V3, 4)
}

/// Migrates a database of format version 4 to the current one, in one transaction (see
/// [`MIGRATE_V4`]): the same rows, the queue segments in a table of another key.
pub(super) fn migrate_v4(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    migrate(conn, dir, 4, MIGRATE_V4, SqliteStore::FORMAT_VERSION)
}

/// Runs the statements of one migration and sets the format version, in one transaction.
fn migrate(
    conn: &mut Connection,
    dir: &Path,
    from: u32,
    sql: &str,
    to: u32,
) -> Result<(), StoreError> {
    let what = format!("migrating from version {from}");
    let failed = |e: rusqlite::Error| open_error(dir.to_owned(), &what, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    tx.execute_batch(&format!(
        "{sql} UPDATE meta SET value = '{to}' WHERE key = 'format_version';"
    ))
    .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Locks the data directory itself (`flock` on it, released when the process ends,
/// however it ends) for the life of the store: a second broker on the same data directory
/// fails at start rather than writing the same database. Nothing is written into the
/// directory for it, so a directory that is refused is left as it was. (SQLite's exclusive
/// locking mode did this until the checkpointer needed a second connection to the file.)
pub(super) fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let failed = |kind: std::io::ErrorKind, what: String| StoreError::Io {
        path: dir.to_owned(),
        error: std::io::Error::new(kind, format!("{}: {what}", dir.display())),
    };
    let handle = std::fs::File::open(dir).map_err(|e| failed(e.kind(), e.to_string()))?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => Err(failed(
            std::io::ErrorKind::WouldBlock,
            "locked (is another broker using this data directory?)".to_owned(),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e.kind(), e.to_string())),
    }
}

/// An error while opening: the file system's fault (`Io`), the file's (`Corrupt`), or else.
pub(super) fn open_error(dir: PathBuf, what: &str, e: rusqlite::Error) -> StoreError {
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
                        "{}: {what}: {e} (is another program using the database?)",
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

pub(super) fn corrupt(dir: &Path, table: &str, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_owned(),
        detail: format!("table {table}: {detail}"),
    }
}
