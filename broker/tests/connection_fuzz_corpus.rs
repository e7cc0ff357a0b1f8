//! Replays the `connection` fuzz target's corpus (`fuzz/corpus/connection/`) and its crash
//! reproducers (`fuzz/regressions/connection/`) through the target's own body, so the
//! ordinary test run checks them without cargo-fuzz. The seeds are written by
//! `writing_the_generated_seeds` (run by hand, see there).
#![allow(clippy::unwrap_used)]

#[path = "../fuzz/fuzz_targets/connection_logic.rs"]
mod connection_logic;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use connection_logic::Script;
use protocol::{
    Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, RetainHandling, Subscribe, Subscription, SubscriptionOptions, TopicFilter,
    TopicName, Unsubscribe, Will,
};

use ProtocolVersion::{V311, V5};

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub)
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_input_in_the_fuzz_corpus_passes_the_fuzz_target() {
    let mut seeds = 0;
    let mut packets = 0;
    for path in inputs(&fuzz_dir("corpus/connection")) {
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| connection_logic::run(&data));
        match result {
            Ok(outcome) => packets += outcome.packets_out,
            Err(_) => panic!("corpus input {} fails the fuzz target", path.display()),
        }
        seeds += 1;
    }
    assert!(seeds >= 20, "the corpus has {seeds} inputs");
    assert!(
        packets > 0,
        "the broker answered nothing in the whole corpus"
    );
}

/// Each reproducer runs in a child process (this test binary, running
/// `replaying_the_input_named_in_the_environment`), because some crashes abort the whole
/// process (a stack overflow on the engine thread) rather than panic.
#[test]
fn every_crash_reproducer_now_passes_the_fuzz_target() {
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    let paths = inputs(&fuzz_dir("regressions/connection"));
    for path in &paths {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "replaying_the_input_named_in_the_environment",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(REPLAY_VAR, path)
            .output()
            .unwrap();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            failures.push(format!(
                "{} ({}): {}",
                path.file_name().unwrap().to_string_lossy(),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} reproducers still fail:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}

const REPLAY_VAR: &str = "BROKER_FUZZ_REPLAY";

#[test]
#[ignore = "run in a child process by every_crash_reproducer_now_passes_the_fuzz_target"]
fn replaying_the_input_named_in_the_environment() {
    let path = std::env::var_os(REPLAY_VAR).expect("BROKER_FUZZ_REPLAY names an input");
    let data = std::fs::read(path).unwrap();
    connection_logic::run(&data);
}

#[test]
fn a_valid_session_is_answered_packet_for_packet() {
    // CONNECT, SUBSCRIBE, PUBLISH QoS 1 to itself, PINGREQ: CONNACK, SUBACK, PUBACK, the
    // message, PINGRESP.
    let script = Script::new(0x03).packets(
        0,
        V5,
        &[
            connect(V5, "self", true),
            subscribe(1, &[("a/+", QoS::AtLeastOnce)]),
            publish("a/b", QoS::AtLeastOnce, 2, false, b"hi"),
            Packet::PingReq,
        ],
    );
    let outcome = connection_logic::run(&script.0);
    assert_eq!(outcome.opened, 1);
    assert_eq!(outcome.packets_out, 5);
}

// The generated seeds.

fn connect(v: ProtocolVersion, id: &str, clean: bool) -> Packet {
    let mut c = Connect::new(v, id, clean);
    if v == V5 && !clean {
        c.properties.session_expiry_interval = Some(300);
    }
    Packet::Connect(Box::new(c))
}

fn connect_with_will(v: ProtocolVersion, id: &str, topic: &str, retain: bool) -> Packet {
    let mut c = Connect::new(v, id, false);
    c.will = Some(Will {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain,
        properties: Properties::default(),
    });
    if v == V5 {
        c.properties.session_expiry_interval = Some(60);
    }
    Packet::Connect(Box::new(c))
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn subscribe(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        subscriptions: filters
            .iter()
            .map(|(f, q)| Subscription::new(TopicFilter::new(f).unwrap(), *q))
            .collect(),
        properties: Properties::default(),
    })
}

fn publish(topic: &str, qos: QoS, id: u16, retain: bool, payload: &[u8]) -> Packet {
    let mut p = Publish::new(TopicName::new(topic).unwrap(), payload.to_vec());
    p.qos = qos;
    p.retain = retain;
    p.packet_id = (qos != QoS::AtMostOnce).then(|| pid(id));
    Packet::Publish(p)
}

fn deep(levels: usize, level: &str) -> String {
    vec![level; levels].join("/")
}

fn seeds() -> Vec<(&'static str, Script)> {
    let mut s: Vec<(&'static str, Script)> = Vec::new();
    for (v, tag) in [(V311, "v311"), (V5, "v5")] {
        for clean in [false, true] {
            let name: &'static str = match (v, clean) {
                (V311, false) => "session_v311_persistent",
                (V311, true) => "session_v311_clean",
                (V5, false) => "session_v5_persistent",
                (V5, true) => "session_v5_clean",
            };
            // Subscribe with wildcards, publish at every QoS (retained too), acknowledge the
            // deliveries, unsubscribe, disconnect; then reconnect to the same session.
            let script = Script::new(0x02)
                .packets(
                    0,
                    v,
                    &[
                        connect(v, tag, clean),
                        subscribe(1, &[("a/+/c", QoS::ExactlyOnce), ("#", QoS::AtLeastOnce)]),
                        publish("a/b/c", QoS::AtMostOnce, 0, false, b"zero"),
                        publish("a/b/c", QoS::AtLeastOnce, 2, true, b"one"),
                        publish("a/b/c", QoS::ExactlyOnce, 3, true, b"two"),
                    ],
                )
                .packets(
                    0,
                    v,
                    &[
                        Packet::PubRel(PubResp::new(pid(3))),
                        Packet::PubAck(PubResp::new(pid(1))),
                        Packet::PubAck(PubResp::new(pid(2))),
                        Packet::PubRec(PubResp::new(pid(3))),
                        Packet::PubComp(PubResp::new(pid(3))),
                        Packet::Unsubscribe(Unsubscribe {
                            packet_id: pid(4),
                            filters: vec![TopicFilter::new("#").unwrap()],
                            properties: Properties::default(),
                        }),
                        Packet::PingReq,
                        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
                    ],
                )
                .close(0)
                .packets(0, v, &[connect(v, tag, clean), Packet::PingReq]);
            s.push((name, script));
        }
    }

    // Two clients: one subscribes (shared and plain), the other publishes; the subscriber
    // acknowledges; a third takes the subscriber's session over.
    let sub_opts = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::SendIfNew,
    };
    let fancy = Packet::Subscribe(Subscribe {
        packet_id: pid(7),
        subscriptions: vec![
            Subscription {
                filter: TopicFilter::new("$share/g/s/#").unwrap(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            },
            Subscription {
                filter: TopicFilter::new("s/+").unwrap(),
                options: sub_opts,
            },
        ],
        properties: Properties {
            subscription_identifiers: vec![5],
            ..Properties::default()
        },
    });
    s.push((
        "two_clients_shared_and_takeover_v5",
        Script::new(0x22)
            .packets(0, V5, &[connect(V5, "sub", false), fancy])
            .packets(
                1,
                V5,
                &[
                    connect(V5, "pub", true),
                    publish("s/x", QoS::AtLeastOnce, 1, false, b"m1"),
                    publish("s/y", QoS::ExactlyOnce, 2, true, b"m2"),
                    Packet::PubRel(PubResp::new(pid(2))),
                ],
            )
            .packets(
                0,
                V5,
                &[
                    Packet::PubAck(PubResp::new(pid(1))),
                    Packet::PubRec(PubResp::new(pid(2))),
                ],
            )
            .packets(2, V5, &[connect(V5, "sub", false)])
            .packets(2, V5, &[Packet::PubRel(PubResp::new(pid(2)))])
            .close(1)
            .close(2),
    ));

    // Wills: a client with a retained will is reset; another sees it, live and retained.
    for (v, name) in [(V311, "will_on_reset_v311"), (V5, "will_on_reset_v5")] {
        s.push((
            name,
            Script::new(0x01)
                .packets(
                    0,
                    v,
                    &[
                        connect(v, "watcher", true),
                        subscribe(1, &[("w/#", QoS::AtLeastOnce)]),
                    ],
                )
                .packets(1, v, &[connect_with_will(v, "mortal", "w/mortal", true)])
                .reset(1)
                .packets(
                    2,
                    v,
                    &[
                        connect(v, "late", true),
                        subscribe(1, &[("w/+", QoS::AtMostOnce)]),
                    ],
                )
                .deaf(0),
        ));
    }

    // A subscriber that stops reading while QoS 1 and QoS 0 messages pile up.
    let mut burst = Vec::new();
    for i in 1..=200u16 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        burst.push(publish("q/t", qos, i, false, &[i as u8; 100]));
    }
    s.push((
        "stalled_reader_v311",
        Script::new(0x40)
            .packets(
                0,
                V311,
                &[
                    connect(V311, "slow", false),
                    subscribe(1, &[("q/#", QoS::AtLeastOnce)]),
                ],
            )
            .stall(0)
            .packets(1, V311, &[connect(V311, "fast", true)])
            .packets(1, V311, &burst)
            .stall(0)
            .close(0),
    ));

    // Byte at a time, and everything pipelined in one chunk.
    let mut pipeline = Vec::new();
    for p in [
        connect(V5, "trickle", true),
        subscribe(1, &[("t", QoS::ExactlyOnce)]),
        publish("t", QoS::ExactlyOnce, 2, false, b"x"),
        Packet::PubRel(PubResp::new(pid(2))),
        Packet::PingReq,
    ] {
        p.encode(V5, &mut pipeline).unwrap();
    }
    s.push((
        "byte_at_a_time_v5",
        Script::new(0x03).send_in_chunks(0, &pipeline, 1),
    ));
    s.push(("pipelined_v5", Script::new(0x03).send(0, &pipeline)));

    // 5.0 topic alias: set alias 1 on a topic, then publish with the alias alone.
    let mut aliased = Publish::new(TopicName::new("alias/topic").unwrap(), &b"a"[..]);
    aliased.properties.topic_alias = Some(1);
    let mut alias_bytes = Vec::new();
    Packet::Publish(aliased)
        .encode(V5, &mut alias_bytes)
        .unwrap();
    alias_bytes.extend([0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01]);
    s.push((
        "topic_alias_v5",
        Script::new(0x03)
            .packets(
                0,
                V5,
                &[
                    connect(V5, "alias", true),
                    subscribe(1, &[("alias/#", QoS::AtMostOnce)]),
                ],
            )
            .send(0, &alias_bytes),
    ));

    // Retained messages: set, read by a later subscriber, cleared by an empty payload.
    s.push((
        "retained_set_read_clear_v311",
        Script::new(0x00)
            .packets(
                0,
                V311,
                &[
                    connect(V311, "r1", true),
                    publish("r/a", QoS::AtLeastOnce, 1, true, b"kept"),
                    publish("r/b", QoS::AtMostOnce, 0, true, b"kept too"),
                ],
            )
            .packets(
                1,
                V311,
                &[
                    connect(V311, "r2", true),
                    subscribe(1, &[("r/+", QoS::AtLeastOnce)]),
                ],
            )
            .packets(0, V311, &[publish("r/a", QoS::AtMostOnce, 0, true, b"")])
            .packets(1, V311, &[subscribe(2, &[("r/#", QoS::AtMostOnce)])]),
    ));

    // Broken starts: not CONNECT first, an unknown protocol level, a second CONNECT,
    // nothing at all, a huge remaining length before and after CONNECT.
    s.push((
        "not_connect_first",
        Script::new(0x00).packets(0, V311, &[Packet::PingReq]),
    ));
    s.push((
        "unsupported_protocol_level",
        Script::new(0x00).send(
            0,
            &[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 9, 2, 0, 60, 0, 0],
        ),
    ));
    s.push((
        "second_connect",
        Script::new(0x00).packets(
            0,
            V5,
            &[connect(V5, "twice", true), connect(V5, "twice", true)],
        ),
    ));
    s.push(("empty_then_close", Script::new(0x00).send(0, &[]).close(0)));
    s.push((
        "huge_remaining_length_first",
        Script::new(0x03).send(0, &[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0, 1, b'a']),
    ));
    let mut huge = Vec::new();
    connect(V5, "huge", true).encode(V5, &mut huge).unwrap();
    huge.extend([0x32, 0xFF, 0xFF, 0xFF, 0x7F]);
    huge.extend(std::iter::repeat_n(b'x', 1000));
    s.push((
        "huge_remaining_length_after_connect",
        Script::new(0x03).send(0, &huge),
    ));

    // Just under and over the maximum packet size (2048 with config 0x01).
    let mut near = Vec::new();
    connect(V311, "near", true).encode(V311, &mut near).unwrap();
    publish("big", QoS::AtLeastOnce, 1, false, &[7; 2030])
        .encode(V311, &mut near)
        .unwrap();
    publish("big", QoS::AtLeastOnce, 2, false, &[7; 2050])
        .encode(V311, &mut near)
        .unwrap();
    s.push((
        "near_the_maximum_packet_size",
        Script::new(0x01).send(0, &near),
    ));

    // A deep topic name (published to, nothing deep subscribed) and a long flat one.
    s.push((
        "deep_topic_name_publish_v311",
        Script::new(0x03).packets(
            0,
            V311,
            &[
                connect(V311, "deep", true),
                subscribe(1, &[("#", QoS::AtMostOnce)]),
                publish(&deep(10_000, "d"), QoS::AtLeastOnce, 1, true, b"deep"),
            ],
        ),
    ));
    s.push((
        "long_topic_name_v5",
        Script::new(0x03).packets(
            0,
            V5,
            &[
                connect(V5, "long", true),
                subscribe(1, &[(&"l".repeat(30_000), QoS::AtMostOnce)]),
                publish(&"l".repeat(30_000), QoS::AtMostOnce, 0, false, b"long"),
            ],
        ),
    ));
    s
}

/// Inputs that crash the broker today, kept as reproducers (`fuzz/regressions/connection/`);
/// they must not go into the corpus, where the fuzzer would stop on them at once.
fn reproducers() -> Vec<(&'static str, Script)> {
    vec![
        // Issue 10, finding 1: a SUBSCRIBE to a filter of 10 000 levels overflows the engine
        // thread's stack in the recursive trie (broker/src/subscriptions.rs), here when the
        // session ends and its subscription is removed.
        (
            "deep_filter_subscribe_v311",
            Script::new(0x03)
                .packets(
                    0,
                    V311,
                    &[
                        connect(V311, "deepsub", true),
                        subscribe(1, &[(&deep(10_000, "d"), QoS::AtMostOnce)]),
                    ],
                )
                .close(0),
        ),
        // The same with `+` levels, and a PUBLISH that walks them all.
        (
            "deep_plus_filter_publish_v5",
            Script::new(0x03).packets(
                0,
                V5,
                &[
                    connect(V5, "deepplus", true),
                    subscribe(1, &[(&deep(10_000, "+"), QoS::AtMostOnce)]),
                    publish(&deep(10_000, "p"), QoS::AtMostOnce, 0, false, b"x"),
                ],
            ),
        ),
    ]
}

/// Writes the generated seeds and reproducers. Run by hand after changing them:
/// `cargo test -p broker --test connection_fuzz_corpus -- --ignored writing_the_generated_seeds`.
#[test]
#[ignore = "writes files into fuzz/corpus/connection and fuzz/regressions/connection"]
fn writing_the_generated_seeds() {
    for (dir, list) in [
        (fuzz_dir("corpus/connection"), seeds()),
        (fuzz_dir("regressions/connection"), reproducers()),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, script) in list {
            std::fs::write(dir.join(format!("seed_{name}")), script.0).unwrap();
        }
    }
}
