//! `fanin`: N publishers to M subscribers of `bench/#`, throughput, latency and a loss check.
//!
//! Publisher `i` publishes to `bench/<i>`; each payload starts with the publisher's index, a
//! sequence number and the send time, so every subscriber can count what it received from
//! whom, and how late. Every publisher's messages are numbered 0, 1, 2, …, and all of them
//! are acknowledged before the publisher stops, so at QoS ≥ 1 the check is simple: every
//! number must have arrived (at each subscriber, or at one member of the shared group).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Buf, BufMut, BytesMut};
use protocol::{ProtocolVersion, Publish, QoS, TopicFilter, TopicName};

use crate::conn::{Conn, ConnError, Target};
use crate::publish::{acknowledge, publish_windowed};

/// Bytes at the start of each payload: publisher index (u32), sequence (u64), send time (u64
/// nanoseconds since the run began).
pub(crate) const HEADER: usize = 20;

/// Sequence numbers beyond this are not ours (no run publishes that many).
const MAX_SEQ: u64 = 1 << 32;

/// How often an idle subscriber checks whether the run is over.
const POLL: Duration = Duration::from_millis(100);

/// After the publishers stop, how long the subscribers may go without receiving anything
/// before the run ends short of the expected count.
const DRAIN_IDLE: Duration = Duration::from_secs(3);

/// Options of `mqtt-bench fanin`.
#[derive(Debug, clap::Args)]
pub(crate) struct Fanin {
    /// mqtt://HOST:PORT or ws://HOST:PORT/PATH
    #[arg(long)]
    url: Target,
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
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unacknowledged messages per publisher (QoS 0: messages per write).
    #[arg(long, default_value_t = 64)]
    inflight: u16,
    /// Speak MQTT 5.0 instead of 3.1.1.
    #[arg(long)]
    v5: bool,
}

/// The run's clock: when it began (payload times count from it) and when publishing ends.
#[derive(Debug, Clone, Copy)]
struct Period {
    epoch: Instant,
    end: Instant,
}

/// What one publisher did.
#[derive(Debug)]
struct Published {
    /// Messages published, numbered 0..sent, all acknowledged.
    sent: u64,
    /// Of those, acknowledged before the end of the publishing period.
    acked_in_window: u64,
}

/// What one subscriber received.
#[derive(Debug, Default)]
struct Received {
    /// `counts[publisher][seq]`: how many times that message arrived.
    counts: Vec<Vec<u8>>,
    /// Messages received before the end of the publishing period.
    in_window: u64,
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
    let mut subscribers = Vec::new();
    for i in 0..args.subscribers {
        let (mut conn, _) = Conn::connect(
            &args.url,
            version,
            &format!("bench-sub-{i}"),
            !args.persistent,
        )
        .await
        .with_context(|| format!("subscriber {i} connecting to {}", args.url))?;
        conn.subscribe(filter.clone(), qos)
            .await
            .with_context(|| format!("subscriber {i} subscribing"))?;
        subscribers.push(conn);
    }
    let mut publishers = Vec::new();
    for i in 0..args.publishers {
        let (conn, _) = Conn::connect(&args.url, version, &format!("bench-pub-{i}"), true)
            .await
            .with_context(|| format!("publisher {i} connecting to {}", args.url))?;
        publishers.push(conn);
    }

    let epoch = Instant::now();
    let period = Period {
        epoch,
        end: epoch + Duration::from_secs(args.duration),
    };
    let received_total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let n_publishers = publishers.len();
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
            let task = publish_loop(conn, i, topic, qos, args.size, args.inflight, period);
            Ok(tokio::spawn(task))
        })
        .collect::<Result<_, protocol::TopicError>>()?;
    let mut published = Vec::new();
    for (i, task) in pub_tasks.into_iter().enumerate() {
        published.push(task.await?.with_context(|| format!("publisher {i}"))?);
    }
    let publishing_done = epoch.elapsed();

    let sent: u64 = published.iter().map(|p| p.sent).sum();
    let copies = if args.shared {
        1
    } else {
        u64::from(args.subscribers)
    };
    let expected = (qos != QoS::AtMostOnce).then_some(sent * copies);
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let now_received = received_total.load(Ordering::Relaxed);
        if expected.is_some_and(|e| now_received >= e) || last_change.elapsed() > DRAIN_IDLE {
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

    Ok(report(
        &args,
        qos,
        &published,
        &received,
        publishing_done,
        epoch.elapsed(),
    ))
}

/// Prints the run's figures and checks; `false` if a QoS ≥ 1 check failed.
fn report(
    args: &Fanin,
    qos: QoS,
    published: &[Published],
    received: &[Received],
    publishing_done: Duration,
    elapsed: Duration,
) -> bool {
    let sent: u64 = published.iter().map(|p| p.sent).sum();
    let copies = if args.shared {
        1
    } else {
        u64::from(args.subscribers)
    };
    let secs = args.duration as f64;
    let acked_in_window: u64 = published.iter().map(|p| p.acked_in_window).sum();
    let in_window: u64 = received.iter().map(|r| r.in_window).sum();
    let total: u64 = received.iter().map(|r| r.latencies_us.len() as u64).sum();
    println!(
        "fanin {} MQTT {} QoS {}: {} publishers -> {} {}{}subscribers, {} B, inflight {}, {} s",
        args.url,
        if args.v5 { "5.0" } else { "3.1.1" },
        args.qos,
        args.publishers,
        args.subscribers,
        if args.persistent { "persistent " } else { "" },
        if args.shared { "shared " } else { "" },
        args.size,
        args.inflight,
        args.duration
    );
    println!(
        "published: {:>9.0} msg/s ({acked_in_window} {} in the period; {sent} in all, \
         the last at {:.2} s)",
        acked_in_window as f64 / secs,
        if qos == QoS::AtMostOnce {
            "written"
        } else {
            "acknowledged"
        },
        publishing_done.as_secs_f64()
    );
    println!(
        "received:  {:>9.0} msg/s ({in_window} in the period; {total} in all by {:.2} s)",
        in_window as f64 / secs,
        elapsed.as_secs_f64()
    );
    let mut latencies: Vec<u32> = received
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    if let Some(&max) = latencies.last() {
        let pct = |p: usize| f64::from(latencies[(latencies.len() - 1) * p / 100]) / 1000.0;
        println!(
            "latency:   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(50),
            pct(99),
            f64::from(max) / 1000.0
        );
    }
    let foreign: u64 = received.iter().map(|r| r.foreign).sum();
    let (lost, duplicates) = check(published, received, args.shared);
    let ok = match qos {
        QoS::AtMostOnce => {
            println!(
                "check:     QoS 0, loss allowed: {} of {} copies not received",
                (sent * copies).saturating_sub(total),
                sent * copies
            );
            true
        }
        QoS::AtLeastOnce => {
            println!(
                "check:     {lost} acknowledged messages lost, {duplicates} duplicates (allowed)"
            );
            lost == 0
        }
        QoS::ExactlyOnce => {
            println!(
                "check:     {lost} acknowledged messages lost, {duplicates} duplicates \
                 (none allowed)"
            );
            lost == 0 && duplicates == 0
        }
    };
    if foreign > 0 {
        println!("warning:   {foreign} messages on bench/# were not from this run");
    }
    ok
}

/// Counts the acknowledged messages that no subscriber (no member of the shared group)
/// received, and the extra copies.
fn check(published: &[Published], received: &[Received], shared: bool) -> (u64, u64) {
    let groups: Vec<&[Received]> = if shared {
        vec![received]
    } else {
        received.chunks(1).collect()
    };
    let (mut lost, mut duplicates) = (0, 0);
    for group in groups {
        for (p, published) in published.iter().enumerate() {
            for seq in 0..published.sent as usize {
                let copies: u64 = group
                    .iter()
                    .map(|r| u64::from(r.counts[p].get(seq).copied().unwrap_or(0)))
                    .sum();
                match copies {
                    0 => lost += 1,
                    n => duplicates += n - 1,
                }
            }
        }
    }
    (lost, duplicates)
}

/// One publisher: numbered messages to `bench/<index>` until `end`, then waits for the last
/// acknowledgements and disconnects.
async fn publish_loop(
    mut conn: Conn,
    index: u32,
    topic: TopicName,
    qos: QoS,
    size: u32,
    window: u16,
    Period { epoch, end }: Period,
) -> Result<Published, ConnError> {
    let (mut seq, mut acked_in_window) = (0u64, 0u64);
    let next = || {
        let now = Instant::now();
        if now >= end {
            return None;
        }
        let mut payload = BytesMut::with_capacity(size as usize);
        payload.put_u32(index);
        payload.put_u64(seq);
        payload.put_u64(nanos(now - epoch));
        payload.resize(size as usize, 0);
        let mut publish = Publish::new(topic.clone(), payload.freeze());
        publish.qos = qos;
        seq += 1;
        Some((seq - 1, publish))
    };
    let on_ack = |_| acked_in_window += u64::from(Instant::now() < end);
    publish_windowed(&mut conn, window, next, on_ack).await?;
    conn.disconnect().await?;
    Ok(Published {
        sent: seq,
        acked_in_window,
    })
}

/// One subscriber: acknowledges and records everything until told to stop.
async fn subscribe_loop(
    mut conn: Conn,
    publishers: usize,
    Period { epoch, end }: Period,
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
            received.record(&publish.payload, nanos(now - epoch), now < end);
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
