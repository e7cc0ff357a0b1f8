//! Rows of the SQLite store to and from the store's types: messages and wills as MQTT 5.0
//! PUBLISH packets, options packed as the SUBSCRIBE options byte, times as unix milliseconds.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use protocol::{
    Packet, Properties, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
    TopicFilter, TopicName, Will,
};
use rusqlite::types::ValueRef;
use rusqlite::Row;

use super::{DeliveryState, RetainedMeta, SessionMeta, StoredDelivery, StoredMessage};
use crate::subscriptions::SubEntry;

use super::Failure;

/// Serializes a message as the MQTT 5.0 PUBLISH that carries it.
pub(super) fn encode_message(
    topic: &TopicName,
    payload: &Bytes,
    qos: QoS,
    retain: bool,
    properties: Properties,
) -> Result<Vec<u8>, Failure> {
    let publish = Publish {
        dup: false,
        qos,
        retain,
        topic: topic.clone(),
        packet_id: (qos != QoS::AtMostOnce).then_some(NonZeroU16::MIN),
        payload: payload.clone(),
        properties,
    };
    let mut buf = Vec::with_capacity(16 + topic.len() + payload.len());
    Packet::Publish(publish)
        .encode(ProtocolVersion::V5, &mut buf)
        .map_err(|e| Failure::Invalid(format!("cannot store a message to {topic}: {e}")))?;
    Ok(buf)
}

/// Reads back what [`encode_message`] wrote.
pub(super) fn decode_message(blob: &[u8]) -> Result<Publish, String> {
    match Packet::decode(blob, ProtocolVersion::V5, u32::MAX) {
        Ok(Some((Packet::Publish(p), n))) if n == blob.len() => Ok(p),
        Ok(_) => Err("message: not one whole PUBLISH".to_owned()),
        Err(e) => Err(format!("message: {e}")),
    }
}

/// The subscription options as an integer: the SUBSCRIBE options byte of MQTT 5.0,
/// `qos | no_local << 2 | retain_as_published << 3 | retain_handling << 4`.
pub(super) fn pack_options(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

/// The inverse of [`pack_options`]; `None` for a value it does not produce.
pub(super) fn unpack_options(v: i64) -> Option<SubscriptionOptions> {
    let byte = u8::try_from(v).ok()?;
    if byte & 0xC0 != 0 {
        return None;
    }
    Some(SubscriptionOptions {
        qos: QoS::from_u8(byte & 0x03).ok()?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return None,
        },
    })
}

pub(super) fn pack_state(s: DeliveryState) -> (u8, Option<u16>) {
    match s {
        DeliveryState::Queued => (0, None),
        DeliveryState::AwaitingAck(id) => (1, Some(id)),
        DeliveryState::AwaitingComp(id) => (2, Some(id)),
    }
}

pub(super) fn unpack_state(state: i64, packet_id: Option<i64>) -> Result<DeliveryState, String> {
    let id = packet_id
        .map(|v| int_as::<u16>(v, "packet_id"))
        .transpose()?;
    match (state, id) {
        (0, None) => Ok(DeliveryState::Queued),
        (1, Some(id)) => Ok(DeliveryState::AwaitingAck(id)),
        (2, Some(id)) => Ok(DeliveryState::AwaitingComp(id)),
        _ => Err(format!("state {state} with packet id {packet_id:?}")),
    }
}

pub(super) fn seq_to_sql(seq: u64) -> Result<i64, Failure> {
    i64::try_from(seq).map_err(|_| Failure::Invalid(format!("seq {seq} is out of range")))
}

pub(super) fn id_to_sql(id: u64) -> Result<i64, Failure> {
    i64::try_from(id).map_err(|_| Failure::Invalid(format!("message id {id} is out of range")))
}

/// Unix milliseconds (negative before 1970).
pub(super) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

pub(super) fn from_ms(ms: i64, name: &str) -> Result<SystemTime, String> {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
    .ok_or_else(|| format!("{name}: time {ms} out of range"))
}

pub(super) fn opt_time(row: &Row<'_>, i: usize, name: &str) -> Result<Option<SystemTime>, String> {
    opt_int(row, i, name)?
        .map(|ms| from_ms(ms, name))
        .transpose()
}

pub(super) fn int(row: &Row<'_>, i: usize, name: &str) -> Result<i64, String> {
    opt_int(row, i, name)?.ok_or_else(|| format!("{name} is NULL"))
}

pub(super) fn opt_int(row: &Row<'_>, i: usize, name: &str) -> Result<Option<i64>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Integer(v)) => Ok(Some(v)),
        Ok(ValueRef::Null) => Ok(None),
        Ok(v) => Err(format!("{name} is {}, not an integer", v.data_type())),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

pub(super) fn int_as<T: TryFrom<i64>>(v: i64, name: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{name} {v} out of range"))
}

pub(super) fn text(row: &Row<'_>, i: usize, name: &str) -> Result<String, String> {
    opt_text(row, i, name)?.ok_or_else(|| format!("{name} is NULL"))
}

pub(super) fn opt_text(row: &Row<'_>, i: usize, name: &str) -> Result<Option<String>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Text(t)) => std::str::from_utf8(t)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| format!("{name} is not UTF-8")),
        Ok(ValueRef::Null) => Ok(None),
        Ok(v) => Err(format!("{name} is {}, not text", v.data_type())),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

pub(super) fn opt_blob<'r>(
    row: &'r Row<'_>,
    i: usize,
    name: &str,
) -> Result<Option<&'r [u8]>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Blob(b)) => Ok(Some(b)),
        Ok(ValueRef::Null) => Ok(None),
        Ok(v) => Err(format!("{name} is {}, not a blob", v.data_type())),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

pub(super) fn blob<'r>(row: &'r Row<'_>, i: usize, name: &str) -> Result<&'r [u8], String> {
    opt_blob(row, i, name)?.ok_or_else(|| format!("{name} is NULL"))
}

pub(super) fn decode_session(row: &Row<'_>) -> Result<SessionMeta, String> {
    let client = text(row, 0, "client_id")?;
    (|| {
        let version = match int(row, 1, "version")? {
            4 => ProtocolVersion::V311,
            5 => ProtocolVersion::V5,
            v => return Err(format!("version {v}")),
        };
        let pending_will = match opt_blob(row, 6, "will")? {
            None => None,
            Some(b) => {
                let p = decode_message(b).map_err(|d| format!("will {d}"))?;
                let mut properties = p.properties;
                properties.will_delay_interval = opt_int(row, 7, "will_delay")?
                    .map(|v| int_as::<u32>(v, "will_delay"))
                    .transpose()?;
                let at = opt_time(row, 8, "will_at_ms")?.ok_or("will_at_ms is NULL")?;
                let will = Will {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    properties,
                };
                Some((will, at))
            }
        };
        Ok(SessionMeta {
            client_id: Arc::from(client.as_str()),
            version,
            username: opt_text(row, 2, "username")?,
            expiry_interval: int_as(int(row, 3, "expiry_interval")?, "expiry_interval")?,
            expires_at: opt_time(row, 4, "expires_at_ms")?,
            disconnected_at: opt_time(row, 5, "disconnected_at_ms")?,
            pending_will,
            dropped: int_as(int(row, 9, "dropped")?, "dropped")?,
            connected_will: None,
        })
    })()
    .map_err(|d: String| format!("key {client:?}: {d}"))
}

pub(super) fn decode_subscription(
    row: &Row<'_>,
) -> Result<(String, TopicFilter, SubEntry), String> {
    let client = text(row, 0, "client_id")?;
    let filter = text(row, 1, "filter")?;
    (|| {
        let options = int(row, 2, "options")?;
        let entry = SubEntry {
            options: unpack_options(options).ok_or(format!("options {options}"))?,
            id: opt_int(row, 3, "sub_id")?
                .map(|v| int_as::<u32>(v, "sub_id"))
                .transpose()?,
        };
        let filter = TopicFilter::new(&filter).map_err(|e| format!("filter: {e}"))?;
        Ok((filter, entry))
    })()
    .map(|(f, e)| (client.clone(), f, e))
    .map_err(|d: String| format!("key ({client:?}, {filter:?}): {d}"))
}

/// Reads a row of [`DELIVERY_COLUMNS`].
pub(super) fn decode_delivery(row: &Row<'_>) -> Result<(String, StoredDelivery), String> {
    let client = text(row, 0, "client_id")?;
    let seq = int(row, 1, "seq").map_err(|d| format!("key ({client:?}, ?): {d}"))?;
    (|| {
        let state = unpack_state(int(row, 2, "state")?, opt_int(row, 3, "packet_id")?)?;
        let qos = int_as::<u8>(int(row, 4, "qos")?, "qos")?;
        let qos = QoS::from_u8(qos).map_err(|_| format!("qos {qos}"))?;
        let retain = int(row, 5, "retain")? != 0;
        let raw_ids = blob(row, 6, "sub_ids")?;
        if raw_ids.len() % 4 != 0 {
            return Err(format!("sub_ids of {} bytes", raw_ids.len()));
        }
        let sub_ids = raw_ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let id = int(row, 7, "message_id")?;
        let msg = decode_stored_message(row, 7)
            .map_err(|d| format!("message {id} (table messages): {d}"))?;
        Ok(StoredDelivery {
            seq: int_as(seq, "seq")?,
            state,
            qos,
            retain,
            sub_ids,
            msg: Arc::new(msg),
        })
    })()
    .map(|d| (client.clone(), d))
    .map_err(|d: String| format!("key ({client:?}, {seq}): {d}"))
}

/// Reads `id, message, expires_at_ms, received_at_ms, publisher` from column `first` on.
pub(super) fn decode_stored_message(row: &Row<'_>, first: usize) -> Result<StoredMessage, String> {
    let id = int_as::<u64>(int(row, first, "id")?, "id")?;
    let p = match opt_blob(row, first + 1, "message")? {
        Some(b) => decode_message(b)?,
        None => return Err("missing".to_owned()),
    };
    Ok(StoredMessage {
        id,
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
        expires_at: opt_time(row, first + 2, "expires_at_ms")?,
        received_at: from_ms(int(row, first + 3, "received_at_ms")?, "received_at_ms")?,
        publisher: opt_text(row, first + 4, "publisher")?.map(Arc::from),
    })
}

/// Reads `topic`, then a message as [`decode_stored_message`] does.
pub(super) fn decode_retained(row: &Row<'_>) -> Result<StoredMessage, String> {
    let topic = text(row, 0, "topic")?;
    (|| {
        let msg = decode_stored_message(row, 1)?;
        if msg.topic.as_str() != topic {
            return Err(format!("message is for topic {:?}", msg.topic.as_str()));
        }
        Ok(msg)
    })()
    .map_err(|d: String| format!("key {topic:?}: {d}"))
}

/// Reads `topic, id, qos, payload_len, expires_at_ms, received_at_ms`.
pub(super) fn decode_retained_meta(row: &Row<'_>) -> Result<RetainedMeta, String> {
    let topic = text(row, 0, "topic")?;
    (|| {
        let qos = int_as::<u8>(int(row, 2, "qos")?, "qos")?;
        Ok(RetainedMeta {
            topic: TopicName::new(&topic).map_err(|e| format!("topic: {e}"))?,
            id: int_as(int(row, 1, "id")?, "id")?,
            qos: QoS::from_u8(qos).map_err(|_| format!("qos {qos}"))?,
            payload_len: int_as(int(row, 3, "payload_len")?, "payload_len")?,
            expires_at: opt_time(row, 4, "expires_at_ms")?,
            received_at: from_ms(int(row, 5, "received_at_ms")?, "received_at_ms")?,
        })
    })()
    .map_err(|d: String| format!("key {topic:?}: {d}"))
}
