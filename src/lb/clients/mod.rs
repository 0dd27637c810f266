//! The LB's client connections: reading and checking requests, passing
//! complete ones to the loop for a worker, writing responses in order,
//! timeouts, and closing. What a worker's frames do to an exchange, and
//! the LB's own answers, are in `respond`; the exchange's states are in
//! `super::exchange`.

mod read;
mod respond;
mod waiting;

use crate::util::intmap::IntMap;
use read::{read_body, start_request, Reading, Step};

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use mio::net::TcpStream;
use slotmap::{Key, SlotMap};

use super::access;
use super::ctx::WorkerKey;
use super::ctx::{Ctx, Dirty, Due, Effect};
use super::exchange::{Exchange, Expiry};
use super::outbuf::OutBuf;
use super::reqbody::{Piece, ReqBody};
use crate::http::request::{Limits, RequestHead};
use crate::http::HttpError;
use crate::net::{fired, read_chunk, register_conn, Armed, Chunk, READ_CHUNK};
use crate::proto::{Environ, Rno};
use crate::util::time::after;

pub(super) use super::ctx::ClientKey;

/// The token kind of client connections.
pub(super) const KIND: u8 = 1;

/// Response bytes waiting for a client before its next request is read.
const OUT_LIMIT: u64 = 1 << 20;

/// After a hand-over, how long an idle keep-alive client has to send one
/// more request before its connection is closed.
const HANDOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) const NO_WORKER_AT_SHUTDOWN: HttpError = HttpError {
    status: 503,
    why: "no worker is available and the load balancer is shutting down",
};

/// A request being read or served, and its exchange.
struct Request {
    head: RequestHead,
    class: Rc<str>,
    environ: Environ,
    reading: Reading,
    body: ReqBody,
    started: Instant,
    wall: SystemTime,
    ex: Exchange<WorkerKey>,
}

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// Names its spill files (responses, and request bodies).
    spill_id: u64,
    rbuf: Vec<u8>,
    out: OutBuf,
    /// Boxed: an idle connection (most of them, with many clients) then
    /// takes a third of the memory.
    req: Option<Box<Request>>,
    /// No more requests: close once the output is out.
    close_after: bool,
    /// Close with a reset (the response is incomplete).
    reset: bool,
    last_read: Instant,
    last_write: Instant,
    /// When the request head now arriving began: the whole head must come
    /// within the socket timeout, however slowly it trickles.
    head_started: Option<Instant>,
    /// Access log lines waiting for their response to be sent.
    log_lines: access::Pending,
    /// Closed if still idle then (after a hand-over).
    idle_until: Option<Instant>,
    armed: Armed,
}

/// What a client's deadline does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Timeout {
    Close(&'static str),
    Exchange(Expiry),
    /// The request head did not come in time.
    Head,
}

impl Client {
    /// The client's next deadline and what it does then.
    fn deadline(&self, limit: std::time::Duration) -> (Instant, Timeout) {
        let stage = match &self.req {
            Some(r) => {
                let (at, what) = r.ex.deadline(limit, self.last_read);
                Some((at, Timeout::Exchange(what)))
            }
            None => self.head_started.map(|t| (after(t, limit), Timeout::Head)),
        };
        let write = (!self.out.is_empty()).then(|| {
            (
                after(self.last_write, limit),
                Timeout::Close("write timeout"),
            )
        });
        let idle = match self.idle_until {
            Some(t) if t < after(self.last_read, limit) => (t, Timeout::Close("LB handed over")),
            _ => (after(self.last_read, limit), Timeout::Close("idle timeout")),
        };
        match (stage, write) {
            (Some(s), Some(w)) if w.0 <= s.0 => w,
            (Some(s), _) => s,
            (None, Some(w)) => w,
            (None, None) => idle,
        }
    }
}

fn rbuf_limit() -> usize {
    Limits::default().max_head + READ_CHUNK
}

#[derive(Default)]
pub(super) struct Clients {
    map: SlotMap<ClientKey, Client>,
    by_spill_id: IntMap<u64, ClientKey>,
    /// Requests waiting for a worker.
    waiting: crate::pool::waiting::Queues<ClientKey>,
}

impl Clients {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Exchanges in progress (cut off by an exit at once).
    pub(super) fn in_flight(&self) -> usize {
        self.map.values().filter(|c| c.req.is_some()).count()
    }

    pub(super) fn keys(&self) -> Vec<ClientKey> {
        self.map.keys().collect()
    }

    pub(super) fn add(&mut self, stream: TcpStream, peer: SocketAddr, ctx: &mut Ctx) {
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let spill_id = ctx.new_id();
        let key = self.map.insert(Client {
            stream,
            peer,
            spill_id,
            rbuf: Vec::new(),
            out: OutBuf::new(ctx.cfg.client_mem_cap, ctx.spill_io.clone(), spill_id),
            req: None,
            close_after: false,
            idle_until: None,
            reset: false,
            last_read: now,
            last_write: now,
            head_started: None,
            log_lines: access::Pending::default(),
            armed: Armed::default(),
        });
        let c = &mut self.map[key];
        if !register_conn(&ctx.registry, &mut c.stream, KIND, key.data(), &peer) {
            self.map.remove(key);
            return;
        }
        self.by_spill_id.insert(spill_id, key);
        self.pull(key, ctx);
    }

    pub(super) fn event(&mut self, key: ClientKey, readable: bool, writable: bool, ctx: &mut Ctx) {
        if readable {
            self.pull(key, ctx);
        }
        if writable {
            ctx.dirty.mark(Dirty::Client(key));
        }
    }

    /// Parse what has arrived, then read more while more is wanted.
    fn pull(&mut self, key: ClientKey, ctx: &mut Ctx) {
        loop {
            self.advance(key, ctx);
            let Some(c) = self.map.get_mut(key) else {
                return;
            };
            if c.close_after || c.rbuf.len() >= rbuf_limit() {
                break;
            }
            match read_chunk(&mut c.stream, &mut c.rbuf, &mut ctx.scratch) {
                Chunk::Data => {
                    c.last_read = Instant::now();
                    if c.req.is_none() && c.head_started.is_none() {
                        c.head_started = Some(c.last_read);
                    }
                }
                Chunk::Empty => break,
                Chunk::Closed => {
                    self.eof(key, ctx);
                    return;
                }
                Chunk::Failed(e) => {
                    self.close(key, &format!("read failed: {e}"), ctx);
                    return;
                }
            }
        }
        self.arm(key, ctx);
    }

    fn eof(&mut self, key: ClientKey, ctx: &mut Ctx) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        if c.req.is_some() {
            self.close(key, "client closed the connection mid-request", ctx);
        } else if c.out.is_empty() {
            self.close(key, "client closed the connection", ctx);
        } else {
            c.close_after = true;
        }
    }

    /// Move the connection's state on with the bytes it has.
    fn advance(&mut self, key: ClientKey, ctx: &mut Ctx) {
        loop {
            let Some(c) = self.map.get_mut(key) else {
                return;
            };
            if c.close_after {
                return;
            }
            let step = match (&mut c.req, &mut c.rbuf) {
                (None, _) => start_request(c, ctx),
                (Some(r), rbuf) if r.ex.phase() == super::exchange::Phase::Body => {
                    read_body(rbuf, r)
                }
                (Some(_), _) => return,
            };
            match step {
                // A new request: a "100 Continue" may be waiting to go.
                Step::More => ctx.dirty.mark(Dirty::Client(key)),
                Step::Wait => return,
                Step::Complete => {
                    ctx.dirty.mark(Dirty::Client(key));
                    ctx.effect(Effect::Dispatch(key));
                    return;
                }
                Step::Refuse(e) => {
                    log::debug!("refused request from {}: {e}", c.peer);
                    self.refuse(key, e, ctx);
                    return;
                }
            }
        }
    }

    /// The class of a request ready for a worker.
    pub(super) fn class(&self, key: ClientKey) -> Option<&Rc<str>> {
        let r = self.map.get(key)?.req.as_ref()?;
        Some(&r.class)
    }

    /// Whether the request is on `worker` as `rno`, unanswered, and may be
    /// sent again.
    pub(super) fn movable(&self, key: ClientKey, worker: WorkerKey, rno: Rno) -> bool {
        self.map
            .get(key)
            .and_then(|c| c.req.as_ref())
            .is_some_and(|r| r.ex.movable(worker, rno))
    }

    /// The request goes to the pool: its environ to send, and whether it
    /// has a body to follow.
    pub(super) fn dispatching(&mut self, key: ClientKey) -> Option<(&Environ, bool)> {
        let r = self.map.get_mut(key)?.req.as_mut()?;
        r.ex.dispatching(Instant::now());
        Some((&r.environ, r.ex.body_len() > 0))
    }

    /// Sent to a worker as request `rno`.
    pub(super) fn sent(&mut self, key: ClientKey, worker: WorkerKey, rno: Rno, ctx: &mut Ctx) {
        if let Some(r) = self.map.get_mut(key).and_then(|c| c.req.as_mut()) {
            r.ex.sent(worker, rno, Instant::now());
            r.body.rewind();
        }
        self.arm(key, ctx);
    }

    /// The next piece of a request's body for its worker (`None`: the
    /// request is gone).
    pub(super) fn body_piece(&mut self, key: ClientKey, max: usize) -> Option<Piece> {
        let r = self.map.get_mut(key)?.req.as_mut()?;
        Some(r.body.next_piece(max))
    }

    /// The spill thread read back bytes for the client with `spill_id`
    /// (a request body's when `body`).
    pub(super) fn read_back(
        &mut self,
        spill_id: u64,
        body: bool,
        data: std::io::Result<Vec<u8>>,
        ctx: &mut Ctx,
    ) {
        let Some(&key) = self.by_spill_id.get(&spill_id) else {
            return;
        };
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        match (data, body) {
            (Ok(d), false) => {
                c.out.read_back(d);
                ctx.dirty.mark(Dirty::Client(key));
            }
            (Ok(d), true) => {
                let Some(r) = c.req.as_mut() else { return };
                if let Some((worker, _)) = r.ex.on_worker() {
                    r.body.read_back(d);
                    ctx.effect(Effect::Pump(worker));
                }
            }
            (Err(e), false) => {
                log::error!("cannot read back a spilled response: {e}");
                c.reset = true;
                self.close(key, "spill file failed", ctx);
            }
            (Err(e), true) => {
                log::error!("cannot read back a buffered request body: {e}");
                if let Some((worker, rno)) = c.req.as_ref().and_then(|r| r.ex.on_worker()) {
                    ctx.effect(Effect::Cancel(worker, rno));
                }
                self.refuse(key, respond::BUFFER_FAILED, ctx);
            }
        }
    }

    pub(super) fn flush(&mut self, key: ClientKey, ctx: &mut Ctx) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        match c.out.write_to(&mut c.stream) {
            Ok(n) => {
                if n > 0 {
                    c.last_write = Instant::now();
                    self.write_delivered(key, ctx);
                }
                let Some(c) = self.map.get_mut(key) else {
                    return;
                };
                if c.out.is_empty() {
                    if c.close_after {
                        self.close(key, "done", ctx);
                        return;
                    } else if c.req.is_none() && !c.rbuf.is_empty() {
                        // Output had held back the next pipelined request.
                        self.pull(key, ctx);
                        return;
                    }
                }
                self.arm(key, ctx);
            }
            Err(e) => self.close(key, &format!("write failed: {e}"), ctx),
        }
    }

    /// Close a connection; an exchange on a worker is cancelled there.
    pub(super) fn close(&mut self, key: ClientKey, why: &str, ctx: &mut Ctx) {
        let Some(mut c) = self.map.remove(key) else {
            return;
        };
        log::debug!("client {} closed: {why}", c.peer);
        self.by_spill_id.remove(&c.spill_id);
        let req = c.req.take();
        if let Some((worker, rno)) = req.as_ref().and_then(|r| r.ex.cancel_when_gone()) {
            ctx.effect(Effect::Cancel(worker, rno));
        }
        let _ = ctx.registry.deregister(&mut c.stream);
        if c.reset {
            crate::util::net::set_linger_zero(&c.stream);
        }
        ctx.counters.spilled_bytes += c.out.spilled;
        let mut lines = c.log_lines.all();
        if let Some(r) = req {
            // Still counted and logged: with the status it had begun with,
            // or 499 (nginx's "client closed request") if none.
            let status = match r.ex.status() {
                0 => 499,
                s => s,
            };
            lines.push(respond::line(
                c.peer,
                &r,
                status,
                ctx.cfg.access_log.is_enabled(),
            ));
        }
        respond::write_lines(lines, ctx);
    }

    /// Shutting down: idle connections close now (after a hand-over,
    /// once idle for [`HANDOVER_GRACE`] more), busy ones after their
    /// response.
    pub(super) fn stop(&mut self, ctx: &mut Ctx) {
        let grace = Instant::now() + HANDOVER_GRACE;
        for key in self.keys() {
            let Some(c) = self.map.get_mut(key) else {
                continue;
            };
            match c.req.as_mut() {
                Some(r) => r.ex.ask.keep_alive = false,
                // After a hand-over, an idle client may have a request on
                // its way: it is answered (with Connection: close) if it
                // comes within the grace.
                None if ctx.handed_over => {
                    c.idle_until = Some(grace);
                    self.arm(key, ctx);
                }
                None => {
                    c.close_after = true;
                    if c.out.is_empty() {
                        self.close(key, "LB shutting down", ctx);
                    }
                }
            }
        }
    }

    /// Make sure the client's next deadline is in the heap.
    pub(super) fn arm(&mut self, key: ClientKey, ctx: &mut Ctx) {
        if let Some(c) = self.map.get_mut(key) {
            let (at, _) = c.deadline(ctx.cfg.socket_timeout);
            ctx.deadlines.arm(&mut c.armed, at, Due::Client(key));
        }
    }

    /// A deadline entry for the client came due: act if its time has come
    /// (activity may have moved it), else arm again.
    pub(super) fn on_deadline(&mut self, key: ClientKey, at: Instant, now: Instant, ctx: &mut Ctx) {
        let Some(c) = fired(&mut self.map, key, at, |c| &mut c.armed) else {
            return;
        };
        let (due, what) = c.deadline(ctx.cfg.socket_timeout);
        if due > now {
            self.arm(key, ctx);
            return;
        }
        if let Some((worker, rno)) = c.req.as_ref().and_then(|r| r.ex.on_worker()) {
            if !matches!(what, Timeout::Close(_)) {
                ctx.effect(Effect::Cancel(worker, rno));
            }
        }
        match what {
            Timeout::Close(why) => self.close(key, why, ctx),
            Timeout::Head | Timeout::Exchange(Expiry::Status(408)) => {
                let why = "the request did not arrive in time";
                self.refuse(key, HttpError { status: 408, why }, ctx);
            }
            Timeout::Exchange(Expiry::Status(503)) => {
                let why = "no worker became available in time";
                self.refuse(key, HttpError { status: 503, why }, ctx);
            }
            Timeout::Exchange(Expiry::Status(status)) => {
                let why = "the worker did not answer in time";
                self.refuse(key, HttpError { status, why }, ctx);
            }
            Timeout::Exchange(Expiry::Cut) => self.cut(key, ctx),
        }
    }
}
