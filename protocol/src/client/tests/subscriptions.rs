//! SUBACK and UNSUBACK, and subscribing again.

use super::*;

#[test]
fn suback_updates_the_session_view_with_the_granted_qos() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    let subs = vec![
        Subscription::new(TopicFilter::new("a/+").unwrap(), QoS::ExactlyOnce),
        Subscription::new(TopicFilter::new("b").unwrap(), QoS::AtLeastOnce),
    ];
    let id = c.subscribe(subs, Properties::default(), t(2)).unwrap();
    let ack = SubAck {
        packet_id: id,
        reasons: vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
        properties: Properties::default(),
    };
    c.handle_packet(Packet::SubAck(ack.clone()), t(3)).unwrap();
    assert_eq!(events(&mut c), vec![Event::SubAck(ack)]);
    let view = c.session();
    let granted = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    assert_eq!(
        view.subscriptions,
        vec![(TopicFilter::new("a/+").unwrap(), granted)]
    );
    let id = c
        .unsubscribe(
            vec![TopicFilter::new("a/+").unwrap()],
            Properties::default(),
            t(4),
        )
        .unwrap();
    let ack = UnsubAck {
        packet_id: id,
        reasons: vec![ReasonCode::Success],
        properties: Properties::default(),
    };
    c.handle_packet(Packet::UnsubAck(ack), t(5)).unwrap();
    assert!(c.session().subscriptions.is_empty());
}

#[test]
fn a_3_1_1_unsuback_reports_success_for_every_filter_mqtt_3_11_3_1() {
    // 3.1.1 UNSUBACK carries only the packet id [MQTT-3.11.3-1]; the event still gives
    // one code per filter, so the application sees the same shape in both versions.
    let mut c = connected(ProtocolVersion::V311, true, Properties::default());
    let filters = vec![
        TopicFilter::new("a").unwrap(),
        TopicFilter::new("b/#").unwrap(),
    ];
    let id = c.unsubscribe(filters, Properties::default(), t(2)).unwrap();
    let ack = UnsubAck {
        packet_id: id,
        reasons: Vec::new(),
        properties: Properties::default(),
    };
    c.handle_packet(Packet::UnsubAck(ack), t(3)).unwrap();
    let [Event::UnsubAck(got)] = &events(&mut c)[..] else {
        panic!("one UnsubAck event expected")
    };
    assert_eq!(got.reasons, vec![ReasonCode::Success; 2]);
}

#[test]
fn a_suback_with_the_wrong_number_of_codes_is_a_protocol_error_mqtt_3_9_3_1() {
    let mut c = connected(ProtocolVersion::V5, true, Properties::default());
    let subs = vec![
        Subscription::new(TopicFilter::new("a").unwrap(), QoS::AtMostOnce),
        Subscription::new(TopicFilter::new("b").unwrap(), QoS::AtMostOnce),
    ];
    let id = c.subscribe(subs, Properties::default(), t(2)).unwrap();
    sent(&mut c);
    let ack = SubAck {
        packet_id: id,
        reasons: vec![ReasonCode::Success],
        properties: Properties::default(),
    };
    assert!(c.handle_packet(Packet::SubAck(ack), t(3)).is_err());
    assert_eq!(
        sent(&mut c),
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
}

#[test]
fn resubscription_asks_for_the_requested_qos_and_identifier_again() {
    let mut c = connected(ProtocolVersion::V5, false, Properties::default());
    let mut props = Properties::default();
    props.subscription_identifiers.push(7);
    let sub = Subscription::new(TopicFilter::new("x").unwrap(), QoS::ExactlyOnce);
    let id = c.subscribe(vec![sub], props, t(2)).unwrap();
    let ack = SubAck {
        packet_id: id,
        reasons: vec![ReasonCode::GrantedQoS1],
        properties: Properties::default(),
    };
    c.handle_packet(Packet::SubAck(ack), t(3)).unwrap();
    assert_eq!(c.session().subscriptions[0].1.qos, QoS::AtLeastOnce);
    c.connection_lost();
    c.connect(t(10)).unwrap();
    sent(&mut c);
    c.handle_packet(
        Packet::ConnAck(ConnAck::new(false, ReasonCode::Success)),
        t(11),
    )
    .unwrap();
    let out = sent(&mut c);
    let Packet::Subscribe(s) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(s.subscriptions[0].options.qos, QoS::ExactlyOnce);
    assert_eq!(s.properties.subscription_identifiers, vec![7]);
}
