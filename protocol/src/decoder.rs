//! The streaming decoder: bytes in, in chunks of any size, packets out.
//!
//! A WebSocket frame may hold several packets or part of one [MQTT-6.0.0-2], and a TCP read
//! returns whatever arrived. The decoder takes each chunk as it comes, decodes whole packets
//! straight from the chunk without copying, and buffers only the bytes of one unfinished
//! packet. That buffer never grows past the maximum packet size: the size is checked from the
//! fixed header, before the body is buffered.
//!
//! It also holds the connection's inbound Topic Alias mapping (MQTT 5.0, spec 3.3.2.3.4), so
//! every PUBLISH it returns carries its full topic name and no Topic Alias property.

use crate::error::DecodeError;
use crate::packet::{check_size, FixedHeader, Packet, ProtocolVersion};
use crate::prelude::*;
use crate::topic::TopicName;

/// The most buffer capacity kept between packets (bytes). Small packets split across
/// chunks (acknowledgements, PINGREQ, short messages) reuse it; anything larger is freed
/// once its packet is decoded, so an idle connection holds at most this much.
const KEEP_CAPACITY: usize = 256;

/// Decodes a connection's inbound byte stream.
///
/// After an error the stream is no longer in sync: the connection must be closed (with the
/// error's [`DecodeError::reason_code`] in MQTT 5.0).
#[derive(Debug)]
pub struct Decoder {
    /// `None` on a server before CONNECT: the first CONNECT decoded sets it.
    version: Option<ProtocolVersion>,
    /// The largest packet accepted, fixed header included.
    max_packet_size: u32,
    /// The bytes of one unfinished packet, never more than `max_packet_size`.
    partial: Vec<u8>,
    /// The size of the unfinished packet once its fixed header is complete.
    partial_len: Option<usize>,
    /// The highest Topic Alias this side accepts (our CONNECT's or CONNACK's Topic Alias
    /// Maximum); 0 = none.
    topic_alias_maximum: u16,
    /// Alias `n` is at index `n - 1`; bounded by `topic_alias_maximum`.
    aliases: Vec<Option<TopicName>>,
}

impl Decoder {
    /// A decoder for a server's connection: the protocol version is learnt from CONNECT.
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            version: None,
            max_packet_size,
            partial: Vec::new(),
            partial_len: None,
            topic_alias_maximum: 0,
            aliases: Vec::new(),
        }
    }

    /// A decoder for a connection whose version is known (a client's).
    pub fn with_version(version: ProtocolVersion, max_packet_size: u32) -> Self {
        let mut d = Decoder::new(max_packet_size);
        d.version = Some(version);
        d
    }

    /// The protocol version in use, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Sets the protocol version (a client does so before connecting).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = Some(version);
    }

    /// The largest packet accepted.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    /// Changes the largest packet accepted.
    pub fn set_max_packet_size(&mut self, max: u32) {
        self.max_packet_size = max;
    }

    /// Sets the Topic Alias Maximum this side announced; aliases above it are refused with
    /// [`DecodeError::TopicAliasInvalid`] [MQTT-3.3.2-9].
    pub fn set_topic_alias_maximum(&mut self, max: u16) {
        self.topic_alias_maximum = max;
        self.aliases.truncate(usize::from(max));
    }

    /// Forgets everything of the previous network connection (aliases live only as long as
    /// one network connection [MQTT-3.3.2-7], a partial packet is garbage after a drop).
    pub fn reset(&mut self) {
        // Released, not cleared: a connection that is gone needs no buffer.
        self.partial = Vec::new();
        self.partial_len = None;
        self.aliases.clear();
    }

    /// Bytes of an unfinished packet held: more than 0 from the first byte of a packet
    /// until its last, 0 between packets. A server uses it to give a packet, once begun, a
    /// deadline of its own.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Decodes the next packet from `input`, advancing `input` past the bytes used.
    ///
    /// Returns `Ok(None)` once `input` is used up without completing a packet; call again
    /// with the next chunk. Call in a loop until `Ok(None)`: one chunk may hold many packets.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Packet>, DecodeError> {
        self.decode_from::<false>(input)
    }

    /// [`Decoder::decode`] for a client: a packet only clients send (CONNECT, SUBSCRIBE,
    /// UNSUBSCRIBE, PINGREQ) is refused from its first byte with
    /// [`DecodeError::ClientOnlyPacket`], a Protocol Error.
    ///
    /// Why a method of its own rather than a setting: the direction is a const generic all
    /// the way down to [`Packet`]'s decoding, so a program that calls only this one does not
    /// contain the decoders of those packets at all (the wasm client package is ~2 KB gzip
    /// smaller, see client-wasm/build.sh).
    pub fn decode_from_server(&mut self, input: &mut &[u8]) -> Result<Option<Packet>, DecodeError> {
        self.decode_from::<true>(input)
    }

    fn decode_from<const FROM_SERVER: bool>(
        &mut self,
        input: &mut &[u8],
    ) -> Result<Option<Packet>, DecodeError> {
        if self.partial.is_empty() {
            // Fast path: the packet is whole in the chunk, decode it in place.
            match FixedHeader::parse(input)? {
                Some(header) => {
                    check_size(&header, self.max_packet_size)?;
                    self.check_first_byte::<FROM_SERVER>(header.byte1)?;
                    let len = header.packet_len();
                    if input.len() >= len {
                        let body = &input[header.header_len..len];
                        *input = &input[len..];
                        return self.finish::<FROM_SERVER>(header.byte1, body).map(Some);
                    }
                    // Reserve for what arrived, not for what the header claims: a peer
                    // that sends only a header must not cost the whole maximum.
                    self.partial.reserve(input.len().min(64 * 1024));
                    self.partial.extend_from_slice(input);
                    self.partial_len = Some(len);
                }
                None => {
                    self.check_unfinished_header(input.len())?;
                    self.partial.extend_from_slice(input)
                }
            }
            *input = &[];
            return Ok(None);
        }
        // Complete the fixed header one byte at a time (it is at most five bytes, and a
        // short packet may end inside the bytes a bulk copy would take).
        let len = loop {
            if let Some(len) = self.partial_len {
                break len;
            }
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(None);
            };
            self.partial.push(byte);
            *input = rest;
            if let Some(header) = FixedHeader::parse(&self.partial)? {
                check_size(&header, self.max_packet_size)?;
                self.check_first_byte::<FROM_SERVER>(header.byte1)?;
                self.partial_len = Some(header.packet_len());
            } else {
                self.check_unfinished_header(self.partial.len())?;
            }
        };
        let want = len - self.partial.len();
        let take = want.min(input.len());
        self.partial.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if self.partial.len() < len {
            return Ok(None);
        }
        let partial = core::mem::take(&mut self.partial);
        self.partial_len = None;
        let result = match FixedHeader::parse(&partial)? {
            Some(header) => self.finish::<FROM_SERVER>(header.byte1, &partial[header.header_len..]),
            None => Err(DecodeError::MalformedVarInt),
        };
        // Keep the allocation for the next partial packet only if it is small: a server
        // holds one decoder per connection, mostly idle, and a buffer kept after one large
        // packet would be paid by every idle connection that ever sent one. Dropping it
        // costs one allocation the next time a large packet is split across chunks.
        if partial.capacity() <= KEEP_CAPACITY {
            self.partial = partial;
            self.partial.clear();
        }
        result.map(Some)
    }

    /// Checks the first byte as soon as it arrives, before any body is buffered: a type that
    /// exists in the version, the flags it must have, and (`FROM_SERVER`) not a packet only
    /// clients send.
    fn check_first_byte<const FROM_SERVER: bool>(&self, byte1: u8) -> Result<(), DecodeError> {
        let version = self.version.unwrap_or(ProtocolVersion::V311);
        let packet_type = crate::packet::check_first_byte(byte1, version)?;
        if FROM_SERVER && packet_type.is_client_only() {
            return Err(DecodeError::ClientOnlyPacket(packet_type));
        }
        Ok(())
    }

    /// A fixed header still unfinished after `held` bytes belongs to a packet of at least
    /// `held + 1` bytes: refuse it now if that is over the limit, so that the buffer never
    /// holds more than the maximum packet size, even when the limit is below five bytes.
    fn check_unfinished_header(&self, held: usize) -> Result<(), DecodeError> {
        if held > 0 && held >= self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size: u32::try_from(held + 1).unwrap_or(u32::MAX),
                max: self.max_packet_size,
            });
        }
        Ok(())
    }

    fn finish<const FROM_SERVER: bool>(
        &mut self,
        byte1: u8,
        body: &[u8],
    ) -> Result<Packet, DecodeError> {
        let version = self.version.unwrap_or(ProtocolVersion::V311);
        let mut packet = Packet::decode_body_from::<FROM_SERVER>(byte1, body, version)?;
        match &mut packet {
            Packet::Connect(c) if self.version.is_none() => self.version = Some(c.protocol),
            Packet::Publish(p) if version == ProtocolVersion::V5 => {
                if let Some(alias) = p.properties.topic_alias.take() {
                    if alias == 0 || alias > self.topic_alias_maximum {
                        return Err(DecodeError::TopicAliasInvalid(alias));
                    }
                    let slot = usize::from(alias - 1);
                    if p.topic.is_empty() {
                        match self.aliases.get(slot) {
                            Some(Some(topic)) => p.topic = topic.clone(),
                            _ => return Err(DecodeError::TopicAliasUnknown(alias)),
                        }
                    } else {
                        if self.aliases.len() <= slot {
                            self.aliases.resize(slot + 1, None);
                        }
                        self.aliases[slot] = Some(p.topic.clone());
                    }
                }
            }
            _ => {}
        }
        Ok(packet)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::packet::PacketType;
    use crate::reason::ReasonCode;

    /// The packets only a client sends (spec 2.1.2, "Direction of flow"), by first byte.
    const CLIENT_ONLY: [(u8, PacketType); 4] = [
        (0x10, PacketType::Connect),
        (0x82, PacketType::Subscribe),
        (0xA2, PacketType::Unsubscribe),
        (0xC0, PacketType::PingReq),
    ];

    #[test]
    fn a_client_refuses_a_packet_only_clients_send_from_its_fixed_header() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for (byte1, packet_type) in CLIENT_ONLY {
                // Whole in one chunk: the header claims 127 body bytes that never come.
                let mut d = Decoder::with_version(version, 1 << 16);
                let mut input: &[u8] = &[byte1, 0x7F, 0x00];
                let e = d.decode_from_server(&mut input).unwrap_err();
                assert_eq!(e, DecodeError::ClientOnlyPacket(packet_type));
                assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
                assert_eq!(d.buffered(), 0, "{packet_type:?}: nothing buffered");

                // The header split across chunks: refused once it is complete.
                let mut d = Decoder::with_version(version, 1 << 16);
                let mut first: &[u8] = &[byte1];
                assert_eq!(d.decode_from_server(&mut first), Ok(None));
                let mut second: &[u8] = &[0x7F];
                assert_eq!(
                    d.decode_from_server(&mut second),
                    Err(DecodeError::ClientOnlyPacket(packet_type))
                );
            }
        }
    }

    #[test]
    fn a_server_still_decodes_what_clients_send() {
        let mut d = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
        let mut input: &[u8] = &[0xC0, 0x00, 0xA2, 0x06, 0x00, 0x07, 0x00, 0x00, 0x01, b'a'];
        assert_eq!(d.decode(&mut input), Ok(Some(Packet::PingReq)));
        match d.decode(&mut input) {
            Ok(Some(Packet::Unsubscribe(u))) => {
                assert_eq!(u.packet_id.get(), 7);
                assert_eq!(u.filters.len(), 1);
                assert_eq!(u.filters[0].as_str(), "a");
            }
            other => panic!("expected UNSUBSCRIBE, got {other:?}"),
        }
        assert!(input.is_empty());
    }

    #[test]
    fn a_client_decodes_what_servers_send_as_a_server_decoder_does() {
        // CONNACK, PINGRESP, PUBLISH QoS 1 (topic "t", id 1, payload "x"), SUBACK, UNSUBACK,
        // DISCONNECT, AUTH: every server-to-client packet type of MQTT 5.0.
        let stream: &[u8] = &[
            0x20, 0x03, 0x00, 0x00, 0x00, // CONNACK
            0xD0, 0x00, // PINGRESP
            0x32, 0x07, 0x00, 0x01, b't', 0x00, 0x01, 0x00, b'x', // PUBLISH
            0x40, 0x02, 0x00, 0x01, // PUBACK
            0x90, 0x04, 0x00, 0x02, 0x00, 0x01, // SUBACK
            0xB0, 0x04, 0x00, 0x03, 0x00, 0x00, // UNSUBACK
            0xE0, 0x00, // DISCONNECT
            0xF0, 0x06, 0x18, 0x04, 0x15, 0x00, 0x01, b'm', // AUTH, method "m"
        ];
        let mut server_side = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
        let mut client_side = Decoder::with_version(ProtocolVersion::V5, 1 << 16);
        let (mut a, mut b) = (stream, stream);
        let mut n = 0;
        loop {
            let expected = server_side.decode(&mut a).unwrap();
            assert_eq!(client_side.decode_from_server(&mut b).unwrap(), expected);
            if expected.is_none() {
                break;
            }
            n += 1;
        }
        assert_eq!(n, 8);
        assert!(a.is_empty() && b.is_empty());
    }

    /// A QoS 0 PUBLISH to "t" with `payload_len` bytes of payload, in 3.1.1.
    fn publish_bytes(payload_len: usize) -> Vec<u8> {
        let remaining = 3 + payload_len;
        let mut bytes = vec![0x30];
        let mut n = remaining;
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            bytes.push(b);
            if n == 0 {
                break;
            }
        }
        bytes.extend_from_slice(&[0x00, 0x01, b't']);
        bytes.resize(bytes.len() + payload_len, b'x');
        bytes
    }

    /// Feeds `bytes` in chunks of `chunk` bytes; returns the packets decoded.
    fn feed(d: &mut Decoder, bytes: &[u8], chunk: usize) -> Vec<Packet> {
        let mut packets = Vec::new();
        for mut input in bytes.chunks(chunk) {
            while let Some(p) = d.decode(&mut input).unwrap() {
                packets.push(p);
            }
        }
        packets
    }

    #[test]
    fn the_buffer_of_a_large_split_packet_is_freed_once_it_is_decoded() {
        let mut d = Decoder::with_version(ProtocolVersion::V311, 1 << 20);
        let bytes = publish_bytes(100_000);
        let mut first: &[u8] = &bytes[..50_000];
        assert_eq!(d.decode(&mut first), Ok(None));
        assert_eq!(d.buffered(), 50_000, "the unfinished packet is held");
        let mut second: &[u8] = &bytes[50_000..];
        assert!(matches!(
            d.decode(&mut second),
            Ok(Some(Packet::Publish(_)))
        ));
        assert_eq!(d.buffered(), 0);
        assert_eq!(
            d.partial.capacity(),
            0,
            "an idle connection holds no large buffer"
        );
    }

    #[test]
    fn a_small_split_packet_leaves_at_most_a_small_buffer_for_the_next_one() {
        let mut d = Decoder::with_version(ProtocolVersion::V311, 1 << 20);
        let mut stream = publish_bytes(20);
        stream.extend_from_slice(&publish_bytes(20));
        assert_eq!(feed(&mut d, &stream, 7).len(), 2);
        assert_eq!(d.buffered(), 0);
        assert!(d.partial.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn reset_releases_the_buffer_of_an_unfinished_packet() {
        let mut d = Decoder::with_version(ProtocolVersion::V311, 1 << 20);
        let bytes = publish_bytes(10_000);
        let mut first: &[u8] = &bytes[..5_000];
        assert_eq!(d.decode(&mut first), Ok(None));
        d.reset();
        assert_eq!((d.buffered(), d.partial.capacity()), (0, 0));
        // And the next connection's packets decode from scratch.
        assert_eq!(feed(&mut d, &publish_bytes(3), 1).len(), 1);
    }

    #[test]
    fn the_client_only_error_names_the_packet() {
        assert_eq!(
            DecodeError::ClientOnlyPacket(PacketType::Subscribe).to_string(),
            "Subscribe is a packet only a client may send"
        );
    }
}
