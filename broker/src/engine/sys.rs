//! `$SYS/broker/...`: the broker's own numbers, published to itself as MQTT messages.
//!
//! MQTT users expect `mosquitto_sub -t '$SYS/#' -v` to show what a broker is doing; the
//! topics and their meaning are mosquitto's (`src/sys_tree.c`, `man mosquitto` "BROKER
//! STATUS") wherever mosquitto has one. Every `sys_interval` seconds (`[broker]`, 0 = off)
//! the engine makes one pass over its sessions and publishes, as the broker itself (no
//! client id), QoS 0 and retained, each value that changed since the last pass; the
//! version once, at the first pass. Between passes the only work is a few counters bumped
//! per packet (see [`Traffic`]), and only while `$SYS` is on.
//!
//! - Retained `$SYS` messages live in memory, never in the store ([`SysTree::payloads`]):
//!   numbers reloaded after a restart would be wrong, and a write (an fsync with
//!   `durability = "always"`) every interval would buy nothing. mosquitto does not persist
//!   them either. They are in the retained index like any other, so they count in
//!   `$SYS/broker/retained messages/count`, as in mosquitto.
//! - `$` topics are never matched by a filter starting with a wildcard [MQTT-4.7.2-1]: the
//!   subscription trie and the retained index both hold that rule, so `#` never sees them.
//! - Clients cannot publish to `$SYS` ([`ReservedTopics`]): as mosquitto's
//!   `acl__check_dollar`, writing there is refused as by the ACL (5.0 PUBACK / PUBREC 0x87
//!   Not authorized; 3.1.1 acknowledged and dropped [MQTT-3.3.5-2]; a will there: CONNACK
//!   0x87 / 3.1.1 5). Reading is up to the ACL's `read` rules, as for any topic.
//! - The load averages are mosquitto's exponentially decayed per-minute rates: see [`decay`].

use super::*;

/// The first level of the broker's own topics.
const SYS: &str = "$SYS";

/// Whether `topic` is one of the broker's own (`$SYS` or below), which clients may not
/// write.
pub(crate) fn is_sys(topic: &str) -> bool {
    topic
        .strip_prefix(SYS)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The integer topics, in the order of [`SysTree::last`] and of the values
/// [`Engine::sys_values`] returns.
const COUNTERS: [&str; 17] = [
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/disconnected",
    "$SYS/broker/clients/total",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/received",
    "$SYS/broker/publish/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/messages/stored",
    "$SYS/broker/store/messages/count",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/publish/bytes/received",
    "$SYS/broker/publish/bytes/sent",
];

/// The load topics (`.../1min`, `.../5min`, `.../15min` are appended), in the order of
/// [`Traffic::load_sources`].
const LOADS: [&str; 8] = [
    "$SYS/broker/load/messages/received",
    "$SYS/broker/load/messages/sent",
    "$SYS/broker/load/publish/received",
    "$SYS/broker/load/publish/sent",
    "$SYS/broker/load/publish/dropped",
    "$SYS/broker/load/bytes/received",
    "$SYS/broker/load/bytes/sent",
    "$SYS/broker/load/connections",
];

/// The windows of the load averages: suffix and seconds.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// A load average's next value, as mosquitto computes it: `delta` events in the last `dt`
/// seconds are a rate of `delta * 60 / dt` per minute, and the average moves towards it by
/// `1 - e^(-dt / window)`. A steady rate is approached (63 % of the way after one window),
/// and once the events stop the average decays by `e^(-dt / window)` per pass.
pub(super) fn decay(current: f64, delta: u64, dt: f64, window: f64) -> f64 {
    if dt <= 0.0 {
        return current;
    }
    let per_minute = delta as f64 * 60.0 / dt;
    let keep = (-dt / window).exp();
    per_minute + keep * (current - per_minute)
}

/// What a load average prints: two decimals, as mosquitto.
fn load_text(value: f64) -> String {
    format!("{value:.2}")
}

/// Counts of packets and bytes through the engine, kept only while `$SYS` is on.
///
/// Bytes are the packets' encoded sizes (fixed header included) as the engine sees them:
/// a connection's topic aliases (5.0) make the bytes on the wire fewer, and what is refused
/// before the engine (a CONNECT with bad credentials, garbage) is not counted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Traffic {
    /// MQTT packets received from clients, of any type.
    packets_in: u64,
    /// MQTT packets sent to clients, of any type.
    packets_out: u64,
    /// Bytes of the packets received.
    bytes_in: u64,
    /// Bytes of the packets sent.
    bytes_out: u64,
    /// Payload bytes of the PUBLISHes received.
    publish_bytes_in: u64,
    /// Payload bytes of the PUBLISHes sent.
    publish_bytes_out: u64,
    /// CONNECTs that reached the engine.
    connects: u64,
}

impl Traffic {
    /// The counters the load averages follow, in the order of [`LOADS`].
    fn load_sources(&self, stats: &EngineStats) -> [u64; 8] {
        [
            self.packets_in,
            self.packets_out,
            stats.msgs_in,
            stats.msgs_out,
            stats.dropped,
            self.bytes_in,
            self.bytes_out,
            self.connects,
        ]
    }
}

/// One packet's share of the counters: its encoded size, and its payload if a PUBLISH.
#[derive(Debug, Clone, Copy)]
pub(super) struct PacketSize {
    bytes: u64,
    payload: Option<u64>,
}

impl PacketSize {
    fn of(packet: &Packet, version: ProtocolVersion) -> PacketSize {
        PacketSize {
            bytes: packet.encoded_len(version).map_or(0, |n| n as u64),
            payload: match packet {
                Packet::Publish(p) => Some(p.payload.len() as u64),
                _ => None,
            },
        }
    }
}

/// The state of `$SYS`: when the next pass is due, what was last published, the load
/// averages and the counters. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SysTree {
    /// Seconds between passes; `None`: `$SYS` is off (nothing counted, nothing published).
    interval: Option<Duration>,
    /// When the first pass ran, the engine's start as far as `uptime` tells (ticks begin
    /// at once; the engine takes its time as an argument and reads no clock of its own).
    started: Option<Instant>,
    /// When the next pass is due; `None` before the first.
    next_at: Option<Instant>,
    /// When the last pass ran (the `dt` of the load averages).
    last_at: Option<Instant>,
    /// The counters.
    traffic: Traffic,
    /// The most connections open at once (`clients/maximum`), checked at every CONNECT.
    peak_connected: usize,
    /// The value last published on each of [`COUNTERS`]; `None`: never published.
    last: [Option<u64>; COUNTERS.len()],
    /// The load sources at the last pass.
    last_sources: [u64; LOADS.len()],
    /// The load averages, `[source][window]`.
    loads: [[f64; WINDOWS.len()]; LOADS.len()],
    /// The payload of each retained `$SYS` message (memory only; the index has their
    /// metadata). At most one per topic above: bounded.
    payloads: HashMap<TopicName, Msg>,
}

impl SysTree {
    /// `$SYS` publishing every `interval_secs` (0: never).
    pub(crate) fn new(interval_secs: u64) -> SysTree {
        SysTree {
            interval: (interval_secs > 0).then(|| Duration::from_secs(interval_secs)),
            started: None,
            next_at: None,
            last_at: None,
            traffic: Traffic::default(),
            peak_connected: 0,
            last: [None; COUNTERS.len()],
            last_sources: [0; LOADS.len()],
            loads: [[0.0; WINDOWS.len()]; LOADS.len()],
            payloads: HashMap::new(),
        }
    }

    /// Whether `$SYS` is on.
    pub(crate) fn enabled(&self) -> bool {
        self.interval.is_some()
    }

    /// The payload of the retained `$SYS` message on `topic`, if the broker published one.
    pub(super) fn payload(&self, topic: &str) -> Option<&Msg> {
        self.payloads.get(topic)
    }
}

/// Refuses every client's write to `$SYS` (see the [module docs](self)); everything else is
/// the wrapped authenticator's decision. The engine asks through it.
#[derive(Debug)]
pub(crate) struct ReservedTopics(pub(crate) Arc<dyn Authenticator>);

impl Authenticator for ReservedTopics {
    fn authenticate<'a>(
        &'a self,
        connect: &'a Connect,
        info: &'a ConnectionInfo,
    ) -> crate::auth::Authentication<'a> {
        self.0.authenticate(connect, info)
    }

    fn authorize(&self, who: &Identity, client_id: &str, access: Access<'_>) -> bool {
        match access {
            Access::Publish(topic) if is_sys(topic) => false,
            _ => self.0.authorize(who, client_id, access),
        }
    }

    fn enforces_ownership(&self) -> bool {
        self.0.enforces_ownership()
    }
}

impl Engine {
    /// Counts an incoming command's packet (`$SYS` on only).
    pub(super) fn count_in(&mut self, cmd: &Command) {
        if !self.sys.enabled() {
            return;
        }
        let size = match cmd {
            Command::Connect { connect, .. } => {
                self.sys.traffic.connects += 1;
                PacketSize {
                    bytes: connect.encoded_len().map_or(0, |n| n as u64),
                    payload: None,
                }
            }
            Command::Packet { conn, packet } => {
                let version = self
                    .conns
                    .get(conn)
                    .and_then(|sid| self.sessions.get(sid))
                    .map(|s| s.version);
                let Some(version) = version else { return };
                PacketSize::of(packet, version)
            }
            _ => return,
        };
        self.count_packet_in(size);
    }

    fn count_packet_in(&mut self, size: PacketSize) {
        let t = &mut self.sys.traffic;
        t.packets_in += 1;
        t.bytes_in += size.bytes;
        t.publish_bytes_in += size.payload.unwrap_or(0);
    }

    /// The share of the counters of an item about to go out to session `sid` (`None`
    /// without `$SYS`, or for a close). A DISCONNECT without a session is 5.0's (only 5.0
    /// sessions are sent one).
    pub(super) fn size_out(&self, item: &Outgoing, sid: Option<SessionId>) -> Option<PacketSize> {
        let Outgoing::Packet(packet) = item else {
            return None;
        };
        if !self.sys.enabled() {
            return None;
        }
        let version = sid
            .and_then(|sid| self.sessions.get(&sid))
            .map_or(ProtocolVersion::V5, |s| s.version);
        Some(PacketSize::of(packet, version))
    }

    /// Counts an item that went out (see [`Engine::size_out`]).
    pub(super) fn count_out(&mut self, size: Option<PacketSize>) {
        if let Some(size) = size {
            let t = &mut self.sys.traffic;
            t.packets_out += 1;
            t.bytes_out += size.bytes;
            t.publish_bytes_out += size.payload.unwrap_or(0);
        }
    }

    /// Notes the number of open connections after a CONNECT (`clients/maximum`).
    pub(super) fn note_connected(&mut self) {
        if self.sys.enabled() {
            self.sys.peak_connected = self.sys.peak_connected.max(self.conns.len());
        }
    }

    /// The values of [`COUNTERS`], now: one pass over the sessions.
    fn sys_values(&self) -> [u64; COUNTERS.len()] {
        let (mut online, mut offline, mut stored, mut subscriptions) = (0u64, 0u64, 0u64, 0u64);
        for s in self.sessions.values() {
            if s.online.is_some() {
                online += 1;
            } else {
                offline += 1;
            }
            stored += (s.queued_len() + s.inflight.len()) as u64;
            subscriptions += s.subscriptions.len() as u64;
        }
        let (t, stats) = (&self.sys.traffic, &self.stats());
        [
            online,
            offline,
            online + offline,
            self.sys.peak_connected as u64,
            t.packets_in,
            t.packets_out,
            stats.msgs_in,
            stats.msgs_out,
            stats.dropped,
            stored,
            stored,
            self.retained.len() as u64,
            subscriptions,
            t.bytes_in,
            t.bytes_out,
            t.publish_bytes_in,
            t.publish_bytes_out,
        ]
    }

    /// Publishes what changed, if a pass is due (called from `tick`).
    pub(super) fn sys_tick(&mut self, now: Instant) {
        let Some(interval) = self.sys.interval else {
            return;
        };
        if self.sys.next_at.is_some_and(|at| now < at) {
            return;
        }
        let first = self.sys.next_at.is_none();
        // On the interval's grid from the first pass; a pass that came late does not make
        // the next ones late, and one long stall does not cause a burst of passes.
        let next = self.sys.next_at.map_or(now, |at| at + interval);
        self.sys.next_at = Some(if next <= now { now + interval } else { next });
        let mut out: Vec<(String, String)> = Vec::with_capacity(64);
        if first {
            let version = format!("mqtt-bridge {}", env!("CARGO_PKG_VERSION"));
            out.push(("$SYS/broker/version".to_owned(), version));
        }
        let started = *self.sys.started.get_or_insert(now);
        let uptime = now.saturating_duration_since(started).as_secs();
        out.push(("$SYS/broker/uptime".to_owned(), format!("{uptime} seconds")));
        let sources = self.sys.traffic.load_sources(&self.stats());
        let dt = self
            .sys
            .last_at
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        for (i, base) in LOADS.iter().enumerate() {
            let delta = sources[i].saturating_sub(self.sys.last_sources[i]);
            for (w, (suffix, window)) in WINDOWS.iter().enumerate() {
                let old = self.sys.loads[i][w];
                let new = if first {
                    0.0
                } else {
                    decay(old, delta, dt, *window)
                };
                // As mosquitto: published when it moved by a hundredth (all at the first).
                if first || (new - old).abs() >= 0.01 {
                    out.push((format!("{base}/{suffix}"), load_text(new)));
                }
                self.sys.loads[i][w] = new;
            }
        }
        self.sys.last_sources = sources;
        self.sys.last_at = Some(now);
        let values = self.sys_values();
        for (i, value) in values.into_iter().enumerate() {
            if self.sys.last[i] != Some(value) {
                self.sys.last[i] = Some(value);
                out.push((COUNTERS[i].to_owned(), value.to_string()));
            }
        }
        for (topic, payload) in out {
            self.publish_sys(&topic, payload, now);
        }
    }

    /// Publishes one `$SYS` message as the broker: QoS 0, retained, routed like any other
    /// (subscribers' `read` rules apply).
    fn publish_sys(&mut self, topic: &str, payload: String, now: Instant) {
        let Ok(topic) = TopicName::new(topic) else {
            return;
        };
        let id = self.new_message_id();
        let msg = Arc::new(Message {
            id,
            topic,
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            received_at: now,
            publisher: None,
        });
        self.route(msg, None, now);
    }

    /// Keeps a retained `$SYS` message: in the index (matching, counting, listing) and in
    /// memory, never in the store. Outside the retained limits (`max_retained_messages`,
    /// `max_retained_bytes` are the clients'): the set is fixed and small.
    pub(super) fn retain_sys(&mut self, msg: &Msg) {
        let old = self.retained.insert(&msg.topic, Retained::of(msg));
        let replaced = self.sys.payloads.insert(msg.topic.clone(), msg.clone());
        if let (Some(old), None) = (old, replaced) {
            // Kept in the store by an older version of the broker, within the limits:
            // stale, so gone.
            self.retained_bytes -= old.size;
            self.ops.push(Op::DeleteRetained(msg.topic.clone()));
        }
    }

    /// How many of the retained messages are `$SYS` ones (not counted against
    /// `max_retained_messages`).
    pub(super) fn sys_retained(&self) -> usize {
        self.sys.payloads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_steady_rate_is_approached_by_one_minus_e_to_the_minus_t_over_the_window() {
        // 10 events a second for one whole minute, in one pass: 600 a minute, reached
        // 1 - 1/e of the way.
        let one_pass = decay(0.0, 600, 60.0, 60.0);
        assert!(close(one_pass, 600.0 * (1.0 - (-1.0f64).exp())));
        // In six passes of ten seconds: the same value (the decay composes).
        let mut v = 0.0;
        for _ in 0..6 {
            v = decay(v, 100, 10.0, 60.0);
        }
        assert!(close(v, one_pass), "{v} vs {one_pass}");
        // The 5 and 15 minute averages move more slowly.
        assert!(decay(0.0, 600, 60.0, 300.0) < one_pass);
        assert!(decay(0.0, 600, 60.0, 900.0) < decay(0.0, 600, 60.0, 300.0));
    }

    #[test]
    fn without_events_the_average_decays_by_e_to_the_minus_t_over_the_window() {
        let v = decay(100.0, 0, 30.0, 60.0);
        assert!(close(v, 100.0 * (-0.5f64).exp()));
        // After many windows it is gone.
        let mut v = 100.0;
        for _ in 0..100 {
            v = decay(v, 0, 60.0, 60.0);
        }
        assert!(v < 0.01);
    }

    #[test]
    fn a_rate_held_long_enough_is_the_average() {
        let mut v = 0.0;
        for _ in 0..1000 {
            v = decay(v, 50, 10.0, 900.0);
        }
        assert!((v - 300.0).abs() < 0.01, "{v}");
        assert_eq!(load_text(v), "300.00");
    }

    #[test]
    fn no_time_passed_changes_nothing() {
        assert_eq!(decay(5.0, 100, 0.0, 60.0), 5.0);
    }

    #[test]
    fn only_sys_and_what_is_below_it_is_reserved() {
        assert!(is_sys("$SYS"));
        assert!(is_sys("$SYS/broker/uptime"));
        assert!(is_sys("$SYS/"));
        assert!(!is_sys("$SYSTEM/x"));
        assert!(!is_sys("a/$SYS"));
        assert!(!is_sys("$sys/x"));
        assert!(!is_sys("SYS/x"));
    }
}
