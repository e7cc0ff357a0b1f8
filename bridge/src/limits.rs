//! Connection limits counted at accept, and log lines that repeat at most once per interval.
//!
//! [`ConnectionLimiter`] counts every MQTT connection (TCP, and WebSocket from its upgrade
//! request on) from the moment it is accepted, before any CONNECT: `max_connections` in
//! total and `max_connections_per_address` per source. A source is an IPv4 address, or the
//! /64 prefix of an IPv6 address (one host or one customer network usually has a whole
//! /64, so counting single IPv6 addresses would let one machine open 2^64 connections). An
//! IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener reports) counts
//! as its IPv4 address.
//!
//! A connection holds a [`ConnectionPermit`] for as long as it lives; dropping it gives
//! the place back, so no path (error, panic, shutdown) can leak a count.
//!
//! [`broker::RateLimitedLog`] turns an event that may repeat thousands of times a second (a refused
//! connection, `accept` failing with "Too many open files") into one log line per interval
//! that says how many there were.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use broker::ratelog::{RateLimitedLog, LOG_INTERVAL};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long an accept loop pauses after an error of the listener itself (out of file
/// descriptors, out of memory), instead of spinning on a listener that stays readable.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Counts connections in total and per source address; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Most connections at once.
    max_total: usize,
    /// Most connections at once from one [`Source`].
    max_per_source: usize,
    /// The counts. Held only to add or subtract one: never across an `.await`.
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    /// Connections holding a permit.
    total: usize,
    /// Connections holding a permit, by source; a source with none has no entry, so the
    /// map is as large as the number of sources connected now.
    per_source: HashMap<Source, usize>,
    /// Refusals since the last log line about them.
    refusals: RateLimitedLog,
}

/// Where a connection comes from, as far as the per-address limit is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// An IPv4 address (also what an IPv4-mapped IPv6 address becomes).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl Source {
    /// The source an address counts under.
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// `max_connections` connections are open.
    #[error("too many connections (max_connections = {0})")]
    Total(usize),
    /// `max_connections_per_address` connections are open from this source.
    #[error("too many connections from this address (max_connections_per_address = {0})")]
    PerAddress(usize),
}

/// One connection's place in the counts, given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    shared: Arc<Shared>,
    source: Source,
}

impl ConnectionLimiter {
    /// A limiter allowing `max_total` connections, `max_per_source` from any one source.
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> ConnectionLimiter {
        ConnectionLimiter {
            shared: Arc::new(Shared {
                max_total,
                max_per_source,
                counts: Mutex::new(Counts {
                    total: 0,
                    per_source: HashMap::new(),
                    refusals: RateLimitedLog::default(),
                }),
            }),
        }
    }

    /// Counts a new connection from `ip`, or says why it cannot be had. A refusal is
    /// logged here, at most once per [`LOG_INTERVAL`] with the number of refusals since the
    /// last line.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let source = Source::of(ip);
        let shared = &self.shared;
        let (outcome, to_log) = {
            let mut counts = shared.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let from_source = counts.per_source.get(&source).copied().unwrap_or(0);
            let outcome = if counts.total >= shared.max_total {
                Err(Refusal::Total(shared.max_total))
            } else if from_source >= shared.max_per_source {
                Err(Refusal::PerAddress(shared.max_per_source))
            } else {
                counts.total += 1;
                counts.per_source.insert(source, from_source + 1);
                Ok(())
            };
            let to_log = match outcome {
                Ok(()) => None,
                Err(_) => counts.refusals.hit(Instant::now()),
            };
            (outcome, to_log)
        };
        match outcome {
            Ok(()) => Ok(ConnectionPermit {
                shared: Arc::clone(shared),
                source,
            }),
            Err(refusal) => {
                if let Some(count) = to_log {
                    tracing::warn!(
                        peer = %ip,
                        refused = count,
                        "connection refused at accept: {refusal} \
                         (one line per {LOG_INTERVAL:?}; `refused` counts them)"
                    );
                }
                Err(refusal)
            }
        }
    }

    /// Connections counted now: in total, and from `ip`'s source.
    #[cfg(test)]
    fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let from = counts.per_source.get(&Source::of(ip)).copied();
        (counts.total, from.unwrap_or(0))
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

/// What an accept loop does with an `accept` error; one per loop.
#[derive(Debug)]
pub(crate) struct AcceptErrors {
    /// The listener, for the log line: `"mqtt"` or `"http"`.
    listener: &'static str,
    throttle: RateLimitedLog,
}

impl AcceptErrors {
    /// The next connection `listener` accepts, riding out accept errors ([`Self::handle`]);
    /// `None` once `stop` is cancelled.
    pub(crate) async fn accept(
        &mut self,
        listener: &TcpListener,
        stop: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return None,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(pair) => return Some(pair),
                Err(e) => self.handle(&e).await,
            }
        }
    }

    pub(crate) fn new(listener: &'static str) -> AcceptErrors {
        AcceptErrors {
            listener,
            throttle: RateLimitedLog::default(),
        }
    }

    /// Handles one error. An error of the half-open connection alone is skipped at once.
    /// Anything else (EMFILE "Too many open files", ENFILE, ENOMEM) is an error of the
    /// listener that a retry a moment later may not have: logged at most once per
    /// [`LOG_INTERVAL`] with the count, then [`ACCEPT_BACKOFF`] of pause. The loop never
    /// ends over it; the pending connection waits in the listen backlog meanwhile.
    pub(crate) async fn handle(&mut self, e: &io::Error) {
        if is_connection_error(e) {
            return;
        }
        if let Some(count) = self.throttle.hit(Instant::now()) {
            tracing::error!(
                listener = self.listener,
                errors = count,
                error = %e,
                "accept failed; retrying every {ACCEPT_BACKOFF:?} \
                 (one line per {LOG_INTERVAL:?}; `errors` counts them)"
            );
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Errors of one half-open connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn the_per_address_limit_refuses_the_address_but_not_others() {
        let limiter = ConnectionLimiter::new(100, 2);
        let a = ip("192.0.2.1");
        let _p1 = limiter.try_acquire(a).expect("first");
        let _p2 = limiter.try_acquire(a).expect("second");
        assert_eq!(limiter.try_acquire(a).err(), Some(Refusal::PerAddress(2)));
        let _other = limiter
            .try_acquire(ip("192.0.2.2"))
            .expect("another address");
        assert_eq!(limiter.counts(a), (3, 2));
    }

    #[test]
    fn the_total_limit_refuses_everyone() {
        let limiter = ConnectionLimiter::new(2, 10);
        let _p1 = limiter.try_acquire(ip("192.0.2.1")).expect("first");
        let _p2 = limiter.try_acquire(ip("192.0.2.2")).expect("second");
        assert_eq!(
            limiter.try_acquire(ip("192.0.2.3")).err(),
            Some(Refusal::Total(2))
        );
    }

    #[test]
    fn ipv6_addresses_in_one_slash_64_share_a_count() {
        let limiter = ConnectionLimiter::new(100, 2);
        let _p1 = limiter.try_acquire(ip("2001:db8:1:2::1")).expect("first");
        let _p2 = limiter
            .try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
            .expect("same /64, second");
        assert_eq!(
            limiter.try_acquire(ip("2001:db8:1:2:1234::9")).err(),
            Some(Refusal::PerAddress(2))
        );
        // The next /64 is another source.
        let _p3 = limiter
            .try_acquire(ip("2001:db8:1:3::1"))
            .expect("another /64");
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_counts_as_its_ipv4_address() {
        let v4: Ipv4Addr = "198.51.100.7".parse().expect("v4");
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        assert_eq!(Source::of(mapped), Source::V4(v4));
        let limiter = ConnectionLimiter::new(100, 1);
        let _p = limiter.try_acquire(IpAddr::V4(v4)).expect("first");
        assert_eq!(
            limiter.try_acquire(mapped).err(),
            Some(Refusal::PerAddress(1))
        );
        // Not every IPv6 address with zeros in front is a mapped one.
        assert_eq!(
            Source::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Source::V6Prefix(0)
        );
    }

    #[test]
    fn dropping_a_permit_gives_its_place_back() {
        let limiter = ConnectionLimiter::new(1, 1);
        let a = ip("192.0.2.1");
        let permit = limiter.try_acquire(a).expect("first");
        assert!(limiter.try_acquire(ip("192.0.2.2")).is_err());
        drop(permit);
        assert_eq!(limiter.counts(a), (0, 0));
        assert!(
            limiter
                .shared
                .counts
                .lock()
                .expect("lock")
                .per_source
                .is_empty(),
            "a source with no connection keeps no entry"
        );
        let _again = limiter
            .try_acquire(ip("192.0.2.2"))
            .expect("place given back");
    }

    #[test]
    fn a_permit_moved_to_another_thread_is_released_there() {
        let limiter = ConnectionLimiter::new(1, 1);
        let permit = limiter.try_acquire(ip("192.0.2.1")).expect("first");
        std::thread::spawn(move || drop(permit))
            .join()
            .expect("thread");
        assert!(limiter.try_acquire(ip("192.0.2.1")).is_ok());
    }
}
