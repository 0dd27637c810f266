//! The adaptive pool (`--pool adaptive`, docs/ALGORITHMS.md §6): the
//! résumé pool's skills, bounded by each worker's capacity.
//!
//! - A worker never has more of this LB's requests in flight than its
//!   capacity (its threads, from its hello; 1 until it says).
//! - A request goes to the free worker with the best score for its class.
//!   When every worker skilled at the class is busy, it waits (the LB keeps
//!   it in a queue per class) until one frees a slot, or until it has
//!   waited longer than the class's spill time (a few times its measured
//!   service time, from 50 ms to 2 s): then any free worker takes it, so a
//!   slow or hung worker's classes move and the others learn them.
//! - A class no worker is skilled at goes to the free worker that ranks
//!   first for it by rendezvous hashing (hash of class and worker name), so
//!   that several LBs place new classes alike without talking.

use crate::util::intmap::IntMap;
use std::time::Duration;

use super::{Pool, PoolStatus, Settings, WorkerId, WorkerStatus};
use crate::proto::Resume;

/// A class waits at most this long for a skilled worker …
const MAX_SPILL: Duration = Duration::from_secs(2);
/// … and at least this long.
const MIN_SPILL: Duration = Duration::from_millis(50);
/// The spill time in service times of the class's best worker.
const SPILL_SERVICE_TIMES: f64 = 4.0;

#[derive(Debug)]
struct Worker {
    /// Its name (address): rendezvous hashing ranks by it.
    name: String,
    capacity: usize,
    in_flight: usize,
    resume: Resume,
    /// Classes in `resume` given by this pool, not by the worker's résumé.
    placeholders: std::collections::HashSet<String>,
    in_pool: bool,
    /// Removed with requests in flight: forgotten when they are put back.
    removed: bool,
}

impl Worker {
    fn free(&self) -> bool {
        self.in_pool && self.in_flight < self.capacity
    }
}

/// The adaptive pool.
#[derive(Debug, Default)]
pub struct AdaptivePool {
    settings: Settings,
    workers: IntMap<WorkerId, Worker>,
    in_flight: i64,
}

/// FNV-1a over the class, a separator and the worker's name: the same on
/// every LB.
fn rendezvous(class: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in class.bytes().chain([0xff]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix, so that names differing in their last byte spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl AdaptivePool {
    pub fn new(settings: Settings) -> AdaptivePool {
        AdaptivePool {
            settings,
            ..AdaptivePool::default()
        }
    }

    fn worker(&mut self, w: WorkerId) -> &mut Worker {
        self.workers.entry(w).or_insert_with(|| Worker {
            name: format!("{}", w.0),
            capacity: 1,
            in_flight: 0,
            resume: Resume::new(),
            placeholders: Default::default(),
            in_pool: false,
            removed: false,
        })
    }

    /// The free worker with the best score for `class`; `None` when none
    /// is free. `skilled`: whether any worker in the pool is skilled at it.
    fn best_free(&self, class: &str) -> (Option<WorkerId>, bool) {
        let mut skilled = false;
        let mut best: Option<(f64, u64, WorkerId)> = None;
        for (&id, w) in &self.workers {
            let Some(&score) = w.resume.get(class).filter(|_| w.in_pool) else {
                continue;
            };
            if score <= 0.0 {
                continue;
            }
            skilled = true;
            if !w.free() {
                continue;
            }
            let rank = rendezvous(class, &w.name);
            let better = best.is_none_or(|(s, r, _)| score > s || (score == s && rank > r));
            if better {
                best = Some((score, rank, id));
            }
        }
        (best.map(|b| b.2), skilled)
    }

    /// The free worker that ranks first for `class` by rendezvous hashing.
    fn first_free_by_rank(&self, class: &str) -> Option<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, w)| w.free())
            .max_by_key(|(_, w)| rendezvous(class, &w.name))
            .map(|(&id, _)| id)
    }

    /// The best score for `class` in the pool (0 if none).
    fn best_score(&self, class: &str) -> f64 {
        self.workers
            .values()
            .filter(|w| w.in_pool)
            .filter_map(|w| w.resume.get(class).copied())
            .fold(0.0_f64, f64::max)
    }

    fn take(&mut self, w: WorkerId) -> WorkerId {
        self.worker(w).in_flight += 1;
        self.in_flight += 1;
        w
    }
}

impl Pool for AdaptivePool {
    fn new_resume(&mut self, w: WorkerId, resume: Resume) {
        let e = self.worker(w);
        e.resume = resume;
        e.placeholders.clear();
        e.in_pool = true;
        e.removed = false;
    }

    fn remove(&mut self, w: WorkerId) {
        let gone = match self.workers.get_mut(&w) {
            Some(e) if e.in_flight == 0 => true,
            Some(e) => {
                // Its requests in flight are put back later.
                e.in_pool = false;
                e.removed = true;
                false
            }
            None => false,
        };
        if gone {
            self.workers.remove(&w);
        }
    }

    fn park(&mut self, w: WorkerId) {
        if let Some(e) = self.workers.get_mut(&w) {
            e.in_pool = false;
        }
    }

    fn get(&mut self, class: &str) -> Option<WorkerId> {
        self.get_waited(class, Duration::ZERO)
    }

    fn get_waited(&mut self, class: &str, waited: Duration) -> Option<WorkerId> {
        let (best, skilled) = self.best_free(class);
        if let Some(w) = best {
            return Some(self.take(w));
        }
        if skilled && waited < self.spill_after(class).unwrap_or(Duration::ZERO) {
            return None;
        }
        let w = self.first_free_by_rank(class)?;
        // Until its résumé says otherwise, the worker that takes the class
        // counts as skilled at it: as much as the best one (a spilled
        // class), or `unskilled_score` (a new one), so that the next
        // requests of the class go to it when it is free.
        let score = if skilled {
            self.best_score(class)
        } else {
            self.settings.unskilled_score
        };
        let e = self.worker(w);
        if score > 0.0 && !e.resume.contains_key(class) {
            e.resume.insert(class.to_string(), score);
            e.placeholders.insert(class.to_string());
        }
        Some(self.take(w))
    }

    fn spill_after(&self, class: &str) -> Option<Duration> {
        let best = self.best_score(class);
        if best <= 0.0 {
            return None;
        }
        let measured = self
            .workers
            .values()
            .filter(|w| w.in_pool && !w.placeholders.contains(class))
            .filter_map(|w| w.resume.get(class).copied())
            .fold(0.0_f64, f64::max);
        if measured <= 0.0 {
            // Only placeholder scores: the service time is not known yet.
            return Some(MIN_SPILL);
        }
        let best = measured;
        let service = Duration::from_secs_f64((SPILL_SERVICE_TIMES / best).min(1e6));
        Some(service.clamp(MIN_SPILL, MAX_SPILL))
    }

    fn has_free(&self) -> bool {
        self.workers.values().any(Worker::free)
    }

    fn describe(&mut self, w: WorkerId, name: &str, capacity: usize) {
        let e = self.worker(w);
        e.name = name.to_string();
        e.capacity = capacity.max(1);
    }

    fn put(&mut self, w: WorkerId) {
        self.in_flight -= 1;
        let gone = match self.workers.get_mut(&w) {
            Some(e) => {
                e.in_flight = e.in_flight.saturating_sub(1);
                e.removed && e.in_flight == 0
            }
            None => false,
        };
        if gone {
            self.workers.remove(&w);
        }
    }

    fn update_settings(&mut self, settings: &Settings) {
        self.settings = *settings;
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn len(&self) -> usize {
        self.workers.values().filter(|w| w.in_pool).count()
    }

    fn status(&self) -> PoolStatus {
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .filter(|(_, w)| w.in_pool)
            .map(|(&id, w)| status_of(id, w))
            .collect();
        workers.sort_by_key(|s| s.id);
        let n = workers.len().max(1) as f64;
        PoolStatus {
            backlog: self.in_flight,
            mean_backlog: self.in_flight as f64 / n,
            workers,
        }
    }

    fn worker_status(&self, w: WorkerId) -> Option<WorkerStatus> {
        self.workers.get(&w).map(|e| status_of(w, e))
    }
}

fn status_of(id: WorkerId, w: &Worker) -> WorkerStatus {
    WorkerStatus {
        id,
        backlog: w.in_flight as i64,
        mean_backlog: w.in_flight as f64,
        resume_size: w.resume.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u64) -> WorkerId {
        WorkerId(n)
    }

    fn resume(pairs: &[(&str, f64)]) -> Resume {
        pairs.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    }

    /// A worker: id, capacity, skills.
    type Spec<'a> = (u64, usize, &'a [(&'a str, f64)]);

    fn pool(workers: &[Spec]) -> AdaptivePool {
        let mut p = AdaptivePool::new(Settings::default());
        for &(id, capacity, skills) in workers {
            p.new_resume(w(id), resume(skills));
            p.describe(w(id), &format!("10.0.0.{id}:8000"), capacity);
        }
        p
    }

    #[test]
    fn a_worker_never_holds_more_than_its_capacity() {
        let mut p = pool(&[(1, 2, &[("a", 100.0)]), (2, 1, &[("b", 100.0)])]);
        assert_eq!(p.get("a"), Some(w(1)));
        assert_eq!(p.get("a"), Some(w(1)));
        assert_eq!(p.get("a"), None, "its skilled worker is full: wait");
        assert_eq!(p.status().backlog, 2);
        p.put(w(1));
        assert_eq!(p.get("a"), Some(w(1)), "a freed slot takes the next one");
        assert_eq!(p.worker_status(w(1)).unwrap().backlog, 2);
    }

    #[test]
    fn the_best_free_skilled_worker_wins() {
        let mut p = pool(&[(1, 1, &[("a", 10.0)]), (2, 1, &[("a", 50.0)])]);
        assert_eq!(p.get("a"), Some(w(2)), "the faster one first");
        assert_eq!(p.get("a"), Some(w(1)), "then the other skilled one");
        assert_eq!(p.get("a"), None);
    }

    #[test]
    fn a_request_waits_for_its_spill_time_then_goes_to_any_free_worker() {
        // Class "a" takes 10 ms at its worker (score 100/s): spill after
        // 4 service times, 40 ms, raised to the 50 ms floor.
        let mut p = pool(&[(1, 1, &[("a", 100.0)]), (2, 4, &[("b", 100.0)])]);
        assert_eq!(p.spill_after("a"), Some(MIN_SPILL));
        assert_eq!(p.get("a"), Some(w(1)));
        assert_eq!(p.get_waited("a", Duration::from_millis(49)), None);
        assert_eq!(p.get_waited("a", Duration::from_millis(50)), Some(w(2)));
        // Worker 2 now counts as skilled at "a": the next request goes to
        // it at once while worker 1 is busy.
        assert_eq!(p.get("a"), Some(w(2)));
        // A slow class (0.1/s, 10 s each) waits at most 2 s.
        let p = pool(&[(1, 1, &[("slow", 0.1)])]);
        assert_eq!(p.spill_after("slow"), Some(MAX_SPILL));
        assert_eq!(p.spill_after("unknown"), None);
    }

    #[test]
    fn two_pools_place_new_classes_alike_whatever_the_ids_and_order() {
        let names = [
            "10.0.0.1:8000",
            "10.0.0.2:8000",
            "10.0.0.3:8000",
            "10.0.0.4:8000",
        ];
        let mut a = AdaptivePool::new(Settings::default());
        let mut b = AdaptivePool::new(Settings::default());
        for (i, name) in names.iter().enumerate() {
            a.new_resume(w(i as u64 + 1), Resume::new());
            a.describe(w(i as u64 + 1), name, 100);
        }
        for (i, name) in names.iter().enumerate().rev() {
            b.new_resume(w(100 + i as u64), Resume::new());
            b.describe(w(100 + i as u64), name, 100);
        }
        let mut spread = std::collections::HashMap::new();
        for c in 0..200 {
            let class = format!("site{c}");
            let pa = a.get(&class).unwrap();
            let pb = b.get(&class).unwrap();
            assert_eq!(pa.0 + 99, pb.0, "{class}: both LBs pick the same worker");
            *spread.entry(pa).or_insert(0) += 1;
        }
        assert_eq!(spread.len(), 4, "every worker gets new classes");
        assert!(spread.values().all(|&n| n > 25), "{spread:?}");
    }

    #[test]
    fn a_new_class_sticks_to_its_first_worker_then_spills_to_the_next_ranked() {
        let mut p = pool(&[(1, 1, &[]), (2, 1, &[])]);
        let first = p.get("x").unwrap();
        assert_eq!(p.get("x"), None, "its worker is busy: wait");
        assert_eq!(
            p.spill_after("x"),
            Some(MIN_SPILL),
            "service time not known yet"
        );
        let second = p.get_waited("x", MIN_SPILL).unwrap();
        assert_ne!(first, second);
        assert_eq!(p.get_waited("x", MIN_SPILL), None, "all full");
    }

    #[test]
    fn removed_and_parked_workers_get_nothing_and_puts_balance() {
        let mut p = pool(&[(1, 2, &[("a", 10.0)]), (2, 2, &[("a", 5.0)])]);
        assert_eq!(p.get("a"), Some(w(1)));
        p.remove(w(1));
        assert_eq!(p.len(), 1);
        assert_eq!(p.get("a"), Some(w(2)));
        p.put(w(1));
        p.put(w(2));
        assert_eq!(p.status().backlog, 0);
        p.park(w(2));
        assert_eq!(p.get("a"), None);
        p.new_resume(w(2), resume(&[("a", 5.0)]));
        assert_eq!(p.get("a"), Some(w(2)));
    }
}
