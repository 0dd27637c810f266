//! Workers held out of the pool for a while: ejected after gateway
//! failures in a row (the rules are in `outliers`), or unavailable because
//! they said so (handled with their other words in `frames`).

use std::time::Instant;

use super::super::ctx::Ctx;
use super::super::outliers::may_eject;
use super::{WorkerConn, WorkerKey, Workers};
use crate::proto::Rno;

impl Workers {
    /// The workers held out of the pool: unavailable, or ejected.
    pub(in crate::lb) fn held_out(&self) -> impl Iterator<Item = &WorkerConn> {
        self.map.values().filter(|w| w.is_held_out())
    }

    /// A request's outcome on a worker: a gateway failure (see
    /// `outliers`) or not. Enough failures in a row take it out of the pool
    /// for a while, within the half rule.
    pub(in crate::lb) fn outcome(&mut self, key: WorkerKey, failed: bool, ctx: &mut Ctx) {
        let eject_after = ctx.balancer.settings().eject_after;
        // Listed, joined, not draining: in the pool or held out of it.
        let counts = failed.then(|| {
            let serving = self
                .map
                .values()
                .filter(|w| w.joined && !w.draining && !w.unlisted);
            serving.fold((0, 0, 0), |(n, out, up), w| {
                let ejected = w.ejected_until().is_some() as usize;
                (n + 1, out + ejected, up + w.is_up() as usize)
            })
        });
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        let up = w.is_up();
        let may = || up && counts.is_some_and(|(n, out, inp)| may_eject(out, n, inp));
        let Some(until) = w.outlier.outcome(failed, Instant::now(), eject_after, may) else {
            return;
        };
        let secs = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        log::warn!(
            "worker {} ejected from the pool for {secs:.0} s after {eject_after} gateway \
             failures in a row",
            w.addr
        );
        ctx.counters.ejections += 1;
        w.ejections += 1;
        let text = format!("ejected for {secs:.0} s after {eject_after} gateway failures in a row");
        ctx.board.event("ejected", Some(&w.addr), text);
        ctx.balancer.hold(w.id);
        self.arm(key, ctx);
    }

    /// A response head that cannot be passed on: said with the worker's
    /// address, and the request cancelled there.
    pub(in crate::lb) fn bad_response(
        &mut self,
        key: WorkerKey,
        rno: Rno,
        why: &str,
        ctx: &mut Ctx,
    ) {
        let addr = self.map.get(key).map_or("?", |w| w.addr.as_str());
        log::warn!("bad response head from worker {addr}: {why}");
        self.cancel(key, rno, ctx);
        self.outcome(key, true, ctx);
    }
}
