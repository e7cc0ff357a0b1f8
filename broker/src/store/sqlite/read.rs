//! The read path: what the store gives back at start, a returning session's queue, and a
//! retained message when a subscription needs it.

use super::*;

impl SqliteStore {
    /// Everything recovered at start ([`Store::load`]).
    pub(super) fn recover(&mut self) -> Result<Recovered, StoreError> {
        let mut sessions = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_id, version, username, expiry_interval, expires_at_ms, \
                     disconnected_at_ms, will, will_delay, will_at_ms, dropped \
                     FROM sessions ORDER BY client_id",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let meta = decode_session(row).map_err(|d| self.corrupt("sessions", d))?;
                index.insert(meta.client_id.to_string(), sessions.len());
                sessions.push(RecoveredSession {
                    meta,
                    subscriptions: Vec::new(),
                    inflight: Vec::new(),
                    inbound_qos2: Vec::new(),
                    queued: (0, 0),
                    max_seq: None,
                });
            }
        }
        // Rows of a session not stored cannot be there (foreign keys, and for the queue
        // segments the write path's check); if they are anyway,
        // the file was not written by us.
        let find = |client: &str, table: &str| {
            index
                .get(client)
                .copied()
                .ok_or_else(|| self.corrupt(table, format!("key {client:?}: no such session")))
        };
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_id, filter, options, sub_id FROM subscriptions \
                     ORDER BY client_id, filter",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, filter, entry) =
                    decode_subscription(row).map_err(|d| self.corrupt("subscriptions", d))?;
                let i = find(&client, "subscriptions")?;
                sessions[i].subscriptions.push((filter, entry));
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} WHERE d.state <> 0 ORDER BY d.client_id, d.seq"
                ))
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, d) =
                    decode_delivery(row).map_err(|d| self.corrupt("deliveries", d))?;
                let i = find(&client, "deliveries")?;
                sessions[i].inflight.push(d);
            }
        }
        // What is queued for each session (count and payload bytes) and its highest seq:
        // the queued rows of `deliveries` and the entries of `queue_segments` add up.
        for (table, sql) in [
            (
                "deliveries",
                "SELECT d.client_id, \
                 count(*) FILTER (WHERE d.state = 0), \
                 CAST(total(m.payload_len) FILTER (WHERE d.state = 0) AS INTEGER), \
                 max(d.seq) \
                 FROM deliveries d LEFT JOIN messages m ON m.id = d.message_id \
                 GROUP BY d.client_id",
            ),
            (
                "queue_segments",
                "SELECT client_id, sum(count), sum(bytes), max(last_seq) \
                 FROM queue_segments GROUP BY client_id",
            ),
        ] {
            let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, count, bytes, max_seq) = (|| {
                    let client = text(row, 0, "client_id")?;
                    let key = |d: String| format!("key {client:?}: {d}");
                    let count = int_as::<usize>(int(row, 1, "count").map_err(key)?, "count")
                        .map_err(key)?;
                    let bytes = int_as::<usize>(int(row, 2, "bytes").map_err(key)?, "bytes")
                        .map_err(key)?;
                    let max_seq =
                        int_as::<u64>(int(row, 3, "seq").map_err(key)?, "seq").map_err(key)?;
                    Ok((client, count, bytes, max_seq))
                })()
                .map_err(|d| self.corrupt(table, d))?;
                let i = find(&client, table)?;
                let s = &mut sessions[i];
                s.queued = (s.queued.0 + count, s.queued.1 + bytes);
                s.max_seq = s.max_seq.max(Some(max_seq));
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT client_id, packet_id FROM inbound_qos2 ORDER BY client_id, packet_id",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                let (client, id) = (|| {
                    let client = text(row, 0, "client_id")?;
                    let id = int(row, 1, "packet_id")
                        .and_then(|v| int_as::<u16>(v, "packet_id"))
                        .map_err(|d| format!("key ({client:?}, ?): {d}"))?;
                    Ok((client, id))
                })()
                .map_err(|d| self.corrupt("inbound_qos2", d))?;
                let i = find(&client, "inbound_qos2")?;
                sessions[i].inbound_qos2.push(id);
            }
        }
        let mut retained = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT topic, id, qos, payload_len, expires_at_ms, received_at_ms \
                     FROM retained ORDER BY topic",
                )
                .map_err(|e| self.error(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
            while let Some(row) = rows.next().map_err(|e| self.error(e))? {
                retained.push(decode_retained_meta(row).map_err(|d| self.corrupt("retained", d))?);
            }
        }
        let max_message_id = self
            .conn
            .prepare_cached("SELECT max(id) FROM messages")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, Option<i64>>(0)))
            .map_err(|e| self.error(e))?
            .map(|id| int_as::<u64>(id, "id"))
            .transpose()
            .map_err(|d| self.corrupt("messages", d))?
            .into_iter()
            .chain(retained.iter().map(|r| r.id))
            .max();
        Ok(Recovered {
            sessions,
            retained,
            max_message_id,
        })
    }

    /// The queued deliveries of one session, oldest first ([`Store::load_queue`]).
    pub(super) fn queue(&mut self, client_id: &str) -> Result<Vec<StoredDelivery>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} WHERE d.client_id = ?1 AND d.state = 0 ORDER BY d.seq"
            ))
            .map_err(|e| self.error(e))?;
        let mut rows = stmt.query([client_id]).map_err(|e| self.error(e))?;
        let mut queue = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            let (_, d) = decode_delivery(row).map_err(|d| self.corrupt("deliveries", d))?;
            queue.push(d);
        }
        drop(rows);
        drop(stmt);
        let mut entries = Vec::new();
        self.fresh_segments()?;
        for (_, placed) in self.segments.of(client_id) {
            entries.extend(
                segments::read_entries(&self.conn, client_id, placed.row)
                    .map_err(|e| self.failed(e))?,
            );
        }
        if !entries.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, message, expires_at_ms, received_at_ms, publisher \
                     FROM messages WHERE id = ?1",
                )
                .map_err(|e| self.error(e))?;
            for e in entries {
                let key = |d: String| {
                    format!(
                        "message {} of ({client_id:?}, {}): {d}",
                        e.message_id, e.seq
                    )
                };
                let mut rows = stmt.query([e.message_id]).map_err(|e| self.error(e))?;
                let msg = match rows.next().map_err(|e| self.error(e))? {
                    Some(row) => decode_stored_message(row, 0)
                        .map_err(|d| self.corrupt("messages", key(d)))?,
                    None => return Err(self.corrupt("messages", key("missing".to_owned()))),
                };
                let qos = protocol::QoS::from_u8(e.qos)
                    .map_err(|_| self.corrupt("queue_segments", key(format!("qos {}", e.qos))))?;
                queue.push(StoredDelivery {
                    seq: e.seq,
                    state: DeliveryState::Queued,
                    qos,
                    retain: e.retain,
                    sub_ids: e.sub_ids,
                    msg: Arc::new(msg),
                });
            }
            queue.sort_by_key(|d| d.seq);
        }
        Ok(queue)
    }

    /// The retained message of a topic ([`Store::load_retained`]).
    pub(super) fn retained_message(
        &mut self,
        topic: &str,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT topic, id, message, expires_at_ms, received_at_ms, publisher \
                 FROM retained WHERE topic = ?1",
            )
            .map_err(|e| self.error(e))?;
        let mut rows = stmt.query([topic]).map_err(|e| self.error(e))?;
        match rows.next().map_err(|e| self.error(e))? {
            Some(row) => Ok(Some(
                decode_retained(row).map_err(|d| self.corrupt("retained", d))?,
            )),
            None => Ok(None),
        }
    }
}
