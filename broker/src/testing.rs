//! What the unit tests of the topic tries share: a reproducible generator of random topics
//! and filters over a small alphabet, so that random filters and topics often meet.

/// A deterministic xorshift generator, so failures reproduce.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A number below `n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// 1 to 4 levels from `alphabet`, sometimes followed by one from `last`.
    pub(crate) fn levels(&mut self, alphabet: &[&str], last: &[&str]) -> String {
        let n = 1 + self.below(4);
        let mut levels: Vec<&str> = (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect();
        if self.below(4) == 0 {
            levels.push(last[self.below(last.len())]);
        }
        levels.join("/")
    }
}

/// Levels of random topic names (a `$` one and an empty one included).
pub(crate) const TOPIC_LEVELS: &[&str] = &["a", "b", "$x", ""];
/// Levels of random filters: the topic levels and `+` (`#` comes last, when it comes).
pub(crate) const FILTER_LEVELS: &[&str] = &["a", "b", "$x", "", "+"];
