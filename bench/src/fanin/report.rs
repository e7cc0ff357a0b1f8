//! What a `fanin` run prints: lines for people, and with `--json` one line for scripts
//! (`bench/compare.py` reads it), with the same figures.

use std::time::Duration;

use protocol::QoS;

use super::{copies, Fanin, Published, Received};
use crate::conn::Target;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Latency {
    pub(super) p50: u32,
    pub(super) p99: u32,
    pub(super) p999: u32,
    pub(super) max: u32,
}

impl Latency {
    /// The percentiles of `samples` (sorted here); `None` if there are none. The p-th
    /// permille is the sample at rank ⌊(n − 1) · p / 1000⌋.
    pub(super) fn of(mut samples: Vec<u32>) -> Option<Latency> {
        samples.sort_unstable();
        let max = *samples.last()?;
        let at = |permille: usize| samples[(samples.len() - 1) * permille / 1000];
        Some(Latency {
            p50: at(500),
            p99: at(990),
            p999: at(999),
            max,
        })
    }
}

/// Prints the run's figures and checks; `false` if a QoS ≥ 1 check failed.
pub(super) fn report(
    args: &Fanin,
    qos: QoS,
    published: &[Published],
    received: &[Received],
    publishing_done: Duration,
    elapsed: Duration,
) -> bool {
    let sent: u64 = published.iter().map(|p| p.sent).sum();
    let expected = sent * copies(args);
    let acked_in_window: u64 = published.iter().map(|p| p.acked_in_window).sum();
    let in_window: u64 = received.iter().map(|r| r.in_window).sum();
    let total: u64 = received.iter().map(|r| r.latencies_us.len() as u64).sum();
    // The time the rates are taken over: the fixed period, or from the start to the last
    // acknowledgement (published) and to the last delivery (received).
    let (publish_secs, receive_secs) = match (args.messages, args.rate) {
        (None, None) => (args.duration as f64, args.duration as f64),
        _ => (
            secs(published.iter().map(|p| p.last_ack_ns).max()),
            secs(received.iter().map(|r| r.last_ns).max()),
        ),
    };
    let per_second = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let (published_rate, received_rate) = (
        per_second(acked_in_window, publish_secs),
        per_second(in_window, receive_secs),
    );
    let amount = match (args.messages, args.rate) {
        (Some(n), _) => format!("{n} messages each"),
        (None, Some(_)) => format!("{} s of messages", args.duration),
        (None, None) => format!("{} s", args.duration),
    };
    let pace = args
        .rate
        .map_or(String::new(), |r| format!(", offered {r:.0} msg/s"));
    let subscribers_at = args
        .sub_url
        .as_ref()
        .map_or(String::new(), |u| format!(" (subscribers at {u})"));
    println!(
        "fanin {}{subscribers_at} MQTT {} QoS {}: {} publishers -> {} {}{}subscribers, {} B, inflight {}, {amount}{pace}",
        args.url,
        if args.v5 { "5.0" } else { "3.1.1" },
        args.qos,
        args.publishers,
        args.subscribers,
        if args.persistent { "persistent " } else { "" },
        if args.shared { "shared " } else { "" },
        args.size,
        args.inflight,
    );
    let verb = if qos == QoS::AtMostOnce {
        "written"
    } else {
        "acknowledged"
    };
    println!(
        "published: {published_rate:>9.0} msg/s ({acked_in_window} {verb} over {publish_secs:.2} s; \
         {sent} in all, the last at {:.2} s)",
        publishing_done.as_secs_f64()
    );
    println!(
        "received:  {received_rate:>9.0} msg/s ({in_window} over {receive_secs:.2} s; {total} in \
         all by {:.2} s)",
        elapsed.as_secs_f64()
    );
    let max_lag_ns = published.iter().map(|p| p.max_lag_ns).max().unwrap_or(0);
    let latency = Latency::of(
        received
            .iter()
            .flat_map(|r| r.latencies_us.iter().copied())
            .collect(),
    );
    if let Some(l) = latency {
        let ms = |us: u32| f64::from(us) / 1000.0;
        println!(
            "latency:   p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms{}",
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            match args.rate {
                Some(_) => format!(
                    "; publishers at most {:.3} ms behind schedule",
                    max_lag_ns as f64 / 1e6
                ),
                None => String::new(),
            }
        );
    }
    let foreign: u64 = received.iter().map(|r| r.foreign).sum();
    let (lost, duplicates) = check(published, received, args.shared);
    let lost_pct = if expected > 0 {
        lost as f64 * 100.0 / expected as f64
    } else {
        0.0
    };
    let ok = match qos {
        QoS::AtMostOnce => {
            println!(
                "check:     QoS 0, loss allowed: {lost} of {expected} copies not received \
                 ({lost_pct:.2} %), {duplicates} duplicates"
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
    if args.json {
        let latency_us = latency.map(
            |l| serde_json::json!({ "p50": l.p50, "p99": l.p99, "p999": l.p999, "max": l.max }),
        );
        let summary = serde_json::json!({
            "command": "fanin",
            "transport": match args.url { Target::Tcp(_) => "tcp", Target::Ws(_) => "ws" },
            "qos": args.qos,
            "publishers": args.publishers,
            "subscribers": args.subscribers,
            "size": args.size,
            "inflight": args.inflight,
            "messages_per_publisher": published.iter().map(|p| p.sent).max(),
            "duration": (args.messages.is_none() && args.rate.is_none()).then_some(args.duration),
            "rate": args.rate,
            "sent": sent,
            "expected": expected,
            "received": total,
            "lost": lost,
            "lost_pct": lost_pct,
            "duplicates": duplicates,
            "foreign": foreign,
            "published_per_s": published_rate,
            "received_per_s": received_rate,
            "publish_secs": publish_secs,
            "receive_secs": receive_secs,
            "latency_us": latency_us,
            "max_lag_us": args.rate.map(|_| max_lag_ns / 1000),
            "ok": ok,
        });
        println!("{summary}");
    }
    ok
}

fn secs(ns: Option<u64>) -> f64 {
    ns.unwrap_or(0) as f64 / 1e9
}

/// Counts the messages that no subscriber (no member of the shared group) received, and the
/// extra copies.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_taken_by_rank_from_the_sorted_samples() {
        let l = Latency::of((1..=1000).rev().collect()).expect("samples");
        assert_eq!(
            l,
            Latency {
                p50: 500,
                p99: 990,
                p999: 999,
                max: 1000
            }
        );
        assert_eq!(Latency::of(Vec::new()), None);
        let one = Latency::of(vec![7]).expect("one sample");
        assert_eq!((one.p50, one.p999, one.max), (7, 7, 7));
    }

    #[test]
    fn a_message_no_subscriber_received_is_lost_and_extra_copies_are_duplicates() {
        let published = [Published {
            sent: 3,
            acked_in_window: 3,
            last_ack_ns: 0,
            max_lag_ns: 0,
        }];
        let got = |counts: Vec<u8>| Received {
            counts: vec![counts],
            ..Received::default()
        };
        // Each subscriber on its own: subscriber 0 misses message 2, subscriber 1 got 0 twice.
        let received = [got(vec![1, 1]), got(vec![2, 1, 1])];
        assert_eq!(check(&published, &received, false), (1, 1));
        // As a shared group every message reached someone; 3 + 2 + 1 copies of 3 messages.
        assert_eq!(check(&published, &received, true), (0, 3));
    }
}
