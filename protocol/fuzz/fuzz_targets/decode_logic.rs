//! The body of the `decode` fuzz target, shared with `protocol/tests/fuzz_corpus.rs` (which
//! includes this file with `#[path]`) so the ordinary test run replays the seed corpus.
//!
//! Input layout:
//! - byte 0, the control byte: bits 0-1 choose the decoder (0 = a server's, learning the
//!   version from CONNECT; 1 = MQTT 3.1.1; 2 and 3 = MQTT 5.0), bits 2-4 the maximum packet
//!   size from [`MAX_SIZES`], bits 5-7 the Topic Alias Maximum (0 to 7);
//! - byte 1: `k`, the number of chunk-size bytes that follow (`k % 8`);
//! - `k` bytes: chunk sizes, used in a cycle (0 = all the rest at once);
//! - the rest: the byte stream.

use protocol::{Decoder, Packet, ProtocolVersion};

/// The maximum packet sizes the control byte chooses from, small ones included so the
/// limit is hit often.
pub(crate) const MAX_SIZES: [u32; 8] = [2, 3, 5, 16, 64, 256, 4096, 1 << 20];

/// Builds an input for [`run`]: `ctl`, no chunk sizes, then `stream`.
#[allow(dead_code)] // used by the corpus tests, not by the fuzz target
pub(crate) fn input(ctl: u8, stream: &[u8]) -> Vec<u8> {
    let mut v = vec![ctl, 0];
    v.extend_from_slice(stream);
    v
}

/// Runs one input; panics on any broken invariant. Returns the packets decoded.
pub(crate) fn run(data: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    let [ctl, k, rest @ ..] = data else {
        return out;
    };
    let k = usize::from(k % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(k);
    let max = MAX_SIZES[usize::from((ctl >> 2) & 0x07)];
    let mut decoder = match ctl & 0x03 {
        0 => Decoder::new(max),
        1 => Decoder::with_version(ProtocolVersion::V311, max),
        _ => Decoder::with_version(ProtocolVersion::V5, max),
    };
    decoder.set_topic_alias_maximum(u16::from(ctl >> 5));

    let mut stream = stream;
    let mut turn = 0;
    while !stream.is_empty() {
        let size = match sizes.get(turn % sizes.len().max(1)) {
            Some(&s) if s > 0 => usize::from(s).min(stream.len()),
            _ => stream.len(),
        };
        turn += 1;
        let (mut chunk, tail) = stream.split_at(size);
        stream = tail;
        loop {
            let before = chunk.len();
            let result = decoder.decode(&mut chunk);
            assert!(
                decoder.buffered() <= max as usize,
                "buffered {} > max {max}",
                decoder.buffered()
            );
            match result {
                Ok(Some(packet)) => {
                    assert!(chunk.len() < before, "a packet consumes bytes");
                    check_reencode(&decoder, &packet, max);
                    out.push(packet);
                }
                Ok(None) => {
                    assert!(chunk.is_empty(), "Ok(None) only once the chunk is used up");
                    break;
                }
                // The stream is out of sync after an error: the connection would be closed.
                Err(_) => return out,
            }
        }
    }
    out
}

/// A decoded packet re-encodes, and the encoding decodes to the same packet.
fn check_reencode(decoder: &Decoder, packet: &Packet, max: u32) {
    let version = match packet {
        Packet::Connect(c) => c.protocol,
        _ => decoder.version().unwrap_or(ProtocolVersion::V311),
    };
    let mut bytes = Vec::new();
    let n = packet
        .encode(version, &mut bytes)
        .unwrap_or_else(|e| panic!("{packet:?} decoded but does not encode: {e}"));
    assert_eq!(n, bytes.len());
    assert_eq!(packet.encoded_len(version), Ok(n));
    assert!(
        n <= max as usize,
        "re-encoded {n} bytes > max {max}: {packet:?}"
    );
    let again = Packet::decode(&bytes, version, u32::MAX);
    match again {
        Ok(Some((back, used))) => {
            assert_eq!(used, n);
            // The Decoder resolved and stripped any Topic Alias, so the re-encoding has none
            // and equals the decoded packet exactly.
            assert_eq!(
                &back, packet,
                "re-decoded packet differs; bytes {bytes:02X?}"
            );
        }
        other => panic!("{packet:?} re-encoded to {bytes:02X?}, which decodes to {other:?}"),
    }
}
