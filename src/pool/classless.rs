//! The classless pool (docs/ALGORITHMS.md §3): ignores classes and résumés, sends
//! each request to the first idle worker in LRU order, else the least busy.

use crate::util::intmap::IntMap;

use super::line::Line;
use super::{Ask, Done, Pool, PoolStatus, Settings, WorkerId, WorkerStatus};
use crate::proto::Resume;

#[derive(Debug)]
struct Entry {
    id: WorkerId,
    backlog: i64,
    in_pool: bool,
    parked: bool,
    resume_size: usize,
}

/// The classless pool.
#[derive(Debug, Default)]
pub struct ClasslessPool {
    settings: Settings,
    backlog: i64,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_id: IntMap<WorkerId, usize>,
    line: Line,
}

impl ClasslessPool {
    pub fn new(settings: Settings) -> ClasslessPool {
        ClasslessPool {
            settings,
            line: Line::new(),
            ..ClasslessPool::default()
        }
    }

    fn entry(&self, slot: usize) -> &Entry {
        self.slots[slot].as_ref().expect("slot in use")
    }

    fn entry_mut(&mut self, slot: usize) -> &mut Entry {
        self.slots[slot].as_mut().expect("slot in use")
    }

    fn status_of(e: &Entry) -> WorkerStatus {
        WorkerStatus {
            id: e.id,
            backlog: e.backlog,
            mean_backlog: e.backlog as f64,
            resume_size: e.resume_size,
            capacity: None,
        }
    }

    fn free_slot(&mut self, slot: usize) {
        if let Some(e) = self.slots[slot].take() {
            self.by_id.remove(&e.id);
            self.free.push(slot);
        }
    }
}

impl ClasslessPool {
    /// Choose a worker for a request of `class`.
    pub fn get(&mut self, _class: &str) -> Option<WorkerId> {
        let mut best: Option<(usize, i64)> = None;
        for slot in self.line.iter() {
            let b = self.entry(slot).backlog;
            if best.is_none_or(|(_, bb)| b < bb) {
                best = Some((slot, b));
                if b == 0 {
                    break;
                }
            }
        }
        let (slot, _) = best?;
        self.line.move_to_back(slot);
        self.backlog += 1;
        let e = self.entry_mut(slot);
        e.backlog += 1;
        Some(e.id)
    }

    /// The worker's part of a request is over.
    pub fn put(&mut self, w: WorkerId) {
        let Some(&slot) = self.by_id.get(&w) else {
            log::warn!("pool: put for unknown worker {w:?} ignored");
            return;
        };
        let e = self.entry_mut(slot);
        if e.backlog <= 0 {
            log::warn!("pool: put for idle worker {w:?} ignored");
            return;
        }
        e.backlog -= 1;
        let done = !e.in_pool && !e.parked && e.backlog == 0;
        self.backlog -= 1;
        if done {
            self.free_slot(slot);
        }
    }
}

impl Pool for ClasslessPool {
    fn get(&mut self, ask: &Ask) -> Option<WorkerId> {
        ClasslessPool::get(self, ask.class)
    }

    fn put(&mut self, w: WorkerId, _done: &Done) {
        ClasslessPool::put(self, w)
    }

    fn new_resume(&mut self, w: WorkerId, resume: Resume) {
        let slot = match self.by_id.get(&w) {
            Some(&s) => s,
            None => {
                let e = Entry {
                    id: w,
                    backlog: 0,
                    in_pool: false,
                    parked: false,
                    resume_size: 0,
                };
                let s = match self.free.pop() {
                    Some(s) => {
                        self.slots[s] = Some(e);
                        s
                    }
                    None => {
                        self.slots.push(Some(e));
                        self.slots.len() - 1
                    }
                };
                self.by_id.insert(w, s);
                s
            }
        };
        let e = self.entry_mut(slot);
        e.resume_size = resume.len();
        e.parked = false;
        if !e.in_pool {
            e.in_pool = true;
            self.line.push_front(slot);
        }
    }

    fn remove(&mut self, w: WorkerId) {
        let Some(&slot) = self.by_id.get(&w) else {
            return;
        };
        self.line.remove(slot);
        let e = self.entry_mut(slot);
        e.in_pool = false;
        e.parked = false;
        if e.backlog == 0 {
            self.free_slot(slot);
        }
    }

    fn park(&mut self, w: WorkerId) {
        if let Some(&slot) = self.by_id.get(&w) {
            self.line.remove(slot);
            let e = self.entry_mut(slot);
            e.in_pool = false;
            e.parked = true;
        }
    }

    fn update_settings(&mut self, settings: &Settings) {
        self.settings = *settings;
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn len(&self) -> usize {
        self.line.len()
    }

    fn status(&self) -> PoolStatus {
        let n = self.line.len();
        PoolStatus {
            backlog: self.backlog,
            mean_backlog: if n > 0 {
                self.backlog as f64 / n as f64
            } else {
                0.0
            },
            placements: Default::default(),
            workers: self
                .line
                .iter()
                .map(|s| Self::status_of(self.entry(s)))
                .collect(),
        }
    }

    fn worker_status(&self, w: WorkerId) -> Option<WorkerStatus> {
        Some(Self::status_of(self.entry(*self.by_id.get(&w)?)))
    }
}
