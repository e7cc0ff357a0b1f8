//! QoS 0 backpressure: queued rather than dropped, publishers paused over the high-water
//! mark and resumed at the low-water mark, a stuck subscriber's overflow dropped and counted.

use super::*;

/// A small window, so the channel's QoS 0 room is simple to count: capacity 1 048, of
/// which 24 are kept for QoS 1/2 and control packets, so 1 024 QoS 0 messages fit.
fn config(max_queued_messages: usize, pause_ms: u64) -> BrokerConfig {
    BrokerConfig {
        max_inflight: 4,
        receive_maximum: 4,
        max_queued_messages,
        max_publisher_pause_ms: pause_ms,
        ..Default::default()
    }
}

/// QoS 0 messages the channel of `config` holds.
const CHANNEL_QOS0: u32 = 1024;

/// The high-water mark of `config(100, _)`: a quarter of the queue (the low-water mark is
/// an eighth, 12).
const HIGH: u32 = 25;

/// Publishes numbered QoS 0 messages `range` to `t` from `conn`, one command each.
fn publish_numbered(w: &mut World, conn: &Conn, range: std::ops::Range<u32>) {
    for i in range {
        let mut p = Publish::new(
            TopicName::new("t").unwrap(),
            Bytes::copy_from_slice(&i.to_be_bytes()),
        );
        p.qos = QoS::AtMostOnce;
        w.packet(conn, Packet::Publish(p));
    }
}

fn numbers(ps: &[Publish]) -> Vec<u32> {
    ps.iter()
        .map(|p| u32::from_be_bytes(p.payload[..4].try_into().unwrap()))
        .collect()
}

/// The connection took its channel's items out; it tells the engine, as asked.
fn drained(w: &mut World, conn: &Conn) {
    assert!(
        conn.flow.take_drained_wanted(),
        "the engine did not ask to be told"
    );
    w.engine.handle(Command::Drained { conn: conn.id }, w.now);
    w.engine.flush(w.now);
}

/// A publisher P and a subscriber S of `t` at QoS 0.
fn pair(w: &mut World) -> (Conn, Conn) {
    let (p, _) = w.connect(V3, "P", true, None);
    let (mut s, _) = w.connect(V3, "S", true, None);
    w.subscribe(&mut s, "t", QoS::AtMostOnce);
    (p, s)
}

#[test]
fn qos0_beyond_the_channels_room_waits_in_the_queue_and_arrives_in_order_mqtt_4_6_0_6() {
    let mut w = world(config(10_000, 2000));
    let (p, mut s) = pair(&mut w);
    publish_numbered(&mut w, &p, 0..1500);
    // The channel is full of QoS 0; the rest waits in the session's queue, nothing dropped.
    assert_eq!(
        w.engine.session("S").unwrap().queue.len(),
        1500 - CHANNEL_QOS0 as usize
    );
    assert_eq!(w.engine.session("S").unwrap().stats.dropped, 0);
    assert!(
        !p.flow.is_paused(),
        "under the high-water mark nobody is paused"
    );
    let mut got = numbers(&s.publishes());
    drained(&mut w, &s);
    got.extend(numbers(&s.publishes()));
    assert_eq!(got, (0..1500).collect::<Vec<_>>());
    assert!(w.engine.session("S").unwrap().queue.is_empty());
    assert_eq!(w.engine.stats().dropped, 0);
}

#[test]
fn room_made_before_the_engine_asked_is_used_at_the_end_of_the_next_batch() {
    let mut w = world(config(10_000, 2000));
    let (p, mut s) = pair(&mut w);
    publish_numbered(&mut w, &p, 0..1100);
    // The connection empties its channel but never sends Drained (say it looked at the
    // flag just before the engine set it): the next batch sees the room itself.
    let mut got = numbers(&s.publishes());
    publish_numbered(&mut w, &p, 1100..1101);
    got.extend(numbers(&s.publishes()));
    assert_eq!(got, (0..1101).collect::<Vec<_>>());
}

#[test]
fn a_subscriber_over_its_high_water_mark_pauses_the_qos0_publisher_until_it_drains() {
    let mut w = world(config(100, 2000));
    let (p, mut s) = pair(&mut w);
    let (q, _) = w.connect(V3, "Q", true, None);
    publish_numbered(&mut w, &p, 0..(CHANNEL_QOS0 + HIGH));
    assert!(!p.flow.is_paused());
    publish_numbered(
        &mut w,
        &p,
        (CHANNEL_QOS0 + HIGH)..(CHANNEL_QOS0 + HIGH + 10),
    );
    assert!(
        p.flow.is_paused(),
        "the publisher is paused past the high-water mark"
    );
    assert!(
        !q.flow.is_paused(),
        "a connection that published nothing to S is not"
    );
    assert_eq!(w.engine.paused_connections(), 1);
    // The subscriber reads: its queue goes into the channel, under the low-water mark.
    let mut got = numbers(&s.publishes());
    drained(&mut w, &s);
    assert!(!p.flow.is_paused(), "resumed at the low-water mark");
    assert_eq!(w.engine.paused_connections(), 0);
    got.extend(numbers(&s.publishes()));
    assert_eq!(got, (0..(CHANNEL_QOS0 + HIGH + 10)).collect::<Vec<_>>());
    assert_eq!(w.engine.stats().dropped, 0);
}

#[test]
fn a_subscriber_stuck_past_max_publisher_pause_ms_frees_the_publishers_and_its_overflow_is_counted()
{
    let mut w = world(config(100, 1000));
    let (p, _stuck) = pair(&mut w);
    let (mut other, _) = w.connect(V3, "O", true, None);
    w.subscribe(&mut other, "t", QoS::AtMostOnce);
    // The other subscriber reads as it goes (the end of each batch sees its room).
    let filled = CHANNEL_QOS0 + HIGH + 10;
    let mut got = Vec::new();
    for i in 0..filled {
        publish_numbered(&mut w, &p, i..i + 1);
        got.extend(numbers(&other.publishes()));
    }
    assert!(p.flow.is_paused());
    w.advance(1);
    assert!(!p.flow.is_paused(), "the bound released the publisher");
    let queued = w.engine.session("S").unwrap().queue.len();
    // From now on, what would take S over its mark is dropped and counted on S.
    for i in filled..filled + 20 {
        publish_numbered(&mut w, &p, i..i + 1);
        got.extend(numbers(&other.publishes()));
        assert!(!p.flow.is_paused(), "a stuck subscriber pauses no one");
    }
    let s = w.engine.session("S").unwrap();
    assert_eq!(s.queue.len(), queued);
    assert_eq!(s.stats.dropped, 20);
    assert_eq!(w.engine.session("O").unwrap().stats.dropped, 0);
    assert_eq!(
        got,
        (0..filled + 20).collect::<Vec<_>>(),
        "the other subscriber got all"
    );
}

#[test]
fn with_max_publisher_pause_ms_0_nobody_is_paused_and_the_overflow_is_dropped_at_once() {
    let mut w = world(config(100, 0));
    let (p, _s) = pair(&mut w);
    publish_numbered(&mut w, &p, 0..(CHANNEL_QOS0 + HIGH + 10));
    assert!(!p.flow.is_paused());
    let s = w.engine.session("S").unwrap();
    assert_eq!(s.queue.len(), HIGH as usize);
    assert_eq!(s.stats.dropped, 10);
}

#[test]
fn a_client_is_never_paused_for_its_own_subscription() {
    let mut w = world(config(100, 2000));
    let (mut a, _) = w.connect(V3, "A", true, None);
    w.subscribe(&mut a, "t", QoS::AtMostOnce);
    publish_numbered(&mut w, &a, 0..(CHANNEL_QOS0 + HIGH + 10));
    // Its own reading (of PINGREQ, of PUBACKs) may be what it needs to drain.
    assert!(!a.flow.is_paused());
    assert_eq!(w.engine.session("A").unwrap().stats.dropped, 0);
}

#[test]
fn a_congested_subscriber_that_leaves_resumes_its_publishers_and_counts_its_waiting_qos0() {
    let mut w = world(config(100, 2000));
    let (p, _) = w.connect(V3, "P", true, None);
    let (mut s, _) = w.connect(V3, "S", false, None);
    w.subscribe(&mut s, "t", QoS::AtMostOnce);
    publish_numbered(&mut w, &p, 0..(CHANNEL_QOS0 + HIGH + 10));
    assert!(p.flow.is_paused());
    w.close(&s);
    assert!(!p.flow.is_paused(), "its publishers resume when it goes");
    // A persistent session, but QoS 0 is not queued for offline sessions (`queue_qos0`):
    // what waited is dropped, and counted on it.
    let gone = w.engine.session("S").unwrap();
    assert_eq!(gone.queued_len(), 0);
    assert_eq!(gone.stats.dropped, u64::from(HIGH + 10));
}

#[test]
fn with_queue_qos0_the_waiting_qos0_of_a_leaving_subscriber_is_kept_for_its_return() {
    let mut w = world(BrokerConfig {
        queue_qos0: true,
        ..config(100, 2000)
    });
    let (p, _) = w.connect(V3, "P", true, None);
    let (mut s, _) = w.connect(V3, "S", false, None);
    w.subscribe(&mut s, "t", QoS::AtMostOnce);
    publish_numbered(&mut w, &p, 0..(CHANNEL_QOS0 + 10));
    let sent = numbers(&s.publishes());
    w.close(&s);
    assert_eq!(w.engine.session("S").unwrap().queued_len(), 10);
    let (mut s, _) = w.connect(V3, "S", false, None);
    let mut got = sent;
    got.extend(numbers(&s.publishes()));
    assert_eq!(got, (0..(CHANNEL_QOS0 + 10)).collect::<Vec<_>>());
}
