//! The SQLite store's tests: the shared store behaviour, sharing of messages, migration,
//! and files the store must refuse.

#![allow(clippy::unwrap_used)]

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
const V1_FIXTURE: &[u8] = include_bytes!("../testdata/v1.sqlite3");

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
