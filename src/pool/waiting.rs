//! Requests waiting for a worker, and how they get one: a queue per request
//! class, oldest first, and [`serve`], the pass that hands waiting requests
//! to workers. The LB and the pool simulator both run it; what a request
//! and a worker are is the caller's ([`Server`]).
//!
//! A pass serves the classes in the order their oldest request began
//! waiting, each as far as the pool has a worker for it, so that a class
//! whose workers are all busy holds up no other: first as requests that
//! have not waited (their skilled workers, or a home of the class with an
//! idle thread), then with their waiting time, so that those past their
//! class's spill time may go to any free worker.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::rc::Rc;
use std::time::Duration;

use super::{Ask, Balancer, Time};

/// A queue of keys per class. Keys of requests that stopped waiting
/// (answered, their client gone) are dropped as they come up: `since`
/// says whether, and since when, a key's request waits.
pub struct Queues<K>(HashMap<Rc<str>, VecDeque<K>>);

impl<K> Default for Queues<K> {
    fn default() -> Self {
        Queues(HashMap::new())
    }
}

impl<K: Copy + Eq + Hash> Queues<K> {
    pub fn push(&mut self, class: &str, key: K) {
        match self.0.get_mut(class) {
            Some(q) => q.push_back(key),
            None => {
                self.0.insert(Rc::from(class), VecDeque::from([key]));
            }
        }
    }

    /// Keys still waiting.
    pub fn count(&self, since: impl Fn(K) -> Option<Time>) -> usize {
        self.0
            .values()
            .flatten()
            .filter(|&&k| since(k).is_some())
            .count()
    }

    /// The classes with keys waiting and when their oldest began, oldest
    /// first (dead heads and empty queues go).
    pub fn classes(&mut self, since: impl Fn(K) -> Option<Time>) -> Vec<(Rc<str>, Time)> {
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
    pub fn next(&mut self, class: &str, since: impl Fn(K) -> Option<Time>) -> Option<(K, Time)> {
        let queue = self.0.get_mut(class)?;
        while let Some(&key) = queue.front() {
            if let Some(t) = since(key) {
                return Some((key, t));
            }
            queue.pop_front();
        }
        None
    }

    pub fn pop(&mut self, class: &str) {
        if let Some(queue) = self.0.get_mut(class) {
            queue.pop_front();
        }
    }

    pub fn drain(&mut self) -> impl Iterator<Item = K> {
        std::mem::take(&mut self.0).into_values().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add `other`'s keys after this one's, class by class.
    pub fn append(&mut self, other: Queues<K>) {
        for (class, keys) in other.0 {
            self.0.entry(class).or_default().extend(keys);
        }
    }
}

/// What [`serve`] needs from its caller.
pub trait Server<K> {
    /// The caller's handle on a worker the pool chose.
    type Worker;
    /// Since when the request of `key` waits (`None`: it no longer does).
    fn since(&self, key: K) -> Option<Time>;
    /// A worker for a waiting request, from the pool.
    fn pick(&mut self, ask: &Ask) -> Option<Self::Worker>;
    /// Send the request to the worker `pick` gave.
    fn send(&mut self, key: K, worker: Self::Worker);
    fn balancer(&self) -> &Balancer;
}

/// Hand waiting requests to workers (see the module's text). Returns when
/// the next waiting request passes its spill time, if one will.
pub fn serve<K: Copy + Eq + Hash, S: Server<K>>(
    queues: &mut Queues<K>,
    s: &mut S,
    now: Time,
) -> Option<Time> {
    if queues.is_empty() {
        return None;
    }
    let classes = queues.classes(|k| s.since(k));
    'passes: for spill in [false, true] {
        for (class, oldest) in &classes {
            if !s.balancer().has_free() {
                break 'passes;
            }
            // A class none of whose requests is past its spill time has
            // nothing more to gain from the second pass.
            let due = |after: Duration| *oldest + after <= now;
            if spill && !s.balancer().spill_after(class).is_some_and(due) {
                continue;
            }
            while let Some((key, since)) = queues.next(class, |k| s.since(k)) {
                let waited = if spill {
                    now.saturating_sub(since)
                } else {
                    Duration::ZERO
                };
                let ask = Ask { class, waited, now };
                let Some(worker) = s.pick(&ask) else {
                    break;
                };
                queues.pop(class);
                s.send(key, worker);
            }
        }
    }
    // A request past its time that found no free worker waits for a slot
    // to free: a time already gone would spin. (Heads served just now may
    // make this earlier than needed: a harmless wake.)
    classes
        .iter()
        .filter_map(|(class, since)| Some(*since + s.balancer().spill_after(class)?))
        .filter(|&at| at > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn classes_come_oldest_first_and_requests_in_order_skipping_those_gone() {
        let at = |s: u64| Duration::from_secs(s);
        // key → since when it waits (absent: no longer waiting).
        let mut waits: HashMap<u32, Time> = HashMap::new();
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
        let since = |w: &HashMap<u32, Time>| {
            let w = w.clone();
            move |k: u32| w.get(&k).copied()
        };
        assert_eq!(q.count(since(&waits)), 5);
        let order: Vec<(String, Time)> = q
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
