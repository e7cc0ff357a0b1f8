//! Log lines for refusals that a client can repeat at will: at most one line per interval
//! per kind, carrying how many were left out.
//!
//! Why: a refused retained message, an invalid topic or a full session table is the
//! client's doing, and a client can do it 100 000 times a second. One WARN per refusal let a
//! single client write 11.5 MB of log; the operator needs to know it happens and how often,
//! not each instance.

use std::time::{Duration, Instant};

/// How often a line of one kind may be written.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated log line.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    /// When a line was last written; `None`: never.
    last: Option<Instant>,
    /// Occurrences since that line that were not written.
    suppressed: u64,
}

impl RateLimitedLog {
    /// Counts one occurrence; `Some(n)` when a line should be written now, `n` being how
    /// many occurrences since the previous line were left out.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.saturating_duration_since(at) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_those_left_out() {
        let mut log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.hit(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(log.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.hit(t0 + LOG_INTERVAL), Some(1000));
        assert_eq!(log.hit(t0 + LOG_INTERVAL), None);
    }
}
