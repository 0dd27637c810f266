//! The simulation: clients, LBs running the real pool code
//! (`resumelb::pool`: the pools, single-version front, waiting queues and
//! their serving pass) and workers running the real résumé tracker
//! (`resumelb::resume`), in simulated time, driven by one event queue.
//! Deterministic for a seed.
//!
//! The model:
//! - Clients: `connections` keep-alive connections, each sending its next
//!   request as soon as the last one is answered, spread over the LBs.
//! - Every hop (client ⇄ LB, LB ⇄ worker) takes `hop`.
//! - A worker runs `threads` requests at once; the others queue at it (its
//!   connection). A request takes `cpu` of processor time, queueing for
//!   one of the machine's `cores` (shared by all workers, as on one box),
//!   then, for the cache workload, `miss` for each object not in the
//!   worker's LRU cache, or, for the uniform workload, a fixed `service`.
//! - The worker's résumé tracker times each request (from its thread
//!   starting it to its end) and sends the résumé to every LB every
//!   `history` requests, as the real worker does; on joining, an LB gets
//!   the current résumé and the worker's thread count (its hello).
//! - Faults: a worker made slower by a factor; a worker stopped and
//!   continued (a stopped worker does nothing, and after the dead-worker
//!   timeout the LBs drop it, sending its requests elsewhere, and join it
//!   again once it runs); a worker added.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use resumelb::pool::waiting::{serve, Queues, Server};
use resumelb::pool::{Ask, Balancer, Done, Placements, PoolKind, Settings, Time, WorkerId};
use resumelb::proto::Resume;
use resumelb::resume::{ResumeSettings, Tracker};
use resumelb::testing::Rng;
use resumelb::worker::demo::Lru;

use crate::workload::{half_normal, Zipf};

/// The LB's dead-worker timeout.
const DEAD_WORKER: Duration = Duration::from_secs(10);
/// How often an LB tries to reconnect to a worker it lost.
const RECONNECT: Duration = Duration::from_secs(1);
/// An LB that hears nothing from a worker with requests in flight for this
/// long holds it out of the pool and sends its requests elsewhere (the
/// LB's `silent_worker`).
const SILENT: Duration = Duration::from_secs(2);

/// What requests ask for.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Sites with zipf popularity, each request naming `objects` objects
    /// of its site (ids ⌊|N(0, sigma)|⌋); a miss costs `miss`.
    Sites {
        sites: usize,
        zipf: f64,
        objects: usize,
        sigma: f64,
        miss: Duration,
        cache: usize,
    },
    /// `classes` equally likely classes, each request taking `service`
    /// (after its CPU time), no cache.
    Uniform { classes: usize, service: Duration },
}

/// Something that happens to the workers at a time.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Worker `i`'s application becomes `factor` times slower.
    Slow(usize, f64),
    /// Worker `i` stops (SIGSTOP) …
    Stop(usize),
    /// … and goes on (SIGCONT).
    Cont(usize),
    /// A new worker with this many threads joins.
    Add(usize),
}

/// A simulated deployment and its load.
#[derive(Debug, Clone)]
pub struct Config {
    /// Threads of each worker at the start.
    pub workers: Vec<usize>,
    pub lbs: usize,
    pub connections: usize,
    pub workload: Workload,
    pub cores: usize,
    pub cpu: Duration,
    pub hop: Duration,
    pub history: u64,
    pub pool: PoolKind,
    pub settings: Settings,
    pub faults: Vec<(Duration, Fault)>,
    /// Measured phases: name, start, end.
    pub phases: Vec<(String, Duration, Duration)>,
    pub seed: u64,
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub requests: u64,
    /// Client latencies, microseconds (sorted at the end).
    pub latencies: Vec<u64>,
    pub hits: u64,
    pub misses: u64,
    /// Requests served, per worker (by index).
    pub per_worker: Vec<u64>,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p / 100.0).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }

    pub fn hit_rate(&self) -> Option<f64> {
        let all = self.hits + self.misses;
        (all > 0).then(|| self.hits as f64 / all as f64)
    }

    pub fn over(&self, limit: Duration) -> u64 {
        let us = limit.as_micros() as u64;
        self.latencies.iter().filter(|&&l| l > us).count() as u64
    }

    /// Each worker's share of the requests, in percent.
    pub fn shares(&self) -> Vec<f64> {
        let total = self.per_worker.iter().sum::<u64>().max(1) as f64;
        self.per_worker
            .iter()
            .map(|&n| n as f64 * 100.0 / total)
            .collect()
    }
}

/// Simulated nanoseconds.
type Ns = u64;

fn ns(d: Duration) -> Ns {
    d.as_nanos() as Ns
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A connection's request reaches its LB.
    AtLb(usize),
    /// A request (connection, attempt) reaches its worker.
    AtWorker(usize, u32),
    /// Worker w's processor time for a request is over (w, conn, attempt).
    CpuDone(usize, usize, u32),
    /// The rest of its work starts (after the worker went on, if stopped).
    AfterCpu(usize, usize, u32),
    /// Its thread is done with it.
    Finished(usize, usize, u32),
    /// Its response's end reaches the LB.
    Answered(usize, u32),
    /// The response reaches the client.
    Delivered(usize),
    /// A résumé (index in `Sim::resumes`) reaches an LB from a worker
    /// connection (lb, worker, generation).
    ResumeAt(usize, usize, u64, usize),
    /// An LB's spill time may have come.
    Spill(usize),
    Fault(usize),
    /// The dead-worker timeout of (lb, worker, generation) may have come.
    DeadCheck(usize, usize, u64),
    /// The silent-worker time of (lb, worker, generation) may have come.
    SilentCheck(usize, usize, u64),
    /// An LB tries to connect to a worker.
    Connect(usize, usize),
}

struct Req {
    lb: usize,
    class: usize,
    objects: Vec<u64>,
    sent: Ns,
    attempt: u32,
    /// (worker, its connection generation at the LB), once dispatched.
    worker: Option<(usize, u64)>,
    dispatched: Ns,
    waiting_since: Option<Ns>,
    /// When its thread took it.
    started: Ns,
}

struct Worker {
    name: String,
    threads: usize,
    busy: usize,
    queue: VecDeque<(usize, u32)>,
    cache: Lru<(usize, u64)>,
    tracker: Tracker,
    factor: f64,
    stopped: Option<Ns>,
    /// Its events that came while it was stopped: (delay after it goes
    /// on, event).
    deferred: Vec<(Ns, Event)>,
}

/// One LB's view of a worker.
#[derive(Default, Clone)]
struct Link {
    /// Its id in this LB's pool while connected.
    id: Option<WorkerId>,
    generation: u64,
    /// Heard from last (a stopped worker is silent).
    heard: Ns,
    /// Held out of the pool for its silence.
    silent: bool,
}

struct Lb {
    balancer: Balancer,
    queues: Queues<usize>,
    links: Vec<Link>,
    ids: HashMap<WorkerId, usize>,
    next_id: u64,
    spill_at: Option<Ns>,
}

pub struct Sim {
    cfg: Config,
    now: Ns,
    seq: u64,
    heap: BinaryHeap<Reverse<(Ns, u64, Event)>>,
    rng: Rng,
    zipf: Option<Zipf>,
    classes: Vec<std::rc::Rc<str>>,
    reqs: Vec<Req>,
    workers: Vec<Worker>,
    lbs: Vec<Lb>,
    cpu_busy: usize,
    cpu_queue: VecDeque<(usize, usize, u32)>,
    resumes: Vec<Option<Resume>>,
    phases: Vec<Phase>,
}

impl Sim {
    pub fn new(cfg: Config) -> Sim {
        let classes: Vec<std::rc::Rc<str>> = match &cfg.workload {
            Workload::Sites { sites, .. } => (0..*sites)
                .map(|s| format!("s{s}.example").into())
                .collect(),
            Workload::Uniform { classes, .. } => {
                (0..*classes).map(|c| format!("class{c}").into()).collect()
            }
        };
        let zipf = match &cfg.workload {
            Workload::Sites { sites, zipf, .. } => Some(Zipf::new(*sites, *zipf)),
            Workload::Uniform { .. } => None,
        };
        let phases = cfg
            .phases
            .iter()
            .map(|(name, a, b)| Phase {
                name: name.clone(),
                seconds: (*b - *a).as_secs_f64(),
                ..Phase::default()
            })
            .collect();
        let lbs = (0..cfg.lbs)
            .map(|_| Lb {
                balancer: Balancer::new(cfg.pool, cfg.settings, false),
                queues: Queues::default(),
                links: Vec::new(),
                ids: HashMap::new(),
                next_id: 0,
                spill_at: None,
            })
            .collect();
        let mut sim = Sim {
            rng: Rng::new(cfg.seed),
            cfg,
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            zipf,
            classes,
            reqs: Vec::new(),
            workers: Vec::new(),
            lbs,
            cpu_busy: 0,
            cpu_queue: VecDeque::new(),
            resumes: Vec::new(),
            phases,
        };
        for threads in sim.cfg.workers.clone() {
            sim.add_worker(threads);
        }
        for (i, (at, _)) in sim.cfg.faults.clone().into_iter().enumerate() {
            sim.at(ns(at), Event::Fault(i));
        }
        for conn in 0..sim.cfg.connections {
            let lb = conn % sim.cfg.lbs;
            let (class, objects) = sim.draw();
            sim.reqs.push(Req {
                lb,
                class,
                objects,
                sent: 0,
                attempt: 0,
                worker: None,
                dispatched: 0,
                waiting_since: None,
                started: 0,
            });
            // Connections start a little apart, after the LBs connect.
            let start = ns(sim.cfg.hop) * 4 + conn as Ns * 1000;
            sim.reqs[conn].sent = start;
            sim.at(start + ns(sim.cfg.hop), Event::AtLb(conn));
        }
        sim
    }

    fn at(&mut self, t: Ns, e: Event) {
        self.seq += 1;
        self.heap.push(Reverse((t.max(self.now), self.seq, e)));
    }

    fn pool_time(&self) -> Time {
        Duration::from_nanos(self.now)
    }

    fn draw(&mut self) -> (usize, Vec<u64>) {
        match &self.cfg.workload {
            Workload::Sites { objects, sigma, .. } => {
                let (objects, sigma) = (*objects, *sigma);
                let site = self.zipf.as_ref().map_or(0, |z| z.sample(&mut self.rng));
                let ids = (0..objects)
                    .map(|_| half_normal(&mut self.rng, sigma))
                    .collect();
                (site, ids)
            }
            Workload::Uniform { classes, .. } => {
                let c = self.rng.below(*classes as u64) as usize;
                (c, Vec::new())
            }
        }
    }

    fn add_worker(&mut self, threads: usize) {
        let i = self.workers.len();
        let cache = match &self.cfg.workload {
            Workload::Sites { cache, .. } => *cache,
            Workload::Uniform { .. } => 1,
        };
        self.workers.push(Worker {
            name: format!("10.0.0.{}:8000", i + 1),
            threads: threads.max(1),
            busy: 0,
            queue: VecDeque::new(),
            cache: Lru::new(cache),
            tracker: Tracker::new(ResumeSettings {
                history: self.cfg.history,
                max_skill_age: None,
            }),
            factor: 1.0,
            stopped: None,
            deferred: Vec::new(),
        });
        for p in &mut self.phases {
            p.per_worker.push(0);
        }
        for lb in 0..self.lbs.len() {
            self.lbs[lb].links.push(Link::default());
            self.at(self.now + ns(self.cfg.hop), Event::Connect(lb, i));
        }
    }

    /// Run until the last phase ends; the phases' figures, and how the
    /// LBs placed requests.
    pub fn run(mut self) -> (Vec<Phase>, Placements) {
        let end = self.cfg.phases.iter().map(|p| ns(p.2)).max().unwrap_or(0);
        while let Some(Reverse((t, _, e))) = self.heap.pop() {
            if t > end {
                break;
            }
            self.now = t;
            self.event(e);
        }
        for p in &mut self.phases {
            p.latencies.sort_unstable();
        }
        let mut all = Placements::default();
        for lb in &self.lbs {
            let p = lb.balancer.status().placements;
            all.skilled += p.skilled;
            all.new += p.new;
            all.spilled += p.spilled;
            all.moved += p.moved;
        }
        (self.phases, all)
    }

    /// The phase the current time is in.
    fn phase(&mut self) -> Option<&mut Phase> {
        let now = self.now;
        let i = self
            .cfg
            .phases
            .iter()
            .position(|(_, a, b)| ns(*a) <= now && now < ns(*b))?;
        self.phases.get_mut(i)
    }

    /// A worker's own events wait while it is stopped.
    fn deferred(&mut self, w: usize, e: Event) -> bool {
        match self.workers[w].stopped {
            Some(since) => {
                let after = self.now - since;
                self.workers[w].deferred.push((after, e));
                true
            }
            None => false,
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::AtLb(conn) => {
                let lb = self.reqs[conn].lb;
                self.dispatch(lb, conn);
            }
            Event::AtWorker(conn, attempt) => {
                let Some((w, generation)) = self.current(conn, attempt) else {
                    return;
                };
                if !self.connected(self.reqs[conn].lb, w, generation) || self.deferred(w, e) {
                    return;
                }
                self.workers[w].queue.push_back((conn, attempt));
                self.start_threads(w);
            }
            Event::CpuDone(w, conn, attempt) => {
                self.cpu_busy -= 1;
                self.next_cpu();
                if !self.deferred(w, Event::AfterCpu(w, conn, attempt)) {
                    self.after_cpu(w, conn, attempt);
                }
            }
            Event::AfterCpu(w, conn, attempt) => {
                if !self.deferred(w, e) {
                    self.after_cpu(w, conn, attempt);
                }
            }
            Event::Finished(w, conn, attempt) => {
                if !self.deferred(w, e) {
                    self.finished(w, conn, attempt);
                }
            }
            Event::Answered(conn, attempt) => self.answered(conn, attempt),
            Event::Delivered(conn) => {
                let latency = (self.now - self.reqs[conn].sent) / 1000;
                if let Some(p) = self.phase() {
                    p.requests += 1;
                    p.latencies.push(latency);
                }
                let (class, objects) = self.draw();
                let r = &mut self.reqs[conn];
                r.class = class;
                r.objects = objects;
                r.sent = self.now;
                r.attempt = 0;
                r.worker = None;
                self.at(self.now + ns(self.cfg.hop), Event::AtLb(conn));
            }
            Event::ResumeAt(lb, w, generation, i) => {
                if let Some(resume) = self.resumes.get_mut(i).and_then(Option::take) {
                    if let Some(id) = self.lbs[lb].links[w].id {
                        if self.lbs[lb].links[w].generation == generation {
                            self.lbs[lb].balancer.new_resume(id, None, resume);
                            self.serve(lb);
                        }
                    }
                }
            }
            Event::Spill(lb) => {
                if self.lbs[lb].spill_at == Some(self.now) {
                    self.lbs[lb].spill_at = None;
                    self.serve(lb);
                }
            }
            Event::Fault(i) => self.fault(self.cfg.faults[i].1),
            Event::DeadCheck(lb, w, generation) => self.dead_check(lb, w, generation),
            Event::SilentCheck(lb, w, generation) => self.silent_check(lb, w, generation),
            Event::Connect(lb, w) => self.connect(lb, w),
        }
    }

    /// The worker of a request, if `attempt` is still its current one.
    fn current(&self, conn: usize, attempt: u32) -> Option<(usize, u64)> {
        let r = &self.reqs[conn];
        (r.attempt == attempt).then_some(r.worker).flatten()
    }

    fn connected(&self, lb: usize, w: usize, generation: u64) -> bool {
        let link = &self.lbs[lb].links[w];
        link.id.is_some() && link.generation == generation
    }

    fn dispatch(&mut self, lb: usize, conn: usize) {
        let class = self.classes[self.reqs[conn].class].clone();
        let ask = Ask::new(&class, self.pool_time());
        match self.lbs[lb].balancer.get(&ask) {
            Some(id) => self.send(lb, conn, id),
            None => {
                self.reqs[conn].waiting_since = Some(self.now);
                self.lbs[lb].queues.push(&class, conn);
                if let Some(spill) = self.lbs[lb].balancer.spill_after(&class) {
                    self.arm_spill(lb, self.now + ns(spill));
                }
            }
        }
    }

    fn arm_spill(&mut self, lb: usize, at: Ns) {
        if self.lbs[lb]
            .spill_at
            .is_none_or(|t| at < t || t <= self.now)
        {
            self.lbs[lb].spill_at = Some(at);
            self.at(at, Event::Spill(lb));
        }
    }

    fn send(&mut self, lb: usize, conn: usize, id: WorkerId) {
        let w = self.lbs[lb].ids[&id];
        let generation = self.lbs[lb].links[w].generation;
        let r = &mut self.reqs[conn];
        r.waiting_since = None;
        r.attempt += 1;
        r.worker = Some((w, generation));
        r.dispatched = self.now;
        let attempt = r.attempt;
        self.at(self.now + ns(self.cfg.hop), Event::AtWorker(conn, attempt));
    }

    fn serve(&mut self, lb: usize) {
        let mut queues = std::mem::take(&mut self.lbs[lb].queues);
        let now = self.pool_time();
        let next = serve(&mut queues, &mut View { sim: self, lb }, now);
        queues.append(std::mem::take(&mut self.lbs[lb].queues));
        self.lbs[lb].queues = queues;
        if let Some(at) = next {
            self.arm_spill(lb, ns(at));
        }
    }

    fn start_threads(&mut self, w: usize) {
        while self.workers[w].busy < self.workers[w].threads {
            let Some((conn, attempt)) = self.workers[w].queue.pop_front() else {
                return;
            };
            if self.current(conn, attempt).is_none() {
                continue;
            }
            self.workers[w].busy += 1;
            self.reqs[conn].started = self.now;
            self.cpu_queue.push_back((w, conn, attempt));
            self.next_cpu();
        }
    }

    fn next_cpu(&mut self) {
        while self.cpu_busy < self.cfg.cores {
            let Some((w, conn, attempt)) = self.cpu_queue.pop_front() else {
                return;
            };
            self.cpu_busy += 1;
            let t = self.cfg.cpu.as_nanos() as f64 * self.workers[w].factor;
            self.at(self.now + t as Ns, Event::CpuDone(w, conn, attempt));
        }
    }

    /// Past its processor time: the cache, or the fixed service time.
    fn after_cpu(&mut self, w: usize, conn: usize, attempt: u32) {
        if self.current(conn, attempt).is_none() {
            // Its LB gave up on it (the worker was dropped): the thread
            // is free.
            self.workers[w].busy -= 1;
            self.start_threads(w);
            return;
        }
        let (wait, hits, misses) = match &self.cfg.workload {
            Workload::Sites { miss, .. } => {
                let miss = *miss;
                let site = self.reqs[conn].class;
                let mut misses = 0u64;
                for &id in &self.reqs[conn].objects {
                    if !self.workers[w].cache.touch((site, id)) {
                        misses += 1;
                    }
                }
                let n = self.reqs[conn].objects.len() as u64;
                (miss * misses as u32, n - misses, misses)
            }
            Workload::Uniform { service, .. } => (*service, 0, 0),
        };
        if let Some(p) = self.phase() {
            p.hits += hits;
            p.misses += misses;
        }
        let t = wait.as_nanos() as f64 * self.workers[w].factor;
        self.at(self.now + t as Ns, Event::Finished(w, conn, attempt));
    }

    fn finished(&mut self, w: usize, conn: usize, attempt: u32) {
        self.workers[w].busy -= 1;
        let Some((_, generation)) = self.current(conn, attempt) else {
            self.start_threads(w);
            return;
        };
        let elapsed = (self.now - self.reqs[conn].started) as f64 / 1e9;
        let class = self.classes[self.reqs[conn].class].clone();
        if let Some(resume) = self.workers[w].tracker.record(&class, elapsed) {
            self.publish(w, resume);
        }
        if let Some(p) = self.phase() {
            p.per_worker[w] += 1;
        }
        let lb = self.reqs[conn].lb;
        if self.connected(lb, w, generation) {
            self.at(self.now + ns(self.cfg.hop), Event::Answered(conn, attempt));
        }
        self.start_threads(w);
    }

    fn publish(&mut self, w: usize, resume: Resume) {
        for lb in 0..self.lbs.len() {
            let link = &self.lbs[lb].links[w];
            if link.id.is_none() {
                continue;
            }
            let generation = link.generation;
            self.resumes.push(Some(resume.clone()));
            let i = self.resumes.len() - 1;
            self.at(
                self.now + ns(self.cfg.hop),
                Event::ResumeAt(lb, w, generation, i),
            );
        }
    }

    fn answered(&mut self, conn: usize, attempt: u32) {
        let Some((w, generation)) = self.current(conn, attempt) else {
            return;
        };
        let lb = self.reqs[conn].lb;
        if !self.connected(lb, w, generation) {
            return;
        }
        self.lbs[lb].links[w].heard = self.now;
        let id = self.lbs[lb].links[w].id.expect("connected");
        let class = self.classes[self.reqs[conn].class].clone();
        let latency = Duration::from_nanos(self.now - self.reqs[conn].dispatched);
        let done = Done {
            class: &class,
            now: self.pool_time(),
            latency: Some(latency),
        };
        self.lbs[lb].balancer.put(id, &done);
        self.reqs[conn].worker = None;
        self.at(self.now + ns(self.cfg.hop), Event::Delivered(conn));
        self.serve(lb);
    }

    fn fault(&mut self, f: Fault) {
        match f {
            Fault::Slow(w, factor) => self.workers[w].factor = factor,
            Fault::Stop(w) => {
                self.workers[w].stopped = Some(self.now);
                for lb in 0..self.lbs.len() {
                    let generation = self.lbs[lb].links[w].generation;
                    let at = self.now + ns(DEAD_WORKER);
                    self.at(at, Event::DeadCheck(lb, w, generation));
                    let at = self.now + ns(SILENT);
                    self.at(at, Event::SilentCheck(lb, w, generation));
                }
            }
            Fault::Cont(w) => {
                if self.workers[w].stopped.take().is_some() {
                    for (after, e) in std::mem::take(&mut self.workers[w].deferred) {
                        self.at(self.now + after, e);
                    }
                    for lb in 0..self.lbs.len() {
                        self.lbs[lb].links[w].heard = self.now;
                        self.speaks(lb, w);
                    }
                }
            }
            Fault::Add(threads) => self.add_worker(threads),
        }
    }

    /// The LB drops a worker it has not heard from for the dead-worker
    /// timeout; its requests go elsewhere (they are all GETs).
    fn dead_check(&mut self, lb: usize, w: usize, generation: u64) {
        if !self.connected(lb, w, generation) || self.workers[w].stopped.is_none() {
            return;
        }
        let silent = self.now
            - self.lbs[lb].links[w]
                .heard
                .max(self.workers[w].stopped.unwrap_or(0));
        if silent < ns(DEAD_WORKER) {
            let at = self.now + ns(DEAD_WORKER) - silent;
            self.at(at, Event::DeadCheck(lb, w, generation));
            return;
        }
        let id = self.lbs[lb].links[w].id.take().expect("connected");
        self.lbs[lb].links[w].silent = false;
        let lost = self.on_worker(lb, w, generation);
        let now = self.pool_time();
        for &conn in &lost {
            let class = self.classes[self.reqs[conn].class].clone();
            self.lbs[lb]
                .balancer
                .put(id, &Done::without_sample(&class, now));
        }
        self.lbs[lb].balancer.remove(id);
        self.lbs[lb].ids.remove(&id);
        for conn in lost {
            self.reqs[conn].worker = None;
            self.reqs[conn].attempt += 1;
            self.dispatch(lb, conn);
        }
        self.at(self.now + ns(RECONNECT), Event::Connect(lb, w));
    }

    /// The requests of (lb, worker, generation) on it now.
    fn on_worker(&self, lb: usize, w: usize, generation: u64) -> Vec<usize> {
        (0..self.reqs.len())
            .filter(|&c| self.reqs[c].lb == lb && self.reqs[c].worker == Some((w, generation)))
            .collect()
    }

    /// Silent with requests in flight: out of the pool, and its requests
    /// go elsewhere (they are all GETs that have no response yet).
    fn silent_check(&mut self, lb: usize, w: usize, generation: u64) {
        if !self.connected(lb, w, generation) || self.workers[w].stopped.is_none() {
            return;
        }
        let link = &mut self.lbs[lb].links[w];
        if link.silent {
            return;
        }
        let silent = self.now - link.heard;
        if silent < ns(SILENT) {
            let at = self.now + ns(SILENT) - silent;
            self.at(at, Event::SilentCheck(lb, w, generation));
            return;
        }
        link.silent = true;
        let id = link.id.expect("connected");
        let moved = self.on_worker(lb, w, generation);
        let now = self.pool_time();
        self.lbs[lb].balancer.hold(id);
        if self.lbs[lb].balancer.is_empty() {
            // No other worker could take them: they wait for this one.
            return;
        }
        for conn in moved {
            let class = self.classes[self.reqs[conn].class].clone();
            self.lbs[lb]
                .balancer
                .put(id, &Done::without_sample(&class, now));
            self.reqs[conn].worker = None;
            self.reqs[conn].attempt += 1;
            self.dispatch(lb, conn);
        }
    }

    /// A silent worker is heard again: back into the pool.
    fn speaks(&mut self, lb: usize, w: usize) {
        let link = &mut self.lbs[lb].links[w];
        if !link.silent {
            return;
        }
        link.silent = false;
        if let Some(id) = link.id {
            let (name, threads) = (self.workers[w].name.clone(), self.workers[w].threads);
            let resume = self.workers[w].tracker.resume();
            self.lbs[lb].balancer.describe(id, &name, threads);
            self.lbs[lb].balancer.new_resume(id, None, resume);
            self.serve(lb);
        }
    }

    fn connect(&mut self, lb: usize, w: usize) {
        if self.lbs[lb].links[w].id.is_some() {
            return;
        }
        if self.workers[w].stopped.is_some() {
            self.at(self.now + ns(RECONNECT), Event::Connect(lb, w));
            return;
        }
        let l = &mut self.lbs[lb];
        l.next_id += 1;
        let id = WorkerId(l.next_id);
        l.ids.insert(id, w);
        let link = &mut l.links[w];
        link.generation += 1;
        link.id = Some(id);
        link.heard = self.now;
        let (name, threads) = (self.workers[w].name.clone(), self.workers[w].threads);
        let resume = self.workers[w].tracker.resume();
        l.balancer.describe(id, &name, threads);
        l.balancer.new_resume(id, None, resume);
        self.serve(lb);
    }
}

/// An LB's side of the serving pass.
struct View<'a> {
    sim: &'a mut Sim,
    lb: usize,
}

impl Server<usize> for View<'_> {
    type Worker = WorkerId;

    fn since(&self, conn: usize) -> Option<Time> {
        let r = &self.sim.reqs[conn];
        (r.lb == self.lb)
            .then_some(r.waiting_since)
            .flatten()
            .map(Duration::from_nanos)
    }

    fn pick(&mut self, ask: &Ask) -> Option<WorkerId> {
        self.sim.lbs[self.lb].balancer.get(ask)
    }

    fn send(&mut self, conn: usize, id: WorkerId) {
        self.sim.send(self.lb, conn, id);
    }

    fn balancer(&self) -> &Balancer {
        &self.sim.lbs[self.lb].balancer
    }
}
