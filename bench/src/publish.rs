//! Publishing with a window of unacknowledged messages, and acknowledging what arrives.

use std::time::{Duration, Instant};

use protocol::{Packet, PacketId, PubResp, Publish, QoS};

use crate::conn::{Conn, ConnError};

/// How long a publisher with messages in flight waits for any answer before it calls the
/// broker stalled.
const STALL: Duration = Duration::from_secs(30);

/// What a publisher's source of messages says when asked for the next one.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per message, moved straight into the encoder: boxing would add an \
              allocation per message to the load generator"
)]
pub(crate) enum Next {
    /// Publish this message (QoS set); the tag comes back through `on_ack`.
    Publish(u64, Publish),
    /// Nothing yet: ask again at this instant (a publisher on a schedule).
    NotBefore(Instant),
    /// No more messages.
    Done,
}

/// Publishes what `next` yields over `conn`, keeping at most `window` messages
/// unacknowledged, until `next` says [`Next::Done`] and every message is acknowledged
/// (PUBACK, or PUBCOMP after PUBREC / PUBREL). `on_ack` gets each message's tag once it is
/// acknowledged; a QoS 0 message counts as acknowledged once written, and is written in
/// batches of up to `window`. While `next` says [`Next::NotBefore`], acknowledgements are
/// still taken as they come, so a scheduled publisher never waits on a full window it could
/// have emptied.
pub(crate) async fn publish_windowed(
    conn: &mut Conn,
    window: u16,
    mut next: impl FnMut() -> Next,
    mut on_ack: impl FnMut(u64),
) -> Result<(), ConnError> {
    let window = window.max(1);
    let mut free: Vec<PacketId> = (1..=window).rev().filter_map(PacketId::new).collect();
    let mut tags: Vec<Option<u64>> = vec![None; usize::from(window) + 1];
    let mut written_qos0 = Vec::with_capacity(usize::from(window));
    let mut exhausted = false;
    loop {
        let mut wake = None;
        while !exhausted && !free.is_empty() && written_qos0.len() < usize::from(window) {
            match next() {
                Next::Publish(tag, mut publish) => {
                    if publish.qos == QoS::AtMostOnce {
                        written_qos0.push(tag);
                    } else if let Some(id) = free.pop() {
                        tags[usize::from(id.get())] = Some(tag);
                        publish.packet_id = Some(id);
                    }
                    conn.push(&Packet::Publish(publish))?;
                }
                Next::NotBefore(at) => {
                    wake = Some(at);
                    break;
                }
                Next::Done => exhausted = true,
            }
        }
        conn.flush().await?;
        written_qos0.drain(..).for_each(&mut on_ack);
        let idle = free.len() == usize::from(window);
        if idle && exhausted {
            return Ok(());
        }
        let mut packet = match (idle, wake) {
            (true, None) => continue,
            (true, Some(at)) => {
                tokio::time::sleep_until(at.into()).await;
                continue;
            }
            (false, None) => conn.next_within(STALL).await?,
            (false, Some(at)) => tokio::select! {
                packet = conn.next_within(STALL) => packet?,
                () = tokio::time::sleep_until(at.into()) => continue,
            },
        };
        loop {
            match packet {
                Packet::PubAck(r) | Packet::PubComp(r) if !r.reason.is_error() => {
                    let slot = tags.get_mut(usize::from(r.packet_id.get()));
                    let tag = slot
                        .and_then(Option::take)
                        .ok_or(ConnError::UnknownPacketId(r.packet_id))?;
                    free.push(r.packet_id);
                    on_ack(tag);
                }
                Packet::PubRec(r) if !r.reason.is_error() => {
                    conn.push(&Packet::PubRel(PubResp::new(r.packet_id)))?;
                }
                Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubComp(r) => {
                    return Err(ConnError::Refused(r.reason))
                }
                Packet::Disconnect(d) => return Err(ConnError::Refused(d.reason)),
                _ => {}
            }
            if !conn.has_buffered() {
                break;
            }
            packet = conn.next().await?;
        }
    }
}

/// Queues the acknowledgement a received packet calls for: PUBACK for a QoS 1 PUBLISH, PUBREC
/// for QoS 2, PUBCOMP for PUBREL. Returns the PUBLISH, if it was one.
pub(crate) fn acknowledge(conn: &mut Conn, packet: Packet) -> Result<Option<Publish>, ConnError> {
    match packet {
        Packet::Publish(p) => {
            match (p.qos, p.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => conn.push(&Packet::PubAck(PubResp::new(id)))?,
                (QoS::ExactlyOnce, Some(id)) => conn.push(&Packet::PubRec(PubResp::new(id)))?,
                _ => {}
            }
            Ok(Some(p))
        }
        Packet::PubRel(r) => {
            conn.push(&Packet::PubComp(PubResp::new(r.packet_id)))?;
            Ok(None)
        }
        Packet::Disconnect(d) => Err(ConnError::Refused(d.reason)),
        _ => Ok(None),
    }
}
