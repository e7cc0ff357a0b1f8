//! Log lines for events that can repeat at will: at most one line per interval per kind,
//! carrying how many times the event happened since the previous line.
//!
//! Why: a refused retained message, an invalid topic or a full session table is the
//! client's doing, and a client can do it 100 000 times a second. One WARN per refusal let a
//! single client write 11.5 MB of log; the operator needs to know it happens and how often,
//! not each instance. The bridge uses the same type for refused connections and accept
//! errors.

use std::time::{Duration, Instant};

/// How often a line of one kind may be written.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated log line.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    /// When a line was last written; `None`: never.
    last: Option<Instant>,
    /// Events since that line, not written yet.
    count: u64,
}

impl RateLimitedLog {
    /// Counts one event at `now`; `Some(n)` when a line should be written now, `n` being
    /// the events since the previous line, this one included.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        let due = self
            .last
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.count))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_events_since_the_last() {
        let mut log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.hit(t0), Some(1));
        for i in 1..=1000 {
            assert_eq!(log.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.hit(t0 + LOG_INTERVAL), Some(1001));
        assert_eq!(log.hit(t0 + LOG_INTERVAL), None);
    }
}
