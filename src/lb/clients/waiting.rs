//! Requests waiting for a worker: the clients' side of the queues in
//! `pool::waiting` (which requests still wait, and since when). The loop
//! runs the pass that serves them.

use std::time::Instant;

use super::super::ctx::Ctx;
use super::{Client, ClientKey, Clients, NO_WORKER_AT_SHUTDOWN};
use crate::pool::waiting::Queues;

/// Since when the request of `key` waits, if it does.
fn since(map: &slotmap::SlotMap<ClientKey, Client>, key: ClientKey) -> Option<Instant> {
    map.get(key)?.req.as_ref()?.ex.waiting_since()
}

impl Clients {
    /// Requests waiting for a worker now.
    pub(in crate::lb) fn waiting(&self) -> usize {
        let map = &self.map;
        self.waiting
            .count(|k| since(map, k).map(|_| Default::default()))
    }

    /// No worker is free: wait for one.
    pub(in crate::lb) fn wait(&mut self, key: ClientKey) {
        if let Some(r) = self.map.get_mut(key).and_then(|c| c.req.as_mut()) {
            r.ex.wait(Instant::now());
            self.waiting.push(&r.class, key);
        }
    }

    /// Since when the request of `key` waits for a worker, if it does.
    pub(in crate::lb) fn waiting_since(&self, key: ClientKey) -> Option<Instant> {
        since(&self.map, key)
    }

    /// The queues, for a pass that serves them; [`Clients::put_queues`]
    /// gives them back.
    pub(in crate::lb) fn take_queues(&mut self) -> Queues<ClientKey> {
        std::mem::take(&mut self.waiting)
    }

    pub(in crate::lb) fn put_queues(&mut self, mut queues: Queues<ClientKey>) {
        // Requests that began to wait meanwhile join after the others.
        queues.append(std::mem::take(&mut self.waiting));
        self.waiting = queues;
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
