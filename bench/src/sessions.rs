//! `sessions`: many persistent sessions, optionally with messages queued while they are
//! offline; and `--drain`, which reconnects them and checks that every queued message is
//! still there (after a restart of the broker, say).
//!
//! Session `i` has client id `<prefix>-<i>` and one subscription, `bench/s/<i>` at QoS 1.
//! Its queued messages carry the session's index and a round number 0..Q. With
//! `--common-topic` every session subscribes to `bench/s/all` instead, and each queued
//! message goes to all of them (a fan-out to offline sessions: the broker stores one
//! delivery per session); those carry the index [`ALL`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Buf, BufMut, BytesMut};
use protocol::{ProtocolVersion, Publish, QoS, TopicFilter, TopicName};
use tokio::task::JoinSet;

use crate::conn::{Conn, ConnError, Target};
use crate::publish::{acknowledge, publish_windowed, Next};

/// Bytes at the start of each payload: session index (u32), round (u32).
const HEADER: usize = 8;

/// The index in the payload of a message to every session (`--common-topic`).
const ALL: u32 = u32::MAX;

/// While draining, how long a session may receive nothing before it is given up on.
const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// Options of `mqtt-bench sessions`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Sessions {
    /// mqtt://HOST:PORT or ws://HOST:PORT/PATH
    #[arg(long)]
    url: Target,
    /// Persistent sessions.
    #[arg(long, default_value_t = 1000)]
    count: u32,
    /// QoS 1 messages published to each session while it is offline.
    #[arg(long, default_value_t = 0)]
    queued_per_session: u32,
    /// Payload bytes of the queued messages (at least 8).
    #[arg(long, default_value_t = 64)]
    #[arg(value_parser = clap::value_parser!(u32).range(HEADER as i64..))]
    size: u32,
    /// Connections open at once while creating or draining sessions.
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// Publishing connections for the queued messages.
    #[arg(long, default_value_t = 4)]
    publishers: u32,
    /// Unacknowledged messages per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: u16,
    /// Client ids are `<prefix>-<i>`.
    #[arg(long, default_value = "bench-session")]
    prefix: String,
    /// Instead of creating the sessions, reconnect each (clean session 0), expect session
    /// present and its queued messages, acknowledge them and disconnect.
    #[arg(long)]
    drain: bool,
    /// Every session subscribes to `bench/s/all`, and every queued message goes to all of
    /// them: `--queued-per-session` messages in all, each stored once per session.
    #[arg(long)]
    common_topic: bool,
    /// Also print one line of JSON with the figures (for scripts; the last line printed).
    #[arg(long)]
    json: bool,
    /// Speak MQTT 5.0 instead of 3.1.1 (the sessions then ask for the longest expiry).
    #[arg(long)]
    v5: bool,
}

impl Sessions {
    fn version(&self) -> ProtocolVersion {
        if self.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        }
    }

    fn client_id(&self, i: u32) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// The topic session `i` subscribes to.
    fn topic(&self, i: u32) -> String {
        if self.common_topic {
            "bench/s/all".to_owned()
        } else {
            format!("bench/s/{i}")
        }
    }
}

/// Runs the subcommand and prints its report; `Ok(false)` if a drain found a message or a
/// session missing.
pub(crate) async fn run(args: Sessions) -> anyhow::Result<bool> {
    let args = Arc::new(args);
    if args.drain {
        return drain(args).await;
    }
    let started = Instant::now();
    per_session(&args, create).await?;
    let create_secs = started.elapsed().as_secs_f64();
    println!(
        "created {} persistent sessions in {create_secs:.2} s ({:.0}/s)",
        args.count,
        f64::from(args.count) / create_secs
    );
    let deliveries = u64::from(args.count) * u64::from(args.queued_per_session);
    let published = if args.common_topic {
        u64::from(args.queued_per_session)
    } else {
        deliveries
    };
    let mut queue_secs = 0.0;
    if args.queued_per_session > 0 {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for w in 0..args.publishers.max(1) {
            tasks.spawn(queue(args.clone(), w));
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        queue_secs = started.elapsed().as_secs_f64();
        println!(
            "queued {published} QoS 1 messages ({deliveries} deliveries, {} per session, {} B) \
             in {queue_secs:.2} s ({:.0} msg/s acknowledged)",
            args.queued_per_session,
            args.size,
            published as f64 / queue_secs
        );
    }
    if args.json {
        let summary = serde_json::json!({
            "command": "sessions",
            "count": args.count,
            "create_secs": create_secs,
            "queued_per_session": args.queued_per_session,
            "common_topic": args.common_topic,
            "published": published,
            "deliveries": deliveries,
            "queue_secs": queue_secs,
            "published_per_s": if queue_secs > 0.0 { published as f64 / queue_secs } else { 0.0 },
            "ok": true,
        });
        println!("{summary}");
    }
    Ok(true)
}

/// Runs `job` for every session index, `concurrency` at a time; the results in no order.
async fn per_session<F, Fut, T>(args: &Arc<Sessions>, job: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(Arc<Sessions>, u32) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send,
    T: Send + 'static,
{
    let workers = args.concurrency.clamp(1, args.count.max(1));
    let mut tasks = JoinSet::new();
    for w in 0..workers {
        let args = args.clone();
        tasks.spawn(async move {
            let mut results = Vec::new();
            for i in (w..args.count).step_by(workers as usize) {
                results.push(job(args.clone(), i).await?);
            }
            anyhow::Ok(results)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Creates session `i`: connect with clean session 0, subscribe, disconnect.
async fn create(args: Arc<Sessions>, i: u32) -> anyhow::Result<()> {
    let id = args.client_id(i);
    let (mut conn, _) = Conn::connect(&args.url, args.version(), &id, false)
        .await
        .with_context(|| format!("{id} connecting"))?;
    conn.subscribe(TopicFilter::new(args.topic(i))?, QoS::AtLeastOnce)
        .await
        .with_context(|| format!("{id} subscribing"))?;
    conn.disconnect().await?;
    Ok(())
}

/// Publisher `w`: `queued_per_session` rounds of one QoS 1 message to each of its share of
/// the sessions (those with `i % publishers == w`); with `--common-topic`, its share of the
/// rounds (`round % publishers == w`), each to `bench/s/all`.
async fn queue(args: Arc<Sessions>, w: u32) -> anyhow::Result<()> {
    let id = format!("{}-publisher-{w}", args.prefix);
    let (mut conn, _) = Conn::connect(&args.url, args.version(), &id, true)
        .await
        .with_context(|| format!("{id} connecting"))?;
    let step = args.publishers.max(1) as usize;
    // (index in the payload, topic) of each target, and the rounds to send to each.
    let (mine, rounds): (Vec<(u32, TopicName)>, Vec<u32>) = if args.common_topic {
        let all = vec![(ALL, TopicName::new(args.topic(ALL))?)];
        (all, (w..args.queued_per_session).step_by(step).collect())
    } else {
        let mine = (w..args.count)
            .step_by(step)
            .map(|i| Ok((i, TopicName::new(args.topic(i))?)))
            .collect::<Result<_, protocol::TopicError>>()?;
        (mine, (0..args.queued_per_session).collect())
    };
    let total = mine.len() * rounds.len();
    let mut n = 0;
    let next = || {
        if n >= total {
            return Next::Done;
        }
        let (i, topic) = &mine[n % mine.len()];
        let round = rounds[n / mine.len()];
        n += 1;
        let mut payload = BytesMut::with_capacity(args.size as usize);
        payload.put_u32(*i);
        payload.put_u32(round);
        payload.resize(args.size as usize, 0);
        let mut publish = Publish::new(topic.clone(), payload.freeze());
        publish.qos = QoS::AtLeastOnce;
        Next::Publish(0, publish)
    };
    publish_windowed(&mut conn, args.inflight, next, |_| {})
        .await
        .with_context(|| format!("{id} publishing"))?;
    conn.disconnect().await?;
    Ok(())
}

/// What draining one session found.
#[derive(Debug, Default)]
struct Drained {
    session_present: bool,
    /// Distinct queued messages received.
    unique: u64,
    /// Copies beyond the first.
    duplicates: u64,
    /// Messages that were not this session's.
    foreign: u64,
}

/// Reconnects every session and receives what was queued for it.
async fn drain(args: Arc<Sessions>) -> anyhow::Result<bool> {
    let started = Instant::now();
    let drained = per_session(&args, drain_one).await?;
    let took = started.elapsed().as_secs_f64();
    let present = drained.iter().filter(|d| d.session_present).count();
    let unique: u64 = drained.iter().map(|d| d.unique).sum();
    let duplicates: u64 = drained.iter().map(|d| d.duplicates).sum();
    let foreign: u64 = drained.iter().map(|d| d.foreign).sum();
    let expected = u64::from(args.count) * u64::from(args.queued_per_session);
    println!(
        "drained {} sessions in {took:.2} s: {present} with session present, {unique} of \
         {expected} queued messages, {duplicates} duplicates, {foreign} foreign",
        args.count
    );
    let ok = present == drained.len() && unique == expected;
    if args.json {
        let summary = serde_json::json!({
            "command": "sessions --drain",
            "count": args.count,
            "drain_secs": took,
            "present": present,
            "expected": expected,
            "received": unique,
            "lost": expected.saturating_sub(unique),
            "duplicates": duplicates,
            "foreign": foreign,
            "ok": ok,
        });
        println!("{summary}");
    }
    Ok(ok)
}

/// Reconnects session `i` with clean session 0 and takes its queued messages: until all
/// `queued_per_session` arrived, or none for [`DRAIN_IDLE`].
async fn drain_one(args: Arc<Sessions>, i: u32) -> anyhow::Result<Drained> {
    let id = args.client_id(i);
    let (mut conn, session_present) = Conn::connect(&args.url, args.version(), &id, false)
        .await
        .with_context(|| format!("{id} connecting"))?;
    let mut seen = vec![false; args.queued_per_session as usize];
    let mut d = Drained {
        session_present,
        ..Drained::default()
    };
    while d.unique < u64::from(args.queued_per_session) {
        let packet = match conn.next_within(DRAIN_IDLE).await {
            Err(ConnError::Timeout(_)) => break,
            other => other.with_context(|| format!("{id} receiving"))?,
        };
        if let Some(publish) = acknowledge(&mut conn, packet)? {
            let mut payload = &publish.payload[..];
            let ours = |index| index == i || (args.common_topic && index == ALL);
            let slot = (payload.len() >= HEADER && ours(payload.get_u32()))
                .then(|| seen.get_mut(payload.get_u32() as usize))
                .flatten();
            match slot {
                Some(s) if *s => d.duplicates += 1,
                Some(s) => (*s, d.unique) = (true, d.unique + 1),
                None => d.foreign += 1,
            }
        }
        if !conn.has_buffered() {
            conn.flush().await?;
        }
    }
    conn.flush().await?;
    conn.disconnect().await?;
    Ok(d)
}
