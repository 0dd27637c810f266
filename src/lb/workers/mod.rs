//! The LB's worker connections: the configured addresses, connecting and
//! reconnecting, request numbers, keep-alives and the dead-worker timeout,
//! and what happens to requests in flight when a worker is lost. What the
//! worker's frames say is handled in `frames`.

mod addrs;
mod frames;
mod health;

use crate::util::intmap::IntMap;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use mio::net::TcpStream;
use slotmap::SlotMap;

use super::ctx::ClientKey;
use super::ctx::{Ctx, Dirty, Due, Effect, Response};
use super::metrics::Rate;
use super::outliers::Record;
use super::reqbody::Piece;
use super::resolver::Resolver;
use crate::net::{fired, Armed};
use crate::pool::{Ask, Done, WorkerId};
use crate::proto::{encode_body, encode_end, encode_environ, encode_null, Environ, Hello, Rno};
use crate::util::ratelog::LogLimiter;
use crate::util::time::after;
use crate::util::wbuf::WriteBuf;

pub(super) use super::ctx::WorkerKey;

/// The token kind of worker connections.
pub(super) const KIND: u8 = 2;

/// Bytes queued for a worker before request bodies wait.
const WBUF_CAP: usize = 1 << 20;

/// A request in flight on a worker connection.
struct Inflight {
    client: ClientKey,
    started: SystemTime,
    /// When it was sent, for the pool's latency sample.
    sent: Instant,
    class: Rc<str>,
    /// The response head's status, once it arrived (frames must come
    /// head, body…, end).
    status: Option<u16>,
}

/// Where a connection is in the shared-secret handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// This LB has a secret: the worker's first frame must be a challenge.
    AwaitChallenge,
    /// Answered: the worker's résumé comes next, or it closes on a wrong
    /// answer.
    Answered,
    /// Done, or no secret on either side.
    Open,
}

pub(super) struct WorkerConn {
    /// The worker's id in the pool (a new one for each connection).
    id: WorkerId,
    pub addr: String,
    stream: TcpStream,
    connected: bool,
    rbuf: Vec<u8>,
    out: WriteBuf,
    /// In the pool (its first résumé arrived).
    joined: bool,
    /// Said "drain": no new requests; closed when idle.
    draining: bool,
    /// Said "unavailable" (its application is down): out of the pool until
    /// it says "available".
    unavailable: bool,
    /// Silent with requests in flight: out of the pool until it speaks.
    silent: bool,
    /// Its gateway failures, and its ejection from the pool if any.
    outlier: Record,
    /// No longer in the worker list: out of the pool, closed when idle
    /// (or back in the pool if listed again meanwhile).
    unlisted: bool,
    /// Its latest résumé.
    resume: crate::proto::Resume,
    /// Requests it answered (or failed) on this connection, and of those
    /// the 5xx responses and aborts.
    answered: u64,
    errors: u64,
    /// Times it was ejected while this connection was open.
    ejections: u64,
    /// Its requests per second.
    rate: Rate,
    pub hello: Option<Hello>,
    handshake: Handshake,
    /// Refused by this LB (its warning is out): no other warning on close.
    refused: bool,
    next_rno: Rno,
    inflight: IntMap<Rno, Inflight>,
    /// Requests whose body is still to be sent, in order.
    sending: VecDeque<Rno>,
    last_read: Instant,
    keepalive_at: Instant,
    armed: Armed,
}

impl WorkerConn {
    pub(super) fn unsent(&self) -> usize {
        self.out.unsent()
    }

    /// When the oldest request in flight was sent.
    pub(super) fn oldest(&self) -> Option<SystemTime> {
        self.inflight.values().map(|f| f.started).min()
    }

    /// In the pool and taking requests.
    pub(super) fn is_up(&self) -> bool {
        self.joined && !self.draining && !self.held_out()
    }

    /// Out of the pool for now, though it would serve: unavailable, or
    /// ejected after failures.
    fn held_out(&self) -> bool {
        self.unavailable || self.silent || self.outlier.ejected_until().is_some()
    }

    /// Joined, listed and not draining, but held out of the pool.
    pub(super) fn is_held_out(&self) -> bool {
        self.joined && self.held_out() && !self.draining && !self.unlisted
    }

    /// Said its application is unavailable.
    pub(super) fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// Held out for its silence.
    pub(super) fn is_silent(&self) -> bool {
        self.silent
    }

    /// Ejected after gateway failures, until then.
    pub(super) fn ejected_until(&self) -> Option<Instant> {
        self.outlier.ejected_until()
    }

    /// Classes in its latest résumé.
    pub(super) fn resume_size(&self) -> usize {
        self.resume.len()
    }

    /// Into the pool with `resume`, its name and capacity said first (a
    /// capacity-aware pool bounds its requests by its threads).
    pub(super) fn join_pool(
        &self,
        version: Option<&str>,
        resume: crate::proto::Resume,
        ctx: &mut Ctx,
    ) {
        let threads = self.hello.as_ref().and_then(|h| h.threads).unwrap_or(1);
        ctx.balancer.describe(self.id, &self.addr, threads as usize);
        ctx.balancer.new_resume(self.id, version, resume);
    }

    /// The pool's name for it.
    pub(super) fn id(&self) -> WorkerId {
        self.id
    }

    /// Requests in flight on it.
    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Requests answered on this connection, those that failed (5xx or
    /// aborted), its ejections, and its requests per second.
    pub(super) fn counts(&self) -> (u64, u64, u64, f64) {
        (
            self.answered,
            self.errors,
            self.ejections,
            self.rate.per_second(),
        )
    }

    /// Its score for `class` in its latest résumé.
    pub(super) fn score(&self, class: &str) -> Option<f64> {
        self.resume.get(class).copied()
    }

    /// For the page: available, unavailable, ejected or draining, and why
    /// when that is not all there is to say.
    pub(super) fn state(&self) -> (&'static str, Option<&'static str>) {
        if self.draining {
            ("draining", Some("the worker is draining"))
        } else if self.unlisted {
            ("draining", Some("removed from the worker list"))
        } else if !self.connected {
            ("unavailable", Some("connecting"))
        } else if !self.joined {
            ("unavailable", Some("waiting for its résumé"))
        } else if self.unavailable {
            ("unavailable", Some("its application is unavailable"))
        } else if self.silent {
            ("unavailable", Some("silent with requests in flight"))
        } else if self.outlier.ejected_until().is_some() {
            ("ejected", Some("gateway failures in a row"))
        } else {
            ("available", None)
        }
    }

    /// The next free request number (1 … 2³²−1, wrapping, never in flight).
    fn take_rno(&mut self) -> Rno {
        loop {
            self.next_rno = self.next_rno.wrapping_add(1);
            if self.next_rno != 0 && !self.inflight.contains_key(&self.next_rno) {
                return self.next_rno;
            }
        }
    }
}

/// A configured worker address.
struct Addr {
    version: Option<String>,
    /// Its connection, if one is open or opening.
    conn: Option<WorkerKey>,
    retry_at: Instant,
    /// Its name is being resolved.
    resolving: bool,
}

pub(super) struct Workers {
    map: SlotMap<WorkerKey, WorkerConn>,
    by_id: IntMap<WorkerId, WorkerKey>,
    addrs: HashMap<String, Addr>,
    resolver: Resolver,
    /// Workers that cannot be reached, do not speak the protocol or fail
    /// the handshake, by address and reason: one log line a minute each
    /// (they are retried about once a second).
    log: LogLimiter<(String, &'static str)>,
    /// The reconnect deadline in the heap.
    reconnect: Armed,
}

impl Workers {
    pub(super) fn new(resolver: Resolver) -> Workers {
        Workers {
            map: SlotMap::with_key(),
            by_id: IntMap::default(),
            addrs: HashMap::new(),
            resolver,
            log: LogLimiter::new(std::time::Duration::from_secs(60)),
            reconnect: Armed::default(),
        }
    }

    pub(super) fn keys(&self) -> Vec<WorkerKey> {
        self.map.keys().collect()
    }

    /// Once a `board::TICK` (`secs` since the last): request rates.
    pub(super) fn tick(&mut self, secs: f64) {
        for w in self.map.values_mut() {
            w.rate.tick(w.answered, secs);
        }
    }

    /// Requests in flight on all workers.
    pub(super) fn in_flight(&self) -> usize {
        self.map.values().map(|w| w.inflight.len()).sum()
    }

    /// Every worker the page shows, by address: each connection, and each
    /// configured address without one.
    pub(super) fn listing(&self) -> Vec<(&str, Option<&WorkerConn>)> {
        let mut all: Vec<(&str, Option<&WorkerConn>)> = self
            .map
            .values()
            .map(|w| (w.addr.as_str(), Some(w)))
            .collect();
        for (addr, a) in &self.addrs {
            if a.conn.is_none_or(|k| !self.map.contains_key(k)) {
                all.push((addr, None));
            }
        }
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// The connection the pool knows as `id`.
    pub(super) fn by_id(&self, id: WorkerId) -> Option<&WorkerConn> {
        self.map.get(*self.by_id.get(&id)?)
    }

    /// Every configured address, and whether its worker is in the pool.
    pub(super) fn addresses(&self) -> impl Iterator<Item = (&str, bool)> {
        self.addrs.iter().map(|(addr, a)| {
            let up = a
                .conn
                .and_then(|k| self.map.get(k))
                .is_some_and(|w| w.is_up());
            (addr.as_str(), up)
        })
    }

    /// A worker for a request from the pool.
    pub(super) fn pick(&mut self, ask: &Ask, ctx: &mut Ctx) -> Option<WorkerKey> {
        loop {
            let id = ctx.balancer.get(ask)?;
            match self.by_id.get(&id) {
                Some(&key) if self.map.get(key).is_some_and(|w| w.is_up()) => return Some(key),
                _ => {
                    // Should not happen: the pool and the connections disagree.
                    log::error!("pool chose unknown worker {id:?}; removing it");
                    ctx.balancer
                        .put(id, &Done::without_sample(ask.class, ask.now));
                    ctx.balancer.remove(id);
                }
            }
        }
    }

    /// Give back a worker [`Workers::pick`] chose for `class`, unused.
    pub(super) fn unpick(&mut self, key: WorkerKey, class: &str, ctx: &mut Ctx) {
        if let Some(w) = self.map.get(key) {
            let done = Done::without_sample(class, ctx.pool_now());
            ctx.balancer.put(w.id, &done);
        }
    }

    /// Queue a request's environ (and its end, if it has no body) on a
    /// worker chosen by [`Workers::pick`]: its request number.
    pub(super) fn send(
        &mut self,
        key: WorkerKey,
        client: ClientKey,
        class: Rc<str>,
        environ: &Environ,
        has_body: bool,
        ctx: &mut Ctx,
    ) -> Option<Rno> {
        let w = self.map.get_mut(key)?;
        let rno = w.take_rno();
        w.inflight.insert(
            rno,
            Inflight {
                client,
                started: SystemTime::now(),
                sent: Instant::now(),
                class,
                status: None,
            },
        );
        let pairs = environ.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if let Err(e) = encode_environ(w.out.buf(), rno, pairs) {
            log::error!("cannot encode a request: {e}");
        }
        if has_body {
            w.sending.push_back(rno);
        } else {
            encode_end(w.out.buf(), rno);
        }
        ctx.dirty.mark(Dirty::Worker(key));
        Some(rno)
    }

    /// The request whose body goes next, and its client, while the
    /// connection has room for more.
    pub(super) fn body_wanted(&self, key: WorkerKey) -> Option<(Rno, ClientKey)> {
        let w = self.map.get(key)?;
        if w.unsent() >= WBUF_CAP {
            return None;
        }
        let rno = *w.sending.front()?;
        let client = w.inflight.get(&rno)?.client;
        Some((rno, client))
    }

    /// Queue the next piece of request `rno`'s body (`None`: its client is
    /// gone). False when the piece is being read back from disk.
    pub(super) fn body_piece(&mut self, key: WorkerKey, rno: Rno, piece: Option<Piece>) -> bool {
        let Some(w) = self.map.get_mut(key) else {
            return true;
        };
        match piece {
            None => {
                w.sending.retain(|&r| r != rno);
            }
            Some(Piece::Done) => {
                encode_end(w.out.buf(), rno);
                w.sending.pop_front();
            }
            Some(Piece::Data(d)) => encode_body(w.out.buf(), rno, &d),
            Some(Piece::Pending) => return false,
        }
        true
    }

    /// Cancel a request on its worker (the client went away or timed out).
    pub(super) fn cancel(&mut self, key: WorkerKey, rno: Rno, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        let Some(f) = w.inflight.remove(&rno) else {
            return;
        };
        w.sending.retain(|&r| r != rno);
        encode_null(w.out.buf(), rno);
        ctx.balancer
            .put(w.id, &Done::without_sample(&f.class, ctx.pool_now()));
        // A slot is free: a request waiting for one may take it.
        ctx.effect(Effect::ServeWaiting);
        ctx.dirty.mark(Dirty::Worker(key));
        self.close_if_drained(key, ctx);
    }

    fn close_if_drained(&mut self, key: WorkerKey, ctx: &mut Ctx) {
        if let Some(w) = self.map.get(key) {
            if (w.draining || w.unlisted) && w.inflight.is_empty() {
                let why = if w.draining {
                    "drained"
                } else {
                    "removed from the worker list"
                };
                self.close(key, why, ctx);
            }
        }
    }

    /// The address is no longer listed: no new requests; close when idle.
    fn unlist(&mut self, key: WorkerKey, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        if !w.unlisted {
            w.unlisted = true;
            ctx.balancer.remove(w.id);
        }
        self.close_if_drained(key, ctx);
    }

    /// The address is listed again while its connection is still open:
    /// back into the pool with its latest résumé.
    pub(super) fn relist(&mut self, key: WorkerKey, version: Option<&str>, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        w.unlisted = false;
        if w.is_up() {
            w.join_pool(version, w.resume.clone(), ctx);
            ctx.effect(Effect::ServeWaiting);
        }
    }

    /// Close a worker connection. Requests in flight end at once: their
    /// clients hear that the worker is lost.
    pub(super) fn close(&mut self, key: WorkerKey, why: &str, ctx: &mut Ctx) {
        let Some(mut w) = self.map.remove(key) else {
            return;
        };
        let _ = ctx.registry.deregister(&mut w.stream);
        self.by_id.remove(&w.id);
        if w.joined {
            log::info!("worker {} disconnected: {why}", w.addr);
            ctx.board
                .event("left", Some(&w.addr), format!("disconnected: {why}"));
        } else {
            log::debug!("worker {}: {why}", w.addr);
            // Not when this LB closes it (shutting down, or the worker is no
            // longer listed), nor after a refusal, which said why already.
            let warn = !w.refused && !w.unlisted && ctx.stopping.is_none();
            if warn && w.connected {
                let msg = format!(
                    "no résumé from worker {} ({why}): is it a resumelb worker?",
                    w.addr
                );
                self.warn(&w.addr, "no résumé", &msg);
            } else if warn {
                let msg = format!(
                    "worker {} cannot be reached ({why}); retrying about once a second",
                    w.addr
                );
                self.warn(&w.addr, "unreachable", &msg);
            }
        }
        let now = ctx.pool_now();
        for (_, f) in w.inflight.drain() {
            ctx.balancer.put(w.id, &Done::without_sample(&f.class, now));
            ctx.effect(Effect::Response(f.client, Response::Lost));
        }
        ctx.balancer.remove(w.id);
        let retry = after(Instant::now(), ctx.cfg.reconnect_interval);
        if let Some(a) = self.addrs.get_mut(&w.addr) {
            if a.conn == Some(key) {
                a.conn = None;
                a.retry_at = retry;
            }
        }
        self.arm_reconnect(ctx);
    }

    /// Write what is queued; ask for more request body if there is room
    /// (unless a body is being read back from disk: that asks when done).
    pub(super) fn flush(&mut self, key: WorkerKey, reading_back: bool, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        if !w.connected {
            return;
        }
        match w.out.flush_to(&mut w.stream) {
            Err(e) => self.close(key, &format!("write failed: {e}"), ctx),
            Ok(n) => {
                if n > 0 {
                    w.keepalive_at = after(Instant::now(), ctx.cfg.keepalive);
                }
                // Room again: more request bodies can go.
                if !reading_back && !w.sending.is_empty() && w.unsent() < WBUF_CAP {
                    ctx.effect(Effect::Pump(key));
                }
            }
        }
    }

    /// Make sure the connection's next deadline is in the heap.
    pub(super) fn arm(&mut self, key: WorkerKey, ctx: &mut Ctx) {
        if let Some(w) = self.map.get_mut(key) {
            let at = w.deadline(ctx);
            ctx.deadlines.arm(&mut w.armed, at, Due::Worker(key));
        }
    }

    /// Keep-alives, and the dead-worker (or connect) timeout.
    pub(super) fn on_deadline(&mut self, key: WorkerKey, at: Instant, now: Instant, ctx: &mut Ctx) {
        let Some(w) = fired(&mut self.map, key, at, |w| &mut w.armed) else {
            return;
        };
        if now >= after(w.last_read, ctx.cfg.dead_worker_timeout) {
            let why = if w.connected {
                "dead-worker timeout"
            } else {
                "connect timeout"
            };
            // A worker that never joined is warned about as it closes.
            if w.joined {
                log::warn!("worker {}: {why}", w.addr);
            }
            self.close(key, why, ctx);
            return;
        }
        if !w.silent && !w.inflight.is_empty() && now >= after(w.last_read, ctx.cfg.silent_worker) {
            self.fell_silent(key, ctx);
        }
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        if w.outlier.end_if_due(now) {
            log::info!("worker {}: ejection over, back in the pool", w.addr);
            let text = "ejection over, back in the pool".to_string();
            ctx.board.event("back", Some(&w.addr), text);
            if !w.unlisted {
                let version = self.addrs.get(&w.addr).and_then(|a| a.version.clone());
                self.relist(key, version.as_deref(), ctx);
            }
        }
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        if now >= w.keepalive_at {
            // No keep-alive before the handshake is done: the worker takes
            // nothing but the answer to its challenge until then.
            if w.connected && w.handshake == Handshake::Open && w.unsent() == 0 {
                encode_null(w.out.buf(), 0);
                ctx.dirty.mark(Dirty::Worker(key));
            }
            w.keepalive_at = after(now, ctx.cfg.keepalive);
        }
        self.arm(key, ctx);
    }
}

impl Workers {
    /// Nothing heard from the worker for the silent-worker time while it
    /// has requests: it takes no new ones until it speaks, and those it has
    /// not begun to answer go elsewhere where they can (cancelled here).
    fn fell_silent(&mut self, key: WorkerKey, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        let was_up = w.is_up();
        w.silent = true;
        log::warn!(
            "worker {}: nothing heard for {:.1} s with {} request(s) in flight; no new \
             requests until it speaks, and those it has not begun to answer go elsewhere",
            w.addr,
            ctx.cfg.silent_worker.as_secs_f64(),
            w.inflight.len()
        );
        let text = format!(
            "nothing heard for {:.1} s with {} request(s) in flight",
            ctx.cfg.silent_worker.as_secs_f64(),
            w.inflight.len()
        );
        ctx.board.event("silent", Some(&w.addr), text);
        if was_up {
            ctx.balancer.hold(w.id);
        }
        if ctx.balancer.is_empty() {
            // No other worker could take them: they wait for this one.
            return;
        }
        for (&rno, f) in &w.inflight {
            if f.status.is_none() {
                ctx.effect(Effect::Move(key, rno, f.client));
            }
        }
    }

    /// A silent worker spoke: back into the pool, unless held out for
    /// another reason.
    pub(super) fn heard_again(&mut self, key: WorkerKey, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        if !std::mem::take(&mut w.silent) {
            return;
        }
        log::info!("worker {} speaks again: back in the pool", w.addr);
        let text = "speaks again, back in the pool".to_string();
        ctx.board.event("back", Some(&w.addr), text);
        if !w.unlisted {
            let version = self.addrs.get(&w.addr).and_then(|a| a.version.clone());
            self.relist(key, version.as_deref(), ctx);
        }
    }
}

impl WorkerConn {
    fn deadline(&self, ctx: &Ctx) -> Instant {
        let mut due = after(self.last_read, ctx.cfg.dead_worker_timeout).min(self.keepalive_at);
        if !self.silent && !self.inflight.is_empty() {
            due = due.min(after(self.last_read, ctx.cfg.silent_worker));
        }
        self.ejected_until().map_or(due, |t| due.min(t))
    }
}
