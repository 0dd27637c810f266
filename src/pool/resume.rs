//! The résumé pool (`--pool resume`, the default; docs/ALGORITHMS.md §6):
//! the classic pool's affinity (a class goes to the workers whose résumés
//! say they are good at it), bounded by each worker's capacity and aware of
//! latency, so that a slow or hung worker cannot hold on to its classes.
//!
//! Pure and deterministic: time comes in with each call.

use std::collections::HashMap;
use std::time::Duration;

use super::{Ask, Backlog, Done, Pool, PoolStatus, Settings, Time, WorkerId, WorkerStatus};
use crate::proto::Resume;
use crate::util::intmap::IntMap;

/// Extra requests in flight a worker may hold beyond its threads: enough to
/// cover this long a round trip to the LB at its measured latency.
const ROUND_TRIP: Duration = Duration::from_millis(1);
/// A worker may hold at most this many times its threads in flight.
const MAX_DEPTH: usize = 8;
/// A worker with requests in flight that has finished none for this many
/// times its usual latency (and at least `MIN_STALL`) takes no new ones.
const STALL_LATENCIES: f64 = 10.0;
const MIN_STALL: Duration = Duration::from_millis(100);
/// A spilled request waits at least this long, and at most `MAX_SPILL`.
const MIN_SPILL: Duration = Duration::from_millis(20);
const MAX_SPILL: Duration = Duration::from_secs(2);
/// A worker that takes a class it is not skilled at counts as this share
/// of the class's best score until its résumé says otherwise.
const LENT_SHARE: f64 = 0.5;
/// A worker counts as slow when its latency, against what its résumé
/// predicts, is more than this many times the pool's typical ratio.
const SLOW_BAND: f64 = 2.0;
/// Slowness measured on a worker fades by half in this long without news.
const SLOW_HALF_LIFE: Duration = Duration::from_secs(2);
/// Weight of one sample in the latency averages.
const ALPHA: f64 = 0.1;

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

#[derive(Debug)]
struct Worker {
    id: WorkerId,
    /// Its address: rendezvous hashing ranks by it, so LBs agree.
    name: String,
    threads: usize,
    in_flight: usize,
    place: Place,
    /// The LB's copy of its résumé, plus classes lent to it.
    skills: Resume,
    /// Classes in `skills` that this pool lent it (not from its résumé).
    lent: std::collections::HashSet<String>,
    backlog: Backlog,
    /// Seconds from sending a request to the end of its response.
    latency: Ewma,
    /// Log of (latency / what the résumé predicts), and when last fed.
    slowness: Ewma,
    slowness_at: Time,
    /// When it last finished a request, or got one while idle.
    progress_at: Time,
    /// Requests sent before this (those of a stall) are not measured.
    stall_ended: Time,
}

impl Worker {
    fn in_pool(&self) -> bool {
        self.place == Place::InPool
    }

    /// Requests in flight it may hold.
    fn bound(&self) -> usize {
        let t = self.threads;
        let extra = match self.latency.get() {
            Some(l) if l > 0.0 => ((t as f64) * ROUND_TRIP.as_secs_f64() / l).ceil() as usize,
            _ => t,
        };
        t + extra.clamp(1, t * (MAX_DEPTH - 1))
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

    /// How much slower than the pool it is (in log terms), faded by age.
    fn deviation(&self, reference: f64, now: Time) -> f64 {
        let Some(s) = self.slowness.get() else {
            return 0.0;
        };
        let age = now.saturating_sub(self.slowness_at).as_secs_f64();
        (s - reference) * 0.5f64.powf(age / SLOW_HALF_LIFE.as_secs_f64())
    }

    /// Divisor of its scores: 1 unless clearly slower than the pool.
    fn penalty(&self, reference: f64, now: Time) -> f64 {
        (self.deviation(reference, now).exp() / SLOW_BAND).max(1.0)
    }

    /// Divisor of its scores for the requests it already has.
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
    /// Slots of the workers in the pool skilled at it, with their scores.
    skilled: Vec<(usize, f64)>,
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
    /// Latency of requests sent to workers not skilled at their class.
    cold: Ewma,
    /// The pool's typical slowness (mean over its workers).
    reference: f64,
    reference_at: Option<Time>,
    /// The latest time seen.
    now: Time,
    /// Workers in the pool.
    members: usize,
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
            reference: 0.0,
            reference_at: None,
            now: Duration::ZERO,
            members: 0,
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
            skills: Resume::new(),
            lent: Default::default(),
            backlog: Backlog::default(),
            latency: Ewma::default(),
            slowness: Ewma::default(),
            slowness_at: Duration::ZERO,
            progress_at: self.now,
            stall_ended: Duration::ZERO,
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

    /// Take the worker's skills out of the class index.
    fn unindex(&mut self, slot: usize) {
        let classes: Vec<String> = self.w(slot).skills.keys().cloned().collect();
        for class in classes {
            if let Some(c) = self.classes.get_mut(&class) {
                c.skilled.retain(|&(s, _)| s != slot);
                if c.skilled.is_empty() {
                    self.classes.remove(&class);
                }
            }
        }
    }

    fn index(&mut self, slot: usize) {
        let skills: Vec<(String, f64)> = self
            .w(slot)
            .skills
            .iter()
            .filter(|(_, &s)| s > 0.0)
            .map(|(c, &s)| (c.clone(), s))
            .collect();
        for (class, score) in skills {
            self.classes
                .entry(class)
                .or_default()
                .skilled
                .push((slot, score));
        }
    }

    fn leave(&mut self, slot: usize, place: Place) {
        if self.w(slot).in_pool() {
            self.unindex(slot);
            self.gen += 1;
            self.members -= 1;
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

    /// The two in-pool workers ranking first for `class`.
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

    /// The free worker ranking first for `class`, cold ones before busy.
    fn first_free(&self, class: &str, now: Time) -> Option<usize> {
        let mut best: Option<(bool, f64, usize)> = None;
        for (slot, w) in self.slots.iter().enumerate() {
            let Some(w) = w.as_ref().filter(|w| w.free(now)) else {
                continue;
            };
            let key = (w.cold(), rendezvous(class, &w.name, w.threads as f64));
            if best.is_none_or(|(c, r, _)| (key.0, key.1) > (c, r)) {
                best = Some((key.0, key.1, slot));
            }
        }
        best.map(|b| b.2)
    }

    /// Lend `class` to the worker at `score` until its résumé names it.
    fn lend(&mut self, slot: usize, class: &str, score: f64) {
        let w = self.w_mut(slot);
        if score <= 0.0 || w.skills.contains_key(class) {
            return;
        }
        w.skills.insert(class.to_string(), score);
        w.lent.insert(class.to_string());
        self.classes
            .entry(class.to_string())
            .or_default()
            .skilled
            .push((slot, score));
    }

    fn take(&mut self, slot: usize, now: Time) -> WorkerId {
        let worker_decay = self.worker_decay;
        let w = self.w_mut(slot);
        if w.in_flight == 0 {
            w.progress_at = now;
        }
        w.in_flight += 1;
        w.backlog.backlog += 1;
        w.backlog.bump(worker_decay);
        let id = w.id;
        let n = self.len().max(1);
        let decay = 1.0 - 1.0 / (2.0 * self.settings.backlog_history as f64 * n as f64);
        self.pool.backlog += 1;
        self.pool.bump(decay);
        id
    }

    fn best_score(&self, class: &str) -> f64 {
        self.classes.get(class).map_or(0.0, |c| {
            c.skilled.iter().map(|&(_, s)| s).fold(0.0_f64, f64::max)
        })
    }

    fn update_reference(&mut self, now: Time) {
        if self
            .reference_at
            .is_some_and(|t| now.saturating_sub(t) < Duration::from_millis(100))
        {
            return;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        for w in self.slots.iter().flatten().filter(|w| w.in_pool()) {
            if let Some(s) = w.slowness.get() {
                sum += s;
                n += 1;
            }
        }
        if n > 0 {
            self.reference = sum / n as f64;
        }
        self.reference_at = Some(now);
    }
}

impl Pool for ResumePool {
    fn new_resume(&mut self, w: WorkerId, resume: Resume) {
        let slot = self.slot_of(w);
        if self.w(slot).in_pool() {
            self.unindex(slot);
        } else {
            self.gen += 1;
            self.members += 1;
        }
        let worker = self.w_mut(slot);
        // Lent classes the résumé does not name yet stay lent.
        let lent: Vec<(String, f64)> = worker
            .lent
            .iter()
            .filter(|c| !resume.contains_key(*c))
            .filter_map(|c| worker.skills.get(c).map(|&s| (c.clone(), s)))
            .collect();
        worker.lent = lent.iter().map(|(c, _)| c.clone()).collect();
        worker.skills = resume;
        worker.skills.extend(lent);
        worker.place = Place::InPool;
        self.index(slot);
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
        let reference = self.reference;
        let mut best: Option<(f64, f64, usize)> = None;
        let mut skilled = false;
        let mut best_score = 0.0_f64;
        if let Some(c) = self.classes.get(ask.class) {
            for &(slot, score) in &c.skilled {
                let w = self.w(slot);
                skilled = true;
                best_score = best_score.max(score);
                if !w.free(now) {
                    continue;
                }
                let eff = score / w.penalty(reference, now) / w.load();
                let rank = rendezvous(ask.class, &w.name, w.threads as f64);
                if best.is_none_or(|(e, r, _)| eff > e || (eff == e && rank > r)) {
                    best = Some((eff, rank, slot));
                }
            }
        }
        if let Some((_, _, slot)) = best {
            if self.w(slot).cold() {
                return Some(self.take(slot, now));
            }
        }
        if !skilled {
            // A new class: the first-ranked worker that can take it.
            let slot = self.first_free(ask.class, now)?;
            let u = self.settings.unskilled_score;
            self.lend(slot, ask.class, u.max(f64::MIN_POSITIVE));
            return Some(self.take(slot, now));
        }
        // Its skilled workers are busy: a home of the class with an idle
        // thread takes it.
        for home in self.homes(ask.class).into_iter().flatten() {
            let w = self.w(home);
            if w.cold() && w.free(now) && !w.skills.contains_key(ask.class) {
                self.lend(home, ask.class, best_score * LENT_SHARE);
                return Some(self.take(home, now));
            }
        }
        if let Some((_, _, slot)) = best {
            return Some(self.take(slot, now));
        }
        if ask.waited < self.spill_after(ask.class).unwrap_or(Duration::ZERO) {
            return None;
        }
        let slot = self.first_free(ask.class, now)?;
        self.lend(slot, ask.class, best_score * LENT_SHARE);
        Some(self.take(slot, now))
    }

    fn spill_after(&self, class: &str) -> Option<Duration> {
        if self.best_score(class) <= 0.0 {
            return None;
        }
        let cold = self.cold.get().unwrap_or(0.0);
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
        let n = self.len().max(1);
        let decay = 1.0 - 1.0 / (2.0 * self.settings.backlog_history as f64 * n as f64);
        self.pool.backlog -= 1;
        self.pool.bump(decay);
        let worker_decay = self.worker_decay;
        let reference = self.reference;
        let worker = self.w_mut(slot);
        if worker.stalled(now) {
            worker.stall_ended = now;
        }
        worker.progress_at = now;
        worker.in_flight -= 1;
        worker.backlog.backlog -= 1;
        worker.backlog.bump(worker_decay);
        let mut cold_sample = None;
        if let Some(latency) = done.latency {
            let secs = latency.as_secs_f64().max(1e-6);
            if now.saturating_sub(latency) >= worker.stall_ended {
                worker.latency.add(secs);
                match worker.skills.get(done.class) {
                    Some(&score) if !worker.lent.contains(done.class) => {
                        // Fade what is known to now, then add the sample.
                        let faded = reference + worker.deviation(reference, now);
                        if worker.slowness.get().is_some() {
                            worker.slowness.value = faded;
                        }
                        worker.slowness.add((secs * score).ln().clamp(-20.0, 7.0));
                        worker.slowness_at = now;
                    }
                    _ => cold_sample = Some(secs),
                }
            }
        }
        if let Some(s) = cold_sample {
            self.cold.add(s);
        }
        self.update_reference(now);
        self.forget_if_done(slot);
    }

    fn update_settings(&mut self, settings: &Settings) {
        self.settings = *settings;
        self.worker_decay = 1.0 - 1.0 / (2.0 * settings.backlog_history as f64);
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
        resume_size: w.skills.len(),
    }
}
