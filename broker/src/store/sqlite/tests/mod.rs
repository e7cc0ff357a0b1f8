//! The SQLite store's tests: the shared store behaviour, sharing of messages, migration,
//! and files the store must refuse. This file: what both stores keep, the row codecs, and
//! the files the store refuses; `sharing`: one copy of a message for many sessions, and
//! retained messages read on demand, queue segments; `migration`: files of formats 1 to 4.

#![allow(clippy::unwrap_used)]

mod migration;
mod sharing;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::memory::tests::{
    at, big, client, delivery, exercise, fan_out, msg, put_delivery,
};
use super::super::MemoryStore;
use super::rows::*;
use super::schema::*;
use super::*;
use protocol::{QoS, RetainHandling, SubscriptionOptions, TopicName};
use std::time::{Duration, SystemTime};

/// A database written by the code of format version 1 (before messages were shared):
/// the history of [`exercise`], as it left it.
const V1_FIXTURE: &[u8] = include_bytes!("../../testdata/v1.sqlite3");

/// A database written by the code of format version 2 (a message's body in a table of its
/// own, its references counted by triggers): the history of [`exercise`], as it left it.
const V2_FIXTURE: &[u8] = include_bytes!("../../testdata/v2.sqlite3");

/// A database written by the code of format version 3 (one row per delivery, no reference
/// counts, no queue segments): the history of [`exercise`], as it left it.
const V3_FIXTURE: &[u8] = include_bytes!("../../testdata/v3.sqlite3");

/// A database written by the code of format version 4 (queue segments keyed by session and
/// first seq): the history of [`exercise`] and two more deliveries queued for `a` in one
/// batch (seqs 10 and 11, messages 12 and 13), as it left them.
const V4_FIXTURE: &[u8] = include_bytes!("../../testdata/v4.sqlite3");

/// One integer from a query.
fn count(store: &SqliteStore, sql: &str) -> i64 {
    store.conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// The size of the database, in bytes (the write-ahead log included).
fn stored_bytes(store: &SqliteStore) -> i64 {
    count(store, "PRAGMA page_count") * count(store, "PRAGMA page_size")
}

/// The references to each message: rows of `deliveries` and entries of queue segments.
fn references(store: &SqliteStore) -> std::collections::BTreeMap<i64, i64> {
    let mut refs = std::collections::BTreeMap::new();
    let mut stmt = store
        .conn
        .prepare("SELECT message_id FROM deliveries")
        .unwrap();
    for id in stmt.query_map([], |row| row.get::<_, i64>(0)).unwrap() {
        *refs.entry(id.unwrap()).or_default() += 1;
    }
    let mut stmt = store
        .conn
        .prepare("SELECT entries FROM queue_segments")
        .unwrap();
    for blob in stmt.query_map([], |row| row.get::<_, Vec<u8>>(0)).unwrap() {
        for e in super::segments::decode(&blob.unwrap()).unwrap() {
            *refs.entry(e.message_id).or_default() += 1;
        }
    }
    refs
}

/// How many deliveries reference message `id`.
fn deliveries_of(store: &SqliteStore, id: i64) -> i64 {
    references(store).get(&id).copied().unwrap_or(0)
}

/// Every message is referenced by a delivery and counts its references right (a row of
/// `message_refs` for two or more, none for one), and every delivery's message is there.
fn assert_references_counted(store: &SqliteStore) {
    let mut stmt = store
        .conn
        .prepare(
            "SELECT m.id, coalesce(r.refs, 1) FROM messages m \
             LEFT JOIN message_refs r ON r.id = m.id",
        )
        .unwrap();
    let counted: std::collections::BTreeMap<i64, i64> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(counted, references(store));
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM message_refs \
             WHERE refs < 2 OR id NOT IN (SELECT id FROM messages)"
        ),
        0
    );
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
        let dir = std::env::temp_dir().join(format!("broker-store-{}-{}", std::process::id(), n));
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
    // The data directory is locked (flock): the second open fails at once.
    match SqliteStore::open(&tmp.0, Durability::None) {
        Err(StoreError::Io { path, .. }) => assert_eq!(path, tmp.0),
        other => panic!("{other:?}"),
    }
}

/// Waits up to 10 s for the database file (not its log) to grow past `bytes`.
fn database_file_grows_past(dir: &Path, bytes: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if std::fs::metadata(dir.join(FILE_NAME)).unwrap().len() > bytes {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn the_checkpointer_folds_a_full_log_into_the_database_while_the_store_is_open() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    let empty = std::fs::metadata(tmp.0.join(FILE_NAME)).unwrap().len();
    // 80 batches of a 64 KB retained message: some 1 300 pages through the log, more than
    // a checkpoint waits for. Only the checkpointer's thread copies them into the database
    // while the store is open (the engine's connection has no automatic checkpoint).
    for i in 0..80u64 {
        let m = StoredMessage {
            topic: TopicName::new(format!("big/{i}")).unwrap(),
            ..big(i + 1, 64 * 1024)
        };
        store.apply(&[Op::PutRetained(Box::new(m))]).unwrap();
    }
    let version = count(&store, "PRAGMA data_version");
    assert!(
        database_file_grows_past(&tmp.0, empty + 2 * 1024 * 1024),
        "the database stayed at {} bytes",
        std::fs::metadata(tmp.0.join(FILE_NAME)).unwrap().len()
    );
    assert_eq!(store.load().unwrap().retained.len(), 80);
    // A checkpoint is no write of another process's: the index of the segments is not
    // read again for it.
    assert_eq!(count(&store, "PRAGMA data_version"), version);
    // Closed, the store leaves one self-contained file (the log folded in and removed),
    // and the directory is free again.
    drop(store);
    for side in ["-wal", "-shm"] {
        assert!(
            !tmp.0.join(format!("{FILE_NAME}{side}")).exists(),
            "{side} left behind"
        );
    }
    let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    assert_eq!(store.load().unwrap().retained.len(), 80);
}

#[test]
fn with_durability_interval_ticks_ask_again_until_a_checkpoint_covered_every_commit() {
    let tmp = TempDir::new();
    let every = Duration::from_millis(10);
    let mut store = SqliteStore::open(&tmp.0, Durability::Interval(every)).unwrap();
    let put = |i: u64| [Op::PutRetained(Box::new(big(i, 1024)))];
    store.apply(&put(1)).unwrap();
    // A program reading the file from a snapshot before the second commit: no checkpoint
    // can copy that commit's pages while it reads, so none counts as its sync.
    let reader = Connection::open(tmp.0.join(FILE_NAME)).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM meta;")
        .unwrap();
    store.apply(&put(2)).unwrap();
    let synced_within = |store: &mut SqliteStore, wait: Duration| {
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            std::thread::sleep(every);
            store.tick().unwrap();
            if store.checkpointer.synced_all() {
                return true;
            }
        }
        false
    };
    assert!(!synced_within(&mut store, Duration::from_millis(300)));
    // The reader gone, a later tick's checkpoint covers both commits.
    reader.execute_batch("COMMIT;").unwrap();
    drop(reader);
    assert!(synced_within(&mut store, Duration::from_secs(10)));
}

#[test]
fn the_log_stays_bounded_under_back_to_back_batches() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    let wal = tmp.0.join(format!("{FILE_NAME}-wal"));
    let page = count(&store, "PRAGMA page_size") as u64;
    // A frame is a page and its 24-byte header; one batch below writes at most 40 pages
    // (16 of payload, its overflow chain and b-tree pages).
    let bound = 32 + (checkpoint::WAL_BOUND_PAGES as u64 + 40) * (page + 24);
    let mut largest = 0;
    // 400 batches of 64 KB: 25 MB through a log bounded at 16 MB.
    for i in 0..400u64 {
        let m = StoredMessage {
            topic: TopicName::new(format!("big/{}", i % 50)).unwrap(),
            ..big(i + 1, 64 * 1024)
        };
        store.apply(&[Op::PutRetained(Box::new(m))]).unwrap();
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert!(
        largest <= bound,
        "the log reached {largest} bytes (bound {bound})"
    );
    assert_eq!(store.load().unwrap().retained.len(), 50);
}

#[test]
fn with_durability_interval_a_tick_due_folds_the_log_even_when_it_is_short() {
    let tmp = TempDir::new();
    let mut store =
        SqliteStore::open(&tmp.0, Durability::Interval(Duration::from_millis(10))).unwrap();
    let empty = std::fs::metadata(tmp.0.join(FILE_NAME)).unwrap().len();
    store
        .apply(&[Op::PutRetained(Box::new(big(1, 256 * 1024)))])
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    store.tick().unwrap();
    assert!(database_file_grows_past(&tmp.0, empty + 200 * 1024));
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
            assert_eq!(
                (path, found.as_str(), expected),
                (tmp.0.clone(), "999", SqliteStore::FORMAT_VERSION)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_database_missing_a_table_or_index_is_corrupt() {
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
    // Nor without the queue segments.
    let tmp = TempDir::new();
    drop(SqliteStore::open(&tmp.0, Durability::None).unwrap());
    {
        let conn = Connection::open(tmp.0.join(FILE_NAME)).unwrap();
        conn.execute_batch("DROP TABLE queue_segments").unwrap();
    }
    match SqliteStore::open(&tmp.0, Durability::None) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("queue_segments"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn segments_whose_ranges_meet_are_corrupt_at_open() {
    let tmp = TempDir::new();
    {
        let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
        exercise(&mut store);
    }
    for (sql, detail_has) in [
        (
            "INSERT INTO queue_segments (client_id, first_seq, last_seq, count, bytes, entries) \
             SELECT client_id, first_seq + 1, last_seq + 1, count, bytes, entries \
             FROM queue_segments WHERE client_id = 'a'",
            "its range meets the one before",
        ),
        (
            "UPDATE queue_segments SET last_seq = first_seq - 1 WHERE client_id = 'a'",
            "an empty range",
        ),
    ] {
        let copy = TempDir::new();
        std::fs::copy(tmp.0.join(FILE_NAME), copy.0.join(FILE_NAME)).unwrap();
        {
            let conn = Connection::open(copy.0.join(FILE_NAME)).unwrap();
            conn.execute_batch(sql).unwrap();
        }
        match SqliteStore::open(&copy.0, Durability::None) {
            Err(StoreError::Corrupt { detail, .. }) => assert!(
                detail.contains("queue_segments") && detail.contains(detail_has),
                "{detail}"
            ),
            other => panic!("{sql}: {other:?}"),
        }
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
            "UPDATE messages SET message = x'30' WHERE id = \
             (SELECT message_id FROM deliveries WHERE client_id = 'a' AND seq = 1)",
            "deliveries",
            "(\"a\", 1): message 1 (table messages)",
        ),
        (
            "DELETE FROM messages WHERE id = 11",
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
    // The queue of a session reads its rows only (its queued deliveries are in segments).
    let copy = TempDir::new();
    std::fs::copy(tmp.0.join(FILE_NAME), copy.0.join(FILE_NAME)).unwrap();
    {
        let conn = Connection::open(copy.0.join(FILE_NAME)).unwrap();
        conn.execute_batch("UPDATE queue_segments SET entries = x'00' WHERE client_id = 'a'")
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
