//! The write path: one engine batch's operations applied inside its transaction.
//!
//! Deliveries queued by a batch are kept in [`Batch::pending`] until its end, then stored
//! as one queue segment per session ([`segments::insert`]), or as a row of `deliveries`
//! for a session the batch queued one delivery for ([`put_delivery_row`]); until then the
//! batch's later operations on them find them there. A delivery is stored once: as a row of
//! `deliveries` or as an entry of a segment, and whichever it is, an operation on its seq
//! finds it.

use std::collections::hash_map::Entry::Vacant;

use super::segments::{self, Entry, SegmentIndex};
use super::*;

/// The statements a batch runs once per message or delivery, taken from the connection's
/// cache at their first use in a batch and kept to its end: a lookup in that cache hashes
/// the statement's text, and returning it there hashes it again, which cost about as much
/// as binding the row (callgrind).
#[derive(Default)]
pub(super) struct Hot<'c> {
    insert_message: Option<CachedStatement<'c>>,
    insert_delivery: Option<CachedStatement<'c>>,
    delete_delivery: Option<CachedStatement<'c>>,
    set_state: Option<CachedStatement<'c>>,
}

/// The statement in `slot`, prepared (or taken from the cache) on first use.
pub(super) fn hot<'s, 'c>(
    slot: &'s mut Option<CachedStatement<'c>>,
    tx: &'c Connection,
    sql: &str,
) -> Result<&'s mut CachedStatement<'c>, Failure> {
    let stmt = match slot.take() {
        Some(stmt) => stmt,
        None => tx.prepare_cached(sql)?,
    };
    Ok(slot.insert(stmt))
}

/// Removes one delivery, giving back its message's id.
pub(super) const DELETE_DELIVERY: &str =
    "DELETE FROM deliveries WHERE client_id = ?1 AND seq = ?2 RETURNING message_id";

/// Runs a `DELETE ... RETURNING message_id` on deliveries, noting the messages released.
pub(super) fn delete_deliveries(
    stmt: &mut CachedStatement<'_>,
    params: impl rusqlite::Params,
    released: &mut Vec<i64>,
) -> Result<(), Failure> {
    let mut rows = stmt.query(params)?;
    while let Some(row) = rows.next()? {
        released.push(row.get(0)?);
    }
    Ok(())
}

pub(super) fn apply_op<'c>(
    tx: &'c Connection,
    op: &Op,
    batch: &mut Batch,
    index: &mut SegmentIndex,
    stmts: &mut Hot<'c>,
) -> Result<(), Failure> {
    match op {
        Op::PutSession(meta) => {
            let (will, will_delay, will_at) = match &meta.pending_will {
                Some((will, at)) => {
                    let mut properties = will.properties.clone();
                    let delay = properties.will_delay_interval.take();
                    let blob = encode_message(
                        &will.topic,
                        &will.payload,
                        will.qos,
                        will.retain,
                        properties,
                    )?;
                    (Some(blob), delay, Some(to_ms(*at)))
                }
                None => (None, None, None),
            };
            tx.prepare_cached(
                "INSERT INTO sessions (client_id, version, username, expiry_interval, \
                 expires_at_ms, disconnected_at_ms, will, will_delay, will_at_ms, dropped) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (client_id) DO UPDATE SET version = excluded.version, \
                 username = excluded.username, expiry_interval = excluded.expiry_interval, \
                 expires_at_ms = excluded.expires_at_ms, \
                 disconnected_at_ms = excluded.disconnected_at_ms, will = excluded.will, \
                 will_delay = excluded.will_delay, will_at_ms = excluded.will_at_ms, \
                 dropped = excluded.dropped",
            )?
            .execute(params![
                &*meta.client_id,
                meta.version.level(),
                meta.username,
                meta.expiry_interval,
                meta.expires_at.map(to_ms),
                meta.disconnected_at.map(to_ms),
                will,
                will_delay,
                will_at,
                i64::try_from(meta.dropped).unwrap_or(i64::MAX),
            ])?;
        }
        Op::DeleteSession(client) => {
            if let Some(entries) = batch.pending.remove(client) {
                batch.released.extend(entries.iter().map(|e| e.message_id));
            }
            if let Some(stored) = index.remove_session(client) {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM queue_segments WHERE id = ?1 RETURNING entries")?;
                for placed in stored.values() {
                    let mut rows = stmt.query([placed.row])?;
                    let mut found = 0;
                    while let Some(row) = rows.next()? {
                        found += 1;
                        let entries =
                            segments::decode(row.get_ref(0)?.as_blob()?).map_err(|d| {
                                Failure::Invalid(format!(
                                    "table queue_segments: row {} ({client:?}): {d}",
                                    placed.row
                                ))
                            })?;
                        batch.released.extend(entries.iter().map(|e| e.message_id));
                    }
                    drop(rows);
                    segments::expect_one(found, client, placed.row)?;
                }
            }
            delete_deliveries(
                &mut tx.prepare_cached(
                    "DELETE FROM deliveries WHERE client_id = ?1 RETURNING message_id",
                )?,
                [&**client],
                &mut batch.released,
            )?;
            for sql in [
                "DELETE FROM subscriptions WHERE client_id = ?1",
                "DELETE FROM inbound_qos2 WHERE client_id = ?1",
                "DELETE FROM sessions WHERE client_id = ?1",
            ] {
                tx.prepare_cached(sql)?.execute([&**client])?;
            }
        }
        Op::PutSubscription {
            client,
            filter,
            entry,
        } => {
            tx.prepare_cached(
                "INSERT INTO subscriptions (client_id, filter, options, sub_id) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (client_id, filter) \
                 DO UPDATE SET options = excluded.options, sub_id = excluded.sub_id",
            )?
            .execute(params![
                &**client,
                filter.as_str(),
                pack_options(entry.options),
                entry.id
            ])?;
        }
        Op::DeleteSubscription { client, filter } => {
            tx.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")?
                .execute(params![&**client, filter.as_str()])?;
        }
        Op::PutDelivery { client, delivery } => {
            let d = &**delivery;
            let m = &d.msg;
            let id = id_to_sql(m.id)?;
            // The message, once per batch (a stored one is left as it is: an id always
            // names the same message). Its references are counted at the batch's end.
            if let Vacant(slot) = batch.written.entry(id) {
                let message =
                    encode_message(&m.topic, &m.payload, m.qos, m.retain, m.properties.clone())?;
                let inserted = hot(
                    &mut stmts.insert_message,
                    tx,
                    "INSERT INTO messages (id, payload_len, expires_at_ms, received_at_ms, \
                     publisher, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![
                    id,
                    i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                    m.expires_at.map(to_ms),
                    to_ms(m.received_at),
                    m.publisher.as_deref(),
                    message,
                ])?;
                slot.insert(inserted == 1);
            }
            *batch.refs.entry(id).or_default() += 1;
            // It replaces a delivery of the same seq queued earlier in this batch; one stored
            // before is replaced when the segment is written (below: now).
            if let Some(old) = take_pending(batch, client, d.seq) {
                batch.released.push(old.message_id);
            }
            if d.state == DeliveryState::Queued {
                batch
                    .pending
                    .entry(client.clone())
                    .or_default()
                    .push(Entry::of(d)?);
            } else {
                put_delivery_row(tx, stmts, batch, index, client, d.state, &Entry::of(d)?)?;
            }
        }
        Op::SetDeliveryState { client, seq, state } => {
            let (packed, packet_id) = pack_state(*state);
            let sql_seq = seq_to_sql(*seq)?;
            // Queued in this batch: a row of `deliveries` now, replacing a stored one.
            let moved = match take_pending(batch, client, *seq) {
                Some(e) => {
                    if let Some(old) = segments::take(tx, index, client, *seq)? {
                        batch.released.push(old.message_id);
                    }
                    Some(e)
                }
                None => {
                    let updated = hot(
                        &mut stmts.set_state,
                        tx,
                        "UPDATE deliveries SET state = ?3, packet_id = ?4 \
                         WHERE client_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![&**client, sql_seq, packed, packet_id])?;
                    if updated == 0 && *state != DeliveryState::Queued {
                        segments::take(tx, index, client, *seq)?
                    } else {
                        None
                    }
                }
            };
            if let Some(e) = moved {
                put_row(
                    tx,
                    stmts,
                    batch,
                    client,
                    params![
                        &**client,
                        sql_seq,
                        packed,
                        packet_id,
                        e.qos,
                        e.retain,
                        pack_sub_ids(&e.sub_ids),
                        e.message_id,
                    ],
                )?;
            }
        }
        Op::DeleteDelivery { client, seq } => {
            let sql_seq = seq_to_sql(*seq)?;
            let before = batch.released.len();
            let pending = take_pending(batch, client, *seq);
            let shadowed = pending.is_some();
            if let Some(e) = pending {
                batch.released.push(e.message_id);
            }
            delete_deliveries(
                hot(&mut stmts.delete_delivery, tx, DELETE_DELIVERY)?,
                params![&**client, sql_seq],
                &mut batch.released,
            )?;
            if shadowed || batch.released.len() == before {
                if let Some(e) = segments::take(tx, index, client, *seq)? {
                    batch.released.push(e.message_id);
                }
            }
        }
        Op::PutInboundQos2 { client, packet_id } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES (?1, ?2)",
            )?
            .execute(params![&**client, packet_id])?;
        }
        Op::DeleteInboundQos2 { client, packet_id } => {
            tx.prepare_cached("DELETE FROM inbound_qos2 WHERE client_id = ?1 AND packet_id = ?2")?
                .execute(params![&**client, packet_id])?;
        }
        Op::PutRetained(m) => {
            let message =
                encode_message(&m.topic, &m.payload, m.qos, m.retain, m.properties.clone())?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO retained (topic, id, qos, payload_len, expires_at_ms, \
                 received_at_ms, publisher, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                m.topic.as_str(),
                id_to_sql(m.id)?,
                m.qos as u8,
                i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                m.expires_at.map(to_ms),
                to_ms(m.received_at),
                m.publisher.as_deref(),
                message,
            ])?;
        }
        Op::DeleteRetained(topic) => {
            tx.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                .execute([topic.as_str()])?;
        }
        // Not a change of this store's state (see `Store::routes`).
        Op::Route(_)
        | Op::Routed(_)
        | Op::Released(_)
        | Op::SharedGroups(_)
        | Op::Spilled { .. } => {}
    }
    Ok(())
}

/// Takes the delivery `seq` of `client` out of the deliveries this batch queued.
fn take_pending(batch: &mut Batch, client: &str, seq: u64) -> Option<Entry> {
    let entries = batch.pending.get_mut(client)?;
    let i = entries.iter().rposition(|e| e.seq == seq)?;
    Some(entries.remove(i))
}

/// Stores a delivery in `state` as a row of `deliveries`, replacing a delivery of the same
/// seq stored before (as a row or in a segment), whose message it releases.
pub(super) fn put_delivery_row<'c>(
    tx: &'c Connection,
    stmts: &mut Hot<'c>,
    batch: &mut Batch,
    index: &mut SegmentIndex,
    client: &Arc<str>,
    state: DeliveryState,
    e: &Entry,
) -> Result<(), Failure> {
    if let Some(old) = segments::take(tx, index, client, e.seq)? {
        batch.released.push(old.message_id);
    }
    let (state, packet_id) = pack_state(state);
    put_row(
        tx,
        stmts,
        batch,
        client,
        params![
            &**client,
            seq_to_sql(e.seq)?,
            state,
            packet_id,
            e.qos,
            e.retain,
            pack_sub_ids(&e.sub_ids),
            e.message_id,
        ],
    )
}

/// Subscription identifiers as the `sub_ids` column holds them.
fn pack_sub_ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

/// Inserts a row of `deliveries` (`client_id, seq, state, packet_id, qos, retain, sub_ids,
/// message_id`), replacing one of the same seq, whose message it releases.
fn put_row<'c>(
    tx: &'c Connection,
    stmts: &mut Hot<'c>,
    batch: &mut Batch,
    client: &str,
    row: &[&dyn rusqlite::ToSql],
) -> Result<(), Failure> {
    let inserted = hot(
        &mut stmts.insert_delivery,
        tx,
        "INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, \
         sub_ids, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (client_id, seq) DO NOTHING",
    )?
    .execute(row)?;
    if inserted == 0 {
        // It replaces a delivery, which releases its own message (the new one is stored
        // already: it may be the same).
        delete_deliveries(
            hot(&mut stmts.delete_delivery, tx, DELETE_DELIVERY)?,
            params![client, row[1]],
            &mut batch.released,
        )?;
        tx.prepare_cached(
            "INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, \
             sub_ids, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(row)?;
    }
    Ok(())
}
