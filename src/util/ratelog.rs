//! Keeps a warning that a peer can trigger at will (a refused connection,
//! a failed handshake, every reconnect) to one line per key per interval,
//! with the number held back in between.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys remembered at most; past that, old ones are forgotten.
const MAX_KEYS: usize = 4096;

pub struct LogLimiter<K> {
    interval: Duration,
    seen: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq> LogLimiter<K> {
    pub fn new(interval: Duration) -> LogLimiter<K> {
        LogLimiter {
            interval,
            seen: HashMap::new(),
        }
    }

    /// `Some(n)`: log this one now, `n` were held back since the last line
    /// for `key`; `None`: hold it back.
    pub fn check(&mut self, key: K, now: Instant) -> Option<u64> {
        if self.seen.len() >= MAX_KEYS && !self.seen.contains_key(&key) {
            let interval = self.interval;
            self.seen
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < interval);
            if self.seen.len() >= MAX_KEYS {
                self.seen.clear();
            }
        }
        match self.seen.get_mut(&key) {
            Some((at, held)) if now.saturating_duration_since(*at) < self.interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }

    /// Forget every key for which `f` is true.
    pub fn forget_if(&mut self, mut f: impl FnMut(&K) -> bool) {
        self.seen.retain(|k, _| !f(k));
    }
}

/// " (N more since the last message)" or nothing.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last message)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval() {
        let mut l = LogLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.check("a", t0), Some(0));
        assert_eq!(l.check("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.check("b", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(l.check("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.check("a", t0 + Duration::from_secs(61)), Some(2));
        assert_eq!(l.check("a", t0 + Duration::from_secs(62)), None);
        l.forget_if(|k| *k == "a");
        assert_eq!(l.check("a", t0 + Duration::from_secs(63)), Some(0));
        assert_eq!(held_back(0), "");
        assert_eq!(held_back(3), " (3 more since the last message)");
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = LogLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for k in 0..3 * MAX_KEYS {
            assert_eq!(l.check(k, t0), Some(0));
        }
        assert!(l.seen.len() <= MAX_KEYS);
    }
}
