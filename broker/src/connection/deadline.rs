//! The connection's clocks: a deadline on one pinned `Sleep` that is moved, never rebuilt.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Far enough to never come: the time a disarmed [`Deadline`] is parked at.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A deadline on one pinned [`Sleep`], armed or not.
///
/// The `Sleep` is made once per connection and moved with [`Sleep::reset`], never rebuilt,
/// so waking the task for anything else does not restart it; while disarmed it is not
/// polled, so it holds no timer slot.
pub(super) struct Deadline<'a> {
    sleep: Pin<&'a mut Sleep>,
    pub(super) armed: bool,
}

impl<'a> Deadline<'a> {
    pub(super) fn new(sleep: Pin<&'a mut Sleep>) -> Self {
        Deadline {
            sleep,
            armed: false,
        }
    }

    pub(super) fn arm(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.armed = true;
    }

    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    /// Resolves when armed and its time has come; never while disarmed.
    pub(super) async fn expired(&mut self) {
        if self.armed {
            self.sleep.as_mut().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// A parked `Sleep` for a [`Deadline`].
pub(super) fn parked() -> Sleep {
    tokio::time::sleep_until(Instant::now() + NEVER)
}
