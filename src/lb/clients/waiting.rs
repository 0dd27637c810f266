//! Requests waiting for a worker: a queue per request class, oldest first.
//! The loop serves the classes in the order their oldest request began
//! waiting, and each as far as the pool has a worker for it, so that a
//! class whose workers are all busy holds up no other. The queues are pure
//! (`Queues`, tested below); `Clients` tells them which requests still
//! wait.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::time::Instant;

use super::super::ctx::Ctx;
use super::{Client, ClientKey, Clients, NO_WORKER_AT_SHUTDOWN};

/// A queue of keys per class. Keys of requests that stopped waiting
/// (answered, their client gone) are dropped as they come up: `since`
/// says whether, and since when, a key's request waits.
pub(super) struct Queues<K>(HashMap<Rc<str>, VecDeque<K>>);

impl<K> Default for Queues<K> {
    fn default() -> Self {
        Queues(HashMap::new())
    }
}

impl<K: Copy + Eq + Hash> Queues<K> {
    fn push(&mut self, class: &str, key: K) {
        match self.0.get_mut(class) {
            Some(q) => q.push_back(key),
            None => {
                self.0.insert(Rc::from(class), VecDeque::from([key]));
            }
        }
    }

    /// Keys still waiting.
    fn count(&self, since: impl Fn(K) -> Option<Instant>) -> usize {
        self.0
            .values()
            .flatten()
            .filter(|&&k| since(k).is_some())
            .count()
    }

    /// The classes with keys waiting and when their oldest began, oldest
    /// first (dead heads and empty queues go).
    fn classes(&mut self, since: impl Fn(K) -> Option<Instant>) -> Vec<(Rc<str>, Instant)> {
        let mut out = Vec::new();
        self.0.retain(|class, queue| {
            while let Some(&key) = queue.front() {
                if let Some(t) = since(key) {
                    out.push((class.clone(), t));
                    return true;
                }
                queue.pop_front();
            }
            false
        });
        out.sort_by_key(|(_, t)| *t);
        out
    }

    /// The oldest key of `class` still waiting, and since when.
    fn next(&mut self, class: &str, since: impl Fn(K) -> Option<Instant>) -> Option<(K, Instant)> {
        let queue = self.0.get_mut(class)?;
        while let Some(&key) = queue.front() {
            if let Some(t) = since(key) {
                return Some((key, t));
            }
            queue.pop_front();
        }
        None
    }

    fn pop(&mut self, class: &str) {
        if let Some(queue) = self.0.get_mut(class) {
            queue.pop_front();
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = K> {
        std::mem::take(&mut self.0).into_values().flatten()
    }
}

/// Since when the request of `key` waits, if it does.
fn since(map: &slotmap::SlotMap<ClientKey, Client>, key: ClientKey) -> Option<Instant> {
    map.get(key)?.req.as_ref()?.ex.waiting_since()
}

impl Clients {
    /// Requests waiting for a worker now.
    pub(in crate::lb) fn waiting(&self) -> usize {
        self.waiting.count(|k| since(&self.map, k))
    }

    /// No worker is free: wait for one.
    pub(in crate::lb) fn wait(&mut self, key: ClientKey) {
        if let Some(r) = self.map.get_mut(key).and_then(|c| c.req.as_mut()) {
            r.ex.wait(Instant::now());
            self.waiting.push(&r.class, key);
        }
    }

    /// The classes with requests waiting, with when their oldest began to
    /// wait, oldest first.
    pub(in crate::lb) fn waiting_classes(&mut self) -> Vec<(Rc<str>, Instant)> {
        let map = &self.map;
        self.waiting.classes(|k| since(map, k))
    }

    /// The oldest request of `class` still waiting, and since when.
    pub(in crate::lb) fn next_waiting(&mut self, class: &str) -> Option<(ClientKey, Instant)> {
        let map = &self.map;
        self.waiting.next(class, |k| since(map, k))
    }

    /// The request [`Clients::next_waiting`] gave goes to a worker.
    pub(in crate::lb) fn pop_waiting(&mut self, class: &str) {
        self.waiting.pop(class);
    }

    /// Shutting down: requests waiting for a worker (there is none in the
    /// pool, or none free) get 503 at once.
    pub(in crate::lb) fn refuse_waiting(&mut self, ctx: &mut Ctx) {
        let keys: Vec<ClientKey> = self.waiting.drain().collect();
        for key in keys {
            if since(&self.map, key).is_some() {
                self.refuse(key, NO_WORKER_AT_SHUTDOWN, ctx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn classes_come_oldest_first_and_requests_in_order_skipping_those_gone() {
        let t = Instant::now();
        let at = |s: u64| t + Duration::from_secs(s);
        // key → since when it waits (absent: no longer waiting).
        let mut waits: HashMap<u32, Instant> = HashMap::new();
        let mut q = Queues::default();
        for (key, class, s) in [
            (1, "b", 2),
            (2, "a", 3),
            (3, "b", 4),
            (4, "c", 1),
            (5, "a", 5),
        ] {
            q.push(class, key);
            waits.insert(key, at(s));
        }
        let since = |w: &HashMap<u32, Instant>| {
            let w = w.clone();
            move |k: u32| w.get(&k).copied()
        };
        assert_eq!(q.count(since(&waits)), 5);
        let order: Vec<(String, Instant)> = q
            .classes(since(&waits))
            .into_iter()
            .map(|(c, t)| (c.to_string(), t))
            .collect();
        assert_eq!(
            order,
            [
                ("c".into(), at(1)),
                ("b".into(), at(2)),
                ("a".into(), at(3))
            ]
        );
        // Within a class: oldest first; one that stopped waiting is skipped.
        waits.remove(&1);
        assert_eq!(q.next("b", since(&waits)), Some((3, at(4))));
        q.pop("b");
        assert_eq!(q.next("b", since(&waits)), None);
        // Classes with nothing left go.
        waits.remove(&4);
        let left: Vec<String> = q
            .classes(since(&waits))
            .into_iter()
            .map(|(c, _)| c.to_string())
            .collect();
        assert_eq!(left, ["a"]);
        assert_eq!(q.count(since(&waits)), 2);
        let mut drained: Vec<u32> = q.drain().collect();
        drained.sort_unstable();
        assert_eq!(drained, [2, 5]);
    }
}
