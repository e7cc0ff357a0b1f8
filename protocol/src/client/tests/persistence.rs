//! Persistence across a restart of the host (`store.rs`, `persistence.rs`).

use super::*;

type Store = std::collections::BTreeMap<StoreKey, Vec<u8>>;

fn apply(store: &mut Store, c: &mut Client) {
    for op in c.take_store_ops() {
        match op {
            StoreOp::Put(k, v) => {
                store.insert(k, v);
            }
            StoreOp::Delete(k) => {
                store.remove(&k);
            }
        }
    }
}

fn persistent_opts(version: ProtocolVersion) -> ClientOptions {
    let mut opts = ClientOptions::new(version, "c1", false);
    opts.persistent = true;
    opts
}

/// A new client over `store` (a page reload), connected with CONNACK `session_present`.
fn reloaded(store: &Store, version: ProtocolVersion, session_present: bool) -> Client {
    let mut c = Client::new(persistent_opts(version));
    c.restore(store.iter().map(|(k, v)| (*k, &v[..]))).unwrap();
    c.connect(t(100)).unwrap();
    sent(&mut c);
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(session_present, ReasonCode::Success)),
        t(101),
    )
    .unwrap();
    c
}

fn connected_persistent(version: ProtocolVersion) -> Client {
    let mut c = Client::new(persistent_opts(version));
    c.connect(t(0)).unwrap();
    sent(&mut c);
    let ack = ConnAck::new(false, ReasonCode::Success);
    c.handle_packet(Packet::ConnAck(ack), t(1)).unwrap();
    events(&mut c);
    c
}

#[test]
fn without_persistence_nothing_is_recorded() {
    let mut c = connected(ProtocolVersion::V5, false, Properties::default());
    publish(&mut c, QoS::ExactlyOnce, 2);
    assert!(c.take_store_ops().is_empty());
}

#[test]
fn messages_queued_offline_survive_a_reload_and_are_sent_once() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut store = Store::new();
        let mut c = Client::new(persistent_opts(version));
        publish(&mut c, QoS::AtMostOnce, 0);
        let t1 = publish(&mut c, QoS::AtLeastOnce, 0);
        let t2 = publish(&mut c, QoS::ExactlyOnce, 0);
        apply(&mut store, &mut c);
        // QoS 0 is not worth keeping; QoS 1 and 2 are.
        assert_eq!(store.len(), 2);
        drop(c);

        let mut c = reloaded(&store, version, true);
        let out = sent(&mut c);
        let ids: Vec<_> = out
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (p.qos, p.dup),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [(QoS::AtLeastOnce, false), (QoS::ExactlyOnce, false)]);
        apply(&mut store, &mut c);
        assert_eq!(store.len(), 2, "now in flight, still kept");
        let id1 = match &out[0] {
            Packet::Publish(p) => p.packet_id.unwrap(),
            _ => unreachable!(),
        };
        c.handle_packet(Packet::PubAck(PubResp::new(id1)), t(102))
            .unwrap();
        assert!(events(&mut c).contains(&Event::Published {
            token: t1,
            reason: ReasonCode::Success
        }));
        apply(&mut store, &mut c);
        assert_eq!(store.len(), 1, "acknowledged: forgotten");
        assert!(store.contains_key(&StoreKey::Outbound(t2.0)));
        // New publishes do not reuse a stored token.
        assert!(publish(&mut c, QoS::AtLeastOnce, 103).0 > t2.0);
    }
}

#[test]
fn after_a_reload_an_unacknowledged_publish_is_resent_with_dup_and_the_same_id_mqtt_4_4_0_1() {
    let mut store = Store::new();
    let mut c = connected_persistent(ProtocolVersion::V5);
    publish(&mut c, QoS::AtLeastOnce, 2);
    let Packet::Publish(first) = sent(&mut c).remove(0) else {
        panic!()
    };
    apply(&mut store, &mut c);
    drop(c);
    let mut c = reloaded(&store, ProtocolVersion::V5, true);
    let Packet::Publish(again) = sent(&mut c).remove(0) else {
        panic!()
    };
    // [MQTT-4.4.0-1] resend, [MQTT-3.3.1-1] DUP set, same packet id, same message.
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload, first.payload);
    assert_eq!(c.session().outbound_inflight.len(), 1);
}

#[test]
fn after_a_reload_a_qos2_message_past_pubrec_gets_pubrel_never_publish_mqtt_4_3_3_5() {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let mut store = Store::new();
        let mut c = connected_persistent(version);
        let token = publish(&mut c, QoS::ExactlyOnce, 2);
        let Packet::Publish(p) = sent(&mut c).remove(0) else {
            panic!()
        };
        let id = p.packet_id.unwrap();
        c.handle_packet(Packet::PubRec(PubResp::new(id)), t(3))
            .unwrap();
        apply(&mut store, &mut c);
        drop(c);

        let mut c = reloaded(&store, version, true);
        // [MQTT-4.3.3-5]: after PUBREC only PUBREL, and it is resent on resume
        // [MQTT-4.4.0-1].
        assert_eq!(sent(&mut c), vec![Packet::PubRel(PubResp::new(id))]);
        c.handle_packet(Packet::PubComp(PubResp::new(id)), t(102))
            .unwrap();
        assert!(events(&mut c).contains(&Event::Published {
            token,
            reason: ReasonCode::Success
        }));
        apply(&mut store, &mut c);
        assert!(store.is_empty());
    }
}

#[test]
fn after_a_reload_a_duplicate_incoming_qos2_message_is_not_delivered_again_mqtt_4_3_3_10() {
    let mut store = Store::new();
    let mut c = connected_persistent(ProtocolVersion::V311);
    let mut incoming = Publish::new(topic("in"), Bytes::from_static(b"once"));
    incoming.qos = QoS::ExactlyOnce;
    incoming.packet_id = Some(pid(7));
    c.handle_packet(Packet::Publish(incoming.clone()), t(2))
        .unwrap();
    assert_eq!(events(&mut c).len(), 1);
    apply(&mut store, &mut c);
    assert!(store.contains_key(&StoreKey::Inbound(pid(7))));
    drop(c);

    let mut c = reloaded(&store, ProtocolVersion::V311, true);
    events(&mut c);
    incoming.dup = true;
    c.handle_packet(Packet::Publish(incoming), t(102)).unwrap();
    // [MQTT-4.3.3-10]: not delivered again, but acknowledged again.
    assert!(events(&mut c).is_empty());
    assert_eq!(sent(&mut c), vec![Packet::PubRec(PubResp::new(pid(7)))]);
    c.handle_packet(Packet::PubRel(PubResp::new(pid(7))), t(103))
        .unwrap();
    assert_eq!(sent(&mut c), vec![Packet::PubComp(PubResp::new(pid(7)))]);
    apply(&mut store, &mut c);
    assert!(store.is_empty());
}

#[test]
fn a_reload_into_a_lost_server_session_sends_the_messages_again_as_new_mqtt_3_2_2_5() {
    let mut store = Store::new();
    let mut c = connected_persistent(ProtocolVersion::V5);
    publish(&mut c, QoS::AtLeastOnce, 2);
    sent(&mut c);
    let mut incoming = Publish::new(topic("in"), Bytes::from_static(b"x"));
    incoming.qos = QoS::ExactlyOnce;
    incoming.packet_id = Some(pid(9));
    c.handle_packet(Packet::Publish(incoming), t(3)).unwrap();
    apply(&mut store, &mut c);
    assert_eq!(store.len(), 2);
    drop(c);

    // Session present = 0: the session state is void; the message goes out as new.
    let mut c = reloaded(&store, ProtocolVersion::V5, false);
    let out = sent(&mut c);
    let [Packet::Publish(p)] = &out[..] else {
        panic!("{out:?}")
    };
    assert!(!p.dup);
    apply(&mut store, &mut c);
    assert!(!store.contains_key(&StoreKey::Inbound(pid(9))));
    assert_eq!(store.len(), 1);
    assert!(c.session().inbound_awaiting_pubrel.is_empty());
}

#[test]
fn touch_all_rewrites_every_record_of_the_session() {
    let mut c = connected_persistent(ProtocolVersion::V5);
    publish(&mut c, QoS::AtLeastOnce, 2); // in flight
    c.connection_lost();
    publish(&mut c, QoS::ExactlyOnce, 3); // queued
    publish(&mut c, QoS::AtMostOnce, 3); // not kept
    let mut store = Store::new();
    apply(&mut store, &mut c);
    assert_eq!(store.len(), 2);
    // A lost write: the driver clears its store and asks for everything again.
    store.clear();
    c.touch_all();
    apply(&mut store, &mut c);
    assert_eq!(store.len(), 2);
    let mut again = Client::new(persistent_opts(ProtocolVersion::V5));
    again
        .restore(store.iter().map(|(k, v)| (*k, &v[..])))
        .unwrap();
    assert_eq!(again.session().outbound_inflight.len(), 1);
    assert_eq!(again.session().queued, 1);
}

#[test]
fn a_publish_the_receiver_would_refuse_is_refused_at_once_mqtt_1_5_4_2() {
    // Otherwise the broker closes the connection as malformed, the client resends the
    // message on every reconnection, and a stored copy cannot be read back.
    let mut c = Client::new(persistent_opts(ProtocolVersion::V5));
    let bad = [
        Properties {
            response_topic: Some("reply/+".into()), // a topic name [MQTT-3.3.2-14]
            ..Properties::default()
        },
        Properties {
            content_type: Some("text\0plain".into()),
            ..Properties::default()
        },
        Properties {
            user_properties: vec![("k".into(), "v\0".into())],
            ..Properties::default()
        },
    ];
    for props in bad {
        let err = c
            .publish(
                topic("a"),
                Bytes::new(),
                QoS::AtLeastOnce,
                false,
                props,
                t(0),
            )
            .unwrap_err();
        assert!(matches!(err, ClientError::Encode(_)), "{err:?}");
    }
    assert!(c.take_store_ops().is_empty());
    assert_eq!(c.session().queued, 0);
}

#[test]
fn restore_is_refused_once_the_client_has_a_session_in_memory() {
    let mut c = connected_persistent(ProtocolVersion::V5);
    assert_eq!(
        c.restore(std::iter::empty()).unwrap_err(),
        RestoreError::NotFresh
    );
    let mut fresh = Client::new(persistent_opts(ProtocolVersion::V5));
    let key = StoreKey::Outbound(1);
    assert_eq!(
        fresh.restore([(key, &b"junk"[..])]).unwrap_err(),
        RestoreError::Format(key)
    );
}
