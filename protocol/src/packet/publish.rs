//! PUBLISH (spec 3.3) and its acknowledgements PUBACK, PUBREC, PUBREL, PUBCOMP (3.4 to 3.7),
//! which share one shape.

use bytes::{BufMut, Bytes};

use super::{
    decode_packet_id, decode_reason_tail, encode_props_block, encode_reason_tail, props_block_len,
    reason_tail_len, PacketId, ProtocolVersion, QoS,
};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Allowed, Properties};
use crate::reason::{ReasonCode, ReasonContext};
use crate::topic::TopicName;
use crate::wire::{self, Reader};

/// PUBLISH: an application message.
///
/// `packet_id` is `Some` exactly when `qos` is 1 or 2; the encoder refuses anything else
/// ([`EncodeError::PacketIdMismatch`]) and the decoder never produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A re-delivery of an earlier attempt [MQTT-3.3.1-1]; always false at QoS 0.
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Where the message goes. Empty only transiently, for an MQTT 5.0 alias-only PUBLISH
    /// before [`crate::Decoder`] resolves the alias.
    pub topic: TopicName,
    /// Present for QoS 1 and 2.
    pub packet_id: Option<PacketId>,
    /// The application message; shared, not copied, when a broker fans it out.
    pub payload: Bytes,
    /// 5.0 PUBLISH properties.
    pub properties: Properties,
}

impl Publish {
    /// A QoS 0 message without properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: None,
            payload: payload.into(),
            properties: Properties::default(),
        }
    }

    pub(super) fn flags(&self) -> u8 {
        u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    pub(super) fn decode(
        r: &mut Reader<'_>,
        flags: u8,
        v: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0x03)?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let retain = flags & 0x01 != 0;
        let raw_topic = r.str("topic name")?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(decode_packet_id(r)?),
        };
        let properties = match v {
            ProtocolVersion::V5 => Properties::decode(r, Allowed::PUBLISH)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        let topic = if raw_topic.is_empty() && v == ProtocolVersion::V5 {
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
            TopicName::alias_placeholder()
        } else {
            TopicName::new(raw_topic).map_err(DecodeError::InvalidTopicName)?
        };
        let payload = Bytes::copy_from_slice(r.rest());
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            payload,
            properties,
        })
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) | (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(_)) => {}
            _ => return Err(EncodeError::PacketIdMismatch),
        }
        if self.dup && self.qos == QoS::AtMostOnce {
            return Err(EncodeError::DupOnQoS0); // [MQTT-3.3.1-2]
        }
        let has_alias = v == ProtocolVersion::V5 && self.properties.topic_alias.is_some();
        if self.topic.is_empty() && !has_alias {
            return Err(EncodeError::EmptyTopic);
        }
        let mut n = 2 + self.topic.len() + self.payload.len();
        if self.packet_id.is_some() {
            n += 2;
        }
        if v == ProtocolVersion::V5 {
            n += props_block_len(&self.properties, Allowed::PUBLISH)?;
        }
        Ok(n)
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        wire::put_binary(buf, self.topic.as_bytes());
        if let Some(id) = self.packet_id {
            buf.put_u16(id.get());
        }
        if v == ProtocolVersion::V5 {
            encode_props_block(&self.properties, Allowed::PUBLISH, buf);
        }
        buf.put_slice(&self.payload);
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: a packet identifier and, in 5.0, a reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp {
    /// The PUBLISH (or PUBREL) this answers.
    pub packet_id: PacketId,
    /// Success, or why not (5.0 only; 3.1.1 has no reason codes here).
    pub reason: ReasonCode,
    /// Reason String, user properties.
    pub properties: Properties,
}

impl PubResp {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: PacketId) -> Self {
        PubResp {
            packet_id,
            reason: ReasonCode::Success,
            properties: Properties::default(),
        }
    }

    /// An acknowledgement of `packet_id` with a reason.
    pub fn with_reason(packet_id: PacketId, reason: ReasonCode) -> Self {
        PubResp {
            packet_id,
            reason,
            properties: Properties::default(),
        }
    }

    pub(super) fn decode(
        r: &mut Reader<'_>,
        v: ProtocolVersion,
        ctx: ReasonContext,
    ) -> Result<Self, DecodeError> {
        let packet_id = decode_packet_id(r)?;
        let (reason, properties) = match v {
            ProtocolVersion::V311 => (ReasonCode::Success, Properties::default()),
            ProtocolVersion::V5 => decode_reason_tail(r, ctx, Allowed::ACK)?,
        };
        Ok(PubResp {
            packet_id,
            reason,
            properties,
        })
    }

    pub(super) fn body_len(
        &self,
        v: ProtocolVersion,
        ctx: ReasonContext,
    ) -> Result<usize, EncodeError> {
        match v {
            ProtocolVersion::V311 => Ok(2),
            ProtocolVersion::V5 => {
                Ok(2 + reason_tail_len(self.reason, &self.properties, ctx, Allowed::ACK)?.0)
            }
        }
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id.get());
        if v == ProtocolVersion::V5 {
            encode_reason_tail(self.reason, &self.properties, Allowed::ACK, buf);
        }
    }
}
