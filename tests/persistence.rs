//! Persistence: sessions, their queued and in-flight messages, their expiry and the retained
//! messages survive a graceful restart and a `kill -9` of the bridge, and a data directory
//! the bridge cannot use stops it at start without being touched.
//!
//! Every test runs the real binary on a data directory of its own ([`TempDir`]) and starts it
//! again on the same directory ([`Bridge::restart`]); the clients reconnect to the new ports.
//! The spec's session state (3.1.1 and 5.0 section 4.1) is what must come back: the
//! subscriptions, the QoS 1 and 2 messages queued or not yet acknowledged, the QoS 2 packet
//! ids awaiting PUBREL, and the expiry deadline.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::protocol::{
    ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish, QoS,
    Subscribe, Subscription,
};
use e2e::{
    clean, encode, filter, for_each_version, options, persistent, text, topic, version_name,
    Bridge, Endpoint, RawClient, Read, TempDir, TestClient, Transport, VERSIONS,
};

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
const TCP: Transport = Transport::Tcp;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// A CONNECT for a session that outlives its connection: clean session 0, and (5.0) a
/// Session Expiry Interval of 300 s.
fn persistent_connect(v: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(v, id, false);
    if v == V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

/// Subscribes a raw client (packet id 1) and checks the SUBACK.
async fn raw_subscribe(raw: &mut RawClient, f: &str, qos: QoS) {
    raw.send(Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: vec![Subscription::new(filter(f), qos)],
        properties: Properties::default(),
    }))
    .await;
    match raw.read_packet().await {
        Some(Packet::SubAck(ack)) => assert!(!ack.reasons[0].is_error(), "{ack:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// The next packet of a raw client, which must be there.
async fn next_packet(raw: &mut RawClient, who: &str) -> Packet {
    match raw.read_packet().await {
        Some(p) => p,
        None => panic!("{who}: the broker closed the connection"),
    }
}

fn publish_packet(t: &str, payload: &str, qos: QoS, id: u16, dup: bool) -> Packet {
    let mut p = Publish::new(topic(t), payload.to_owned());
    p.qos = qos;
    p.packet_id = Some(pid(id));
    p.dup = dup;
    Packet::Publish(p)
}

fn ack_of(id: PacketId) -> PubResp {
    PubResp::new(id)
}

/// Every message a [`TestClient`] receives until `quiet` passes without one.
async fn drain(client: &mut TestClient, quiet: Duration) -> Vec<Publish> {
    let mut out = Vec::new();
    while let Some(p) = client.try_recv_within(quiet).await {
        out.push(p);
    }
    out
}

// ----- restart -------------------------------------------------------------------------------

#[tokio::test]
async fn a_graceful_restart_keeps_persistent_sessions_with_queued_and_in_flight_messages_both_ways()
{
    for_each_version(|v| async move {
        let dir = TempDir::new("persist-restart");
        let mut bridge = Bridge::start_with_data(dir.path(), "");

        // (a) A persistent subscriber goes offline; QoS 1 and 2 messages are queued for it
        // [MQTT-3.1.2-5] (3.1.1), [MQTT-3.1.2-23] (5.0).
        let mut queued_sub = bridge.client(TCP, persistent(v, "queued-sub")).await;
        queued_sub.subscribe("queued/#", QoS::ExactlyOnce).await;
        queued_sub.disconnect().await;

        // (b) A persistent subscriber that receives but withholds its acknowledgements.
        let mut inflight_sub = bridge.raw(TCP).await;
        let ack0 = inflight_sub
            .connect(persistent_connect(v, "inflight-sub"))
            .await;
        assert!(!ack0.session_present);
        raw_subscribe(&mut inflight_sub, "inflight/#", QoS::ExactlyOnce).await;

        let mut publisher = bridge.client(TCP, clean(v, "publisher")).await;
        let queued = [
            ("queued/a", "q1", QoS::AtLeastOnce),
            ("queued/b", "q2", QoS::ExactlyOnce),
            ("queued/a", "q3", QoS::AtLeastOnce),
            ("queued/b", "q4", QoS::ExactlyOnce),
        ];
        for (t, payload, qos) in queued {
            let reason = publisher.publish(t, payload, qos, false).await;
            assert!(!reason.is_error(), "{payload}: {reason:?}");
        }
        let inflight = [
            ("f1", QoS::AtLeastOnce), // PUBACK withheld
            ("f2", QoS::ExactlyOnce), // PUBREC withheld
            ("f3", QoS::ExactlyOnce), // PUBREC sent, PUBCOMP withheld
        ];
        for (payload, qos) in inflight {
            let reason = publisher.publish("inflight/x", payload, qos, false).await;
            assert!(!reason.is_error(), "{payload}: {reason:?}");
        }
        let mut ids = Vec::new();
        for (payload, qos) in inflight {
            match next_packet(&mut inflight_sub, "inflight-sub").await {
                Packet::Publish(p) => {
                    assert_eq!(text(&p), payload, "in the order published [MQTT-4.6.0-6]");
                    assert_eq!(p.qos, qos);
                    assert!(!p.dup, "first delivery: DUP 0 [MQTT-3.3.1-1]");
                    ids.push(p.packet_id.unwrap());
                }
                other => panic!("inflight-sub: expected PUBLISH {payload}, got {other:?}"),
            }
        }
        let (f1, f2, f3) = (ids[0], ids[1], ids[2]);
        inflight_sub.send(Packet::PubRec(ack_of(f3))).await;
        match next_packet(&mut inflight_sub, "inflight-sub").await {
            Packet::PubRel(r) => assert_eq!(r.packet_id, f3),
            other => panic!("inflight-sub: expected PUBREL for f3, got {other:?}"),
        }
        publisher.disconnect().await;

        // (c) A publisher's QoS 2 messages the broker got and answered with PUBREC: "in1"
        // whose PUBREL is still to come, and "in2" whose PUBREC the publisher will act as if
        // it had lost (it resends the PUBLISH).
        let mut inbound = bridge.raw(TCP).await;
        inbound.connect(persistent_connect(v, "inbound-pub")).await;
        for (id, payload) in [(7, "in1"), (8, "in2")] {
            inbound
                .send(publish_packet(
                    "queued/in",
                    payload,
                    QoS::ExactlyOnce,
                    id,
                    false,
                ))
                .await;
            match next_packet(&mut inbound, "inbound-pub").await {
                Packet::PubRec(r) => assert_eq!(r.packet_id, pid(id)),
                other => panic!("inbound-pub: expected PUBREC {id}, got {other:?}"),
            }
        }
        // The publisher loses its network; the in-flight subscriber is still connected
        // when the bridge stops.
        inbound.drop_connection();

        let status = bridge.stop();
        assert!(
            status.success(),
            "the bridge exits 0 on SIGTERM: {status:?}"
        );
        drop(inflight_sub);
        bridge.restart();

        // The publisher comes back: its session is there [MQTT-3.2.2-2] (3.1.1),
        // [MQTT-3.2.2-3] (5.0), and so are the packet ids awaiting PUBREL.
        let mut inbound = bridge.raw(TCP).await;
        let ack = inbound.connect(persistent_connect(v, "inbound-pub")).await;
        assert!(ack.session_present, "inbound-pub: session present = 1");
        // A resent PUBLISH of an id awaiting PUBREL is acknowledged again and not delivered
        // again [MQTT-4.3.3-2] (3.1.1), [MQTT-4.3.3-10] (5.0).
        inbound
            .send(publish_packet(
                "queued/in",
                "in2",
                QoS::ExactlyOnce,
                8,
                true,
            ))
            .await;
        match next_packet(&mut inbound, "inbound-pub").await {
            Packet::PubRec(r) => assert_eq!(r.packet_id, pid(8)),
            other => panic!("inbound-pub: expected PUBREC 8 for the resent PUBLISH, got {other:?}"),
        }
        // PUBREL after the restart is answered with PUBCOMP [MQTT-4.4.0-1], [MQTT-4.3.3-2]
        // (3.1.1), [MQTT-4.3.3-11] (5.0).
        for id in [7, 8] {
            inbound.send(Packet::PubRel(ack_of(pid(id)))).await;
            match next_packet(&mut inbound, "inbound-pub").await {
                Packet::PubComp(r) => assert_eq!(r.packet_id, pid(id)),
                other => panic!("inbound-pub: expected PUBCOMP {id}, got {other:?}"),
            }
        }

        // The queued messages arrive in order, each once, as first deliveries. The spec orders
        // them per topic and QoS ([MQTT-4.6.0-5] / [MQTT-4.6.0-6]); the broker keeps one queue
        // per session, so they come back in the order they were published in.
        let (mut queued_sub, ack) = bridge
            .connect(TCP, persistent(v, "queued-sub"))
            .await
            .unwrap();
        assert!(ack.session_present, "queued-sub: session present = 1");
        let got = drain(&mut queued_sub, Duration::from_millis(700)).await;
        let payloads: Vec<String> = got.iter().map(text).collect();
        let in_order: Vec<&str> = payloads
            .iter()
            .map(String::as_str)
            .filter(|p| p.starts_with('q'))
            .collect();
        assert_eq!(
            in_order,
            ["q1", "q2", "q3", "q4"],
            "queued messages in the order published; all received: {payloads:?}"
        );
        for inbound_payload in ["in1", "in2"] {
            assert_eq!(
                payloads.iter().filter(|p| *p == inbound_payload).count(),
                1,
                "the publisher's QoS 2 message {inbound_payload} is delivered exactly once \
                 [MQTT-4.3.3-2] / [MQTT-4.3.3-10]; all received: {payloads:?}"
            );
        }
        assert_eq!(payloads.len(), 6, "nothing else: {payloads:?}");
        for p in &got {
            let expected = match text(p).as_str() {
                "q1" | "q3" => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            assert_eq!(
                p.qos,
                expected,
                "{}: the QoS it was published with",
                text(p)
            );
            assert!(
                !p.dup,
                "{}: never sent before: DUP 0 [MQTT-3.3.1-1]",
                text(p)
            );
        }

        // The in-flight messages are resent with their packet ids and DUP 1, and the PUBREL
        // of the one whose PUBREC came is resent [MQTT-4.4.0-1], [MQTT-3.3.1-1].
        let mut inflight_sub = bridge.raw(TCP).await;
        let ack = inflight_sub
            .connect(persistent_connect(v, "inflight-sub"))
            .await;
        assert!(ack.session_present, "inflight-sub: session present = 1");
        let mut resent = Vec::new();
        let mut pubrels = Vec::new();
        for _ in 0..3 {
            match next_packet(&mut inflight_sub, "inflight-sub").await {
                Packet::Publish(p) => resent.push(p),
                Packet::PubRel(r) => pubrels.push(r.packet_id),
                other => panic!("inflight-sub: expected the resends, got {other:?}"),
            }
        }
        assert_eq!(
            pubrels,
            [f3],
            "PUBREL resent for f3, and f3 not resent as PUBLISH"
        );
        let resent_view: Vec<(String, QoS, Option<PacketId>, bool)> = resent
            .iter()
            .map(|p| (text(p), p.qos, p.packet_id, p.dup))
            .collect();
        assert_eq!(
            resent_view,
            [
                ("f1".to_owned(), QoS::AtLeastOnce, Some(f1), true),
                ("f2".to_owned(), QoS::ExactlyOnce, Some(f2), true),
            ],
            "resent in the original order [MQTT-4.6.0-1], original ids, DUP 1"
        );
        inflight_sub.send(Packet::PubAck(ack_of(f1))).await;
        inflight_sub.send(Packet::PubRec(ack_of(f2))).await;
        match next_packet(&mut inflight_sub, "inflight-sub").await {
            Packet::PubRel(r) => assert_eq!(r.packet_id, f2),
            other => panic!("inflight-sub: expected PUBREL for f2, got {other:?}"),
        }
        inflight_sub.send(Packet::PubComp(ack_of(f2))).await;
        inflight_sub.send(Packet::PubComp(ack_of(f3))).await;
        inflight_sub
            .expect_silence(Duration::from_millis(300))
            .await;

        // Once more: what was acknowledged after the restart stays acknowledged, nothing
        // comes a second time.
        queued_sub.disconnect().await;
        inflight_sub.drop_connection();
        inbound.drop_connection();
        assert!(bridge.stop().success());
        bridge.restart();
        let (mut queued_sub, ack) = bridge
            .connect(TCP, persistent(v, "queued-sub"))
            .await
            .unwrap();
        assert!(ack.session_present);
        queued_sub
            .expect_no_message(Duration::from_millis(300))
            .await;
        let mut inflight_sub = bridge.raw(TCP).await;
        let ack = inflight_sub
            .connect(persistent_connect(v, "inflight-sub"))
            .await;
        assert!(ack.session_present);
        inflight_sub
            .expect_silence(Duration::from_millis(300))
            .await;
        // The session still routes: its subscription came back too.
        let mut publisher = bridge.client(TCP, clean(v, "publisher")).await;
        publisher
            .publish("queued/z", "after", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(text(&queued_sub.recv().await), "after");
    })
    .await;
}

#[tokio::test]
async fn a_client_id_assigned_after_a_restart_never_hands_over_a_stored_session() {
    // [MQTT-3.2.2-16]: the Assigned Client Identifier is one "not used by any other Session
    // currently in the Server". Ids were once `auto-<clock>-<counter>`, the counter starting
    // again with the process: after a restart a new client was handed a stranger's stored
    // session (subscriptions and queue). Now 128 random bits, checked against the sessions.
    let dir = TempDir::new("assigned-restart");
    let mut bridge = Bridge::start_with_data(dir.path(), "");
    let mut kept = HashSet::new();
    for _ in 0..5 {
        let mut o = clean(V5, "");
        o.session_expiry_interval = Some(3600);
        let (mut c, ack) = bridge.connect(TCP, o).await.unwrap();
        kept.insert(ack.properties.assigned_client_identifier.clone().unwrap());
        c.subscribe("victim/inbox", QoS::AtLeastOnce).await;
        c.disconnect().await;
    }
    let mut publisher = bridge.client(TCP, clean(V5, "publisher")).await;
    publisher
        .publish("victim/inbox", "private", QoS::AtLeastOnce, false)
        .await;
    publisher.disconnect().await;
    bridge.stop();
    bridge.restart();
    for _ in 0..5 {
        let mut o = clean(V5, "");
        o.clean_start = false;
        o.session_expiry_interval = Some(3600);
        let (c, ack) = bridge.connect(TCP, o).await.unwrap();
        let id = ack.properties.assigned_client_identifier.clone().unwrap();
        assert!(!ack.session_present, "{id}: handed an existing session");
        assert!(!kept.contains(&id), "{id} names a stored session");
        let bits = id.strip_prefix("auto-").map_or(0, |hex| hex.len() * 4);
        assert!(bits >= 96, "{id}: fewer than 96 random bits");
        c.disconnect().await;
    }
}

// ----- crash ---------------------------------------------------------------------------------

/// A small, seedable random number generator (splitmix64): enough to pick kill moments.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// How many QoS 1/2 PUBLISHes a crash-test publisher keeps unacknowledged.
const WINDOW: usize = 8;

/// The topic of the load.
const LOAD_TOPIC: &str = "load/x";

/// Where an unacknowledged outgoing message of a publisher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent; PUBACK / PUBREC due.
    Sent,
    /// PUBREC received, PUBREL sent; PUBCOMP due.
    Released,
}

/// A publisher's side of the protocol, kept across its connections (its session state).
#[derive(Debug)]
struct Publisher {
    id: &'static str,
    version: ProtocolVersion,
    qos: QoS,
    /// Whether the broker has a session for it (it got a CONNACK once).
    has_session: bool,
    next: u64,
    next_pid: u16,
    /// In the order first sent.
    unacked: VecDeque<(PacketId, String, Stage)>,
    /// Every payload published.
    sent: Vec<String>,
    /// Payloads whose PUBACK (QoS 1) / PUBREC (QoS 2) came.
    acked: HashSet<String>,
}

impl Publisher {
    fn new(id: &'static str, version: ProtocolVersion, qos: QoS) -> Publisher {
        Publisher {
            id,
            version,
            qos,
            has_session: false,
            next: 0,
            next_pid: 0,
            unacked: VecDeque::new(),
            sent: Vec::new(),
            acked: HashSet::new(),
        }
    }

    fn alloc_pid(&mut self) -> PacketId {
        loop {
            self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
            let id = pid(self.next_pid);
            if !self.unacked.iter().any(|(p, _, _)| *p == id) {
                return id;
            }
        }
    }

    fn position(&self, id: PacketId, what: &str) -> usize {
        match self.unacked.iter().position(|(p, _, _)| *p == id) {
            Some(i) => i,
            None => panic!("{}: {what} for packet id {id} not in flight", self.id),
        }
    }
}

/// What a crash-test client does on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Publish (or take messages) until the connection dies under it.
    UntilKilled,
    /// Finish: resend what is unacknowledged (publisher) / take everything expected
    /// (subscriber), then disconnect. The connection must not die.
    Finish,
}

/// Opens a raw connection and sends CONNECT; `None` if the bridge died first (only allowed
/// when `mode` is [`Mode::UntilKilled`]).
async fn crash_connect(
    endpoint: &Endpoint,
    version: ProtocolVersion,
    id: &str,
    mode: Mode,
) -> Option<(RawClient, ConnAck)> {
    let mut raw = RawClient::open(endpoint).await;
    raw.set_version(version);
    let connect = Packet::Connect(Box::new(persistent_connect(version, id)));
    if raw.try_send_bytes(&encode(&connect, version)).await {
        match raw.read_within(Duration::from_secs(10)).await {
            Read::Packet(Packet::ConnAck(ack)) => {
                assert!(!ack.reason.is_error(), "{id}: refused: {ack:?}");
                return Some((raw, ack));
            }
            Read::Closed => {}
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
    }
    assert_eq!(mode, Mode::UntilKilled, "{id}: the connection failed");
    None
}

async fn send_or_closed(raw: &mut RawClient, version: ProtocolVersion, packet: Packet) -> bool {
    raw.try_send_bytes(&encode(&packet, version)).await
}

/// Runs a publisher on one connection: resends what is unacknowledged, then publishes new
/// messages as fast as the acknowledgements allow (`UntilKilled`) or waits for the last
/// acknowledgements (`Finish`).
async fn run_publisher(mut p: Publisher, endpoint: Endpoint, mode: Mode) -> Publisher {
    let v = p.version;
    let Some((mut raw, ack)) = crash_connect(&endpoint, v, p.id, mode).await else {
        return p;
    };
    assert_eq!(
        ack.session_present, p.has_session,
        "{}: session present = 1 once the broker acknowledged a CONNECT with clean session 0 \
         [MQTT-3.2.2-2] / [MQTT-3.2.2-3]",
        p.id
    );
    p.has_session = true;
    // [MQTT-4.4.0-1]: unacknowledged PUBLISHes (DUP 1) and PUBRELs, in their order.
    let resends: Vec<Packet> = p
        .unacked
        .iter()
        .map(|(id, payload, stage)| match stage {
            Stage::Sent => publish_packet(LOAD_TOPIC, payload, p.qos, id.get(), true),
            Stage::Released => Packet::PubRel(ack_of(*id)),
        })
        .collect();
    for packet in resends {
        if !send_or_closed(&mut raw, v, packet).await {
            assert_eq!(mode, Mode::UntilKilled, "{}: write failed", p.id);
            return p;
        }
    }
    loop {
        while mode == Mode::UntilKilled && p.unacked.len() < WINDOW {
            let id = p.alloc_pid();
            let payload = format!("{}-{}", p.id, p.next);
            p.next += 1;
            p.sent.push(payload.clone());
            p.unacked.push_back((id, payload.clone(), Stage::Sent));
            let packet = publish_packet(LOAD_TOPIC, &payload, p.qos, id.get(), false);
            if !send_or_closed(&mut raw, v, packet).await {
                return p;
            }
        }
        if mode == Mode::Finish && p.unacked.is_empty() {
            let _ = send_or_closed(
                &mut raw,
                v,
                Packet::Disconnect(e2e::protocol::Disconnect::new(
                    e2e::protocol::ReasonCode::Success,
                )),
            )
            .await;
            return p;
        }
        match raw.read_within(Duration::from_secs(10)).await {
            Read::Packet(Packet::PubAck(r)) => {
                assert_eq!(p.qos, QoS::AtLeastOnce, "{}: PUBACK at QoS 2", p.id);
                assert!(!r.reason.is_error(), "{}: {r:?}", p.id);
                let i = p.position(r.packet_id, "PUBACK");
                let (_, payload, _) = p.unacked.remove(i).unwrap();
                p.acked.insert(payload);
            }
            Read::Packet(Packet::PubRec(r)) => {
                assert_eq!(p.qos, QoS::ExactlyOnce, "{}: PUBREC at QoS 1", p.id);
                assert!(!r.reason.is_error(), "{}: {r:?}", p.id);
                let i = p.position(r.packet_id, "PUBREC");
                let entry = &mut p.unacked[i];
                entry.2 = Stage::Released;
                p.acked.insert(entry.1.clone());
                if !send_or_closed(&mut raw, v, Packet::PubRel(ack_of(r.packet_id))).await {
                    assert_eq!(mode, Mode::UntilKilled, "{}: write failed", p.id);
                    return p;
                }
            }
            Read::Packet(Packet::PubComp(r)) => {
                let i = p.position(r.packet_id, "PUBCOMP");
                assert_eq!(p.unacked[i].2, Stage::Released, "{}: early PUBCOMP", p.id);
                p.unacked.remove(i);
            }
            Read::Packet(Packet::Disconnect(_)) => {}
            Read::Packet(other) => panic!("{}: unexpected {other:?}", p.id),
            Read::Closed => {
                assert_eq!(mode, Mode::UntilKilled, "{}: connection closed", p.id);
                return p;
            }
            Read::Nothing => panic!("{}: no acknowledgement within 10 s", p.id),
        }
    }
}

/// A subscriber's side of the protocol, kept across its connections.
#[derive(Debug)]
struct Subscriber {
    id: &'static str,
    version: ProtocolVersion,
    /// How many times each payload was delivered to the application: a QoS 2 duplicate
    /// (a PUBLISH whose packet id awaits PUBREL) is not a delivery [MQTT-4.3.3-2] (3.1.1),
    /// [MQTT-4.3.3-10] (5.0).
    delivered: HashMap<String, u32>,
    /// QoS 2 packet ids answered with PUBREC, awaiting PUBREL.
    awaiting_rel: HashSet<PacketId>,
}

impl Subscriber {
    fn new(id: &'static str, version: ProtocolVersion) -> Subscriber {
        Subscriber {
            id,
            version,
            delivered: HashMap::new(),
            awaiting_rel: HashSet::new(),
        }
    }
}

/// Runs a subscriber on one connection, acknowledging everything (a little slowly), until
/// the connection dies (`UntilKilled`) or every payload of `expected` came and then nothing
/// for a while (`Finish`).
async fn run_subscriber(
    mut s: Subscriber,
    endpoint: Endpoint,
    mode: Mode,
    expected: HashSet<String>,
) -> Subscriber {
    let v = s.version;
    let Some((mut raw, ack)) = crash_connect(&endpoint, v, s.id, mode).await else {
        return s;
    };
    assert!(ack.session_present, "{}: session present = 1", s.id);
    let mut handled = 0u64;
    let mut missing = expected
        .iter()
        .filter(|p| !s.delivered.contains_key(*p))
        .count();
    loop {
        let wait = if mode == Mode::Finish && missing == 0 {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        let reply = match raw.read_within(wait).await {
            Read::Packet(Packet::Publish(p)) => {
                let id = p.packet_id.expect("QoS 1/2");
                let payload = text(&p);
                let was_missing =
                    !s.delivered.contains_key(&payload) && expected.contains(&payload);
                let reply = match p.qos {
                    QoS::AtLeastOnce => {
                        *s.delivered.entry(payload.clone()).or_default() += 1;
                        Packet::PubAck(ack_of(id))
                    }
                    QoS::ExactlyOnce => {
                        if s.awaiting_rel.insert(id) {
                            *s.delivered.entry(payload.clone()).or_default() += 1;
                        }
                        Packet::PubRec(ack_of(id))
                    }
                    QoS::AtMostOnce => panic!("{}: QoS 0 for {payload}", s.id),
                };
                if was_missing && s.delivered.contains_key(&payload) {
                    missing -= 1;
                }
                reply
            }
            Read::Packet(Packet::PubRel(r)) => {
                s.awaiting_rel.remove(&r.packet_id);
                Packet::PubComp(ack_of(r.packet_id))
            }
            Read::Packet(Packet::Disconnect(_)) => continue,
            Read::Packet(other) => panic!("{}: unexpected {other:?}", s.id),
            Read::Closed => {
                assert_eq!(mode, Mode::UntilKilled, "{}: connection closed", s.id);
                return s;
            }
            Read::Nothing if mode == Mode::Finish && missing == 0 => {
                raw.drop_connection();
                return s;
            }
            Read::Nothing => panic!(
                "{}: {missing} expected messages missing, nothing came within {wait:?}",
                s.id
            ),
        };
        if !send_or_closed(&mut raw, v, reply).await {
            assert_eq!(mode, Mode::UntilKilled, "{}: write failed", s.id);
            return s;
        }
        handled += 1;
        if mode == Mode::UntilKilled && handled.is_multiple_of(16) {
            // A slow consumer: messages pile up in flight and in its queue.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// How many times the bridge is killed in the crash test.
const KILLS: usize = 5;

#[tokio::test]
async fn every_message_acknowledged_before_a_kill_9_is_delivered_after_the_restart_and_qos_2_only_once(
) {
    // [MQTT-4.3.2-2] / [MQTT-4.3.3-2] (3.1.1): the PUBACK / PUBREC means the broker owns the
    // message; [MQTT-4.1.0-1]: session state is kept for the whole session; [MQTT-4.4.0-1]:
    // both sides resend on reconnection; [MQTT-4.3.3-10] (5.0): no QoS 2 duplicates.
    let seed = std::env::var("E2E_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed: {seed} (E2E_CRASH_SEED={seed} repeats the kill moments)");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let dir = TempDir::new("persist-crash");
    let mut bridge = Bridge::start_with_data(
        dir.path(),
        "[broker]\ndurability = \"always\"\nmax_queued_messages = 1000000\n\
         max_queued_bytes = 1000000000\n",
    );
    // Two persistent subscribers: a 3.1.1 one offline all along (everything is queued in the
    // store) and a 5.0 one online every other round (messages in flight at the kill).
    let offline_sub = Subscriber::new("sub-offline", V311);
    let mut online_sub = Subscriber::new("sub-online", V5);
    for s in [&offline_sub, &online_sub] {
        let mut raw = bridge.raw(TCP).await;
        raw.connect(persistent_connect(s.version, s.id)).await;
        raw_subscribe(&mut raw, "load/#", QoS::ExactlyOnce).await;
        raw.send(Packet::Disconnect(e2e::protocol::Disconnect::new(
            e2e::protocol::ReasonCode::Success,
        )))
        .await;
        raw.expect_closed_within(Duration::from_secs(2)).await;
    }
    let mut pub1 = Publisher::new("pub-qos1", V311, QoS::AtLeastOnce);
    let mut pub2 = Publisher::new("pub-qos2", V5, QoS::ExactlyOnce);
    let mut acked_before_a_kill: HashSet<String> = HashSet::new();

    for round in 0..KILLS {
        if round > 0 {
            bridge.restart();
        }
        let endpoint = bridge.endpoint(TCP);
        let online = (round % 2 == 1).then(|| {
            let s = std::mem::replace(&mut online_sub, Subscriber::new("sub-online", V5));
            tokio::spawn(run_subscriber(
                s,
                endpoint.clone(),
                Mode::UntilKilled,
                HashSet::new(),
            ))
        });
        let t1 = tokio::spawn(run_publisher(
            std::mem::replace(
                &mut pub1,
                Publisher::new("pub-qos1", V311, QoS::AtLeastOnce),
            ),
            endpoint.clone(),
            Mode::UntilKilled,
        ));
        let t2 = tokio::spawn(run_publisher(
            std::mem::replace(&mut pub2, Publisher::new("pub-qos2", V5, QoS::ExactlyOnce)),
            endpoint.clone(),
            Mode::UntilKilled,
        ));
        let delay = rng.range(100, 800);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        bridge.kill9();
        pub1 = t1.await.unwrap();
        pub2 = t2.await.unwrap();
        if let Some(t) = online {
            online_sub = t.await.unwrap();
        }
        acked_before_a_kill.extend(pub1.acked.iter().cloned());
        acked_before_a_kill.extend(pub2.acked.iter().cloned());
        println!(
            "kill {} after {delay} ms: {} published, {} acknowledged so far",
            round + 1,
            pub1.sent.len() + pub2.sent.len(),
            acked_before_a_kill.len()
        );
    }

    // The last start: the publishers finish what is unacknowledged, the subscribers drain.
    bridge.restart();
    let endpoint = bridge.endpoint(TCP);
    let t1 = tokio::spawn(run_publisher(pub1, endpoint.clone(), Mode::Finish));
    let t2 = tokio::spawn(run_publisher(pub2, endpoint.clone(), Mode::Finish));
    let (pub1, pub2) = (t1.await.unwrap(), t2.await.unwrap());
    let all: HashSet<String> = pub1.sent.iter().chain(&pub2.sent).cloned().collect();
    assert!(pub1.unacked.is_empty() && pub2.unacked.is_empty());
    let qos2: HashSet<&String> = pub2.sent.iter().collect();
    let subs = [
        tokio::spawn(run_subscriber(
            offline_sub,
            endpoint.clone(),
            Mode::Finish,
            all.clone(),
        )),
        tokio::spawn(run_subscriber(
            online_sub,
            endpoint.clone(),
            Mode::Finish,
            all.clone(),
        )),
    ];
    for t in subs {
        let s = t.await.unwrap();
        let lost: Vec<&String> = acked_before_a_kill
            .iter()
            .filter(|p| !s.delivered.contains_key(*p))
            .take(10)
            .collect();
        assert!(
            lost.is_empty(),
            "{}: acknowledged before a kill but never delivered (seed {seed}): {lost:?}",
            s.id
        );
        let twice: Vec<(&String, &u32)> = s
            .delivered
            .iter()
            .filter(|(p, n)| qos2.contains(p) && **n > 1)
            .take(10)
            .collect();
        assert!(
            twice.is_empty(),
            "{}: QoS 2 messages delivered more than once (seed {seed}): {twice:?}",
            s.id
        );
        let unknown: Vec<&String> = s.delivered.keys().filter(|p| !all.contains(*p)).collect();
        assert!(unknown.is_empty(), "{}: never published: {unknown:?}", s.id);
        println!(
            "{}: {} distinct messages delivered, {} of them QoS 1 duplicates",
            s.id,
            s.delivered.len(),
            s.delivered.values().filter(|n| **n > 1).count()
        );
    }
    println!(
        "{} messages, {KILLS} kills, {:?}",
        all.len(),
        started.elapsed()
    );
}

// ----- expiry ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_session_expiry_deadline_is_kept_across_a_restart_and_runs_while_the_bridge_is_down() {
    // 5.0 [MQTT-3.1.2-23]: the session is kept for its Session Expiry Interval after the
    // connection closes, and no longer (4.1: the session ends when the interval has passed);
    // [MQTT-3.2.2-3]: session present says which.
    let dir = TempDir::new("persist-expiry");
    let mut bridge = Bridge::start_with_data(dir.path(), "");
    let first_connect = Instant::now();
    for (id, expiry) in [("exp-2", 2), ("exp-4", 4), ("exp-8", 8), ("exp-30", 30)] {
        let mut o = options(V5, id, false);
        o.session_expiry_interval = Some(expiry);
        let mut c = bridge.client(TCP, o).await;
        c.subscribe(&format!("expiry/{id}"), QoS::AtLeastOnce).await;
        c.disconnect().await;
    }
    // Every expiry clock started between `first_connect` and `disconnected`.
    let disconnected = Instant::now();
    let mut publisher = bridge.client(TCP, clean(V5, "publisher")).await;
    publisher
        .publish("expiry/exp-30", "kept", QoS::AtLeastOnce, false)
        .await;
    publisher.disconnect().await;

    tokio::time::sleep_until((disconnected + Duration::from_secs(1)).into()).await;
    assert!(bridge.stop().success());
    // Down from t ≈ 1 s to t ≈ 3 s: "exp-2" expires meanwhile.
    tokio::time::sleep_until((disconnected + Duration::from_secs(3)).into()).await;
    bridge.restart();

    let connect = |id: &'static str, expiry: u32| {
        let mut o = options(V5, id, false);
        o.session_expiry_interval = Some(expiry);
        let endpoint = bridge.endpoint(TCP);
        async move { TestClient::connect(&endpoint, o).await.unwrap() }
    };
    assert!(first_connect.elapsed() > Duration::from_secs(2));
    let (_gone, ack) = connect("exp-2", 2).await;
    assert!(
        !ack.session_present,
        "exp-2 expired while the bridge was down: session present = 0"
    );
    let (mut long, ack) = connect("exp-30", 30).await;
    assert!(ack.session_present, "exp-30 survives the restart");
    assert_eq!(text(&long.recv().await), "kept", "with its queued message");
    let (_kept, ack) = connect("exp-8", 8).await;
    assert!(
        ack.session_present,
        "exp-8 (8 s, t ≈ 3 s) survives the restart"
    );

    // "exp-4" ends 4 s after its disconnection, not 4 s after the restart (which would be
    // t ≈ 7 s).
    tokio::time::sleep_until((disconnected + Duration::from_secs(5)).into()).await;
    let (_c, ack) = connect("exp-4", 4).await;
    assert!(
        !ack.session_present,
        "exp-4 kept its remaining time across the restart and expired at t ≈ 4 s"
    );
    assert!(
        disconnected.elapsed() < Duration::from_secs(7),
        "the check ran before a restarted clock would have ended exp-4"
    );
}

// ----- retained -------------------------------------------------------------------------------

#[tokio::test]
async fn retained_messages_are_the_same_after_a_restart_and_those_expired_meanwhile_are_gone() {
    // [MQTT-3.3.1-5] stored and replaced, [MQTT-3.3.1-10] (3.1.1) / [MQTT-3.3.1-6] (5.0)
    // removed by an empty payload, [MQTT-3.3.1-6] (3.1.1) / [MQTT-3.3.1-9] (5.0) sent to a new
    // subscription with RETAIN 1 [MQTT-3.3.1-8]; 5.0 [MQTT-3.3.2-5]: an expired message is
    // not delivered, [MQTT-3.3.2-6]: the expiry sent is what remains.
    let dir = TempDir::new("persist-retained");
    let mut bridge = Bridge::start_with_data(dir.path(), "");
    let mut p3 = bridge.client(TCP, clean(V311, "retainer-311")).await;
    let mut p5 = bridge.client(TCP, clean(V5, "retainer-5")).await;
    p3.publish("kept/set", "a", QoS::AtLeastOnce, true).await;
    p3.publish("kept/qos0", "zero", QoS::AtMostOnce, true).await;
    p3.publish("kept/replaced", "old", QoS::AtLeastOnce, true)
        .await;
    p5.publish("kept/replaced", "new", QoS::ExactlyOnce, true)
        .await;
    p3.publish("kept/deleted", "x", QoS::AtLeastOnce, true)
        .await;
    p5.publish("kept/deleted", "", QoS::AtLeastOnce, true).await;
    let expiring = |secs| Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    };
    p5.publish_with_properties("kept/expiring", "soon", QoS::AtLeastOnce, true, expiring(1))
        .await;
    p5.publish_with_properties(
        "kept/lasting",
        "long",
        QoS::AtLeastOnce,
        true,
        expiring(3600),
    )
    .await;
    p3.sync().await;
    p5.sync().await;
    p3.disconnect().await;
    p5.disconnect().await;

    assert!(bridge.stop().success());
    // "kept/expiring" expires while the bridge is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bridge.restart();

    for v in VERSIONS {
        let mut sub = bridge
            .client(TCP, clean(v, &format!("reader-{}", version_name(v))))
            .await;
        sub.subscribe("kept/#", QoS::ExactlyOnce).await;
        let got: BTreeMap<String, Publish> = drain(&mut sub, Duration::from_millis(500))
            .await
            .into_iter()
            .map(|p| (p.topic.as_str().to_owned(), p))
            .collect();
        let view: BTreeMap<&str, (String, QoS, bool)> = got
            .iter()
            .map(|(t, p)| (t.as_str(), (text(p), p.qos, p.retain)))
            .collect();
        let expected: BTreeMap<&str, (String, QoS, bool)> = [
            ("kept/lasting", ("long".to_owned(), QoS::AtLeastOnce, true)),
            ("kept/qos0", ("zero".to_owned(), QoS::AtMostOnce, true)),
            ("kept/replaced", ("new".to_owned(), QoS::ExactlyOnce, true)),
            ("kept/set", ("a".to_owned(), QoS::AtLeastOnce, true)),
        ]
        .into_iter()
        .collect();
        assert_eq!(view, expected, "MQTT {}", version_name(v));
        if v == V5 {
            let left = got["kept/lasting"].properties.message_expiry_interval;
            assert!(
                left.is_some_and(|s| (3500..3600).contains(&s)),
                "the remaining expiry, lowered by the time waited: {left:?}"
            );
        }
        sub.disconnect().await;
    }
}

// ----- unusable data -------------------------------------------------------------------------

/// Every file under `path` (or `path` itself if a file) with its bytes.
fn snapshot(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if path.is_file() {
        out.insert(path.to_owned(), std::fs::read(path).unwrap());
        return out;
    }
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        out.extend(snapshot(&p));
    }
    out
}

/// Runs the bridge binary with `--data data`, expecting it to fail at start: its exit status
/// and its stderr.
fn run_failing_bridge(data: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(Bridge::binary())
        .args(["--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the bridge was still running 5 s after starting on {}",
                data.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// Asserts the bridge refuses `data` cleanly and leaves `keep` (a file or a directory)
/// byte for byte as it was.
fn assert_refused_untouched(case: &str, data: &Path, keep: &Path, mention: &str) {
    let before = snapshot(keep);
    let (status, stderr) = run_failing_bridge(data);
    assert_eq!(
        status.code(),
        Some(1),
        "{case}: exit code 1 ({status:?}); stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{case}: a panic is not an error message:\n{stderr}"
    );
    assert!(
        stderr.contains(&data.display().to_string()),
        "{case}: the message names the data directory {}:\n{stderr}",
        data.display()
    );
    assert!(
        stderr.to_lowercase().contains(mention),
        "{case}: the message says why ({mention:?}):\n{stderr}"
    );
    assert_eq!(snapshot(keep), before, "{case}: the data is left untouched");
}

#[tokio::test]
async fn a_corrupt_foreign_incompatible_or_unusable_data_directory_stops_the_start_untouched() {
    // Not a conformance statement: the rule that such data gives a clear error and a
    // non-zero exit, never a panic, and is never overwritten.

    // (a) Garbage where the database should be.
    let dir = TempDir::new("persist-garbage");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("broker.sqlite3"), &garbage).unwrap();
    assert_refused_untouched("garbage", dir.path(), dir.path(), "corrupt");

    // (b) A database of a future format version, written by the bridge itself and edited.
    let dir = TempDir::new("persist-version");
    let mut bridge = Bridge::start_with_data(dir.path(), "");
    let mut c = bridge.client(TCP, persistent(V5, "someone")).await;
    c.subscribe("some/thing", QoS::AtLeastOnce).await;
    c.disconnect().await;
    assert!(bridge.stop().success());
    drop(bridge);
    {
        let db = rusqlite::Connection::open(dir.path().join("broker.sqlite3")).unwrap();
        let changed = db
            .execute(
                "UPDATE meta SET value = '999' WHERE key = 'format_version'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1, "the store keeps format_version in meta");
        // One self-contained file, no WAL beside it.
        let mode: String = db
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }
    assert_refused_untouched("format version 999", dir.path(), dir.path(), "999");

    // (c) Another program's SQLite database.
    let dir = TempDir::new("persist-foreign");
    {
        let db = rusqlite::Connection::open(dir.path().join("broker.sqlite3")).unwrap();
        db.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    assert_refused_untouched("foreign database", dir.path(), dir.path(), "not ours");

    // (d) The data path is a regular file.
    let dir = TempDir::new("persist-file");
    let file = dir.path().join("data");
    std::fs::write(&file, b"not a directory\n").unwrap();
    assert_refused_untouched("a regular file", &file, &file, "data directory");

    // (e) Another bridge holds the directory.
    let dir = TempDir::new("persist-locked");
    let bridge = Bridge::start_with_data(dir.path(), "");
    let (status, stderr) = run_failing_bridge(dir.path());
    assert_eq!(status.code(), Some(1), "a second bridge: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "names the directory: {stderr}"
    );
    // The first one is unharmed.
    let mut c = bridge.client(TCP, persistent(V311, "still-here")).await;
    c.subscribe("a/b", QoS::AtLeastOnce).await;
    c.disconnect().await;
}
