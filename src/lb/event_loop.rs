//! The LB's event loop: routes mio events to the parts that own the
//! sockets (clients, workers, status), applies the effects they ask of each
//! other, runs deadlines, and takes commands and signals. No part calls
//! another: cross-part work (dispatching a request, cancelling it on its
//! worker, passing a response frame on) happens here, in `apply`.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use mio::{Poll, Token};

use super::board::{Point, TICK};
use super::clients::{self, ClientKey, Clients, NO_WORKER_AT_SHUTDOWN};
use super::ctx::{Ctx, Dirty, Due, Effect, Response};
use super::handover;
use super::htpasswd::AuthFile;
use super::observe::DEFAULT_CLASSES;
use super::reload;
use super::report;
use super::reqbody::BODY_BIT;
use super::resolver::Resolver;
use super::spill::{SpillIo, SpillRead};
use super::status::Status;
use super::workers::{self, WorkerKey, Workers};
use super::WorkerSpec;
use super::{Command, LbConfig};
use crate::classify::Classifier;
use crate::net::{
    token_conn, Accepted, Acceptor, Armed, Bound, Control, Reactor, Ready, StopVerdict, Stops,
    ACCEPT_RETRY, LISTENER,
};
use crate::pool::waiting::Server;
use crate::pool::Settings;
use crate::pool::{Ask, Balancer, Time};
use crate::proto::MAX_CHUNK;

pub(super) const STATUS: Token = Token(2);
/// The hand-over offer (`handover`).
pub(super) const HANDOVER: Token = Token(3);

/// How often freed memory is given back while clients are connected (each
/// second while none is).
const TRIM_BUSY: Duration = Duration::from_secs(10);
const TRIM_IDLE: Duration = Duration::from_secs(1);

pub(super) struct Loop {
    poll: Poll,
    acceptor: Acceptor,
    clients: Clients,
    workers: Workers,
    status: Status,
    ctx: Ctx,
    control: Control<Command>,
    /// Read-backs from the spill thread.
    spilled: Receiver<SpillRead>,
    /// After `accept` failed: no accepting before this.
    accept_retry: Option<Instant>,
    /// When waiting requests may next go to any free worker.
    spill_armed: Armed,
    /// When rates were last taken.
    last_tick: Instant,
    /// Where a new LB asks for the listener.
    offer: Option<mio::net::UnixListener>,
    /// What the command line said, under the workers file's additions.
    base: Base,
}

/// The command line's workers, settings and classifier.
struct Base {
    workers: Vec<WorkerSpec>,
    settings: Settings,
    classifier: Classifier,
    /// The classifier spec the workers file set, if any.
    file_classifier: Option<String>,
}

impl Loop {
    pub(super) fn new(
        bound: Bound,
        cfg: LbConfig,
        control: Control<Command>,
        auth: Option<Arc<AuthFile>>,
    ) -> io::Result<Loop> {
        let Bound {
            poll,
            waker,
            listener,
            addr: local,
        } = bound;
        let acceptor = Acceptor::new(listener, poll.registry(), LISTENER)?;
        let status = Status::bind(cfg.status_path.as_deref(), poll.registry(), STATUS)?;
        let (spill_io, spilled) = SpillIo::start(waker.clone())?;
        let workers = Workers::new(Resolver::start(waker)?);
        let registry = poll.registry().try_clone()?;
        let base = Base {
            workers: cfg.workers.clone(),
            settings: cfg.settings,
            classifier: cfg.classifier.clone(),
            file_classifier: None,
        };
        let file = match &cfg.workers_file {
            Some(p) => {
                Some(reload::read(p).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?)
            }
            None => None,
        };
        let specs = match &file {
            Some(f) => reload::merged(&cfg.workers, f),
            None => cfg.workers.clone(),
        };
        let mut lp = Loop {
            poll,
            acceptor,
            clients: Clients::default(),
            workers,
            status,
            ctx: Ctx::new(cfg, local, registry, spill_io),
            control,
            spilled,
            accept_retry: None,
            spill_armed: Armed::default(),
            last_tick: Instant::now(),
            offer: None,
            base,
        };
        if let Some(f) = file {
            lp.apply_file(f);
        }
        match handover::offer(local) {
            Ok(mut o) => {
                lp.poll
                    .registry()
                    .register(&mut o, HANDOVER, mio::Interest::READABLE)?;
                lp.offer = Some(o);
            }
            Err(e) => log::warn!("no hand-over offer for {local}: {e}"),
        }
        lp.workers.set(specs, &mut lp.ctx);
        lp.ctx.auth = auth;
        lp.ctx.deadlines.push(Instant::now() + TRIM_IDLE, Due::Trim);
        lp.ctx.deadlines.push(Instant::now() + TICK, Due::Tick);
        lp.last_tick = Instant::now();
        lp.apply();
        Ok(lp)
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        crate::net::run(&mut self)
    }

    /// Stop when shutting down and every client is gone, or the shutdown
    /// timeout passed.
    fn stopped(&mut self) -> bool {
        let Some(deadline) = self.ctx.stopping else {
            return false;
        };
        if self.clients.len() == 0 {
            log::info!("all requests finished");
        } else if Instant::now() >= deadline {
            log::warn!(
                "shutdown timeout: exiting with {} client(s) open",
                self.clients.len()
            );
        } else {
            return false;
        }
        self.shutdown();
        true
    }

    fn conn_event(&mut self, token: Token, ready: Ready) {
        let Some((kind, key)) = token_conn(token) else {
            return;
        };
        let (readable, writable) = (ready.readable, ready.writable);
        match kind {
            clients::KIND => {
                self.clients
                    .event(ClientKey::from(key), readable, writable, &mut self.ctx)
            }
            workers::KIND => {
                self.workers
                    .event(WorkerKey::from(key), readable, writable, &mut self.ctx)
            }
            _ => self.status.event(key.into(), self.poll.registry()),
        }
    }

    /// Apply what the parts asked of each other, until nothing is left.
    fn apply(&mut self) {
        while let Some(effect) = self.ctx.effects.pop_front() {
            match effect {
                Effect::Dispatch(client) => self.dispatch(client),
                Effect::Cancel(worker, rno) => self.workers.cancel(worker, rno, &mut self.ctx),
                Effect::Move(worker, rno, client) => {
                    if self.clients.movable(client, worker, rno) {
                        self.workers.cancel(worker, rno, &mut self.ctx);
                        self.clients.response(client, Response::Lost, &mut self.ctx);
                    }
                }
                Effect::Outcome(worker, failed) => {
                    self.workers.outcome(worker, failed, &mut self.ctx)
                }
                Effect::BadResponse(worker, rno, why) => {
                    self.workers.bad_response(worker, rno, why, &mut self.ctx)
                }
                Effect::Response(client, resp) => {
                    self.clients.response(client, resp, &mut self.ctx)
                }
                Effect::Pump(worker) => self.ctx.dirty.mark(Dirty::Worker(worker)),
                Effect::ServeWaiting => self.serve_waiting(),
            }
        }
    }

    /// Send a complete request to a worker, or queue it until one comes.
    fn dispatch(&mut self, client: ClientKey) {
        let Some(class) = self.clients.class(client).cloned() else {
            return;
        };
        let ask = Ask::new(&class, self.ctx.pool_now());
        match self.workers.pick(&ask, &mut self.ctx) {
            Some(worker) => self.send(client, worker),
            // Shutting down with no worker in the pool: none will come.
            None if self.ctx.stopping.is_some()
                && (!self.ctx.handed_over || self.ctx.balancer.is_empty()) =>
            {
                self.clients
                    .refuse(client, NO_WORKER_AT_SHUTDOWN, &mut self.ctx)
            }
            None => {
                if self.clients.dispatching(client).is_some() {
                    self.clients.wait(client);
                    if let Some(spill) = self.ctx.balancer.spill_after(&class) {
                        let at = Instant::now() + spill;
                        self.ctx
                            .deadlines
                            .arm(&mut self.spill_armed, at, Due::ServeWaiting);
                    }
                }
            }
        }
    }

    fn send(&mut self, client: ClientKey, worker: WorkerKey) {
        let Some(class) = self.clients.class(client).cloned() else {
            return;
        };
        let Some((environ, has_body)) = self.clients.dispatching(client) else {
            // Should not happen (the request was there a moment ago): the
            // pool's pick is given back.
            self.workers.unpick(worker, &class, &mut self.ctx);
            return;
        };
        let sent = self
            .workers
            .send(worker, client, class, environ, has_body, &mut self.ctx);
        if let Some(rno) = sent {
            self.clients.sent(client, worker, rno, &mut self.ctx);
        }
    }

    /// Requests waiting for a worker get one (`pool::waiting::serve`), then
    /// the next spill time is armed.
    fn serve_waiting(&mut self) {
        let now = self.ctx.pool_now();
        let mut queues = self.clients.take_queues();
        let next = crate::pool::waiting::serve(&mut queues, self, now);
        self.clients.put_queues(queues);
        if let Some(at) = next {
            let at = Instant::now() + at.saturating_sub(now);
            self.ctx
                .deadlines
                .arm(&mut self.spill_armed, at, Due::ServeWaiting);
        }
    }

    /// Copy request bodies into a worker's buffer while it has room. True
    /// when stopped by a body being read back from its spill file (the
    /// read-back asks for another pump).
    fn pump(&mut self, worker: WorkerKey) -> bool {
        while let Some((rno, client)) = self.workers.body_wanted(worker) {
            let piece = self.clients.body_piece(client, 4 * MAX_CHUNK);
            if !self.workers.body_piece(worker, rno, piece) {
                return true;
            }
        }
        false
    }

    fn accept_clients(&mut self) {
        while self.clients.len() < self.ctx.cfg.max_connections {
            match self.acceptor.accept() {
                Accepted::Conn(stream, peer) => {
                    self.clients.add(stream, peer, &mut self.ctx);
                    self.apply();
                }
                Accepted::Empty => return,
                Accepted::Failed(e) => {
                    self.acceptor.failed(&e, self.poll.registry());
                    let at = Instant::now() + ACCEPT_RETRY;
                    self.accept_retry = Some(at);
                    self.ctx.deadlines.push(at, Due::Accept);
                    return;
                }
            }
        }
        log::warn!("{} connections: accepting paused", self.clients.len());
        self.acceptor.pause(self.poll.registry());
    }

    /// Accept again if paused and below the connection limit.
    fn maybe_resume_accepting(&mut self) {
        if self.accept_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.accept_retry = None;
        if self.clients.len() < self.ctx.cfg.max_connections
            && self.acceptor.resume(self.poll.registry())
        {
            // Connections that queued meanwhile bring no event.
            self.accept_clients();
        }
    }

    /// Read-backs from the spill thread.
    fn read_backs(&mut self) {
        while let Ok(r) = self.spilled.try_recv() {
            let body = r.id & BODY_BIT != 0;
            let id = r.id & !BODY_BIT;
            self.clients.read_back(id, body, r.data, &mut self.ctx);
            self.apply();
        }
    }

    /// Commands (signals among them), and what stop requests ask for.
    fn take_inputs(&mut self) -> StopVerdict {
        let mut stops = Stops::default();
        let (commands, reopen, reload) = self.control.take(&mut stops);
        if reload {
            self.reload();
        } else if reopen {
            self.ctx.cfg.access_log.reopen();
        }
        for cmd in commands {
            match cmd {
                Command::SetWorkers(w) => self.workers.set(w, &mut self.ctx),
                Command::UpdateSettings(s) => self.update_settings(s),
                Command::Stop => stops.graceful(),
                Command::StopNow => stops.at_once(),
                Command::Reopen => self.ctx.cfg.access_log.reopen(),
                Command::Reload => self.reload(),
                Command::Scrape(tx) => {
                    let text = report::metrics_text(&self.ctx, &self.workers, &self.clients);
                    let _ = tx.send(text);
                }
                Command::Document(classes, tx) => {
                    let doc = report::document(&self.ctx, &self.workers, &self.clients, classes);
                    let _ = tx.send(doc);
                }
            }
            self.apply();
        }
        let verdict = stops.verdict(self.ctx.stopping.is_some());
        if verdict == StopVerdict::Start {
            self.start_stopping();
        }
        verdict
    }

    /// A new LB asks for the listener: hand it over, then finish.
    fn hand_over(&mut self) {
        let conn = loop {
            let Some(offer) = &self.offer else { return };
            match offer.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::error!("hand-over accept failed: {e}");
                    return;
                }
            }
        };
        let successor = match handover::successor(conn) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("hand-over refused: {e}");
                return;
            }
        };
        let Some(fd) = self.acceptor.raw_fd() else {
            log::warn!("hand-over asked while not listening; refused");
            return;
        };
        // The offer and the status socket are the new process's to take.
        let registry = self.poll.registry();
        if let Some(mut o) = self.offer.take() {
            let _ = registry.deregister(&mut o);
        }
        self.status.release(registry);
        let pid = successor.pid;
        if let Err(e) = successor.hand(fd) {
            log::error!("hand-over to pid {pid} failed ({e}); serving on");
            return;
        }
        log::info!(
            "handed the listener over to pid {pid}; finishing {} client(s), then exiting",
            self.clients.len()
        );
        let text = format!("listener handed over to pid {pid}");
        self.ctx.board.event("handed-over", None, text);
        self.ctx.handed_over = true;
        self.start_stopping();
    }

    /// SIGHUP: the access log reopened, the metrics auth file and the
    /// workers file read again.
    fn reload(&mut self) {
        self.ctx.cfg.access_log.reopen();
        if let Some(a) = &self.ctx.auth {
            a.reload();
        }
        let Some(path) = self.ctx.cfg.workers_file.clone() else {
            return;
        };
        match reload::read(&path) {
            Ok(f) => {
                let workers = reload::merged(&self.base.workers, &f);
                let n = workers.len();
                self.workers.set(workers, &mut self.ctx);
                self.apply_file(f);
                log::info!("{}: read again, {n} worker(s)", path.display());
            }
            Err(e) => log::error!("{e}; keeping the running configuration"),
        }
    }

    /// New pool settings (from ZooKeeper or the workers file).
    fn update_settings(&mut self, s: Settings) {
        let text = format!(
            "pool settings: variance {}, backlog_history {}, unskilled_score {}, \
             slow_factor {}, spill_factor {}, max_depth {}, eject_after {}",
            s.variance,
            s.backlog_history,
            s.unskilled_score,
            s.slow_factor,
            s.spill_factor,
            s.max_depth,
            s.eject_after
        );
        log::info!("{text}");
        self.ctx.balancer.update_settings(&s);
        self.ctx.board.event("settings", None, text);
    }

    /// The workers file's settings and classifier over the command line's
    /// (its workers are set by the caller).
    fn apply_file(&mut self, f: reload::WorkersFile) {
        let s = f.settings_over(&self.base.settings);
        if s != self.ctx.balancer.settings() {
            self.update_settings(s);
        }
        let spec = f.classifier.as_ref().map(|c| c.0.clone());
        if spec != self.base.file_classifier {
            self.ctx.cfg.classifier = match f.classifier {
                Some((_, c)) => c,
                None => self.base.classifier.clone(),
            };
            let text = format!(
                "request classifier: {}",
                spec.as_deref().unwrap_or("the command line's")
            );
            log::info!("{text}");
            self.ctx.board.event("settings", None, text);
            self.base.file_classifier = spec;
        }
    }

    /// Rates, and a history point for the page.
    fn tick(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        self.ctx.metrics.tick(secs);
        self.workers.tick(secs);
        let st = self.ctx.balancer.status();
        self.ctx.board.sample(Point {
            at: SystemTime::now(),
            requests_per_s: self.ctx.metrics.rate.per_second(),
            backlog: st.backlog,
            in_flight: self.workers.in_flight(),
            waiting: self.clients.waiting(),
        });
        self.ctx.deadlines.push(now + TICK, Due::Tick);
    }

    fn start_stopping(&mut self) {
        log::info!(
            "shutting down: no new connections, finishing {} client(s)",
            self.clients.len()
        );
        let deadline = crate::util::time::after(Instant::now(), self.ctx.cfg.socket_timeout);
        self.ctx.stopping = Some(deadline);
        self.ctx.deadlines.push(deadline, Due::Stop);
        self.acceptor.close(self.poll.registry());
        if let Some(mut o) = self.offer.take() {
            let _ = self.poll.registry().deregister(&mut o);
        }
        // After a hand-over the workers stay: waiting requests still get one.
        if !self.ctx.handed_over || self.ctx.balancer.is_empty() {
            self.clients.refuse_waiting(&mut self.ctx);
        }
        self.clients.stop(&mut self.ctx);
        self.apply();
    }

    fn shutdown(&mut self) {
        for key in self.clients.keys() {
            self.clients.close(key, "LB shutting down", &mut self.ctx);
        }
        for key in self.workers.keys() {
            self.workers.close(key, "LB shutting down", &mut self.ctx);
        }
        // Effects of closing are moot now (every client is gone).
        self.ctx.effects.clear();
        self.status.close(self.poll.registry());
        self.ctx.cfg.access_log.flush();
    }

    fn run_deadlines(&mut self) {
        let now = Instant::now();
        while let Some((at, due)) = self.ctx.deadlines.pop_due(now) {
            match due {
                Due::Client(key) => self.clients.on_deadline(key, at, now, &mut self.ctx),
                Due::Worker(key) => self.workers.on_deadline(key, at, now, &mut self.ctx),
                Due::Reconnect => self.workers.on_reconnect(at, now, &mut self.ctx),
                Due::Accept => self.maybe_resume_accepting(),
                Due::Trim => self.trim_memory(now),
                Due::Tick => self.tick(now),
                Due::ServeWaiting => {
                    if self.spill_armed.fire(at) {
                        self.serve_waiting();
                    }
                }
                // The loop checks the time after this round.
                Due::Stop => {}
            }
            self.apply();
        }
    }

    /// Give memory freed after a burst back to the system (glibc keeps it
    /// otherwise).
    fn trim_memory(&mut self, now: Instant) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        let every = if self.clients.len() == 0 {
            TRIM_IDLE
        } else {
            TRIM_BUSY
        };
        self.ctx.deadlines.push(now + every, Due::Trim);
    }

    fn flush_dirty(&mut self) {
        loop {
            let dirty = self.ctx.dirty.take();
            if dirty.is_empty() {
                break;
            }
            for d in dirty {
                match d {
                    Dirty::Client(key) => self.clients.flush(key, &mut self.ctx),
                    Dirty::Worker(key) => {
                        let reading_back = self.pump(key);
                        self.workers.flush(key, reading_back, &mut self.ctx);
                        self.workers.arm(key, &mut self.ctx);
                    }
                }
                self.apply();
            }
        }
        self.maybe_resume_accepting();
    }
}

impl Server<ClientKey> for Loop {
    type Worker = WorkerKey;

    fn since(&self, key: ClientKey) -> Option<Time> {
        let t = self.clients.waiting_since(key)?;
        Some(self.ctx.pool_time(t))
    }

    fn pick(&mut self, ask: &Ask) -> Option<WorkerKey> {
        self.workers.pick(ask, &mut self.ctx)
    }

    fn send(&mut self, key: ClientKey, worker: WorkerKey) {
        Loop::send(self, key, worker);
    }

    fn balancer(&self) -> &Balancer {
        &self.ctx.balancer
    }
}

impl Reactor for Loop {
    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.ctx.deadlines.next()
    }

    fn accept(&mut self) {
        self.accept_clients();
    }

    fn ready(&mut self, token: Token, ready: Ready) {
        if token == HANDOVER {
            self.hand_over();
        } else if token == STATUS {
            let registry = self.poll.registry();
            let (ctx, workers, clients) = (&self.ctx, &self.workers, &self.clients);
            self.status.accept(registry, || {
                report::document(ctx, workers, clients, DEFAULT_CLASSES)
            });
        } else {
            self.conn_event(token, ready);
        }
        self.apply();
    }

    fn round(&mut self) -> Option<io::Result<()>> {
        self.workers.resolved(&mut self.ctx);
        self.read_backs();
        if self.take_inputs() == StopVerdict::Exit {
            // Whatever is in flight is cut off, and the exit status says so.
            let cut = self.clients.in_flight();
            self.shutdown();
            return Some(crate::net::stopped_at_once(cut));
        }
        self.run_deadlines();
        self.flush_dirty();
        self.stopped().then_some(Ok(()))
    }
}
