//! Differential tests against the independent `mqttbytes` 0.6 codec (rumqtt's), for both of
//! its modules: `v4` (MQTT 3.1.1) and `v5` (MQTT 5.0, which has no AUTH).
//!
//! For each generated packet: our bytes are read by mqttbytes and its packet, converted field
//! by field into ours, must equal the original; then mqttbytes writes that packet and our
//! decoder must read the original back from mqttbytes' bytes.
//!
//! Corners where mqttbytes 0.6 departs from the specifications are left out of the
//! generated packets, each with the reason:
//! - Login: mqttbytes stores user name and password as `String`s and treats an empty one as
//!   absent, so a present-but-empty user name or password, and a password that is not UTF-8
//!   (it is Binary Data, 3.1.3.5), do not survive it. Generated logins are non-empty UTF-8.
//! - 5.0 DISCONNECT with a reason code but no properties (remaining length 1): mqttbytes
//!   reads a property length that is not there, though 3.14.2.2.1 says a Remaining Length
//!   below 2 means none. And its `v5::read` refuses the two-byte `E0 00` DISCONNECT
//!   (`PayloadRequired`), so DISCONNECTs go through `v5::Disconnect::read` directly.
//! - 5.0 CONNACK without properties: mqttbytes writes no Property Length byte (3.2.2.3.1
//!   requires it, and we refuse the packet as truncated), so only CONNACKs with properties
//!   are written by mqttbytes and read by us.
//! - AUTH does not exist in mqttbytes 0.6.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use mqttbytes::{v4 as mb4, v5 as mb5};
use proptest::prelude::*;
use protocol::{
    ConnAck, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish,
    QoS, ReasonCode, RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions,
    TopicFilter, TopicName, UnsubAck, Unsubscribe, Will,
};

use common::{encode, packet};

const MAX: usize = 1 << 20;

fn qos(q: mqttbytes::QoS) -> QoS {
    QoS::from_u8(q as u8).unwrap()
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("mqttbytes read a zero packet id")
}

fn opt_pid(q: mqttbytes::QoS, n: u16) -> Option<PacketId> {
    (q != mqttbytes::QoS::AtMostOnce).then(|| pid(n))
}

fn reason(b: u8) -> ReasonCode {
    ReasonCode::from_u8(b).unwrap()
}

fn flag(b: Option<u8>) -> Option<bool> {
    b.map(|b| b == 1)
}

/// mqttbytes' login (`String`s, empty = absent) as our user name and password.
fn login(username: &str, password: &str) -> (Option<String>, Option<Bytes>) {
    (
        (!username.is_empty()).then(|| username.to_owned()),
        (!password.is_empty()).then(|| Bytes::copy_from_slice(password.as_bytes())),
    )
}

/// Is the login representable in mqttbytes? See the module docs.
fn login_ok(c: &Connect) -> bool {
    c.username.as_ref().is_none_or(|u| !u.is_empty())
        && c.password
            .as_ref()
            .is_none_or(|p| !p.is_empty() && std::str::from_utf8(p).is_ok())
}

// --- MQTT 3.1.1: mqttbytes::v4 ----------------------------------------------------------

fn from_mb4(p: mb4::Packet) -> Packet {
    use mb4::Packet as M;
    match p {
        M::Connect(c) => {
            let (username, password) = c
                .login
                .map(|l| login(&l.username, &l.password))
                .unwrap_or_default();
            Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V311,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                will: c.last_will.map(|w| Will {
                    topic: TopicName::new(w.topic).unwrap(),
                    payload: w.message,
                    qos: qos(w.qos),
                    retain: w.retain,
                    properties: Properties::default(),
                }),
                username,
                password,
                properties: Properties::default(),
            }))
        }
        M::ConnAck(a) => Packet::ConnAck(ConnAck::new(
            a.session_present,
            ReasonCode::from_v3_connect_return_code(a.code as u8).unwrap(),
        )),
        M::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos(p.qos),
            retain: p.retain,
            topic: TopicName::new(p.topic).unwrap(),
            packet_id: opt_pid(p.qos, p.pkid),
            payload: p.payload,
            properties: Properties::default(),
        }),
        M::PubAck(a) => Packet::PubAck(PubResp::new(pid(a.pkid))),
        M::PubRec(a) => Packet::PubRec(PubResp::new(pid(a.pkid))),
        M::PubRel(a) => Packet::PubRel(PubResp::new(pid(a.pkid))),
        M::PubComp(a) => Packet::PubComp(PubResp::new(pid(a.pkid))),
        M::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: pid(s.pkid),
            subscriptions: s
                .filters
                .into_iter()
                .map(|f| Subscription::new(TopicFilter::new(f.path).unwrap(), qos(f.qos)))
                .collect(),
            properties: Properties::default(),
        }),
        M::SubAck(a) => Packet::SubAck(SubAck {
            packet_id: pid(a.pkid),
            reasons: a
                .return_codes
                .into_iter()
                .map(|c| match c {
                    mb4::SubscribeReasonCode::Success(q) => reason(q as u8),
                    mb4::SubscribeReasonCode::Failure => ReasonCode::UnspecifiedError,
                })
                .collect(),
            properties: Properties::default(),
        }),
        M::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(u.pkid),
            filters: u
                .topics
                .into_iter()
                .map(|t| TopicFilter::new(t).unwrap())
                .collect(),
            properties: Properties::default(),
        }),
        M::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
            packet_id: pid(a.pkid),
            reasons: Vec::new(),
            properties: Properties::default(),
        }),
        M::PingReq => Packet::PingReq,
        M::PingResp => Packet::PingResp,
        M::Disconnect => Packet::Disconnect(Disconnect::default()),
    }
}

fn write_mb4(p: &mb4::Packet) -> Vec<u8> {
    use mb4::Packet as M;
    let mut b = BytesMut::new();
    match p {
        M::Connect(x) => x.write(&mut b),
        M::ConnAck(x) => x.write(&mut b),
        M::Publish(x) => x.write(&mut b),
        M::PubAck(x) => x.write(&mut b),
        M::PubRec(x) => x.write(&mut b),
        M::PubRel(x) => x.write(&mut b),
        M::PubComp(x) => x.write(&mut b),
        M::Subscribe(x) => x.write(&mut b),
        M::SubAck(x) => x.write(&mut b),
        M::Unsubscribe(x) => x.write(&mut b),
        M::UnsubAck(x) => x.write(&mut b),
        M::PingReq => mb4::PingReq.write(&mut b),
        M::PingResp => mb4::PingResp.write(&mut b),
        M::Disconnect => mb4::Disconnect.write(&mut b),
    }
    .unwrap();
    b.to_vec()
}

fn v4_supported(p: &Packet) -> bool {
    match p {
        Packet::Connect(c) => login_ok(c),
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn mqtt_3_1_1_packets_agree_with_mqttbytes_v4_both_ways(
        p in packet(ProtocolVersion::V311).prop_filter("mqttbytes corner", v4_supported)
    ) {
        let v = ProtocolVersion::V311;
        let ours = encode(&p, v);
        // Our bytes, read by mqttbytes.
        let mut stream = BytesMut::from(&ours[..]);
        let theirs = mb4::read(&mut stream, MAX).unwrap();
        prop_assert!(stream.is_empty(), "mqttbytes used every byte");
        // Its bytes, read by us.
        let written = write_mb4(&theirs);
        prop_assert_eq!(from_mb4(theirs), p.clone());
        let (back, used) = Packet::decode(&written, v, u32::MAX).unwrap().unwrap();
        prop_assert_eq!(used, written.len());
        prop_assert_eq!(back, p);
        // Both are canonical in 3.1.1: the very same bytes.
        prop_assert_eq!(written, ours);
    }
}

#[test]
fn a_3_1_1_connect_built_by_mqttbytes_decodes_with_us() {
    // A packet mqttbytes builds from its own API, not from ours.
    let mut c = mb4::Connect::new("dev-1");
    c.keep_alive = 30;
    c.clean_session = false;
    c.set_login("user", "pw");
    c.last_will = Some(mb4::LastWill::new(
        "dead/dev-1",
        "gone",
        mqttbytes::QoS::ExactlyOnce,
        true,
    ));
    let bytes = write_mb4(&mb4::Packet::Connect(c));
    let (p, _) = Packet::decode(&bytes, ProtocolVersion::V311, u32::MAX)
        .unwrap()
        .unwrap();
    let Packet::Connect(c) = p else {
        panic!("not a CONNECT")
    };
    assert_eq!(
        (c.client_id.as_str(), c.keep_alive, c.clean_start),
        ("dev-1", 30, false)
    );
    assert_eq!(c.username.as_deref(), Some("user"));
    let will = c.will.unwrap();
    assert_eq!(
        (will.topic.as_str(), will.qos, will.retain),
        ("dead/dev-1", QoS::ExactlyOnce, true)
    );
}

// --- MQTT 5.0: mqttbytes::v5 ------------------------------------------------------------

fn ack_props(reason_string: Option<String>, user_properties: Vec<(String, String)>) -> Properties {
    Properties {
        reason_string,
        user_properties,
        ..Properties::default()
    }
}

fn from_mb5(p: mb5::Packet) -> Packet {
    use mb5::Packet as M;
    match p {
        M::Connect(c) => {
            let (username, password) = c
                .login
                .map(|l| login(&l.username, &l.password))
                .unwrap_or_default();
            let properties = c
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_maximum,
                    maximum_packet_size: p.max_packet_size,
                    topic_alias_maximum: p.topic_alias_max,
                    request_response_information: flag(p.request_response_info),
                    request_problem_information: flag(p.request_problem_info),
                    user_properties: p.user_properties,
                    authentication_method: p.authentication_method,
                    authentication_data: p.authentication_data,
                    ..Properties::default()
                })
                .unwrap_or_default();
            Packet::Connect(Box::new(Connect {
                protocol: ProtocolVersion::V5,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                will: c.last_will.map(|w| Will {
                    topic: TopicName::new(w.topic).unwrap(),
                    payload: w.message,
                    qos: qos(w.qos),
                    retain: w.retain,
                    properties: w
                        .properties
                        .map(|p| Properties {
                            will_delay_interval: p.delay_interval,
                            payload_format_indicator: flag(p.payload_format_indicator),
                            message_expiry_interval: p.message_expiry_interval,
                            content_type: p.content_type,
                            response_topic: p.response_topic,
                            correlation_data: p.correlation_data,
                            user_properties: p.user_properties,
                            ..Properties::default()
                        })
                        .unwrap_or_default(),
                }),
                username,
                password,
                properties,
            }))
        }
        M::ConnAck(a) => Packet::ConnAck(ConnAck {
            session_present: a.session_present,
            reason: reason(a.code as u8),
            properties: a
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_max,
                    maximum_qos: p.max_qos.map(|q| QoS::from_u8(q).unwrap()),
                    retain_available: flag(p.retain_available),
                    maximum_packet_size: p.max_packet_size,
                    assigned_client_identifier: p.assigned_client_identifier,
                    topic_alias_maximum: p.topic_alias_max,
                    reason_string: p.reason_string,
                    user_properties: p.user_properties,
                    wildcard_subscription_available: flag(p.wildcard_subscription_available),
                    subscription_identifier_available: flag(p.subscription_identifiers_available),
                    shared_subscription_available: flag(p.shared_subscription_available),
                    server_keep_alive: p.server_keep_alive,
                    response_information: p.response_information,
                    server_reference: p.server_reference,
                    authentication_method: p.authentication_method,
                    authentication_data: p.authentication_data,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
        M::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos(p.qos),
            retain: p.retain,
            topic: TopicName::new(p.topic).unwrap(),
            packet_id: opt_pid(p.qos, p.pkid),
            payload: p.payload,
            properties: p
                .properties
                .map(|p| Properties {
                    payload_format_indicator: flag(p.payload_format_indicator),
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: p.topic_alias,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    subscription_identifiers: p
                        .subscription_identifiers
                        .into_iter()
                        .map(|i| u32::try_from(i).unwrap())
                        .collect(),
                    content_type: p.content_type,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
        M::PubAck(a) => Packet::PubAck(PubResp {
            packet_id: pid(a.pkid),
            reason: reason(a.reason as u8),
            properties: a
                .properties
                .map(|p| ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        M::PubRec(a) => Packet::PubRec(PubResp {
            packet_id: pid(a.pkid),
            reason: reason(a.reason as u8),
            properties: a
                .properties
                .map(|p| ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        M::PubRel(a) => Packet::PubRel(PubResp {
            packet_id: pid(a.pkid),
            reason: reason(a.reason as u8),
            properties: a
                .properties
                .map(|p| ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        M::PubComp(a) => Packet::PubComp(PubResp {
            packet_id: pid(a.pkid),
            reason: reason(a.reason as u8),
            properties: a
                .properties
                .map(|p| ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        M::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: pid(s.pkid),
            subscriptions: s
                .filters
                .into_iter()
                .map(|f| Subscription {
                    filter: TopicFilter::new(f.path).unwrap(),
                    options: SubscriptionOptions {
                        qos: qos(f.qos),
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: match f.retain_forward_rule {
                            mb5::RetainForwardRule::OnEverySubscribe => {
                                RetainHandling::SendAtSubscribe
                            }
                            mb5::RetainForwardRule::OnNewSubscribe => RetainHandling::SendIfNew,
                            mb5::RetainForwardRule::Never => RetainHandling::DoNotSend,
                        },
                    },
                })
                .collect(),
            properties: s
                .properties
                .map(|p| Properties {
                    subscription_identifiers: p
                        .id
                        .map(|i| u32::try_from(i).unwrap())
                        .into_iter()
                        .collect(),
                    user_properties: p.user_properties,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
        M::SubAck(a) => Packet::SubAck(SubAck {
            packet_id: pid(a.pkid),
            reasons: a
                .return_codes
                .into_iter()
                .map(|c| reason(c as u8))
                .collect(),
            properties: a
                .properties
                .map(|p| ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        M::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(u.pkid),
            filters: u
                .filters
                .into_iter()
                .map(|t| TopicFilter::new(t).unwrap())
                .collect(),
            properties: u
                .properties
                .map(|p| ack_props(None, p.user_properties))
                .unwrap_or_default(),
        }),
        M::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
            packet_id: pid(a.pkid),
            reasons: a.reasons.into_iter().map(|c| reason(c as u8)).collect(),
            properties: a
                .properties
                .map(|p| ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        M::PingReq => Packet::PingReq,
        M::PingResp => Packet::PingResp,
        M::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason: reason(d.reason_code as u8),
            properties: d
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    reason_string: p.reason_string,
                    user_properties: p.user_properties,
                    server_reference: p.server_reference,
                    ..Properties::default()
                })
                .unwrap_or_default(),
        }),
    }
}

/// Reads one packet with mqttbytes v5, DISCONNECT through `Disconnect::read` (see the
/// module docs).
fn read_mb5(bytes: &[u8]) -> mb5::Packet {
    let mut stream = BytesMut::from(bytes);
    if bytes[0] == 0xE0 {
        let header = mqttbytes::check(stream.iter(), MAX).unwrap();
        let frame = stream.split_to(header.frame_length()).freeze();
        return mb5::Packet::Disconnect(mb5::Disconnect::read(header, frame).unwrap());
    }
    let p = mb5::read(&mut stream, MAX).unwrap();
    assert!(stream.is_empty(), "mqttbytes used every byte");
    p
}

fn write_mb5(p: &mb5::Packet) -> Vec<u8> {
    use mb5::Packet as M;
    let mut b = BytesMut::new();
    match p {
        M::Connect(x) => x.write(&mut b),
        M::ConnAck(x) => x.write(&mut b),
        M::Publish(x) => x.write(&mut b),
        M::PubAck(x) => x.write(&mut b),
        M::PubRec(x) => x.write(&mut b),
        M::PubRel(x) => x.write(&mut b),
        M::PubComp(x) => x.write(&mut b),
        M::Subscribe(x) => x.write(&mut b),
        M::SubAck(x) => x.write(&mut b),
        M::Unsubscribe(x) => x.write(&mut b),
        M::UnsubAck(x) => x.write(&mut b),
        M::PingReq => mb5::PingReq.write(&mut b),
        M::PingResp => mb5::PingResp.write(&mut b),
        M::Disconnect(x) => x.write(&mut b),
    }
    .unwrap();
    b.to_vec()
}

fn v5_supported(p: &Packet) -> bool {
    match p {
        Packet::Connect(c) => login_ok(c),
        Packet::Disconnect(d) => d.reason == ReasonCode::Success || !d.properties.is_empty(),
        Packet::Auth(_) => false,
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn mqtt_5_packets_agree_with_mqttbytes_v5_both_ways(
        p in packet(ProtocolVersion::V5).prop_filter("mqttbytes corner", v5_supported)
    ) {
        let v = ProtocolVersion::V5;
        let ours = encode(&p, v);
        let theirs = read_mb5(&ours);
        let written = write_mb5(&theirs);
        prop_assert_eq!(from_mb5(theirs), p.clone());
        // mqttbytes writes a CONNACK without properties without their length (module docs).
        let connack_without_props =
            matches!(&p, Packet::ConnAck(a) if a.properties.is_empty());
        if !connack_without_props {
            let (back, used) = Packet::decode(&written, v, u32::MAX).unwrap().unwrap();
            prop_assert_eq!(used, written.len());
            prop_assert_eq!(back, p);
        }
    }
}

#[test]
fn a_5_publish_built_by_mqttbytes_decodes_with_us() {
    let mut p = mb5::Publish::new("s/1/temp", mqttbytes::QoS::AtLeastOnce, "21.5");
    p.pkid = 77;
    p.retain = true;
    p.properties = Some(mb5::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(120),
        topic_alias: Some(3),
        response_topic: Some("r/1".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("unit".into(), "C".into())],
        subscription_identifiers: vec![5, 300],
        content_type: Some("text/plain".into()),
    });
    let bytes = write_mb5(&mb5::Packet::Publish(p));
    let (p, used) = Packet::decode(&bytes, ProtocolVersion::V5, u32::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(used, bytes.len());
    let Packet::Publish(p) = p else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.topic, "s/1/temp");
    assert_eq!(p.packet_id, PacketId::new(77));
    assert_eq!(p.payload, Bytes::from_static(b"21.5"));
    assert_eq!(p.properties.payload_format_indicator, Some(true));
    assert_eq!(p.properties.topic_alias, Some(3));
    assert_eq!(p.properties.subscription_identifiers, [5, 300]);
    assert_eq!(
        p.properties.user_properties,
        [("unit".to_owned(), "C".to_owned())]
    );
}
