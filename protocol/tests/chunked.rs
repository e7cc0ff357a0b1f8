//! The streaming decoder fed the same byte stream in every possible chunking gives the same
//! packets in the same order [MQTT-6.0.0-2], and never buffers more than the maximum packet
//! size.
#![allow(clippy::unwrap_used)]

mod common;

use proptest::collection::vec;
use proptest::prelude::*;
use protocol::{
    Connect, Decoder, Packet, ProtocolVersion, Publish, QoS, Subscribe, Subscription, TopicFilter,
    TopicName,
};

use common::{connect, encode, non_connect_packet, without_alias, VERSIONS};

const MAX: u32 = 1 << 16;

/// Feeds `chunks` to a server-side decoder, checking the buffer bound after every call.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Packet>, Decoder) {
    let mut d = Decoder::new(MAX);
    let mut out = Vec::new();
    for mut chunk in chunks {
        loop {
            let got = d.decode(&mut chunk).unwrap();
            assert!(d.buffered() <= MAX as usize, "buffered {}", d.buffered());
            match got {
                Some(p) => out.push(p),
                None => {
                    assert!(chunk.is_empty());
                    break;
                }
            }
        }
    }
    (out, d)
}

/// A fixed session of every packet type of `v`, starting with CONNECT, and its bytes.
fn session(v: ProtocolVersion) -> (Vec<Packet>, Vec<u8>) {
    let id = |n| protocol::PacketId::new(n).unwrap();
    let mut connect = Connect::new(v, "client-1", true);
    connect.username = Some("u".into());
    if v == ProtocolVersion::V5 {
        connect.properties.session_expiry_interval = Some(3600);
        connect
            .properties
            .user_properties
            .push(("k".into(), "v".into()));
    }
    let mut qos1 = Publish::new(TopicName::new("a/b").unwrap(), vec![7u8; 300]);
    qos1.qos = QoS::AtLeastOnce;
    qos1.packet_id = Some(id(1));
    qos1.retain = true;
    if v == ProtocolVersion::V5 {
        qos1.properties.message_expiry_interval = Some(60);
    }
    let mut packets = vec![
        Packet::Connect(Box::new(connect)),
        Packet::Publish(Publish::new(TopicName::new("t").unwrap(), &b"hello"[..])),
        Packet::Publish(qos1),
        Packet::PubAck(protocol::PubResp::new(id(2))),
        Packet::PubRec(protocol::PubResp::new(id(3))),
        Packet::PubRel(protocol::PubResp::new(id(3))),
        Packet::PubComp(protocol::PubResp::new(id(3))),
        Packet::Subscribe(Subscribe {
            packet_id: id(4),
            subscriptions: vec![
                Subscription::new(TopicFilter::new("x/+/y").unwrap(), QoS::ExactlyOnce),
                Subscription::new(TopicFilter::new("#").unwrap(), QoS::AtMostOnce),
            ],
            properties: Default::default(),
        }),
        Packet::Unsubscribe(protocol::Unsubscribe {
            packet_id: id(5),
            filters: vec![TopicFilter::new("x/+/y").unwrap()],
            properties: Default::default(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Default::default()),
    ];
    if v == ProtocolVersion::V5 {
        let mut auth = protocol::Auth::default();
        auth.properties.authentication_method = Some("SCRAM-SHA-1".into());
        packets.push(Packet::Auth(auth));
    }
    let bytes = packets.iter().flat_map(|p| encode(p, v)).collect();
    (packets, bytes)
}

#[test]
fn a_server_decoder_learns_the_version_from_connect() {
    // [MQTT-3.1.2-2] the CONNECT names its protocol level; the rest of the stream uses it.
    for v in VERSIONS {
        let (packets, bytes) = session(v);
        let (got, d) = feed([&bytes[..]]);
        assert_eq!(d.version(), Some(v));
        assert_eq!(got, packets);
    }
}

#[test]
fn every_split_into_two_chunks_gives_the_same_packets() {
    // [MQTT-6.0.0-2] a frame may hold part of a packet or several packets.
    for v in VERSIONS {
        let (packets, bytes) = session(v);
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            let (got, d) = feed([a, b]);
            assert_eq!(got, packets, "split at {at}");
            assert_eq!(d.buffered(), 0);
        }
    }
}

#[test]
fn one_byte_at_a_time_gives_the_same_packets() {
    for v in VERSIONS {
        let (packets, bytes) = session(v);
        let (got, d) = feed(bytes.chunks(1));
        assert_eq!(got, packets);
        assert_eq!(d.buffered(), 0);
    }
}

#[test]
fn a_packet_split_inside_its_remaining_length_is_reassembled() {
    // A 300-byte payload makes a two-byte remaining length; split between those two bytes.
    let (packets, bytes) = session(ProtocolVersion::V311);
    let publish_at = encode(&packets[0], ProtocolVersion::V311).len()
        + encode(&packets[1], ProtocolVersion::V311).len();
    for offset in 1..=3 {
        let (a, b) = bytes.split_at(publish_at + offset);
        assert_eq!(feed([a, b]).0, packets, "offset {offset}");
    }
}

/// A stream: a CONNECT of version `v`, then packets of that version.
fn stream(v: ProtocolVersion) -> impl Strategy<Value = (Vec<Packet>, Vec<u8>)> {
    (connect(v), vec(non_connect_packet(v), 0..12)).prop_map(move |(c, rest)| {
        let packets: Vec<Packet> = std::iter::once(c)
            .chain(rest.into_iter().map(without_alias))
            .collect();
        let bytes = packets.iter().flat_map(|p| encode(p, v)).collect();
        (packets, bytes)
    })
}

fn chunkings(v: ProtocolVersion) -> impl Strategy<Value = (Vec<Packet>, Vec<u8>, Vec<usize>)> {
    stream(v).prop_flat_map(|(packets, bytes)| {
        let n = bytes.len();
        (
            Just(packets),
            Just(bytes),
            vec(0..=n, 0..16).prop_map(|mut cuts| {
                cuts.sort_unstable();
                cuts
            }),
        )
    })
}

fn split_at_cuts<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        chunks.push(&bytes[from..cut]);
        from = cut;
    }
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_chunkings_of_a_3_1_1_stream_give_the_same_packets(
        (packets, bytes, cuts) in chunkings(ProtocolVersion::V311)
    ) {
        let (got, d) = feed(split_at_cuts(&bytes, &cuts));
        prop_assert_eq!(got, packets);
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(d.version(), Some(ProtocolVersion::V311));
    }

    #[test]
    fn random_chunkings_of_a_5_stream_give_the_same_packets(
        (packets, bytes, cuts) in chunkings(ProtocolVersion::V5)
    ) {
        let (got, d) = feed(split_at_cuts(&bytes, &cuts));
        prop_assert_eq!(got, packets);
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(d.version(), Some(ProtocolVersion::V5));
    }

    #[test]
    fn a_small_maximum_is_never_exceeded_by_the_buffer(
        (_, bytes, cuts) in chunkings(ProtocolVersion::V5),
        max in 1u32..200,
    ) {
        // Whatever the stream does against the limit, the buffer stays within it.
        let mut d = Decoder::new(max);
        'chunks: for mut chunk in split_at_cuts(&bytes, &cuts) {
            loop {
                let got = d.decode(&mut chunk);
                prop_assert!(d.buffered() <= max as usize);
                match got {
                    Ok(Some(p)) => {
                        prop_assert!(p.encoded_len(ProtocolVersion::V5).unwrap() <= max as usize)
                    }
                    Ok(None) => break,
                    Err(_) => break 'chunks,
                }
            }
        }
    }
}
