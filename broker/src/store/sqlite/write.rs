//! The write path: one engine batch's operations applied inside its transaction.

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
const DELETE_DELIVERY: &str =
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
            let seq = seq_to_sql(d.seq)?;
            // The message, once per batch (a stored one is left as it is: an id always
            // names the same message).
            if batch.written.insert(id) {
                let message =
                    encode_message(&m.topic, &m.payload, m.qos, m.retain, m.properties.clone())?;
                hot(
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
            }
            let (state, packet_id) = pack_state(d.state);
            let sub_ids: Vec<u8> = d.sub_ids.iter().flat_map(|id| id.to_be_bytes()).collect();
            let row = params![
                &**client,
                seq,
                state,
                packet_id,
                d.qos as u8,
                d.retain,
                sub_ids,
                id,
            ];
            let inserted = hot(
                &mut stmts.insert_delivery,
                tx,
                "INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, \
                 sub_ids, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (client_id, seq) DO NOTHING",
            )?
            .execute(row)?;
            if inserted == 0 {
                // It replaces a delivery, which releases its own message (the new one is
                // stored already: it may be the same).
                delete_deliveries(
                    hot(&mut stmts.delete_delivery, tx, DELETE_DELIVERY)?,
                    params![&**client, seq],
                    &mut batch.released,
                )?;
                tx.prepare_cached(
                    "INSERT INTO deliveries (client_id, seq, state, packet_id, qos, retain, \
                     sub_ids, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(row)?;
            }
        }
        Op::SetDeliveryState { client, seq, state } => {
            let (state, packet_id) = pack_state(*state);
            hot(
                &mut stmts.set_state,
                tx,
                "UPDATE deliveries SET state = ?3, packet_id = ?4 \
                 WHERE client_id = ?1 AND seq = ?2",
            )?
            .execute(params![&**client, seq_to_sql(*seq)?, state, packet_id])?;
        }
        Op::DeleteDelivery { client, seq } => {
            delete_deliveries(
                hot(&mut stmts.delete_delivery, tx, DELETE_DELIVERY)?,
                params![&**client, seq_to_sql(*seq)?],
                &mut batch.released,
            )?;
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
    }
    Ok(())
}
