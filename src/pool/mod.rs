//! Pools: which worker gets the next request (docs/ALGORITHMS.md §2–4).
//!
//! Pure and deterministic: no sockets, no clock. The LB talks to a
//! [`Balancer`], which wraps one [`Pool`] (classic résumé pool or classless)
//! and, in single-version mode, decides which workers are in it.

mod classic;
mod classless;
mod line;
mod resume;
mod settings;
#[cfg(test)]
mod tests;
mod versions;
pub mod waiting;

pub use classic::ClassicPool;
pub use classless::ClasslessPool;
pub use resume::ResumePool;
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
    /// Requests in flight it may hold (pools that bound them).
    pub capacity: Option<usize>,
}

/// The pool's numbers, for the status document. `workers` lists the workers
/// in the pool in LRU-line order.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    pub backlog: i64,
    pub mean_backlog: f64,
    pub workers: Vec<WorkerStatus>,
    /// How the pool placed requests (pools that count them).
    pub placements: Placements,
}

/// Requests placed, by why their worker was chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placements {
    /// To a worker skilled at the class.
    pub skilled: u64,
    /// A class no worker was skilled at.
    pub new: u64,
    /// After waiting its spill time for a skilled worker.
    pub spilled: u64,
    /// To a home of the class: away from slow or stalled workers, or to
    /// an underloaded worker taking a class over.
    pub moved: u64,
}

/// Pool time: how long since an epoch the caller chooses (the LB's start,
/// the simulator's zero). Pools never read a clock.
pub type Time = std::time::Duration;

/// A request that wants a worker.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub class: &'a str,
    /// How long it has waited at the LB for a worker so far.
    pub waited: std::time::Duration,
    pub now: Time,
}

impl<'a> Ask<'a> {
    /// A request that has not waited.
    pub fn new(class: &'a str, now: Time) -> Ask<'a> {
        Ask {
            class,
            waited: std::time::Duration::ZERO,
            now,
        }
    }
}

/// How a worker's part of a request chosen by [`Pool::get`] ended.
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    pub class: &'a str,
    pub now: Time,
    /// From sending the request to the end of its response, for a
    /// response that counts as served; `None` for failures (5xx, aborted),
    /// cancelled requests and requests lost with their worker: failures
    /// are never skill.
    pub latency: Option<std::time::Duration>,
}

impl<'a> Done<'a> {
    /// A request that ended without a usable latency.
    pub fn without_sample(class: &'a str, now: Time) -> Done<'a> {
        Done {
            class,
            now,
            latency: None,
        }
    }
}

/// What every pool offers the LB.
pub trait Pool: Send + fmt::Debug {
    /// A worker's résumé arrived: join the pool (at the front of the line)
    /// if it is not in it, and replace its skills.
    fn new_resume(&mut self, w: WorkerId, resume: Resume);
    /// The worker is gone. Its counters live on only until the requests it
    /// has in flight are put back.
    fn remove(&mut self, w: WorkerId);
    /// Take the worker out of the pool but keep its counters (and, for a
    /// pool that learns, what it learnt of it); its next résumé brings it
    /// back (single-version switches, workers held out for a while).
    fn park(&mut self, w: WorkerId);
    /// Choose a worker for a request; `None` with no workers (or, for a
    /// pool that bounds them, when the request should wait for one).
    fn get(&mut self, ask: &Ask) -> Option<WorkerId>;
    /// How long a waiting request of `class` waits before a worker not
    /// skilled at it may take it (`None`: no such limit, or not known).
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
    fn put(&mut self, w: WorkerId, done: &Done);
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
    /// The résumé pool, bounded by capacity and aware of latency (the
    /// default).
    Resume,
    /// The original's résumé pool, reproduced exactly.
    Classic,
    Classless,
}

impl FromStr for PoolKind {
    type Err = String;
    fn from_str(s: &str) -> Result<PoolKind, String> {
        match s {
            // "adaptive" was an earlier capacity-aware pool that the
            // résumé pool replaced.
            "resume" | "adaptive" => Ok(PoolKind::Resume),
            "classic" => Ok(PoolKind::Classic),
            "classless" => Ok(PoolKind::Classless),
            other => Err(format!(
                "unknown pool {other:?} (expected \"resume\", \"classic\" or \"classless\")"
            )),
        }
    }
}

impl PoolKind {
    /// Every pool's `-p` name (benchmarks run each as a variant).
    pub const NAMES: [&'static str; 3] = ["resume", "classic", "classless"];

    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Resume => "resume",
            PoolKind::Classic => "classic",
            PoolKind::Classless => "classless",
        }
    }

    pub fn build(self, settings: Settings) -> Box<dyn Pool> {
        match self {
            PoolKind::Resume => Box::new(ResumePool::new(settings)),
            PoolKind::Classic => Box::new(ClassicPool::new(settings)),
            PoolKind::Classless => Box::new(ClasslessPool::new(settings)),
        }
    }
}
