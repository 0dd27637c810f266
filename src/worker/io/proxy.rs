//! Forwarding on the I/O thread. When the application only forwards
//! requests to an HTTP server (`--app upstream:`, [`App::forwarding`]), the
//! I/O thread sends each request whose body is in memory upstream itself,
//! over non-blocking keep-alive connections registered in its own poll,
//! and turns the response into frames for the LB as it arrives: no app
//! thread between, so a request costs the worker no thread hand-off and no
//! wake-up. Requests whose bodies were spilled to disk still go to the app
//! threads (the I/O thread reads no files).
//!
//! At most `threads` connections are open (the upstream's concurrency, as
//! the LBs are told); more requests wait in order for one. A response
//! streams: its upstream connection is read only while the LB
//! connection's pending output is within the flow limit, and waits
//! ("held") otherwise. A request that fails before any response byte on a
//! connection that served one before (a stale keep-alive connection) is
//! sent again once on a new connection; otherwise a failure before the
//! head is answered `502 Bad Gateway`, and one in the body aborts the
//! response. `timeout` bounds connecting and each wait for the upstream.
//!
//! [`App::forwarding`]: super::super::App::forwarding

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::TcpStream;
use mio::Registry;
use slotmap::{Key, KeyData, SlotMap};

use super::super::shared::{Flow, Job, Out, TimerMsg};
use super::super::upstream::{is_early, pass_on, request_head, Forwarding, BAD_GATEWAY};
use crate::http::client::{Body as ReadBody, ResponseReader};
use crate::http::header;
use crate::net::{fired, register_conn, Armed, Deadlines};
use crate::proto::{encode_body, encode_end, encode_head, encode_null, ResponseHead, Rno};
use crate::tracelog::Trace;
use crate::util::spill::BodyReader;
use crate::util::time::after;

/// The token kind of upstream connections.
pub(super) const UPSTREAM: u8 = 2;
/// The most body bytes taken from one read.
const PIECE: usize = 64 * 1024;
/// Frames made from one connection before they go out (and the flow limit
/// is looked at again).
const ROUND_BYTES: usize = 256 * 1024;

slotmap::new_key_type! { struct UpKey; }

/// A request on its way upstream.
struct Call {
    conn_id: u64,
    rno: Rno,
    req_id: u64,
    flow: Arc<Flow>,
    cancel: Arc<AtomicBool>,
    /// The request as sent upstream: head, then body.
    bytes: Vec<u8>,
    head_request: bool,
    class: String,
    trace: Trace,
    start: Instant,
}

impl Call {
    /// Cancelled by the LB, or its connection closed: nothing more goes out.
    fn gone(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.flow.is_closed()
    }
}

enum State {
    Idle,
    /// Connecting (a new connection), then writing the request.
    Sending {
        call: Call,
        sent: usize,
    },
    /// Sent; waiting for the response head.
    Head {
        call: Call,
    },
    /// Passing the body on.
    Body {
        call: Call,
        body: ReadBody,
        keep_alive: bool,
        code: u16,
    },
}

/// One connection to the upstream.
struct Up {
    stream: TcpStream,
    reader: ResponseReader,
    state: State,
    connected: bool,
    /// It carried a request before: a failure before any response byte may
    /// mean the upstream closed it meanwhile.
    reused: bool,
    /// When the current wait gives up.
    due: Instant,
    armed: Armed,
}

/// What a step on a connection came to.
enum Next {
    /// Waiting for the socket (the state is back in place).
    Wait,
    /// Waiting for room on the LB connection.
    Held,
    /// The state moved on: step again.
    Again,
    /// The response is out; the connection can carry another request.
    Done { reusable: bool },
    /// Failed before any response byte on a reused connection: send again
    /// on a new one.
    Retry(Call, io::Error),
    /// Failed before the head: answer 502.
    Failed(Call, io::Error),
    /// The connect failed.
    Unreachable(Call, io::Error),
    /// Failed in the body (the response is aborted), or the request is
    /// gone: the connection is closed, the call is settled.
    Closed,
}

pub(crate) struct Proxy {
    addr: SocketAddr,
    timeout: Duration,
    down: Arc<AtomicBool>,
    registry: Registry,
    max_conns: usize,
    conns: SlotMap<UpKey, Up>,
    idle: Vec<UpKey>,
    queue: VecDeque<Call>,
    /// Connections waiting for room on their LB connection.
    held: Vec<UpKey>,
    deadlines: Deadlines<UpKey>,
    out: Outs,
}

/// Where calls end: frames for LB connections (taken by the loop after
/// each event), samples and failures for the timer thread.
struct Outs {
    frames: Vec<Out>,
    timer: Sender<TimerMsg>,
    addr: SocketAddr,
}

impl Outs {
    /// Frames of `call` for its LB connection, counted in its flow until
    /// the connection's buffer takes them.
    fn emit(&mut self, call: &Call, bytes: Vec<u8>, done: bool) {
        if bytes.is_empty() && !done {
            return;
        }
        call.flow.add(bytes.len());
        self.frames.push(Out {
            conn_id: call.conn_id,
            rno: call.rno,
            req_id: call.req_id,
            bytes,
            done,
        });
    }

    /// The response is complete: its time is a sample of the class's
    /// speed, unless it is a 5xx.
    fn ended(&mut self, call: Call, mut frames: Vec<u8>, code: u16) {
        encode_end(&mut frames, call.rno);
        call.trace.record('E', "");
        self.emit(&call, frames, true);
        let msg = if code < 500 {
            TimerMsg::Sample(call.class, call.start.elapsed().as_secs_f64())
        } else {
            TimerMsg::Failure(call.class)
        };
        let _ = self.timer.send_timeout(msg, Duration::ZERO);
    }

    fn failure(&self, class: String) {
        let _ = self
            .timer
            .send_timeout(TimerMsg::Failure(class), Duration::ZERO);
    }

    /// The body broke off: the LB is told to abort the response.
    fn abort(&mut self, call: Call, mut frames: Vec<u8>, e: &io::Error) {
        log::error!(
            "{}: upstream {} response body failed: {e}",
            call.trace.id(),
            self.addr
        );
        if !call.gone() {
            encode_null(&mut frames, call.rno);
        }
        call.trace.record('E', "aborted");
        self.emit(&call, frames, true);
        self.failure(call.class);
    }

    /// The request is gone: only its end is counted.
    fn dropped(&mut self, call: Call) {
        call.trace.record('E', "cancelled");
        self.emit(&call, Vec::new(), true);
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Proxy {
    /// Forward to `to`, with at most `max_conns` connections open; samples
    /// and failures go to the timer thread over `timer`.
    pub(crate) fn new(
        to: Forwarding,
        registry: Registry,
        max_conns: usize,
        timer: Sender<TimerMsg>,
    ) -> Proxy {
        Proxy {
            addr: to.addr,
            timeout: to.timeout,
            down: to.down,
            registry,
            max_conns: max_conns.max(1),
            conns: SlotMap::with_key(),
            idle: Vec::new(),
            queue: VecDeque::new(),
            held: Vec::new(),
            deadlines: Deadlines::default(),
            out: Outs {
                frames: Vec::new(),
                timer,
                addr: to.addr,
            },
        }
    }

    /// Forward the request of `job` (its body in memory).
    pub(super) fn start(&mut self, mut job: Job) {
        let Some(mut req) = job.request.take() else {
            return;
        };
        let body = match std::mem::replace(&mut req.body, BodyReader::empty()) {
            BodyReader::Memory(c) => c.into_inner(),
            // Not sent here (spilled bodies go to the app threads); read
            // anyway rather than lose it.
            mut file => {
                let mut b = Vec::new();
                if let Err(e) = file.read_to_end(&mut b) {
                    log::error!("{}: cannot read the request body: {e}", req.trace.id());
                }
                b
            }
        };
        let mut bytes = request_head(&req, body.len() as u64);
        bytes.extend_from_slice(&body);
        req.trace.record('C', "");
        let call = Call {
            conn_id: job.conn_id,
            rno: job.rno,
            req_id: job.req_id,
            flow: job.flow,
            cancel: job.request_cancel,
            bytes,
            head_request: req.method() == "HEAD",
            class: std::mem::take(&mut req.class),
            trace: req.trace,
            start: Instant::now(),
        };
        self.dispatch(call);
    }

    /// Frames made since the last call, for the loop to route.
    pub(super) fn take_outs(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out.frames)
    }

    /// A socket of the connection with this token's key is ready.
    pub(super) fn ready(&mut self, key: KeyData) {
        self.drive(UpKey::from(key));
    }

    /// Step connections held for room on their LB connection that have it
    /// now (or whose request is gone). True when one moved.
    pub(super) fn resume_held(&mut self) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let held = std::mem::take(&mut self.held);
        let mut moved = false;
        for key in held {
            let ready = match self.conns.get(key).map(|u| &u.state) {
                Some(State::Body { call, .. }) => call.gone() || call.flow.has_room(),
                _ => continue,
            };
            if ready {
                moved = true;
                self.drive(key);
            } else {
                self.held.push(key);
            }
        }
        moved
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Give up on connections whose wait is over.
    pub(super) fn run_deadlines(&mut self, now: Instant) {
        while let Some((at, key)) = self.deadlines.pop_due(now) {
            let Some(up) = fired(&mut self.conns, key, at, |u| &mut u.armed) else {
                continue;
            };
            if matches!(up.state, State::Idle) {
                continue;
            }
            if up.due > now {
                self.arm(key);
                continue;
            }
            let secs = self.timeout.as_secs_f64();
            let timed_out = |what: &str| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no {what} within {secs} s"),
                )
            };
            let next = match std::mem::replace(&mut up.state, State::Idle) {
                State::Idle => continue,
                State::Sending { call, .. } if !up.connected => {
                    Next::Unreachable(call, timed_out("connection"))
                }
                State::Sending { call, .. } => Next::Failed(call, timed_out("progress sending")),
                State::Head { call } => Next::Failed(call, timed_out("response")),
                State::Body { call, .. } => {
                    self.out
                        .abort(call, Vec::new(), &timed_out("more of the body"));
                    Next::Closed
                }
            };
            self.settle(key, next);
        }
    }

    /// Send a call on an idle connection, a new one, or queue it.
    fn dispatch(&mut self, call: Call) {
        if call.gone() {
            self.dropped(call);
        } else if let Some(key) = self.idle.pop() {
            self.begin(key, call);
        } else if self.conns.len() < self.max_conns {
            self.open(call);
        } else {
            self.queue.push_back(call);
        }
    }

    /// The next queued call whose request is still wanted.
    fn next_queued(&mut self) -> Option<Call> {
        while let Some(call) = self.queue.pop_front() {
            if !call.gone() {
                return Some(call);
            }
            self.dropped(call);
        }
        None
    }

    fn begin(&mut self, key: UpKey, call: Call) {
        let Some(up) = self.conns.get_mut(key) else {
            return self.dispatch(call);
        };
        up.state = State::Sending { call, sent: 0 };
        up.due = after(Instant::now(), self.timeout);
        self.drive(key);
    }

    fn open(&mut self, call: Call) {
        let stream = match TcpStream::connect(self.addr) {
            Ok(s) => s,
            Err(e) => return self.unreachable(call, &e),
        };
        let _ = stream.set_nodelay(true);
        let key = self.conns.insert(Up {
            stream,
            reader: ResponseReader::new(),
            state: State::Sending { call, sent: 0 },
            connected: false,
            reused: false,
            due: after(Instant::now(), self.timeout),
            armed: Armed::default(),
        });
        let up = &mut self.conns[key];
        if !register_conn(
            &self.registry,
            &mut up.stream,
            UPSTREAM,
            key.data(),
            &self.addr,
        ) {
            if let Some(Up {
                state: State::Sending { call, .. },
                ..
            }) = self.conns.remove(key)
            {
                self.fail(call, &io::Error::other("cannot register the connection"));
            }
            return;
        }
        // The socket says when the connect is done.
        self.arm(key);
    }

    fn arm(&mut self, key: UpKey) {
        if let Some(up) = self.conns.get_mut(key) {
            self.deadlines.arm(&mut up.armed, up.due, key);
        }
    }

    /// Step a connection as far as its sockets allow.
    fn drive(&mut self, key: UpKey) {
        loop {
            let Some(up) = self.conns.get_mut(key) else {
                return;
            };
            let next = match std::mem::replace(&mut up.state, State::Idle) {
                State::Idle => match up.reader.fill(&mut up.stream) {
                    Err(e) if would_block(&e) => return,
                    // Closed by the upstream, or bytes nobody asked for.
                    _ => {
                        self.close(key);
                        return;
                    }
                },
                State::Sending { call, sent } => up.send(call, sent, &mut self.out),
                State::Head { call } => up.head(call, &mut self.out),
                State::Body {
                    call,
                    body,
                    keep_alive,
                    code,
                } => up.body(call, body, keep_alive, code, &mut self.out),
            };
            match next {
                Next::Again => continue,
                Next::Wait => {
                    if let Some(up) = self.conns.get_mut(key) {
                        up.due = after(Instant::now(), self.timeout);
                    }
                    self.arm(key);
                    return;
                }
                Next::Held => {
                    self.held.push(key);
                    return;
                }
                next => {
                    if matches!(next, Next::Done { .. }) {
                        self.down.store(false, Ordering::Relaxed);
                    }
                    return self.settle(key, next);
                }
            }
        }
    }

    /// After a call on `key` ended one way or another: the connection
    /// carries the next queued call, waits idle, or is closed (and a new
    /// one takes the next queued call).
    fn settle(&mut self, key: UpKey, next: Next) {
        match next {
            Next::Done { reusable: true } => {
                if let Some(up) = self.conns.get_mut(key) {
                    up.reused = true;
                    match self.next_queued() {
                        Some(call) => self.begin(key, call),
                        None => self.idle.push(key),
                    }
                    return;
                }
            }
            Next::Retry(call, e) => {
                log::debug!("stale upstream connection ({e}); sending again on a new one");
                self.close(key);
                return self.open(call);
            }
            Next::Failed(call, e) => {
                self.close(key);
                self.fail(call, &e);
            }
            Next::Unreachable(call, e) => {
                self.close(key);
                self.unreachable(call, &e);
            }
            Next::Done { reusable: false } | Next::Closed => self.close(key),
            Next::Wait | Next::Held | Next::Again => return,
        }
        if self.conns.len() < self.max_conns {
            if let Some(call) = self.next_queued() {
                self.dispatch(call);
            }
        }
    }

    fn close(&mut self, key: UpKey) {
        if let Some(mut up) = self.conns.remove(key) {
            let _ = self.registry.deregister(&mut up.stream);
        }
        self.idle.retain(|k| *k != key);
        self.held.retain(|k| *k != key);
    }

    /// The connect failed: the upstream is down (the health check tells
    /// the LBs), the request gets 502.
    fn unreachable(&mut self, call: Call, e: &io::Error) {
        self.down.store(true, Ordering::Relaxed);
        log::error!(
            "{}: upstream {} unreachable: {e}",
            call.trace.id(),
            self.addr
        );
        self.bad_gateway(call);
    }

    fn fail(&mut self, call: Call, e: &io::Error) {
        log::error!("{}: upstream {} failed: {e}", call.trace.id(), self.addr);
        self.bad_gateway(call);
    }

    fn bad_gateway(&mut self, call: Call) {
        if call.gone() {
            return self.dropped(call);
        }
        let (status, body) = BAD_GATEWAY;
        let mut frames = Vec::new();
        let head = ResponseHead {
            status: status.into(),
            headers: vec![
                ("Content-Type".into(), "text/plain; charset=utf-8".into()),
                ("Content-Length".into(), body.len().to_string()),
            ],
        };
        let _ = encode_head(&mut frames, call.rno, &head);
        if !call.head_request {
            encode_body(&mut frames, call.rno, body);
        }
        call.trace.record('A', format_args!("502 {}", body.len()));
        self.out.ended(call, frames, 502);
    }

    fn dropped(&mut self, call: Call) {
        self.out.dropped(call);
    }
}

/// Whether a non-blocking connect is done: `Ok(false)` while it goes on.
fn connect_done(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

impl Up {
    /// Connect (a new connection) and write the request.
    fn send(&mut self, call: Call, mut sent: usize, out: &mut Outs) -> Next {
        if !self.connected {
            match connect_done(&self.stream) {
                Ok(true) => self.connected = true,
                Ok(false) => {
                    self.state = State::Sending { call, sent };
                    return Next::Wait;
                }
                Err(e) => return Next::Unreachable(call, e),
            }
        }
        if sent == 0 && call.gone() {
            // Nothing sent: the connection stays usable.
            out.dropped(call);
            return Next::Done { reusable: true };
        }
        while sent < call.bytes.len() {
            match self.stream.write(&call.bytes[sent..]) {
                Ok(0) => return self.early(call, io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if would_block(&e) => {
                    self.state = State::Sending { call, sent };
                    return Next::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.early(call, e),
            }
        }
        self.state = State::Head { call };
        Next::Again
    }

    /// Failed before any response byte: sent again on a new connection if
    /// this one carried a request before.
    fn early(&mut self, call: Call, e: io::Error) -> Next {
        if self.reused && self.reader.buffered().is_empty() && is_early(&e) {
            Next::Retry(call, e)
        } else {
            Next::Failed(call, e)
        }
    }

    /// Read the response head and pass it on.
    fn head(&mut self, call: Call, out: &mut Outs) -> Next {
        let h = match self.reader.head(&mut self.stream, call.head_request) {
            Ok(Some(h)) => h,
            Ok(None) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection before a response",
                );
                return self.early(call, e);
            }
            Err(e) if would_block(&e) => {
                self.state = State::Head { call };
                return Next::Wait;
            }
            Err(e) => return self.early(call, e),
        };
        let code = h.code;
        let h = pass_on(h, call.head_request);
        let length = header(&h.headers, "content-length").unwrap_or("?");
        call.trace.record('A', format_args!("{code} {length}"));
        let body = self.reader.body_for(h.framing);
        let mut frames = Vec::new();
        let head = ResponseHead {
            status: h.status,
            headers: h.headers,
        };
        if let Err(e) = encode_head(&mut frames, call.rno, &head) {
            // Cannot be framed (too large): answered 500, the rest of the
            // response is not read.
            log::error!("{}: cannot encode response head: {e}", call.trace.id());
            frames.clear();
            let _ = encode_head(
                &mut frames,
                call.rno,
                &ResponseHead {
                    status: "500 Internal Server Error".into(),
                    headers: vec![("Content-Length".into(), "0".into())],
                },
            );
            out.ended(call, frames, 500);
            return Next::Closed;
        }
        out.emit(&call, frames, false);
        self.state = State::Body {
            call,
            body,
            keep_alive: h.keep_alive,
            code,
        };
        Next::Again
    }

    /// Pass the body on while there is room; end the call at its end.
    fn body(
        &mut self,
        call: Call,
        mut body: ReadBody,
        keep_alive: bool,
        code: u16,
        out: &mut Outs,
    ) -> Next {
        if call.gone() {
            out.dropped(call);
            return Next::Closed;
        }
        let mut frames = Vec::new();
        // Where the body stops for now, if it does: the frames so far go
        // out and the state is kept for the next step.
        let pause = if call.flow.has_room() {
            loop {
                if body.is_done() {
                    break None;
                }
                match self.reader.piece(&mut self.stream, &mut body, PIECE) {
                    Ok(Some(p)) => {
                        encode_body(&mut frames, call.rno, &p);
                        if frames.len() >= ROUND_BYTES {
                            break Some(Next::Again);
                        }
                    }
                    Ok(None) => break None,
                    Err(e) if would_block(&e) => break Some(Next::Wait),
                    Err(e) => {
                        out.abort(call, frames, &e);
                        return Next::Closed;
                    }
                }
            }
        } else {
            Some(Next::Held)
        };
        if let Some(next) = pause {
            out.emit(&call, frames, false);
            self.state = State::Body {
                call,
                body,
                keep_alive,
                code,
            };
            return next;
        }
        out.ended(call, frames, code);
        Next::Done {
            reusable: keep_alive && self.reader.buffered().is_empty(),
        }
    }
}
