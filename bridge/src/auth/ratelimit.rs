//! Failed logins counted per source address, so passwords cannot be guessed at the speed of
//! the network, and checks in flight per source address, so one address cannot take every
//! verification slot.
//!
//! After `max` failures from one source within `window`, further attempts from it are refused
//! at once, without checking the credentials (so the guesses cost the attacker time and the
//! bridge nothing), until `window` has passed since the first of those failures. A source is
//! an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64, so counting single
//! IPv6 addresses would count nothing). A success does not clear the count: otherwise an
//! attacker with one valid account could reset it between guesses at others.
//!
//! Checks in flight count against the budget: an attempt reserves a slot ([`Attempt`]) before
//! it waits for a verification, and is refused when the source's failures plus its checks in
//! flight already reach `max`. Without that, guesses sent at once would all pass the test
//! before any of them had failed. When the check ends, a success gives the slot back and a
//! failure turns it into a counted failure; an attempt given up before its check started
//! (the client went away, the bridge was too busy) gives it back too. A refusal for failures
//! alone is [`Refused::Limited`] (wrong credentials, as far as the client is told); one for
//! checks still in flight is [`Refused::Busy`] (try again later: those checks may all
//! succeed), so several clients behind one address that log in at once see some of them
//! refused as busy. Independently of `max` (even when it is 0, off), one source has at most
//! [`MAX_IN_FLIGHT_PER_SOURCE`] checks in flight; past it, attempts are refused as busy.
//!
//! The table is bounded: when full, entries with nothing in flight and no live failures go
//! first, then the oldest with nothing in flight. Entries with checks in flight are kept (the
//! caller bounds how many checks are in flight in all), so the table holds at most
//! [`MAX_SOURCES`] plus that many entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most sources remembered at once (beyond those with checks in flight).
const MAX_SOURCES: usize = 10_000;

/// Most checks in flight (waiting or running) from one source.
pub(crate) const MAX_IN_FLIGHT_PER_SOURCE: u32 = 8;

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
    /// The first failure of the current window (meaningless while `failures` is 0).
    since: Instant,
    failures: u32,
    /// Attempts admitted and not yet ended.
    in_flight: u32,
}

/// Why [`FailureLimiter::admit`] refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The source's failures reached the limit.
    Limited,
    /// The source's failures and checks in flight reached the limit, or it has
    /// [`MAX_IN_FLIGHT_PER_SOURCE`] checks in flight already.
    Busy,
}

/// Failures and checks in flight per source; failures in fixed windows.
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

    /// The failures of `entry` that still count at `now`.
    fn failures(&self, entry: &Entry, now: Instant) -> u32 {
        if now.saturating_duration_since(entry.since) < self.window {
            entry.failures
        } else {
            0
        }
    }

    /// Whether attempts from `source` are refused now for its failures alone.
    pub(crate) fn blocked(&self, source: Source, now: Instant) -> bool {
        self.max != 0
            && self
                .entries
                .get(&source)
                .is_some_and(|e| self.failures(e, now) >= self.max)
    }

    /// Admits an attempt from `source` (optional: connections with no peer address are not
    /// counted), reserving a slot of its budget until the returned [`Attempt`] ends.
    pub(crate) fn admit(
        limiter: &Arc<Mutex<FailureLimiter>>,
        source: Option<Source>,
        now: Instant,
    ) -> Result<Attempt, Refused> {
        if let Some(source) = source {
            lock(limiter).reserve(source, now)?;
        }
        Ok(Attempt {
            limiter: Arc::clone(limiter),
            source,
            ended: false,
        })
    }

    fn reserve(&mut self, source: Source, now: Instant) -> Result<(), Refused> {
        let (failures, in_flight) = self
            .entries
            .get(&source)
            .map_or((0, 0), |e| (self.failures(e, now), e.in_flight));
        if self.max != 0 && failures >= self.max {
            return Err(Refused::Limited);
        }
        let budget = self.max != 0 && failures.saturating_add(in_flight) >= self.max;
        if budget || in_flight >= MAX_IN_FLIGHT_PER_SOURCE {
            return Err(Refused::Busy);
        }
        match self.entries.get_mut(&source) {
            Some(entry) => entry.in_flight += 1,
            None => {
                self.make_room(now);
                self.entries.insert(
                    source,
                    Entry {
                        since: now,
                        failures: 0,
                        in_flight: 1,
                    },
                );
            }
        }
        Ok(())
    }

    /// Ends an attempt from `source`: its slot is given back, or, if `failed`, becomes a
    /// failure.
    fn end(&mut self, source: Source, failed: bool, now: Instant) {
        let counted = failed && self.max != 0;
        let Some(mut entry) = self.entries.get(&source).copied() else {
            // Not there (cannot happen: entries in flight are kept); count it anyway.
            if counted {
                self.make_room(now);
                self.entries.insert(
                    source,
                    Entry {
                        since: now,
                        failures: 1,
                        in_flight: 0,
                    },
                );
            }
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if counted {
            let failures = self.failures(&entry, now);
            if failures == 0 {
                entry.since = now;
            }
            entry.failures = failures.saturating_add(1);
        }
        if entry.in_flight == 0 && self.failures(&entry, now) == 0 {
            self.entries.remove(&source);
        } else {
            self.entries.insert(source, entry);
        }
    }

    /// Makes room for one more entry, if the table is full.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.capacity {
            return;
        }
        let window = self.window;
        self.entries.retain(|_, e| {
            e.in_flight > 0 || (e.failures > 0 && now.saturating_duration_since(e.since) < window)
        });
        if self.entries.len() < self.capacity {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| e.in_flight == 0)
            .min_by_key(|(_, e)| e.since)
            .map(|(source, _)| *source);
        if let Some(oldest) = oldest {
            self.entries.remove(&oldest);
        }
    }
}

/// An attempt admitted by [`FailureLimiter::admit`], holding a slot of its source's budget.
/// [`Attempt::end`] says how it went; dropped without that, it gives the slot back (the check
/// never ran).
#[derive(Debug)]
pub(crate) struct Attempt {
    limiter: Arc<Mutex<FailureLimiter>>,
    source: Option<Source>,
    ended: bool,
}

impl Attempt {
    /// Whether the source is over its failure limit now (checked again when the attempt's
    /// turn comes).
    pub(crate) fn blocked(&self) -> bool {
        self.source
            .is_some_and(|source| lock(&self.limiter).blocked(source, Instant::now()))
    }

    /// Ends the attempt: a success gives its slot back, a failure is counted.
    pub(crate) fn end(mut self, failed: bool) {
        self.ended = true;
        if let Some(source) = self.source {
            lock(&self.limiter).end(source, failed, Instant::now());
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.ended {
            if let Some(source) = self.source {
                lock(&self.limiter).end(source, false, Instant::now());
            }
        }
    }
}

fn lock(limiter: &Mutex<FailureLimiter>) -> std::sync::MutexGuard<'_, FailureLimiter> {
    limiter.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn v4(last: u8) -> Source {
        Source::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    /// One whole failed attempt.
    fn fail(l: &mut FailureLimiter, source: Source, now: Instant) {
        l.reserve(source, now).expect("admitted");
        l.end(source, true, now);
    }

    #[test]
    fn a_source_is_blocked_after_max_failures_until_the_window_passes() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut l = FailureLimiter::new(3, window);
        for i in 0..3 {
            assert!(!l.blocked(v4(1), t0), "after {i} failures");
            fail(&mut l, v4(1), t0 + Duration::from_secs(i));
        }
        assert!(l.blocked(v4(1), t0 + Duration::from_secs(3)));
        assert_eq!(l.reserve(v4(1), t0), Err(Refused::Limited));
        assert!(!l.blocked(v4(2), t0), "other sources are not affected");
        assert!(l.blocked(v4(1), t0 + window - Duration::from_millis(1)));
        assert!(!l.blocked(v4(1), t0 + window));
        // A new window starts with the next failure.
        fail(&mut l, v4(1), t0 + window);
        assert!(!l.blocked(v4(1), t0 + window));
    }

    #[test]
    fn checks_in_flight_count_against_the_budget_and_a_success_gives_its_slot_back() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            l.reserve(v4(1), t0).expect("admitted");
        }
        assert_eq!(l.reserve(v4(1), t0), Err(Refused::Busy), "3 in flight");
        l.end(v4(1), false, t0);
        l.reserve(v4(1), t0).expect("a success gave its slot back");
        l.end(v4(1), true, t0);
        l.end(v4(1), true, t0);
        assert_eq!(
            l.reserve(v4(1), t0),
            Err(Refused::Busy),
            "2 failed, 1 in flight"
        );
        l.end(v4(1), false, t0);
        l.reserve(v4(1), t0).expect("2 failed, 0 in flight");
        l.end(v4(1), true, t0);
        assert!(l.blocked(v4(1), t0));
        assert_eq!(l.reserve(v4(1), t0), Err(Refused::Limited), "3 failed");
    }

    #[test]
    fn checks_in_flight_are_capped_per_source_even_with_the_limit_off() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..MAX_IN_FLIGHT_PER_SOURCE {
            l.reserve(v4(1), t0).expect("admitted");
        }
        assert_eq!(l.reserve(v4(1), t0), Err(Refused::Busy));
        l.reserve(v4(2), t0).expect("another source");
        l.end(v4(1), true, t0);
        l.reserve(v4(1), t0).expect("one ended");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            fail(&mut l, v4(1), t0);
        }
        assert!(!l.blocked(v4(1), t0));
        assert!(l.entries.is_empty());
    }

    #[test]
    fn an_attempt_dropped_before_its_check_gives_its_slot_back_uncounted() {
        let limiter = Arc::new(Mutex::new(FailureLimiter::new(1, Duration::from_secs(60))));
        let now = Instant::now();
        let attempt = FailureLimiter::admit(&limiter, Some(v4(1)), now).expect("admitted");
        assert!(matches!(
            FailureLimiter::admit(&limiter, Some(v4(1)), now),
            Err(Refused::Busy)
        ));
        drop(attempt);
        let attempt = FailureLimiter::admit(&limiter, Some(v4(1)), now).expect("given back");
        assert!(!attempt.blocked());
        attempt.end(true);
        assert!(lock(&limiter).blocked(v4(1), Instant::now()));
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
        fail(&mut l, v4(1), t0);
        fail(&mut l, v4(2), t0 + Duration::from_secs(1));
        fail(&mut l, v4(3), t0 + Duration::from_secs(2));
        fail(&mut l, v4(4), t0 + Duration::from_secs(3));
        assert_eq!(l.entries.len(), 3);
        assert!(
            !l.blocked(v4(1), t0 + Duration::from_secs(3)),
            "the oldest went"
        );
        assert!(l.blocked(v4(4), t0 + Duration::from_secs(3)));
        // Expired entries go before live ones.
        let later = t0 + Duration::from_secs(12);
        fail(&mut l, v4(5), later);
        assert!(l.blocked(v4(5), later));
        assert!(l.blocked(v4(4), later));
        assert!(l.entries.len() <= 3);
        // Entries with checks in flight are kept.
        let mut l = FailureLimiter::with_capacity(1, window, 2);
        l.reserve(v4(1), t0).expect("admitted");
        l.reserve(v4(2), t0).expect("admitted");
        l.reserve(v4(3), t0).expect("admitted");
        assert_eq!(l.entries.len(), 3, "none could go");
        l.end(v4(1), true, t0);
        assert!(l.blocked(v4(1), t0));
    }
}
