//! `fanin`: N publishers to M subscribers of `bench/#`, throughput, latency and a loss check.
//!
//! Publisher `i` publishes to `bench/<i>`; each payload starts with the publisher's index, a
//! sequence number and the send time, so every subscriber can count what it received from
//! whom, and how late. Every publisher's messages are numbered 0, 1, 2, …, and all of them
//! are acknowledged before the publisher stops, so at QoS ≥ 1 the check is simple: every
//! number must have arrived (at each subscriber, or at one member of the shared group). At
//! QoS 0 the same count says how many were lost.
//!
//! How long publishers go on: `--duration` seconds (rates are then counted within those
//! seconds), or `--messages` each (rates over the time to the last acknowledgement and the
//! last delivery). How fast: as fast as the window of unacknowledged messages allows, or
//! `--rate`, a fixed offered rate for all publishers together, each message sent on a
//! schedule rather than in windowed bursts. The schedule is kept to the timer's resolution
//! (tokio's: 1 ms), so messages due within the same millisecond go out in one write. Latency
//! always runs from the time stamped in the payload when the message was written; with
//! `--rate` the report also gives the publishers' largest lag behind their schedule, which
//! says whether the offered rate was really offered (a full window, a busy machine).

mod report;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Buf, BufMut, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use protocol::{ProtocolVersion, Publish, QoS, TopicFilter, TopicName};

use crate::conn::{Conn, ConnError, Target};
use crate::publish::{acknowledge, publish_windowed, Next};

/// Bytes at the start of each payload: publisher index (u32), sequence (u64), send time (u64
/// nanoseconds since the run began).
pub(crate) const HEADER: usize = 20;

/// Sequence numbers beyond this are not ours (no run publishes that many).
const MAX_SEQ: u64 = 1 << 32;

/// How often an idle subscriber checks whether the run is over.
const POLL: Duration = Duration::from_millis(100);

/// Options of `mqtt-bench fanin`.
#[derive(Debug, clap::Args)]
pub(crate) struct Fanin {
    /// mqtt://HOST:PORT or ws://HOST:PORT/PATH
    #[arg(long)]
    url: Target,
    /// Where the subscribers connect, if not to --url: the publishers on one broker, the
    /// subscribers on another (two bridges of a cluster).
    #[arg(long)]
    sub_url: Option<Target>,
    /// Publishing connections; publisher i publishes to `bench/<i>`.
    #[arg(long, default_value_t = 8)]
    publishers: u32,
    /// Subscribing connections, each subscribed to bench/#.
    #[arg(long, default_value_t = 1)]
    subscribers: u32,
    /// Subscribe to $share/bench/bench/# instead: each message goes to one subscriber.
    #[arg(long)]
    shared: bool,
    /// Subscribers keep persistent sessions (clean session 0), so that the broker stores each
    /// QoS 1/2 message for them before acknowledging it.
    #[arg(long)]
    persistent: bool,
    /// QoS of the publications and the subscriptions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 20: index, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    #[arg(value_parser = clap::value_parser!(u32).range(HEADER as i64..))]
    size: u32,
    /// Seconds of publishing (unless --messages is given).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Messages per publisher, instead of --duration: rates are then taken over the time to
    /// the last acknowledgement (published) and the last delivery (received).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..MAX_SEQ))]
    messages: Option<u64>,
    /// Offered rate, messages per second for all publishers together, each message sent at
    /// its due time (publisher i of P sends message k at (k·P + i) / RATE s). With
    /// --duration, RATE × duration messages in all.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Unacknowledged messages per publisher (QoS 0: messages per write).
    #[arg(long, default_value_t = 64)]
    inflight: u16,
    /// Connections opened at once while the subscribers connect and subscribe.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    connect_concurrency: u32,
    /// After the publishers stop, seconds the subscribers may go without receiving anything
    /// before the run ends short of the expected count (at QoS 0 this is how a run ends).
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    drain_idle: f64,
    /// Also print one line of JSON with every figure (for scripts; the last line printed).
    #[arg(long)]
    json: bool,
    /// Speak MQTT 5.0 instead of 3.1.1.
    #[arg(long)]
    v5: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        _ => Err(format!(
            "expected messages per second (at least 1), got {s:?}"
        )),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(t) if t.is_finite() && (0.0..=3600.0).contains(&t) => Ok(t),
        _ => Err(format!("expected seconds between 0 and 3600, got {s:?}")),
    }
}

/// When publishing stops.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// At this instant (`--duration`).
    Time(Instant),
    /// After this many messages per publisher.
    Count(u64),
}

/// The run's clock: when it began (payload times count from it) and when publishing ends.
#[derive(Debug, Clone, Copy)]
struct Period {
    epoch: Instant,
    until: Until,
}

impl Period {
    /// Whether `at` falls in the publishing period (a count has no end: always).
    fn contains(&self, at: Instant) -> bool {
        match self.until {
            Until::Time(end) => at < end,
            Until::Count(_) => true,
        }
    }
}

/// When one publisher's messages are due (`--rate`).
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Seconds from the epoch to message 0.
    first: f64,
    /// Seconds between two messages of this publisher.
    interval: f64,
}

impl Schedule {
    /// Publisher `index` of `publishers` sharing `rate` messages per second: its message k is
    /// due (k · publishers + index) / rate seconds after the epoch, so that the publishers
    /// take turns.
    fn for_publisher(index: u32, publishers: usize, rate: f64) -> Schedule {
        Schedule {
            first: f64::from(index) / rate,
            interval: publishers as f64 / rate,
        }
    }

    fn due(&self, epoch: Instant, seq: u64) -> Instant {
        epoch + Duration::from_secs_f64(self.first + self.interval * seq as f64)
    }
}

/// What one publisher sends, and how.
#[derive(Debug)]
struct Source {
    /// The publisher's index, first in every payload.
    index: u32,
    /// `bench/<index>`.
    topic: TopicName,
    qos: QoS,
    /// Payload bytes.
    size: usize,
    /// Unacknowledged messages at most.
    window: u16,
    /// When each message is due, with `--rate`.
    schedule: Option<Schedule>,
}

/// What one publisher did.
#[derive(Debug)]
struct Published {
    /// Messages published, numbered 0..sent, all acknowledged.
    sent: u64,
    /// Of those, acknowledged within the publishing period.
    acked_in_window: u64,
    /// When the last acknowledgement came, nanoseconds since the epoch.
    last_ack_ns: u64,
    /// With a schedule: the longest a message went out after its due time, nanoseconds.
    max_lag_ns: u64,
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct Received {
    /// `counts[publisher][seq]`: how many times that message arrived.
    counts: Vec<Vec<u8>>,
    /// Messages received within the publishing period.
    in_window: u64,
    /// When the last message came, nanoseconds since the epoch.
    last_ns: u64,
    /// Publish-to-receive time of each message, microseconds.
    latencies_us: Vec<u32>,
    /// Messages whose payload was not one of ours.
    foreign: u64,
}

impl Received {
    fn record(&mut self, mut payload: &[u8], now_ns: u64, in_window: bool) {
        if payload.len() < HEADER {
            self.foreign += 1;
            return;
        }
        let publisher = payload.get_u32() as usize;
        let seq = payload.get_u64();
        let sent_ns = payload.get_u64();
        let Some(counts) = self.counts.get_mut(publisher).filter(|_| seq < MAX_SEQ) else {
            self.foreign += 1;
            return;
        };
        let seq = seq as usize;
        if counts.len() <= seq {
            counts.resize(seq + 1, 0);
        }
        counts[seq] = counts[seq].saturating_add(1);
        self.in_window += u64::from(in_window);
        self.last_ns = now_ns;
        let latency_us = now_ns.saturating_sub(sent_ns) / 1000;
        self.latencies_us
            .push(u32::try_from(latency_us).unwrap_or(u32::MAX));
    }
}

/// Runs the benchmark and prints its report; `Ok(false)` if the loss check failed.
pub(crate) async fn run(args: Fanin) -> anyhow::Result<bool> {
    let version = if args.v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let qos = QoS::from_u8(args.qos)?;
    let filter = TopicFilter::new(if args.shared {
        "$share/bench/bench/#"
    } else {
        "bench/#"
    })?;
    let sub_url = args.sub_url.as_ref().unwrap_or(&args.url);
    let subscribers: Vec<Conn> = futures_util::stream::iter(0..args.subscribers)
        .map(|i| {
            let (url, filter) = (sub_url, filter.clone());
            async move {
                let id = format!("bench-sub-{i}");
                let (mut conn, _) = Conn::connect(url, version, &id, !args.persistent)
                    .await
                    .with_context(|| format!("subscriber {i} connecting to {url}"))?;
                conn.subscribe(filter, qos)
                    .await
                    .with_context(|| format!("subscriber {i} subscribing"))?;
                anyhow::Ok(conn)
            }
        })
        .buffered(args.connect_concurrency as usize)
        .try_collect()
        .await?;
    let mut publishers = Vec::new();
    for i in 0..args.publishers {
        let (conn, _) = Conn::connect(&args.url, version, &format!("bench-pub-{i}"), true)
            .await
            .with_context(|| format!("publisher {i} connecting to {}", args.url))?;
        publishers.push(conn);
    }

    let n_publishers = publishers.len();
    let epoch = Instant::now();
    let until = match (args.messages, args.rate) {
        (Some(n), _) => Until::Count(n),
        (None, Some(rate)) => {
            let all = rate * args.duration as f64;
            Until::Count((all / n_publishers.max(1) as f64).ceil().max(1.0) as u64)
        }
        (None, None) => Until::Time(epoch + Duration::from_secs(args.duration)),
    };
    let period = Period { epoch, until };
    let received_total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sub_tasks: Vec<_> = subscribers
        .into_iter()
        .map(|conn| {
            let (total, stop) = (received_total.clone(), stop.clone());
            tokio::spawn(subscribe_loop(conn, n_publishers, period, total, stop))
        })
        .collect();
    let pub_tasks: Vec<_> = (0u32..)
        .zip(publishers)
        .map(|(i, conn)| {
            let topic = TopicName::new(format!("bench/{i}"))?;
            let schedule = args
                .rate
                .map(|rate| Schedule::for_publisher(i, n_publishers, rate));
            let source = Source {
                index: i,
                topic,
                qos,
                size: args.size as usize,
                window: args.inflight,
                schedule,
            };
            let task = publish_loop(conn, source, period);
            Ok(tokio::spawn(task))
        })
        .collect::<Result<_, protocol::TopicError>>()?;
    let mut published = Vec::new();
    for (i, task) in pub_tasks.into_iter().enumerate() {
        published.push(task.await?.with_context(|| format!("publisher {i}"))?);
    }
    let publishing_done = epoch.elapsed();

    let sent: u64 = published.iter().map(|p| p.sent).sum();
    let expected = sent * copies(&args);
    let drain_idle = Duration::from_secs_f64(args.drain_idle);
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let now_received = received_total.load(Ordering::Relaxed);
        if now_received >= expected || last_change.elapsed() > drain_idle {
            break;
        }
        if now_received != last {
            (last, last_change) = (now_received, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut received = Vec::new();
    for (i, task) in sub_tasks.into_iter().enumerate() {
        received.push(task.await?.with_context(|| format!("subscriber {i}"))?);
    }

    Ok(report::report(
        &args,
        qos,
        &published,
        &received,
        publishing_done,
        epoch.elapsed(),
    ))
}

/// How many copies of each message the subscribers should get together.
fn copies(args: &Fanin) -> u64 {
    if args.shared {
        1
    } else {
        u64::from(args.subscribers)
    }
}

/// One publisher: numbered messages to `bench/<index>` until the period ends (on its
/// schedule, if it has one), then waits for the last acknowledgements and disconnects.
async fn publish_loop(
    mut conn: Conn,
    source: Source,
    period: Period,
) -> Result<Published, ConnError> {
    let Source {
        index,
        topic,
        qos,
        size,
        window,
        schedule,
    } = source;
    let Period { epoch, until } = period;
    let (mut seq, mut acked_in_window, mut last_ack_ns, mut max_lag_ns) = (0u64, 0u64, 0u64, 0);
    let next = || {
        let now = Instant::now();
        match until {
            Until::Count(n) if seq >= n => return Next::Done,
            Until::Time(end) if now >= end => return Next::Done,
            _ => {}
        }
        if let Some(s) = schedule {
            match s.due(epoch, seq) {
                due if due > now => return Next::NotBefore(due),
                due => max_lag_ns = max_lag_ns.max(nanos(now - due)),
            }
        }
        let mut payload = BytesMut::with_capacity(size);
        payload.put_u32(index);
        payload.put_u64(seq);
        payload.put_u64(nanos(now - epoch));
        payload.resize(size, 0);
        let mut publish = Publish::new(topic.clone(), payload.freeze());
        publish.qos = qos;
        seq += 1;
        Next::Publish(seq - 1, publish)
    };
    let on_ack = |_| {
        let now = Instant::now();
        acked_in_window += u64::from(period.contains(now));
        last_ack_ns = nanos(now - epoch);
    };
    publish_windowed(&mut conn, window, next, on_ack).await?;
    conn.disconnect().await?;
    Ok(Published {
        sent: seq,
        acked_in_window,
        last_ack_ns,
        max_lag_ns,
    })
}

/// One subscriber: acknowledges and records everything until told to stop.
async fn subscribe_loop(
    mut conn: Conn,
    publishers: usize,
    period: Period,
    total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<Received, ConnError> {
    let mut received = Received {
        counts: vec![Vec::new(); publishers],
        ..Received::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let packet = match tokio::time::timeout(POLL, conn.next()).await {
            Err(_) => continue,
            Ok(packet) => packet?,
        };
        if let Some(publish) = acknowledge(&mut conn, packet)? {
            let now = Instant::now();
            let in_window = period.contains(now);
            received.record(&publish.payload, nanos(now - period.epoch), in_window);
            total.fetch_add(1, Ordering::Relaxed);
        }
        if !conn.has_buffered() {
            conn.flush().await?;
        }
    }
    conn.disconnect().await?;
    Ok(received)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_sharing_a_rate_take_turns_on_one_schedule() {
        let epoch = Instant::now();
        let due_ms = |index, seq| {
            let schedule = Schedule::for_publisher(index, 4, 1000.0);
            (schedule.due(epoch, seq) - epoch).as_secs_f64() * 1000.0
        };
        // Message k of publisher i is message 4k + i of the whole, one per millisecond.
        for (index, seq, expected) in [
            (0, 0, 0.0),
            (1, 0, 1.0),
            (3, 0, 3.0),
            (0, 1, 4.0),
            (2, 10, 42.0),
        ] {
            assert!(
                (due_ms(index, seq) - expected).abs() < 1e-6,
                "publisher {index} message {seq}"
            );
        }
    }

    #[test]
    fn a_counted_run_has_no_end_and_a_timed_one_ends_at_its_instant() {
        let epoch = Instant::now();
        let later = epoch + Duration::from_secs(3600);
        let counted = Period {
            epoch,
            until: Until::Count(10),
        };
        let timed = Period {
            epoch,
            until: Until::Time(epoch + Duration::from_secs(1)),
        };
        assert!(counted.contains(later));
        assert!(timed.contains(epoch));
        assert!(!timed.contains(later));
    }
}
