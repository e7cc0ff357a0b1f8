//! CONNECT and CONNACK: the options sent, refusals, resuming or losing the session, and
//! the ways a connection ends.

use super::*;

#[test]
fn connect_sends_connect_with_the_options_and_connack_connects() {
    let mut opts = ClientOptions::new(ProtocolVersion::V5, "dev-1", false);
    opts.session_expiry_interval = Some(3600);
    opts.keep_alive = 30;
    let mut c = Client::new(opts);
    c.connect(t(0)).unwrap();
    let out = sent(&mut c);
    let [Packet::Connect(connect)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(connect.client_id, "dev-1");
    assert!(!connect.clean_start);
    assert_eq!(connect.keep_alive, 30);
    assert_eq!(connect.properties.session_expiry_interval, Some(3600));
    assert!(!c.is_connected());
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
        t(5),
    )
    .unwrap();
    assert!(c.is_connected());
    assert!(matches!(
        &events(&mut c)[..],
        [Event::Connected {
            session_present: true,
            ..
        }]
    ));
    assert_eq!(c.connect(t(6)), Err(ClientError::AlreadyConnected));
}

#[test]
fn new_credentials_go_in_the_next_connect() {
    let mut opts = ClientOptions::new(ProtocolVersion::V5, "dev-1", true);
    opts.username = Some("alice".into());
    opts.password = Some(Bytes::from_static(b"token-1"));
    let mut c = Client::new(opts);
    let credentials = |c: &mut Client| {
        let out = sent(c);
        let [Packet::Connect(connect)] = &out[..] else {
            panic!("{out:?}")
        };
        (connect.username.clone(), connect.password.clone())
    };
    c.connect(t(0)).unwrap();
    assert_eq!(
        credentials(&mut c),
        (Some("alice".into()), Some(Bytes::from_static(b"token-1")))
    );
    c.set_credentials(None, Some(Bytes::from_static(b"token-2")));
    c.connection_lost();
    c.connect(t(10)).unwrap();
    assert_eq!(
        credentials(&mut c),
        (None, Some(Bytes::from_static(b"token-2")))
    );
}

#[test]
fn the_first_packet_from_the_server_must_be_connack_mqtt_3_2_0_1() {
    let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
    c.connect(t(0)).unwrap();
    let err = c.handle_packet(Packet::PingResp, t(1)).unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)));
    assert!(!c.is_connected());
}

#[test]
fn a_refused_connection_reports_its_reason() {
    let mut c = Client::new(ClientOptions::new(ProtocolVersion::V311, "c", true));
    c.connect(t(0)).unwrap();
    let err = c
        .handle_packet(
            Packet::ConnAck(ConnAck::new(false, ReasonCode::NotAuthorized)),
            t(1),
        )
        .unwrap_err();
    assert_eq!(err, ClientError::Refused(ReasonCode::NotAuthorized));
    // The machine is disconnected and may connect again.
    c.connect(t(2)).unwrap();
}

#[test]
fn resuming_a_session_resends_unacknowledged_publishes_with_dup_and_pubrels_mqtt_4_4_0_1() {
    let mut c = connected(ProtocolVersion::V311, false, Properties::default());
    publish(&mut c, QoS::AtLeastOnce, 10); // id 1: no PUBACK
    publish(&mut c, QoS::ExactlyOnce, 11); // id 2: PUBREC received, PUBREL unanswered
    publish(&mut c, QoS::ExactlyOnce, 12); // id 3: no PUBREC
    sent(&mut c);
    c.handle_packet(Packet::PubRec(PubResp::new(pid(2))), t(13))
        .unwrap();
    sent(&mut c);
    c.connection_lost();
    c.connect(t(100)).unwrap();
    sent(&mut c);
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
        t(101),
    )
    .unwrap();
    let out = sent(&mut c);
    // In the original order [MQTT-4.6.0-1]; PUBLISH with DUP [MQTT-3.3.1-1]; never the
    // PUBLISH again once PUBREC arrived [MQTT-4.3.3-5].
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(matches!(&out[0], Packet::Publish(p) if p.packet_id == Some(pid(1)) && p.dup));
    assert_eq!(out[1], Packet::PubRel(PubResp::new(pid(2))));
    assert!(matches!(&out[2], Packet::Publish(p) if p.packet_id == Some(pid(3)) && p.dup));
}

#[test]
fn without_a_session_on_the_server_unacknowledged_messages_are_sent_as_new_and_subscriptions_renewed(
) {
    let mut c = connected(ProtocolVersion::V311, false, Properties::default());
    let sub = Subscription::new(TopicFilter::new("seed/#").unwrap(), QoS::AtLeastOnce);
    let id = c.subscribe(vec![sub], Properties::default(), t(5)).unwrap();
    sent(&mut c);
    let ack = SubAck {
        packet_id: id,
        reasons: vec![ReasonCode::GrantedQoS1],
        properties: Properties::default(),
    };
    c.handle_packet(Packet::SubAck(ack), t(6)).unwrap();
    events(&mut c);
    let t1 = publish(&mut c, QoS::AtLeastOnce, 10);
    let t2 = publish(&mut c, QoS::ExactlyOnce, 11);
    sent(&mut c);
    let rec_id = c.session().outbound_inflight[1].packet_id;
    c.handle_packet(Packet::PubRec(PubResp::new(rec_id)), t(12))
        .unwrap();
    sent(&mut c);
    c.connection_lost();
    c.connect(t(100)).unwrap();
    sent(&mut c);
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
        t(101),
    )
    .unwrap();
    let out = sent(&mut c);
    // [MQTT-3.2.2-5]: the old session state is discarded.
    assert!(
        matches!(&out[0], Packet::Subscribe(s) if s.subscriptions[0].filter.as_str() == "seed/#")
    );
    assert!(matches!(&out[1], Packet::Publish(p) if !p.dup && p.qos == QoS::AtLeastOnce));
    assert_eq!(out.len(), 2);
    let ev = events(&mut c);
    assert!(ev.contains(&Event::Published {
        token: t2,
        reason: ReasonCode::Success
    }));
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Event::Published { token, .. } if *token == t1)));
    // The resubscription's SUBACK is not an application event.
    let Packet::Subscribe(s) = &out[0] else {
        unreachable!()
    };
    let ack = SubAck {
        packet_id: s.packet_id,
        reasons: vec![ReasonCode::GrantedQoS1],
        properties: Properties::default(),
    };
    c.handle_packet(Packet::SubAck(ack), t(102)).unwrap();
    assert!(!events(&mut c).iter().any(|e| matches!(e, Event::SubAck(_))));
}

#[test]
fn a_server_disconnect_ends_the_connection_with_its_reason() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    let mut d = Disconnect::new(ReasonCode::SessionTakenOver);
    d.properties.reason_string = Some("another client".into());
    let err = c.handle_packet(Packet::Disconnect(d), t(5)).unwrap_err();
    assert_eq!(
        err,
        ClientError::DisconnectedByServer {
            reason: ReasonCode::SessionTakenOver,
            reason_string: Some("another client".into())
        }
    );
    assert!(!c.is_connected());
}

#[test]
fn malformed_bytes_end_the_connection_with_disconnect_0x81() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    // PUBLISH QoS 3.
    let err = c
        .handle_bytes(&[0x36, 0x03, 0x00, 0x01, b'a'], t(5))
        .unwrap_err();
    assert_eq!(err, ClientError::Decode(DecodeError::InvalidQoS));
    assert_eq!(
        sent(&mut c),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::MalformedPacket
        ))]
    );
}

#[test]
fn resending_on_resume_keeps_within_the_new_receive_maximum_mqtt_4_9_0_1() {
    let mut c = connected(ProtocolVersion::V5, false, Properties::default());
    let tokens: Vec<PublishToken> = (0..5)
        .map(|i| publish(&mut c, QoS::AtLeastOnce, 10 + i))
        .collect();
    sent(&mut c);
    c.connection_lost();
    c.connect(t(100)).unwrap();
    sent(&mut c);
    let mut ack = ConnAck::new(true, ReasonCode::Success);
    ack.properties.receive_maximum = Some(2);
    c.handle_packet(Packet::ConnAck(ack), t(101)).unwrap();
    assert_eq!(
        published(&sent(&mut c)),
        vec![(pid(1), true), (pid(2), true)]
    );
    c.handle_packet(Packet::PubAck(PubResp::new(pid(1))), t(102))
        .unwrap();
    assert_eq!(published(&sent(&mut c)), vec![(pid(3), true)]);
    assert!(events(&mut c).contains(&Event::Published {
        token: tokens[0],
        reason: ReasonCode::Success
    }));
}

#[test]
fn session_present_after_clean_start_is_a_protocol_error_in_5_mqtt_3_2_2_4() {
    let mut c = Client::new(ClientOptions::new(ProtocolVersion::V5, "c", true));
    c.connect(t(0)).unwrap();
    let err = c
        .handle_packet(
            Packet::ConnAck(ConnAck::new(true, ReasonCode::Success)),
            t(1),
        )
        .unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)));
    assert!(!c.is_connected());
}

#[test]
fn a_packet_only_clients_send_closes_the_connection_with_0x82() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    // A CONNECT from the server: only clients send it (spec 2.1.2, direction of flow),
    // refused from its fixed header, a Protocol Error.
    let bytes = [0x10, 0x07, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06];
    let err = c.handle_bytes(&bytes, t(5)).unwrap_err();
    assert_eq!(
        err,
        ClientError::Decode(DecodeError::ClientOnlyPacket(crate::PacketType::Connect))
    );
    assert_eq!(
        sent(&mut c),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
}
