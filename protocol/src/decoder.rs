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
use crate::topic::TopicName;

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
        self.partial.clear();
        self.partial_len = None;
        self.aliases.clear();
    }

    /// Bytes of an unfinished packet held.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Decodes the next packet from `input`, advancing `input` past the bytes used.
    ///
    /// Returns `Ok(None)` once `input` is used up without completing a packet; call again
    /// with the next chunk. Call in a loop until `Ok(None)`: one chunk may hold many packets.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Packet>, DecodeError> {
        if self.partial.is_empty() {
            // Fast path: the packet is whole in the chunk, decode it in place.
            match FixedHeader::parse(input)? {
                Some(header) => {
                    check_size(&header, self.max_packet_size)?;
                    self.check_first_byte(header.byte1)?;
                    let len = header.packet_len();
                    if input.len() >= len {
                        let body = &input[header.header_len..len];
                        *input = &input[len..];
                        return self.finish(header.byte1, body).map(Some);
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
                self.check_first_byte(header.byte1)?;
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
        let partial = std::mem::take(&mut self.partial);
        self.partial_len = None;
        let result = match FixedHeader::parse(&partial)? {
            Some(header) => self.finish(header.byte1, &partial[header.header_len..]),
            None => Err(DecodeError::MalformedVarInt),
        };
        // Keep the allocation for the next partial packet unless it was a big one.
        if partial.capacity() <= 4096 {
            self.partial = partial;
            self.partial.clear();
        }
        result.map(Some)
    }

    /// A fixed header still unfinished after `held` bytes belongs to a packet of at least
    /// `held + 1` bytes: refuse it now if that is over the limit, so that the buffer never
    /// holds more than the maximum packet size, even when the limit is below five bytes.
    fn check_first_byte(&self, byte1: u8) -> Result<(), DecodeError> {
        let version = self.version.unwrap_or(ProtocolVersion::V311);
        crate::packet::check_first_byte(byte1, version).map(|_| ())
    }

    fn check_unfinished_header(&self, held: usize) -> Result<(), DecodeError> {
        if held > 0 && held >= self.max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size: u32::try_from(held + 1).unwrap_or(u32::MAX),
                max: self.max_packet_size,
            });
        }
        Ok(())
    }

    fn finish(&mut self, byte1: u8, body: &[u8]) -> Result<Packet, DecodeError> {
        let version = self.version.unwrap_or(ProtocolVersion::V311);
        let mut packet = Packet::decode_body(byte1, body, version)?;
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
