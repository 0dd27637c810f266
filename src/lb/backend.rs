//! The LB's side of worker connections: connect and reconnect, keep-alives,
//! the dead-worker timeout, request numbers, routing response frames to
//! clients, and what happens to requests in flight when a worker is lost.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::time::{Instant, SystemTime};

use mio::net::TcpStream;
use mio::Interest;

use super::io::{Conn, Loop};
use crate::pool::WorkerId;
use crate::proto::{encode_auth, encode_null, Decoded, Hello, Rno, ToLb, DEFAULT_MAX_FRAME};
use crate::util::ratelog::held_back;
use crate::util::wbuf::WriteBuf;
use crate::worker::resolve;

/// Bytes queued for a worker before request bodies wait.
pub(super) const WBUF_CAP: usize = 1 << 20;
const READ_CHUNK: usize = 64 * 1024;

/// A request in flight on a worker connection.
pub(super) struct Inflight {
    pub client_slot: usize,
    pub client_id: u64,
    pub started: SystemTime,
    /// The response head arrived (frames must come head, body…, end).
    pub head: bool,
}

/// Where a connection is in the shared-secret handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handshake {
    /// This LB has a secret: the worker's first frame must be a challenge.
    AwaitChallenge,
    /// Answered: the worker's résumé comes next, or it closes on a wrong
    /// answer.
    Answered,
    /// Done, or no secret on either side.
    Open,
}

pub(super) struct WorkerConn {
    /// Unique per connection; also the worker's id in the pool.
    pub id: u64,
    pub addr: String,
    pub stream: TcpStream,
    pub connected: bool,
    rbuf: Vec<u8>,
    pub out: WriteBuf,
    /// In the pool (its first résumé arrived).
    pub joined: bool,
    /// Said "drain": no new requests; closed when idle.
    pub draining: bool,
    /// No longer in the worker list: out of the pool, closed when idle
    /// (or back in the pool if listed again meanwhile).
    pub unlisted: bool,
    /// Its latest résumé.
    pub resume: crate::proto::Resume,
    pub hello: Option<Hello>,
    pub handshake: Handshake,
    /// Refused by this LB (its warning is out): no other warning on close.
    refused: bool,
    next_rno: Rno,
    pub inflight: HashMap<Rno, Inflight>,
    /// Requests whose body is still to be sent, in order.
    pub sending: VecDeque<Rno>,
    last_read: Instant,
    last_write: Instant,
}

impl WorkerConn {
    pub(super) fn unsent(&self) -> usize {
        self.out.unsent()
    }

    pub(super) fn has_room(&self) -> bool {
        self.unsent() < WBUF_CAP
    }

    /// The next free request number (1 … 2³²−1, wrapping, never in flight).
    pub(super) fn take_rno(&mut self) -> Rno {
        loop {
            self.next_rno = self.next_rno.wrapping_add(1);
            if self.next_rno != 0 && !self.inflight.contains_key(&self.next_rno) {
                return self.next_rno;
            }
        }
    }

    pub(super) fn wid(&self) -> WorkerId {
        WorkerId(self.id)
    }
}

impl Loop {
    pub(super) fn worker(&mut self, slot: usize) -> Option<&mut WorkerConn> {
        match self.conns.get_mut(slot) {
            Some(Conn::Worker(w)) => Some(w),
            _ => None,
        }
    }

    /// Open connections to configured addresses that have none and whose
    /// retry time has come.
    pub(super) fn connect_due(&mut self, now: Instant) {
        if self.stopping.is_some() {
            return;
        }
        let due: Vec<String> = self
            .addrs
            .iter()
            .filter(|(_, a)| a.slot.is_none() && a.retry_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for addr in due {
            let retry = crate::util::time::after(now, self.cfg.reconnect_interval);
            let sa = match resolve(&addr) {
                Ok(sa) => sa,
                Err(e) => {
                    self.warn_worker(&addr, "unresolvable", &format!("worker {addr}: {e}"));
                    if let Some(a) = self.addrs.get_mut(&addr) {
                        a.retry_at = retry;
                    }
                    continue;
                }
            };
            let stream = match TcpStream::connect(sa) {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("worker {addr}: connect failed: {e}");
                    let msg = format!(
                        "worker {addr} cannot be reached (connect failed: {e}); \
                         retrying about once a second"
                    );
                    self.warn_worker(&addr, "unreachable", &msg);
                    if let Some(a) = self.addrs.get_mut(&addr) {
                        a.retry_at = retry;
                    }
                    continue;
                }
            };
            let id = self.new_id();
            let slot = self.conns.insert(Conn::Worker(Box::new(WorkerConn {
                id,
                addr: addr.clone(),
                stream,
                connected: false,
                rbuf: Vec::new(),
                out: WriteBuf::new(),
                joined: false,
                draining: false,
                unlisted: false,
                resume: crate::proto::Resume::new(),
                hello: None,
                handshake: if self.cfg.secret.is_some() {
                    Handshake::AwaitChallenge
                } else {
                    Handshake::Open
                },
                refused: false,
                next_rno: 0,
                inflight: HashMap::new(),
                sending: VecDeque::new(),
                last_read: now,
                last_write: now,
            })));
            let registered = self.register_slot(slot, Interest::READABLE | Interest::WRITABLE);
            if !registered {
                if let Some(a) = self.addrs.get_mut(&addr) {
                    a.retry_at = retry;
                }
                continue;
            }
            self.by_wid.insert(id, slot);
            if let Some(a) = self.addrs.get_mut(&addr) {
                a.slot = Some(slot);
                a.retry_at = retry;
            }
        }
    }

    pub(super) fn worker_event(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(w) = self.worker(slot) else { return };
        if !w.connected {
            // A non-blocking connect finished, one way or the other.
            match w.stream.take_error() {
                Ok(None) if w.stream.peer_addr().is_ok() => {
                    w.connected = true;
                    let _ = w.stream.set_nodelay(true);
                    w.last_read = Instant::now();
                    // Logged at info when it joins the pool: a worker that
                    // keeps failing its handshake would log this every try.
                    log::debug!("connected to worker {}", w.addr);
                }
                Ok(None) if !readable && !writable => return,
                Ok(Some(e)) | Err(e) => {
                    let why = format!("connect failed: {e}");
                    self.close_worker(slot, &why);
                    return;
                }
                Ok(None) => {
                    self.close_worker(slot, "connect failed");
                    return;
                }
            }
        }
        if readable {
            self.worker_read(slot);
        }
        if writable {
            self.mark_dirty(slot);
        }
    }

    fn worker_read(&mut self, slot: usize) {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let Some(w) = self.worker(slot) else { return };
            match w.stream.read(&mut chunk) {
                Ok(0) => {
                    if w.handshake == Handshake::Answered {
                        let addr = w.addr.clone();
                        self.handshake_failed(
                            slot,
                            &addr,
                            "closed the connection after our answer to its challenge: \
                             the shared secrets differ",
                        );
                        return;
                    }
                    self.close_worker(slot, "closed by the worker");
                    return;
                }
                Ok(n) => {
                    w.rbuf.extend_from_slice(&chunk[..n]);
                    w.last_read = Instant::now();
                    if let Err(why) = self.worker_frames(slot) {
                        let addr = self
                            .worker(slot)
                            .map(|w| w.addr.clone())
                            .unwrap_or_default();
                        // A worker that never joined is said once a minute
                        // when it closes (it may not be a worker at all).
                        if self.worker(slot).is_some_and(|w| w.joined) {
                            log::error!("protocol error from worker {addr}: {why}");
                        }
                        self.close_worker(slot, &format!("protocol error: {why}"));
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close_worker(slot, &format!("read failed: {e}"));
                    return;
                }
            }
        }
    }

    /// Handle every whole frame in a worker's read buffer.
    fn worker_frames(&mut self, slot: usize) -> Result<(), String> {
        let mut pos = 0;
        let result = loop {
            let Some(w) = self.worker(slot) else {
                return Ok(());
            };
            let msg = match ToLb::decode(&w.rbuf[pos..], DEFAULT_MAX_FRAME) {
                Ok(Decoded::Complete(m, used)) => {
                    pos += used;
                    m
                }
                Ok(Decoded::Partial) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            };
            if let Err(e) = self.worker_message(slot, msg) {
                break Err(e);
            }
        };
        if let Some(w) = self.worker(slot) {
            w.rbuf.drain(..pos.min(w.rbuf.len()));
        }
        result
    }

    fn worker_message(&mut self, slot: usize, msg: ToLb) -> Result<(), String> {
        if !self.handshake(slot, &msg)? {
            return Ok(());
        }
        let Some(w) = self.worker(slot) else {
            return Ok(());
        };
        let wid = w.wid();
        match msg {
            ToLb::KeepAlive | ToLb::Unknown(_) | ToLb::Challenge(_) => {}
            ToLb::Hello(h) => w.hello = Some(h),
            ToLb::Resume(r) => {
                w.resume = r.clone();
                if w.draining || w.unlisted {
                    return Ok(());
                }
                let first = !w.joined;
                w.joined = true;
                let addr = w.addr.clone();
                let version = self.addrs.get(&addr).and_then(|a| a.version.clone());
                if first {
                    log::info!("worker {addr} joined with {} classes", r.len());
                }
                self.balancer.new_resume(wid, version.as_deref(), r);
                if first {
                    self.serve_waiting();
                }
            }
            ToLb::Drain => {
                if !w.draining {
                    w.draining = true;
                    log::info!("worker {} is draining", w.addr);
                    self.balancer.remove(wid);
                    self.close_if_drained(slot);
                }
            }
            ToLb::Head(rno, head) => {
                match w.inflight.get_mut(&rno) {
                    Some(f) if f.head => return Err(format!("second response head for {rno}")),
                    Some(f) => f.head = true,
                    None => return Ok(()),
                }
                if let Some(c) = self.inflight_client(slot, rno) {
                    self.response_head(c, head);
                }
            }
            ToLb::Body(rno, data) => {
                match w.inflight.get(&rno) {
                    Some(f) if !f.head => return Err(format!("body before the head for {rno}")),
                    Some(_) => {}
                    None => return Ok(()),
                }
                if let Some(c) = self.inflight_client(slot, rno) {
                    self.response_body(c, &data);
                }
            }
            ToLb::End(rno) => {
                if let Some(c) = self.end_inflight(slot, rno) {
                    self.response_end(c);
                }
            }
            ToLb::Abort(rno) => {
                if let Some(c) = self.end_inflight(slot, rno) {
                    self.response_abort(c, "the worker aborted the response");
                }
            }
        }
        Ok(())
    }

    /// The shared-secret handshake's part of a worker message: false when
    /// the message was the handshake's (or ended the connection).
    fn handshake(&mut self, slot: usize, msg: &ToLb) -> Result<bool, String> {
        let open = self
            .worker(slot)
            .is_some_and(|w| w.handshake == Handshake::Open);
        if open && !matches!(msg, ToLb::Challenge(_)) {
            return Ok(true);
        }
        let secret = self.cfg.secret.clone();
        let Some(w) = self.worker(slot) else {
            return Ok(false);
        };
        let refusal = match (msg, w.handshake, &secret) {
            (ToLb::Challenge(nonce), Handshake::AwaitChallenge, Some(secret)) => {
                encode_auth(w.out.buf(), &secret.mac(nonce));
                w.handshake = Handshake::Answered;
                self.mark_dirty(slot);
                return Ok(false);
            }
            (ToLb::Challenge(_), Handshake::Open, None) => {
                "asks for a shared secret (it sent a challenge) and this LB has none \
                 (--secret-file)"
            }
            (_, Handshake::AwaitChallenge, _) => {
                "did not send a challenge: it has no shared secret (--secret-file), \
                 and this LB talks only to workers that prove they have it"
            }
            (ToLb::Challenge(_), _, _) => return Err("a second challenge".into()),
            (_, Handshake::Answered, _) => {
                w.handshake = Handshake::Open;
                let addr = w.addr.clone();
                self.worker_log.forget_if(|(a, _)| *a == addr);
                return Ok(true);
            }
            _ => return Ok(true),
        };
        let addr = w.addr.clone();
        self.handshake_failed(slot, &addr, refusal);
        Ok(false)
    }

    /// Refuse a worker that failed the shared-secret handshake: one warning
    /// a minute for each address (it is retried about once a second).
    fn handshake_failed(&mut self, slot: usize, addr: &str, why: &str) {
        self.warn_worker(
            addr,
            "handshake",
            &format!("worker {addr} {why}; refusing it"),
        );
        if let Some(w) = self.worker(slot) {
            w.refused = true;
        }
        self.close_worker(slot, "shared-secret handshake failed");
    }

    /// A warning about a worker address that the LB retries about once a
    /// second: at most one a minute for each address and reason.
    fn warn_worker(&mut self, addr: &str, reason: &'static str, msg: &str) {
        if let Some(n) = self
            .worker_log
            .check((addr.to_string(), reason), Instant::now())
        {
            log::warn!("{msg}{}", held_back(n));
        }
    }

    /// The client slot of a request in flight, if it is still there.
    fn inflight_client(&mut self, slot: usize, rno: Rno) -> Option<usize> {
        let w = self.worker(slot)?;
        let f = w.inflight.get(&rno)?;
        let (cs, cid) = (f.client_slot, f.client_id);
        if self.client_is(cs, cid) {
            Some(cs)
        } else {
            None
        }
    }

    /// The worker's part of a request is over: forget it and put the worker
    /// back. Returns the client slot if the client is still there.
    fn end_inflight(&mut self, slot: usize, rno: Rno) -> Option<usize> {
        let w = self.worker(slot)?;
        let f = w.inflight.remove(&rno)?;
        w.sending.retain(|&r| r != rno);
        let wid = w.wid();
        self.balancer.put(wid);
        self.close_if_drained(slot);
        self.client_is(f.client_slot, f.client_id)
            .then_some(f.client_slot)
    }

    /// Cancel a request on its worker (the client went away or timed out).
    pub(super) fn cancel_on_worker(&mut self, wslot: usize, rno: Rno) {
        let Some(w) = self.worker(wslot) else { return };
        if w.inflight.remove(&rno).is_none() {
            return;
        }
        w.sending.retain(|&r| r != rno);
        encode_null(w.out.buf(), rno);
        let wid = w.wid();
        self.balancer.put(wid);
        self.mark_dirty(wslot);
        self.close_if_drained(wslot);
    }

    pub(super) fn close_if_drained(&mut self, slot: usize) {
        if let Some(w) = self.worker(slot) {
            if (w.draining || w.unlisted) && w.inflight.is_empty() {
                let why = if w.draining {
                    "drained"
                } else {
                    "removed from the worker list"
                };
                self.close_worker(slot, why);
            }
        }
    }

    /// The address is no longer listed: no new requests; close when idle.
    pub(super) fn unlist_worker(&mut self, slot: usize) {
        let Some(w) = self.worker(slot) else { return };
        if !w.unlisted {
            w.unlisted = true;
            let wid = w.wid();
            self.balancer.remove(wid);
        }
        self.close_if_drained(slot);
    }

    /// The address is listed again while its connection is still open:
    /// back into the pool with its latest résumé.
    pub(super) fn relist_worker(&mut self, slot: usize, version: Option<&str>) {
        let Some(w) = self.worker(slot) else { return };
        w.unlisted = false;
        if w.joined && !w.draining {
            let (wid, resume) = (w.wid(), w.resume.clone());
            self.balancer.new_resume(wid, version, resume);
            self.serve_waiting();
        }
    }

    /// Close a worker connection. Requests in flight end at once: retried
    /// or answered 502 (before their head went out), or cut off (after).
    pub(super) fn close_worker(&mut self, slot: usize, why: &str) {
        let Some(Conn::Worker(mut w)) = self.conns.remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut w.stream);
        self.by_wid.remove(&w.id);
        if w.joined {
            log::info!("worker {} disconnected: {why}", w.addr);
        } else {
            log::debug!("worker {}: {why}", w.addr);
            // Not when this LB closes it (shutting down, or the worker is no
            // longer listed), nor after a refusal, which said why already.
            let warn = !w.refused && !w.unlisted && self.stopping.is_none();
            if warn && w.connected {
                let msg = format!(
                    "no résumé from worker {} ({why}): is it a resumelb worker?",
                    w.addr
                );
                self.warn_worker(&w.addr, "no résumé", &msg);
            } else if warn {
                let msg = format!(
                    "worker {} cannot be reached ({why}); retrying about once a second",
                    w.addr
                );
                self.warn_worker(&w.addr, "unreachable", &msg);
            }
        }
        let wid = w.wid();
        let lost: Vec<(usize, u64)> = w
            .inflight
            .drain()
            .map(|(_, f)| (f.client_slot, f.client_id))
            .collect();
        for _ in &lost {
            self.balancer.put(wid);
        }
        self.balancer.remove(wid);
        let retry = crate::util::time::after(Instant::now(), self.cfg.reconnect_interval);
        if let Some(a) = self.addrs.get_mut(&w.addr) {
            if a.slot == Some(slot) {
                a.slot = None;
                a.retry_at = retry;
            }
        }
        for (cs, cid) in lost {
            if self.client_is(cs, cid) {
                self.worker_lost_for(cs);
            }
        }
    }

    pub(super) fn worker_flush(&mut self, slot: usize) {
        let waiting = self.pump_bodies(slot);
        let Some(w) = self.worker(slot) else { return };
        if !w.connected {
            return;
        }
        let result = w.out.flush_to(&mut w.stream).map(|n| {
            if n > 0 {
                w.last_write = Instant::now();
            }
        });
        match result {
            Err(e) => self.close_worker(slot, &format!("write failed: {e}")),
            Ok(()) => {
                // Room again: more request bodies can go.
                let more = !waiting
                    && self
                        .worker(slot)
                        .is_some_and(|w| !w.sending.is_empty() && w.has_room());
                if more {
                    self.mark_dirty(slot);
                }
            }
        }
    }

    pub(super) fn worker_tick(&mut self, now: Instant) {
        let keepalive = self.cfg.keepalive;
        let dead = self.cfg.dead_worker_timeout;
        let mut to_close = Vec::new();
        let mut to_flush = Vec::new();
        for (slot, c) in self.conns.iter_mut() {
            let Conn::Worker(w) = c else { continue };
            if now.duration_since(w.last_read) >= dead {
                to_close.push((
                    slot,
                    if w.connected {
                        "dead-worker timeout"
                    } else {
                        "connect timeout"
                    },
                ));
                continue;
            }
            // No keep-alive before the handshake is done: the worker takes
            // nothing but the answer to its challenge until then.
            let open = w.handshake == Handshake::Open;
            if w.connected
                && open
                && w.unsent() == 0
                && now.duration_since(w.last_write) >= keepalive
            {
                encode_null(w.out.buf(), 0);
                to_flush.push(slot);
            }
        }
        for slot in to_flush {
            self.mark_dirty(slot);
        }
        for (slot, why) in to_close {
            // A worker that never joined is warned about as it closes.
            if let Some(w) = self.worker(slot).filter(|w| w.joined) {
                log::warn!("worker {}: {why}", w.addr);
            }
            self.close_worker(slot, why);
        }
        self.connect_due(now);
    }
}
