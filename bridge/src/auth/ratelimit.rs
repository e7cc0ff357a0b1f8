//! Failed logins counted per source address, so passwords cannot be guessed at the speed of
//! the network.
//!
//! After `max` failures from one source within `window`, further attempts from it are refused
//! at once, without checking the credentials (so the guesses cost the attacker time and the
//! bridge nothing), until `window` has passed since the first of those failures. A source is
//! an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64, so counting single
//! IPv6 addresses would count nothing). A success does not clear the count: otherwise an
//! attacker with one valid account could reset it between guesses at others.
//!
//! The table is bounded: when full, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most sources remembered at once.
const MAX_SOURCES: usize = 10_000;

/// Where attempts come from: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// An IPv4 address (also an IPv4-mapped IPv6 one).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Source::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first failure of the current window.
    since: Instant,
    failures: u32,
}

/// Failures per source, in fixed windows.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    /// Failures allowed per window; 0 turns the limit off.
    max: u32,
    window: Duration,
    entries: HashMap<Source, Entry>,
    capacity: usize,
}

impl FailureLimiter {
    /// At most `max` failures per `window` per source (`max` 0: no limit).
    pub(crate) fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter::with_capacity(max, window, MAX_SOURCES)
    }

    fn with_capacity(max: u32, window: Duration, capacity: usize) -> FailureLimiter {
        FailureLimiter {
            max,
            window,
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn live(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.since) < self.window
    }

    /// Whether attempts from `source` are refused now.
    pub(crate) fn blocked(&self, source: Source, now: Instant) -> bool {
        self.max != 0
            && self
                .entries
                .get(&source)
                .is_some_and(|e| self.live(e, now) && e.failures >= self.max)
    }

    /// Counts a failure from `source`.
    pub(crate) fn failed(&mut self, source: Source, now: Instant) {
        if self.max == 0 {
            return;
        }
        if let Some(entry) = self.entries.get(&source).copied() {
            let entry = if self.live(&entry, now) {
                Entry {
                    failures: entry.failures.saturating_add(1),
                    ..entry
                }
            } else {
                Entry {
                    since: now,
                    failures: 1,
                }
            };
            self.entries.insert(source, entry);
            return;
        }
        if self.entries.len() >= self.capacity {
            let window = self.window;
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.since) < window);
        }
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.since)
                .map(|(source, _)| *source);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            source,
            Entry {
                since: now,
                failures: 1,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(last: u8) -> Source {
        Source::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn a_source_is_blocked_after_max_failures_until_the_window_passes() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut l = FailureLimiter::new(3, window);
        for i in 0..3 {
            assert!(!l.blocked(v4(1), t0), "after {i} failures");
            l.failed(v4(1), t0 + Duration::from_secs(i));
        }
        assert!(l.blocked(v4(1), t0 + Duration::from_secs(3)));
        assert!(!l.blocked(v4(2), t0), "other sources are not affected");
        assert!(l.blocked(v4(1), t0 + window - Duration::from_millis(1)));
        assert!(!l.blocked(v4(1), t0 + window));
        // A new window starts with the next failure.
        l.failed(v4(1), t0 + window);
        assert!(!l.blocked(v4(1), t0 + window));
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            l.failed(v4(1), t0);
        }
        assert!(!l.blocked(v4(1), t0));
        assert!(l.entries.is_empty());
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("address");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(Source::from(IpAddr::V6(a)), Source::from(IpAddr::V6(b)));
        assert_ne!(Source::from(IpAddr::V6(a)), Source::from(IpAddr::V6(c)));
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        assert_eq!(Source::from(IpAddr::V6(mapped)), v4(1));
    }

    #[test]
    fn the_table_is_bounded_and_drops_expired_then_oldest_entries() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut l = FailureLimiter::with_capacity(1, window, 3);
        l.failed(v4(1), t0);
        l.failed(v4(2), t0 + Duration::from_secs(1));
        l.failed(v4(3), t0 + Duration::from_secs(2));
        l.failed(v4(4), t0 + Duration::from_secs(3));
        assert_eq!(l.entries.len(), 3);
        assert!(
            !l.blocked(v4(1), t0 + Duration::from_secs(3)),
            "the oldest went"
        );
        assert!(l.blocked(v4(4), t0 + Duration::from_secs(3)));
        // Expired entries go before live ones.
        let later = t0 + Duration::from_secs(12);
        l.failed(v4(5), later);
        assert!(l.blocked(v4(5), later));
        assert!(l.blocked(v4(4), later));
        assert!(l.entries.len() <= 3);
    }
}
