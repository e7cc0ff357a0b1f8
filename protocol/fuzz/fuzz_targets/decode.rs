//! Feeds arbitrary bytes, in arbitrary chunks, to a streaming `Decoder`; every packet it
//! yields must re-encode and decode again to the same packet, and the decoder's buffer must
//! never exceed its maximum packet size. See `decode_logic.rs` for the input layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "decode_logic.rs"]
mod decode_logic;

fuzz_target!(|data: &[u8]| {
    decode_logic::run(data);
});
