//! Outlier detection: a worker whose requests keep failing at the gateway
//! (a 502, 503 or 504 response, a response it aborts, a head it cannot
//! make) is taken out of the pool for a while: after `eject_after`
//! failures in a row, for 1 s, doubling while it keeps failing, at most
//! 30 s. At most half the workers are out at once (rounded down), and never
//! the last one in the pool. Pure: the worker part keeps a [`Record`] per
//! connection and acts on what it says.

use std::time::{Duration, Instant};

/// The first ejection's length.
const FIRST: Duration = Duration::from_secs(1);
/// The longest ejection.
const LONGEST: Duration = Duration::from_secs(30);

/// Whether a response status is a gateway failure: the worker (or what it
/// stands for) could not serve. An application's own 500 is not: one
/// always-failing class must not eject the workers one after another.
pub(super) fn gateway_failure(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// The half rule: one more ejection, with `ejected` workers out already
/// among `workers` (in the pool or held out), and `in_pool` in the pool.
pub(super) fn may_eject(ejected: usize, workers: usize, in_pool: usize) -> bool {
    ejected < workers / 2 && in_pool >= 2
}

/// One worker connection's failures and ejections.
#[derive(Debug, Default, Clone)]
pub(super) struct Record {
    /// Gateway failures in a row.
    consecutive: u32,
    /// Ejections since its last success (each one twice as long).
    ejections: u32,
    /// Out of the pool until then.
    until: Option<Instant>,
}

impl Record {
    pub(super) fn ejected_until(&self) -> Option<Instant> {
        self.until
    }

    /// A request's outcome. `eject_after` is the setting (0: never eject);
    /// `may_eject` whether the half rule allows one more now (asked only
    /// when it matters). Returns the end of a new ejection.
    pub(super) fn outcome(
        &mut self,
        failed: bool,
        now: Instant,
        eject_after: u32,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Instant> {
        if !failed {
            self.consecutive = 0;
            self.ejections = 0;
            return None;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if eject_after == 0
            || self.consecutive < eject_after
            || self.until.is_some()
            || !may_eject()
        {
            return None;
        }
        let length = FIRST
            .saturating_mul(1 << self.ejections.min(16))
            .min(LONGEST);
        self.ejections += 1;
        self.consecutive = 0;
        let until = crate::util::time::after(now, length);
        self.until = Some(until);
        Some(until)
    }

    /// The ejection is over if its time has come: true then.
    pub(super) fn end_if_due(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|t| now >= t) {
            self.until = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(r: &mut Record, now: Instant, n: u32) -> Option<Instant> {
        let mut last = None;
        for _ in 0..n {
            last = r.outcome(true, now, 3, || true).or(last);
        }
        last
    }

    #[test]
    fn consecutive_failures_eject_with_a_doubling_backoff_up_to_30_s() {
        let t = Instant::now();
        let mut r = Record::default();
        assert_eq!(fail(&mut r, t, 2), None, "two failures are not enough");
        assert_eq!(r.outcome(false, t, 3, || true), None);
        assert_eq!(fail(&mut r, t, 2), None, "a success starts the count again");
        let mut expect = Vec::new();
        let mut now = t;
        for _ in 0..7 {
            let until = fail(&mut r, now, 3).expect("ejected");
            expect.push((until - now).as_secs());
            assert_eq!(r.ejected_until(), Some(until));
            assert_eq!(fail(&mut r, now, 5), None, "no second ejection while out");
            assert!(!r.end_if_due(until - Duration::from_millis(1)));
            assert!(r.end_if_due(until));
            now = until;
        }
        assert_eq!(expect, [1, 2, 4, 8, 16, 30, 30]);
        // A success resets the back-off.
        r.outcome(false, now, 3, || true);
        let until = fail(&mut r, now, 3).unwrap();
        assert_eq!((until - now).as_secs(), 1);
    }

    #[test]
    fn the_half_rule_and_the_setting() {
        assert!(!may_eject(0, 1, 1), "never the only worker");
        assert!(may_eject(0, 2, 2));
        assert!(!may_eject(1, 2, 1), "half of two is one");
        assert!(may_eject(1, 5, 4));
        assert!(!may_eject(2, 5, 3), "half of five, rounded down, is two");
        assert!(!may_eject(0, 4, 1), "never the last one in the pool");
        let t = Instant::now();
        let mut r = Record::default();
        for _ in 0..100 {
            assert_eq!(r.outcome(true, t, 0, || true), None, "0: never eject");
        }
        let mut r = Record::default();
        for _ in 0..10 {
            assert_eq!(
                r.outcome(true, t, 3, || false),
                None,
                "the half rule says no"
            );
        }
        assert!(r.outcome(true, t, 3, || true).is_some(), "it may later");
        assert!(gateway_failure(502) && gateway_failure(503) && gateway_failure(504));
        assert!(!gateway_failure(500) && !gateway_failure(501) && !gateway_failure(404));
    }
}
