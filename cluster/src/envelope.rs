//! A message as it travels between nodes: what the broker stores of it
//! ([`StoredMessage`]), in one NATS message body.
//!
//! The body is a small fixed header and the message as a 5.0 PUBLISH packet, encoded by
//! the protocol crate (so topic, payload, QoS, RETAIN and every property travel in the
//! format that already has a decoder, a fuzzer and tests):
//!
//! ```text
//! version (1) | received_at ms (8) | expires_at ms + 1, 0 = never (8)
//!             | publisher length + 1, 0 = none (2) | publisher (UTF-8) | PUBLISH (5.0)
//! ```
//!
//! Times are absolute (Unix milliseconds), so a message read back from the stream later
//! keeps its remaining expiry. The publisher's client id is in the body rather than in a
//! NATS header, because a client id may hold bytes a header cannot (CR, LF).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::StoredMessage;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use protocol::{Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS};

/// The format's version byte.
const VERSION: u8 = 1;

/// Why a body is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Another version, or too short.
    #[error("not a message body of this version")]
    Header,
    /// The PUBLISH inside did not decode.
    #[error("message packet: {0}")]
    Packet(String),
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The body of `m`. Fails only for a message no packet can carry (over 256 MB).
pub fn encode(m: &StoredMessage) -> Result<Bytes, EnvelopeError> {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: m.qos,
        retain: m.retain,
        topic: m.topic.clone(),
        packet_id: (m.qos != QoS::AtMostOnce).then_some(PacketId::MIN),
        payload: m.payload.clone(),
        properties: m.properties.clone(),
    });
    let publisher = m.publisher.as_deref().unwrap_or("");
    let mut out = BytesMut::with_capacity(19 + publisher.len() + m.payload.len() + 64);
    out.put_u8(VERSION);
    out.put_u64(ms(m.received_at));
    out.put_u64(m.expires_at.map_or(0, |t| ms(t).saturating_add(1)));
    match &m.publisher {
        // A client id is at most 65535 bytes (a UTF-8 string of the protocol).
        Some(p) => out.put_u16(u16::try_from(p.len()).unwrap_or(u16::MAX).saturating_add(1)),
        None => out.put_u16(0),
    }
    out.put_slice(publisher.as_bytes());
    publish
        .encode(ProtocolVersion::V5, &mut out)
        .map_err(|e| EnvelopeError::Packet(e.to_string()))?;
    Ok(out.freeze())
}

/// The message in `body`, with `id` as its id.
pub fn decode(mut body: &[u8], id: u64) -> Result<StoredMessage, EnvelopeError> {
    if body.len() < 19 || body[0] != VERSION {
        return Err(EnvelopeError::Header);
    }
    body.advance(1);
    let received_at = time(body.get_u64());
    let expires = body.get_u64();
    let publisher_len = body.get_u16();
    let publisher = match publisher_len.checked_sub(1) {
        None => None,
        Some(n) => {
            let n = usize::from(n);
            if body.len() < n {
                return Err(EnvelopeError::Header);
            }
            let p = std::str::from_utf8(&body[..n]).map_err(|_| EnvelopeError::Header)?;
            let p: Arc<str> = Arc::from(p);
            body.advance(n);
            Some(p)
        }
    };
    let mut decoder = Decoder::with_version(ProtocolVersion::V5, u32::MAX);
    let packet = decoder
        .decode(&mut body)
        .map_err(|e| EnvelopeError::Packet(e.to_string()))?;
    let Some(Packet::Publish(p)) = packet else {
        return Err(EnvelopeError::Packet("not a whole PUBLISH".into()));
    };
    Ok(StoredMessage {
        id,
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        expires_at: expires.checked_sub(1).map(time),
        received_at,
        publisher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Properties, TopicName};

    fn message(qos: QoS, publisher: Option<&str>, expires: bool) -> StoredMessage {
        let properties = Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            correlation_data: Some(Bytes::from_static(b"\0\x01")),
            ..Properties::default()
        };
        let received_at = time(1_700_000_000_123);
        StoredMessage {
            id: 7,
            topic: TopicName::new("a/b c/$x").expect("topic"),
            payload: Bytes::from_static(b"\0payload\r\n"),
            qos,
            retain: qos == QoS::AtLeastOnce,
            properties,
            expires_at: expires.then(|| received_at + Duration::from_secs(30)),
            received_at,
            publisher: publisher.map(Arc::from),
        }
    }

    #[test]
    fn every_field_of_a_message_comes_back() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for publisher in [None, Some(""), Some("client\r\nid")] {
                for expires in [false, true] {
                    let m = message(qos, publisher, expires);
                    let body = encode(&m).expect("encodes");
                    assert_eq!(decode(&body, 7).expect("decodes"), m);
                }
            }
        }
    }

    #[test]
    fn a_body_of_another_format_or_cut_short_is_refused() {
        let body = encode(&message(QoS::AtLeastOnce, Some("c"), true)).expect("encodes");
        assert_eq!(decode(&body[..10], 1), Err(EnvelopeError::Header));
        let mut other = body.to_vec();
        other[0] = 9;
        assert_eq!(decode(&other, 1), Err(EnvelopeError::Header));
        assert!(matches!(
            decode(&body[..body.len() - 3], 1),
            Err(EnvelopeError::Packet(_))
        ));
    }
}
