//! Replays every seed of `fuzz/corpus/decode/` through the body of the `decode` fuzz target,
//! so the ordinary test run checks the corpus without cargo-fuzz or nightly.
#![allow(clippy::unwrap_used)]

mod common;

#[path = "../fuzz/fuzz_targets/decode_logic.rs"]
mod decode_logic;

use std::path::{Path, PathBuf};

use protocol::{Packet, ProtocolVersion, Publish, TopicName};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode")
}

#[test]
fn every_seed_in_the_fuzz_corpus_passes_the_fuzz_target() {
    let mut seeds = 0;
    let mut packets = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| decode_logic::run(&data));
        match result {
            Ok(decoded) => packets += decoded.len(),
            Err(_) => panic!("seed {} fails the fuzz target", path.display()),
        }
        seeds += 1;
    }
    assert!(seeds >= 10, "the corpus has {seeds} seeds");
    assert!(packets > 0);
}

#[test]
fn the_captured_mosquitto_sessions_decode_whole() {
    // Every byte of a capture is a packet: the sizes of the decoded packets add up to the
    // stream (property order may differ from ours, sizes never do). The client-to-server
    // captures go through a server decoder that learns the version from CONNECT.
    let mut checked = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("mosquitto_") {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let decoded = decode_logic::run(&data);
        assert!(!decoded.is_empty(), "{name}");
        let stream = &data[2 + usize::from(data[1] % 8)..];
        let learned = match &decoded[0] {
            Packet::Connect(c) => c.protocol,
            _ => ProtocolVersion::V311,
        };
        let version = match data[0] & 3 {
            0 => learned,
            1 => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        };
        let total: usize = decoded
            .iter()
            .map(|p| p.encoded_len(version).unwrap())
            .sum();
        assert_eq!(
            total,
            stream.len(),
            "{name}: every captured byte is a packet"
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked} captures");
}

/// Writes the generated seeds. Run by hand after changing the packet set:
/// `cargo test -p protocol --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes files into fuzz/corpus/decode"]
fn writing_the_generated_seeds() {
    let dir = corpus_dir();
    let seed = |name: &str, ctl: u8, sizes: &[u8], stream: &[u8]| {
        let mut data = vec![ctl, sizes.len() as u8];
        data.extend_from_slice(sizes);
        data.extend_from_slice(stream);
        std::fs::write(dir.join(name), data).unwrap();
    };
    for (v, ctl, name) in [
        (ProtocolVersion::V311, 0x1D, "generated_every_type_v311"),
        (ProtocolVersion::V5, 0xFE, "generated_every_type_v5"),
    ] {
        let mut stream = Vec::new();
        for p in every_type(v) {
            p.encode(v, &mut stream).unwrap();
        }
        seed(name, ctl, &[], &stream);
        seed(&format!("{name}_chunked"), ctl, &[1, 3, 7, 0], &stream);
    }
    // A 5.0 alias pair: set alias 7 on "a/b", then use it alone (alias maximum 7).
    let mut set = Publish::new(TopicName::new("a/b").unwrap(), &b"one"[..]);
    set.properties.topic_alias = Some(7);
    let mut stream = Vec::new();
    Packet::Publish(set)
        .encode(ProtocolVersion::V5, &mut stream)
        .unwrap();
    stream.extend([0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x07, b't', b'w']);
    seed("generated_topic_alias_v5", 0xFE, &[], &stream);
    // Spec examples (tests/vectors.rs).
    seed(
        "spec_v5_connect_3_1_2_12",
        0x1C,
        &[],
        &hex("102400044d51545405ce000a05110000000a0003636964000001770003627965000175000170"),
    );
    seed(
        "spec_v311_connect_3_1_2_10",
        0x1C,
        &[],
        &hex("101d00044d51545404ce000a00036369640001770003627965000175000170"),
    );
    seed(
        "spec_utf8_topic_1_5_4",
        0x1D,
        &[],
        &hex("3007000541f0aa9b94"),
    );
    // A header alone over the limit, and a tiny limit.
    seed("header_over_max", 0x18, &[], &hex("30ffffff7f"));
    seed("tiny_max_unfinished_header", 0x01, &[1], &hex("3080808001"));
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One packet of every type valid in `v`, deterministic.
fn every_type(v: ProtocolVersion) -> Vec<Packet> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let mut out: Vec<Packet> = Vec::new();
    let mut kinds = std::collections::HashSet::new();
    let strategy = common::packet(v);
    let all_kinds = match v {
        ProtocolVersion::V311 => 14,
        ProtocolVersion::V5 => 15,
    };
    for _ in 0..10_000 {
        if kinds.len() == all_kinds && out.len() >= 20 {
            break;
        }
        let p = strategy.new_tree(&mut runner).unwrap().current();
        let p = common::without_alias(p);
        let fresh = kinds.insert(p.packet_type() as u8);
        if fresh || out.len() < 20 {
            out.push(p);
        }
    }
    assert_eq!(kinds.len(), all_kinds);
    out
}
