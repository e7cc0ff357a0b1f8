//! The connection's packets as bytes: plain functions, called before any `.await` (see
//! [`encoded`]).

use super::*;

/// One packet's bytes, for the last packet of a closing connection.
///
/// Why packets are encoded by plain functions before any `.await`: a value held across an
/// await is stored in the connection's future, whose size every connection pays for its
/// whole life, and a [`Packet`] is several hundred bytes.
pub(super) fn encoded(packet: &Packet, version: ProtocolVersion) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).ok()?;
    Some(buf.freeze())
}

/// CONNACK 0x01 (unacceptable protocol version) in the 3.1.1 format [MQTT-3.1.2-2].
pub(super) fn unsupported_version_ack() -> Option<Bytes> {
    let ack = ConnAck::new(false, ReasonCode::UnsupportedProtocolVersion);
    encoded(&Packet::ConnAck(ack), ProtocolVersion::V311)
}

/// A 5.0 DISCONNECT's bytes.
pub(super) fn disconnect(reason: ReasonCode) -> Option<Bytes> {
    encoded(
        &Packet::Disconnect(Disconnect::new(reason)),
        ProtocolVersion::V5,
    )
}

/// Encodes `first` and whatever else the engine has ready into one buffer, made for this
/// batch and handed to the transport: nothing is kept while idle. Also says whether the
/// engine asked to close (or is gone).
pub(super) fn encode_batch(
    first: Option<Outgoing>,
    peer: &mut Peer<'_>,
    out_rx: &mut mpsc::Receiver<Outgoing>,
) -> (BytesMut, bool) {
    let mut out = BytesMut::new();
    let mut item = first;
    loop {
        match item {
            Some(Outgoing::Packet(p)) => encode(*p, peer, &mut out),
            Some(Outgoing::Close) | None => return (out, true),
        }
        if out.len() >= MAX_BATCH {
            return (out, false);
        }
        match out_rx.try_recv() {
            Ok(next) => item = Some(next),
            Err(_) => return (out, false),
        }
    }
}

/// Encodes `p` for the client into `out`, with an outbound topic alias where one applies;
/// a packet over the client's Maximum Packet Size is not sent.
pub(super) fn encode(mut p: Packet, peer: &mut Peer<'_>, out: &mut BytesMut) {
    if let Packet::ConnAck(ack) = &p {
        peer.acked = true;
        if ack.reason == ReasonCode::Success {
            peer.open = Some(peer.metrics.connection_opened(peer.transport, peer.version));
        } else {
            peer.metrics.connect_refused(ack.reason);
        }
    }
    let mut new_alias = false;
    if let (Packet::Publish(publish), ProtocolVersion::V5) = (&mut p, peer.version) {
        new_alias = peer.aliases.apply(publish);
    }
    if let Err(e) = p.encode_limited(peer.version, peer.client_max, out) {
        // A new alias adds 3 bytes: take it back, and send the message without it if that
        // fits [MQTT-3.1.2-24] (the engine checked the size without an alias).
        let retry = match (&mut p, new_alias) {
            (Packet::Publish(publish), true) => {
                peer.aliases.forget(&publish.topic);
                publish.properties.topic_alias = None;
                true
            }
            _ => false,
        };
        if !retry
            || p.encode_limited(peer.version, peer.client_max, out)
                .is_err()
        {
            tracing::debug!(error = %e, "not sent: cannot encode for this client");
        }
    }
}
