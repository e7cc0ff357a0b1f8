//! The client's side of persistence (the record format is in `store`): what each step
//! touched, the puts and deletes that follow, and taking a stored session back.

use crate::packet::{PacketId, QoS};
use crate::vecmap::VecMap;

use super::outgoing::Outbound;
use super::store::{self, RestoreError, StoreKey, StoreOp};
use super::{Client, PublishToken, State};
use crate::prelude::*;

impl Client {
    /// With [`ClientOptions::persistent`](super::ClientOptions::persistent): the puts and
    /// deletes that bring a store up to date with what changed since the last call (empty
    /// when nothing did). Write them, and send the packets of the same step only once they
    /// are durable (see [`StoreOp`]).
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        if !self.touched_out.is_empty() {
            // Sorted maps, not sorting: every generic sort costs kilobytes of wasm.
            let mut touched = core::mem::take(&mut self.touched_out);
            let v = self.opts.version;
            let current = self
                .outbound
                .iter()
                .map(|(seq, o)| (o.token, Some((*seq, o.stage)), &o.publish))
                .chain(
                    self.queued
                        .iter()
                        .filter(|(_, p)| p.qos != QoS::AtMostOnce)
                        .map(|(t, p)| (*t, None, p)),
                );
            for (token, in_flight, publish) in current {
                if touched.remove(&token.0).is_some() {
                    let value = store::encode_outbound(in_flight, publish, v);
                    ops.push(StoreOp::Put(StoreKey::Outbound(token.0), value));
                }
            }
            for &token in touched.keys() {
                ops.push(StoreOp::Delete(StoreKey::Outbound(token)));
            }
        }
        for &id in core::mem::take(&mut self.touched_in).keys() {
            let Some(pid) = PacketId::new(id) else {
                continue;
            };
            ops.push(if self.inbound_qos2.contains_key(&id) {
                StoreOp::Put(StoreKey::Inbound(pid), Vec::new())
            } else {
                StoreOp::Delete(StoreKey::Inbound(pid))
            });
        }
        ops
    }

    /// Marks every record of the session for the next [`Client::take_store_ops`]: after a
    /// write that failed, the driver clears its store and writes the whole session again.
    pub fn touch_all(&mut self) {
        if !self.opts.persistent {
            return;
        }
        for o in self.outbound.values() {
            self.touched_out.insert(o.token.0, ());
        }
        for (t, p) in &self.queued {
            if p.qos != QoS::AtMostOnce {
                self.touched_out.insert(t.0, ());
            }
        }
        for &id in self.inbound_qos2.keys() {
            self.touched_in.insert(id, ());
        }
    }

    /// Takes back a session stored through [`Client::take_store_ops`], before the first
    /// [`Client::connect`]: messages in flight are resent when the server resumes the
    /// session (or sent again as new messages when it does not), queued ones follow, and
    /// duplicates of incoming QoS 2 messages already delivered are not delivered again.
    /// Their outcomes come as [`Event::Published`](super::Event::Published) with the stored tokens; new tokens start
    /// after them.
    pub fn restore<'a>(
        &mut self,
        records: impl IntoIterator<Item = (StoreKey, &'a [u8])>,
    ) -> Result<(), RestoreError> {
        let fresh = self.state == State::Disconnected
            && self.outbound.is_empty()
            && self.queued.is_empty()
            && self.inbound_qos2.is_empty()
            && self.next_token == 0;
        if !fresh {
            return Err(RestoreError::NotFresh);
        }
        // Into maps sorted by the first send order and by token.
        let mut queued = VecMap::new();
        for (key, value) in records {
            match key {
                StoreKey::Inbound(id) => {
                    self.inbound_qos2.insert(id.get(), ());
                }
                StoreKey::Outbound(token) => {
                    let stored = store::decode_outbound(key, value)?;
                    self.next_token = self.next_token.max(token.saturating_add(1));
                    let publish = stored.publish;
                    match (stored.in_flight, publish.packet_id) {
                        (Some((order, stage)), Some(id)) => {
                            self.by_id.insert(id.get(), order);
                            self.next_seq = self.next_seq.max(order.saturating_add(1));
                            let outbound = Outbound {
                                token: PublishToken(token),
                                publish,
                                stage,
                                resend: false,
                            };
                            self.outbound.insert(order, Box::new(outbound));
                        }
                        _ => {
                            queued.insert(token, (PublishToken(token), publish));
                        }
                    }
                }
            }
        }
        self.queued.extend(queued.into_values());
        Ok(())
    }

    /// Marks an outgoing message for the next [`Client::take_store_ops`].
    pub(super) fn touch_out(&mut self, token: PublishToken) {
        if self.opts.persistent {
            self.touched_out.insert(token.0, ());
        }
    }

    /// Marks an incoming QoS 2 packet id for the next [`Client::take_store_ops`].
    pub(super) fn touch_in(&mut self, id: u16) {
        if self.opts.persistent {
            self.touched_in.insert(id, ());
        }
    }
}
