//! The classic résumé pool (docs/ALGORITHMS.md §2), reproduced exactly.
//!
//! `get` costs O(workers skilled for the class): the skilled workers of a
//! class are kept in a short list, and the LRU line's order is read from
//! per-worker stamps instead of walking the line.

use crate::util::intmap::IntMap;
use std::collections::HashMap;

use super::line::Line;
use super::{Ask, Backlog, Done, Pool, PoolStatus, Settings, WorkerId, WorkerStatus};
use crate::proto::Resume;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the line and skilled: gets work.
    InPool,
    /// Out of the pool but remembered with its counters (single-version).
    Parked,
    /// Removed; kept only until its requests in flight are put back.
    Gone,
}

#[derive(Debug)]
struct Entry {
    id: WorkerId,
    place: Place,
    backlog: Backlog,
    /// The LB's copy of the worker's résumé (plus unskilled scores given).
    skills: Resume,
}

/// The classic résumé pool.
#[derive(Debug)]
pub struct ClassicPool {
    settings: Settings,
    worker_decay: f64,
    decay: f64,
    pool: Backlog,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_id: IntMap<WorkerId, usize>,
    line: Line,
    /// Request class → (slot, score) of each worker skilled for it.
    skilled: HashMap<String, Vec<(usize, f64)>>,
}

impl ClassicPool {
    pub fn new(settings: Settings) -> ClassicPool {
        let mut p = ClassicPool {
            settings,
            worker_decay: 0.0,
            decay: 0.0,
            pool: Backlog::default(),
            slots: Vec::new(),
            free: Vec::new(),
            by_id: IntMap::default(),
            line: Line::new(),
            skilled: HashMap::new(),
        };
        p.update_settings(&settings);
        p
    }

    fn update_decay(&mut self) {
        let n = self.line.len();
        if n > 0 {
            self.decay = 1.0 - 1.0 / (2.0 * self.settings.backlog_history as f64 * n as f64);
        }
    }

    fn entry(&self, slot: usize) -> &Entry {
        self.slots[slot].as_ref().expect("slot in use")
    }

    fn entry_mut(&mut self, slot: usize) -> &mut Entry {
        self.slots[slot].as_mut().expect("slot in use")
    }

    fn drop_skills(&mut self, slot: usize) {
        let skills = std::mem::take(&mut self.entry_mut(slot).skills);
        for class in skills.keys() {
            if let Some(list) = self.skilled.get_mut(class) {
                list.retain(|&(s, _)| s != slot);
                if list.is_empty() {
                    self.skilled.remove(class);
                }
            }
        }
    }

    fn add_skills(&mut self, slot: usize, resume: Resume) {
        for (class, &score) in &resume {
            match self.skilled.get_mut(class.as_str()) {
                Some(list) => list.push((slot, score)),
                None => {
                    self.skilled.insert(class.clone(), vec![(slot, score)]);
                }
            }
        }
        self.entry_mut(slot).skills = resume;
    }

    /// Take a worker out of the line and its skills out of the classes.
    fn leave_line(&mut self, slot: usize) {
        if self.line.contains(slot) {
            self.drop_skills(slot);
            self.line.remove(slot);
            self.update_decay();
        }
    }

    fn free_slot(&mut self, slot: usize) {
        if let Some(e) = self.slots[slot].take() {
            self.by_id.remove(&e.id);
            self.free.push(slot);
        }
    }
}

impl ClassicPool {
    /// Choose a worker for a request of `class`.
    pub fn get(&mut self, class: &str) -> Option<WorkerId> {
        let n = self.line.len();
        let front = self.line.front()?;
        let max_backlog = (self.settings.variance * self.pool.mbacklog / n as f64).max(1.0);
        let min_backlog = self.entry(front).backlog.mbacklog + 1.0;

        let mut best: Option<usize> = None;
        let mut best_score = 0.0;
        let mut best_stamp = i64::MAX;
        if let Some(list) = self.skilled.get(class) {
            for &(slot, score) in list {
                let b = &self.entry(slot).backlog;
                if b.mbacklog - min_backlog > max_backlog {
                    continue;
                }
                let score = if b.backlog > 1 {
                    score / b.backlog as f64
                } else {
                    score
                };
                // Line order decides ties: the less recently used wins.
                let stamp = self.line.stamp(slot);
                if score > best_score || (score == best_score && score > 0.0 && stamp < best_stamp)
                {
                    best = Some(slot);
                    best_score = score;
                    best_stamp = stamp;
                }
            }
        }
        let best = match best {
            Some(slot) => slot,
            None => {
                if !self.entry(front).skills.contains_key(class) {
                    let u = self.settings.unskilled_score;
                    self.entry_mut(front).skills.insert(class.to_string(), u);
                    self.skilled
                        .entry(class.to_string())
                        .or_default()
                        .push((front, u));
                }
                front
            }
        };
        self.line.move_to_back(best);
        let worker_decay = self.worker_decay;
        let e = self.entry_mut(best);
        e.backlog.backlog += 1;
        e.backlog.bump(worker_decay);
        let id = e.id;
        self.pool.backlog += 1;
        self.pool.bump(self.decay);
        Some(id)
    }

    /// The worker's part of a request is over.
    pub fn put(&mut self, w: WorkerId) {
        let Some(&slot) = self.by_id.get(&w) else {
            log::warn!("pool: put for unknown worker {w:?} ignored");
            return;
        };
        if self.entry(slot).backlog.backlog <= 0 {
            log::warn!("pool: put for idle worker {w:?} ignored");
            return;
        }
        self.pool.backlog -= 1;
        self.pool.bump(self.decay);
        let worker_decay = self.worker_decay;
        let e = self.entry_mut(slot);
        e.backlog.backlog -= 1;
        e.backlog.bump(worker_decay);
        if e.place == Place::Gone && e.backlog.backlog == 0 {
            self.free_slot(slot);
        }
    }
}

impl Pool for ClassicPool {
    fn get(&mut self, ask: &Ask) -> Option<WorkerId> {
        ClassicPool::get(self, ask.class)
    }

    fn put(&mut self, w: WorkerId, _done: &Done) {
        ClassicPool::put(self, w)
    }

    fn new_resume(&mut self, w: WorkerId, resume: Resume) {
        let slot = match self.by_id.get(&w) {
            Some(&slot) => slot,
            None => {
                let entry = Entry {
                    id: w,
                    place: Place::Gone,
                    backlog: Backlog::default(),
                    skills: Resume::new(),
                };
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.slots[s] = Some(entry);
                        s
                    }
                    None => {
                        self.slots.push(Some(entry));
                        self.slots.len() - 1
                    }
                };
                self.by_id.insert(w, slot);
                slot
            }
        };
        if self.entry(slot).place == Place::InPool {
            self.drop_skills(slot);
        } else {
            self.entry_mut(slot).place = Place::InPool;
            self.line.push_front(slot);
            self.update_decay();
        }
        self.add_skills(slot, resume);
    }

    fn remove(&mut self, w: WorkerId) {
        let Some(&slot) = self.by_id.get(&w) else {
            return;
        };
        self.leave_line(slot);
        let e = self.entry_mut(slot);
        e.place = Place::Gone;
        if e.backlog.backlog == 0 {
            self.free_slot(slot);
        }
    }

    fn park(&mut self, w: WorkerId) {
        if let Some(&slot) = self.by_id.get(&w) {
            self.leave_line(slot);
            self.entry_mut(slot).place = Place::Parked;
        }
    }

    fn update_settings(&mut self, settings: &Settings) {
        self.settings = *settings;
        self.worker_decay = 1.0 - 1.0 / (2.0 * settings.backlog_history as f64);
        self.update_decay();
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn len(&self) -> usize {
        self.line.len()
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            backlog: self.pool.backlog,
            mean_backlog: self.pool.mbacklog,
            placements: Default::default(),
            workers: self
                .line
                .iter()
                .map(|slot| {
                    let e = self.entry(slot);
                    WorkerStatus {
                        id: e.id,
                        backlog: e.backlog.backlog,
                        mean_backlog: e.backlog.mbacklog,
                        resume_size: e.skills.len(),
                        capacity: None,
                    }
                })
                .collect(),
        }
    }

    fn worker_status(&self, w: WorkerId) -> Option<WorkerStatus> {
        let e = self.entry(*self.by_id.get(&w)?);
        Some(WorkerStatus {
            id: e.id,
            backlog: e.backlog.backlog,
            mean_backlog: e.backlog.mbacklog,
            resume_size: e.skills.len(),
            capacity: None,
        })
    }
}
