//! The LB's event loop: routes mio events to client, worker and status
//! connections, and runs the timer's ticks (timeouts, keep-alives,
//! reconnects) and commands (worker set, settings, stop).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};

use super::backend::WorkerConn;
use super::client::Client;
use super::spill::{SpillIo, SpillRead};
use super::status::SocketPath;
use super::status::StatusConn;
use super::{Command, LbConfig, WorkerSpec};
use crate::pool::Balancer;
use crate::util::signals::SignalEvent;
use crate::util::slab::Slab;

pub(super) const LISTENER: Token = Token(0);
pub(super) const WAKER: Token = Token(1);
pub(super) const STATUS: Token = Token(2);
pub(super) const FIRST_CONN: usize = 3;

fn token(slot: usize) -> Token {
    Token(slot + FIRST_CONN)
}

/// Everything the loop owns a socket for.
pub(super) enum Conn {
    Client(Box<Client>),
    Worker(Box<WorkerConn>),
    Status(StatusConn),
}

/// A configured worker address.
pub(super) struct Addr {
    pub version: Option<String>,
    /// Its connection, if one is open or opening.
    pub slot: Option<usize>,
    pub retry_at: Instant,
}

/// Counters for the status document and metrics.
#[derive(Debug, Default, Clone)]
pub(super) struct Counters {
    pub retries: u64,
    pub bad_gateway: u64,
    pub spilled_bytes: u64,
}

pub(super) struct Loop {
    pub poll: Poll,
    pub listener: Option<TcpListener>,
    pub status: Option<(UnixListener, PathBuf)>,
    pub local: SocketAddr,
    pub cfg: LbConfig,
    pub conns: Slab<Conn>,
    pub addrs: HashMap<String, Addr>,
    /// Worker connection id → slot.
    pub by_wid: HashMap<u64, usize>,
    pub balancer: Balancer,
    /// Requests waiting for a worker: (client slot, client id).
    pub waiting: VecDeque<(usize, u64)>,
    pub next_id: u64,
    pub clients: usize,
    pub accepting: bool,
    pub dirty: Vec<usize>,
    pub stopping: Option<Instant>,
    pub counters: Counters,
    pub metrics: super::metrics::Metrics,
    /// The spill thread, and its read-backs.
    pub spill_io: SpillIo,
    spill_rx: Receiver<SpillRead>,
    /// Client connection id → slot (read-backs name the id).
    pub client_by_id: HashMap<u64, usize>,
    last_trim: Instant,
    /// Workers that cannot be reached, do not speak the protocol or fail
    /// the handshake, by address and reason: one log line a minute each
    /// (they are retried about once a second).
    pub worker_log: crate::util::ratelog::LogLimiter<(String, &'static str)>,
    cmd_rx: Receiver<Command>,
    ticks: Receiver<()>,
    signals: Option<Receiver<SignalEvent>>,
}

impl Loop {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        waker: std::sync::Arc<mio::Waker>,
        poll: Poll,
        mut listener: TcpListener,
        local: SocketAddr,
        cfg: LbConfig,
        cmd_rx: Receiver<Command>,
        ticks: Receiver<()>,
        signals: Option<Receiver<SignalEvent>>,
    ) -> io::Result<Loop> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let status = match &cfg.status_path {
            Some(path) => {
                let status_error = |e: io::Error| {
                    io::Error::new(e.kind(), format!("status socket {}: {e}", path.display()))
                };
                // A socket file left by an earlier run is replaced; one a
                // running LB answers on, or another kind of file, is not.
                match super::status::claim_socket_path(path).map_err(status_error)? {
                    SocketPath::Free => {}
                    SocketPath::InUse => {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!(
                                "status socket {} is in use: another load balancer answers on it",
                                path.display()
                            ),
                        ))
                    }
                    SocketPath::NotASocket => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "status socket {} exists and is not a socket",
                                path.display()
                            ),
                        ))
                    }
                }
                let mut l = UnixListener::bind(path).map_err(status_error)?;
                // Owner and group only: the document names every worker.
                // (Until this chmod the umask applies; connecting needs
                // write permission, which the usual umask 022 denies.)
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .map_err(status_error)?;
                poll.registry()
                    .register(&mut l, STATUS, Interest::READABLE)?;
                Some((l, path.clone()))
            }
            None => None,
        };
        let balancer = Balancer::new(cfg.pool, cfg.settings, cfg.single_version);
        let workers = cfg.workers.clone();
        let metrics = super::metrics::Metrics::new(cfg.metrics_max_classes);
        let (spill_io, spill_rx) = SpillIo::start(waker)?;
        let mut lp = Loop {
            poll,
            listener: Some(listener),
            status,
            local,
            cfg,
            conns: Slab::new(),
            addrs: HashMap::new(),
            by_wid: HashMap::new(),
            balancer,
            waiting: VecDeque::new(),
            next_id: 0,
            clients: 0,
            accepting: true,
            dirty: Vec::new(),
            stopping: None,
            counters: Counters::default(),
            metrics,
            spill_io,
            spill_rx,
            client_by_id: HashMap::new(),
            last_trim: Instant::now(),
            worker_log: crate::util::ratelog::LogLimiter::new(std::time::Duration::from_secs(60)),
            cmd_rx,
            ticks,
            signals,
        };
        lp.set_workers(workers);
        Ok(lp)
    }

    pub(super) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Register the socket of the connection in `slot`; on failure the
    /// connection is dropped and false returned.
    pub(super) fn register_slot(&mut self, slot: usize, interest: Interest) -> bool {
        let registry = self.poll.registry();
        let ok = match self.conns.get_mut(slot) {
            Some(Conn::Client(c)) => registry.register(&mut c.stream, token(slot), interest),
            Some(Conn::Worker(w)) => registry.register(&mut w.stream, token(slot), interest),
            Some(Conn::Status(s)) => registry.register(&mut s.stream, token(slot), interest),
            None => return false,
        }
        .is_ok();
        if !ok {
            self.conns.remove(slot);
        }
        ok
    }

    pub(super) fn mark_dirty(&mut self, slot: usize) {
        if !self.dirty.contains(&slot) {
            self.dirty.push(slot);
        }
    }

    pub(super) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_secs(1))) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_clients(),
                    WAKER => {}
                    STATUS => self.accept_status(),
                    Token(t) => {
                        let slot = t - FIRST_CONN;
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable() || event.is_write_closed();
                        match self.conns.get(slot) {
                            Some(Conn::Client(_)) => self.client_event(slot, readable, writable),
                            Some(Conn::Worker(_)) => self.worker_event(slot, readable, writable),
                            Some(Conn::Status(_)) => self.status_event(slot),
                            None => {}
                        }
                    }
                }
            }
            if self.handle_messages() {
                // A second stop: whatever is in flight is cut off, and the
                // exit status says so.
                let cut = self
                    .conns
                    .iter()
                    .filter(|(_, c)| matches!(c, Conn::Client(c) if c.ex.is_some()))
                    .count();
                self.shutdown();
                if cut > 0 {
                    return Err(io::Error::other(format!(
                        "stopped at once: {cut} request(s) in flight cut off"
                    )));
                }
                return Ok(());
            }
            self.flush_dirty();
            if self.stopping.is_some() && self.clients == 0 {
                log::info!("all requests finished");
                break;
            }
            if self.stopping.is_some_and(|d| Instant::now() >= d) {
                log::warn!(
                    "shutdown timeout: exiting with {} client(s) open",
                    self.clients
                );
                break;
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Commands, ticks and signals. True: exit now.
    fn handle_messages(&mut self) -> bool {
        while let Ok(r) = self.spill_rx.try_recv() {
            let body = r.id & super::reqbody::BODY_BIT != 0;
            let client = r.id & !super::reqbody::BODY_BIT;
            let Some(&slot) = self.client_by_id.get(&client) else {
                continue;
            };
            if body {
                self.body_read_back(slot, r.data);
                continue;
            }
            match r.data {
                Ok(data) => {
                    if let Some(c) = self.client(slot) {
                        c.out.read_back(data);
                    }
                    self.mark_dirty(slot);
                }
                Err(e) => self.spill_failed(slot, &e),
            }
        }
        let mut stop = 0;
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::SetWorkers(w) => self.set_workers(w),
                Command::UpdateSettings(s) => {
                    log::info!(
                        "pool settings: variance {}, backlog_history {}, unskilled_score {}",
                        s.variance,
                        s.backlog_history,
                        s.unskilled_score
                    );
                    self.balancer.update_settings(&s);
                }
                Command::Stop => stop += 1,
                Command::StopNow => stop += 2,
                Command::Reopen => self.cfg.access_log.reopen(),
                Command::Scrape(tx) => {
                    let _ = tx.send(self.metrics_text());
                }
            }
        }
        if let Some(signals) = &self.signals {
            while let Ok(sig) = signals.try_recv() {
                match sig {
                    SignalEvent::Stop => stop += 1,
                    SignalEvent::Reopen => self.cfg.access_log.reopen(),
                }
            }
        }
        if self.ticks.try_recv().is_ok() {
            self.tick();
        }
        if stop > 0 {
            if self.stopping.is_some() || stop > 1 {
                log::warn!("second stop request: exiting at once");
                return true;
            }
            self.start_stopping();
        }
        false
    }

    fn start_stopping(&mut self) {
        log::info!(
            "shutting down: no new connections, finishing {} client(s)",
            self.clients
        );
        self.stopping = Some(crate::util::time::after(
            Instant::now(),
            self.cfg.socket_timeout,
        ));
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.refuse_waiting();
        for slot in self.conns.keys() {
            if matches!(self.conns.get(slot), Some(Conn::Client(_))) {
                self.client_stop(slot);
            }
        }
    }

    fn shutdown(&mut self) {
        for slot in self.conns.keys() {
            match self.conns.get(slot) {
                Some(Conn::Client(_)) => self.close_client(slot, "LB shutting down"),
                Some(Conn::Worker(_)) => self.close_worker(slot, "LB shutting down"),
                _ => {
                    self.conns.remove(slot);
                }
            }
        }
        if let Some((_, path)) = self.status.take() {
            let _ = std::fs::remove_file(path);
        }
        self.cfg.access_log.flush();
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.worker_tick(now);
        self.client_tick(now);
        self.serve_waiting();
        self.trim_memory(now);
    }

    /// Give memory freed after a burst back to the system (glibc keeps it
    /// otherwise): each second while no client is connected, else every
    /// ten seconds.
    fn trim_memory(&mut self, now: Instant) {
        let every = if self.clients == 0 { 1 } else { 10 };
        if now.duration_since(self.last_trim) < Duration::from_secs(every) {
            return;
        }
        self.last_trim = now;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn flush_dirty(&mut self) {
        while !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            for slot in dirty {
                match self.conns.get(slot) {
                    Some(Conn::Client(_)) => self.client_flush(slot),
                    Some(Conn::Worker(_)) => self.worker_flush(slot),
                    _ => {}
                }
            }
        }
    }

    /// Replace the set of worker addresses: connect to new ones, drop the
    /// ones no longer listed. An address that stays keeps its connection.
    pub(super) fn set_workers(&mut self, specs: Vec<WorkerSpec>) {
        let wanted: HashMap<String, Option<String>> =
            specs.into_iter().map(|s| (s.addr, s.version)).collect();
        let gone: Vec<String> = self
            .addrs
            .keys()
            .filter(|a| !wanted.contains_key(*a))
            .cloned()
            .collect();
        for addr in gone {
            if let Some(a) = self.addrs.remove(&addr) {
                log::info!("worker {addr} removed");
                if let Some(slot) = a.slot {
                    self.unlist_worker(slot);
                }
            }
        }
        let now = Instant::now();
        for (addr, version) in wanted {
            match self.addrs.get_mut(&addr) {
                Some(a) => {
                    if a.version != version {
                        a.version = version.clone();
                        if let Some(slot) = a.slot {
                            self.relist_worker(slot, version.as_deref());
                        }
                    }
                }
                None => {
                    log::info!("worker {addr} added");
                    // Still connected from before it was removed? Keep that
                    // connection: never two to one address.
                    let open = self.conns.iter().find_map(|(slot, c)| match c {
                        Conn::Worker(w) if w.addr == addr => Some(slot),
                        _ => None,
                    });
                    self.addrs.insert(
                        addr,
                        Addr {
                            version: version.clone(),
                            slot: open,
                            retry_at: now,
                        },
                    );
                    if let Some(slot) = open {
                        self.relist_worker(slot, version.as_deref());
                    }
                }
            }
        }
        self.connect_due(now);
    }

    fn accept_clients(&mut self) {
        while self.accepting {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.add_client(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors and the like: pause until a tick.
                    log::error!("accept failed: {e}");
                    self.pause_accepting();
                    return;
                }
            }
        }
    }

    pub(super) fn pause_accepting(&mut self) {
        if !self.accepting {
            return;
        }
        self.accepting = false;
        if let Some(l) = &mut self.listener {
            let _ = self.poll.registry().deregister(l);
        }
    }

    pub(super) fn maybe_resume_accepting(&mut self) {
        if self.accepting || self.clients >= self.cfg.max_connections {
            return;
        }
        if let Some(l) = &mut self.listener {
            if self
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .is_ok()
            {
                self.accepting = true;
                // Edge-triggered: connections that queued meanwhile bring
                // no event.
                self.accept_clients();
            }
        }
    }

    fn accept_status(&mut self) {
        loop {
            let Some((l, _)) = &self.status else { return };
            match l.accept() {
                Ok((stream, _)) => {
                    let doc = self.status_document();
                    let slot = self
                        .conns
                        .insert(Conn::Status(StatusConn::new(stream, doc)));
                    if !self.register_slot(slot, Interest::WRITABLE) {
                        continue;
                    }
                    self.status_event(slot);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("status accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn status_event(&mut self, slot: usize) {
        let done = match self.conns.get_mut(slot) {
            Some(Conn::Status(s)) => s.write(),
            _ => return,
        };
        if done {
            if let Some(Conn::Status(mut s)) = self.conns.remove(slot) {
                let _ = self.poll.registry().deregister(&mut s.stream);
            }
        }
    }
}
