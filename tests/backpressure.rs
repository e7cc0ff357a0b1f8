//! QoS 0 under load, through real sockets: bursts towards a slow reader are held back at the
//! publishers' sockets instead of being dropped; a subscriber that stops reading is dropped
//! from (and counted) only after `max_publisher_pause_ms`, without stalling the others.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::hostile::http;
use e2e::protocol::{
    Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe, Subscription,
};
use e2e::{encode, filter, for_each_transport, topic, Bridge, RawClient, Read, Transport};

const V3: ProtocolVersion = ProtocolVersion::V311;

/// How long a reader waits for the next message before the test fails.
const STALL: Duration = Duration::from_secs(20);

/// A raw client connected as `id` (clean session) with `keep_alive` seconds.
async fn connect(bridge: &Bridge, t: Transport, id: &str, keep_alive: u16) -> RawClient {
    let mut raw = RawClient::open(&bridge.endpoint(t)).await;
    let mut c = Connect::new(V3, id, true);
    c.keep_alive = keep_alive;
    let ack = raw.connect(c).await;
    assert!(!ack.reason.is_error(), "{id}: {ack:?}");
    raw
}

async fn subscribe(raw: &mut RawClient, f: &str) {
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        subscriptions: vec![Subscription::new(filter(f), QoS::AtMostOnce)],
        properties: Properties::default(),
    }))
    .await;
    match raw.read_packet().await {
        Some(Packet::SubAck(ack)) => assert!(!ack.reasons[0].is_error(), "{ack:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Publishes `count` QoS 0 messages to `t/<index>`, `size` bytes each (the publisher's index
/// and the message's number first), `per_write` packets per write; then checks with a
/// PINGREQ that the connection is still open, and disconnects.
async fn publish_burst(mut raw: RawClient, index: u32, count: u32, size: usize, per_write: u32) {
    let name = topic(&format!("t/{index}"));
    let mut seq = 0;
    while seq < count {
        let mut bytes = Vec::new();
        for _ in 0..per_write.min(count - seq) {
            let mut payload = Vec::with_capacity(size);
            payload.extend_from_slice(&index.to_be_bytes());
            payload.extend_from_slice(&seq.to_be_bytes());
            payload.resize(size, 0);
            let p = Publish::new(name.clone(), payload);
            bytes.extend_from_slice(&encode(&Packet::Publish(p), V3));
            seq += 1;
        }
        raw.send_bytes(&bytes).await;
    }
    raw.send(Packet::PingReq).await;
    match raw.read_within(STALL).await {
        Read::Packet(Packet::PingResp) => {}
        other => panic!("publisher {index}: expected PINGRESP after its burst, got {other:?}"),
    }
    raw.send(Packet::Disconnect(Default::default())).await;
}

/// Reads QoS 0 messages until `expected` have come from each of `publishers`, checking that
/// each publisher's arrive in order, none missing [MQTT-4.6.0-6]; `pause_every` messages
/// it sleeps 1 ms (a reader slower than the publishers, that keeps up on average).
async fn read_all(raw: &mut RawClient, publishers: usize, expected: u32, pause_every: u32) {
    let mut next = vec![0u32; publishers];
    let mut total = 0u32;
    while next.iter().any(|&n| n < expected) {
        let p = match raw.read_within(STALL).await {
            Read::Packet(Packet::Publish(p)) => p,
            other => panic!("after {total} messages ({next:?} per publisher): {other:?}"),
        };
        let index = u32::from_be_bytes(p.payload[..4].try_into().unwrap()) as usize;
        let seq = u32::from_be_bytes(p.payload[4..8].try_into().unwrap());
        assert_eq!(
            seq, next[index],
            "publisher {index}: message {seq} came when {} was next",
            next[index]
        );
        next[index] += 1;
        total += 1;
        if pause_every > 0 && total.is_multiple_of(pause_every) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The session's `queue.dropped` from the API.
async fn dropped(bridge: &Bridge, client_id: &str) -> u64 {
    let authority = bridge
        .http_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let path = format!("/api/v1/sessions/{client_id}");
    let (status, body) = http(&authority, "GET", &path, Duration::from_secs(10)).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["queue"]["dropped"].as_u64().unwrap()
}

#[tokio::test]
async fn qos0_bursts_from_four_publishers_all_reach_a_reader_that_pauses_and_then_reads_slowly() {
    // The subscriber does not read for 3 s, then reads with short pauses: its queue goes
    // over its high-water mark and the publishers are paused (for longer than 1.5 × their
    // keep-alive of 1 s: a server that does not read must not time them out
    // [MQTT-3.1.2-24]); nothing is dropped, every publisher's messages arrive in order.
    for_each_transport(|t| async move {
        let bridge = Bridge::start_with_config(
            "[broker]\nengine_queue = 256\nmax_queued_messages = 1000\n\
             max_publisher_pause_ms = 60000\n",
        );
        let mut sub = connect(&bridge, t, "sub", 0).await;
        subscribe(&mut sub, "t/#").await;
        // 20 MB in all: more than the socket buffers can hold while "sub" does not read.
        let (publishers, count) = (4, 5_000);
        let mut tasks = Vec::new();
        for i in 0..publishers {
            let raw = connect(&bridge, t, &format!("pub-{i}"), 1).await;
            tasks.push(tokio::spawn(publish_burst(raw, i, count, 1024, 50)));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        read_all(&mut sub, publishers as usize, count, 500).await;
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(dropped(&bridge, "sub").await, 0, "{t}");
    })
    .await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_has_its_drops_counted_and_another_still_gets_everything() {
    // "stuck" never reads after SUBACK: after max_publisher_pause_ms its QoS 0 overflow is
    // dropped and counted on its session, and the publisher is no longer held back for it,
    // so "good", subscribed to the same topics, receives every message, in order.
    for_each_transport(|t| async move {
        let bridge = Bridge::start_with_config(
            "[broker]\nengine_queue = 256\nmax_queued_messages = 1000\n\
             max_publisher_pause_ms = 300\n",
        );
        let mut stuck = connect(&bridge, t, "stuck", 0).await;
        subscribe(&mut stuck, "t/#").await;
        let mut good = connect(&bridge, t, "good", 0).await;
        subscribe(&mut good, "t/#").await;
        // 20 MB: more than the socket buffers between the broker and "stuck" can hold.
        let count = 20_000;
        let publisher = connect(&bridge, t, "pub", 0).await;
        let task = tokio::spawn(publish_burst(publisher, 0, count, 1024, 50));
        read_all(&mut good, 1, count, 0).await;
        task.await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut lost = dropped(&bridge, "stuck").await;
        while lost == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lost = dropped(&bridge, "stuck").await;
        }
        assert!(lost > 0, "{t}: the stuck subscriber's drops are counted");
        assert_eq!(dropped(&bridge, "good").await, 0, "{t}");
        drop(stuck);
    })
    .await;
}

#[tokio::test]
async fn a_3_1_1_publisher_that_ignores_the_window_is_acknowledged_not_disconnected() {
    // MQTT.js and other 3.1.1 clients do not limit what they have in flight, and 3.1.1 has
    // no Receive Maximum to tell them one. A publisher sends 600 QoS 1 messages without
    // waiting, towards a subscriber that does not read for 2 s: at most `receive_maximum`
    // acknowledgements are held for it, the rest are sent at once; the publisher gets all
    // 600 and stays connected; the subscriber's queue limit holds, and it receives, in
    // order, every message not counted as dropped for it (5.0 closes with 0x93 instead
    // [MQTT-3.3.4-9]: tests/bad_input.rs).
    for_each_transport(|t| async move {
        let bridge = Bridge::start_with_config(
            "[broker]\nreceive_maximum = 16\nmax_queued_messages = 100\n",
        );
        let mut sub = connect(&bridge, t, "sub", 0).await;
        sub.send(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            subscriptions: vec![Subscription::new(filter("w/#"), QoS::AtLeastOnce)],
            properties: Properties::default(),
        }))
        .await;
        assert!(matches!(sub.read_packet().await, Some(Packet::SubAck(_))));
        let mut publisher = connect(&bridge, t, "pub", 0).await;
        let count: u16 = 600;
        let mut bytes = Vec::new();
        for i in 1..=count {
            let mut p = Publish::new(topic("w/x"), i.to_be_bytes().to_vec());
            p.qos = QoS::AtLeastOnce;
            p.packet_id = PacketId::new(i);
            bytes.extend_from_slice(&encode(&Packet::Publish(p), V3));
        }
        publisher.send_bytes(&bytes).await;
        let mut acked = std::collections::HashSet::new();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut got = Vec::new();
            loop {
                match sub.read_within(Duration::from_secs(3)).await {
                    Read::Packet(Packet::Publish(p)) => {
                        got.push(u16::from_be_bytes(p.payload[..2].try_into().unwrap()));
                        let id = p.packet_id.unwrap();
                        sub.send(Packet::PubAck(e2e::protocol::PubResp::new(id)))
                            .await;
                    }
                    Read::Nothing => return (got, sub),
                    other => panic!("subscriber: {other:?} after {} messages", got.len()),
                }
            }
        });
        while acked.len() < count as usize {
            match publisher.read_within(STALL).await {
                Read::Packet(Packet::PubAck(a)) => assert!(acked.insert(a.packet_id.get())),
                other => panic!("publisher, {} acknowledged: {other:?}", acked.len()),
            }
        }
        // The subscriber stays connected (clean session) until its drops are read.
        let (got, _sub) = reader.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{t}: in order, no duplicate"
        );
        let lost = dropped(&bridge, "sub").await;
        assert_eq!(
            got.len() as u64 + lost,
            u64::from(count),
            "{t}: every message received or counted"
        );
        assert!(
            got.len() >= 100,
            "{t}: the queue's worth at least arrives: {}",
            got.len()
        );
        publisher.send(Packet::PingReq).await;
        assert!(
            matches!(
                publisher.read_within(STALL).await,
                Read::Packet(Packet::PingResp)
            ),
            "{t}"
        );
    })
    .await;
}
