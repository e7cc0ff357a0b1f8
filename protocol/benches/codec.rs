//! Encode and decode throughput of the codec, in packets per second, for the packets a broker
//! handles most: a QoS 1 PUBLISH with a 64-byte payload (both versions), a 5.0 CONNECT with
//! properties, and a SUBSCRIBE with ten filters.
//!
//! `cargo bench -p protocol --bench codec` measures; `cargo test --benches` runs each once.

use std::hint::black_box;
use std::num::NonZeroU16;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::{
    Connect, Decoder, Packet, ProtocolVersion, Publish, QoS, Subscribe, Subscription, TopicFilter,
    TopicName, Will,
};

fn packet_id(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("benchmark packet ids are not zero")
}

fn publish(v: ProtocolVersion) -> Packet {
    let topic = TopicName::new("sensors/building-7/floor-3/temperature").expect("valid topic");
    let mut p = Publish::new(topic, vec![0x5A; 64]);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = Some(packet_id(4242));
    if v == ProtocolVersion::V5 {
        p.properties.message_expiry_interval = Some(300);
        p.properties.content_type = Some("application/json".into());
    }
    Packet::Publish(p)
}

fn connect_v5() -> Packet {
    let mut c = Connect::new(ProtocolVersion::V5, "bench-client-0001", false);
    c.keep_alive = 30;
    c.username = Some("user".into());
    c.password = Some(b"secret-password".to_vec().into());
    let p = &mut c.properties;
    p.session_expiry_interval = Some(3600);
    p.receive_maximum = Some(100);
    p.maximum_packet_size = Some(1 << 20);
    p.topic_alias_maximum = Some(16);
    p.request_problem_information = Some(true);
    p.user_properties.push(("region".into(), "eu-west".into()));
    let mut will = Will {
        topic: TopicName::new("clients/bench-client-0001/status").expect("valid topic"),
        payload: b"offline".to_vec().into(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(5);
    c.will = Some(will);
    Packet::Connect(Box::new(c))
}

fn subscribe_10(v: ProtocolVersion) -> Packet {
    let subscriptions = (0..10)
        .map(|i| {
            let filter = TopicFilter::new(format!("sensors/+/floor-{i}/#")).expect("valid");
            Subscription::new(filter, QoS::AtLeastOnce)
        })
        .collect();
    let mut s = Subscribe {
        packet_id: packet_id(7),
        subscriptions,
        properties: Default::default(),
    };
    if v == ProtocolVersion::V5 {
        s.properties.subscription_identifiers.push(12);
    }
    Packet::Subscribe(s)
}

fn bench_packet(c: &mut Criterion, name: &str, packet: &Packet, v: ProtocolVersion) {
    let mut bytes = Vec::new();
    packet
        .encode(v, &mut bytes)
        .expect("benchmark packets encode");
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));

    group.bench_function("encode", |b| {
        let mut buf = Vec::with_capacity(bytes.len());
        b.iter(|| {
            buf.clear();
            black_box(packet).encode(v, &mut buf).expect("encodes");
            black_box(buf.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| Packet::decode(black_box(&bytes), v, u32::MAX).expect("decodes"))
    });
    group.bench_function("decoder_stream", |b| {
        // The streaming Decoder, as a connection uses it (a CONNECT sets the version itself).
        let mut d = Decoder::with_version(v, 1 << 20);
        b.iter(|| {
            let mut input = black_box(&bytes[..]);
            d.decode(&mut input).expect("decodes")
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_packet(
        c,
        "publish_qos1_64B_v311",
        &publish(ProtocolVersion::V311),
        ProtocolVersion::V311,
    );
    bench_packet(
        c,
        "publish_qos1_64B_v5",
        &publish(ProtocolVersion::V5),
        ProtocolVersion::V5,
    );
    bench_packet(c, "connect_props_v5", &connect_v5(), ProtocolVersion::V5);
    bench_packet(
        c,
        "subscribe_10_filters_v311",
        &subscribe_10(ProtocolVersion::V311),
        ProtocolVersion::V311,
    );
    bench_packet(
        c,
        "subscribe_10_filters_v5",
        &subscribe_10(ProtocolVersion::V5),
        ProtocolVersion::V5,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);
