//! DISCONNECT (spec 3.14) and AUTH (spec 3.15, MQTT 5.0 only).

use bytes::BufMut;

use super::{decode_reason_tail, encode_reason_tail, reason_tail_len, ProtocolVersion};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Allowed, Properties};
use crate::reason::{ReasonCode, ReasonContext};
use crate::wire::Reader;

/// DISCONNECT. In 3.1.1 only a client sends it and it carries nothing; in 5.0 either side
/// sends it, with a reason code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Normal disconnection (0x00), Disconnect with Will (0x04), or an error.
    pub reason: ReasonCode,
    /// 5.0 properties: Session Expiry Interval, Reason String, Server Reference, user
    /// properties.
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with a reason and no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: Properties::default(),
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>, v: ProtocolVersion) -> Result<Self, DecodeError> {
        match v {
            ProtocolVersion::V311 => Ok(Disconnect::default()),
            ProtocolVersion::V5 => {
                let (reason, properties) =
                    decode_reason_tail(r, ReasonContext::Disconnect, Allowed::DISCONNECT)?;
                Ok(Disconnect { reason, properties })
            }
        }
    }

    pub(super) fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        match v {
            ProtocolVersion::V311 => Ok(0),
            ProtocolVersion::V5 => Ok(reason_tail_len(
                self.reason,
                &self.properties,
                ReasonContext::Disconnect,
                Allowed::DISCONNECT,
            )?
            .0),
        }
    }

    pub(super) fn encode_body(&self, v: ProtocolVersion, buf: &mut impl BufMut) {
        if v == ProtocolVersion::V5 {
            encode_reason_tail(self.reason, &self.properties, Allowed::DISCONNECT, buf);
        }
    }
}

/// AUTH: the extended authentication exchange of MQTT 5.0 (spec 4.12).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success (0x00), Continue authentication (0x18) or Re-authenticate (0x19).
    pub reason: ReasonCode,
    /// Authentication Method and Data, Reason String, user properties.
    pub properties: Properties,
}

impl Auth {
    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (reason, properties) = decode_reason_tail(r, ReasonContext::Auth, Allowed::AUTH)?;
        // An AUTH without an Authentication Method is a Protocol Error (3.15.2.2.2).
        if properties.authentication_method.is_none() {
            return Err(DecodeError::PropertyValue(
                crate::properties::id::AUTHENTICATION_METHOD,
            ));
        }
        Ok(Auth { reason, properties })
    }

    pub(super) fn body_len(&self) -> Result<usize, EncodeError> {
        if self.properties.authentication_method.is_none() {
            return Err(EncodeError::PropertyValue(
                crate::properties::id::AUTHENTICATION_METHOD,
            ));
        }
        Ok(reason_tail_len(
            self.reason,
            &self.properties,
            ReasonContext::Auth,
            Allowed::AUTH,
        )?
        .0)
    }

    pub(super) fn encode_body(&self, buf: &mut impl BufMut) {
        encode_reason_tail(self.reason, &self.properties, Allowed::AUTH, buf);
    }
}
