//! A session as the cluster keeps it: one JSON record per client id in the sessions
//! key-value bucket, written by the node that owns the session.
//!
//! The record names its owner (`node`) and an `epoch` that every change of owner raises;
//! writes are compare-and-set on the bucket's revision, so a node that lost the session to
//! another cannot overwrite it. A queued message is not copied into the record: it is named
//! by its sequence in the message stream, and `upto` says up to which sequence the list of
//! deliveries is complete; whoever takes the session next reads the listed messages back
//! and routes what came after `upto` to it (see `store`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker::store::{DeliveryState, SessionMeta, StoredDelivery, StoredMessage};
use broker::SubEntry;
use protocol::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions, TopicFilter, Will};
use serde::{Deserialize, Serialize};

use crate::envelope;

/// One session's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The node that owns it.
    pub node: String,
    /// Raised by every change of owner.
    pub epoch: u64,
    /// Its own fields; `None` for a session that keeps nothing (clean), whose record only
    /// says who holds its connection.
    pub meta: Option<MetaRecord>,
    /// Its subscriptions.
    pub subs: Vec<SubRecord>,
    /// The stream sequence up to which `deliveries` is complete.
    pub upto: u64,
    /// Messages queued for it and in flight to it, in its order.
    pub deliveries: Vec<DeliveryRecord>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
}

/// [`SessionMeta`] in the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRecord {
    /// 4 (3.1.1) or 5.
    pub version: u8,
    /// User name of its last connection.
    pub username: Option<String>,
    /// Session Expiry Interval, seconds.
    pub expiry_interval: u32,
    /// When it ends, Unix ms.
    pub expires_at: Option<u64>,
    /// When it went offline, Unix ms.
    pub disconnected_at: Option<u64>,
    /// A delayed will (as a message body, see `envelope`) and when it is due, Unix ms.
    pub pending_will: Option<(Vec<u8>, u64)>,
    /// Messages dropped by its queue policy.
    pub dropped: u64,
    /// The will of its open connection (as a message body), while it is connected with one:
    /// published by whichever node takes the session over if this one dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_will: Option<Vec<u8>>,
}

/// One subscription in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubRecord {
    /// The filter (shared ones included).
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// No Local.
    pub no_local: bool,
    /// Retain As Published.
    pub retain_as_published: bool,
    /// Retain Handling.
    pub retain_handling: u8,
    /// Subscription Identifier.
    pub id: Option<u32>,
    /// The stream sequence routed when it was made: it matches only what comes after.
    pub since: u64,
}

/// One delivery in the record (one-letter keys: a session may have thousands queued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Its place in the session's order.
    #[serde(rename = "s")]
    pub seq: u64,
    /// The message's stream sequence.
    #[serde(rename = "m")]
    pub msg: u64,
    /// 0 queued, 1 awaiting PUBACK / PUBREC, 2 awaiting PUBCOMP.
    #[serde(rename = "t", default, skip_serializing_if = "is_zero")]
    pub state: u8,
    /// The packet id, when in flight.
    #[serde(rename = "p", default, skip_serializing_if = "is_zero16")]
    pub packet_id: u16,
    /// Delivered at this QoS.
    #[serde(rename = "q")]
    pub qos: u8,
    /// RETAIN flag as delivered.
    #[serde(rename = "r", default, skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
    /// Subscription identifiers.
    #[serde(rename = "i", default, skip_serializing_if = "Vec::is_empty")]
    pub sub_ids: Vec<u32>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

fn is_zero16(v: &u16) -> bool {
    *v == 0
}

/// Why a record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON of this shape.
    #[error("session record: {0}")]
    Json(#[from] serde_json::Error),
    /// A field out of range.
    #[error("session record: bad {0}")]
    Field(&'static str),
}

/// Unix milliseconds.
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time of Unix milliseconds.
pub fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn qos(q: u8) -> Result<QoS, RecordError> {
    QoS::from_u8(q).map_err(|_| RecordError::Field("qos"))
}

impl MetaRecord {
    /// The record of `m`.
    pub fn of(m: &SessionMeta) -> MetaRecord {
        MetaRecord {
            version: match m.version {
                ProtocolVersion::V311 => 4,
                ProtocolVersion::V5 => 5,
            },
            username: m.username.clone(),
            expiry_interval: m.expiry_interval,
            expires_at: m.expires_at.map(ms),
            disconnected_at: m.disconnected_at.map(ms),
            pending_will: m.pending_will.as_ref().and_then(|(will, due)| {
                let body = envelope::encode(&will_message(will)).ok()?;
                Some((body.to_vec(), ms(*due)))
            }),
            dropped: m.dropped,
            connected_will: m.connected_will.as_ref().and_then(|will| {
                let body = envelope::encode(&will_message(will)).ok()?;
                Some(body.to_vec())
            }),
        }
    }

    /// The session fields of `client_id` it records.
    pub fn meta(&self, client_id: Arc<str>) -> Result<SessionMeta, RecordError> {
        let will = |body: &[u8]| {
            let m = envelope::decode(body, 0).map_err(|_| RecordError::Field("will"))?;
            Ok::<_, RecordError>(Will {
                topic: m.topic,
                payload: m.payload,
                qos: m.qos,
                retain: m.retain,
                properties: m.properties,
            })
        };
        let pending_will = match &self.pending_will {
            None => None,
            Some((body, due)) => Some((will(body)?, time(*due))),
        };
        let connected_will = self.connected_will.as_deref().map(will).transpose()?;
        Ok(SessionMeta {
            client_id,
            version: match self.version {
                4 => ProtocolVersion::V311,
                5 => ProtocolVersion::V5,
                _ => return Err(RecordError::Field("version")),
            },
            username: self.username.clone(),
            expiry_interval: self.expiry_interval,
            expires_at: self.expires_at.map(time),
            disconnected_at: self.disconnected_at.map(time),
            pending_will,
            dropped: self.dropped,
            connected_will,
        })
    }
}

/// A will as a message (to keep it in the envelope format).
fn will_message(w: &Will) -> StoredMessage {
    StoredMessage {
        id: 0,
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: w.qos,
        retain: w.retain,
        properties: w.properties.clone(),
        expires_at: None,
        received_at: UNIX_EPOCH,
        publisher: None,
    }
}

impl SubRecord {
    /// The record of a subscription made when `since` was routed.
    pub fn of(filter: &TopicFilter, e: &SubEntry, since: u64) -> SubRecord {
        SubRecord {
            filter: filter.as_str().to_owned(),
            qos: e.options.qos as u8,
            no_local: e.options.no_local,
            retain_as_published: e.options.retain_as_published,
            retain_handling: e.options.retain_handling as u8,
            id: e.id,
            since,
        }
    }

    /// The subscription it records.
    pub fn entry(&self) -> Result<(TopicFilter, SubEntry), RecordError> {
        let filter = TopicFilter::new(&self.filter).map_err(|_| RecordError::Field("filter"))?;
        let retain_handling = match self.retain_handling {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(RecordError::Field("retain_handling")),
        };
        Ok((
            filter,
            SubEntry {
                options: SubscriptionOptions {
                    qos: qos(self.qos)?,
                    no_local: self.no_local,
                    retain_as_published: self.retain_as_published,
                    retain_handling,
                },
                id: self.id,
            },
        ))
    }
}

impl DeliveryRecord {
    /// The record of `d`.
    pub fn of(d: &StoredDelivery) -> DeliveryRecord {
        let (state, packet_id) = match d.state {
            DeliveryState::Queued => (0, 0),
            DeliveryState::AwaitingAck(id) => (1, id),
            DeliveryState::AwaitingComp(id) => (2, id),
        };
        DeliveryRecord {
            seq: d.seq,
            msg: d.msg.id,
            state,
            packet_id,
            qos: d.qos as u8,
            retain: d.retain,
            sub_ids: d.sub_ids.clone(),
        }
    }

    /// Sets its state.
    pub fn set_state(&mut self, state: DeliveryState) {
        (self.state, self.packet_id) = match state {
            DeliveryState::Queued => (0, 0),
            DeliveryState::AwaitingAck(id) => (1, id),
            DeliveryState::AwaitingComp(id) => (2, id),
        };
    }

    /// The delivery it records, of message `msg`.
    pub fn delivery(&self, msg: Arc<StoredMessage>) -> Result<StoredDelivery, RecordError> {
        let state = match (self.state, self.packet_id) {
            (0, _) => DeliveryState::Queued,
            (1, id) if id != 0 => DeliveryState::AwaitingAck(id),
            (2, id) if id != 0 => DeliveryState::AwaitingComp(id),
            _ => return Err(RecordError::Field("delivery state")),
        };
        Ok(StoredDelivery {
            seq: self.seq,
            state,
            qos: qos(self.qos)?,
            retain: self.retain,
            sub_ids: self.sub_ids.clone(),
            msg,
        })
    }
}

/// The bucket key of a client id: letters, digits, `-` and `_` as they are, every other
/// byte as `=XX` (a key may hold only `[-/_=.a-zA-Z0-9]`, and `.` and `/` would make
/// tokens).
pub fn key_of(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len() + 8);
    for b in client_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    out
}

/// The client id of a bucket key [`key_of`] made.
pub fn client_of(key: &str) -> Option<String> {
    if key == "=" {
        return Some(String::new());
    }
    let mut out = Vec::with_capacity(key.len());
    let mut bytes = key.bytes();
    while let Some(b) = bytes.next() {
        if b == b'=' {
            let hi = bytes.next().and_then(hex)?;
            let lo = bytes.next().and_then(hex)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bucket_safe_and_distinct() {
        for id in ["sensor-1_a", "a.b/c d", "=41", "\u{e9}", "", "x=y"] {
            assert_eq!(client_of(&key_of(id)).as_deref(), Some(id));
        }
        assert_eq!(key_of("sensor-1_a"), "sensor-1_a");
        assert_eq!(key_of("a.b/c d"), "a=2Eb=2Fc=20d");
        assert_eq!(key_of("=41"), "=3D41");
        assert_ne!(key_of("A"), key_of("=41"));
        assert_eq!(key_of("\u{e9}"), "=C3=A9");
    }

    #[test]
    fn a_session_comes_back_from_its_record() {
        let due = time(1_700_000_100_000);
        let meta = SessionMeta {
            client_id: Arc::from("c"),
            version: ProtocolVersion::V5,
            username: Some("u".into()),
            expiry_interval: 300,
            expires_at: Some(time(1_700_000_300_000)),
            disconnected_at: Some(time(1_700_000_000_000)),
            pending_will: Some((
                Will {
                    topic: protocol::TopicName::new("w/t").expect("topic"),
                    payload: bytes::Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: Default::default(),
                },
                due,
            )),
            dropped: 3,
            connected_will: Some(Will {
                topic: protocol::TopicName::new("w/open").expect("topic"),
                payload: bytes::Bytes::from_static(b"lost"),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: Default::default(),
            }),
        };
        let json = serde_json::to_vec(&MetaRecord::of(&meta)).expect("json");
        let back: MetaRecord = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back.meta(Arc::from("c")).expect("valid"), meta);

        let filter = TopicFilter::new("a/+").expect("filter");
        let entry = SubEntry {
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::SendIfNew,
            },
            id: Some(9),
        };
        let sub = SubRecord::of(&filter, &entry, 42);
        assert_eq!(sub.entry().expect("valid"), (filter, entry));
    }
}
