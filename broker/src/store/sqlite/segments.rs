//! Queue segments: the deliveries queued for one session in one batch, as one row of
//! `queue_segments` (see [`MESSAGE_TABLES`](super::schema::MESSAGE_TABLES) for why).
//!
//! An entry is `seq: u64, message_id: i64, payload_len: u64` (big-endian), then `qos: u8`,
//! `retain: u8`, the number of subscription identifiers as a big-endian `u16` and the
//! identifiers as big-endian `u32`s. Entries are in seq order.

use super::*;

/// One queued delivery in a segment: everything of a delivery but its message, which is
/// the row `message_id` of `messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) message_id: i64,
    pub(super) payload_len: u64,
    pub(super) qos: u8,
    pub(super) retain: bool,
    pub(super) sub_ids: Vec<u32>,
}

impl Entry {
    /// The entry of a queued delivery.
    pub(super) fn of(d: &StoredDelivery) -> Result<Entry, Failure> {
        if d.sub_ids.len() > usize::from(u16::MAX) {
            return Err(Failure::Invalid(format!(
                "{} subscription identifiers on one delivery",
                d.sub_ids.len()
            )));
        }
        Ok(Entry {
            seq: d.seq,
            message_id: id_to_sql(d.msg.id)?,
            payload_len: d.msg.payload.len() as u64,
            qos: d.qos as u8,
            retain: d.retain,
            sub_ids: d.sub_ids.clone(),
        })
    }
}

/// The blob of entries (in the order given, which is seq order).
pub(super) fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 28);
    for e in entries {
        out.extend_from_slice(&e.seq.to_be_bytes());
        out.extend_from_slice(&e.message_id.to_be_bytes());
        out.extend_from_slice(&e.payload_len.to_be_bytes());
        out.push(e.qos);
        out.push(u8::from(e.retain));
        // At most u16::MAX: checked by `Entry::of`.
        out.extend_from_slice(&(e.sub_ids.len() as u16).to_be_bytes());
        for id in &e.sub_ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

/// The entries of a blob.
pub(super) fn decode(mut blob: &[u8]) -> Result<Vec<Entry>, String> {
    fn take<'b>(blob: &mut &'b [u8], n: usize) -> Result<&'b [u8], String> {
        if blob.len() < n {
            return Err(format!(
                "entries cut short ({} bytes left, {n} due)",
                blob.len()
            ));
        }
        let (head, rest) = blob.split_at(n);
        *blob = rest;
        Ok(head)
    }
    fn u64_of(b: &[u8]) -> u64 {
        let mut a = [0; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a)
    }
    let mut entries = Vec::new();
    while !blob.is_empty() {
        let seq = u64_of(take(&mut blob, 8)?);
        let message_id = u64_of(take(&mut blob, 8)?) as i64;
        let payload_len = u64_of(take(&mut blob, 8)?);
        let flags = take(&mut blob, 4)?;
        let (qos, retain) = (flags[0], flags[1] != 0);
        if qos > 2 {
            return Err(format!("seq {seq}: qos {qos}"));
        }
        let n = usize::from(u16::from_be_bytes([flags[2], flags[3]]));
        let sub_ids = take(&mut blob, 4 * n)?
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if entries.last().is_some_and(|e: &Entry| e.seq >= seq) {
            return Err(format!("seq {seq} out of order"));
        }
        entries.push(Entry {
            seq,
            message_id,
            payload_len,
            qos,
            retain,
            sub_ids,
        });
    }
    Ok(entries)
}

/// A stored segment: its key and its entries.
pub(super) struct Segment {
    pub(super) first_seq: i64,
    pub(super) entries: Vec<Entry>,
}

/// The segments of `client` whose range (`first_seq..=last_seq`) meets `low..=high`,
/// highest first. The ranges of a session's segments never overlap (see [`insert`]), so
/// their `last_seq`s rise with their keys: the walk down from `high` stops at the first
/// segment that ends below `low`, normally the first it reads.
pub(super) fn overlapping(
    tx: &Connection,
    client: &str,
    low: i64,
    high: i64,
) -> Result<Vec<Segment>, Failure> {
    let mut stmt = tx.prepare_cached(
        "SELECT first_seq, last_seq, entries FROM queue_segments \
         WHERE client_id = ?1 AND first_seq <= ?2 ORDER BY first_seq DESC",
    )?;
    let mut rows = stmt.query(params![client, high])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        let last_seq: i64 = row.get(1)?;
        if last_seq < low {
            break;
        }
        let first_seq: i64 = row.get(0)?;
        let entries = decode(row.get_ref(2)?.as_blob()?).map_err(|d| {
            Failure::Invalid(format!(
                "table queue_segments: key ({client:?}, {first_seq}): {d}"
            ))
        })?;
        found.push(Segment { first_seq, entries });
    }
    Ok(found)
}

/// Writes a segment back as it is now: deleted if empty, else rewritten (its key stays,
/// a lower bound still).
pub(super) fn rewrite(tx: &Connection, client: &str, s: &Segment) -> Result<(), Failure> {
    match s.entries.last() {
        None => {
            tx.prepare_cached(
                "DELETE FROM queue_segments WHERE client_id = ?1 AND first_seq = ?2",
            )?
            .execute(params![client, s.first_seq])?;
        }
        Some(last) => {
            tx.prepare_cached(
                "UPDATE queue_segments SET last_seq = ?3, count = ?4, bytes = ?5, entries = ?6 \
                 WHERE client_id = ?1 AND first_seq = ?2",
            )?
            .execute(params![
                client,
                s.first_seq,
                seq_to_sql(last.seq)?,
                s.entries.len() as i64,
                bytes_of(&s.entries),
                encode(&s.entries),
            ])?;
        }
    }
    Ok(())
}

/// The payload bytes of entries.
fn bytes_of(entries: &[Entry]) -> i64 {
    let total: u64 = entries.iter().map(|e| e.payload_len).sum();
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// Takes the delivery `seq` of `client` out of the stored segments, if one holds it.
pub(super) fn take(tx: &Connection, client: &str, seq: u64) -> Result<Option<Entry>, Failure> {
    let s = seq_to_sql(seq)?;
    for mut segment in overlapping(tx, client, s, s)? {
        if let Ok(i) = segment.entries.binary_search_by_key(&seq, |e| e.seq) {
            let entry = segment.entries.remove(i);
            rewrite(tx, client, &segment)?;
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Stores the entries a batch queued for `client` (seq order, no seq twice) as one segment.
/// A stored delivery with one of their seqs is replaced: removed, its message released (into
/// `released`, one per reference).
pub(super) fn insert(
    tx: &Connection,
    client: &str,
    mut entries: Vec<Entry>,
    released: &mut Vec<i64>,
) -> Result<(), Failure> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let (low, high) = (seq_to_sql(first.seq)?, seq_to_sql(last.seq)?);
    let contains =
        |entries: &[Entry], seq: u64| entries.binary_search_by_key(&seq, |e| e.seq).is_ok();
    // Rows of `deliveries` with the same seqs (normally none).
    let replaced: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT seq FROM deliveries WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3",
        )?;
        let rows = stmt.query_map(params![client, low, high], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for seq in replaced {
        if contains(&entries, seq as u64) {
            super::write::delete_deliveries(
                &mut tx.prepare_cached(super::write::DELETE_DELIVERY)?,
                params![client, seq],
                released,
            )?;
        }
    }
    // Stored segments over the same range (normally none): their entries with the same
    // seqs go, and they merge with the new entries into one segment, so that the ranges of
    // a session's segments never overlap.
    let mut first_seq = low;
    let mut kept = Vec::new();
    for segment in overlapping(tx, client, low, high)? {
        for e in segment.entries {
            if contains(&entries, e.seq) {
                released.push(e.message_id);
            } else {
                kept.push(e);
            }
        }
        first_seq = first_seq.min(segment.first_seq);
        tx.prepare_cached("DELETE FROM queue_segments WHERE client_id = ?1 AND first_seq = ?2")?
            .execute(params![client, segment.first_seq])?;
    }
    if !kept.is_empty() {
        entries.append(&mut kept);
        entries.sort_unstable_by_key(|e| e.seq);
    }
    let high = match entries.last() {
        Some(last) => seq_to_sql(last.seq)?,
        None => high,
    };
    tx.prepare_cached(
        "INSERT INTO queue_segments (client_id, first_seq, last_seq, count, bytes, entries) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        client,
        first_seq,
        high,
        entries.len() as i64,
        bytes_of(&entries),
        encode(&entries),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entries_come_back_as_they_were_encoded_and_a_cut_blob_is_refused() {
        let entries = vec![
            Entry {
                seq: 3,
                message_id: 7,
                payload_len: 10,
                qos: 1,
                retain: false,
                sub_ids: vec![],
            },
            Entry {
                seq: 9,
                message_id: 1 << 40,
                payload_len: 0,
                qos: 2,
                retain: true,
                sub_ids: vec![1, 268_435_455],
            },
        ];
        let blob = encode(&entries);
        assert_eq!(decode(&blob).unwrap(), entries);
        assert!(decode(&blob[..blob.len() - 1]).is_err());
        let mut swapped = encode(&entries[1..]);
        swapped.extend(encode(&entries[..1]));
        assert!(decode(&swapped).is_err());
    }
}
