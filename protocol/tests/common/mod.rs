//! Proptest strategies shared by the codec tests: valid packets of both protocol versions.
//!
//! A generated packet is always *representable* in its version: MQTT 3.1.1 packets carry no
//! properties and only the reason codes 3.1.1 can express, so encoding then decoding gives
//! back the very same value (the lossy 3.1.1 folds are not round-trip cases).

#![allow(dead_code)]

use std::num::NonZeroU16;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use protocol::properties::Allowed;
use protocol::reason::ReasonContext;
use protocol::{
    Auth, ConnAck, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName,
    UnsubAck, Unsubscribe, Will,
};

/// Both versions, for `prop_oneof!`-free iteration.
pub(crate) const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// A UTF-8 string without U+0000 [MQTT-1.5.4-2] (surrogates cannot occur in a Rust `str`).
pub(crate) fn mqtt_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,8}"
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 _.-]{1,6}",
        1 => Just(String::new()),
        1 => "[éß€😀$]{1,3}",
    ]
}

/// A valid topic name: 1 to 5 levels, no wildcards, not empty [MQTT-4.7.3-1].
pub(crate) fn topic_name() -> impl Strategy<Value = TopicName> {
    vec(level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter_map("empty topic", |s| TopicName::new(s).ok())
}

/// A valid topic filter without the `$share/` prefix: `+` as whole levels, `#` last.
fn plain_filter() -> impl Strategy<Value = String> {
    (
        vec(prop_oneof![3 => level(), 1 => Just("+".to_owned())], 1..5),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| {
            let mut s = levels.join("/");
            if hash {
                s.push_str(if s.is_empty() { "#" } else { "/#" });
            }
            s
        })
        .prop_filter("empty or shared", |s| {
            !s.is_empty() && !s.starts_with("$share")
        })
}

/// A topic filter; in MQTT 5.0 sometimes a well-formed shared subscription.
pub(crate) fn topic_filter(v: ProtocolVersion) -> BoxedStrategy<TopicFilter> {
    let plain = plain_filter().prop_filter_map("invalid", |s| TopicFilter::new(s).ok());
    match v {
        ProtocolVersion::V311 => plain.boxed(),
        ProtocolVersion::V5 => prop_oneof![
            4 => plain,
            1 => ("[a-z0-9]{1,5}", plain_filter()).prop_filter_map("invalid", |(g, f)| {
                TopicFilter::new(format!("$share/{g}/{f}")).ok()
            }),
        ]
        .boxed(),
    }
}

pub(crate) fn packet_id() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|n| NonZeroU16::new(n).expect("1..=MAX is never zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Every property with a valid value, then restricted to the identifiers `allowed` permits.
pub(crate) fn properties(allowed: Allowed) -> impl Strategy<Value = protocol::Properties> {
    use protocol::properties::id;
    let opt_s = || proptest::option::of(mqtt_string());
    let group1 = (
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<u32>()),
        opt_s(),
        proptest::option::of(topic_name().prop_map(|t| t.as_str().to_owned())),
        proptest::option::of(bytes(8)),
        vec(1..=protocol::wire::MAX_VAR_INT, 0..3),
        proptest::option::of(any::<u32>()),
        opt_s(),
        proptest::option::of(any::<u16>()),
    );
    let group2 = (
        opt_s(),
        proptest::option::of(bytes(8)),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<bool>()),
        opt_s(),
        opt_s(),
        opt_s(),
        proptest::option::of(1..=u16::MAX),
    );
    let group3 = (
        proptest::option::of(any::<u16>()),
        proptest::option::of(1..=u16::MAX),
        proptest::option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
        proptest::option::of(any::<bool>()),
        vec((mqtt_string(), mqtt_string()), 0..3),
        proptest::option::of(1..=u32::MAX),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
    );
    (group1, group2, group3).prop_map(move |(g1, g2, g3)| {
        let mut p = protocol::Properties::default();
        let ok = |i: u8| allowed.contains(i);
        macro_rules! set {
            ($field:ident, $id:expr, $value:expr) => {
                if ok($id) {
                    p.$field = $value;
                }
            };
        }
        set!(payload_format_indicator, id::PAYLOAD_FORMAT_INDICATOR, g1.0);
        set!(message_expiry_interval, id::MESSAGE_EXPIRY_INTERVAL, g1.1);
        set!(content_type, id::CONTENT_TYPE, g1.2);
        set!(response_topic, id::RESPONSE_TOPIC, g1.3);
        set!(correlation_data, id::CORRELATION_DATA, g1.4);
        set!(subscription_identifiers, id::SUBSCRIPTION_IDENTIFIER, g1.5);
        set!(session_expiry_interval, id::SESSION_EXPIRY_INTERVAL, g1.6);
        set!(
            assigned_client_identifier,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            g1.7
        );
        set!(server_keep_alive, id::SERVER_KEEP_ALIVE, g1.8);
        set!(authentication_method, id::AUTHENTICATION_METHOD, g2.0);
        set!(authentication_data, id::AUTHENTICATION_DATA, g2.1);
        // Authentication Data needs an Authentication Method (5.0 3.1.2.11.10).
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            p.authentication_method = Some("method".into());
        }
        set!(
            request_problem_information,
            id::REQUEST_PROBLEM_INFORMATION,
            g2.2
        );
        set!(will_delay_interval, id::WILL_DELAY_INTERVAL, g2.3);
        set!(
            request_response_information,
            id::REQUEST_RESPONSE_INFORMATION,
            g2.4
        );
        set!(response_information, id::RESPONSE_INFORMATION, g2.5);
        set!(server_reference, id::SERVER_REFERENCE, g2.6);
        set!(reason_string, id::REASON_STRING, g2.7);
        set!(receive_maximum, id::RECEIVE_MAXIMUM, g2.8);
        set!(topic_alias_maximum, id::TOPIC_ALIAS_MAXIMUM, g3.0);
        set!(topic_alias, id::TOPIC_ALIAS, g3.1);
        set!(maximum_qos, id::MAXIMUM_QOS, g3.2);
        set!(retain_available, id::RETAIN_AVAILABLE, g3.3);
        set!(user_properties, id::USER_PROPERTY, g3.4);
        set!(maximum_packet_size, id::MAXIMUM_PACKET_SIZE, g3.5);
        set!(
            wildcard_subscription_available,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            g3.6
        );
        set!(
            subscription_identifier_available,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            g3.7
        );
        set!(
            shared_subscription_available,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            g3.8
        );
        p
    })
}

/// Properties for version `v`: none at all in 3.1.1.
fn props(v: ProtocolVersion, allowed: Allowed) -> BoxedStrategy<protocol::Properties> {
    match v {
        ProtocolVersion::V311 => Just(protocol::Properties::default()).boxed(),
        ProtocolVersion::V5 => properties(allowed).boxed(),
    }
}

/// The reason codes allowed in `ctx`, limited in 3.1.1 to what `v3_codes` can express.
fn reason(v: ProtocolVersion, ctx: ReasonContext) -> impl Strategy<Value = ReasonCode> {
    let codes: Vec<ReasonCode> = (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|c| c.allowed_in(ctx))
        .filter(|c| match (v, ctx) {
            (ProtocolVersion::V5, _) => true,
            // 3.1.1 CONNACK return codes 0 to 5.
            (ProtocolVersion::V311, ReasonContext::ConnAck) => {
                ReasonCode::from_v3_connect_return_code(c.to_v3_connect_return_code()) == Some(*c)
            }
            // 3.1.1 SUBACK: granted QoS 0/1/2 or 0x80 Failure.
            (ProtocolVersion::V311, ReasonContext::SubAck) => {
                matches!(c.as_u8(), 0x00..=0x02 | 0x80)
            }
            // 3.1.1 has no reason codes elsewhere.
            (ProtocolVersion::V311, _) => *c == ReasonCode::Success,
        })
        .collect();
    proptest::sample::select(codes)
}

fn will(v: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        bytes(16),
        qos(),
        any::<bool>(),
        props(v, Allowed::WILL),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

pub(crate) fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        mqtt_string(),
        proptest::option::of(will(v)),
        proptest::option::of(mqtt_string()),
        proptest::option::of(bytes(12)),
        props(v, Allowed::CONNECT),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 cannot carry a password without a user name [MQTT-3.1.2-22].
                let password = match (v, &username) {
                    (ProtocolVersion::V311, None) => None,
                    _ => password,
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        reason(v, ReasonContext::ConnAck),
        props(v, Allowed::CONNACK),
    )
        .prop_map(|(present, reason, properties)| {
            Packet::ConnAck(ConnAck {
                // A refused connection has no session [MQTT-3.2.2-4], [MQTT-3.2.2-6].
                session_present: present && !reason.is_error(),
                reason,
                properties,
            })
        })
}

/// A PUBLISH; in 5.0 possibly with a Topic Alias (the stateless decode keeps it).
pub(crate) fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        bytes(64),
        props(v, Allowed::PUBLISH),
    )
        .prop_map(|(qos, dup, retain, topic, id, payload, properties)| {
            let at_least_once = qos != QoS::AtMostOnce;
            Publish {
                // DUP is 0 on every QoS 0 message [MQTT-3.3.1-2].
                dup: dup && at_least_once,
                qos,
                retain,
                topic,
                packet_id: at_least_once.then_some(id),
                payload,
                properties,
            }
        })
}

fn pub_resp(v: ProtocolVersion, ctx: ReasonContext) -> impl Strategy<Value = PubResp> {
    (packet_id(), reason(v, ctx), props(v, Allowed::ACK)).prop_map(
        |(packet_id, reason, properties)| PubResp {
            packet_id,
            reason,
            properties,
        },
    )
}

fn subscription(v: ProtocolVersion) -> impl Strategy<Value = Subscription> {
    (
        topic_filter(v),
        qos(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(RetainHandling::SendAtSubscribe),
            Just(RetainHandling::SendIfNew),
            Just(RetainHandling::DoNotSend)
        ],
    )
        .prop_map(move |(filter, qos, no_local, rap, rh)| {
            let options = match v {
                ProtocolVersion::V311 => SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
                ProtocolVersion::V5 => SubscriptionOptions {
                    qos,
                    // Not on a shared subscription [MQTT-3.8.3-4].
                    no_local: no_local && !filter.starts_with("$share/"),
                    retain_as_published: rap,
                    retain_handling: rh,
                },
            };
            Subscription { filter, options }
        })
}

pub(crate) fn subscribe(
    v: ProtocolVersion,
    n: std::ops::Range<usize>,
) -> impl Strategy<Value = Subscribe> {
    (
        packet_id(),
        vec(subscription(v), n),
        props(v, Allowed::SUBSCRIBE),
    )
        .prop_map(|(packet_id, subscriptions, mut properties)| {
            // At most one Subscription Identifier in a SUBSCRIBE (spec 3.8.2.1.2).
            properties.subscription_identifiers.truncate(1);
            Subscribe {
                packet_id,
                subscriptions,
                properties,
            }
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(reason(v, ReasonContext::SubAck), 1..5),
        props(v, Allowed::ACK),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(topic_filter(v), 1..5),
        props(v, Allowed::UNSUBSCRIBE),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // 3.1.1 UNSUBACK has no payload; 5.0 has one reason code per filter [MQTT-3.11.3-1].
    let n = match v {
        ProtocolVersion::V311 => 0..1,
        ProtocolVersion::V5 => 1..5,
    };
    (
        packet_id(),
        vec(reason(v, ReasonContext::UnsubAck), n),
        props(v, Allowed::ACK),
    )
        .prop_map(|(packet_id, reasons, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reasons,
                properties,
            })
        })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        reason(v, ReasonContext::Disconnect),
        props(v, Allowed::DISCONNECT),
    )
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(ProtocolVersion::V5, ReasonContext::Auth),
        properties(Allowed::AUTH),
    )
        .prop_map(|(reason, mut properties)| {
            // An AUTH always names its method (3.15.2.2.2).
            properties
                .authentication_method
                .get_or_insert_with(|| "method".into());
            Packet::Auth(Auth { reason, properties })
        })
}

/// Any packet valid in `v` except CONNECT.
pub(crate) fn non_connect_packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connack(v),
        publish(v).prop_map(Packet::Publish),
        pub_resp(v, ReasonContext::PubAckOrRec).prop_map(Packet::PubAck),
        pub_resp(v, ReasonContext::PubAckOrRec).prop_map(Packet::PubRec),
        pub_resp(v, ReasonContext::PubRelOrComp).prop_map(Packet::PubRel),
        pub_resp(v, ReasonContext::PubRelOrComp).prop_map(Packet::PubComp),
        subscribe(v, 1..5).prop_map(Packet::Subscribe),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    match v {
        ProtocolVersion::V311 => common.boxed(),
        ProtocolVersion::V5 => prop_oneof![13 => common, 1 => auth()].boxed(),
    }
}

/// Any packet valid in `v`.
pub(crate) fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    prop_oneof![1 => connect(v), 14 => non_connect_packet(v)].boxed()
}

/// Encodes `p`, checking that `encode` reports the length `encoded_len` predicted and wrote.
pub(crate) fn encode(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    let n = p.encode(v, &mut out).expect("a generated packet encodes");
    assert_eq!(n, out.len(), "encode's return value is the bytes written");
    assert_eq!(
        p.encoded_len(v).expect("a generated packet has a length"),
        out.len(),
        "encoded_len is the bytes written"
    );
    out
}

/// A packet without a Topic Alias (a [`protocol::Decoder`] with no alias maximum refuses
/// every alias, so streams fed to one leave them out).
pub(crate) fn without_alias(mut p: Packet) -> Packet {
    if let Packet::Publish(publish) = &mut p {
        publish.properties.topic_alias = None;
    }
    p
}
