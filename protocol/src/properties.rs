//! MQTT 5.0 properties (spec section 2.2.2).
//!
//! One [`Properties`] struct serves every packet; which identifiers a packet may carry is
//! checked by the codec on decode and on encode (see [`Allowed`]), so a packet never carries
//! a property the spec forbids there. In MQTT 3.1.1 properties are not on the wire at all.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::prelude::*;
use crate::wire::{self, Reader, MAX_VAR_INT};
use crate::QoS;

/// Property identifiers (spec table 2-4).
pub mod id {
    #![allow(missing_docs)]
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The set of property identifiers a packet may carry: bit `n` set means identifier `n` is
/// allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed(u64);

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

impl Allowed {
    /// CONNECT (spec 3.1.2.11).
    pub const CONNECT: Allowed = Allowed(mask(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::RECEIVE_MAXIMUM,
        id::MAXIMUM_PACKET_SIZE,
        id::TOPIC_ALIAS_MAXIMUM,
        id::REQUEST_RESPONSE_INFORMATION,
        id::REQUEST_PROBLEM_INFORMATION,
        id::USER_PROPERTY,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
    ]));
    /// The will properties in CONNECT's payload (spec 3.1.3.2).
    pub const WILL: Allowed = Allowed(mask(&[
        id::WILL_DELAY_INTERVAL,
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::CONTENT_TYPE,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::USER_PROPERTY,
    ]));
    /// CONNACK (spec 3.2.2.3).
    pub const CONNACK: Allowed = Allowed(mask(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::RECEIVE_MAXIMUM,
        id::MAXIMUM_QOS,
        id::RETAIN_AVAILABLE,
        id::MAXIMUM_PACKET_SIZE,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        id::TOPIC_ALIAS_MAXIMUM,
        id::REASON_STRING,
        id::USER_PROPERTY,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        id::SERVER_KEEP_ALIVE,
        id::RESPONSE_INFORMATION,
        id::SERVER_REFERENCE,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
    ]));
    /// PUBLISH (spec 3.3.2.3).
    pub const PUBLISH: Allowed = Allowed(mask(&[
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::TOPIC_ALIAS,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::USER_PROPERTY,
        id::SUBSCRIPTION_IDENTIFIER,
        id::CONTENT_TYPE,
    ]));
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK (reason string and user properties).
    pub const ACK: Allowed = Allowed(mask(&[id::REASON_STRING, id::USER_PROPERTY]));
    /// SUBSCRIBE (spec 3.8.2.1).
    pub const SUBSCRIBE: Allowed = Allowed(mask(&[id::SUBSCRIPTION_IDENTIFIER, id::USER_PROPERTY]));
    /// UNSUBSCRIBE (spec 3.10.2.1).
    pub const UNSUBSCRIBE: Allowed = Allowed(mask(&[id::USER_PROPERTY]));
    /// DISCONNECT (spec 3.14.2.2).
    pub const DISCONNECT: Allowed = Allowed(mask(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::REASON_STRING,
        id::USER_PROPERTY,
        id::SERVER_REFERENCE,
    ]));
    /// AUTH (spec 3.15.2.2).
    pub const AUTH: Allowed = Allowed(mask(&[
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::REASON_STRING,
        id::USER_PROPERTY,
    ]));

    /// Is identifier `id` in the set?
    pub fn contains(self, id: u8) -> bool {
        id < 64 && self.0 & (1 << id) != 0
    }
}

/// Every MQTT 5.0 property. `None` / empty means absent on the wire. Fields are named as in
/// the spec; their docs say which packets carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01, PUBLISH / will: `Some(true)` = the payload is UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// 0x02, PUBLISH / will: seconds the message lives.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH / will.
    pub content_type: Option<String>,
    /// 0x08, PUBLISH / will: a topic name for the response (no wildcards [MQTT-3.3.2-14]).
    pub response_topic: Option<String>,
    /// 0x09, PUBLISH / will.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, SUBSCRIBE (at most one) and PUBLISH from the server (one per matching
    /// subscription); each 1 to 268 435 455.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, CONNECT / CONNACK / DISCONNECT: seconds; 0xFFFFFFFF = never expires.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK.
    pub assigned_client_identifier: Option<String>,
    /// 0x13, CONNACK: the keep-alive the client must use instead of its own.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT / CONNACK / AUTH.
    pub authentication_method: Option<String>,
    /// 0x16, CONNECT / CONNACK / AUTH.
    pub authentication_data: Option<Bytes>,
    /// 0x17, CONNECT.
    pub request_problem_information: Option<bool>,
    /// 0x18, will: seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT.
    pub request_response_information: Option<bool>,
    /// 0x1A, CONNACK.
    pub response_information: Option<String>,
    /// 0x1C, CONNACK / DISCONNECT.
    pub server_reference: Option<String>,
    /// 0x1F, acknowledgements, CONNACK, DISCONNECT, AUTH: a human-readable diagnostic.
    pub reason_string: Option<String>,
    /// 0x21, CONNECT / CONNACK: how many QoS 1/2 PUBLISHes the sender accepts in flight
    /// (1 to 65 535; absent = 65 535).
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT / CONNACK: the highest Topic Alias the sender accepts (0 = none).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH: 1 to the receiver's Topic Alias Maximum.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK: QoS 0 or 1 (absent = 2 is supported).
    pub maximum_qos: Option<QoS>,
    /// 0x25, CONNACK.
    pub retain_available: Option<bool>,
    /// 0x26, any packet: name/value pairs, order kept, repeats allowed.
    pub user_properties: Vec<(String, String)>,
    /// 0x27, CONNECT / CONNACK: the largest packet the sender accepts (1 or more).
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29, CONNACK.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A, CONNACK.
    pub shared_subscription_available: Option<bool>,
}

fn set_once<T>(slot: &mut Option<T>, id: u8, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(r: &mut Reader<'_>, id: u8) -> Result<bool, DecodeError> {
    match r.u8("property")? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::PropertyValue(id)),
    }
}

impl Properties {
    /// No property set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Decodes a property block (its variable byte integer length, then the properties),
    /// accepting only the identifiers in `allowed`.
    pub(crate) fn decode(r: &mut Reader<'_>, allowed: Allowed) -> Result<Self, DecodeError> {
        let len = r.var_int("property length")?;
        let mut r = r.sub(len as usize, "properties")?;
        let mut p = Properties::default();
        while !r.is_empty() {
            // Identifiers are variable byte integers, but every defined one fits in one byte;
            // a longer one cannot be a defined identifier.
            let ident = r.var_int("property identifier")?;
            let Ok(ident) = u8::try_from(ident) else {
                return Err(DecodeError::InvalidProperty(0xFF));
            };
            if !allowed.contains(ident) {
                return Err(DecodeError::InvalidProperty(ident));
            }
            match ident {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.payload_format_indicator, ident, v)?
                }
                id::MESSAGE_EXPIRY_INTERVAL => {
                    let v = r.u32("property")?;
                    set_once(&mut p.message_expiry_interval, ident, v)?
                }
                id::CONTENT_TYPE => {
                    let v = r.string("property")?;
                    set_once(&mut p.content_type, ident, v)?
                }
                id::RESPONSE_TOPIC => {
                    let v = r.str("property")?;
                    crate::topic::TopicName::new(v).map_err(DecodeError::InvalidTopicName)?;
                    set_once(&mut p.response_topic, ident, v.to_owned())?
                }
                id::CORRELATION_DATA => {
                    let v = r.bytes("property")?;
                    set_once(&mut p.correlation_data, ident, v)?
                }
                id::SUBSCRIPTION_IDENTIFIER => {
                    let v = r.var_int("property")?;
                    if v == 0 {
                        return Err(DecodeError::PropertyValue(ident));
                    }
                    p.subscription_identifiers.push(v);
                }
                id::SESSION_EXPIRY_INTERVAL => {
                    let v = r.u32("property")?;
                    set_once(&mut p.session_expiry_interval, ident, v)?
                }
                id::ASSIGNED_CLIENT_IDENTIFIER => {
                    let v = r.string("property")?;
                    set_once(&mut p.assigned_client_identifier, ident, v)?
                }
                id::SERVER_KEEP_ALIVE => {
                    let v = r.u16("property")?;
                    set_once(&mut p.server_keep_alive, ident, v)?
                }
                id::AUTHENTICATION_METHOD => {
                    let v = r.string("property")?;
                    set_once(&mut p.authentication_method, ident, v)?
                }
                id::AUTHENTICATION_DATA => {
                    let v = r.bytes("property")?;
                    set_once(&mut p.authentication_data, ident, v)?
                }
                id::REQUEST_PROBLEM_INFORMATION => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.request_problem_information, ident, v)?
                }
                id::WILL_DELAY_INTERVAL => {
                    let v = r.u32("property")?;
                    set_once(&mut p.will_delay_interval, ident, v)?
                }
                id::REQUEST_RESPONSE_INFORMATION => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.request_response_information, ident, v)?
                }
                id::RESPONSE_INFORMATION => {
                    let v = r.string("property")?;
                    set_once(&mut p.response_information, ident, v)?
                }
                id::SERVER_REFERENCE => {
                    let v = r.string("property")?;
                    set_once(&mut p.server_reference, ident, v)?
                }
                id::REASON_STRING => {
                    let v = r.string("property")?;
                    set_once(&mut p.reason_string, ident, v)?
                }
                id::RECEIVE_MAXIMUM => {
                    let v = r.u16("property")?;
                    if v == 0 {
                        return Err(DecodeError::PropertyValue(ident));
                    }
                    set_once(&mut p.receive_maximum, ident, v)?
                }
                id::TOPIC_ALIAS_MAXIMUM => {
                    let v = r.u16("property")?;
                    set_once(&mut p.topic_alias_maximum, ident, v)?
                }
                id::TOPIC_ALIAS => {
                    let v = r.u16("property")?;
                    if v == 0 {
                        return Err(DecodeError::TopicAliasInvalid(0));
                    }
                    set_once(&mut p.topic_alias, ident, v)?
                }
                id::MAXIMUM_QOS => {
                    let v = match r.u8("property")? {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        _ => return Err(DecodeError::PropertyValue(ident)),
                    };
                    set_once(&mut p.maximum_qos, ident, v)?
                }
                id::RETAIN_AVAILABLE => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.retain_available, ident, v)?
                }
                id::USER_PROPERTY => {
                    let k = r.string("property")?;
                    let v = r.string("property")?;
                    p.user_properties.push((k, v));
                }
                id::MAXIMUM_PACKET_SIZE => {
                    let v = r.u32("property")?;
                    if v == 0 {
                        return Err(DecodeError::PropertyValue(ident));
                    }
                    set_once(&mut p.maximum_packet_size, ident, v)?
                }
                id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.wildcard_subscription_available, ident, v)?
                }
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.subscription_identifier_available, ident, v)?
                }
                id::SHARED_SUBSCRIPTION_AVAILABLE => {
                    let v = flag(&mut r, ident)?;
                    set_once(&mut p.shared_subscription_available, ident, v)?
                }
                other => return Err(DecodeError::InvalidProperty(other)),
            }
        }
        Ok(p)
    }

    /// The identifiers that are set, for the allowed-set check on encode.
    fn present(&self) -> impl Iterator<Item = u8> + '_ {
        let p = self;
        [
            (
                p.payload_format_indicator.is_some(),
                id::PAYLOAD_FORMAT_INDICATOR,
            ),
            (
                p.message_expiry_interval.is_some(),
                id::MESSAGE_EXPIRY_INTERVAL,
            ),
            (p.content_type.is_some(), id::CONTENT_TYPE),
            (p.response_topic.is_some(), id::RESPONSE_TOPIC),
            (p.correlation_data.is_some(), id::CORRELATION_DATA),
            (
                !p.subscription_identifiers.is_empty(),
                id::SUBSCRIPTION_IDENTIFIER,
            ),
            (
                p.session_expiry_interval.is_some(),
                id::SESSION_EXPIRY_INTERVAL,
            ),
            (
                p.assigned_client_identifier.is_some(),
                id::ASSIGNED_CLIENT_IDENTIFIER,
            ),
            (p.server_keep_alive.is_some(), id::SERVER_KEEP_ALIVE),
            (p.authentication_method.is_some(), id::AUTHENTICATION_METHOD),
            (p.authentication_data.is_some(), id::AUTHENTICATION_DATA),
            (
                p.request_problem_information.is_some(),
                id::REQUEST_PROBLEM_INFORMATION,
            ),
            (p.will_delay_interval.is_some(), id::WILL_DELAY_INTERVAL),
            (
                p.request_response_information.is_some(),
                id::REQUEST_RESPONSE_INFORMATION,
            ),
            (p.response_information.is_some(), id::RESPONSE_INFORMATION),
            (p.server_reference.is_some(), id::SERVER_REFERENCE),
            (p.reason_string.is_some(), id::REASON_STRING),
            (p.receive_maximum.is_some(), id::RECEIVE_MAXIMUM),
            (p.topic_alias_maximum.is_some(), id::TOPIC_ALIAS_MAXIMUM),
            (p.topic_alias.is_some(), id::TOPIC_ALIAS),
            (p.maximum_qos.is_some(), id::MAXIMUM_QOS),
            (p.retain_available.is_some(), id::RETAIN_AVAILABLE),
            (!p.user_properties.is_empty(), id::USER_PROPERTY),
            (p.maximum_packet_size.is_some(), id::MAXIMUM_PACKET_SIZE),
            (
                p.wildcard_subscription_available.is_some(),
                id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            ),
            (
                p.subscription_identifier_available.is_some(),
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            ),
            (
                p.shared_subscription_available.is_some(),
                id::SHARED_SUBSCRIPTION_AVAILABLE,
            ),
        ]
        .into_iter()
        .filter_map(|(set, ident)| set.then_some(ident))
    }

    /// The length of the property block's content (without its own length prefix), after
    /// checking every property is allowed and fits its field.
    pub(crate) fn encoded_len(&self, allowed: Allowed) -> Result<usize, EncodeError> {
        if let Some(bad) = self.present().find(|&i| !allowed.contains(i)) {
            return Err(EncodeError::PropertyNotAllowed(bad));
        }
        // What the decoder refuses is refused here too, so that a sender learns it before
        // the receiver closes the connection [MQTT-1.5.4-2].
        fn s(v: &Option<String>, field: &'static str) -> Result<usize, EncodeError> {
            match v {
                Some(v) => wire::check_str(v, field).map(|()| 3 + v.len()),
                None => Ok(0),
            }
        }
        fn b(v: &Option<Bytes>, field: &'static str) -> Result<usize, EncodeError> {
            match v {
                Some(v) => wire::check_len(v.len(), field).map(|()| 3 + v.len()),
                None => Ok(0),
            }
        }
        let p = self;
        let mut n = 0;
        n += 2 * usize::from(p.payload_format_indicator.is_some());
        n += 5 * usize::from(p.message_expiry_interval.is_some());
        n += s(&p.content_type, "content type")?;
        n += s(&p.response_topic, "response topic")?;
        if let Some(t) = &p.response_topic {
            // A topic name: no wildcards [MQTT-3.3.2-14].
            crate::topic::validate_name(t)
                .map_err(|_| EncodeError::PropertyValue(id::RESPONSE_TOPIC))?;
        }
        n += b(&p.correlation_data, "correlation data")?;
        for &sid in &p.subscription_identifiers {
            if sid == 0 || sid > MAX_VAR_INT {
                return Err(EncodeError::PropertyValue(id::SUBSCRIPTION_IDENTIFIER));
            }
            n += 1 + wire::var_int_len(sid);
        }
        n += 5 * usize::from(p.session_expiry_interval.is_some());
        n += s(&p.assigned_client_identifier, "assigned client identifier")?;
        n += 3 * usize::from(p.server_keep_alive.is_some());
        n += s(&p.authentication_method, "authentication method")?;
        n += b(&p.authentication_data, "authentication data")?;
        n += 2 * usize::from(p.request_problem_information.is_some());
        n += 5 * usize::from(p.will_delay_interval.is_some());
        n += 2 * usize::from(p.request_response_information.is_some());
        n += s(&p.response_information, "response information")?;
        n += s(&p.server_reference, "server reference")?;
        n += s(&p.reason_string, "reason string")?;
        if p.receive_maximum == Some(0) {
            return Err(EncodeError::PropertyValue(id::RECEIVE_MAXIMUM));
        }
        n += 3 * usize::from(p.receive_maximum.is_some());
        n += 3 * usize::from(p.topic_alias_maximum.is_some());
        if p.topic_alias == Some(0) {
            return Err(EncodeError::PropertyValue(id::TOPIC_ALIAS));
        }
        n += 3 * usize::from(p.topic_alias.is_some());
        if p.maximum_qos == Some(QoS::ExactlyOnce) {
            return Err(EncodeError::PropertyValue(id::MAXIMUM_QOS));
        }
        n += 2 * usize::from(p.maximum_qos.is_some());
        n += 2 * usize::from(p.retain_available.is_some());
        for (k, v) in &p.user_properties {
            wire::check_str(k, "user property")?;
            wire::check_str(v, "user property")?;
            n += 5 + k.len() + v.len();
        }
        if p.maximum_packet_size == Some(0) {
            return Err(EncodeError::PropertyValue(id::MAXIMUM_PACKET_SIZE));
        }
        n += 5 * usize::from(p.maximum_packet_size.is_some());
        n += 2 * usize::from(p.wildcard_subscription_available.is_some());
        n += 2 * usize::from(p.subscription_identifier_available.is_some());
        n += 2 * usize::from(p.shared_subscription_available.is_some());
        Ok(n)
    }

    /// Writes the property block: its length `len` (from [`Properties::encoded_len`]) and the
    /// properties in identifier order.
    pub(crate) fn encode(&self, len: usize, buf: &mut impl BufMut) {
        fn byte(buf: &mut impl BufMut, ident: u8, v: Option<u8>) {
            if let Some(v) = v {
                buf.put_u8(ident);
                buf.put_u8(v);
            }
        }
        fn u16p(buf: &mut impl BufMut, ident: u8, v: Option<u16>) {
            if let Some(v) = v {
                buf.put_u8(ident);
                buf.put_u16(v);
            }
        }
        fn u32p(buf: &mut impl BufMut, ident: u8, v: Option<u32>) {
            if let Some(v) = v {
                buf.put_u8(ident);
                buf.put_u32(v);
            }
        }
        fn bin(buf: &mut impl BufMut, ident: u8, v: Option<&[u8]>) {
            if let Some(v) = v {
                buf.put_u8(ident);
                wire::put_binary(buf, v);
            }
        }
        let p = self;
        fn str_(v: &Option<String>) -> Option<&[u8]> {
            v.as_deref().map(str::as_bytes)
        }
        wire::put_var_int(buf, len as u32);
        byte(
            buf,
            id::PAYLOAD_FORMAT_INDICATOR,
            p.payload_format_indicator.map(u8::from),
        );
        u32p(buf, id::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
        bin(buf, id::CONTENT_TYPE, str_(&p.content_type));
        bin(buf, id::RESPONSE_TOPIC, str_(&p.response_topic));
        bin(buf, id::CORRELATION_DATA, p.correlation_data.as_deref());
        for &sid in &p.subscription_identifiers {
            buf.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            wire::put_var_int(buf, sid);
        }
        u32p(buf, id::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
        bin(
            buf,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            str_(&p.assigned_client_identifier),
        );
        u16p(buf, id::SERVER_KEEP_ALIVE, p.server_keep_alive);
        bin(
            buf,
            id::AUTHENTICATION_METHOD,
            str_(&p.authentication_method),
        );
        bin(
            buf,
            id::AUTHENTICATION_DATA,
            p.authentication_data.as_deref(),
        );
        byte(
            buf,
            id::REQUEST_PROBLEM_INFORMATION,
            p.request_problem_information.map(u8::from),
        );
        u32p(buf, id::WILL_DELAY_INTERVAL, p.will_delay_interval);
        byte(
            buf,
            id::REQUEST_RESPONSE_INFORMATION,
            p.request_response_information.map(u8::from),
        );
        bin(buf, id::RESPONSE_INFORMATION, str_(&p.response_information));
        bin(buf, id::SERVER_REFERENCE, str_(&p.server_reference));
        bin(buf, id::REASON_STRING, str_(&p.reason_string));
        u16p(buf, id::RECEIVE_MAXIMUM, p.receive_maximum);
        u16p(buf, id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
        u16p(buf, id::TOPIC_ALIAS, p.topic_alias);
        byte(buf, id::MAXIMUM_QOS, p.maximum_qos.map(|q| q as u8));
        byte(buf, id::RETAIN_AVAILABLE, p.retain_available.map(u8::from));
        for (k, v) in &p.user_properties {
            buf.put_u8(id::USER_PROPERTY);
            wire::put_binary(buf, k.as_bytes());
            wire::put_binary(buf, v.as_bytes());
        }
        u32p(buf, id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
        byte(
            buf,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            p.wildcard_subscription_available.map(u8::from),
        );
        byte(
            buf,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            p.subscription_identifier_available.map(u8::from),
        );
        byte(
            buf,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            p.shared_subscription_available.map(u8::from),
        );
    }
}
