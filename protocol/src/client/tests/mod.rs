//! The client state machine driven packet by packet, without a socket: one file per
//! concern, as in the client itself; the helpers are here.

#![allow(clippy::unwrap_used)]

mod connection;
mod incoming;
mod outgoing;
mod persistence;
mod subscriptions;
mod timers;

use super::*;
use crate::error::{DecodeError, EncodeError};
use crate::packet::{ConnAck, PubResp, SubAck, Subscription, SubscriptionOptions, UnsubAck};
use crate::properties::Properties;
use crate::topic::TopicName;
use bytes::Bytes;

fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn sent(c: &mut Client) -> Vec<Packet> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// A client of `version` that has connected and got CONNACK with `props`.
fn connected(version: ProtocolVersion, clean: bool, props: Properties) -> Client {
    let mut c = Client::new(ClientOptions::new(version, "c1", clean));
    c.connect(t(0)).unwrap();
    sent(&mut c);
    let mut ack = ConnAck::new(false, ReasonCode::Success);
    ack.properties = props;
    c.handle_packet(Packet::ConnAck(ack), t(1)).unwrap();
    events(&mut c);
    c
}

fn publish(c: &mut Client, qos: QoS, now: u64) -> PublishToken {
    c.publish(
        topic("a/b"),
        Bytes::from_static(b"hi"),
        qos,
        false,
        Properties::default(),
        t(now),
    )
    .unwrap()
}

fn published(packets: &[Packet]) -> Vec<(PacketId, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id.unwrap(), p.dup)),
            _ => None,
        })
        .collect()
}
