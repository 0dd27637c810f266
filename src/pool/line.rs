//! The LRU line: every worker in the pool, front = least recently chosen.
//!
//! An intrusive doubly linked list over slot numbers, so that joining at the
//! front, moving to the back and leaving are all O(1). Each slot also gets a
//! stamp that grows from front to back, so two workers' places in line can be
//! compared in O(1) without walking the line.

const NIL: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: usize,
    next: usize,
    stamp: i64,
    linked: bool,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    stamp: 0,
    linked: false,
};

#[derive(Debug, Default)]
pub(crate) struct Line {
    links: Vec<Link>,
    head: usize,
    tail: usize,
    len: usize,
    /// Stamp for the next join at the front (decreasing).
    low: i64,
    /// Stamp for the next move to the back (increasing).
    high: i64,
}

impl Line {
    pub(crate) fn new() -> Line {
        Line {
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
            low: 0,
            high: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, slot: usize) -> bool {
        self.links.get(slot).is_some_and(|l| l.linked)
    }

    /// The least recently chosen worker.
    pub(crate) fn front(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head)
    }

    /// Place in line: smaller is nearer the front.
    pub(crate) fn stamp(&self, slot: usize) -> i64 {
        self.links[slot].stamp
    }

    fn ensure(&mut self, slot: usize) {
        if self.links.len() <= slot {
            self.links.resize(slot + 1, UNLINKED);
        }
    }

    pub(crate) fn push_front(&mut self, slot: usize) {
        self.ensure(slot);
        debug_assert!(!self.links[slot].linked);
        self.low -= 1;
        self.links[slot] = Link {
            prev: NIL,
            next: self.head,
            stamp: self.low,
            linked: true,
        };
        if self.head != NIL {
            self.links[self.head].prev = slot;
        } else {
            self.tail = slot;
        }
        self.head = slot;
        self.len += 1;
    }

    pub(crate) fn push_back(&mut self, slot: usize) {
        self.ensure(slot);
        debug_assert!(!self.links[slot].linked);
        self.high += 1;
        self.links[slot] = Link {
            prev: self.tail,
            next: NIL,
            stamp: self.high,
            linked: true,
        };
        if self.tail != NIL {
            self.links[self.tail].next = slot;
        } else {
            self.head = slot;
        }
        self.tail = slot;
        self.len += 1;
    }

    pub(crate) fn remove(&mut self, slot: usize) {
        if !self.contains(slot) {
            return;
        }
        let Link { prev, next, .. } = self.links[slot];
        if prev != NIL {
            self.links[prev].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.links[next].prev = prev;
        } else {
            self.tail = prev;
        }
        self.links[slot] = UNLINKED;
        self.len -= 1;
    }

    pub(crate) fn move_to_back(&mut self, slot: usize) {
        self.remove(slot);
        self.push_back(slot);
    }

    /// Slots from front to back.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let s = cur;
            cur = self.links[s].next;
            Some(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_stamps_agree() {
        let mut l = Line::new();
        l.push_front(0);
        l.push_front(1);
        l.push_back(2);
        l.move_to_back(1);
        l.push_front(3);
        let order: Vec<_> = l.iter().collect();
        assert_eq!(order, vec![3, 0, 2, 1]);
        let stamps: Vec<_> = order.iter().map(|&s| l.stamp(s)).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
        l.remove(0);
        l.remove(1);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.front(), Some(3));
        l.remove(3);
        l.remove(2);
        assert_eq!(l.front(), None);
        assert_eq!(l.len(), 0);
    }
}
