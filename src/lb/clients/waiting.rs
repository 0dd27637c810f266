//! Requests waiting for a worker: a queue per request class, oldest first.
//! The loop serves the classes in the order their oldest request began
//! waiting, and each as far as the pool has a worker for it, so that a
//! class whose workers are all busy holds up no other.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use super::super::ctx::Ctx;
use super::{Client, ClientKey, Clients, NO_WORKER_AT_SHUTDOWN};

/// A queue of request keys per class. Keys of requests that stopped
/// waiting (answered, their client gone) are dropped as they come up.
#[derive(Default)]
pub(super) struct Queues(HashMap<Rc<str>, VecDeque<ClientKey>>);

/// Since when the request of `key` waits, if it does.
fn since(map: &slotmap::SlotMap<ClientKey, Client>, key: ClientKey) -> Option<Instant> {
    map.get(key)?.req.as_ref()?.ex.waiting_since()
}

impl Clients {
    /// Requests waiting for a worker now.
    pub(in crate::lb) fn waiting(&self) -> usize {
        let map = &self.map;
        self.waiting
            .0
            .values()
            .flatten()
            .filter(|&&k| since(map, k).is_some())
            .count()
    }

    /// No worker is free: wait for one.
    pub(in crate::lb) fn wait(&mut self, key: ClientKey) {
        if let Some(r) = self.map.get_mut(key).and_then(|c| c.req.as_mut()) {
            r.ex.wait(Instant::now());
            let queue = self
                .waiting
                .0
                .entry(Rc::from(r.class.as_str()))
                .or_default();
            queue.push_back(key);
        }
    }

    /// The classes with requests waiting, with when their oldest began to
    /// wait, oldest first.
    pub(in crate::lb) fn waiting_classes(&mut self) -> Vec<(Rc<str>, Instant)> {
        let map = &self.map;
        let mut out = Vec::new();
        self.waiting.0.retain(|class, queue| {
            while let Some(&key) = queue.front() {
                if let Some(t) = since(map, key) {
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

    /// The oldest request of `class` still waiting, and since when.
    pub(in crate::lb) fn next_waiting(&mut self, class: &str) -> Option<(ClientKey, Instant)> {
        let map = &self.map;
        let queue = self.waiting.0.get_mut(class)?;
        while let Some(&key) = queue.front() {
            if let Some(t) = since(map, key) {
                return Some((key, t));
            }
            queue.pop_front();
        }
        None
    }

    /// The request [`Clients::next_waiting`] gave goes to a worker.
    pub(in crate::lb) fn pop_waiting(&mut self, class: &str) {
        if let Some(queue) = self.waiting.0.get_mut(class) {
            queue.pop_front();
        }
    }

    /// Shutting down: requests waiting for a worker (there is none in the
    /// pool, or none free) get 503 at once.
    pub(in crate::lb) fn refuse_waiting(&mut self, ctx: &mut Ctx) {
        let queues = std::mem::take(&mut self.waiting.0);
        for key in queues.into_values().flatten() {
            if since(&self.map, key).is_some() {
                self.refuse(key, NO_WORKER_AT_SHUTDOWN, ctx);
            }
        }
    }
}
