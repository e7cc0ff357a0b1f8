//! The data representations of spec section 1.5: integers, variable byte integers, UTF-8
//! strings, binary data; a bounds-checked reader and the matching writers.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::prelude::*;

/// The largest value a variable byte integer holds (268 435 455).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// Reads one packet's fields; every read is bounds-checked against the packet's own bytes, so
/// a length field can never make it read past the remaining length.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Splits off the next `n` bytes as a reader of their own (a property block).
    pub(crate) fn sub(&mut self, n: usize, field: &'static str) -> Result<Reader<'a>, DecodeError> {
        self.take(n, field).map(Reader::new)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn var_int(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match read_var_int(self.buf)? {
            Some((value, len)) => {
                self.buf = &self.buf[len..];
                Ok(value)
            }
            None => Err(DecodeError::Truncated(field)),
        }
    }

    pub(crate) fn binary(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        self.binary(field).map(Bytes::copy_from_slice)
    }

    pub(crate) fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let raw = self.binary(field)?;
        check_utf8(raw)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.str(field).map(str::to_owned)
    }

    /// What is left, as one slice (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(
                u32::try_from(self.buf.len()).unwrap_or(u32::MAX),
            ))
        }
    }
}

/// A UTF-8 encoded string per [MQTT-1.5.4-1] and [MQTT-1.5.4-2]: well-formed UTF-8 (Rust's
/// check already rejects surrogates and overlong forms) without U+0000.
pub(crate) fn check_utf8(raw: &[u8]) -> Result<&str, DecodeError> {
    let s = core::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    if raw.contains(&0) {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(s)
}

/// Decodes a variable byte integer at the start of `buf`: `Ok(None)` if more bytes are
/// needed, else the value and how many bytes it took. More than four bytes, or more bytes
/// than the value needs [MQTT-1.5.5-1], is malformed.
pub fn read_var_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of 0 after a continuation byte is a longer form than the value
            // needs [MQTT-1.5.5-1].
            if byte == 0 && i > 0 {
                return Err(DecodeError::MalformedVarInt);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedVarInt)
}

/// How many bytes `value` takes as a variable byte integer (1 to 4).
pub fn var_int_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`MAX_VAR_INT`], which callers check) as a variable byte integer.
pub(crate) fn put_var_int(buf: &mut impl BufMut, mut value: u32) {
    debug_assert!(value <= MAX_VAR_INT);
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Checks that a string or binary field fits its two-byte length prefix.
pub(crate) fn check_len(len: usize, field: &'static str) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong(field))
    } else {
        Ok(())
    }
}

/// A string field for encoding: at most 65 535 bytes and no U+0000 [MQTT-1.5.4-2] (Rust
/// strings are well-formed UTF-8 already).
pub(crate) fn check_str(s: &str, field: &'static str) -> Result<(), EncodeError> {
    check_len(s.len(), field)?;
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NullInString(field));
    }
    Ok(())
}

/// Writes a length-prefixed field; its length was checked by [`check_len`] while sizing.
pub(crate) fn put_binary(buf: &mut impl BufMut, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX));
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries_of_spec_table_1_5_2() {
        let cases: [(u32, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put_var_int(&mut out, value);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(var_int_len(value), bytes.len());
            assert_eq!(read_var_int(bytes), Ok(Some((value, bytes.len()))));
            assert_eq!(read_var_int(&bytes[..bytes.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn a_fifth_var_int_byte_is_malformed() {
        assert_eq!(
            read_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVarInt)
        );
    }

    #[test]
    fn a_var_int_longer_than_its_value_needs_is_malformed_mqtt_1_5_5_1() {
        assert_eq!(
            read_var_int(&[0x80, 0x00]),
            Err(DecodeError::MalformedVarInt)
        );
        assert_eq!(
            read_var_int(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::MalformedVarInt)
        );
        assert_eq!(read_var_int(&[0x80, 0x80, 0x01]), Ok(Some((16_384, 3))));
    }

    #[test]
    fn strings_reject_null_and_surrogates_mqtt_1_5_4_1_and_2() {
        assert_eq!(check_utf8(b"a\0b"), Err(DecodeError::InvalidUtf8));
        // U+D800 encoded as CESU-style bytes: not well-formed UTF-8 [MQTT-1.5.4-1].
        assert_eq!(
            check_utf8(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        );
        // An overlong encoding of '/'.
        assert_eq!(check_utf8(&[0xC0, 0xAF]), Err(DecodeError::InvalidUtf8));
        // U+FEFF is allowed and must not be stripped [MQTT-1.5.4-3].
        assert_eq!(check_utf8("\u{FEFF}x".as_bytes()), Ok("\u{FEFF}x"));
    }
}
