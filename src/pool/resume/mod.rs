//! The résumé pool (`--pool resume`, the default; docs/ALGORITHMS.md §6):
//! the classic pool's affinity (a class goes to the workers good at it),
//! bounded by each worker's capacity and driven by expected latency, so
//! that a slow or hung worker cannot hold on to its classes.
//!
//! Pure and deterministic: time comes in with each call.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{
    Ask, Backlog, Done, Placements, Pool, PoolStatus, Settings, Time, WorkerId, WorkerStatus,
};
use crate::proto::Resume;
use crate::util::intmap::IntMap;

/// Extra requests in flight a worker may hold beyond its threads: enough to
/// cover this long a round trip to the LB at its measured latency (a loaded
/// machine takes milliseconds to schedule the LB: with 1 ms, W3a of `make
/// bench-compare` lost a quarter of its throughput to idle threads; with
/// 5 ms, W1a and W1c did 0.92x the classic pool, the requests waiting at
/// the LB costing it a serving pass each; 20 ms: 1.13x and 1.74x).
const ROUND_TRIP: Duration = Duration::from_millis(20);
/// A worker with requests in flight that has finished none for this many
/// times its usual latency (and at least `MIN_STALL`) takes no new ones.
const STALL_LATENCIES: f64 = 10.0;
const MIN_STALL: Duration = Duration::from_millis(100);
/// A waiting request waits at least this long before it spills, and at
/// most `MAX_SPILL`.
const MIN_SPILL: Duration = Duration::from_millis(20);
const MAX_SPILL: Duration = Duration::from_secs(2);
/// A worker that takes a spilled class its résumé does not name counts as
/// this share of the class's best score until its résumé names it.
const LENT_SHARE: f64 = 0.5;
/// A worker whose latency at a class, as this LB measured it, is more
/// than `slow_factor` times another worker's at the same class gets no
/// more of its requests while others can take them …
/// … once both have this many samples; while it has fewer than
/// `WARM_SAMPLES` (a worker new to a class is slow while its cache warms),
/// only past this many times the cost of a cold request …
const VETO_SAMPLES: u32 = 3;
const WARM_SAMPLES: u32 = 20;
/// … until its measure is this old (then one request tries it again).
const VETO_AGE: Duration = Duration::from_secs(5);
/// A worker with little to do (requests in flight per thread, averaged
/// over `UTILIZATION_TIME`, under `IDLE` times the pool's mean) takes over a class it ranks
/// first or second for when that class's requests wait for its skilled
/// workers: one class every `TAKE_OVER_EVERY`, so that a new or recovered
/// worker gets work within seconds.
const IDLE: f64 = 0.5;
const UTILIZATION_TIME: Duration = Duration::from_secs(1);
const TAKE_OVER_EVERY: Duration = Duration::from_millis(500);
/// A new class skips a worker whose utilization is over this many times
/// the pool's mean (and over 0.5).
const BOUNDED_LOAD: f64 = 1.25;
/// Weight of one sample in the latency averages.
const ALPHA: f64 = 0.1;
/// The cost of a cold request before one is measured.
const DEFAULT_COLD: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    InPool,
    Parked,
    /// Removed; kept until its requests in flight are put back.
    Gone,
}

/// An exponentially weighted average that knows whether it has samples.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: f64,
    samples: u32,
}

impl Ewma {
    fn add(&mut self, x: f64) {
        self.value = if self.samples == 0 {
            x
        } else {
            self.value + ALPHA * (x - self.value)
        };
        self.samples = self.samples.saturating_add(1);
    }

    fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value)
    }
}

/// What the pool knows of one worker at one class.
#[derive(Debug, Clone, Copy)]
struct Skill {
    slot: usize,
    /// From the worker's résumé (requests per second of service), or lent
    /// by this pool.
    score: f64,
    /// Lent: the worker took the class without a résumé entry for it.
    lent: bool,
    /// Seconds from sending to the end, as this LB measured them, and
    /// when last fed.
    latency: Ewma,
    latency_at: Time,
}

impl Skill {
    /// Its measured latency, if it has `samples` and is fresh.
    fn measured(&self, samples: u32, now: Time) -> Option<f64> {
        (self.latency.samples >= samples && now.saturating_sub(self.latency_at) < VETO_AGE)
            .then_some(self.latency.value)
    }
}

#[derive(Debug)]
struct Worker {
    id: WorkerId,
    /// Its address: rendezvous hashing ranks by it, so LBs agree.
    name: String,
    threads: usize,
    in_flight: usize,
    place: Place,
    /// Classes it has a `Skill` for.
    classes: HashSet<String>,
    /// Classes in its latest résumé.
    resume_size: usize,
    backlog: Backlog,
    /// Seconds from sending a request to the end of its response.
    latency: Ewma,
    /// When it last finished a request, or got one while idle.
    progress_at: Time,
    /// Requests in flight per thread, averaged over time, as of `util_at`.
    util: f64,
    util_at: Time,
    /// When it last took over a class.
    took_over_at: Option<Time>,
    /// When it was last passed over for being slower than another worker
    /// at a class: it takes over no class, nor spilled requests, for a while.
    vetoed_at: Option<Time>,
    /// Most requests in flight per thread (`max_depth`).
    depth: usize,
}

impl Worker {
    fn in_pool(&self) -> bool {
        self.place == Place::InPool
    }

    /// Requests in flight it may hold.
    fn bound(&self) -> usize {
        let t = self.threads;
        let extra = match self.latency.get() {
            Some(l) => ((t as f64) * ROUND_TRIP.as_secs_f64() / l.max(1e-6)).ceil() as usize,
            _ => t,
        };
        t + extra.clamp(1, t * (self.depth.max(2) - 1))
    }

    /// A thread is idle.
    fn cold(&self) -> bool {
        self.in_flight < self.threads
    }

    fn stall_time(&self) -> Duration {
        let usual = self.latency.get().unwrap_or(0.0) * STALL_LATENCIES;
        Duration::from_secs_f64(usual.min(3600.0)).max(MIN_STALL)
    }

    fn stalled(&self, now: Time) -> bool {
        self.in_flight > 0 && now.saturating_sub(self.progress_at) > self.stall_time()
    }

    /// Can take a request now.
    fn free(&self, now: Time) -> bool {
        self.in_pool() && self.in_flight < self.bound() && !self.stalled(now)
    }

    /// Its utilization, brought up to `now`.
    fn utilization(&self, now: Time) -> f64 {
        let dt = now.saturating_sub(self.util_at).as_secs_f64();
        let keep = (-dt / UTILIZATION_TIME.as_secs_f64()).exp();
        let current = self.in_flight as f64 / self.threads as f64;
        self.util * keep + current * (1.0 - keep)
    }

    /// Bring the utilization up to `now` before `in_flight` changes.
    fn touch(&mut self, now: Time) {
        self.util = self.utilization(now);
        self.util_at = now;
    }

    /// Has little to do, against the pool's mean `utilization`, and has
    /// not taken over a class just now.
    fn may_take_over(&self, utilization: f64, now: Time) -> bool {
        self.cold()
            && self.free(now)
            && !self.slow(now)
            && self.utilization(now) < IDLE * utilization
            && self
                .took_over_at
                .is_none_or(|t| now.saturating_sub(t) >= TAKE_OVER_EVERY)
    }

    /// Was slower than another worker at a class not long ago.
    fn slow(&self, now: Time) -> bool {
        self.vetoed_at
            .is_some_and(|t| now.saturating_sub(t) < 2 * VETO_AGE)
    }

    /// How much longer a request waits there for the ones it has.
    fn load(&self) -> f64 {
        ((self.in_flight + 1) as f64 / self.threads as f64).max(1.0)
    }
}

/// Rendezvous weight of a worker for a class: the largest wins. Weighted
/// by threads, so that a worker with twice the threads is first for twice
/// the classes; the same on every LB (FNV-1a of class and name).
fn rendezvous(class: &str, name: &str, weight: f64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in class.bytes().chain([0xff]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    // A uniform number in (0, 1), then −weight / ln(u).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / u.ln()
}

#[derive(Debug, Default)]
struct Class {
    /// The workers in the pool that know the class.
    skills: Vec<Skill>,
    /// The two workers ranking first for it, for `homes_gen`.
    homes: [Option<usize>; 2],
    homes_gen: u64,
}

/// The résumé pool.
#[derive(Debug)]
pub struct ResumePool {
    settings: Settings,
    slots: Vec<Option<Worker>>,
    free_slots: Vec<usize>,
    by_id: IntMap<WorkerId, usize>,
    classes: HashMap<String, Class>,
    /// Bumped when workers join or leave or change weight: homes change.
    gen: u64,
    pool: Backlog,
    worker_decay: f64,
    /// Latency of a class's first request at a worker not skilled at it.
    cold: Ewma,
    placements: Placements,
    /// The latest time seen.
    now: Time,
    /// Workers in the pool.
    members: usize,
    /// The mean utilization of the workers in the pool, and when computed.
    utilization: f64,
    utilization_at: Option<Time>,
}

impl ResumePool {
    pub fn new(settings: Settings) -> ResumePool {
        let mut p = ResumePool {
            settings,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: IntMap::default(),
            classes: HashMap::new(),
            gen: 0,
            pool: Backlog::default(),
            worker_decay: 0.0,
            cold: Ewma::default(),
            placements: Placements::default(),
            now: Duration::ZERO,
            members: 0,
            utilization: 0.0,
            utilization_at: None,
        };
        p.update_settings(&settings);
        p
    }

    fn w(&self, slot: usize) -> &Worker {
        self.slots[slot].as_ref().expect("slot in use")
    }

    fn w_mut(&mut self, slot: usize) -> &mut Worker {
        self.slots[slot].as_mut().expect("slot in use")
    }

    fn cold_latency(&self) -> f64 {
        self.cold.get().unwrap_or(DEFAULT_COLD.as_secs_f64())
    }

    fn slot_of(&mut self, id: WorkerId) -> usize {
        if let Some(&s) = self.by_id.get(&id) {
            return s;
        }
        let w = Worker {
            id,
            name: id.0.to_string(),
            threads: 1,
            in_flight: 0,
            place: Place::Gone,
            classes: HashSet::new(),
            resume_size: 0,
            backlog: Backlog::default(),
            latency: Ewma::default(),
            progress_at: self.now,
            util: 0.0,
            util_at: self.now,
            took_over_at: None,
            vetoed_at: None,
            depth: self.settings.max_depth as usize,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(w);
                s
            }
            None => {
                self.slots.push(Some(w));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    /// Drop every skill of the worker.
    fn forget_skills(&mut self, slot: usize) {
        let classes = std::mem::take(&mut self.w_mut(slot).classes);
        for class in classes {
            self.drop_skill(&class, slot);
        }
    }

    fn drop_skill(&mut self, class: &str, slot: usize) {
        if let Some(c) = self.classes.get_mut(class) {
            c.skills.retain(|s| s.slot != slot);
            if c.skills.is_empty() {
                self.classes.remove(class);
            }
        }
    }

    fn add_skill(&mut self, class: &str, slot: usize, score: f64, lent: bool) {
        let skill = Skill {
            slot,
            score,
            lent,
            latency: Ewma::default(),
            latency_at: self.now,
        };
        match self.classes.get_mut(class) {
            Some(c) => c.skills.push(skill),
            None => {
                let c = Class {
                    skills: vec![skill],
                    ..Class::default()
                };
                self.classes.insert(class.to_string(), c);
            }
        }
        self.w_mut(slot).classes.insert(class.to_string());
    }

    /// Out of the pool: gone (its skills go too) or parked (they stay, for
    /// when it is back).
    fn leave(&mut self, slot: usize, place: Place) {
        if self.w(slot).in_pool() {
            self.gen += 1;
            self.members -= 1;
        }
        if place == Place::Gone {
            self.forget_skills(slot);
        }
        self.w_mut(slot).place = place;
    }

    fn forget_if_done(&mut self, slot: usize) {
        let w = self.w(slot);
        if w.place == Place::Gone && w.in_flight == 0 {
            let id = w.id;
            self.slots[slot] = None;
            self.by_id.remove(&id);
            self.free_slots.push(slot);
        }
    }

    /// The two in-pool workers ranking first for `class` (`class` is
    /// known).
    fn homes(&mut self, class: &str) -> [Option<usize>; 2] {
        if let Some(c) = self.classes.get(class) {
            if c.homes_gen == self.gen {
                return c.homes;
            }
        }
        let mut top: [Option<(f64, usize)>; 2] = [None, None];
        for (slot, w) in self.slots.iter().enumerate() {
            let Some(w) = w.as_ref().filter(|w| w.in_pool()) else {
                continue;
            };
            let r = rendezvous(class, &w.name, w.threads as f64);
            if top[0].is_none_or(|(t, _)| r > t) {
                top[1] = top[0];
                top[0] = Some((r, slot));
            } else if top[1].is_none_or(|(t, _)| r > t) {
                top[1] = Some((r, slot));
            }
        }
        let homes = [top[0].map(|t| t.1), top[1].map(|t| t.1)];
        if let Some(c) = self.classes.get_mut(class) {
            c.homes = homes;
            c.homes_gen = self.gen;
        }
        homes
    }

    /// The worker in the pool ranking first for `class`, those found slow
    /// lately, stalled or loaded over `BOUNDED_LOAD` times the pool's mean
    /// utilization after the others (bounded-load hashing: time-averaged
    /// loads look alike from every LB, so LBs still agree).
    fn first_ranked(&self, class: &str, now: Time) -> Option<usize> {
        let mut best: Option<(bool, f64, usize)> = None;
        let limit = (self.utilization * BOUNDED_LOAD).max(0.5);
        for (slot, w) in self.slots.iter().enumerate() {
            let Some(w) = w.as_ref().filter(|w| w.in_pool()) else {
                continue;
            };
            let fine = !w.slow(now) && !w.stalled(now) && w.utilization(now) <= limit;
            let key = (fine, rendezvous(class, &w.name, w.threads as f64));
            if best.is_none_or(|(f, r, _)| key > (f, r)) {
                best = Some((key.0, key.1, slot));
            }
        }
        best.map(|b| b.2)
    }

    /// The free worker ranking first for `class`, workers found slow
    /// lately after the others: the same on every LB while the same
    /// workers are free.
    fn first_free(&self, class: &str, now: Time) -> Option<usize> {
        let mut best: Option<(bool, f64, usize)> = None;
        for (slot, w) in self.slots.iter().enumerate() {
            let Some(w) = w.as_ref().filter(|w| w.free(now)) else {
                continue;
            };
            let key = (!w.slow(now), rendezvous(class, &w.name, w.threads as f64));
            if best.is_none_or(|(f, r, _)| key > (f, r)) {
                best = Some((key.0, key.1, slot));
            }
        }
        best.map(|b| b.2)
    }

    /// The worker takes `class` without a résumé entry for it, counting as
    /// `score` at it until its résumé names it.
    fn lend(&mut self, slot: usize, class: &str, score: f64) {
        if !self.w(slot).classes.contains(class) {
            self.add_skill(class, slot, score.max(f64::MIN_POSITIVE), true);
        }
    }

    /// A request goes to measure the worker at the class again: its old
    /// measure counts as fresh until the request's own arrives.
    fn measuring(&mut self, class: &str, slot: usize, now: Time) {
        let skill = self
            .classes
            .get_mut(class)
            .and_then(|c| c.skills.iter_mut().find(|s| s.slot == slot));
        if let Some(s) = skill {
            s.latency_at = now;
        }
    }

    fn take(&mut self, slot: usize, now: Time) -> WorkerId {
        let worker_decay = self.worker_decay;
        let w = self.w_mut(slot);
        if w.in_flight == 0 {
            w.progress_at = now;
        }
        w.touch(now);
        w.in_flight += 1;
        w.backlog.backlog += 1;
        w.backlog.bump(worker_decay);
        let id = w.id;
        let decay = self.pool_decay();
        self.pool.backlog += 1;
        self.pool.bump(decay);
        id
    }

    /// Recompute the mean utilization, at most every 100 ms.
    fn update_utilization(&mut self, now: Time) {
        if self
            .utilization_at
            .is_some_and(|t| now.saturating_sub(t) < Duration::from_millis(100))
        {
            return;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for w in self.slots.iter().flatten().filter(|w| w.in_pool()) {
            sum += w.utilization(now);
            n += 1;
        }
        self.utilization = sum / n.max(1) as f64;
        self.utilization_at = Some(now);
    }

    fn pool_decay(&self) -> f64 {
        let n = self.members.max(1) as f64;
        1.0 - 1.0 / (2.0 * self.settings.backlog_history as f64 * n)
    }
}

impl Pool for ResumePool {
    fn new_resume(&mut self, w: WorkerId, resume: Resume) {
        let slot = self.slot_of(w);
        if !self.w(slot).in_pool() {
            self.gen += 1;
            self.members += 1;
            self.w_mut(slot).place = Place::InPool;
        }
        // The résumé's scores replace the known ones; lent classes it does
        // not name yet stay lent.
        let known: Vec<String> = self.w(slot).classes.iter().cloned().collect();
        for class in known {
            let score = resume.get(&class).copied().filter(|&s| s > 0.0);
            let mut gone = false;
            if let Some(c) = self.classes.get_mut(&class) {
                if let Some(s) = c.skills.iter_mut().find(|s| s.slot == slot) {
                    match score {
                        Some(score) => {
                            s.score = score;
                            s.lent = false;
                        }
                        None => gone = !s.lent,
                    }
                }
            }
            if gone {
                self.drop_skill(&class, slot);
                self.w_mut(slot).classes.remove(&class);
            }
        }
        for (class, &score) in &resume {
            if score > 0.0 && !self.w(slot).classes.contains(class) {
                self.add_skill(class, slot, score, false);
            }
        }
        self.w_mut(slot).resume_size = resume.len();
    }

    fn remove(&mut self, w: WorkerId) {
        let Some(&slot) = self.by_id.get(&w) else {
            return;
        };
        self.leave(slot, Place::Gone);
        self.forget_if_done(slot);
    }

    fn park(&mut self, w: WorkerId) {
        if let Some(&slot) = self.by_id.get(&w) {
            self.leave(slot, Place::Parked);
        }
    }

    fn describe(&mut self, w: WorkerId, name: &str, capacity: usize) {
        let slot = self.slot_of(w);
        let worker = self.w_mut(slot);
        worker.name = name.to_string();
        worker.threads = capacity.max(1);
        self.gen += 1;
    }

    fn get(&mut self, ask: &Ask) -> Option<WorkerId> {
        let now = ask.now.max(self.now);
        self.now = now;
        // Workers out of the pool (parked) keep their skills, but a class
        // only they know is new to the pool.
        let slots = &self.slots;
        let in_pool = |s: &&Skill| slots[s.slot].as_ref().is_some_and(Worker::in_pool);
        let known = self
            .classes
            .get(ask.class)
            .filter(|c| c.skills.iter().any(|s| in_pool(&s)));
        let Some(c) = known else {
            // A new class goes to the worker ranking first for it, free or
            // not (if not, the request waits for it like any other), so
            // that every LB puts it on the same worker whatever the load it
            // sees.
            let slot = self.first_ranked(ask.class, now)?;
            self.lend(slot, ask.class, self.settings.unskilled_score);
            if !self.w(slot).free(now) {
                return None;
            }
            self.placements.new += 1;
            return Some(self.take(slot, now));
        };
        let fastest = c
            .skills
            .iter()
            .filter(in_pool)
            .filter_map(|s| s.measured(VETO_SAMPLES, now))
            .fold(f64::INFINITY, f64::min);
        let factor = self.settings.slow_factor;
        let veto = fastest * factor;
        let veto_warming = fastest.max(self.cold_latency()) * factor;
        // The free skilled worker with the best score for what it has in
        // flight; at equal scores one whose résumé names the class, then
        // the rank: (effectiveness, named, slot, probe).
        let mut best: Option<(f64, bool, usize, bool)> = None;
        let mut best_score = 0.0_f64;
        let mut vetoed: Vec<usize> = Vec::new();
        for s in c.skills.iter().filter(in_pool) {
            best_score = best_score.max(s.score);
            let w = self.w(s.slot);
            let limit = if s.latency.samples < WARM_SAMPLES {
                veto_warming
            } else {
                veto
            };
            if s.measured(VETO_SAMPLES, now).is_some_and(|m| m > limit) {
                vetoed.push(s.slot);
                continue;
            }
            if !w.free(now) {
                continue;
            }
            // A worker whose measure went stale while it was slower than
            // another gets one request to measure it again.
            let probe = s.latency.samples >= VETO_SAMPLES && s.latency.value > limit;
            let eff = s.score / w.load();
            // The rank (a hash) only decides exact ties.
            let better = match best {
                None => true,
                Some((e, n, _, _)) if (eff, !s.lent) != (e, n) => (eff, !s.lent) > (e, n),
                Some((_, _, slot, _)) => {
                    let other = self.w(slot);
                    rendezvous(ask.class, &w.name, w.threads as f64)
                        > rendezvous(ask.class, &other.name, other.threads as f64)
                }
            };
            if better {
                best = Some((eff, !s.lent, s.slot, probe));
            }
        }
        for slot in vetoed {
            self.w_mut(slot).vetoed_at = Some(now);
        }
        if let Some((_, _, slot, probe)) = best {
            if probe {
                self.measuring(ask.class, slot, now);
            }
            self.placements.skilled += 1;
            return Some(self.take(slot, now));
        }
        // Its skilled workers are all busy: an idle home of the class
        // takes it over.
        let lent = best_score * LENT_SHARE;
        for home in self.homes(ask.class).into_iter().flatten() {
            let w = self.w(home);
            if !w.classes.contains(ask.class) && w.may_take_over(self.utilization, now) {
                self.w_mut(home).took_over_at = Some(now);
                // As good as the best: it has the threads to spare.
                self.lend(home, ask.class, best_score);
                self.placements.moved += 1;
                return Some(self.take(home, now));
            }
        }
        if ask.waited < self.spill_after(ask.class).unwrap_or(Duration::ZERO) {
            return None;
        }
        let slot = self.first_free(ask.class, now)?;
        self.lend(slot, ask.class, lent);
        self.placements.spilled += 1;
        Some(self.take(slot, now))
    }

    fn spill_after(&self, class: &str) -> Option<Duration> {
        self.classes.get(class)?;
        let cold = self.cold_latency() * self.settings.spill_factor;
        Some(Duration::from_secs_f64(cold.min(3600.0)).clamp(MIN_SPILL, MAX_SPILL))
    }

    fn has_free(&self) -> bool {
        self.slots.iter().flatten().any(|w| w.free(self.now))
    }

    fn put(&mut self, w: WorkerId, done: &Done) {
        let Some(&slot) = self.by_id.get(&w) else {
            log::warn!("pool: put for unknown worker {w:?} ignored");
            return;
        };
        if self.w(slot).in_flight == 0 {
            log::warn!("pool: put for idle worker {w:?} ignored");
            return;
        }
        let now = done.now.max(self.now);
        self.now = now;
        let decay = self.pool_decay();
        self.pool.backlog -= 1;
        self.pool.bump(decay);
        let worker_decay = self.worker_decay;
        let worker = self.w_mut(slot);
        worker.progress_at = now;
        worker.touch(now);
        worker.in_flight -= 1;
        worker.backlog.backlog -= 1;
        worker.backlog.bump(worker_decay);
        let sample = done.latency.map(|l| l.as_secs_f64().max(1e-6));
        if let Some(secs) = sample {
            worker.latency.add(secs);
            let skill = self
                .classes
                .get_mut(done.class)
                .and_then(|c| c.skills.iter_mut().find(|s| s.slot == slot));
            let mut cold = false;
            if let Some(s) = skill {
                cold = s.lent && s.latency.get().is_none();
                s.latency.add(secs);
                s.latency_at = now;
            }
            if cold {
                self.cold.add(secs);
            }
        }
        self.update_utilization(now);
        self.forget_if_done(slot);
    }

    fn update_settings(&mut self, settings: &Settings) {
        self.settings = *settings;
        self.worker_decay = 1.0 - 1.0 / (2.0 * settings.backlog_history as f64);
        for w in self.slots.iter_mut().flatten() {
            w.depth = settings.max_depth as usize;
        }
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn len(&self) -> usize {
        self.members
    }

    fn status(&self) -> PoolStatus {
        let mut workers: Vec<WorkerStatus> = self
            .slots
            .iter()
            .flatten()
            .filter(|w| w.in_pool())
            .map(status_of)
            .collect();
        workers.sort_by_key(|s| s.id);
        PoolStatus {
            backlog: self.pool.backlog,
            mean_backlog: self.pool.mbacklog,
            workers,
            placements: self.placements,
        }
    }

    fn worker_status(&self, w: WorkerId) -> Option<WorkerStatus> {
        let slot = *self.by_id.get(&w)?;
        Some(status_of(self.w(slot)))
    }
}

fn status_of(w: &Worker) -> WorkerStatus {
    WorkerStatus {
        id: w.id,
        backlog: w.backlog.backlog,
        mean_backlog: w.backlog.mbacklog,
        resume_size: w.classes.len(),
        capacity: Some(w.bound()),
    }
}

#[cfg(test)]
mod tests;
