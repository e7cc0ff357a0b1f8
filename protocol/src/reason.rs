//! MQTT 5.0 reason codes, and how they fold into MQTT 3.1.1's return codes.

use core::fmt;

/// An MQTT 5.0 reason code (spec section 2.4).
///
/// One enum serves every packet; which codes a given packet may carry is checked by the codec
/// (see [`ReasonCode::allowed_in`]). Several codes share a byte value across packets (0x00 is
/// Success, Normal disconnection and Granted QoS 0), so those have one variant with aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[non_exhaustive]
pub enum ReasonCode {
    /// 0x00: Success, Normal disconnection, Granted QoS 0.
    Success = 0x00,
    /// 0x01: Granted QoS 1.
    GrantedQoS1 = 0x01,
    /// 0x02: Granted QoS 2.
    GrantedQoS2 = 0x02,
    /// 0x04: Disconnect with Will Message.
    DisconnectWithWill = 0x04,
    /// 0x10: No matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11: No subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18: Continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19: Re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80: Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81: Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82: Protocol Error.
    ProtocolError = 0x82,
    /// 0x83: Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84: Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86: Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87: Not authorized.
    NotAuthorized = 0x87,
    /// 0x88: Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89: Server busy.
    ServerBusy = 0x89,
    /// 0x8A: Banned.
    Banned = 0x8A,
    /// 0x8B: Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F: Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90: Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91: Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92: Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93: Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96: Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97: Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98: Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99: Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A: Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B: QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C: Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D: Server moved.
    ServerMoved = 0x9D,
    /// 0x9E: Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F: Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0: Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1: Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2: Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

/// The packets that carry a reason code, for [`ReasonCode::allowed_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonContext {
    /// CONNACK.
    ConnAck,
    /// PUBACK and PUBREC.
    PubAckOrRec,
    /// PUBREL and PUBCOMP.
    PubRelOrComp,
    /// SUBACK.
    SubAck,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl ReasonCode {
    /// Normal disconnection (0x00), the same byte as [`ReasonCode::Success`].
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// Granted QoS 0 (0x00), the same byte as [`ReasonCode::Success`].
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// The code's byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Is this an error (0x80 or above)?
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// The reason code for a byte, if the byte is one.
    pub fn from_u8(byte: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match byte {
            0x00 => Success,
            0x01 => GrantedQoS1,
            0x02 => GrantedQoS2,
            0x04 => DisconnectWithWill,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// May this code appear in that packet? The tables of spec sections 3.2.2.2, 3.4.2.1,
    /// 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1 and 3.15.2.1.
    pub fn allowed_in(self, ctx: ReasonContext) -> bool {
        use ReasonCode::*;
        use ReasonContext as C;
        let b = self.as_u8();
        match ctx {
            C::ConnAck => {
                matches!(self, Success)
                    || ((0x80..=0x9F).contains(&b)
                        && !matches!(
                            self,
                            KeepAliveTimeout
                                | SessionTakenOver
                                | TopicFilterInvalid
                                | PacketIdentifierInUse
                                | PacketIdentifierNotFound
                                | ReceiveMaximumExceeded
                                | TopicAliasInvalid
                                | MessageRateTooHigh
                                | AdministrativeAction
                                | SharedSubscriptionsNotSupported
                                | ServerShuttingDown
                        ))
            }
            C::PubAckOrRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            C::PubRelOrComp => matches!(self, Success | PacketIdentifierNotFound),
            C::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            C::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            C::Disconnect => {
                matches!(self, Success | DisconnectWithWill)
                    || (b >= 0x80
                        && !matches!(
                            self,
                            UnsupportedProtocolVersion
                                | ClientIdentifierNotValid
                                | BadUserNameOrPassword
                                | ServerUnavailable
                                | Banned
                                | BadAuthenticationMethod
                                | PacketIdentifierInUse
                                | PacketIdentifierNotFound
                        ))
            }
            C::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
        }
    }

    /// The MQTT 3.1.1 CONNACK return code for this reason (spec 3.1.1 section 3.2.2.3,
    /// and the mapping MQTT 5.0 gives for a server answering a 3.1.1 client).
    pub fn to_v3_connect_return_code(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            UnsupportedProtocolVersion => 1,
            ClientIdentifierNotValid => 2,
            BadUserNameOrPassword | BadAuthenticationMethod => 4,
            NotAuthorized | Banned => 5,
            _ => 3, // server unavailable: the only other refusal 3.1.1 can express
        }
    }

    /// The reason code for an MQTT 3.1.1 CONNACK return code, if it is one (0 to 5).
    pub fn from_v3_connect_return_code(code: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match code {
            0 => Success,
            1 => UnsupportedProtocolVersion,
            2 => ClientIdentifierNotValid,
            3 => ServerUnavailable,
            4 => BadUserNameOrPassword,
            5 => NotAuthorized,
            _ => return None,
        })
    }

    /// A short human description, as the spec names the code.
    pub fn description(self) -> &'static str {
        use ReasonCode::*;
        match self {
            Success => "success",
            GrantedQoS1 => "granted QoS 1",
            GrantedQoS2 => "granted QoS 2",
            DisconnectWithWill => "disconnect with will message",
            NoMatchingSubscribers => "no matching subscribers",
            NoSubscriptionExisted => "no subscription existed",
            ContinueAuthentication => "continue authentication",
            ReAuthenticate => "re-authenticate",
            UnspecifiedError => "unspecified error",
            MalformedPacket => "malformed packet",
            ProtocolError => "protocol error",
            ImplementationSpecificError => "implementation specific error",
            UnsupportedProtocolVersion => "unsupported protocol version",
            ClientIdentifierNotValid => "client identifier not valid",
            BadUserNameOrPassword => "bad user name or password",
            NotAuthorized => "not authorized",
            ServerUnavailable => "server unavailable",
            ServerBusy => "server busy",
            Banned => "banned",
            ServerShuttingDown => "server shutting down",
            BadAuthenticationMethod => "bad authentication method",
            KeepAliveTimeout => "keep alive timeout",
            SessionTakenOver => "session taken over",
            TopicFilterInvalid => "topic filter invalid",
            TopicNameInvalid => "topic name invalid",
            PacketIdentifierInUse => "packet identifier in use",
            PacketIdentifierNotFound => "packet identifier not found",
            ReceiveMaximumExceeded => "receive maximum exceeded",
            TopicAliasInvalid => "topic alias invalid",
            PacketTooLarge => "packet too large",
            MessageRateTooHigh => "message rate too high",
            QuotaExceeded => "quota exceeded",
            AdministrativeAction => "administrative action",
            PayloadFormatInvalid => "payload format invalid",
            RetainNotSupported => "retain not supported",
            QoSNotSupported => "QoS not supported",
            UseAnotherServer => "use another server",
            ServerMoved => "server moved",
            SharedSubscriptionsNotSupported => "shared subscriptions not supported",
            ConnectionRateExceeded => "connection rate exceeded",
            MaximumConnectTime => "maximum connect time",
            SubscriptionIdentifiersNotSupported => "subscription identifiers not supported",
            WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported",
        }
    }
}

impl Default for ReasonCode {
    /// Success / Normal disconnection.
    fn default() -> Self {
        ReasonCode::Success
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.description(), self.as_u8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_through_from_u8() {
        for b in 0..=255u8 {
            if let Some(code) = ReasonCode::from_u8(b) {
                assert_eq!(code.as_u8(), b);
            }
        }
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xA3), None);
    }

    #[test]
    fn v3_connect_return_codes_round_trip() {
        for rc in 0..=5u8 {
            let code = ReasonCode::from_v3_connect_return_code(rc).expect("0..=5 are defined");
            assert_eq!(code.to_v3_connect_return_code(), rc);
        }
        assert_eq!(ReasonCode::from_v3_connect_return_code(6), None);
    }

    #[test]
    fn reason_tables_match_the_spec_samples() {
        use ReasonCode::*;
        assert!(Success.allowed_in(ReasonContext::ConnAck));
        assert!(QuotaExceeded.allowed_in(ReasonContext::ConnAck));
        assert!(!SessionTakenOver.allowed_in(ReasonContext::ConnAck));
        assert!(SessionTakenOver.allowed_in(ReasonContext::Disconnect));
        assert!(DisconnectWithWill.allowed_in(ReasonContext::Disconnect));
        assert!(!GrantedQoS1.allowed_in(ReasonContext::Disconnect));
        assert!(NoMatchingSubscribers.allowed_in(ReasonContext::PubAckOrRec));
        assert!(!NoMatchingSubscribers.allowed_in(ReasonContext::PubRelOrComp));
        assert!(PacketIdentifierNotFound.allowed_in(ReasonContext::PubRelOrComp));
        assert!(GrantedQoS2.allowed_in(ReasonContext::SubAck));
        assert!(NoSubscriptionExisted.allowed_in(ReasonContext::UnsubAck));
        assert!(ReAuthenticate.allowed_in(ReasonContext::Auth));
        assert!(!UnspecifiedError.allowed_in(ReasonContext::Auth));
    }
}
