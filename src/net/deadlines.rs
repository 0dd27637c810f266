//! Deadlines for an event loop: a binary heap of (time, key) whose earliest
//! entry sets the poll timeout, so that timeouts and keep-alives cost
//! nothing while they are not due (no ticker scanning every connection).
//!
//! Entries are never removed early. A connection records the earliest time
//! it is armed for in an [`Armed`]; when an entry pops, the owner compares
//! it with that record, drops it if stale, and otherwise looks at what is
//! really due (activity may have pushed its deadline later) and arms again.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<K> Eq for Entry<K> {}
impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// When a connection is next due, as far as the heap knows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Armed(Option<Instant>);

impl Armed {
    /// Whether a popped entry for `at` is the one this connection is armed
    /// for (else it is stale and dropped). A current one disarms it.
    pub(crate) fn fire(&mut self, at: Instant) -> bool {
        if self.0 == Some(at) {
            self.0 = None;
            true
        } else {
            false
        }
    }
}

pub(crate) struct Deadlines<K> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
    seq: u64,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<K: Copy> Deadlines<K> {
    /// Wake `key` at `at` (a plain entry, for timers with no [`Armed`]).
    pub(crate) fn push(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            key,
        }));
    }

    /// Make sure `key` is woken at `at` or before: no new entry when it is
    /// armed for that time or earlier already.
    pub(crate) fn arm(&mut self, armed: &mut Armed, at: Instant, key: K) {
        if armed.0.is_some_and(|t| t <= at) {
            return;
        }
        armed.0 = Some(at);
        self.push(at, key);
    }

    /// The earliest entry due at `now`, removed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.heap.peek()?.0.at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.at, e.key))
    }

    /// The earliest entry's time.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_time_order_only_when_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.push(t0 + Duration::from_secs(3), 'c');
        d.push(t0 + Duration::from_secs(1), 'a');
        d.push(t0 + Duration::from_secs(2), 'b');
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.pop_due(t0), None);
        let at2 = t0 + Duration::from_secs(2);
        assert_eq!(d.pop_due(at2).map(|e| e.1), Some('a'));
        assert_eq!(d.pop_due(at2).map(|e| e.1), Some('b'));
        assert_eq!(d.pop_due(at2), None);
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn arming_later_adds_nothing_and_stale_entries_are_told_apart() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let mut armed = Armed::default();
        d.arm(&mut armed, t0 + Duration::from_secs(5), 1u8);
        d.arm(&mut armed, t0 + Duration::from_secs(7), 1u8);
        assert_eq!(d.len(), 1, "a later deadline waits for the earlier entry");
        d.arm(&mut armed, t0 + Duration::from_secs(2), 1u8);
        assert_eq!(d.len(), 2);
        let (at, _) = d.pop_due(t0 + Duration::from_secs(9)).unwrap();
        assert!(armed.fire(at), "the earliest entry is the current one");
        let (at, _) = d.pop_due(t0 + Duration::from_secs(9)).unwrap();
        assert!(!armed.fire(at), "the older, later entry is stale");
    }
}
