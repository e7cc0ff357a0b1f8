//! The server's messages: acknowledged, delivered once, within our Receive Maximum.

use super::*;

#[test]
fn incoming_qos1_is_acknowledged_and_delivered() {
    let mut c = connected(ProtocolVersion::V311, true, Properties::default());
    let mut p = Publish::new(topic("a"), Bytes::from_static(b"x"));
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(pid(7));
    c.handle_packet(Packet::Publish(p.clone()), t(5)).unwrap();
    assert_eq!(sent(&mut c), vec![Packet::PubAck(PubResp::new(pid(7)))]);
    assert_eq!(events(&mut c), vec![Event::Message(p)]);
}

#[test]
fn incoming_qos2_is_delivered_once_even_when_resent_mqtt_4_3_3_10() {
    let mut c = connected(ProtocolVersion::V311, false, Properties::default());
    let mut p = Publish::new(topic("a"), Bytes::from_static(b"x"));
    p.qos = QoS::ExactlyOnce;
    p.packet_id = Some(pid(9));
    c.handle_packet(Packet::Publish(p.clone()), t(5)).unwrap();
    let mut dup = p.clone();
    dup.dup = true;
    c.handle_packet(Packet::Publish(dup), t(6)).unwrap();
    assert_eq!(events(&mut c), vec![Event::Message(p.clone())]);
    assert_eq!(sent(&mut c), vec![Packet::PubRec(PubResp::new(pid(9))); 2]);
    assert_eq!(c.session().inbound_awaiting_pubrel, vec![pid(9)]);
    // Also across a reconnection with the session kept.
    c.connection_lost();
    c.connect(t(10)).unwrap();
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
        t(11),
    )
    .unwrap();
    events(&mut c);
    c.handle_packet(Packet::Publish(Publish { dup: true, ..p }), t(12))
        .unwrap();
    assert!(events(&mut c).is_empty());
    c.handle_packet(Packet::PubRel(PubResp::new(pid(9))), t(13))
        .unwrap();
    assert_eq!(
        sent(&mut c).last(),
        Some(&Packet::PubComp(PubResp::new(pid(9))))
    );
    assert!(c.session().inbound_awaiting_pubrel.is_empty());
}

#[test]
fn more_qos2_messages_than_our_receive_maximum_is_a_protocol_error_mqtt_3_3_4_9() {
    let mut opts = ClientOptions::new(ProtocolVersion::V5, "c", true);
    opts.receive_maximum = 1;
    let mut c = Client::new(opts);
    c.connect(t(0)).unwrap();
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
        t(1),
    )
    .unwrap();
    sent(&mut c);
    let mut p = Publish::new(topic("a"), Bytes::new());
    p.qos = QoS::ExactlyOnce;
    p.packet_id = Some(pid(1));
    c.handle_packet(Packet::Publish(p.clone()), t(2)).unwrap();
    p.packet_id = Some(pid(2));
    assert!(c.handle_packet(Packet::Publish(p), t(3)).is_err());
    let out = sent(&mut c);
    assert_eq!(
        out.last(),
        Some(&Packet::Disconnect(Disconnect::new(
            ReasonCode::ReceiveMaximumExceeded
        )))
    );
    assert!(!c.is_connected());
}

#[test]
fn bytes_are_decoded_across_chunks_and_topic_aliases_resolved() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    let mut wire = Vec::new();
    let mut p = Publish::new(topic("long/topic/name"), Bytes::from_static(b"1"));
    p.properties.topic_alias = Some(3);
    Packet::Publish(p.clone())
        .encode(ProtocolVersion::V5, &mut wire)
        .unwrap();
    let mut q = p.clone();
    q.topic = TopicName::alias_placeholder();
    q.payload = Bytes::from_static(b"2");
    Packet::Publish(q)
        .encode(ProtocolVersion::V5, &mut wire)
        .unwrap();
    for chunk in wire.chunks(3) {
        c.handle_bytes(chunk, t(5)).unwrap();
    }
    let got: Vec<(String, Bytes)> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(p) => Some((p.topic.to_string(), p.payload)),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("long/topic/name".to_string(), Bytes::from_static(b"1")),
            ("long/topic/name".to_string(), Bytes::from_static(b"2"))
        ]
    );
}

#[test]
fn a_3_1_1_client_does_not_enforce_a_receive_maximum_it_cannot_announce() {
    let mut opts = ClientOptions::new(ProtocolVersion::V311, "c", true);
    opts.receive_maximum = 1;
    let mut c = Client::new(opts);
    c.connect(t(0)).unwrap();
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
        t(1),
    )
    .unwrap();
    for id in 1..=3 {
        let mut p = Publish::new(topic("a"), Bytes::new());
        p.qos = QoS::ExactlyOnce;
        p.packet_id = Some(pid(id));
        c.handle_packet(Packet::Publish(p), t(2)).unwrap();
    }
    assert_eq!(c.session().inbound_awaiting_pubrel.len(), 3);
}
