//! Files of format 1 (before messages were shared), 2 (reference counts kept by
//! triggers) and 3 (a row per delivery) are migrated at open, or left untouched.

use super::*;

/// What is left to compare once the message ids are set aside.
fn without_ids(mut r: Recovered) -> Recovered {
    for s in &mut r.sessions {
        for d in &mut s.inflight {
            Arc::make_mut(&mut d.msg).id = 0;
        }
    }
    for m in &mut r.retained {
        m.id = 0;
    }
    r.max_message_id = None;
    r
}

/// A copy of `fixture` opened by the store: migrated to this format version.
fn open_migrated(fixture: &[u8]) -> (TempDir, SqliteStore) {
    let tmp = TempDir::new();
    std::fs::write(tmp.0.join(FILE_NAME), fixture).unwrap();
    let store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'format_version'"
        ),
        i64::from(SqliteStore::FORMAT_VERSION)
    );
    (tmp, store)
}

#[test]
fn a_version_1_database_opens_migrated_with_its_sessions_queues_and_retained_messages() {
    // What the same history leaves in this version's store.
    let mut memory = MemoryStore::new();
    let expected = exercise(&mut memory);
    let (tmp, mut store) = open_migrated(V1_FIXTURE);
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
        Arc::make_mut(&mut d.msg).id = id;
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

#[test]
fn a_version_2_database_opens_migrated_with_the_same_sessions_queues_messages_and_ids() {
    let mut memory = MemoryStore::new();
    let expected = exercise(&mut memory);
    let (tmp, mut store) = open_migrated(V2_FIXTURE);
    // Version 2 had the engine's ids already: everything comes back exactly.
    assert_eq!(store.load().unwrap(), expected);
    assert_eq!(
        store.load_queue("a").unwrap(),
        memory.load_queue("a").unwrap()
    );
    assert_eq!(
        store.load_retained("a/b").unwrap(),
        memory.load_retained("a/b").unwrap()
    );
    assert_eq!(message_ids(&store), vec![1, 2, 7, 9, 11]);
    assert_references_counted(&store);
    // Neither the triggers nor the table of bodies are left.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM sqlite_schema \
             WHERE type = 'trigger' OR name IN ('message_bodies', 'messages_v2')"
        ),
        0
    );

    // It is a database of this version now: it takes batches and opens as it is.
    store.apply(&[Op::DeleteSession("a".into())]).unwrap();
    assert_eq!(message_ids(&store), vec![11]);
    drop(store);
    let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    assert_eq!(store.load().unwrap().sessions.len(), 1);
    assert_references_counted(&store);
}

#[test]
fn a_version_2_database_missing_a_trigger_is_corrupt_and_left_as_it_was() {
    let tmp = TempDir::new();
    let file = tmp.0.join(FILE_NAME);
    std::fs::write(&file, V2_FIXTURE).unwrap();
    {
        let conn = Connection::open(&file).unwrap();
        conn.execute_batch("DROP TRIGGER delivery_removed").unwrap();
    }
    let before = std::fs::read(&file).unwrap();
    match SqliteStore::open(&tmp.0, Durability::Always) {
        Err(StoreError::Corrupt { detail, .. }) => {
            assert!(detail.contains("delivery_removed"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

#[test]
fn a_version_3_database_opens_migrated_with_the_same_sessions_queues_messages_and_ids() {
    let mut memory = MemoryStore::new();
    let expected = exercise(&mut memory);
    let (tmp, mut store) = open_migrated(V3_FIXTURE);
    assert_eq!(store.load().unwrap(), expected);
    assert_eq!(
        store.load_queue("a").unwrap(),
        memory.load_queue("a").unwrap()
    );
    assert_eq!(message_ids(&store), vec![1, 2, 7, 9, 11]);
    assert_references_counted(&store);
    // The old index is gone; the queued deliveries stay rows, and segments come after them.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'deliveries_by_message'"
        ),
        0
    );
    // Two queued in one batch: a segment (one alone would be a row).
    let later = msg(12, "t", b"later", QoS::AtLeastOnce, false);
    let last = msg(13, "t", b"last", QoS::AtLeastOnce, false);
    let ops = [
        put_delivery(
            "a",
            delivery(10, DeliveryState::Queued, QoS::AtLeastOnce, later),
        ),
        put_delivery(
            "a",
            delivery(11, DeliveryState::Queued, QoS::AtLeastOnce, last),
        ),
        Op::DeleteDelivery {
            client: "a".into(),
            seq: 7,
        },
    ];
    store.apply(&ops).unwrap();
    memory.apply(&ops).unwrap();
    assert_eq!(
        store.load_queue("a").unwrap(),
        memory.load_queue("a").unwrap()
    );
    assert_eq!(store.load().unwrap(), memory.load().unwrap());
    assert_eq!(count(&store, "SELECT count(*) FROM queue_segments"), 1);
    assert_references_counted(&store);

    // It is a database of this version now: it takes batches and opens as it is.
    store.apply(&[Op::DeleteSession("a".into())]).unwrap();
    assert_eq!(message_ids(&store), vec![11]);
    drop(store);
    let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    assert_eq!(store.load().unwrap().sessions.len(), 1);
    assert_references_counted(&store);
}

#[test]
fn a_version_4_database_opens_migrated_with_its_segments_in_write_order() {
    let mut memory = MemoryStore::new();
    exercise(&mut memory);
    let queued = |seq, id, payload: &'static [u8]| {
        put_delivery(
            "a",
            delivery(
                seq,
                DeliveryState::Queued,
                QoS::AtLeastOnce,
                msg(id, "t", payload, QoS::AtLeastOnce, false),
            ),
        )
    };
    memory
        .apply(&[queued(10, 12, b"later"), queued(11, 13, b"last")])
        .unwrap();
    let (tmp, mut store) = open_migrated(V4_FIXTURE);
    assert_eq!(store.load().unwrap(), memory.load().unwrap());
    assert_eq!(
        store.load_queue("a").unwrap(),
        memory.load_queue("a").unwrap()
    );
    // Both of a's segments came over, in (session, first seq) order, and the old table went.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM queue_segments WHERE client_id = 'a' \
             AND id = (SELECT min(id) FROM queue_segments) + (first_seq > 1)"
        ),
        2
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'queue_segments_v4'"
        ),
        0
    );
    assert_references_counted(&store);
    // It takes batches: a delivery from each migrated segment, then a new one.
    let ops = [
        Op::SetDeliveryState {
            client: "a".into(),
            seq: 11,
            state: DeliveryState::AwaitingAck(4),
        },
        Op::DeleteDelivery {
            client: "a".into(),
            seq: 9,
        },
        queued(12, 14, b"new"),
        queued(13, 15, b"newer"),
    ];
    store.apply(&ops).unwrap();
    memory.apply(&ops).unwrap();
    assert_eq!(
        store.load_queue("a").unwrap(),
        memory.load_queue("a").unwrap()
    );
    assert_eq!(store.load().unwrap(), memory.load().unwrap());
    assert_references_counted(&store);
    drop(store);
    let mut store = SqliteStore::open(&tmp.0, Durability::Always).unwrap();
    assert_eq!(store.load().unwrap(), memory.load().unwrap());
    assert_eq!(
        store.load_queue("a").unwrap(),
        memory.load_queue("a").unwrap()
    );
}
