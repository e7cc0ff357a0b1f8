//! Time, which the driver passes in: the keep-alive (PINGREQ when idle, the end of the
//! connection when PINGRESP is late) and the CONNACK deadline.

use core::time::Duration;

use crate::packet::Packet;

use super::{Client, ClientError, State};

/// A point in time, in milliseconds since an origin the driver chooses (`performance.now()`
/// in a browser, an `Instant` in tests). Only differences matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The time `ms` milliseconds after the origin.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the origin.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `d` later, saturating.
    pub(super) fn after(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl Client {
    /// Runs the timers: sends PINGREQ when the keep-alive is due, ends the connection when
    /// the PINGRESP or the CONNACK is late.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<(), ClientError> {
        match self.state {
            State::Disconnected => Ok(()),
            State::Connecting { since } => {
                if now >= since.after(self.opts.connect_timeout) {
                    self.connection_lost();
                    return Err(ClientError::ConnectTimeout);
                }
                Ok(())
            }
            State::Connected => {
                if self.keep_alive.is_zero() {
                    return Ok(());
                }
                if let Some(sent) = self.ping_sent {
                    if now >= sent.after(self.keep_alive) {
                        self.connection_lost();
                        return Err(ClientError::KeepAliveTimeout);
                    }
                } else if now >= self.last_sent.after(self.ping_interval()) {
                    self.ping_sent = Some(now);
                    self.send(Packet::PingReq, now);
                }
                Ok(())
            }
        }
    }

    /// When [`Client::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Disconnected => None,
            State::Connecting { since } => Some(since.after(self.opts.connect_timeout)),
            State::Connected if self.keep_alive.is_zero() => None,
            State::Connected => Some(match self.ping_sent {
                Some(sent) => sent.after(self.keep_alive),
                None => self.last_sent.after(self.ping_interval()),
            }),
        }
    }

    /// PINGREQ goes out after three quarters of the keep-alive without sending, so a late
    /// timer (a background browser tab) still lands within the server's 1.5 times.
    fn ping_interval(&self) -> Duration {
        self.keep_alive * 3 / 4
    }
}
