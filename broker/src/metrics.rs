//! The broker's Prometheus metrics: one [`Metrics`] of handles, shared by the engine thread,
//! the connection tasks and the store, and registered by whoever serves `/metrics`.
//!
//! # Why handles, and why no lock on the hot path
//! Each counter is an atomic that the place where the thing happens adds to: the engine when
//! it routes a message, a connection task when a CONNECT is refused, the store when it
//! commits. A labelled family keeps its series in a map behind a lock, so every series a
//! hot path touches (a QoS, a drop reason) is looked up once, here, and kept as a handle:
//! the per-message cost is one uncontended atomic add. Histograms are [`AtomicHistogram`]s
//! for the same reason (`prometheus-client`'s own holds a mutex per observation).
//!
//! Totals over sessions (online and offline sessions, queued and in-flight messages,
//! retained messages) are not kept per change: [`Broker::refresh_metrics`](crate::Broker::refresh_metrics)
//! asks the engine once per scrape and sets the gauges.
//!
//! # Names
//! Registered under the prefix `mqtt_bridge_` (see [`Metrics::register`]), in base units:
//! `_seconds`, `_bytes`, counters ending in `_total`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use protocol::{ProtocolVersion, QoS, ReasonCode};

use crate::auth::Transport;

/// The prefix of every broker metric.
pub const PREFIX: &str = "mqtt_bridge";

/// Labels of the open-connections gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionLabels {
    /// `tcp` or `websocket`.
    transport: &'static str,
    /// `3.1.1` or `5.0`.
    version: &'static str,
}

/// A label set of one label named `qos`, `reason` or `state`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QosLabel {
    qos: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Labels of a refused CONNECT: the reason code in hex and its MQTT 5.0 name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    code: String,
    reason: String,
}

/// Why a message was dropped (the `reason` label of `mqtt_bridge_messages_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// An offline session's queue was full (`overflow_policy`), or a retained message did
    /// not fit a new subscriber's queue.
    QueueFull,
    /// Its Message Expiry Interval ran out before it could be sent [MQTT-3.3.2-5].
    Expired,
    /// Over the client's Maximum Packet Size [MQTT-3.1.2-25].
    TooLarge,
    /// QoS 0 towards a connection whose channel was full.
    SlowQos0,
    /// Queued for a session whose user may no longer read its topic (found at resume).
    NotAuthorized,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::TooLarge,
        DropReason::SlowQos0,
        DropReason::NotAuthorized,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
            DropReason::SlowQos0 => "slow_qos0",
            DropReason::NotAuthorized => "not_authorized",
        }
    }
}

/// A histogram whose observations are atomic adds: one counter per bucket, the sum in
/// integer units (nanoseconds for a duration), no lock.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds in integer units, ascending; the last bucket (`+Inf`) has none.
    bounds: Box<[u64]>,
    /// Observations per bucket (not cumulative); one more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// Sum of observations in integer units.
    sum: AtomicU64,
    /// What one integer unit is in the exported base unit (1e-9 for nanoseconds).
    scale: f64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (integer units, ascending) and unit scale.
    fn new(bounds: Vec<u64>, scale: f64) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram {
            inner: Arc::new(HistogramInner {
                bounds: bounds.into_boxed_slice(),
                counts,
                sum: AtomicU64::new(0),
                scale,
            }),
        }
    }

    /// A histogram of durations, bounds in seconds.
    fn seconds(bounds: &[f64]) -> Self {
        // Bounds are constants of this file, small and positive: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let nanos = bounds.iter().map(|b| (b * 1e9).round() as u64).collect();
        AtomicHistogram::new(nanos, 1e-9)
    }

    /// Counts one observation of `value` integer units.
    pub fn observe(&self, value: u64) {
        let i = self.inner.bounds.partition_point(|&b| b < value);
        if let Some(c) = self.inner.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Counts one duration (for histograms made by [`AtomicHistogram::seconds`]).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = &self.inner;
        let mut buckets = Vec::with_capacity(h.counts.len());
        let mut count = 0;
        for (i, c) in h.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            #[allow(clippy::cast_precision_loss)]
            let bound = h
                .bounds
                .get(i)
                .map_or(f64::INFINITY, |&b| b as f64 * h.scale);
            buckets.push((bound, n));
        }
        #[allow(clippy::cast_precision_loss)]
        let sum = h.sum.load(Ordering::Relaxed) as f64 * h.scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The handles of one label value per QoS (0, 1, 2).
#[derive(Debug, Clone)]
struct PerQos([Counter; 3]);

impl PerQos {
    fn new(family: &Family<QosLabel, Counter>) -> Self {
        PerQos(["0", "1", "2"].map(|qos| family.get_or_create(&QosLabel { qos }).clone()))
    }

    fn get(&self, qos: QoS) -> &Counter {
        &self.0[qos as usize]
    }

    /// The sum over the three QoS.
    fn total(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
}

/// The broker's metric handles; see the [module docs](self).
#[derive(Debug)]
pub struct Metrics {
    // Connections (counted by the connection tasks).
    connections_accepted: Counter,
    connections_open: Family<ConnectionLabels, Gauge>,
    connects_refused: Family<RefusedLabels, Counter>,
    // Messages (counted by the engine).
    received_family: Family<QosLabel, Counter>,
    received_bytes_family: Family<QosLabel, Counter>,
    sent_family: Family<QosLabel, Counter>,
    sent_bytes_family: Family<QosLabel, Counter>,
    received: PerQos,
    received_bytes: PerQos,
    sent: PerQos,
    sent_bytes: PerQos,
    dropped_family: Family<ReasonLabel, Counter>,
    dropped: [Counter; 5],
    delivery_latency: AtomicHistogram,
    // Totals over sessions, set at scrape time (and per batch for the retained bytes).
    sessions: Family<StateLabel, Gauge>,
    queued: Gauge,
    inflight: Gauge,
    retained_messages: Gauge,
    retained_bytes: Gauge,
    // The engine thread and the store.
    engine_batch_size: AtomicHistogram,
    engine_busy: Counter<f64, AtomicU64>,
    store_batches: Counter,
    store_commit: AtomicHistogram,
    store_sync: AtomicHistogram,
}

/// Buckets of the PUBLISH→delivery latency: 50 µs to 1 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Buckets of a store commit or sync: 50 µs to 2.5 s.
const STORE_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    2.5,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh handles, all zero, registered nowhere yet.
    pub fn new() -> Self {
        let received_family = Family::default();
        let received_bytes_family = Family::default();
        let sent_family = Family::default();
        let sent_bytes_family = Family::default();
        let dropped_family: Family<ReasonLabel, Counter> = Family::default();
        let connections_open: Family<ConnectionLabels, Gauge> = Family::default();
        // Every series exists from the start (a rate over a series that appears late misses
        // its first increase).
        for transport in [Transport::Tcp, Transport::WebSocket] {
            for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
                let _ = connections_open.get_or_create(&connection_labels(transport, version));
            }
        }
        let sessions: Family<StateLabel, Gauge> = Family::default();
        for state in ["online", "offline"] {
            let _ = sessions.get_or_create(&StateLabel { state });
        }
        Metrics {
            connections_accepted: Counter::default(),
            connections_open,
            connects_refused: Family::default(),
            received: PerQos::new(&received_family),
            received_bytes: PerQos::new(&received_bytes_family),
            sent: PerQos::new(&sent_family),
            sent_bytes: PerQos::new(&sent_bytes_family),
            received_family,
            received_bytes_family,
            sent_family,
            sent_bytes_family,
            dropped: DropReason::ALL.map(|r| {
                dropped_family
                    .get_or_create(&ReasonLabel { reason: r.label() })
                    .clone()
            }),
            dropped_family,
            delivery_latency: AtomicHistogram::seconds(&LATENCY_BUCKETS),
            sessions,
            queued: Gauge::default(),
            inflight: Gauge::default(),
            retained_messages: Gauge::default(),
            retained_bytes: Gauge::default(),
            engine_batch_size: AtomicHistogram::new(
                vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1025],
                1.0,
            ),
            engine_busy: Counter::default(),
            store_batches: Counter::default(),
            store_commit: AtomicHistogram::seconds(&STORE_BUCKETS),
            store_sync: AtomicHistogram::seconds(&STORE_BUCKETS),
        }
    }

    /// Registers every metric in `registry`, under the prefix `mqtt_bridge_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix(PREFIX);
        r.register(
            "connections_accepted",
            "Network connections the broker began to serve (TCP and WebSocket)",
            self.connections_accepted.clone(),
        );
        r.register(
            "connections",
            "Open MQTT connections (CONNECT accepted) by transport and protocol version",
            self.connections_open.clone(),
        );
        r.register(
            "connects_refused",
            "CONNECTs refused, by CONNACK reason code (MQTT 5.0 code and name)",
            self.connects_refused.clone(),
        );
        r.register(
            "messages_received",
            "PUBLISH packets received from clients, by QoS",
            self.received_family.clone(),
        );
        r.register(
            "messages_received_payload_bytes",
            "Payload bytes of the PUBLISH packets received from clients, by QoS",
            self.received_bytes_family.clone(),
        );
        r.register(
            "messages_sent",
            "PUBLISH packets sent to subscribers, by the QoS they were sent at",
            self.sent_family.clone(),
        );
        r.register(
            "messages_sent_payload_bytes",
            "Payload bytes of the PUBLISH packets sent to subscribers, by QoS",
            self.sent_bytes_family.clone(),
        );
        r.register(
            "messages_dropped",
            "Messages dropped instead of delivered, by reason",
            self.dropped_family.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "Time from a PUBLISH's arrival in the engine to its delivery being handed to the \
             subscriber's connection, for messages routed live (not retained messages sent on \
             subscribe nor offline queues resumed); engine-batch resolution",
            self.delivery_latency.clone(),
        );
        r.register(
            "sessions",
            "Sessions by state: online (connected) or offline (kept for a later connection)",
            self.sessions.clone(),
        );
        r.register(
            "messages_queued",
            "Messages queued for sessions, over all sessions",
            self.queued.clone(),
        );
        r.register(
            "messages_inflight",
            "QoS 1/2 messages sent and not yet acknowledged, over all sessions",
            self.inflight.clone(),
        );
        r.register(
            "retained_messages",
            "Retained messages, the broker's own $SYS ones included",
            self.retained_messages.clone(),
        );
        r.register(
            "retained_payload_bytes",
            "Payload bytes of the clients' retained messages (what max_retained_bytes bounds; \
             $SYS ones are kept apart, outside the limits)",
            self.retained_bytes.clone(),
        );
        r.register(
            "engine_batch_size_commands",
            "Commands the engine thread handled per batch (one store commit per batch)",
            self.engine_batch_size.clone(),
        );
        r.register(
            "engine_busy_seconds",
            "Time the engine thread spent handling batches; rate() is its busy ratio",
            self.engine_busy.clone(),
        );
        r.register(
            "store_batches",
            "Write transactions committed by the SQLite store",
            self.store_batches.clone(),
        );
        r.register(
            "store_commit_duration_seconds",
            "Time to commit one store write transaction (with durability = \"always\" this \
             includes the fsync)",
            self.store_commit.clone(),
        );
        r.register(
            "store_sync_duration_seconds",
            "Time of one WAL checkpoint on the store's checkpointer thread (with its sync \
             unless durability = \"none\")",
            self.store_sync.clone(),
        );
    }

    // --- connection tasks ---

    /// A transport began to be served.
    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.inc();
    }

    /// The open-connections gauge of this transport and version (held by the connection and
    /// decremented when it closes, see [`OpenConnection`]).
    pub(crate) fn connection_opened(
        &self,
        transport: Transport,
        version: ProtocolVersion,
    ) -> OpenConnection {
        let gauge = self
            .connections_open
            .get_or_create(&connection_labels(transport, version))
            .clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// A CONNECT was refused with `reason`.
    pub(crate) fn connect_refused(&self, reason: ReasonCode) {
        let labels = RefusedLabels {
            code: format!("0x{:02X}", reason as u8),
            reason: format!("{reason:?}"),
        };
        self.connects_refused.get_or_create(&labels).inc();
    }

    // --- engine thread ---

    /// PUBLISHes received since start, all QoS.
    pub(crate) fn received_total(&self) -> u64 {
        self.received.total()
    }

    /// PUBLISHes sent since start, all QoS.
    pub(crate) fn sent_total(&self) -> u64 {
        self.sent.total()
    }

    /// Messages dropped since start, all reasons.
    pub(crate) fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Counter::get).sum()
    }

    /// A PUBLISH was received with `payload` bytes.
    pub(crate) fn received(&self, qos: QoS, payload: usize) {
        self.received.get(qos).inc();
        self.received_bytes.get(qos).inc_by(payload as u64);
    }

    /// A PUBLISH was handed to a subscriber's connection, `latency` after its arrival.
    pub(crate) fn sent(&self, qos: QoS, payload: usize, latency: Option<Duration>) {
        self.sent.get(qos).inc();
        self.sent_bytes.get(qos).inc_by(payload as u64);
        if let Some(latency) = latency {
            self.delivery_latency.observe_duration(latency);
        }
    }

    /// `n` messages were dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].inc_by(n);
    }

    /// One engine batch of `commands` took `busy`.
    pub(crate) fn engine_batch(&self, commands: u64, busy: Duration) {
        self.engine_batch_size.observe(commands);
        self.engine_busy.inc_by(busy.as_secs_f64());
    }

    /// The retained messages' payload bytes, after a batch.
    pub(crate) fn set_retained_bytes(&self, bytes: usize) {
        self.retained_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    // --- store ---

    /// A store transaction was committed in `took`.
    pub(crate) fn store_committed(&self, took: Duration) {
        self.store_batches.inc();
        self.store_commit.observe_duration(took);
    }

    /// A WAL checkpoint (with its sync, unless `durability = "none"`) took `took`.
    pub(crate) fn store_synced(&self, took: Duration) {
        self.store_sync.observe_duration(took);
    }

    // --- scrape time ---

    /// Sets the gauges that are totals over sessions.
    pub(crate) fn set_totals(&self, stats: &crate::view::StatsView) {
        let set = |g: &Gauge, n: usize| {
            g.set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set(
            &self.sessions.get_or_create(&StateLabel { state: "online" }),
            stats.sessions_online,
        );
        set(
            &self
                .sessions
                .get_or_create(&StateLabel { state: "offline" }),
            stats.sessions_offline,
        );
        set(&self.queued, stats.queued);
        set(&self.inflight, stats.inflight);
        set(&self.retained_messages, stats.retained);
    }
}

fn connection_labels(transport: Transport, version: ProtocolVersion) -> ConnectionLabels {
    ConnectionLabels {
        transport: match transport {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
        },
        version: match version {
            ProtocolVersion::V5 => "5.0",
            _ => "3.1.1",
        },
    }
}

/// One open connection in the open-connections gauge; leaves it when dropped (also when the
/// connection's task is cancelled).
#[derive(Debug)]
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap_or_default();
        out
    }

    #[test]
    fn a_histogram_puts_each_observation_in_the_first_bucket_at_or_above_it() {
        let h = AtomicHistogram::new(vec![1, 10], 1.0);
        for v in [0, 1, 2, 10, 11] {
            h.observe(v);
        }
        let counts: Vec<u64> = h
            .inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 2, 1]);
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn counters_by_qos_and_drop_reason_show_under_their_labels() {
        let m = Metrics::new();
        m.received(QoS::AtLeastOnce, 10);
        m.dropped(DropReason::SlowQos0, 3);
        m.connect_refused(ReasonCode::NotAuthorized);
        let out = text(&m);
        assert!(
            out.contains("mqtt_bridge_messages_received_total{qos=\"1\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("mqtt_bridge_messages_received_payload_bytes_total{qos=\"1\"} 10"),
            "{out}"
        );
        assert!(
            out.contains("mqtt_bridge_messages_dropped_total{reason=\"slow_qos0\"} 3"),
            "{out}"
        );
        assert!(
            out.contains(
                "mqtt_bridge_connects_refused_total{code=\"0x87\",reason=\"NotAuthorized\"} 1"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_connection_leaves_the_open_gauge_when_dropped() {
        let m = Metrics::new();
        let open = m.connection_opened(Transport::WebSocket, ProtocolVersion::V5);
        assert!(
            text(&m).contains("mqtt_bridge_connections{transport=\"websocket\",version=\"5.0\"} 1")
        );
        drop(open);
        assert!(
            text(&m).contains("mqtt_bridge_connections{transport=\"websocket\",version=\"5.0\"} 0")
        );
    }
}
