//! One copy of a message however many sessions it is queued for, retained messages
//! read from the store when asked for, and the deliveries of a batch in queue segments.

use super::super::super::memory::tests::session;
use super::*;
use protocol::ProtocolVersion;

#[test]
fn one_message_queued_for_200_sessions_is_one_row_and_its_payload_is_stored_once() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    let before = stored_bytes(&store);
    let m = big(42, 1 << 20);
    fan_out(&mut store, 200, &m);
    assert_eq!(count(&store, "SELECT count(*) FROM messages"), 1);
    assert_eq!(deliveries_of(&store, 42), 200);
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
        assert_eq!(deliveries_of(&store, 7), 199 - i as i64);
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
    assert_references_counted(&store);
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
    assert_eq!(message_ids(&store), vec![1]);
    assert_eq!(references(&store).values().sum::<i64>(), 1);
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
    assert_eq!(deliveries_of(&store, 42), 200);
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

/// Applies each batch to both stores and checks they agree after it.
fn agree(store: &mut SqliteStore, memory: &mut MemoryStore, batches: &[Vec<Op>]) {
    for (i, ops) in batches.iter().enumerate() {
        store.apply(ops).unwrap();
        memory.apply(ops).unwrap();
        assert_eq!(
            store.load().unwrap(),
            memory.load().unwrap(),
            "after batch {i}"
        );
        for c in 0..3 {
            assert_eq!(
                store.load_queue(&client(c)).unwrap(),
                memory.load_queue(&client(c)).unwrap(),
                "queue of {c} after batch {i}"
            );
        }
        assert_references_counted(store);
        // The index of the segments is the table's.
        match SegmentIndex::read(&store.conn) {
            Ok(read) => assert_eq!(store.segments, read, "after batch {i}"),
            Err(_) => panic!("the segments cannot be read after batch {i}"),
        }
    }
}

#[test]
fn the_deliveries_queued_in_a_batch_are_one_segment_per_session_and_each_can_go_its_own_way() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    let mut memory = MemoryStore::new();
    let m = |id| msg(id, "t", b"payload", QoS::AtLeastOnce, false);
    let queued = |c: usize, seq, id| {
        put_delivery(
            &client(c),
            delivery(seq, DeliveryState::Queued, QoS::AtLeastOnce, m(id)),
        )
    };
    let sessions: Vec<Op> = (0..3)
        .map(|c| Op::PutSession(Box::new(session(&client(c), ProtocolVersion::V5))))
        .collect();
    // 3 sessions, 5 messages each, in one batch: 3 segment rows, no delivery rows.
    let mut first = sessions;
    for id in 0..5 {
        for c in 0..3 {
            first.push(queued(c, id, id + 1));
        }
    }
    agree(&mut store, &mut memory, &[first]);
    assert_eq!(count(&store, "SELECT count(*) FROM queue_segments"), 3);
    assert_eq!(count(&store, "SELECT count(*) FROM deliveries"), 0);
    // Appended side by side (format 5), not each in its session's place.
    assert_eq!(
        count(&store, "SELECT max(id) - min(id) FROM queue_segments"),
        2
    );
    let set = |c: usize, seq, state| Op::SetDeliveryState {
        client: client(c),
        seq,
        state,
    };
    let delete = |c: usize, seq| Op::DeleteDelivery {
        client: client(c),
        seq,
    };
    agree(
        &mut store,
        &mut memory,
        &[
            // Sent from the middle and from the front, one acknowledged.
            vec![
                set(0, 0, DeliveryState::AwaitingAck(1)),
                set(0, 2, DeliveryState::AwaitingAck(2)),
                delete(0, 0),
            ],
            // Queued and then changed in the same batch, and a stored one replaced by a
            // queued one, which is then sent.
            vec![
                queued(1, 5, 6),
                set(1, 5, DeliveryState::AwaitingAck(1)),
                queued(1, 6, 7),
                delete(1, 6),
                queued(2, 3, 6),
                queued(2, 4, 7),
                set(2, 4, DeliveryState::AwaitingComp(3)),
            ],
            // A queued one replaced by one in flight, one by another message, the rest
            // dropped, and a session ended with its segments.
            vec![
                put_delivery(
                    &client(0),
                    delivery(1, DeliveryState::AwaitingAck(5), QoS::AtLeastOnce, m(1)),
                ),
                queued(0, 3, 7),
                delete(0, 4),
                Op::DeleteSession(client(1)),
                queued(2, 7, 8),
            ],
        ],
    );
    // Every session's last delivery gone: no message is left.
    let rest: Vec<Op> = [0, 2]
        .into_iter()
        .flat_map(|c| (0..8).map(move |seq| delete(c, seq)))
        .collect();
    agree(&mut store, &mut memory, &[rest]);
    assert_eq!(message_ids(&store), Vec::<u64>::new());
    assert_eq!(count(&store, "SELECT count(*) FROM queue_segments"), 0);
}

#[test]
fn a_delivery_queued_alone_in_its_batch_is_a_row_and_queues_in_order_with_segments() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    let mut memory = MemoryStore::new();
    let m = |id| msg(id, "t", b"payload", QoS::AtLeastOnce, false);
    let queued = |seq, id| {
        put_delivery(
            &client(0),
            delivery(seq, DeliveryState::Queued, QoS::AtLeastOnce, m(id)),
        )
    };
    let session = Op::PutSession(Box::new(session(&client(0), ProtocolVersion::V5)));
    // One at a time (rows), then three in one batch (a segment), then one again (a row).
    agree(
        &mut store,
        &mut memory,
        &[
            vec![session, queued(0, 1)],
            vec![queued(1, 2)],
            vec![queued(2, 3), queued(3, 4), queued(4, 5)],
            vec![queued(5, 6)],
        ],
    );
    assert_eq!(count(&store, "SELECT count(*) FROM deliveries"), 3);
    assert_eq!(count(&store, "SELECT count(*) FROM queue_segments"), 1);
    let seqs: Vec<u64> = store
        .load_queue(&client(0))
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5]);
    // A row goes in flight in place and is acknowledged; a segment's entry alone in its
    // batch replaces nothing but itself.
    agree(
        &mut store,
        &mut memory,
        &[
            vec![Op::SetDeliveryState {
                client: client(0),
                seq: 0,
                state: DeliveryState::AwaitingAck(1),
            }],
            vec![Op::DeleteDelivery {
                client: client(0),
                seq: 0,
            }],
            vec![queued(3, 7)],
        ],
    );
    assert_eq!(count(&store, "SELECT count(*) FROM deliveries"), 3);
    assert_eq!(message_ids(&store), vec![2, 3, 5, 6, 7]);
    // After a restart, the same queue.
    let before = store.load_queue(&client(0)).unwrap();
    drop(store);
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    store.load().unwrap();
    assert_eq!(store.load_queue(&client(0)).unwrap(), before);
    assert_references_counted(&store);
}

/// A QoS 1 delivery queued for `c` (seq `seq`, message `id`).
fn queued(c: &str, seq: u64, id: u64) -> Op {
    put_delivery(
        c,
        delivery(
            seq,
            DeliveryState::Queued,
            QoS::AtLeastOnce,
            msg(id, "t", b"payload", QoS::AtLeastOnce, false),
        ),
    )
}

#[test]
fn a_failed_batch_leaves_the_segments_as_they_were_and_the_next_batches_find_them() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    let mut memory = MemoryStore::new();
    let first = vec![
        Op::PutSession(Box::new(session(&client(0), ProtocolVersion::V5))),
        queued(&client(0), 0, 1),
        queued(&client(0), 1, 2),
        queued(&client(0), 2, 3),
    ];
    agree(&mut store, &mut memory, &[first]);
    // In one batch: the last delivery of the segment is sent and the first acknowledged
    // (the segment is rewritten, its range shrinks), two are queued after it (a second
    // segment), and one is queued for a session that is not stored, which fails the batch
    // at its commit: all of it is rolled back, the index of the segments included.
    let refused = store.apply(&[
        Op::SetDeliveryState {
            client: client(0),
            seq: 2,
            state: DeliveryState::AwaitingAck(1),
        },
        Op::DeleteDelivery {
            client: client(0),
            seq: 0,
        },
        queued(&client(0), 3, 4),
        queued(&client(0), 4, 5),
        queued("ghost", 0, 6),
    ]);
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.load_queue(&client(0)).unwrap(),
        memory.load_queue(&client(0)).unwrap()
    );
    assert_eq!(count(&store, "SELECT count(*) FROM queue_segments"), 1);
    assert_references_counted(&store);
    // The same changes, without the stranger, go through; then across a restart the
    // segments are found again by the index read at open.
    let set = |seq, state| Op::SetDeliveryState {
        client: client(0),
        seq,
        state,
    };
    agree(
        &mut store,
        &mut memory,
        &[
            vec![
                set(2, DeliveryState::AwaitingAck(1)),
                queued(&client(0), 3, 4),
                queued(&client(0), 4, 5),
            ],
            vec![set(3, DeliveryState::AwaitingAck(2))],
        ],
    );
    drop(store);
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    agree(
        &mut store,
        &mut memory,
        &[vec![
            Op::DeleteDelivery {
                client: client(0),
                seq: 0,
            },
            set(1, DeliveryState::AwaitingAck(3)),
            set(4, DeliveryState::AwaitingAck(4)),
            queued(&client(0), 5, 6),
            queued(&client(0), 6, 7),
        ]],
    );
    // The segments read at open are gone with their last delivery; the new one remains.
    assert_eq!(count(&store, "SELECT count(*) FROM queue_segments"), 1);
    end_and_expect_nothing_left(&mut store, &mut memory);
}

/// Ends client 0's session, in both stores: no segment and no message is left.
fn end_and_expect_nothing_left(store: &mut SqliteStore, memory: &mut MemoryStore) {
    agree(store, memory, &[vec![Op::DeleteSession(client(0))]]);
    assert_eq!(count(store, "SELECT count(*) FROM queue_segments"), 0);
    assert_eq!(message_ids(store), Vec::<u64>::new());
}

#[test]
fn a_batch_that_queues_a_segment_for_a_session_not_stored_is_refused_whole() {
    let tmp = TempDir::new();
    let mut store = SqliteStore::open(&tmp.0, Durability::None).unwrap();
    let mut memory = MemoryStore::new();
    agree(
        &mut store,
        &mut memory,
        &[vec![
            Op::PutSession(Box::new(session(&client(0), ProtocolVersion::V5))),
            queued(&client(0), 0, 1),
            queued(&client(0), 1, 2),
        ]],
    );
    // Two for a stranger: a segment, which has no foreign key; the write path refuses it,
    // and the session ended earlier in the batch is back with its segment.
    let refused = [
        Op::DeleteSession(client(0)),
        queued("ghost", 0, 3),
        queued("ghost", 1, 4),
    ];
    match store.apply(&refused) {
        Err(StoreError::Database(detail)) => assert!(detail.contains("not stored"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(memory.apply(&refused).is_err());
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM queue_segments WHERE client_id = 'ghost'"
        ),
        0
    );
    agree(&mut store, &mut memory, &[vec![]]);
    end_and_expect_nothing_left(&mut store, &mut memory);
}
