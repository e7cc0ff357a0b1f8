//! What both ends of a QoS 1 or 2 flow do alike, written once for the broker and the client:
//! handing out packet identifiers, and answering PUBREC with PUBREL and PUBREL with PUBCOMP.
//!
//! The caller owns its sets of identifiers in use (the broker's in-flight map, the client's
//! in-flight messages and pending requests) and says whether an identifier is known; these
//! pieces decide only what the protocol says, per version.

use crate::packet::{Packet, PacketId, ProtocolVersion, PubResp};
use crate::reason::ReasonCode;

/// Where an outgoing QoS 1/2 message is in its flow (the sender's side, broker or client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundStage {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    AwaitingAck,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP (QoS 2).
    AwaitingComp,
}

/// Hands out packet identifiers for one side of a session, round robin from 1: never 0, and
/// never one still in use [MQTT-2.2.1-3]. Going round rather than taking the lowest free id
/// keeps a freed id from being reused at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketIds {
    /// The identifier tried first by the next call; after 65 535 comes 1.
    next: PacketId,
}

impl Default for PacketIds {
    fn default() -> Self {
        PacketIds::new()
    }
}

impl PacketIds {
    /// An allocator whose first identifier is 1.
    pub const fn new() -> Self {
        PacketIds::starting_at(PacketId::MIN)
    }

    /// An allocator whose first identifier is `first`.
    pub const fn starting_at(first: PacketId) -> Self {
        PacketIds { next: first }
    }

    /// The next identifier for which `in_use` is false, or `None` when all 65 535 are.
    pub fn next(&mut self, in_use: impl Fn(PacketId) -> bool) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            let id = self.next;
            self.next = id.checked_add(1).unwrap_or(PacketId::MIN);
            if !in_use(id) {
                return Some(id);
            }
        }
        None
    }
}

/// The PUBREL that answers `rec`, a PUBREC. `known`: the identifier is one of ours whose
/// flow goes on, and PUBREL releases it [MQTT-4.3.3-4]. An unknown one is released too, so
/// that the peer can end its flow: with 0x92 Packet Identifier not found in 5.0, with plain
/// success in 3.1.1, which has no reason codes.
pub fn pubrel_for(rec: &PubResp, known: bool, version: ProtocolVersion) -> Packet {
    Packet::PubRel(PubResp::with_reason(rec.packet_id, found(known, version)))
}

/// The PUBCOMP that answers `rel`, a PUBREL, with the same identifier [MQTT-4.3.3-11].
/// `known`: the identifier was awaiting PUBREL. An unknown one (a PUBREL resent after our
/// PUBCOMP was lost) is completed too: with 0x92 Packet Identifier not found in 5.0, with
/// plain success in 3.1.1.
pub fn pubcomp_for(rel: &PubResp, known: bool, version: ProtocolVersion) -> Packet {
    Packet::PubComp(PubResp::with_reason(rel.packet_id, found(known, version)))
}

/// Success, or what an answer says about an identifier it does not know.
fn found(known: bool, version: ProtocolVersion) -> ReasonCode {
    match (known, version) {
        (true, _) | (false, ProtocolVersion::V311) => ReasonCode::Success,
        (false, ProtocolVersion::V5) => ReasonCode::PacketIdentifierNotFound,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    #[test]
    fn packet_ids_go_round_from_1_and_skip_0_mqtt_2_2_1_3() {
        let mut ids = PacketIds::new();
        assert_eq!(ids.next(|_| false), Some(pid(1)));
        assert_eq!(ids.next(|_| false), Some(pid(2)));
        let mut ids = PacketIds::starting_at(pid(u16::MAX));
        assert_eq!(ids.next(|_| false), Some(pid(u16::MAX)));
        assert_eq!(ids.next(|_| false), Some(pid(1)));
    }

    #[test]
    fn packet_ids_in_use_are_skipped_mqtt_2_2_1_3() {
        let mut ids = PacketIds::starting_at(pid(u16::MAX));
        let in_use = |id: PacketId| id.get() == u16::MAX || id.get() == 1;
        assert_eq!(ids.next(in_use), Some(pid(2)));
        assert_eq!(ids.next(in_use), Some(pid(3)));
    }

    #[test]
    fn a_freed_packet_id_is_not_reused_at_once() {
        let mut ids = PacketIds::new();
        assert_eq!(ids.next(|_| false), Some(pid(1)));
        // 1 is free again, but 2 comes first.
        assert_eq!(ids.next(|_| false), Some(pid(2)));
    }

    #[test]
    fn when_every_packet_id_is_in_use_there_is_none() {
        let mut ids = PacketIds::starting_at(pid(40_000));
        assert_eq!(ids.next(|_| true), None);
        // Only the last one free: found after going all the way round.
        assert_eq!(ids.next(|id| id.get() != 39_999), Some(pid(39_999)));
    }

    #[test]
    fn a_known_pubrec_is_answered_by_a_successful_pubrel_mqtt_4_3_3_4() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let rec = PubResp::new(pid(7));
            assert_eq!(
                pubrel_for(&rec, true, v),
                Packet::PubRel(PubResp::with_reason(pid(7), ReasonCode::Success))
            );
        }
    }

    #[test]
    fn an_unknown_pubrec_is_released_with_0x92_in_5_and_success_in_3_1_1() {
        let rec = PubResp::new(pid(7));
        assert_eq!(
            pubrel_for(&rec, false, ProtocolVersion::V5),
            Packet::PubRel(PubResp::with_reason(
                pid(7),
                ReasonCode::PacketIdentifierNotFound
            ))
        );
        assert_eq!(
            pubrel_for(&rec, false, ProtocolVersion::V311),
            Packet::PubRel(PubResp::new(pid(7)))
        );
    }

    #[test]
    fn a_pubrel_is_answered_by_pubcomp_with_its_packet_id_mqtt_4_3_3_11() {
        let rel = PubResp::new(pid(9));
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            assert_eq!(
                pubcomp_for(&rel, true, v),
                Packet::PubComp(PubResp::new(pid(9)))
            );
        }
        assert_eq!(
            pubcomp_for(&rel, false, ProtocolVersion::V5),
            Packet::PubComp(PubResp::with_reason(
                pid(9),
                ReasonCode::PacketIdentifierNotFound
            ))
        );
        assert_eq!(
            pubcomp_for(&rel, false, ProtocolVersion::V311),
            Packet::PubComp(PubResp::new(pid(9)))
        );
    }
}
