//! Client connections: reading and checking requests, sending them to a
//! worker (or making them wait for one), writing responses in order, and
//! every way an exchange can end (done, refused, retried, timed out, cut).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use mio::net::TcpStream;
use mio::Interest;

use super::access;
use super::environ;
use super::io::{Conn, Loop};
use super::outbuf::OutBuf;
use super::reqbody::{Piece, ReqBody};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{parse_head, BodyFraming, Limits, RequestHead};
use crate::http::response::BodyPiece;
use crate::http::response::{chunk, plan, simple, Ask, BodyFramer, Framing};
use crate::http::{reason, HttpError};
use crate::proto::{
    encode_body, encode_end, encode_environ, Environ, ResponseHead, Rno, MAX_CHUNK,
};

const READ_CHUNK: usize = 64 * 1024;
/// Response bytes waiting for a client before its next request is read.
const OUT_LIMIT: u64 = 1 << 20;
/// The answer when a request body cannot be buffered (disk full, say).
const BUFFER_FAILED: HttpError = HttpError {
    status: 500,
    why: "cannot buffer the request body",
};
/// Attempts for a retryable request before it gets 502.
const MAX_ATTEMPTS: u32 = 5;

enum Reading {
    Sized(u64),
    Chunked(ChunkedDecoder),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    /// Reading the request body.
    Body,
    /// Complete, waiting for a worker since then.
    Waiting(Instant),
    /// On a worker.
    Forwarded {
        wslot: usize,
        rno: Rno,
        head_sent: bool,
    },
}

/// One request and its response.
pub(super) struct Exchange {
    head: RequestHead,
    ask: Ask,
    class: String,
    environ: Environ,
    reading: Reading,
    pub body: ReqBody,
    body_len: u64,
    pub phase: Phase,
    started: Instant,
    wall: SystemTime,
    attempts: u32,
    status: u16,
    sent_body: u64,
    resp_body: BodyFramer,
    last_progress: Instant,
    /// When it first went to the pool: until its response head goes out,
    /// the socket timeout counts from here, whatever retries happen.
    first_dispatch: Option<Instant>,
}

impl Exchange {
    fn retryable(&self) -> bool {
        matches!(self.head.method.as_str(), "GET" | "HEAD")
            && self.body_len == 0
            && self.attempts < MAX_ATTEMPTS
    }
}

pub(super) struct Client {
    pub id: u64,
    pub stream: TcpStream,
    peer: SocketAddr,
    rbuf: Vec<u8>,
    pub out: OutBuf,
    pub ex: Option<Exchange>,
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
}

fn rbuf_limit() -> usize {
    Limits::default().max_head + READ_CHUNK
}

const NO_WORKER_AT_SHUTDOWN: HttpError = HttpError {
    status: 503,
    why: "no worker is available and the load balancer is shutting down",
};

/// An exchange's access log line (`logging`: the access log is on; else
/// only what the metrics need is filled in).
fn exchange_line(peer: SocketAddr, ex: &Exchange, status: u16, logging: bool) -> access::Line {
    access::Line {
        peer: peer.ip(),
        wall: ex.wall,
        request: logging.then(|| {
            format!(
                "{} {} HTTP/1.{}",
                ex.head.method, ex.head.target, ex.head.minor
            )
        }),
        status,
        bytes: ex.sent_body,
        class: ex.class.clone(),
        started: ex.started,
    }
}

enum Timeout {
    Close(&'static str),
    Status(u16),
    Cut,
}

impl Loop {
    pub(super) fn client(&mut self, slot: usize) -> Option<&mut Client> {
        match self.conns.get_mut(slot) {
            Some(Conn::Client(c)) => Some(c),
            _ => None,
        }
    }

    pub(super) fn client_is(&self, slot: usize, id: u64) -> bool {
        matches!(self.conns.get(slot), Some(Conn::Client(c)) if c.id == id)
    }

    pub(super) fn add_client(&mut self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        let id = self.new_id();
        let slot = self.conns.insert(Conn::Client(Box::new(Client {
            id,
            stream,
            peer,
            rbuf: Vec::new(),
            out: OutBuf::new(self.cfg.client_mem_cap, self.spill_io.clone(), id),
            ex: None,
            close_after: false,
            reset: false,
            last_read: now,
            last_write: now,
            head_started: None,
            log_lines: access::Pending::default(),
        })));
        if !self.register_slot(slot, Interest::READABLE | Interest::WRITABLE) {
            return;
        }
        self.client_by_id.insert(id, slot);
        self.clients += 1;
        if self.clients >= self.cfg.max_connections {
            log::warn!("{} connections: accepting paused", self.clients);
            self.pause_accepting();
        }
        self.client_pull(slot);
    }

    pub(super) fn client_event(&mut self, slot: usize, readable: bool, writable: bool) {
        if readable {
            self.client_pull(slot);
        }
        if writable {
            self.mark_dirty(slot);
        }
    }

    /// Parse what has arrived, then read more while more is wanted.
    fn client_pull(&mut self, slot: usize) {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            self.client_advance(slot);
            let Some(c) = self.client(slot) else { return };
            if c.close_after || c.rbuf.len() >= rbuf_limit() {
                return;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    self.client_eof(slot);
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    c.last_read = Instant::now();
                    if c.ex.is_none() && c.head_started.is_none() {
                        c.head_started = Some(c.last_read);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.client_gone(slot, &format!("read failed: {e}"));
                    return;
                }
            }
        }
    }

    fn client_eof(&mut self, slot: usize) {
        let Some(c) = self.client(slot) else { return };
        if c.ex.is_some() {
            self.client_gone(slot, "client closed the connection mid-request");
        } else if c.out.is_empty() {
            self.close_client(slot, "client closed the connection");
        } else {
            c.close_after = true;
        }
    }

    /// Move the connection's state on with the bytes it has.
    fn client_advance(&mut self, slot: usize) {
        loop {
            let stopping = self.stopping.is_some();
            let (peer, local) = (self.client(slot).map(|c| c.peer), self.local);
            let Some(peer) = peer else { return };
            let classifier = self.cfg.classifier.clone();
            let spill = self.cfg.spill_threshold;
            let spill_io = self.spill_io.clone();
            let Some(c) = self.client(slot) else { return };
            if c.close_after {
                return;
            }
            match &mut c.ex {
                None => {
                    if c.out.pending() > OUT_LIMIT || c.rbuf.is_empty() {
                        return;
                    }
                    let (head, used) = match parse_head(&c.rbuf, &Limits::default()) {
                        Ok(Some(x)) => x,
                        Ok(None) => return,
                        Err(e) => {
                            log::debug!("refused request from {}: {e}", c.peer);
                            self.refuse(slot, e);
                            return;
                        }
                    };
                    c.rbuf.drain(..used);
                    // A pipelined next head, if any, starts now.
                    c.head_started = (!c.rbuf.is_empty()).then(Instant::now);
                    let mut environ = environ::build(&head, peer, local, None);
                    let class = classifier.classify(|n| environ.get(n).map(String::as_str));
                    environ.insert("resumelb.request_class".into(), class.clone());
                    let reading = match head.body {
                        BodyFraming::None => Reading::Done,
                        BodyFraming::Sized(n) => Reading::Sized(n),
                        BodyFraming::Chunked => Reading::Chunked(ChunkedDecoder::new()),
                    };
                    if head.expect_continue && !matches!(reading, Reading::Done) {
                        let _ = c.out.push(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    let now = Instant::now();
                    c.ex = Some(Exchange {
                        ask: Ask {
                            minor: head.minor,
                            head_only: head.is_head(),
                            keep_alive: head.keep_alive && !stopping,
                        },
                        head,
                        class,
                        environ,
                        reading,
                        body: ReqBody::new(spill_io, c.id, spill),
                        body_len: 0,
                        phase: Phase::Body,
                        started: now,
                        wall: SystemTime::now(),
                        attempts: 0,
                        status: 0,
                        sent_body: 0,
                        resp_body: BodyFramer::new(Framing::None),
                        last_progress: now,
                        first_dispatch: None,
                    });
                    self.mark_dirty(slot);
                }
                Some(ex) if ex.phase == Phase::Body => {
                    let body = &mut ex.body;
                    match &mut ex.reading {
                        Reading::Done => {}
                        Reading::Sized(left) => {
                            let n = (*left).min(c.rbuf.len() as u64) as usize;
                            body.write(&c.rbuf[..n]);
                            c.rbuf.drain(..n);
                            *left -= n as u64;
                            if *left == 0 {
                                ex.reading = Reading::Done;
                            }
                        }
                        Reading::Chunked(dec) => match dec.feed(&c.rbuf, &mut |d| body.write(d)) {
                            Ok(used) => {
                                c.rbuf.drain(..used);
                                if dec.is_done() {
                                    ex.reading = Reading::Done;
                                }
                            }
                            Err(e) => {
                                log::debug!("refused request body from {}: {e}", c.peer);
                                self.refuse(slot, e);
                                return;
                            }
                        },
                    }
                    if !matches!(ex.reading, Reading::Done) {
                        return;
                    }
                    ex.body_len = ex.body.len();
                    if ex.body_len > 0 || ex.head.header("content-length").is_some() {
                        ex.environ
                            .insert("CONTENT_LENGTH".into(), ex.body_len.to_string());
                    }
                    self.dispatch(slot);
                }
                Some(_) => return,
            }
        }
    }

    /// Send a complete request to a worker, or queue it until one comes.
    fn dispatch(&mut self, slot: usize) {
        let stopping = self.stopping.is_some();
        let Some(c) = self.client(slot) else { return };
        let Some(ex) = c.ex.as_mut() else { return };
        ex.first_dispatch.get_or_insert_with(Instant::now);
        let class = ex.class.clone();
        let id = c.id;
        match self.pick_worker(&class) {
            Some(wslot) => self.send_to(wslot, slot),
            // Shutting down with no worker in the pool: none will come.
            None if stopping => self.refuse(slot, NO_WORKER_AT_SHUTDOWN),
            None => {
                if let Some(ex) = self.client(slot).and_then(|c| c.ex.as_mut()) {
                    ex.phase = Phase::Waiting(Instant::now());
                }
                self.waiting.push_back((slot, id));
            }
        }
    }

    /// Shutting down: requests waiting for a worker (there is none in the
    /// pool, or they would not wait) get 503 at once.
    pub(super) fn refuse_waiting(&mut self) {
        while let Some((slot, id)) = self.waiting.pop_front() {
            let waiting = matches!(self.conns.get(slot), Some(Conn::Client(c))
                if c.id == id && c.ex.as_ref().is_some_and(|e| matches!(e.phase, Phase::Waiting(_))));
            if waiting {
                self.refuse(slot, NO_WORKER_AT_SHUTDOWN);
            }
        }
    }

    /// A worker for `class` from the pool, as a connection slot.
    fn pick_worker(&mut self, class: &str) -> Option<usize> {
        loop {
            let wid = self.balancer.get(class)?;
            let ws = self.by_wid.get(&wid.0).copied();
            match ws {
                Some(ws) if self.worker(ws).is_some_and(|w| w.joined && !w.draining) => {
                    return Some(ws)
                }
                _ => {
                    // Should not happen: the pool and the connections disagree.
                    log::error!("pool chose unknown worker {wid:?}; removing it");
                    self.balancer.put(wid);
                    self.balancer.remove(wid);
                }
            }
        }
    }

    fn send_to(&mut self, wslot: usize, cslot: usize) {
        let Some(c) = self.client(cslot) else { return };
        let cid = c.id;
        let Some(ex) = c.ex.as_mut() else { return };
        let has_body = ex.body_len > 0;
        let env = std::mem::take(&mut ex.environ);
        let Some(w) = self.worker(wslot) else { return };
        let rno = w.take_rno();
        w.inflight.insert(
            rno,
            super::backend::Inflight {
                client_slot: cslot,
                client_id: cid,
                started: SystemTime::now(),
                head: false,
            },
        );
        let encoded = encode_environ(
            w.out.buf(),
            rno,
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if has_body {
            w.sending.push_back(rno);
        } else {
            encode_end(w.out.buf(), rno);
        }
        if let Err(e) = encoded {
            log::error!("cannot encode a request: {e}");
        }
        if let Some(ex) = self.client(cslot).and_then(|c| c.ex.as_mut()) {
            ex.environ = env;
            ex.attempts += 1;
            ex.phase = Phase::Forwarded {
                wslot,
                rno,
                head_sent: false,
            };
            ex.last_progress = Instant::now();
            ex.body.rewind();
        }
        self.mark_dirty(wslot);
    }

    /// Requests waiting for a worker get one, while the pool has one.
    pub(super) fn serve_waiting(&mut self) {
        while let Some(&(slot, id)) = self.waiting.front() {
            let class = match self.conns.get(slot) {
                Some(Conn::Client(c)) if c.id == id => match &c.ex {
                    Some(ex) if matches!(ex.phase, Phase::Waiting(_)) => ex.class.clone(),
                    _ => {
                        self.waiting.pop_front();
                        continue;
                    }
                },
                _ => {
                    self.waiting.pop_front();
                    continue;
                }
            };
            let Some(wslot) = self.pick_worker(&class) else {
                return;
            };
            self.waiting.pop_front();
            self.send_to(wslot, slot);
        }
    }

    /// Copy request bodies into a worker's buffer while it has room. True
    /// when stopped by a body being read back from its spill file (the
    /// read-back marks the connection again).
    pub(super) fn pump_bodies(&mut self, wslot: usize) -> bool {
        loop {
            let Some(w) = self.worker(wslot) else {
                return false;
            };
            if !w.has_room() {
                return false;
            }
            let Some(&rno) = w.sending.front() else {
                return false;
            };
            let target = w.inflight.get(&rno).map(|f| (f.client_slot, f.client_id));
            let Some((cs, _)) = target.filter(|&(cs, cid)| self.client_is(cs, cid)) else {
                if let Some(w) = self.worker(wslot) {
                    w.sending.pop_front();
                }
                continue;
            };
            let piece = self
                .client(cs)
                .and_then(|c| c.ex.as_mut())
                .map_or(Piece::Done, |ex| ex.body.next_piece(4 * MAX_CHUNK));
            let Some(w) = self.worker(wslot) else {
                return false;
            };
            match piece {
                Piece::Done => {
                    encode_end(w.out.buf(), rno);
                    w.sending.pop_front();
                }
                Piece::Data(d) => encode_body(w.out.buf(), rno, &d),
                Piece::Pending => return true,
            }
        }
    }

    /// A spilled request body's bytes came back from the spill thread.
    pub(super) fn body_read_back(&mut self, slot: usize, data: std::io::Result<Vec<u8>>) {
        let Some(ex) = self.client(slot).and_then(|c| c.ex.as_mut()) else {
            return;
        };
        let Phase::Forwarded { wslot, rno, .. } = ex.phase else {
            return;
        };
        match data {
            Ok(d) => {
                ex.body.read_back(d);
                self.mark_dirty(wslot);
            }
            Err(e) => {
                log::error!("cannot read back a buffered request body: {e}");
                if let Some(w) = self.worker(wslot) {
                    w.sending.retain(|&r| r != rno);
                }
                self.cancel_on_worker(wslot, rno);
                self.refuse(slot, BUFFER_FAILED);
            }
        }
    }

    /// The worker's response head for a client's exchange.
    pub(super) fn response_head(&mut self, cslot: usize, head: ResponseHead) {
        let Some(c) = self.client(cslot) else { return };
        let Some(ex) = c.ex.as_mut() else { return };
        let Phase::Forwarded {
            wslot,
            rno,
            head_sent: false,
        } = ex.phase
        else {
            return;
        };
        match plan(ex.ask, &head) {
            Ok(p) => {
                ex.status = p.status;
                ex.resp_body = BodyFramer::new(p.framing);
                ex.ask.keep_alive = p.keep_alive;
                ex.phase = Phase::Forwarded {
                    wslot,
                    rno,
                    head_sent: true,
                };
                ex.last_progress = Instant::now();
                if let Err(e) = c.out.push(&p.head) {
                    self.client_gone(cslot, &format!("cannot buffer the response: {e}"));
                    return;
                }
                self.mark_dirty(cslot);
            }
            Err(why) => {
                let addr = self
                    .worker(wslot)
                    .map(|w| w.addr.clone())
                    .unwrap_or_default();
                log::warn!("bad response head from worker {addr}: {why}");
                self.cancel_on_worker(wslot, rno);
                self.counters.bad_gateway += 1;
                let page = self.cfg.disconnect_page.clone();
                self.refuse_with(cslot, 502, "text/html; charset=utf-8", &page);
            }
        }
    }

    pub(super) fn response_body(&mut self, cslot: usize, data: &[u8]) {
        let Some(c) = self.client(cslot) else { return };
        let Some(ex) = c.ex.as_mut() else { return };
        let Phase::Forwarded {
            wslot,
            rno,
            head_sent: true,
        } = ex.phase
        else {
            return;
        };
        ex.last_progress = Instant::now();
        let pushed = match ex.resp_body.piece(data.len()) {
            Err(_) => {
                // More than announced: the worker is wrong; cut the client
                // off rather than send a corrupt stream.
                log::warn!("worker sent more than its Content-Length");
                self.cancel_on_worker(wslot, rno);
                self.cut(cslot);
                return;
            }
            Ok(BodyPiece::Drop) => Ok(()),
            Ok(BodyPiece::Raw) => {
                ex.sent_body += data.len() as u64;
                c.out.push(data)
            }
            Ok(BodyPiece::Chunk) => {
                ex.sent_body += data.len() as u64;
                let mut framed = Vec::with_capacity(data.len() + 16);
                chunk(&mut framed, data);
                c.out.push(&framed)
            }
        };
        if let Err(e) = pushed {
            self.cancel_on_worker(wslot, rno);
            self.client_gone(cslot, &format!("cannot buffer the response: {e}"));
            return;
        }
        self.mark_dirty(cslot);
    }

    /// The worker sent the end of the response (and was put back).
    pub(super) fn response_end(&mut self, cslot: usize) {
        let Some(c) = self.client(cslot) else { return };
        let Some(ex) = c.ex.as_mut() else { return };
        let Phase::Forwarded { head_sent, .. } = ex.phase else {
            return;
        };
        if !head_sent {
            // End without a head: as if the worker had failed.
            self.response_abort(cslot, "the worker ended a response it never began");
            return;
        }
        match ex.resp_body.end() {
            Ok(closing) => {
                if !closing.is_empty() {
                    let _ = c.out.push(closing);
                }
            }
            Err(_) => {
                log::warn!("worker sent less than its Content-Length");
                self.cut(cslot);
                return;
            }
        }
        self.finish_exchange(cslot);
    }

    /// The worker gave up on a response (and was put back).
    pub(super) fn response_abort(&mut self, cslot: usize, why: &str) {
        log::warn!("{why}");
        self.worker_lost_for(cslot);
    }

    /// The worker of a client's exchange is gone (already put back).
    pub(super) fn worker_lost_for(&mut self, cslot: usize) {
        let page = self.cfg.disconnect_page.clone();
        let Some(c) = self.client(cslot) else { return };
        let Some(ex) = c.ex.as_mut() else { return };
        let Phase::Forwarded { head_sent, .. } = ex.phase else {
            return;
        };
        if head_sent {
            self.cut(cslot);
        } else if ex.retryable() {
            self.counters.retries += 1;
            self.dispatch(cslot);
        } else {
            self.counters.bad_gateway += 1;
            self.refuse_with(cslot, 502, "text/html; charset=utf-8", &page);
        }
    }

    /// End a response that is incomplete: the client must be able to tell,
    /// so the connection is reset after what was buffered is tried once.
    fn cut(&mut self, cslot: usize) {
        if let Some(c) = self.client(cslot) {
            c.reset = true;
            c.close_after = true;
            if let Some(ex) = c.ex.take() {
                let ex_status = ex.status;
                self.access_line_for(cslot, &ex, ex_status);
            }
        }
        self.client_flush(cslot);
        // Whatever did not fit goes: the response is incomplete anyway.
        self.close_client(cslot, "response cut off");
    }

    /// The exchange is complete: log it and go on with the next request.
    fn finish_exchange(&mut self, cslot: usize) {
        let stopping = self.stopping.is_some();
        let Some(c) = self.client(cslot) else { return };
        let Some(ex) = c.ex.take() else { return };
        if !ex.ask.keep_alive || stopping {
            c.close_after = true;
        }
        self.access_line_for(cslot, &ex, ex.status);
        self.mark_dirty(cslot);
        self.client_pull(cslot);
    }

    /// An exchange ended: its metrics and access log line are written once
    /// the client has its response (or the connection closes).
    fn access_line_for(&mut self, cslot: usize, ex: &Exchange, status: u16) {
        let logging = self.cfg.access_log.is_enabled();
        let Some(c) = self.client(cslot) else { return };
        let line = exchange_line(c.peer, ex, status, logging);
        let mark = c.out.pushed;
        c.log_lines.push(mark, line);
        self.write_delivered(cslot);
    }

    /// Write the lines of the responses the client has been sent.
    fn write_delivered(&mut self, cslot: usize) {
        let Some(c) = self.client(cslot) else { return };
        let due = c.log_lines.due(c.out.written);
        self.write_lines(due);
    }

    fn write_lines(&mut self, lines: Vec<access::Line>) {
        let now = Instant::now();
        for line in lines {
            let seconds = now.saturating_duration_since(line.started).as_secs_f64();
            self.metrics.observe(&line.class, line.status, seconds);
            if self.cfg.access_log.is_enabled() {
                self.cfg.access_log.line(line.text(now));
            }
        }
    }

    /// Refuse a request: the status, and close.
    fn refuse(&mut self, cslot: usize, e: HttpError) {
        let body = format!("{} {}: {}\n", e.status, reason(e.status), e.why);
        self.refuse_with(
            cslot,
            e.status,
            "text/plain; charset=utf-8",
            body.as_bytes(),
        );
    }

    /// Answer with the LB's own response and close after it.
    fn refuse_with(&mut self, cslot: usize, status: u16, content_type: &str, body: &[u8]) {
        let Some(c) = self.client(cslot) else { return };
        let ex = c.ex.take();
        let ask = ex.as_ref().map_or(
            Ask {
                minor: 1,
                head_only: false,
                keep_alive: false,
            },
            |e| e.ask,
        );
        let bytes = simple(ask, status, content_type, body, false);
        let _ = c.out.push(&bytes);
        c.close_after = true;
        c.rbuf.clear();
        match ex {
            Some(mut ex) => {
                ex.sent_body = if ask.head_only { 0 } else { body.len() as u64 };
                self.access_line_for(cslot, &ex, status);
            }
            None => {
                // Refused before a head could be read (malformed, too
                // large, too slow): logged all the same, request "-".
                let line = access::Line {
                    peer: c.peer.ip(),
                    wall: SystemTime::now(),
                    request: None,
                    status,
                    bytes: body.len() as u64,
                    class: String::new(),
                    started: c.head_started.unwrap_or(c.last_read),
                };
                let mark = c.out.pushed;
                c.log_lines.push(mark, line);
                self.write_delivered(cslot);
            }
        }
        self.mark_dirty(cslot);
    }

    /// The client is gone or unusable: cancel its exchange and close.
    fn client_gone(&mut self, slot: usize, why: &str) {
        self.close_client(slot, why);
    }

    pub(super) fn close_client(&mut self, slot: usize, why: &str) {
        let Some(Conn::Client(mut c)) = self.conns.remove(slot) else {
            return;
        };
        log::debug!("client {} closed: {why}", c.peer);
        self.client_by_id.remove(&c.id);
        let ex = c.ex.take();
        if let Some(ex) = &ex {
            // A response the client has whole (its length reached) needs no
            // cancel: the worker's end frame will put it back as usual.
            let whole = ex.resp_body.is_whole();
            match ex.phase {
                Phase::Forwarded {
                    head_sent: true, ..
                } if whole => {}
                Phase::Forwarded { wslot, rno, .. } => self.cancel_on_worker(wslot, rno),
                _ => {}
            }
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.reset {
            crate::util::net::set_linger_zero(&c.stream);
        }
        self.counters.spilled_bytes += c.out.spilled;
        self.clients -= 1;
        self.maybe_resume_accepting();
        let mut lines = c.log_lines.all();
        if let Some(ex) = ex {
            // Still counted and logged: with the status it had begun with,
            // or 499 (nginx's "client closed request") if none.
            let status = if ex.status == 0 { 499 } else { ex.status };
            let logging = self.cfg.access_log.is_enabled();
            lines.push(exchange_line(c.peer, &ex, status, logging));
        }
        self.write_lines(lines);
    }

    /// A response's spilled bytes cannot be read back: the client cannot
    /// get it whole, so it is cut off.
    pub(super) fn spill_failed(&mut self, slot: usize, e: &std::io::Error) {
        log::error!("cannot read back a spilled response: {e}");
        if let Some(c) = self.client(slot) {
            c.reset = true;
        }
        self.close_client(slot, "spill file failed");
    }

    pub(super) fn client_flush(&mut self, slot: usize) {
        let Some(c) = self.client(slot) else { return };
        match c.out.write_to(&mut c.stream) {
            Ok(n) => {
                if n > 0 {
                    c.last_write = Instant::now();
                    self.write_delivered(slot);
                }
                let Some(c) = self.client(slot) else { return };
                if c.out.is_empty() {
                    if c.close_after {
                        self.close_client(slot, "done");
                    } else if c.ex.is_none() && !c.rbuf.is_empty() {
                        // Output had held back the next pipelined request.
                        self.client_pull(slot);
                    }
                }
            }
            Err(e) => self.client_gone(slot, &format!("write failed: {e}")),
        }
    }

    /// Shutting down: idle connections close now, busy ones after their
    /// response.
    pub(super) fn client_stop(&mut self, slot: usize) {
        let Some(c) = self.client(slot) else { return };
        match c.ex.as_mut() {
            Some(ex) => ex.ask.keep_alive = false,
            None => {
                c.close_after = true;
                if c.out.is_empty() {
                    self.close_client(slot, "LB shutting down");
                }
            }
        }
    }

    /// Socket timeout on every stage.
    pub(super) fn client_tick(&mut self, now: Instant) {
        let limit = self.cfg.socket_timeout;
        let mut actions = Vec::new();
        for (slot, conn) in self.conns.iter() {
            let Conn::Client(c) = conn else { continue };
            if !c.out.is_empty() && now.duration_since(c.last_write) >= limit {
                actions.push((slot, Timeout::Close("write timeout")));
                continue;
            }
            match &c.ex {
                None => {
                    if c.head_started
                        .is_some_and(|t| now.duration_since(t) >= limit)
                    {
                        actions.push((slot, Timeout::Status(408)));
                    } else if c.out.is_empty() && now.duration_since(c.last_read) >= limit {
                        actions.push((slot, Timeout::Close("idle timeout")));
                    }
                }
                Some(ex) => match ex.phase {
                    Phase::Body => {
                        if now.duration_since(c.last_read) >= limit {
                            actions.push((slot, Timeout::Status(408)));
                        }
                    }
                    Phase::Waiting(since) => {
                        let from = ex.first_dispatch.unwrap_or(since);
                        if now.saturating_duration_since(from) >= limit {
                            actions.push((slot, Timeout::Status(503)));
                        }
                    }
                    Phase::Forwarded { head_sent, .. } => {
                        // Before the head: counted from the first dispatch,
                        // so retries cannot stretch it; after: progress.
                        let from = match (head_sent, ex.first_dispatch) {
                            (false, Some(t)) => t,
                            _ => ex.last_progress,
                        };
                        if now.saturating_duration_since(from) >= limit {
                            actions.push((
                                slot,
                                if head_sent {
                                    Timeout::Cut
                                } else {
                                    Timeout::Status(504)
                                },
                            ));
                        }
                    }
                },
            }
        }
        for (slot, action) in actions {
            match action {
                Timeout::Close(why) => self.close_client(slot, why),
                Timeout::Status(status) => {
                    if let Some(Phase::Forwarded { wslot, rno, .. }) = self
                        .client(slot)
                        .and_then(|c| c.ex.as_ref())
                        .map(|e| e.phase)
                    {
                        self.cancel_on_worker(wslot, rno);
                    }
                    let why = match status {
                        408 => "the request did not arrive in time",
                        503 => "no worker became available in time",
                        _ => "the worker did not answer in time",
                    };
                    self.refuse(slot, HttpError { status, why });
                }
                Timeout::Cut => {
                    if let Some(Phase::Forwarded { wslot, rno, .. }) = self
                        .client(slot)
                        .and_then(|c| c.ex.as_ref())
                        .map(|e| e.phase)
                    {
                        self.cancel_on_worker(wslot, rno);
                    }
                    self.cut(slot);
                }
            }
        }
    }
}
