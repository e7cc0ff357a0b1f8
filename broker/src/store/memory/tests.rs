//! The test body both stores run, so they are held to the same behaviour.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use protocol::{Properties, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions, Will};

use super::*;

/// A time with whole milliseconds, as the database keeps them.
pub(in crate::store) fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
}

pub(in crate::store) fn msg(
    id: u64,
    topic: &str,
    payload: &'static [u8],
    qos: QoS,
    retain: bool,
) -> StoredMessage {
    StoredMessage {
        id,
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Properties::default(),
        expires_at: None,
        received_at: at(1),
        publisher: Some("pub".into()),
    }
}

fn rich_msg() -> StoredMessage {
    StoredMessage {
        properties: Properties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
            ..Properties::default()
        },
        expires_at: Some(at(60_000)),
        publisher: None,
        ..msg(1, "a/b", b"hello", QoS::ExactlyOnce, true)
    }
}

pub(in crate::store) fn delivery(
    seq: u64,
    state: DeliveryState,
    qos: QoS,
    m: StoredMessage,
) -> StoredDelivery {
    StoredDelivery {
        seq,
        state,
        qos,
        retain: false,
        sub_ids: vec![],
        msg: Arc::new(m),
    }
}

pub(in crate::store) fn session(id: &str, version: ProtocolVersion) -> SessionMeta {
    SessionMeta {
        client_id: id.into(),
        version,
        username: None,
        expiry_interval: 0,
        expires_at: None,
        disconnected_at: None,
        pending_will: None,
        dropped: 0,
        connected_will: None,
    }
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

pub(in crate::store) fn put_delivery(client: &str, d: StoredDelivery) -> Op {
    Op::PutDelivery {
        client: client.into(),
        delivery: Box::new(d),
    }
}

/// Applies a realistic history and checks `load` and `load_queue` exactly.
pub(in crate::store) fn exercise(store: &mut dyn Store) -> Recovered {
    assert_eq!(store.load().unwrap(), Recovered::default());
    store.apply(&[]).unwrap();

    let mut a = SessionMeta {
        username: Some("alice".into()),
        expiry_interval: 3600,
        ..session("a", ProtocolVersion::V5)
    };
    let sub_plain = SubEntry {
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
        id: None,
    };
    let sub_shared = SubEntry {
        options: SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        },
        id: Some(268_435_455),
    };
    // Batch 1: two sessions and their subscriptions; rows may precede their session.
    store
        .apply(&[
            Op::PutSubscription {
                client: "a".into(),
                filter: filter("t/#"),
                entry: sub_plain,
            },
            Op::PutSession(Box::new(a.clone())),
            Op::PutSubscription {
                client: "a".into(),
                filter: filter("$share/g/x/+"),
                entry: sub_shared,
            },
            Op::PutSubscription {
                client: "a".into(),
                filter: filter("gone"),
                entry: sub_plain,
            },
            Op::PutSession(Box::new(SessionMeta {
                expiry_interval: u32::MAX,
                ..session("b", ProtocolVersion::V311)
            })),
            Op::PutSubscription {
                client: "b".into(),
                filter: filter("t/1"),
                entry: sub_plain,
            },
        ])
        .unwrap();

    // Batch 2: deliveries (out of seq order), QoS 2 ids, retained messages.
    let d1 = StoredDelivery {
        sub_ids: vec![1, 268_435_455],
        retain: true,
        ..delivery(1, DeliveryState::Queued, QoS::AtLeastOnce, rich_msg())
    };
    let d2 = delivery(
        2,
        DeliveryState::Queued,
        QoS::ExactlyOnce,
        msg(2, "t/2", b"two", QoS::ExactlyOnce, false),
    );
    let d3 = delivery(
        3,
        DeliveryState::Queued,
        QoS::AtMostOnce,
        msg(3, "t/3", b"", QoS::AtMostOnce, false),
    );
    let d7 = delivery(
        7,
        DeliveryState::Queued,
        QoS::AtLeastOnce,
        msg(7, "t/7", b"seven", QoS::ExactlyOnce, false),
    );
    let d9 = delivery(
        9,
        DeliveryState::Queued,
        QoS::AtLeastOnce,
        msg(9, "t/9", b"nine", QoS::AtLeastOnce, false),
    );
    let b1 = delivery(
        1,
        DeliveryState::AwaitingAck(65_535),
        QoS::AtLeastOnce,
        msg(11, "t/1", b"to b", QoS::AtLeastOnce, false),
    );
    let r1 = StoredMessage {
        retain: true,
        ..rich_msg()
    };
    let r2 = msg(20, "r/2", b"two", QoS::AtMostOnce, true);
    assert_eq!(store.load_retained("a/b").unwrap(), None);
    store
        .apply(&[
            put_delivery("a", d9.clone()),
            put_delivery("a", d1.clone()),
            put_delivery("a", d7.clone()),
            put_delivery("a", d2.clone()),
            put_delivery("a", d3.clone()),
            put_delivery("b", b1.clone()),
            Op::PutInboundQos2 {
                client: "a".into(),
                packet_id: 11,
            },
            Op::PutInboundQos2 {
                client: "a".into(),
                packet_id: 10,
            },
            Op::PutInboundQos2 {
                client: "a".into(),
                packet_id: 12,
            },
            Op::PutRetained(Box::new(r1.clone())),
            Op::PutRetained(Box::new(r2.clone())),
        ])
        .unwrap();
    assert_eq!(
        store.load_queue("a").unwrap(),
        vec![d1.clone(), d2.clone(), d3.clone(), d7.clone(), d9.clone()]
    );
    assert_eq!(store.load_retained("r/2").unwrap(), Some(r2.clone()));
    assert_eq!(store.load_retained("a/b").unwrap(), Some(r1.clone()));

    // Batch 3: two sent (one of them on to PUBCOMP), one acknowledged, a QoS 2 id
    // released, retained replaced and deleted, a subscription gone, `a` goes offline
    // with a delayed will; `c` comes and goes.
    let r1b = StoredMessage {
        id: 21,
        payload: Bytes::from_static(b"replaced"),
        publisher: Some("someone".into()),
        received_at: at(5),
        ..r1.clone()
    };
    let will = Will {
        topic: TopicName::new("wills/a").unwrap(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties {
            will_delay_interval: Some(30),
            message_expiry_interval: Some(100),
            user_properties: vec![("w".into(), "1".into())],
            ..Properties::default()
        },
    };
    a.disconnected_at = Some(at(10));
    a.expires_at = Some(at(3_600_010));
    a.pending_will = Some((will, at(30_010)));
    a.dropped = 3;
    store
        .apply(&[
            Op::SetDeliveryState {
                client: "a".into(),
                seq: 1,
                state: DeliveryState::AwaitingAck(5),
            },
            Op::SetDeliveryState {
                client: "a".into(),
                seq: 2,
                state: DeliveryState::AwaitingAck(6),
            },
            Op::SetDeliveryState {
                client: "a".into(),
                seq: 2,
                state: DeliveryState::AwaitingComp(6),
            },
            Op::SetDeliveryState {
                client: "a".into(),
                seq: 3,
                state: DeliveryState::AwaitingAck(7),
            },
            Op::DeleteDelivery {
                client: "a".into(),
                seq: 3,
            },
            // Of a delivery that is not there: nothing happens.
            Op::SetDeliveryState {
                client: "a".into(),
                seq: 100,
                state: DeliveryState::AwaitingAck(1),
            },
            Op::DeleteInboundQos2 {
                client: "a".into(),
                packet_id: 11,
            },
            Op::DeleteSubscription {
                client: "a".into(),
                filter: filter("gone"),
            },
            Op::PutRetained(Box::new(r1b.clone())),
            Op::DeleteRetained(TopicName::new("r/2").unwrap()),
            Op::PutSession(Box::new(a.clone())),
            Op::PutSession(Box::new(session("c", ProtocolVersion::V5))),
            put_delivery("c", d9.clone()),
            Op::PutInboundQos2 {
                client: "c".into(),
                packet_id: 1,
            },
            Op::DeleteSession("c".into()),
            // Rows stored and then deleted with their session within one batch.
            put_delivery("d", d9.clone()),
            Op::DeleteSession("d".into()),
        ])
        .unwrap();

    // Batch 4: a session with everything, deleted in a later batch.
    store
        .apply(&[
            Op::PutSession(Box::new(session("e", ProtocolVersion::V5))),
            Op::PutSubscription {
                client: "e".into(),
                filter: filter("e/#"),
                entry: sub_shared,
            },
            put_delivery("e", d1.clone()),
            put_delivery(
                "e",
                StoredDelivery {
                    state: DeliveryState::AwaitingComp(9),
                    ..d2.clone()
                },
            ),
            Op::PutInboundQos2 {
                client: "e".into(),
                packet_id: 3,
            },
        ])
        .unwrap();
    assert_eq!(store.load().unwrap().sessions.len(), 3);
    store.apply(&[Op::DeleteSession("e".into())]).unwrap();
    assert_eq!(store.load_queue("e").unwrap(), vec![]);

    // A batch leaving rows of a session that is not stored is refused whole.
    let before = store.load().unwrap();
    let refused = store.apply(&[
        Op::DeleteRetained(TopicName::new("a/b").unwrap()),
        put_delivery("ghost", d9.clone()),
    ]);
    match refused {
        Err(StoreError::Database(detail)) => assert!(detail.contains("not stored"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(store
        .apply(&[
            Op::PutSession(Box::new(session("ghost", ProtocolVersion::V5))),
            Op::DeleteSession("ghost".into()),
            Op::PutInboundQos2 {
                client: "ghost".into(),
                packet_id: 1,
            },
        ])
        .is_err());
    assert_eq!(store.load().unwrap(), before);

    let expected = Recovered {
        sessions: vec![
            RecoveredSession {
                meta: a,
                subscriptions: vec![
                    (filter("$share/g/x/+"), sub_shared),
                    (filter("t/#"), sub_plain),
                ],
                inflight: vec![
                    StoredDelivery {
                        state: DeliveryState::AwaitingAck(5),
                        ..d1
                    },
                    StoredDelivery {
                        state: DeliveryState::AwaitingComp(6),
                        ..d2
                    },
                ],
                inbound_qos2: vec![10, 12],
                queued: (2, 9),
                max_seq: Some(9),
            },
            RecoveredSession {
                meta: SessionMeta {
                    expiry_interval: u32::MAX,
                    ..session("b", ProtocolVersion::V311)
                },
                subscriptions: vec![(filter("t/1"), sub_plain)],
                inflight: vec![b1],
                inbound_qos2: vec![],
                queued: (0, 0),
                max_seq: Some(1),
            },
        ],
        retained: vec![RetainedMeta {
            topic: TopicName::new("a/b").unwrap(),
            id: 21,
            qos: QoS::ExactlyOnce,
            payload_len: 8,
            expires_at: Some(at(60_000)),
            received_at: at(5),
        }],
        max_message_id: Some(21),
    };
    assert_eq!(before, expected);
    assert_eq!(store.load_queue("a").unwrap(), vec![d7, d9]);
    assert_eq!(store.load_queue("b").unwrap(), vec![]);
    assert_eq!(store.load_queue("nobody").unwrap(), vec![]);
    assert_eq!(store.load_retained("a/b").unwrap(), Some(r1b));
    assert_eq!(store.load_retained("r/2").unwrap(), None);
    assert_eq!(store.load_retained("nothing/here").unwrap(), None);
    store.tick().unwrap();
    expected
}

#[test]
fn the_memory_store_keeps_what_it_is_given() {
    let mut store = MemoryStore::new();
    exercise(&mut store);
    // Only the messages of the deliveries left are held: d1, d2 (in flight to `a`), d7,
    // d9 (queued for `a`; also for `c`, `d` and `e`, which are gone), and b's.
    let mut ids: Vec<u64> = store.messages.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 7, 9, 11]);
    assert!(store.messages.values().all(|m| m.refs == 1));
}

/// A client id for session `i` of a fan-out.
pub(in crate::store) fn client(i: usize) -> Arc<str> {
    format!("s{i:03}").into()
}

/// One message queued for `n` new sessions, in one batch.
pub(in crate::store) fn fan_out(store: &mut dyn Store, n: usize, m: &StoredMessage) {
    let mut ops = Vec::new();
    for i in 0..n {
        ops.push(Op::PutSession(Box::new(session(
            &client(i),
            ProtocolVersion::V5,
        ))));
        ops.push(Op::PutDelivery {
            client: client(i),
            delivery: Box::new(delivery(0, DeliveryState::Queued, m.qos, m.clone())),
        });
    }
    store.apply(&ops).unwrap();
}

/// A message of `len` bytes of payload.
pub(in crate::store) fn big(id: u64, len: usize) -> StoredMessage {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    StoredMessage {
        payload: Bytes::from(payload),
        ..msg(id, "big/one", b"", QoS::AtLeastOnce, false)
    }
}

#[test]
fn one_message_queued_for_200_sessions_is_held_once_and_goes_with_its_last_delivery() {
    let mut store = MemoryStore::new();
    let m = big(42, 1 << 20);
    fan_out(&mut store, 200, &m);
    assert_eq!(store.messages.len(), 1);
    assert_eq!(store.messages[&42].refs, 200);
    let first = &store.clients[&client(0)].deliveries[&0].msg;
    assert!(store
        .clients
        .values()
        .all(|c| Arc::ptr_eq(&c.deliveries[&0].msg, first)));
    assert_eq!(store.load_queue(&client(199)).unwrap()[0].msg, Arc::new(m));
    let recovered = store.load().unwrap();
    assert_eq!(recovered.max_message_id, Some(42));
    assert!(recovered.sessions.iter().all(|s| s.queued == (1, 1 << 20)));

    for i in 0..200 {
        assert_eq!(store.messages.len(), 1, "before delivery {i} is deleted");
        store
            .apply(&[Op::DeleteDelivery {
                client: client(i),
                seq: 0,
            }])
            .unwrap();
    }
    assert!(store.messages.is_empty());
    assert_eq!(store.load().unwrap().max_message_id, None);
}

#[test]
fn deleting_a_session_releases_the_messages_of_its_deliveries() {
    let mut store = MemoryStore::new();
    let shared = msg(1, "t", b"shared", QoS::AtLeastOnce, false);
    fan_out(&mut store, 2, &shared);
    // Session 0 also holds a message of its own, twice.
    let own = msg(2, "t", b"own", QoS::AtLeastOnce, false);
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
                delivery(2, DeliveryState::Queued, QoS::AtLeastOnce, own),
            ),
        ])
        .unwrap();
    assert_eq!((store.messages[&1].refs, store.messages[&2].refs), (2, 2));
    store.apply(&[Op::DeleteSession(client(0))]).unwrap();
    assert_eq!(store.messages.len(), 1);
    assert_eq!(store.messages[&1].refs, 1);
    store.apply(&[Op::DeleteSession(client(1))]).unwrap();
    assert!(store.messages.is_empty());
}

#[test]
fn a_replaced_delivery_releases_its_message() {
    let mut store = MemoryStore::new();
    let first = msg(1, "t", b"first", QoS::AtLeastOnce, false);
    fan_out(&mut store, 1, &first);
    // The same message again under the same seq: still one reference.
    fan_out(&mut store, 1, &first);
    assert_eq!(store.messages[&1].refs, 1);
    let second = msg(2, "t", b"second", QoS::AtLeastOnce, false);
    fan_out(&mut store, 1, &second);
    assert_eq!(store.messages.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(
        store.load_queue(&client(0)).unwrap()[0].msg,
        Arc::new(second)
    );
}

/// A history touching every kind of row, for the stores with and without restart.
fn mixed_history(store: &mut dyn Store) {
    fan_out(store, 3, &msg(1, "t", b"shared", QoS::AtLeastOnce, false));
    let sub = SubEntry {
        options: SubscriptionOptions::default(),
        id: Some(7),
    };
    store
        .apply(&[
            Op::PutSubscription {
                client: client(0),
                filter: filter("a/+"),
                entry: sub,
            },
            Op::PutInboundQos2 {
                client: client(0),
                packet_id: 9,
            },
            put_delivery(
                &client(0),
                delivery(
                    1,
                    DeliveryState::AwaitingAck(3),
                    QoS::ExactlyOnce,
                    msg(2, "t", b"in flight", QoS::ExactlyOnce, false),
                ),
            ),
            put_delivery(
                &client(0),
                delivery(
                    2,
                    DeliveryState::Queued,
                    QoS::AtLeastOnce,
                    msg(3, "t", b"own", QoS::AtLeastOnce, false),
                ),
            ),
            Op::DeleteDelivery {
                client: client(1),
                seq: 0,
            },
            Op::DeleteSession(client(2)),
            Op::PutRetained(Box::new(msg(4, "r", b"kept", QoS::AtMostOnce, true))),
        ])
        .unwrap();
}

#[test]
fn a_store_without_restart_reads_back_queues_and_retained_messages_as_the_full_one_does() {
    let mut full = MemoryStore::new();
    let mut lean = MemoryStore::without_restart();
    mixed_history(&mut full);
    mixed_history(&mut lean);
    for i in 0..4 {
        assert_eq!(
            lean.load_queue(&client(i)).unwrap(),
            full.load_queue(&client(i)).unwrap(),
            "{i}"
        );
    }
    assert_eq!(lean.load_queue(&client(0)).unwrap().len(), 2);
    assert_eq!(
        lean.load_retained("r").unwrap(),
        full.load_retained("r").unwrap()
    );
    let (lean, full) = (lean.load().unwrap(), full.load().unwrap());
    assert_eq!(full.sessions.len(), 2);
    assert!(lean.sessions.is_empty());
    assert_eq!(
        (lean.retained, lean.max_message_id),
        (full.retained, full.max_message_id)
    );
}

#[test]
fn a_store_without_restart_holds_only_sessions_with_deliveries_and_their_messages() {
    let mut store = MemoryStore::without_restart();
    mixed_history(&mut store);
    // Session 1's only delivery was deleted, session 2 is gone: only session 0 has rows.
    assert_eq!(
        store.clients.keys().cloned().collect::<Vec<_>>(),
        [client(0)]
    );
    let c = &store.clients[&client(0)];
    assert!(c.meta.is_none() && c.subscriptions.is_empty() && c.inbound_qos2.is_empty());
    let mut ids: Vec<u64> = store.messages.keys().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    for seq in 0..3 {
        store
            .apply(&[Op::DeleteDelivery {
                client: client(0),
                seq,
            }])
            .unwrap();
    }
    assert!(store.clients.is_empty() && store.messages.is_empty());
}

#[test]
fn a_store_without_restart_refuses_rows_of_a_session_it_does_not_hold() {
    let mut store = MemoryStore::without_restart();
    mixed_history(&mut store);
    let orphan = put_delivery(
        &client(2),
        delivery(
            5,
            DeliveryState::Queued,
            QoS::AtLeastOnce,
            msg(5, "t", b"x", QoS::AtLeastOnce, false),
        ),
    );
    assert!(store.apply(std::slice::from_ref(&orphan)).is_err());
    // Session 1 is still stored (only its delivery went): its rows are taken.
    let kept = put_delivery(
        &client(1),
        delivery(
            5,
            DeliveryState::Queued,
            QoS::AtLeastOnce,
            msg(5, "t", b"x", QoS::AtLeastOnce, false),
        ),
    );
    store.apply(&[kept]).unwrap();
    assert_eq!(store.load_queue(&client(1)).unwrap().len(), 1);
}
