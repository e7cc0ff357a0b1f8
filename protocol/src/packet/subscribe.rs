//! SUBSCRIBE (spec 3.8), SUBACK (3.9), UNSUBSCRIBE (3.10) and UNSUBACK (3.11).

use bytes::BufMut;

use super::{
    decode_packet_id, encode_props_block, props_block_len, PacketId, ProtocolVersion, QoS,
};
use crate::error::{DecodeError, EncodeError};
use crate::prelude::*;
use crate::properties::{id, Allowed, Properties};
use crate::reason::{ReasonCode, ReasonContext};
use crate::topic::TopicFilter;
use crate::wire::{self, Reader};

/// When the server sends retained messages for a new subscription (5.0, spec 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not already exist.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The options byte of one subscription. In 3.1.1 only `qos` exists on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the client wants.
    pub qos: QoS,
    /// Do not send this client's own publications back to it (not on shared subscriptions
    /// [MQTT-3.8.3-4]).
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// When to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    fn decode(byte: u8, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = match v {
            ProtocolVersion::V311 => 0xFC,
            ProtocolVersion::V5 => 0xC0,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved);
        }
        let qos = match (QoS::from_u8(byte & 0x03), v) {
            (Ok(qos), _) => qos,
            // 5.0 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3".
            (Err(_), ProtocolVersion::V5) => return Err(DecodeError::InvalidSubscriptionQoS),
            (Err(e), ProtocolVersion::V311) => return Err(e),
        };
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn to_byte(self, v: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        match v {
            ProtocolVersion::V311 => qos,
            ProtocolVersion::V5 => {
                qos | u8::from(self.no_local) << 2
                    | u8::from(self.retain_as_published) << 3
                    | (self.retain_handling as u8) << 4
            }
        }
    }
}

/// One topic filter with its options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// The filter (may be a 5.0 shared subscription `$share/{group}/{filter}`).
    pub filter: TopicFilter,
    /// Its options.
    pub options: SubscriptionOptions,
}

impl Subscription {
    /// A subscription to `filter` at `qos` with default options.
    pub fn new(filter: TopicFilter, qos: QoS) -> Self {
        Subscription {
            filter,
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        }
    }
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one [MQTT-3.8.3-3].
    pub subscriptions: Vec<Subscription>,
    /// Subscription Identifier (at most one), user properties.
    pub properties: Properties,
}

fn decode_filter(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<TopicFilter, DecodeError> {
    let filter =
        TopicFilter::new(r.str("topic filter")?).map_err(DecodeError::InvalidTopicFilter)?;
    if v == ProtocolVersion::V5 {
        // "$share/..." is a shared subscription in 5.0 and must be well formed [MQTT-4.8.2-1].
        filter.shared().map_err(DecodeError::InvalidTopicFilter)?;
    }
    Ok(filter)
}

impl Subscribe {
    pub(super) fn decode(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = decode_packet_id(r)?;
        let properties = match v {
            ProtocolVersion::V5 => Properties::decode(r, Allowed::SUBSCRIBE)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        if properties.subscription_identifiers.len() > 1 {
            return Err(DecodeError::DuplicateProperty(id::SUBSCRIPTION_IDENTIFIER));
        }
        let mut subscriptions = Vec::new();
        while !r.is_empty() {
            let filter = decode_filter(r, v)?;
            let options = SubscriptionOptions::decode(r.u8("subscription options")?, v)?;
            if options.no_local
                && matches!(filter.shared(), Ok(Some(_)))
                && v == ProtocolVersion::V5
            {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            subscriptions.push(Subscription { filter, options });
        }
        if subscriptions.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Subscribe {
            packet_id,
            subscriptions,
            properties,
        })
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.subscriptions.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        if self.properties.subscription_identifiers.len() > 1 {
            return Err(EncodeError::PropertyValue(id::SUBSCRIPTION_IDENTIFIER));
        }
        let no_local_on_shared = self
            .subscriptions
            .iter()
            .any(|s| s.options.no_local && matches!(s.filter.shared(), Ok(Some(_))));
        if v == ProtocolVersion::V5 && no_local_on_shared {
            return Err(EncodeError::NoLocalOnSharedSubscription); // [MQTT-3.8.3-4]
        }
        let mut n = 2;
        if v == ProtocolVersion::V5 {
            n += props_block_len(&self.properties, Allowed::SUBSCRIBE)?;
        }
        for s in &self.subscriptions {
            n += 2 + s.filter.len() + 1;
        }
        Ok(n)
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            encode_props_block(&self.properties, Allowed::SUBSCRIBE, buf);
        }
        for s in &self.subscriptions {
            wire::put_binary(buf, s.filter.as_bytes());
            buf.put_u8(s.options.to_byte(v));
        }
    }
}

/// SUBACK: one reason code per subscription, in order [MQTT-3.9.3-1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE answered.
    pub packet_id: PacketId,
    /// Granted QoS 0/1/2 or a failure. 3.1.1 has one failure code (0x80); every 5.0 failure
    /// is sent to a 3.1.1 client as 0x80.
    pub reasons: Vec<ReasonCode>,
    /// Reason String, user properties.
    pub properties: Properties,
}

impl SubAck {
    pub(super) fn decode(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = decode_packet_id(r)?;
        let properties = match v {
            ProtocolVersion::V5 => Properties::decode(r, Allowed::ACK)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let b = r.u8("reason code")?;
            let code = match (v, b) {
                (ProtocolVersion::V311, 0x00..=0x02 | 0x80) => ReasonCode::from_u8(b),
                (ProtocolVersion::V311, _) => None,
                (ProtocolVersion::V5, _) => {
                    ReasonCode::from_u8(b).filter(|c| c.allowed_in(ReasonContext::SubAck))
                }
            };
            reasons.push(code.ok_or(DecodeError::InvalidReasonCode(b))?);
        }
        if reasons.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(SubAck {
            packet_id,
            reasons,
            properties,
        })
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.reasons.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        if let Some(bad) = self
            .reasons
            .iter()
            .find(|c| !c.allowed_in(ReasonContext::SubAck))
        {
            return Err(EncodeError::ReasonCodeNotAllowed(bad.as_u8()));
        }
        let props = match v {
            ProtocolVersion::V5 => props_block_len(&self.properties, Allowed::ACK)?,
            ProtocolVersion::V311 => 0,
        };
        Ok(2 + props + self.reasons.len())
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id.get());
        match v {
            ProtocolVersion::V5 => {
                encode_props_block(&self.properties, Allowed::ACK, buf);
                for c in &self.reasons {
                    buf.put_u8(c.as_u8());
                }
            }
            ProtocolVersion::V311 => {
                for c in &self.reasons {
                    buf.put_u8(if c.is_error() { 0x80 } else { c.as_u8() });
                }
            }
        }
    }
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one [MQTT-3.10.3-2].
    pub filters: Vec<TopicFilter>,
    /// User properties.
    pub properties: Properties,
}

impl Unsubscribe {
    pub(super) fn decode(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = decode_packet_id(r)?;
        let properties = match v {
            ProtocolVersion::V5 => Properties::decode(r, Allowed::UNSUBSCRIBE)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(decode_filter(r, v)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::NoTopicFilters);
        }
        let props = match v {
            ProtocolVersion::V5 => props_block_len(&self.properties, Allowed::UNSUBSCRIBE)?,
            ProtocolVersion::V311 => 0,
        };
        Ok(2 + props + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>())
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            encode_props_block(&self.properties, Allowed::UNSUBSCRIBE, buf);
        }
        for f in &self.filters {
            wire::put_binary(buf, f.as_bytes());
        }
    }
}

/// UNSUBACK. 3.1.1 carries only the packet identifier (`reasons` is empty there); 5.0 has
/// one reason code per filter [MQTT-3.11.3-1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE answered.
    pub packet_id: PacketId,
    /// Success, No subscription existed, or a failure (5.0).
    pub reasons: Vec<ReasonCode>,
    /// Reason String, user properties.
    pub properties: Properties,
}

impl UnsubAck {
    pub(super) fn decode(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = decode_packet_id(r)?;
        if v == ProtocolVersion::V311 {
            return Ok(UnsubAck {
                packet_id,
                reasons: Vec::new(),
                properties: Properties::default(),
            });
        }
        let properties = Properties::decode(r, Allowed::ACK)?;
        let mut reasons = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let b = r.u8("reason code")?;
            let code = ReasonCode::from_u8(b).filter(|c| c.allowed_in(ReasonContext::UnsubAck));
            reasons.push(code.ok_or(DecodeError::InvalidReasonCode(b))?);
        }
        // One reason code per topic filter, and there is at least one [MQTT-3.11.3-1].
        if reasons.is_empty() {
            return Err(DecodeError::NoTopicFilters);
        }
        Ok(UnsubAck {
            packet_id,
            reasons,
            properties,
        })
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        match v {
            ProtocolVersion::V311 => Ok(2),
            ProtocolVersion::V5 => {
                if self.reasons.is_empty() {
                    return Err(EncodeError::NoTopicFilters);
                }
                if let Some(bad) = self
                    .reasons
                    .iter()
                    .find(|c| !c.allowed_in(ReasonContext::UnsubAck))
                {
                    return Err(EncodeError::ReasonCodeNotAllowed(bad.as_u8()));
                }
                Ok(2 + props_block_len(&self.properties, Allowed::ACK)? + self.reasons.len())
            }
        }
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            encode_props_block(&self.properties, Allowed::ACK, buf);
            for c in &self.reasons {
                buf.put_u8(c.as_u8());
            }
        }
    }
}
