//! What a [`Client`](super::Client) must keep across a restart of its host (a page reload),
//! as records for a key-value store, and how it takes them back.
//!
//! # Why records and not a snapshot
//! A browser client saves into IndexedDB after every step that changed its session, so the
//! write must be proportional to the change, not to the session. The state machine marks
//! what a step touched; [`Client::take_store_ops`](super::Client::take_store_ops) turns the
//! marks into puts and deletes of one record per message. The driver writes them, and only
//! once the write is durable sends the packets of that step: a PUBLISH reaches the wire only
//! after its record (with its packet identifier) is stored, so after a reload the message is
//! resent as the same message (DUP, same id), never as a new one; a PUBREC for an incoming
//! QoS 2 message goes out only after its packet id is stored, so the duplicate the server
//! may send after a reload is not delivered twice [MQTT-4.3.3-10].
//!
//! # What is kept
//! - every outgoing QoS 1/2 message not yet acknowledged: queued (no packet id yet), awaiting
//!   PUBACK/PUBREC (with its id, resent with DUP when the session resumes [MQTT-4.4.0-1]),
//!   or awaiting PUBCOMP (only the id matters: PUBREL is resent, never the PUBLISH
//!   [MQTT-4.3.3-5]);
//! - the packet ids of incoming QoS 2 messages delivered and awaiting PUBREL.
//!
//! Subscriptions are not kept: with a session on the server they are the server's, and
//! without one the application subscribes again.
//!
//! # Record format (version 1)
//! `[1][flags][order: u64 big-endian][PUBLISH packet]`, flags: bit 0 in flight (has its
//! packet id), bit 1 awaiting PUBCOMP, bit 2 the packet is encoded as MQTT 5.0. `order`
//! is the order the message was first sent in (resends keep it [MQTT-4.6.0-1]). A queued
//! QoS 1/2 message is encoded with a placeholder packet id that is ignored. Incoming QoS 2
//! records have an empty value.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::packet::{Packet, PacketId, ProtocolVersion, Publish};

use super::OutboundStage;
use crate::prelude::*;

/// The key of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreKey {
    /// An outgoing QoS 1/2 message, by the token of its `publish` call (unique for the
    /// life of the stored session).
    Outbound(u64),
    /// An incoming QoS 2 message awaiting PUBREL, by its packet id.
    Inbound(PacketId),
}

/// One change for the store, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Create or replace the record.
    Put(StoreKey, Vec<u8>),
    /// Remove the record (absent is fine).
    Delete(StoreKey),
}

/// A stored record that cannot be taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// Not a record of a format this version writes.
    // The key is left out of the message: formatting it with Debug costs the browser
    // client kilobytes of wasm for a message nobody acts on.
    #[error("a stored record has an unknown format")]
    Format(StoreKey),
    /// Its PUBLISH packet does not decode.
    #[error("a stored record does not decode: {1}")]
    Decode(StoreKey, DecodeError),
    /// `restore` after the client started connecting or with a session already in memory.
    #[error("restore is only possible before the first connect")]
    NotFresh,
}

const FORMAT: u8 = 1;
const IN_FLIGHT: u8 = 1;
const AWAITING_COMP: u8 = 2;
const V5: u8 = 4;
const HEADER: usize = 10;

/// An outgoing message as read back from the store.
#[derive(Debug)]
pub(super) struct StoredOutbound {
    /// `Some((order, stage))` when it was in flight.
    pub(super) in_flight: Option<(u64, OutboundStage)>,
    /// The message; its packet id is meaningful only when in flight.
    pub(super) publish: Publish,
}

/// Encodes one outgoing message. `in_flight` as in [`StoredOutbound`].
pub(super) fn encode_outbound(
    in_flight: Option<(u64, OutboundStage)>,
    publish: &Publish,
    version: ProtocolVersion,
) -> Vec<u8> {
    let mut flags = 0;
    let mut order = 0;
    if let Some((o, stage)) = in_flight {
        flags |= IN_FLIGHT;
        order = o;
        if stage == OutboundStage::AwaitingComp {
            flags |= AWAITING_COMP;
        }
    }
    if version == ProtocolVersion::V5 {
        flags |= V5;
    }
    let mut p = publish.clone();
    p.dup = false;
    p.packet_id = p.packet_id.or(Some(PacketId::MIN));
    let mut out = Vec::with_capacity(HEADER + 16 + p.topic.as_str().len() + p.payload.len());
    out.push(FORMAT);
    out.push(flags);
    out.extend_from_slice(&order.to_be_bytes());
    // A message the client accepted was checked to encode (`Client::publish`); should that
    // ever fail, the record holds no packet and is refused on restore, not silently wrong.
    let _ = Packet::Publish(p).encode(version, &mut out);
    out
}

/// Decodes a record written by [`encode_outbound`].
pub(super) fn decode_outbound(key: StoreKey, value: &[u8]) -> Result<StoredOutbound, RestoreError> {
    let (&[format, flags], rest) = value
        .split_first_chunk::<2>()
        .ok_or(RestoreError::Format(key))?;
    let (order, packet) = rest
        .split_first_chunk::<8>()
        .ok_or(RestoreError::Format(key))?;
    if format != FORMAT {
        return Err(RestoreError::Format(key));
    }
    let version = if flags & V5 != 0 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    // Decoded as the client decodes what it receives, so that the client does not link the
    // decoders of the packets only clients send (a PUBLISH goes both ways).
    let decoded = Packet::decode_from_server(packet, version, u32::MAX)
        .map_err(|e| RestoreError::Decode(key, e))?;
    let Some((Packet::Publish(mut publish), len)) = decoded else {
        return Err(RestoreError::Format(key));
    };
    if len != packet.len() || publish.packet_id.is_none() {
        return Err(RestoreError::Format(key));
    }
    let in_flight = (flags & IN_FLIGHT != 0).then(|| {
        let stage = if flags & AWAITING_COMP != 0 {
            OutboundStage::AwaitingComp
        } else {
            OutboundStage::AwaitingAck
        };
        (u64::from_be_bytes(*order), stage)
    });
    if in_flight.is_none() {
        publish.packet_id = None;
    }
    publish.payload = Bytes::copy_from_slice(&publish.payload);
    Ok(StoredOutbound { in_flight, publish })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::packet::QoS;
    use crate::properties::Properties;
    use crate::topic::TopicName;

    fn message(qos: QoS, id: Option<u16>) -> Publish {
        let properties = Properties {
            content_type: Some("text/plain".into()),
            ..Properties::default()
        };
        Publish {
            dup: true,
            qos,
            retain: true,
            topic: TopicName::new("a/b").unwrap(),
            packet_id: id.and_then(PacketId::new),
            payload: Bytes::from_static(b"payload"),
            properties,
        }
    }

    #[test]
    fn records_round_trip_in_both_versions_and_every_stage() {
        let key = StoreKey::Outbound(7);
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for in_flight in [
                None,
                Some((3, OutboundStage::AwaitingAck)),
                Some((u64::MAX, OutboundStage::AwaitingComp)),
            ] {
                let p = message(QoS::ExactlyOnce, in_flight.map(|_| 42));
                let bytes = encode_outbound(in_flight, &p, version);
                let back = decode_outbound(key, &bytes).unwrap();
                assert_eq!(back.in_flight, in_flight);
                assert_eq!(back.publish.packet_id, p.packet_id);
                assert!(!back.publish.dup, "DUP is set when resent, not stored");
                assert_eq!(back.publish.payload, p.payload);
                assert_eq!(back.publish.topic, p.topic);
                assert!(back.publish.retain);
                let ct = back.publish.properties.content_type.as_deref();
                match version {
                    ProtocolVersion::V5 => assert_eq!(ct, Some("text/plain")),
                    ProtocolVersion::V311 => assert_eq!(ct, None),
                }
            }
        }
    }

    #[test]
    fn damaged_records_are_refused_not_guessed() {
        let key = StoreKey::Outbound(1);
        let good = encode_outbound(
            Some((1, OutboundStage::AwaitingAck)),
            &message(QoS::AtLeastOnce, Some(5)),
            ProtocolVersion::V5,
        );
        assert_eq!(
            decode_outbound(key, &[]).unwrap_err(),
            RestoreError::Format(key)
        );
        let mut other_format = good.clone();
        other_format[0] = 2;
        assert_eq!(
            decode_outbound(key, &other_format).unwrap_err(),
            RestoreError::Format(key)
        );
        let truncated = &good[..good.len() - 1];
        assert!(decode_outbound(key, truncated).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode_outbound(key, &trailing).unwrap_err(),
            RestoreError::Format(key)
        );
        let mut bad_qos = good;
        bad_qos[HEADER] |= 0b0110; // QoS 3
        assert!(matches!(
            decode_outbound(key, &bad_qos),
            Err(RestoreError::Decode(_, _))
        ));
    }
}
