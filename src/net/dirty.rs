//! Connections with output to flush after this round of events: each one
//! once, in the order they were marked, in O(1) per mark.

use std::collections::HashSet;
use std::hash::Hash;

pub(crate) struct DirtySet<K> {
    order: Vec<K>,
    set: HashSet<K>,
}

impl<K> Default for DirtySet<K> {
    fn default() -> Self {
        DirtySet {
            order: Vec::new(),
            set: HashSet::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> DirtySet<K> {
    pub(crate) fn mark(&mut self, key: K) {
        if self.set.insert(key) {
            self.order.push(key);
        }
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Everything marked so far, emptying the set (marks made while the
    /// caller works through them go into the next batch).
    pub(crate) fn take(&mut self) -> Vec<K> {
        self.set.clear();
        std::mem::take(&mut self.order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_once_in_marking_order() {
        let mut d = DirtySet::default();
        for k in [3, 1, 3, 2, 1] {
            d.mark(k);
        }
        assert_eq!(d.take(), vec![3, 1, 2]);
        assert!(d.is_empty());
        d.mark(3);
        assert_eq!(d.take(), vec![3], "a taken key can be marked again");
    }
}
