//! The LB's front to the pool, with single-version mode (docs/ALGORITHMS.md §4):
//! only workers of the current version are in the pool; the others are
//! remembered with their latest résumé until their version takes over.

use std::collections::HashMap;

use super::{Ask, Done, Pool, PoolKind, PoolStatus, Settings, WorkerId};
use crate::proto::Resume;

#[derive(Debug)]
struct Known {
    version: String,
    resume: Resume,
    /// Order of first joining: earlier workers go to the front on a switch.
    seq: u64,
}

#[derive(Debug, Default)]
struct Versions {
    current: Option<String>,
    workers: HashMap<WorkerId, Known>,
    seq: u64,
}

/// A pool, optionally restricted to one version of workers at a time.
#[derive(Debug)]
pub struct Balancer {
    pool: Box<dyn Pool>,
    versions: Option<Versions>,
}

impl Balancer {
    pub fn new(kind: PoolKind, settings: Settings, single_version: bool) -> Balancer {
        Balancer::with_pool(kind.build(settings), single_version)
    }

    pub fn with_pool(pool: Box<dyn Pool>, single_version: bool) -> Balancer {
        Balancer {
            pool,
            versions: single_version.then(Versions::default),
        }
    }

    /// The version whose workers are served (single-version mode).
    pub fn current_version(&self) -> Option<&str> {
        self.versions.as_ref()?.current.as_deref()
    }

    /// A worker's résumé arrived. `version` matters in single-version mode
    /// only; a worker without one counts as version "".
    pub fn new_resume(&mut self, w: WorkerId, version: Option<&str>, resume: Resume) {
        let Some(vs) = self.versions.as_mut() else {
            self.pool.new_resume(w, resume);
            return;
        };
        let version = version.unwrap_or("");
        if let Some(k) = vs.workers.get_mut(&w) {
            if k.version == version {
                k.resume = resume.clone();
                if vs.current.as_deref() == Some(version) {
                    self.pool.new_resume(w, resume);
                }
                return;
            }
            // Same connection, new version: leave as the old, join as the new.
            self.remove(w);
        }
        let vs = self.versions.as_mut().expect("single-version mode");
        vs.seq += 1;
        vs.workers.insert(
            w,
            Known {
                version: version.to_string(),
                resume: resume.clone(),
                seq: vs.seq,
            },
        );
        if vs.current.is_none() {
            log::info!("VERSION: {version}");
            vs.current = Some(version.to_string());
        }
        if vs.current.as_deref() == Some(version) {
            self.pool.new_resume(w, resume);
        } else {
            // A worker that flapped may still have requests in flight:
            // keep its counters for when its version is served.
            self.pool.park(w);
            self.maybe_switch();
        }
    }

    /// Hold the worker out of the pool for a while (it is unavailable,
    /// ejected or silent); [`Balancer::new_resume`] brings it back with
    /// what the pool knew of it.
    pub fn hold(&mut self, w: WorkerId) {
        self.pool.park(w);
    }

    /// The worker is gone.
    pub fn remove(&mut self, w: WorkerId) {
        self.pool.remove(w);
        let Some(vs) = self.versions.as_mut() else {
            return;
        };
        if let Some(k) = vs.workers.remove(&w) {
            if vs.current.as_deref() == Some(k.version.as_str()) {
                self.maybe_switch();
            }
        }
    }

    /// Switch to the version with the most workers if it has strictly more
    /// than the current one.
    fn maybe_switch(&mut self) {
        let Some(vs) = self.versions.as_mut() else {
            return;
        };
        // version → (workers, earliest seq)
        let mut counts: HashMap<&str, (usize, u64)> = HashMap::new();
        for k in vs.workers.values() {
            let c = counts.entry(k.version.as_str()).or_insert((0, u64::MAX));
            c.0 += 1;
            c.1 = c.1.min(k.seq);
        }
        let current = vs.current.as_deref().unwrap_or("");
        let current_count = counts.get(current).map_or(0, |c| c.0);
        let Some((best, (best_count, _))) = counts
            .iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
        else {
            return;
        };
        if *best_count <= current_count || *best == current {
            return;
        }
        let new = best.to_string();
        log::info!(
            "VERSION: {new} (switching from {current}: {best_count} workers against {current_count})"
        );
        let mut old: Vec<WorkerId> = Vec::new();
        let mut joining: Vec<(u64, WorkerId)> = Vec::new();
        for (&w, k) in &vs.workers {
            if k.version == current {
                old.push(w);
            } else if k.version == new {
                joining.push((k.seq, w));
            }
        }
        for w in old {
            self.pool.park(w);
        }
        // Each joins at the front: add the latest first so that the
        // earliest ends up at the front.
        joining.sort_unstable_by_key(|&(seq, _)| std::cmp::Reverse(seq));
        for (_, w) in joining {
            let resume = vs.workers[&w].resume.clone();
            self.pool.new_resume(w, resume);
        }
        vs.current = Some(new);
    }

    pub fn get(&mut self, ask: &Ask) -> Option<WorkerId> {
        self.pool.get(ask)
    }

    pub fn spill_after(&self, class: &str) -> Option<std::time::Duration> {
        self.pool.spill_after(class)
    }

    /// Whether some worker could take a request now.
    pub fn has_free(&self) -> bool {
        self.pool.has_free()
    }

    /// A worker's name and capacity, from its hello.
    pub fn describe(&mut self, w: WorkerId, name: &str, capacity: usize) {
        self.pool.describe(w, name, capacity);
    }

    pub fn put(&mut self, w: WorkerId, done: &Done) {
        self.pool.put(w, done)
    }

    pub fn update_settings(&mut self, settings: &Settings) {
        self.pool.update_settings(settings)
    }

    pub fn settings(&self) -> Settings {
        self.pool.settings()
    }

    pub fn len(&self) -> usize {
        self.pool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    pub fn pool(&self) -> &dyn Pool {
        self.pool.as_ref()
    }
}
