//! CONNECT (spec 3.1) and CONNACK (spec 3.2).

use bytes::{BufMut, Bytes};

use super::{encode_props_block, props_block_len, ProtocolVersion, QoS};
use crate::error::{DecodeError, EncodeError};
use crate::prelude::*;
use crate::properties::{Allowed, Properties};
use crate::reason::{ReasonCode, ReasonContext};
use crate::topic::TopicName;
use crate::wire::{self, Reader};

/// CONNECT: the first packet a client sends [MQTT-3.1.0-1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Which protocol the client speaks; the rest of the connection uses it.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// May be empty: the server then assigns one (5.0) or, with clean session, makes one up.
    pub client_id: String,
    /// The will message, if any.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// 5.0 CONNECT properties.
    pub properties: Properties,
}

/// The will: published by the server when the connection ends without a DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where it is published.
    pub topic: TopicName,
    /// What.
    pub payload: Bytes,
    /// At which QoS.
    pub qos: QoS,
    /// Retained or not.
    pub retain: bool,
    /// 5.0 will properties (Will Delay Interval, Message Expiry Interval, ...).
    pub properties: Properties,
}

impl Connect {
    /// A CONNECT with the given version, client id and clean flag, keep-alive 60 s and
    /// nothing else.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<String>, clean_start: bool) -> Self {
        Connect {
            protocol,
            clean_start,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.binary("protocol name")?;
        let level = r.u8("protocol level")?;
        let protocol = match (name, level) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            // MQTT 3.1 ("MQIsdp", level 3) and unknown levels: the server answers CONNACK
            // 0x01 / 0x84 [MQTT-3.1.2-2], so report the level rather than a malformed packet.
            (b"MQTT", other) | (b"MQIsdp", other) => {
                return Err(DecodeError::UnsupportedProtocolVersion(other))
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = r.u8("connect flags")?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos_bits = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        if !will_flag && (will_qos_bits != 0 || will_retain) {
            return Err(DecodeError::InvalidWillFlags);
        }
        let will_qos = QoS::from_u8(will_qos_bits).map_err(|_| DecodeError::InvalidWillFlags)?;
        if protocol == ProtocolVersion::V311 && password_flag && !username_flag {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = match protocol {
            ProtocolVersion::V5 => Properties::decode(r, Allowed::CONNECT)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        check_auth_method(&properties)?;
        let client_id = r.string("client identifier")?;
        let will = if will_flag {
            let properties = match protocol {
                ProtocolVersion::V5 => Properties::decode(r, Allowed::WILL)?,
                ProtocolVersion::V311 => Properties::default(),
            };
            let topic =
                TopicName::new(r.str("will topic")?).map_err(DecodeError::InvalidTopicName)?;
            let payload = r.bytes("will payload")?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if username_flag {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if password_flag {
            Some(r.bytes("password")?)
        } else {
            None
        };
        Ok(Connect {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    /// The size of this CONNECT on the wire, fixed header included, as
    /// [`Packet::encoded_len`](super::Packet::encoded_len) gives it (a CONNECT carries its
    /// own version), without moving it into a `Packet`.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        let body = self.body_len()?;
        Ok(1 + wire::var_int_len(body as u32) + body)
    }

    pub(super) fn body_len(&self) -> Result<usize, EncodeError> {
        let v5 = self.protocol == ProtocolVersion::V5;
        // protocol name (6) + level (1) + flags (1) + keep alive (2)
        let mut n = 10;
        if v5 {
            n += props_block_len(&self.properties, Allowed::CONNECT)?;
        }
        wire::check_len(self.client_id.len(), "client identifier")?;
        n += 2 + self.client_id.len();
        if let Some(will) = &self.will {
            if v5 {
                n += props_block_len(&will.properties, Allowed::WILL)?;
            }
            wire::check_len(will.payload.len(), "will payload")?;
            n += 2 + will.topic.len() + 2 + will.payload.len();
        }
        if let Some(u) = &self.username {
            wire::check_len(u.len(), "user name")?;
            n += 2 + u.len();
        }
        if let Some(p) = &self.password {
            if self.protocol == ProtocolVersion::V311 && self.username.is_none() {
                // 3.1.1 cannot carry a password without a user name [MQTT-3.1.2-22].
                return Err(EncodeError::PasswordWithoutUsername);
            }
            wire::check_len(p.len(), "password")?;
            n += 2 + p.len();
        }
        if self.properties.authentication_data.is_some()
            && self.properties.authentication_method.is_none()
        {
            return Err(EncodeError::PropertyValue(
                crate::properties::id::AUTHENTICATION_DATA,
            ));
        }
        Ok(n)
    }

    pub(super) fn encode_body(&self, buf: &mut impl BufMut) {
        let v5 = self.protocol == ProtocolVersion::V5;
        wire::put_binary(buf, b"MQTT");
        buf.put_u8(self.protocol.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos as u8) << 3;
            if will.retain {
                flags |= 0x20;
            }
        }
        // body_len refused a 3.1.1 password without a user name.
        let password = self.password.as_ref();
        if password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        if v5 {
            encode_props_block(&self.properties, Allowed::CONNECT, buf);
        }
        wire::put_binary(buf, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                encode_props_block(&will.properties, Allowed::WILL, buf);
            }
            wire::put_binary(buf, will.topic.as_bytes());
            wire::put_binary(buf, &will.payload);
        }
        if let Some(u) = &self.username {
            wire::put_binary(buf, u.as_bytes());
        }
        if let Some(p) = password {
            wire::put_binary(buf, p);
        }
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// The server resumed a session it kept for this client id.
    pub session_present: bool,
    /// Success, or why the connection is refused (3.1.1: folded into return codes 1-5).
    pub reason: ReasonCode,
    /// 5.0 CONNACK properties.
    pub properties: Properties,
}

impl ConnAck {
    /// A CONNACK with no properties.
    pub fn new(session_present: bool, reason: ReasonCode) -> Self {
        ConnAck {
            session_present,
            reason,
            properties: Properties::default(),
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::InvalidFlags {
                packet_type: super::PacketType::ConnAck,
                flags,
            });
        }
        let code = r.u8("reason code")?;
        let reason = match v {
            ProtocolVersion::V311 => ReasonCode::from_v3_connect_return_code(code),
            ProtocolVersion::V5 => {
                ReasonCode::from_u8(code).filter(|c| c.allowed_in(ReasonContext::ConnAck))
            }
        }
        .ok_or(DecodeError::InvalidReasonCode(code))?;
        let properties = match v {
            ProtocolVersion::V5 => Properties::decode(r, Allowed::CONNACK)?,
            ProtocolVersion::V311 => Properties::default(),
        };
        check_auth_method(&properties)?;
        Ok(ConnAck {
            // A refused connection has no session [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6]
            // (5.0): a server that says otherwise is read as the encoder writes it.
            session_present: flags & 1 != 0 && !reason.is_error(),
            reason,
            properties,
        })
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        match v {
            ProtocolVersion::V311 => Ok(2),
            ProtocolVersion::V5 => {
                if !self.reason.allowed_in(ReasonContext::ConnAck) {
                    return Err(EncodeError::ReasonCodeNotAllowed(self.reason.as_u8()));
                }
                Ok(2 + props_block_len(&self.properties, Allowed::CONNACK)?)
            }
        }
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        // A refused connection never has a session [MQTT-3.2.2-4], [MQTT-3.2.2-6].
        let present = self.session_present && !self.reason.is_error();
        buf.put_u8(u8::from(present));
        match v {
            ProtocolVersion::V311 => buf.put_u8(self.reason.to_v3_connect_return_code()),
            ProtocolVersion::V5 => {
                buf.put_u8(self.reason.as_u8());
                encode_props_block(&self.properties, Allowed::CONNACK, buf);
            }
        }
    }
}

/// Authentication Data without an Authentication Method is a Protocol Error (5.0 3.1.2.11.10,
/// 3.2.2.3.18).
pub(super) fn check_auth_method(p: &Properties) -> Result<(), DecodeError> {
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::PropertyValue(
            crate::properties::id::AUTHENTICATION_DATA,
        ));
    }
    Ok(())
}
