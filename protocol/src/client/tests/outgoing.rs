//! Our messages: QoS 1 and 2 flows, the sending window, the queue and the server's limits.

use super::*;

#[test]
fn qos1_publish_completes_on_puback_mqtt_4_3_2() {
    let mut c = connected(ProtocolVersion::V311, true, Properties::default());
    let token = publish(&mut c, QoS::AtLeastOnce, 10);
    let out = sent(&mut c);
    assert_eq!(published(&out), vec![(pid(1), false)]);
    assert!(events(&mut c).is_empty());
    c.handle_packet(Packet::PubAck(PubResp::new(pid(1))), t(11))
        .unwrap();
    assert_eq!(
        events(&mut c),
        vec![Event::Published {
            token,
            reason: ReasonCode::Success
        }]
    );
    assert!(c.session().outbound_inflight.is_empty());
}

#[test]
fn qos2_publish_goes_through_pubrec_pubrel_pubcomp_mqtt_4_3_3() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    let token = publish(&mut c, QoS::ExactlyOnce, 10);
    sent(&mut c);
    c.handle_packet(Packet::PubRec(PubResp::new(pid(1))), t(11))
        .unwrap();
    assert_eq!(sent(&mut c), vec![Packet::PubRel(PubResp::new(pid(1)))]);
    assert_eq!(
        c.session().outbound_inflight[0].stage,
        OutboundStage::AwaitingComp
    );
    assert!(events(&mut c).is_empty());
    c.handle_packet(Packet::PubComp(PubResp::new(pid(1))), t(12))
        .unwrap();
    assert_eq!(
        events(&mut c),
        vec![Event::Published {
            token,
            reason: ReasonCode::Success
        }]
    );
}

#[test]
fn a_pubrec_with_an_error_ends_the_qos2_flow_without_pubrel() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    let token = publish(&mut c, QoS::ExactlyOnce, 10);
    sent(&mut c);
    let rec = PubResp::with_reason(pid(1), ReasonCode::QuotaExceeded);
    c.handle_packet(Packet::PubRec(rec), t(11)).unwrap();
    assert!(sent(&mut c).is_empty());
    assert_eq!(
        events(&mut c),
        vec![Event::Published {
            token,
            reason: ReasonCode::QuotaExceeded
        }]
    );
}

#[test]
fn no_more_than_receive_maximum_publishes_are_in_flight_mqtt_4_9_0_2() {
    let props = Properties {
        receive_maximum: Some(2),
        ..Default::default()
    };
    let mut c = connected(ProtocolVersion::V5, true, props);
    for i in 0..4 {
        publish(&mut c, QoS::AtLeastOnce, 10 + i);
    }
    assert_eq!(
        published(&sent(&mut c)),
        vec![(pid(1), false), (pid(2), false)]
    );
    assert_eq!(c.session().queued, 2);
    c.handle_packet(Packet::PubAck(PubResp::new(pid(1))), t(20))
        .unwrap();
    assert_eq!(published(&sent(&mut c)), vec![(pid(3), false)]);
    assert_eq!(c.session().queued, 1);
}

#[test]
fn qos0_is_not_held_back_by_the_window() {
    let props = Properties {
        receive_maximum: Some(1),
        ..Default::default()
    };
    let mut c = connected(ProtocolVersion::V5, true, props);
    publish(&mut c, QoS::AtLeastOnce, 10);
    let token = publish(&mut c, QoS::AtMostOnce, 11);
    let out = sent(&mut c);
    assert_eq!(out.len(), 2);
    assert!(events(&mut c).contains(&Event::Published {
        token,
        reason: ReasonCode::Success
    }));
}

#[test]
fn publishes_made_offline_wait_in_the_bounded_queue() {
    let mut opts = ClientOptions::new(ProtocolVersion::V311, "c", false);
    opts.max_queued = 2;
    let mut c = Client::new(opts);
    publish(&mut c, QoS::AtLeastOnce, 0);
    publish(&mut c, QoS::AtMostOnce, 0);
    let err = c
        .publish(
            topic("x"),
            Bytes::new(),
            QoS::AtLeastOnce,
            false,
            Properties::default(),
            t(0),
        )
        .unwrap_err();
    assert_eq!(err, ClientError::QueueFull);
    assert!(sent(&mut c).is_empty());
    c.connect(t(1)).unwrap();
    sent(&mut c);
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
        t(2),
    )
    .unwrap();
    assert_eq!(sent(&mut c).len(), 2);
    assert_eq!(c.session().queued, 0);
}

#[test]
fn the_server_limits_from_connack_are_respected_mqtt_3_2_2_11_and_14() {
    let props = Properties {
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        maximum_packet_size: Some(20),
        ..Default::default()
    };
    let mut c = connected(ProtocolVersion::V5, true, props);
    let err = c.publish(
        topic("a"),
        Bytes::new(),
        QoS::ExactlyOnce,
        false,
        Properties::default(),
        t(2),
    );
    assert_eq!(err, Err(ClientError::QoSNotSupported(QoS::ExactlyOnce)));
    let err = c.publish(
        topic("a"),
        Bytes::new(),
        QoS::AtMostOnce,
        true,
        Properties::default(),
        t(2),
    );
    assert_eq!(err, Err(ClientError::RetainNotSupported));
    let big = Bytes::from(vec![0u8; 64]);
    let err = c.publish(
        topic("a"),
        big,
        QoS::AtMostOnce,
        false,
        Properties::default(),
        t(2),
    );
    assert!(matches!(
        err,
        Err(ClientError::Encode(EncodeError::PacketTooLarge { .. }))
    ));
}

#[test]
fn packet_ids_are_never_zero_and_never_reused_while_in_flight_mqtt_2_2_1_3() {
    let mut c = connected(ProtocolVersion::V311, true, Properties::default());
    c.packet_ids = PacketIds::starting_at(pid(u16::MAX));
    publish(&mut c, QoS::AtLeastOnce, 2); // 65535
    publish(&mut c, QoS::AtLeastOnce, 2); // wraps to 1, never 0
    c.packet_ids = PacketIds::new();
    publish(&mut c, QoS::AtLeastOnce, 2); // 1 is taken: 2
    assert_eq!(
        published(&sent(&mut c)),
        vec![(pid(u16::MAX), false), (pid(1), false), (pid(2), false)]
    );
}

#[test]
fn messages_queued_offline_respect_the_limits_of_the_connack_mqtt_3_2_2_11_and_14() {
    let mut c = Client::new(ClientOptions::new(ProtocolVersion::V5, "c", true));
    let q2 = publish(&mut c, QoS::ExactlyOnce, 0);
    let retained = c
        .publish(
            topic("r"),
            Bytes::new(),
            QoS::AtMostOnce,
            true,
            Properties::default(),
            t(0),
        )
        .unwrap();
    c.connect(t(1)).unwrap();
    sent(&mut c);
    let mut ack = ConnAck::new(false, ReasonCode::Success);
    ack.properties.maximum_qos = Some(QoS::AtLeastOnce);
    ack.properties.retain_available = Some(false);
    c.handle_packet(Packet::ConnAck(ack), t(2)).unwrap();
    assert!(published(&sent(&mut c)).is_empty());
    let ev = events(&mut c);
    assert!(ev.contains(&Event::Published {
        token: q2,
        reason: ReasonCode::QoSNotSupported
    }));
    assert!(ev.contains(&Event::Published {
        token: retained,
        reason: ReasonCode::RetainNotSupported
    }));
}

#[test]
fn encode_transmit_upto_stops_once_the_buffer_reaches_the_limit() {
    let mut c = connected(ProtocolVersion::V311, true, Properties::default());
    for i in 0..5 {
        publish(&mut c, QoS::AtLeastOnce, 10 + i);
    }
    // Each PUBLISH to "a/b" with "hi" and a packet id is 2 + 2 + 3 + 2 + 2 = 11 bytes.
    let mut first = Vec::new();
    assert_eq!(c.encode_transmit_upto(&mut first, 12).unwrap(), 2);
    assert_eq!(
        first.len(),
        22,
        "the packet that crosses the limit is whole"
    );
    let mut rest = Vec::new();
    assert_eq!(c.encode_transmit_upto(&mut rest, 1000).unwrap(), 3);
    assert_eq!(rest.len(), 33);
    assert_eq!(c.encode_transmit_upto(&mut rest, 1000).unwrap(), 0);
    // Together, the bytes encode_transmit would have written in one go.
    let mut d = connected(ProtocolVersion::V311, true, Properties::default());
    for i in 0..5 {
        publish(&mut d, QoS::AtLeastOnce, 10 + i);
    }
    let mut all = Vec::new();
    d.encode_transmit(&mut all).unwrap();
    first.extend_from_slice(&rest);
    assert_eq!(first, all);
}
