//! Pools: which worker gets the next request (docs/ALGORITHMS.md §2–4).
//!
//! Pure and deterministic: no sockets, no clock. The LB talks to a
//! [`Balancer`], which wraps one [`Pool`] (classic résumé pool or classless)
//! and, in single-version mode, decides which workers are in it.

mod adaptive;
mod classic;
mod classless;
mod line;
mod settings;
#[cfg(test)]
mod tests;
mod versions;

pub use adaptive::AdaptivePool;
pub use classic::ResumePool;
pub use classless::ClasslessPool;
pub use settings::{SettingError, Settings};
pub use versions::Balancer;

use std::fmt;
use std::str::FromStr;

use crate::proto::Resume;

/// The LB's name for one worker connection. A worker that reconnects gets a
/// new id, and so joins as a new worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

/// Decayed backlog counters (docs/ALGORITHMS.md §2, "Decayed backlog").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub backlog: i64,
    pub dbacklog: f64,
    pub nbacklog: f64,
    pub mbacklog: f64,
}

impl Backlog {
    /// The step `bump(x, d)`.
    pub fn bump(&mut self, d: f64) {
        self.dbacklog = self.dbacklog * d + self.backlog as f64;
        self.nbacklog = self.nbacklog * d + 1.0;
        self.mbacklog = self.dbacklog / self.nbacklog;
    }
}

/// One worker's numbers, for the status document.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub backlog: i64,
    pub mean_backlog: f64,
    pub resume_size: usize,
}

/// The pool's numbers, for the status document. `workers` lists the workers
/// in the pool in LRU-line order.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    pub backlog: i64,
    pub mean_backlog: f64,
    pub workers: Vec<WorkerStatus>,
}

/// What every pool offers the LB.
pub trait Pool: Send + fmt::Debug {
    /// A worker's résumé arrived: join the pool (at the front of the line)
    /// if it is not in it, and replace its skills.
    fn new_resume(&mut self, w: WorkerId, resume: Resume);
    /// The worker is gone. Its counters live on only until the requests it
    /// has in flight are put back.
    fn remove(&mut self, w: WorkerId);
    /// Take the worker out of the pool but keep its counters; its next
    /// résumé brings it back (single-version switches).
    fn park(&mut self, w: WorkerId);
    /// Choose a worker for a request of `class`; `None` with no workers
    /// (or, for a pool that bounds them, none free).
    fn get(&mut self, class: &str) -> Option<WorkerId>;
    /// The same for a request that has waited `waited` for a worker.
    fn get_waited(&mut self, class: &str, _waited: std::time::Duration) -> Option<WorkerId> {
        self.get(class)
    }
    /// How long a waiting request of `class` waits before any free worker
    /// takes it (`None`: no such limit, or not known).
    fn spill_after(&self, _class: &str) -> Option<std::time::Duration> {
        None
    }
    /// What the worker said in its hello: its name (address) and capacity.
    fn describe(&mut self, _w: WorkerId, _name: &str, _capacity: usize) {}
    /// Whether some worker could take a request now (a pool that bounds
    /// them says false when all are full, and waiting requests need not
    /// be looked at).
    fn has_free(&self) -> bool {
        true
    }
    /// The worker's part of a request chosen by `get` is over.
    fn put(&mut self, w: WorkerId);
    fn update_settings(&mut self, settings: &Settings);
    fn settings(&self) -> Settings;
    /// Workers in the pool.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn status(&self) -> PoolStatus;
    /// Counters of a known worker, in the pool or not.
    fn worker_status(&self, w: WorkerId) -> Option<WorkerStatus>;
}

/// Which pool to build (`--pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Resume,
    Classless,
    Adaptive,
}

impl FromStr for PoolKind {
    type Err = String;
    fn from_str(s: &str) -> Result<PoolKind, String> {
        match s {
            "resume" => Ok(PoolKind::Resume),
            "classless" => Ok(PoolKind::Classless),
            "adaptive" => Ok(PoolKind::Adaptive),
            other => Err(format!(
                "unknown pool {other:?} (expected \"resume\", \"classless\" or \"adaptive\")"
            )),
        }
    }
}

impl PoolKind {
    /// Every pool's `-p` name (benchmarks run each as a variant).
    pub const NAMES: [&'static str; 3] = ["resume", "classless", "adaptive"];

    pub fn build(self, settings: Settings) -> Box<dyn Pool> {
        match self {
            PoolKind::Resume => Box::new(ResumePool::new(settings)),
            PoolKind::Classless => Box::new(ClasslessPool::new(settings)),
            PoolKind::Adaptive => Box::new(AdaptivePool::new(settings)),
        }
    }
}
