//! What the LB's parts share: settings, the pool, counters, the spill
//! thread, deadlines, the dirty set, and the effects queue through which
//! one part asks for something another part owns. The parts (clients,
//! workers, status) never call each other: they push an [`Effect`], and the
//! loop applies it in one place.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use mio::Registry;

use super::board::Board;
use super::htpasswd::AuthFile;
use super::metrics::Metrics;
use super::spill::SpillIo;
use super::LbConfig;
use crate::net::{Deadlines, DirtySet, Scratch};
use crate::pool::Balancer;
use crate::proto::{ResponseHead, Rno};

slotmap::new_key_type! {
    /// A client connection (its token, too).
    pub(in crate::lb) struct ClientKey;
    /// A worker connection (its token, too).
    pub(in crate::lb) struct WorkerKey;
}

/// Counters for the status document and metrics.
#[derive(Debug, Default, Clone)]
pub(super) struct Counters {
    pub(super) retries: u64,
    pub(super) bad_gateway: u64,
    pub(super) spilled_bytes: u64,
    /// Workers taken out of the pool after gateway failures.
    pub(super) ejections: u64,
}

/// A connection with output to flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Dirty {
    Client(ClientKey),
    Worker(WorkerKey),
}

/// What a deadline is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Due {
    Client(ClientKey),
    Worker(WorkerKey),
    /// A worker address's reconnect time may have come.
    Reconnect,
    /// Accepting paused after `accept` failed: try again.
    Accept,
    /// Give freed memory back to the system.
    Trim,
    /// The shutdown timeout.
    Stop,
    /// Waiting requests may go to any free worker now.
    ServeWaiting,
    /// Take rates and a history point (each `board::TICK`).
    Tick,
}

/// A worker's frame for a client's exchange.
#[derive(Debug)]
pub(super) enum Response {
    Head(ResponseHead),
    Body(Vec<u8>),
    End,
    /// The worker gave up on it (logged with this).
    Abort(&'static str),
    /// The worker connection is gone.
    Lost,
}

/// One part's request for what another part owns.
#[derive(Debug)]
pub(super) enum Effect {
    /// A complete request wants a worker (again, after a retry).
    Dispatch(ClientKey),
    /// Stop a request on its worker: its client is gone or timed out.
    Cancel(WorkerKey, Rno),
    /// The worker fell silent: send the request elsewhere if it can be
    /// sent again (then it is cancelled on the worker).
    Move(WorkerKey, Rno, ClientKey),
    /// How a request fared on its worker: a gateway failure (true) or not.
    Outcome(WorkerKey, bool),
    /// The worker's response head cannot be passed on (why): log it with
    /// the worker's address and cancel the request there.
    BadResponse(WorkerKey, Rno, &'static str),
    Response(ClientKey, Response),
    /// A request body's bytes came back from the spill file: its worker
    /// connection can take more.
    Pump(WorkerKey),
    /// A worker joined the pool (or came back to it): requests waiting for
    /// one may go.
    ServeWaiting,
}

pub(super) struct Ctx {
    pub(super) cfg: LbConfig,
    pub(super) local: SocketAddr,
    pub(super) registry: Registry,
    pub(super) balancer: Balancer,
    pub(super) counters: Counters,
    pub(super) metrics: Metrics,
    /// Events and history for the page.
    pub(super) board: Board,
    /// The observability listener's users, read again on SIGHUP.
    pub(super) auth: Option<std::sync::Arc<AuthFile>>,
    pub(super) spill_io: SpillIo,
    pub(super) dirty: DirtySet<Dirty>,
    pub(super) deadlines: Deadlines<Due>,
    pub(super) effects: VecDeque<Effect>,
    /// Shutting down, with this deadline.
    pub(super) stopping: Option<Instant>,
    /// The listener went to a new process: requests here are finished,
    /// waiting ones too, and keep-alive clients closed between requests.
    pub(super) handed_over: bool,
    /// Where sockets are read into.
    pub(super) scratch: Scratch,
    /// Pool time counts from here.
    epoch: Instant,
    next_id: u64,
}

impl Ctx {
    pub(super) fn new(
        cfg: LbConfig,
        local: SocketAddr,
        registry: Registry,
        spill_io: SpillIo,
    ) -> Ctx {
        let balancer = Balancer::new(cfg.pool, cfg.settings, cfg.single_version);
        let metrics = Metrics::new(cfg.metrics_max_classes);
        Ctx {
            cfg,
            local,
            registry,
            balancer,
            counters: Counters::default(),
            metrics,
            board: Board::default(),
            auth: None,
            spill_io,
            dirty: DirtySet::default(),
            deadlines: Deadlines::default(),
            effects: VecDeque::new(),
            stopping: None,
            handed_over: false,
            scratch: Scratch::default(),
            epoch: Instant::now(),
            next_id: 0,
        }
    }

    /// A new id (names a client's spill files).
    pub(super) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The pool's time for an instant.
    pub(super) fn pool_time(&self, t: Instant) -> crate::pool::Time {
        t.saturating_duration_since(self.epoch)
    }

    /// The pool's time now.
    pub(super) fn pool_now(&self) -> crate::pool::Time {
        self.pool_time(Instant::now())
    }

    pub(super) fn effect(&mut self, e: Effect) {
        self.effects.push_back(e);
    }
}
