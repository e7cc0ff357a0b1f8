//! Queue segments: the deliveries queued for one session in one batch, as one row of
//! `queue_segments` (see [`MESSAGE_TABLES`](super::schema::MESSAGE_TABLES) for why).
//!
//! An entry is `seq: u64, message_id: i64, payload_len: u64` (big-endian), then `qos: u8`,
//! `retain: u8`, the number of subscription identifiers as a big-endian `u16` and the
//! identifiers as big-endian `u32`s. Entries are in seq order.

use std::collections::BTreeMap;

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

/// Where each session's segments are: per session, `first_seq` to the segment's row and
/// `last_seq`. `queue_segments` is in the order its rows were written (a rowid table, no
/// index), so that the segments a batch writes for many sessions are appended side by side
/// to a few pages; with the session and `first_seq` as the key (format 4) each of them went
/// into its session's own page, and a batch to 100 offline sessions rewrote some 200 pages
/// of the log (1.1 MB written per 14 messages queued; BENCHMARKS.md, section 6).
///
/// Kept in memory: one entry per stored segment, and a segment holds at least one queued
/// delivery, so it is bounded by the queues' own bound (`max_queued_messages` per session).
/// Read from the table at open ([`SegmentIndex::read`]); every write to the table goes
/// through the functions below, which change both in step. A batch that fails leaves the
/// index ahead of the rolled-back table, so the store reads it again (see `SqliteStore`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SegmentIndex {
    sessions: HashMap<Arc<str>, BTreeMap<i64, Placed>>,
}

/// Where a segment is: its row, and the highest seq it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) row: i64,
    pub(super) last_seq: i64,
}

impl SegmentIndex {
    /// The index of the stored segments. A segment whose range is empty or meets another
    /// of its session's is refused: the file was not written by us.
    pub(super) fn read(conn: &Connection) -> Result<SegmentIndex, Failure> {
        let mut stmt =
            conn.prepare("SELECT id, client_id, first_seq, last_seq FROM queue_segments")?;
        let mut rows = stmt.query([])?;
        let mut index = SegmentIndex::default();
        while let Some(row) = rows.next()? {
            let read = || -> Result<_, String> {
                Ok((
                    int(row, 0, "id")?,
                    text(row, 1, "client_id")?,
                    int(row, 2, "first_seq")?,
                    int(row, 3, "last_seq")?,
                ))
            };
            let (id, client, first_seq, last_seq) =
                read().map_err(|d| Failure::Invalid(format!("table queue_segments: {d}")))?;
            let bad = |d: &str| {
                Failure::Invalid(format!(
                    "table queue_segments: row {id} ({client:?}, {first_seq}..={last_seq}): {d}"
                ))
            };
            if first_seq < 0 {
                return Err(bad("a negative seq"));
            }
            if first_seq > last_seq {
                return Err(bad("an empty range"));
            }
            let placed = Placed { row: id, last_seq };
            let segments = match index.sessions.get_mut(client.as_str()) {
                Some(segments) => segments,
                None => index
                    .sessions
                    .entry(Arc::from(client.as_str()))
                    .or_default(),
            };
            if segments.insert(first_seq, placed).is_some() {
                return Err(bad("a second segment from the same seq"));
            }
        }
        for (client, segments) in &index.sessions {
            let mut below: Option<i64> = None;
            for (&first_seq, placed) in segments {
                if below.is_some_and(|last| last >= first_seq) {
                    return Err(Failure::Invalid(format!(
                        "table queue_segments: row {} ({client:?}, {first_seq}): its range meets the one before",
                        placed.row
                    )));
                }
                below = Some(placed.last_seq);
            }
        }
        Ok(index)
    }

    /// The segments of `client`, by `first_seq`.
    pub(super) fn of(&self, client: &str) -> impl Iterator<Item = (i64, Placed)> + '_ {
        self.sessions
            .get(client)
            .into_iter()
            .flat_map(|segments| segments.iter().map(|(&first, &placed)| (first, placed)))
    }

    /// Forgets the segments of `client`, giving them back.
    pub(super) fn remove_session(&mut self, client: &str) -> Option<BTreeMap<i64, Placed>> {
        self.sessions.remove(client)
    }

    fn remove(&mut self, client: &str, first_seq: i64) {
        if let Some(segments) = self.sessions.get_mut(client) {
            segments.remove(&first_seq);
            if segments.is_empty() {
                self.sessions.remove(client);
            }
        }
    }

    fn set(&mut self, client: &Arc<str>, first_seq: i64, placed: Placed) {
        match self.sessions.get_mut(&**client) {
            Some(segments) => {
                segments.insert(first_seq, placed);
            }
            None => {
                self.sessions
                    .entry(client.clone())
                    .or_default()
                    .insert(first_seq, placed);
            }
        }
    }
}

/// A stored segment: its row, its key and its entries.
pub(super) struct Segment {
    pub(super) row: i64,
    pub(super) first_seq: i64,
    pub(super) entries: Vec<Entry>,
}

/// The entries of the segment in `row`.
pub(super) fn read_entries(tx: &Connection, client: &str, row: i64) -> Result<Vec<Entry>, Failure> {
    let mut stmt = tx.prepare_cached("SELECT entries FROM queue_segments WHERE id = ?1")?;
    let mut rows = stmt.query([row])?;
    let invalid =
        |d: String| Failure::Invalid(format!("table queue_segments: row {row} ({client:?}): {d}"));
    match rows.next()? {
        Some(r) => decode(r.get_ref(0)?.as_blob()?).map_err(invalid),
        None => Err(invalid("missing".to_owned())),
    }
}

/// The segments of `client` whose range (`first_seq..=last_seq`) meets `low..=high`,
/// highest first. The ranges of a session's segments never overlap (see [`insert`]), so
/// their `last_seq`s rise with their `first_seq`s: the walk down from `high` stops at the
/// first segment that ends below `low`, normally the first it looks at.
pub(super) fn overlapping(
    tx: &Connection,
    index: &SegmentIndex,
    client: &str,
    low: i64,
    high: i64,
) -> Result<Vec<Segment>, Failure> {
    let mut found = Vec::new();
    let Some(segments) = index.sessions.get(client) else {
        return Ok(found);
    };
    for (&first_seq, placed) in segments.range(..=high).rev() {
        if placed.last_seq < low {
            break;
        }
        found.push(Segment {
            row: placed.row,
            first_seq,
            entries: read_entries(tx, client, placed.row)?,
        });
    }
    Ok(found)
}

/// Writes a segment back as it is now: deleted if empty, else rewritten (its `first_seq`
/// stays, a lower bound still).
pub(super) fn rewrite(
    tx: &Connection,
    index: &mut SegmentIndex,
    client: &Arc<str>,
    s: &Segment,
) -> Result<(), Failure> {
    match s.entries.last() {
        None => {
            let deleted = tx
                .prepare_cached("DELETE FROM queue_segments WHERE id = ?1")?
                .execute([s.row])?;
            expect_one(deleted, client, s.row)?;
            index.remove(client, s.first_seq);
        }
        Some(last) => {
            let last_seq = seq_to_sql(last.seq)?;
            let updated = tx.prepare_cached(
                "UPDATE queue_segments SET last_seq = ?2, count = ?3, bytes = ?4, entries = ?5 \
                 WHERE id = ?1",
            )?
            .execute(params![
                s.row,
                last_seq,
                s.entries.len() as i64,
                bytes_of(&s.entries),
                encode(&s.entries),
            ])?;
            expect_one(updated, client, s.row)?;
            index.set(
                client,
                s.first_seq,
                Placed {
                    row: s.row,
                    last_seq,
                },
            );
        }
    }
    Ok(())
}

/// A write through the index must find its row: one that does not means the index and the
/// table disagree, and the batch fails (which reads the index again).
pub(super) fn expect_one(rows: usize, client: &str, row: i64) -> Result<(), Failure> {
    if rows == 1 {
        Ok(())
    } else {
        Err(Failure::Invalid(format!(
            "table queue_segments: row {row} ({client:?}): not found"
        )))
    }
}

/// The payload bytes of entries.
fn bytes_of(entries: &[Entry]) -> i64 {
    let total: u64 = entries.iter().map(|e| e.payload_len).sum();
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// Takes the delivery `seq` of `client` out of the stored segments, if one holds it.
pub(super) fn take(
    tx: &Connection,
    index: &mut SegmentIndex,
    client: &Arc<str>,
    seq: u64,
) -> Result<Option<Entry>, Failure> {
    let s = seq_to_sql(seq)?;
    for mut segment in overlapping(tx, index, client, s, s)? {
        if let Ok(i) = segment.entries.binary_search_by_key(&seq, |e| e.seq) {
            let entry = segment.entries.remove(i);
            rewrite(tx, index, client, &segment)?;
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Stores the entries a batch queued for `client` (seq order, no seq twice) as one segment,
/// appended to the table. A stored delivery with one of their seqs is replaced: removed, its
/// message released (into `released`, one per reference). The session must be stored: the
/// table has no foreign key (its check on deleting a session would scan the table), so this
/// is where a batch that leaves the segment of a session not stored fails.
pub(super) fn insert(
    tx: &Connection,
    index: &mut SegmentIndex,
    client: &Arc<str>,
    mut entries: Vec<Entry>,
    released: &mut Vec<i64>,
) -> Result<(), Failure> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let (low, high) = (seq_to_sql(first.seq)?, seq_to_sql(last.seq)?);
    let stored: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM sessions WHERE client_id = ?1)")?
        .query_row([&**client], |row| row.get(0))?;
    if !stored {
        return Err(Failure::Invalid(format!(
            "the batch leaves rows of a session that is not stored ({client:?}: queue_segments)"
        )));
    }
    let contains =
        |entries: &[Entry], seq: u64| entries.binary_search_by_key(&seq, |e| e.seq).is_ok();
    // Rows of `deliveries` with the same seqs (normally none).
    let replaced: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT seq FROM deliveries WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3",
        )?;
        let rows = stmt.query_map(params![&**client, low, high], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for seq in replaced {
        if contains(&entries, seq as u64) {
            super::write::delete_deliveries(
                &mut tx.prepare_cached(super::write::DELETE_DELIVERY)?,
                params![&**client, seq],
                released,
            )?;
        }
    }
    // Stored segments over the same range (normally none): their entries with the same
    // seqs go, and they merge with the new entries into one segment, so that the ranges of
    // a session's segments never overlap.
    let mut first_seq = low;
    let mut kept = Vec::new();
    for segment in overlapping(tx, index, client, low, high)? {
        for e in segment.entries {
            if contains(&entries, e.seq) {
                released.push(e.message_id);
            } else {
                kept.push(e);
            }
        }
        first_seq = first_seq.min(segment.first_seq);
        let deleted = tx
            .prepare_cached("DELETE FROM queue_segments WHERE id = ?1")?
            .execute([segment.row])?;
        expect_one(deleted, client, segment.row)?;
        index.remove(client, segment.first_seq);
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
        &**client,
        first_seq,
        high,
        entries.len() as i64,
        bytes_of(&entries),
        encode(&entries),
    ])?;
    let row = tx.last_insert_rowid();
    index.set(
        client,
        first_seq,
        Placed {
            row,
            last_seq: high,
        },
    );
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
