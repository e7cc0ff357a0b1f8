//! Decode and encode errors.
//!
//! Errors are `Copy + Eq` so tests `assert_eq!` on them, and every decode error knows the
//! MQTT 5.0 reason code a server sends in its DISCONNECT (or CONNACK) before it closes.

use crate::reason::ReasonCode;
use crate::topic::TopicError;
use crate::PacketType;

/// Why bytes from the network are not a valid MQTT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet type nibble is reserved (0, or 15 in MQTT 3.1.1).
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The flags nibble of the fixed header has a value the spec forbids [MQTT-2.1.3-1].
    #[error("invalid fixed header flags 0x{flags:X} for {packet_type:?}")]
    InvalidFlags {
        /// The packet.
        packet_type: PacketType,
        /// The flags it carried.
        flags: u8,
    },
    /// A variable byte integer longer than four bytes, or not in its shortest form where the
    /// spec requires it.
    #[error("malformed variable byte integer")]
    MalformedVarInt,
    /// The packet is larger than the receiver's maximum packet size [MQTT-3.2.2-15]. Detected
    /// from the fixed header, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// The whole packet's size, fixed header included.
        size: u32,
        /// The limit.
        max: u32,
    },
    /// The remaining length ends before a field the packet must have.
    #[error("packet ends before its {0} field")]
    Truncated(&'static str),
    /// Bytes are left over after the last field the packet can have.
    #[error("{0} unexpected bytes after the end of the packet")]
    TrailingBytes(u32),
    /// A UTF-8 string is not well-formed UTF-8, or contains U+0000 [MQTT-1.5.4-1], [MQTT-1.5.4-2].
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    /// A QoS of 3 [MQTT-3.3.1-4].
    #[error("QoS 3 is not a QoS")]
    InvalidQoS,
    /// A packet identifier of zero [MQTT-2.2.1-3].
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// CONNECT's protocol name is not "MQTT" [MQTT-3.1.2-1].
    #[error("protocol name is not MQTT")]
    InvalidProtocolName,
    /// CONNECT's protocol level is not 4 (3.1.1) or 5 (5.0) [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT's reserved flag is set [MQTT-3.1.2-3].
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag, or Will QoS 3 [MQTT-3.1.2-11],
    /// [MQTT-3.1.2-13], [MQTT-3.1.2-15].
    #[error("invalid will flags")]
    InvalidWillFlags,
    /// MQTT 3.1.1: Password Flag set without User Name Flag [MQTT-3.1.2-22].
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// A property identifier that does not exist, or not allowed in this packet, or whose value
    /// is out of its range (spec 2.2.2.2: a Malformed Packet).
    #[error("property 0x{0:02X} is not valid here")]
    InvalidProperty(u8),
    /// A property that may appear once appeared twice (a Protocol Error).
    #[error("property 0x{0:02X} appears twice")]
    DuplicateProperty(u8),
    /// A property value the spec calls a Protocol Error (Receive Maximum 0, Maximum Packet
    /// Size 0, Subscription Identifier 0, a 0/1 byte with another value).
    #[error("property 0x{0:02X} has a forbidden value")]
    PropertyValue(u8),
    /// A reason code that does not exist or is not allowed in this packet.
    #[error("reason code 0x{0:02X} is not valid here")]
    InvalidReasonCode(u8),
    /// The topic name in a PUBLISH or a will is not valid.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A topic filter in a SUBSCRIBE or UNSUBSCRIBE is not valid.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE without any topic filter [MQTT-3.8.3-3], [MQTT-3.10.3-2].
    #[error("no topic filters")]
    NoTopicFilters,
    /// Reserved bits of the subscription options are set [MQTT-3.8.3-5] (MQTT 3.1.1: any of
    /// the upper six bits [MQTT-3-8.3-4]).
    #[error("reserved subscription option bits set")]
    SubscriptionOptionsReserved,
    /// Retain Handling of 3 (a Protocol Error).
    #[error("retain handling 3")]
    InvalidRetainHandling,
    /// A QoS 0 PUBLISH with DUP set [MQTT-3.3.1-2].
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A Topic Alias of 0 or above the receiver's Topic Alias Maximum [MQTT-3.3.2-8],
    /// [MQTT-3.3.2-9].
    #[error("topic alias {0} is not valid")]
    TopicAliasInvalid(u16),
    /// A PUBLISH with an empty topic and a Topic Alias the receiver has no mapping for.
    #[error("topic alias {0} has no topic")]
    TopicAliasUnknown(u16),
    /// A PUBLISH with an empty topic and no Topic Alias.
    #[error("empty topic without topic alias")]
    EmptyTopicWithoutAlias,
    /// Subscription options with Maximum QoS 3 in 5.0 (a Protocol Error, 3.8.3.1).
    #[error("subscription QoS 3")]
    InvalidSubscriptionQoS,
    /// No Local set on a shared subscription [MQTT-3.8.3-4] (a Protocol Error).
    #[error("no local on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A client received a packet only clients send: CONNECT, SUBSCRIBE, UNSUBSCRIBE or
    /// PINGREQ (the direction of flow, spec 2.1.2) (a Protocol Error).
    #[error("{0:?} is a packet only a client may send")]
    ClientOnlyPacket(PacketType),
}

impl DecodeError {
    /// The MQTT 5.0 reason code a receiver gives for this error, in the DISCONNECT (or the
    /// CONNACK, for a bad CONNECT) it sends before closing the network connection.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DuplicateProperty(_)
            | PropertyValue(_)
            | NoTopicFilters
            | InvalidRetainHandling
            | EmptyTopicWithoutAlias
            | NoLocalOnSharedSubscription
            | InvalidSubscriptionQoS
            | TopicAliasUnknown(_)
            | ZeroPacketId
            | ClientOnlyPacket(_) => ReasonCode::ProtocolError,
            InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            TopicAliasInvalid(_) => ReasonCode::TopicAliasInvalid,
            ReservedPacketType(_)
            | InvalidFlags { .. }
            | MalformedVarInt
            | Truncated(_)
            | TrailingBytes(_)
            | InvalidUtf8
            | InvalidQoS
            | InvalidProtocolName
            | ConnectReservedFlag
            | InvalidWillFlags
            | PasswordWithoutUsername
            | InvalidProperty(_)
            | InvalidReasonCode(_)
            | SubscriptionOptionsReserved
            | DupOnQoS0 => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded packet would be larger than the receiver accepts (its Maximum Packet Size)
    /// or than MQTT can express (268 435 455 bytes of remaining length).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// The size the packet would have.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A string or binary field longer than 65 535 bytes.
    #[error("a {0} field is longer than 65 535 bytes")]
    FieldTooLong(&'static str),
    /// QoS 0 with a packet identifier, or QoS 1/2 without one.
    #[error("QoS and packet identifier disagree")]
    PacketIdMismatch,
    /// An empty topic name without a topic alias.
    #[error("empty topic name")]
    EmptyTopic,
    /// A SUBSCRIBE, UNSUBSCRIBE or SUBACK without entries.
    #[error("no topic filters")]
    NoTopicFilters,
    /// MQTT 3.1.1 cannot carry a password without a user name [MQTT-3.1.2-22].
    #[error("a password without a user name in MQTT 3.1.1")]
    PasswordWithoutUsername,
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// No Local on a shared subscription [MQTT-3.8.3-4].
    #[error("no local on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A packet that the protocol version cannot carry (AUTH in MQTT 3.1.1).
    #[error("{0:?} does not exist in MQTT 3.1.1")]
    NotInVersion(PacketType),
    /// A property value out of its range (Subscription Identifier 0 or above 268 435 455).
    #[error("property 0x{0:02X} has a value out of range")]
    PropertyValue(u8),
    /// A property not allowed in this packet.
    #[error("property 0x{0:02X} is not allowed in this packet")]
    PropertyNotAllowed(u8),
    /// A reason code not allowed in this packet.
    #[error("reason code 0x{0:02X} is not allowed in this packet")]
    ReasonCodeNotAllowed(u8),
    /// A string with U+0000, which MQTT strings may not hold [MQTT-1.5.4-2]: the receiver
    /// would close the connection as malformed.
    #[error("a {0} contains U+0000")]
    NullInString(&'static str),
}
