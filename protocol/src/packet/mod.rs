//! MQTT control packets of 3.1.1 and 5.0, one family per file, one [`Packet`] enum to dispatch.
//!
//! Both protocol versions share one model: a 3.1.1 packet is a 5.0 packet without properties
//! and with the reason codes 3.1.1 can express. Decoding and encoding take the
//! [`ProtocolVersion`]; encoding for 3.1.1 leaves properties out (the broker forwards a 5.0
//! publish to a 3.1.1 subscriber this way) and folds reason codes into 3.1.1 return codes.

mod connect;
mod disconnect;
mod publish;
mod subscribe;

use core::num::NonZeroU16;

use bytes::BufMut;

pub use connect::{ConnAck, Connect, Will};
pub use disconnect::{Auth, Disconnect};
pub use publish::{PubResp, Publish};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
};

use crate::error::{DecodeError, EncodeError};
use crate::prelude::*;
use crate::properties::{Allowed, Properties};
use crate::reason::{ReasonCode, ReasonContext};
use crate::wire::{self, Reader, MAX_VAR_INT};

/// A packet identifier: never zero [MQTT-2.2.1-3].
pub type PacketId = NonZeroU16;

/// The protocol level byte of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1, protocol level 4.
    V311 = 4,
    /// MQTT 5.0, protocol level 5.
    V5 = 5,
}

impl ProtocolVersion {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// QoS 0: at most once.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value; 3 is not a QoS [MQTT-3.3.1-4].
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// The control packet types (the high nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// Is this a packet only a client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ: the
    /// direction of flow, spec 2.1.2)?
    pub fn is_client_only(self) -> bool {
        matches!(
            self,
            PacketType::Connect
                | PacketType::Subscribe
                | PacketType::Unsubscribe
                | PacketType::PingReq
        )
    }

    fn from_nibble(n: u8) -> Result<Self, DecodeError> {
        use PacketType::*;
        Ok(match n {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            other => return Err(DecodeError::ReservedPacketType(other)),
        })
    }
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// The first byte and remaining length of a packet, parsed before its body is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type and flags.
    pub byte1: u8,
    /// The remaining length.
    pub remaining: u32,
    /// The size of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

impl FixedHeader {
    /// Parses a fixed header at the start of `buf`: `Ok(None)` if more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some(&byte1) = buf.first() else {
            return Ok(None);
        };
        Ok(
            wire::read_var_int(&buf[1..])?.map(|(remaining, n)| FixedHeader {
                byte1,
                remaining,
                header_len: 1 + n,
            }),
        )
    }

    /// The whole packet's size.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining as usize
    }
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes one whole packet at the start of `buf` without any connection state.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole packet, else the packet and
    /// the number of bytes it took. A packet larger than `max_packet_size` is refused from its
    /// fixed header alone. `version` is the connection's protocol version; a CONNECT is decoded
    /// whatever it is (it names its own). An MQTT 5.0 PUBLISH that carries only a Topic Alias
    /// comes back with an empty topic: [`crate::Decoder`] resolves aliases, this does not.
    pub fn decode(
        buf: &[u8],
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<(Packet, usize)>, DecodeError> {
        Self::decode_from::<false>(buf, version, max_packet_size)
    }

    /// [`Packet::decode`] for a client: a packet only clients send is refused with
    /// [`DecodeError::ClientOnlyPacket`], as [`crate::Decoder::decode_from_server`] does, and
    /// for the same reason: a client that decodes only this way does not contain their
    /// decoders.
    pub fn decode_from_server(
        buf: &[u8],
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<(Packet, usize)>, DecodeError> {
        Self::decode_from::<true>(buf, version, max_packet_size)
    }

    fn decode_from<const FROM_SERVER: bool>(
        buf: &[u8],
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<(Packet, usize)>, DecodeError> {
        let Some(header) = FixedHeader::parse(buf)? else {
            return Ok(None);
        };
        check_size(&header, max_packet_size)?;
        check_first_byte(header.byte1, version)?;
        let len = header.packet_len();
        if buf.len() < len {
            return Ok(None);
        }
        let body = &buf[header.header_len..len];
        let packet = Packet::decode_body_from::<FROM_SERVER>(header.byte1, body, version)?;
        Ok(Some((packet, len)))
    }

    /// Decodes a packet's body (the `remaining` bytes after the fixed header).
    pub fn decode_body(
        byte1: u8,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        Self::decode_body_from::<false>(byte1, body, version)
    }

    /// [`Packet::decode_body`]; with `FROM_SERVER` the packets only clients send are refused
    /// with [`DecodeError::ClientOnlyPacket`], and their decoders are not even compiled in
    /// (a const generic, not a runtime flag, so that the wasm client does not carry them).
    pub(crate) fn decode_body_from<const FROM_SERVER: bool>(
        byte1: u8,
        body: &[u8],
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let packet_type = check_first_byte(byte1, version)?;
        if FROM_SERVER && packet_type.is_client_only() {
            return Err(DecodeError::ClientOnlyPacket(packet_type));
        }
        let flags = byte1 & 0x0F;
        let mut r = Reader::new(body);
        let v = version;
        let packet = match packet_type {
            PacketType::Connect if !FROM_SERVER => {
                Packet::Connect(Box::new(Connect::decode(&mut r)?))
            }
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(&mut r, v)?),
            PacketType::Publish => Packet::Publish(Publish::decode(&mut r, flags, v)?),
            PacketType::PubAck => {
                Packet::PubAck(PubResp::decode(&mut r, v, ReasonContext::PubAckOrRec)?)
            }
            PacketType::PubRec => {
                Packet::PubRec(PubResp::decode(&mut r, v, ReasonContext::PubAckOrRec)?)
            }
            PacketType::PubRel => {
                Packet::PubRel(PubResp::decode(&mut r, v, ReasonContext::PubRelOrComp)?)
            }
            PacketType::PubComp => {
                Packet::PubComp(PubResp::decode(&mut r, v, ReasonContext::PubRelOrComp)?)
            }
            PacketType::Subscribe if !FROM_SERVER => {
                Packet::Subscribe(Subscribe::decode(&mut r, v)?)
            }
            PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut r, v)?),
            PacketType::Unsubscribe if !FROM_SERVER => {
                Packet::Unsubscribe(Unsubscribe::decode(&mut r, v)?)
            }
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, v)?),
            PacketType::PingReq if !FROM_SERVER => Packet::PingReq,
            PacketType::PingResp => Packet::PingResp,
            PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, v)?),
            PacketType::Auth => Packet::Auth(Auth::decode(&mut r)?),
            // Only with FROM_SERVER, refused above.
            PacketType::Connect
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::PingReq => return Err(DecodeError::ClientOnlyPacket(packet_type)),
        };
        r.finish()?;
        Ok(packet)
    }

    /// The size of the encoded packet, fixed header included.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        Ok(1 + wire::var_int_len(body as u32) + body)
    }

    fn body_len(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
        let len = match self {
            Packet::Connect(p) => p.body_len()?,
            Packet::ConnAck(p) => p.body_len(v)?,
            Packet::Publish(p) => p.body_len(v)?,
            Packet::PubAck(p) | Packet::PubRec(p) => p.body_len(v, ReasonContext::PubAckOrRec)?,
            Packet::PubRel(p) | Packet::PubComp(p) => p.body_len(v, ReasonContext::PubRelOrComp)?,
            Packet::Subscribe(p) => p.body_len(v)?,
            Packet::SubAck(p) => p.body_len(v)?,
            Packet::Unsubscribe(p) => p.body_len(v)?,
            Packet::UnsubAck(p) => p.body_len(v)?,
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(p) => p.body_len(v)?,
            Packet::Auth(p) => match v {
                ProtocolVersion::V311 => return Err(EncodeError::NotInVersion(PacketType::Auth)),
                ProtocolVersion::V5 => p.body_len()?,
            },
        };
        if len > MAX_VAR_INT as usize {
            return Err(EncodeError::PacketTooLarge {
                size: len,
                max: MAX_VAR_INT as usize,
            });
        }
        Ok(len)
    }

    /// Encodes the packet for `version` into `buf`, returning the number of bytes written.
    pub fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut impl BufMut,
    ) -> Result<usize, EncodeError> {
        self.encode_limited(version, usize::MAX, buf)
    }

    /// Encodes like [`Packet::encode`], refusing (and writing nothing) when the packet would
    /// be larger than `max_packet_size`, the receiver's Maximum Packet Size [MQTT-3.1.2-24].
    pub fn encode_limited(
        &self,
        version: ProtocolVersion,
        max_packet_size: usize,
        buf: &mut impl BufMut,
    ) -> Result<usize, EncodeError> {
        let body = self.body_len(version)?;
        let total = 1 + wire::var_int_len(body as u32) + body;
        if total > max_packet_size {
            return Err(EncodeError::PacketTooLarge {
                size: total,
                max: max_packet_size,
            });
        }
        let v = version;
        let pt = self.packet_type() as u8;
        let flags = match self {
            Packet::Publish(p) => p.flags(),
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        buf.put_u8(pt << 4 | flags);
        wire::put_var_int(buf, body as u32);
        match self {
            Packet::Connect(p) => p.encode_body(buf),
            Packet::ConnAck(p) => p.encode_body(v, buf),
            Packet::Publish(p) => p.encode_body(v, buf),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.encode_body(v, buf)
            }
            Packet::Subscribe(p) => p.encode_body(v, buf),
            Packet::SubAck(p) => p.encode_body(v, buf),
            Packet::Unsubscribe(p) => p.encode_body(v, buf),
            Packet::UnsubAck(p) => p.encode_body(v, buf),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => p.encode_body(v, buf),
            Packet::Auth(p) => p.encode_body(buf),
        }
        Ok(total)
    }
}

/// Checks the first byte of a fixed header: a packet type that exists in `version`, the
/// flags the spec requires [MQTT-2.1.3-1] and, for PUBLISH, a QoS below 3 and no DUP at
/// QoS 0. Done as soon as the byte arrives, before a body is buffered.
pub(crate) fn check_first_byte(
    byte1: u8,
    version: ProtocolVersion,
) -> Result<PacketType, DecodeError> {
    let packet_type = PacketType::from_nibble(byte1 >> 4)?;
    if packet_type == PacketType::Auth && version == ProtocolVersion::V311 {
        return Err(DecodeError::ReservedPacketType(15));
    }
    let flags = byte1 & 0x0F;
    let expected_flags = match packet_type {
        PacketType::Publish => {
            let qos = QoS::from_u8((flags >> 1) & 0x03)?;
            if flags & 0x08 != 0 && qos == QoS::AtMostOnce {
                return Err(DecodeError::DupOnQoS0);
            }
            flags
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
        _ => 0,
    };
    if flags != expected_flags {
        return Err(DecodeError::InvalidFlags { packet_type, flags });
    }
    Ok(packet_type)
}

/// Refuses a packet over the limit from its header alone [MQTT-3.1.2-24] (spec 3.1.2.11.4:
/// the size is the whole packet, fixed header included).
pub(crate) fn check_size(header: &FixedHeader, max_packet_size: u32) -> Result<(), DecodeError> {
    let size = header.packet_len();
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: u32::try_from(size).unwrap_or(u32::MAX),
            max: max_packet_size,
        });
    }
    Ok(())
}

pub(crate) fn decode_packet_id(r: &mut Reader<'_>) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16("packet identifier")?).ok_or(DecodeError::ZeroPacketId)
}

fn decode_reason(r: &mut Reader<'_>, ctx: ReasonContext) -> Result<ReasonCode, DecodeError> {
    let b = r.u8("reason code")?;
    match ReasonCode::from_u8(b) {
        Some(code) if code.allowed_in(ctx) => Ok(code),
        _ => Err(DecodeError::InvalidReasonCode(b)),
    }
}

/// The MQTT 5.0 tail shared by PUBACK/PUBREC/PUBREL/PUBCOMP, DISCONNECT and AUTH: an optional
/// reason code (absent = Success) and optional properties (absent = none).
fn decode_reason_tail(
    r: &mut Reader<'_>,
    ctx: ReasonContext,
    allowed: Allowed,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::Success, Properties::default()));
    }
    let reason = decode_reason(r, ctx)?;
    if r.is_empty() {
        return Ok((reason, Properties::default()));
    }
    Ok((reason, Properties::decode(r, allowed)?))
}

/// The length of the tail written by [`encode_reason_tail`], and the property length.
fn reason_tail_len(
    reason: ReasonCode,
    props: &Properties,
    ctx: ReasonContext,
    allowed: Allowed,
) -> Result<(usize, usize), EncodeError> {
    if !reason.allowed_in(ctx) {
        return Err(EncodeError::ReasonCodeNotAllowed(reason.as_u8()));
    }
    let plen = props.encoded_len(allowed)?;
    Ok(if plen > 0 {
        (1 + wire::var_int_len(plen as u32) + plen, plen)
    } else if reason != ReasonCode::Success {
        (1, 0)
    } else {
        (0, 0)
    })
}

fn encode_reason_tail(
    reason: ReasonCode,
    props: &Properties,
    allowed: Allowed,
    buf: &mut impl BufMut,
) {
    // Lengths and permissions were checked by reason_tail_len when the packet was sized.
    let plen = props.encoded_len(allowed).unwrap_or(0);
    if plen > 0 {
        buf.put_u8(reason.as_u8());
        props.encode(plen, buf);
    } else if reason != ReasonCode::Success {
        buf.put_u8(reason.as_u8());
    }
}

/// Property block size including its own length prefix.
fn props_block_len(props: &Properties, allowed: Allowed) -> Result<usize, EncodeError> {
    let n = props.encoded_len(allowed)?;
    Ok(wire::var_int_len(n as u32) + n)
}

fn encode_props_block(props: &Properties, allowed: Allowed, buf: &mut impl BufMut) {
    let n = props.encoded_len(allowed).unwrap_or(0);
    props.encode(n, buf);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::topic::{TopicFilter, TopicName};
    use bytes::Bytes;

    #[test]
    fn the_encoder_refuses_what_the_decoder_would_refuse() {
        // [MQTT-3.1.2-22]: a 3.1.1 password needs a user name.
        let mut c = Connect::new(ProtocolVersion::V311, "c", true);
        c.password = Some(Bytes::from_static(b"secret"));
        let mut buf = Vec::new();
        assert_eq!(
            Packet::Connect(Box::new(c)).encode(ProtocolVersion::V311, &mut buf),
            Err(EncodeError::PasswordWithoutUsername)
        );
        // [MQTT-3.3.1-2]: no DUP at QoS 0.
        let mut p = Publish::new(TopicName::new("t").unwrap(), Bytes::new());
        p.dup = true;
        assert_eq!(
            Packet::Publish(p).encode(ProtocolVersion::V5, &mut buf),
            Err(EncodeError::DupOnQoS0)
        );
        // [MQTT-3.8.3-4]: no No Local on a shared subscription.
        let mut s = Subscription::new(TopicFilter::new("$share/g/t").unwrap(), QoS::AtMostOnce);
        s.options.no_local = true;
        let sub = Subscribe {
            packet_id: PacketId::MIN,
            subscriptions: vec![s],
            properties: Properties::default(),
        };
        assert_eq!(
            Packet::Subscribe(sub).encode(ProtocolVersion::V5, &mut buf),
            Err(EncodeError::NoLocalOnSharedSubscription)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn decoding_from_a_server_refuses_what_only_clients_send() {
        // Spec 2.1.2, direction of flow: SUBSCRIBE goes from client to server only.
        let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00];
        let v = ProtocolVersion::V311;
        assert!(matches!(
            Packet::decode(&subscribe, v, 1024),
            Ok(Some((Packet::Subscribe(_), 8)))
        ));
        assert_eq!(
            Packet::decode_from_server(&subscribe, v, 1024),
            Err(DecodeError::ClientOnlyPacket(PacketType::Subscribe))
        );
        // PUBLISH goes both ways: the same packet either way.
        let publish = [0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x07, b'x'];
        let either = Packet::decode(&publish, v, 1024).unwrap();
        assert!(matches!(either, Some((Packet::Publish(_), 8))));
        assert_eq!(
            Packet::decode_from_server(&publish, v, 1024).unwrap(),
            either
        );
    }
}
