//! The worker's I/O thread: one `mio::Poll` owning the listener and every
//! LB connection. It decodes frames, collects each request's environ and
//! body, hands complete requests to the app threads, and writes the
//! response frames they send back.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::app::Request;
use super::shared::{Ctl, Flow, Job, Out};
use super::validate;
use super::Command;
use crate::proto::auth::{nonce, Secret, NONCE_LEN};
use crate::proto::{
    encode_challenge, encode_drain, encode_end, encode_head, encode_null, encode_resume, Decoded,
    Environ, ResponseHead, Resume, Rno, ToWorker,
};
use crate::tracelog::TraceLog;
use crate::util::allow::AllowList;
use crate::util::ratelog::{held_back, LogLimiter};
use crate::util::signals::SignalEvent;
use crate::util::slab::Slab;
use crate::util::spill::SpillBuffer;
use crate::util::wbuf::WriteBuf;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Bytes kept in a connection's write buffer before app frames wait.
const WBUF_CAP: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// How long a draining worker waits for stray requests after the last
/// frame from its LBs.
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// How long an LB has to answer the challenge.
pub(crate) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest frame taken from a peer that has not answered the
/// challenge yet (an answer is about 50 bytes).
const AUTH_MAX_FRAME: usize = 1024;
/// A peer's refusals and failed handshakes: one log line per this.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A challenge sent on a connection and not answered yet.
struct Challenge {
    nonce: [u8; NONCE_LEN],
    deadline: Instant,
}
enum Req {
    Receiving {
        req_id: u64,
        environ: Environ,
        body: SpillBuffer,
        failed: bool,
    },
    Running {
        req_id: u64,
        cancel: Arc<AtomicBool>,
    },
    /// The environ was refused: its body is ignored, and its end answered
    /// with 400 (the LB sees an ordinary request and response).
    Refused,
}

struct LbConn {
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    trace_no: u32,
    rbuf: Vec<u8>,
    out: WriteBuf,
    /// App frames waiting for room in `out`.
    held: VecDeque<Vec<u8>>,
    flow: Arc<Flow>,
    requests: HashMap<Rno, Req>,
    last_write: Instant,
    /// Set until the LB answers the challenge (with a shared secret only):
    /// nothing but the answer is taken, and nothing but the challenge sent.
    challenge: Option<Challenge>,
}

impl LbConn {
    fn unsent(&self) -> usize {
        self.out.unsent()
    }

    fn idle_output(&self) -> bool {
        self.unsent() == 0 && self.held.is_empty()
    }
}

/// Settings of the I/O loop.
pub(crate) struct IoConfig {
    pub max_frame: usize,
    pub spill_threshold: usize,
    pub keepalive: Duration,
    pub shutdown_timeout: Duration,
    /// Requests queued for the app threads before reading pauses.
    pub max_queued: usize,
    /// LBs must prove they have it before anything else.
    pub secret: Option<Secret>,
    /// Peers that may connect (`None`: any).
    pub allow: Option<AllowList>,
}

/// Everything but the connections, so that handlers can borrow both.
struct Ctx {
    cfg: IoConfig,
    jobs: Sender<Job>,
    trace: TraceLog,
    /// The current résumé and hello, encoded, for new connections.
    resume_frame: Vec<u8>,
    hello_frame: Vec<u8>,
    next_conn_id: u64,
    next_req_id: u64,
    trace_nos: BTreeSet<u32>,
    /// Jobs handed to app threads and not yet done.
    busy: usize,
    paused: bool,
    last_frame: Instant,
    /// Refused peers and failed handshakes, by peer address and reason.
    refusals: LogLimiter<(std::net::IpAddr, String)>,
}

impl Ctx {
    /// Log a refusal that a peer can cause at will, rate-limited per peer.
    fn refused(&mut self, peer: SocketAddr, why: &str) {
        let key = (peer.ip(), why.to_string());
        if let Some(n) = self.refusals.check(key, Instant::now()) {
            log::warn!("LB {peer}: {why}{}", held_back(n));
        }
    }
}

pub(crate) struct IoLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<LbConn>,
    by_id: HashMap<u64, usize>,
    out_rx: Receiver<Out>,
    ctl_rx: Receiver<Ctl>,
    cmd_rx: Receiver<Command>,
    signals: Option<Receiver<SignalEvent>>,
    dirty: Vec<usize>,
    draining: Option<Instant>,
    /// Set by app threads that woke us; cleared before draining their channel.
    wake_pending: Arc<AtomicBool>,
    ctx: Ctx,
}

#[allow(clippy::too_many_arguments)]
impl IoLoop {
    pub(crate) fn new(
        poll: Poll,
        listener: TcpListener,
        cfg: IoConfig,
        jobs: Sender<Job>,
        out_rx: Receiver<Out>,
        ctl_rx: Receiver<Ctl>,
        cmd_rx: Receiver<Command>,
        signals: Option<Receiver<SignalEvent>>,
        trace: TraceLog,
        resume: &Resume,
        hello_frame: Vec<u8>,
        wake_pending: Arc<AtomicBool>,
    ) -> io::Result<IoLoop> {
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut resume_frame = Vec::new();
        encode_resume(&mut resume_frame, resume).map_err(io::Error::other)?;
        Ok(IoLoop {
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            by_id: HashMap::new(),
            out_rx,
            ctl_rx,
            cmd_rx,
            signals,
            dirty: Vec::new(),
            draining: None,
            wake_pending,
            ctx: Ctx {
                cfg,
                jobs,
                trace,
                resume_frame,
                hello_frame,
                next_conn_id: 0,
                next_req_id: 0,
                trace_nos: BTreeSet::new(),
                busy: 0,
                paused: false,
                last_frame: Instant::now(),
                refusals: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            },
        })
    }

    /// Run until shut down.
    pub(crate) fn run(mut self) -> io::Result<()> {
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
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        let slot = t - FIRST_CONN;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(slot);
                        }
                        if event.is_writable() {
                            self.mark_dirty(slot);
                        }
                    }
                }
            }
            if self.drain_channels() {
                // A second stop: requests in flight are cut off, and the
                // exit status says so.
                let cut = self.ctx.busy
                    + self
                        .conns
                        .iter()
                        .map(|(_, c)| {
                            c.requests
                                .values()
                                .filter(|r| matches!(r, Req::Receiving { .. }))
                                .count()
                        })
                        .sum::<usize>();
                self.close_all();
                if cut > 0 {
                    return Err(io::Error::other(format!(
                        "stopped at once: {cut} request(s) in flight cut off"
                    )));
                }
                return Ok(());
            }
            self.flush_dirty();
            self.maybe_unpause();
            if self.draining.is_some() && self.drained() {
                self.close_all();
                return Ok(());
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(allow) = &self.ctx.cfg.allow {
                        if !allow.permits(peer.ip()) {
                            drop(stream);
                            self.ctx.refused(peer, "connection refused: not in --allow");
                            continue;
                        }
                    }
                    let _ = stream.set_nodelay(true);
                    let trace_no = (1..)
                        .find(|n| !self.ctx.trace_nos.contains(n))
                        .unwrap_or(u32::MAX);
                    self.ctx.next_conn_id += 1;
                    let id = self.ctx.next_conn_id;
                    let mut out = WriteBuf::new();
                    let challenge = match &self.ctx.cfg.secret {
                        None => {
                            out.buf().extend_from_slice(&self.ctx.resume_frame);
                            out.buf().extend_from_slice(&self.ctx.hello_frame);
                            None
                        }
                        Some(_) => match nonce() {
                            Ok(nonce) => {
                                encode_challenge(out.buf(), &nonce);
                                Some(Challenge {
                                    nonce,
                                    deadline: Instant::now() + AUTH_TIMEOUT,
                                })
                            }
                            Err(e) => {
                                log::error!("no random nonce for LB {peer}: {e}; closing");
                                continue;
                            }
                        },
                    };
                    let slot = self.conns.insert(LbConn {
                        stream,
                        peer,
                        id,
                        trace_no,
                        rbuf: Vec::new(),
                        out,
                        held: VecDeque::new(),
                        flow: Arc::new(Flow::default()),
                        requests: HashMap::new(),
                        last_write: Instant::now(),
                        challenge,
                    });
                    let conn = self.conns.get_mut(slot).expect("just inserted");
                    if let Err(e) = self.poll.registry().register(
                        &mut conn.stream,
                        Token(slot + FIRST_CONN),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::error!("cannot register connection from {peer}: {e}");
                        self.conns.remove(slot);
                        continue;
                    }
                    self.ctx.trace_nos.insert(trace_no);
                    self.by_id.insert(id, slot);
                    if self.ctx.cfg.secret.is_some() {
                        // Logged at info once it answers (a peer without the
                        // secret may retry every second).
                        log::debug!("LB connected from {peer}: challenge sent");
                    } else {
                        log::info!("LB connected from {peer} (connection {trace_no})");
                    }
                    self.mark_dirty(slot);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and let the next event retry.
                    log::error!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if !self.dirty.contains(&slot) {
            self.dirty.push(slot);
        }
    }

    fn read(&mut self, slot: usize) {
        if self.ctx.paused {
            return;
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut chunk = [0u8; READ_CHUNK];
        let outcome = loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => break Err("closed by the LB".to_string()),
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&chunk[..n]);
                    if let Err(e) = process_frames(conn, &mut self.ctx) {
                        break Err(e);
                    }
                    if self.ctx.paused {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e.to_string()),
            }
        };
        match outcome {
            Ok(()) => {
                if !conn.idle_output() {
                    self.mark_dirty(slot);
                }
            }
            Err(why) => self.close(slot, &why),
        }
    }

    fn close(&mut self, slot: usize, why: &str) {
        let Some(mut conn) = self.conns.remove(slot) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        conn.flow.close();
        for (_, req) in conn.requests.drain() {
            if let Req::Running { cancel, .. } = req {
                cancel.store(true, Ordering::Relaxed);
            }
        }
        self.by_id.remove(&conn.id);
        self.ctx.trace_nos.remove(&conn.trace_no);
        if conn.challenge.is_some() {
            // Never got past the challenge: its warning, if any, is out.
            log::debug!("LB {} closed before the handshake ended: {why}", conn.peer);
        } else {
            log::info!(
                "LB connection {} from {} closed: {why}",
                conn.trace_no,
                conn.peer
            );
        }
    }

    fn close_all(&mut self) {
        for slot in self.conns.keys() {
            self.flush(slot);
            self.close(slot, "worker shutting down");
        }
    }

    /// Handle messages from the other threads. True: exit now.
    fn drain_channels(&mut self) -> bool {
        // Cleared first: a message sent after this wakes us again.
        self.wake_pending.store(false, Ordering::Release);
        while let Ok(out) = self.out_rx.try_recv() {
            self.on_out(out);
        }
        while let Ok(ctl) = self.ctl_rx.try_recv() {
            match ctl {
                Ctl::Publish(resume) => self.publish(&resume),
                Ctl::Tick => self.tick(),
            }
        }
        let mut stop = 0;
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            match cmd {
                Command::Stop => stop += 1,
                Command::StopNow => stop += 2,
                Command::Reopen => self.ctx.trace.reopen(),
                Command::Allow(allow) => self.set_allow(allow),
            }
        }
        if let Some(signals) = &self.signals {
            while let Ok(sig) = signals.try_recv() {
                match sig {
                    SignalEvent::Stop => stop += 1,
                    SignalEvent::Reopen => self.ctx.trace.reopen(),
                }
            }
        }
        if stop == 0 {
            return false;
        }
        if self.draining.is_some() || stop > 1 {
            log::warn!("second stop request: exiting at once");
            return true;
        }
        self.start_drain();
        false
    }

    /// A new list of peers that may connect; connections from peers no
    /// longer on it are closed.
    fn set_allow(&mut self, allow: Option<AllowList>) {
        match &allow {
            Some(a) => log::info!("connections allowed from {a}"),
            None => log::info!("connections allowed from any address"),
        }
        if let Some(a) = &allow {
            for slot in self.conns.keys() {
                let Some(peer) = self.conns.get(slot).map(|c| c.peer) else {
                    continue;
                };
                if !a.permits(peer.ip()) {
                    log::warn!("LB {peer} is not in the new allowed list; closing");
                    self.close(slot, "not in the allowed list any more");
                }
            }
        }
        self.ctx.cfg.allow = allow;
    }

    fn start_drain(&mut self) {
        log::info!(
            "shutting down: draining {} LB connection(s), {} request(s) in flight",
            self.conns.len(),
            self.ctx.busy
        );
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.draining = Some(crate::util::time::after(
            Instant::now(),
            self.ctx.cfg.shutdown_timeout,
        ));
        self.ctx.last_frame = Instant::now();
        for slot in self.conns.keys() {
            match self.conns.get_mut(slot) {
                Some(conn) if conn.challenge.is_none() => encode_drain(conn.out.buf()),
                _ => continue,
            }
            self.mark_dirty(slot);
        }
    }

    fn drained(&self) -> bool {
        let Some(deadline) = self.draining else {
            return false;
        };
        if Instant::now() >= deadline {
            log::warn!("shutdown timeout: exiting with requests in flight");
            return true;
        }
        if self.conns.is_empty() {
            return true;
        }
        let idle = self.ctx.busy == 0
            && self
                .conns
                .iter()
                .all(|(_, c)| c.requests.is_empty() && c.idle_output());
        idle && self.ctx.last_frame.elapsed() >= DRAIN_QUIET
    }

    fn on_out(&mut self, out: Out) {
        if out.done {
            self.ctx.busy = self.ctx.busy.saturating_sub(1);
        }
        let Some(&slot) = self.by_id.get(&out.conn_id) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let current = matches!(
            conn.requests.get(&out.rno),
            Some(Req::Running { req_id, .. }) if *req_id == out.req_id
        );
        let n = out.bytes.len();
        if !current {
            conn.flow.release(n);
            return;
        }
        if out.done {
            conn.requests.remove(&out.rno);
        }
        if n == 0 {
            return;
        }
        if conn.held.is_empty() && conn.unsent() < WBUF_CAP {
            conn.out.buf().extend_from_slice(&out.bytes);
            conn.flow.release(n);
        } else {
            conn.held.push_back(out.bytes);
        }
        self.mark_dirty(slot);
    }

    fn publish(&mut self, resume: &Resume) {
        let mut frame = Vec::new();
        if let Err(e) = encode_resume(&mut frame, resume) {
            log::error!("cannot encode résumé: {e}");
            return;
        }
        for slot in self.conns.keys() {
            match self.conns.get_mut(slot) {
                Some(conn) if conn.challenge.is_none() => conn.out.buf().extend_from_slice(&frame),
                _ => continue,
            }
            self.mark_dirty(slot);
        }
        self.ctx.resume_frame = frame;
    }

    fn tick(&mut self) {
        let keepalive = self.ctx.cfg.keepalive;
        let now = Instant::now();
        for slot in self.conns.keys() {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if let Some(c) = &conn.challenge {
                if now >= c.deadline {
                    let peer = conn.peer;
                    let why = format!(
                        "no answer to the challenge within {} s (has it the shared secret, \
                         --secret-file?); closing",
                        AUTH_TIMEOUT.as_secs()
                    );
                    self.ctx.refused(peer, &why);
                    self.close(slot, "no answer to the challenge");
                }
                continue;
            }
            if conn.unsent() == 0 && conn.last_write.elapsed() >= keepalive {
                encode_null(conn.out.buf(), 0);
                self.mark_dirty(slot);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for slot in dirty {
            self.flush(slot);
        }
    }

    fn flush(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Err(e) = write_out(conn) {
            self.close(slot, &format!("write failed: {e}"));
        }
    }

    fn maybe_unpause(&mut self) {
        if self.ctx.paused && self.ctx.busy < self.ctx.cfg.max_queued / 2 {
            self.ctx.paused = false;
            // Edge-triggered: data that arrived while paused brings no new
            // event, so read every connection now.
            for slot in self.conns.keys() {
                self.read(slot);
            }
            self.flush_dirty();
        }
    }
}

/// Write as much as the socket takes, refilling from held app frames.
fn write_out(conn: &mut LbConn) -> io::Result<()> {
    loop {
        while conn.unsent() < WBUF_CAP {
            let Some(b) = conn.held.pop_front() else {
                break;
            };
            conn.out.buf().extend_from_slice(&b);
            conn.flow.release(b.len());
        }
        if conn.out.flush_to(&mut conn.stream)? > 0 {
            conn.last_write = Instant::now();
        }
        // All out and more held: go on; otherwise the socket is full.
        if !conn.out.is_empty() || conn.held.is_empty() {
            return Ok(());
        }
    }
}

/// Why a connection is closed while reading from it.
enum Closing {
    /// A protocol error (logged here).
    Protocol(String),
    /// A failed handshake (logged, rate-limited, where it was found).
    Handshake(String),
}

/// Decode and handle every whole frame in the read buffer.
fn process_frames(conn: &mut LbConn, ctx: &mut Ctx) -> Result<(), String> {
    let mut pos = 0;
    let result = loop {
        let limit = if conn.challenge.is_some() {
            AUTH_MAX_FRAME
        } else {
            ctx.cfg.max_frame
        };
        match ToWorker::decode(&conn.rbuf[pos..], limit) {
            Ok(Decoded::Complete(msg, used)) => {
                pos += used;
                ctx.last_frame = Instant::now();
                let handled = if conn.challenge.is_some() {
                    authenticate(conn, ctx, msg)
                } else {
                    handle(conn, ctx, msg).map_err(Closing::Protocol)
                };
                if let Err(e) = handled {
                    break Err(e);
                }
                if ctx.paused {
                    break Ok(());
                }
            }
            Ok(Decoded::Partial) => break Ok(()),
            Err(e) if conn.challenge.is_some() => {
                ctx.refused(
                    conn.peer,
                    &format!("{e} before answering the challenge; closing"),
                );
                break Err(Closing::Handshake(e.to_string()));
            }
            Err(e) => break Err(Closing::Protocol(e.to_string())),
        }
    };
    conn.rbuf.drain(..pos);
    result.map_err(|closing| match closing {
        Closing::Protocol(why) => {
            log::error!("protocol error from LB {}: {why}", conn.peer);
            format!("protocol error: {why}")
        }
        Closing::Handshake(why) => format!("handshake failed: {why}"),
    })
}

/// The only frame taken before the challenge is answered: the answer.
/// Right, and the connection starts as any other (résumé, hello).
fn authenticate(conn: &mut LbConn, ctx: &mut Ctx, msg: ToWorker) -> Result<(), Closing> {
    let (Some(challenge), Some(secret)) = (&conn.challenge, &ctx.cfg.secret) else {
        return Ok(());
    };
    let why = match msg {
        // An LB may keep the connection alive while it waits for the
        // challenge (it was late); that is no answer, and no offence.
        ToWorker::KeepAlive => return Ok(()),
        ToWorker::Auth(mac) if secret.verify(&challenge.nonce, &mac) => {
            conn.challenge = None;
            conn.out.buf().extend_from_slice(&ctx.resume_frame);
            conn.out.buf().extend_from_slice(&ctx.hello_frame);
            let ip = conn.peer.ip();
            ctx.refusals.forget_if(|(k, _)| *k == ip);
            log::info!(
                "LB connected from {} (connection {}), shared secret proven",
                conn.peer,
                conn.trace_no
            );
            return Ok(());
        }
        ToWorker::Auth(_) => "wrong answer to the challenge: the shared secrets differ",
        _ => "sent a request frame instead of answering the challenge (has it no --secret-file?)",
    };
    ctx.refused(conn.peer, &format!("{why}; closing"));
    Err(Closing::Handshake(why.into()))
}

fn request_id(conn: &LbConn, rno: Rno) -> String {
    format!("{}.{}", conn.trace_no, rno)
}

fn handle(conn: &mut LbConn, ctx: &mut Ctx, msg: ToWorker) -> Result<(), String> {
    match msg {
        ToWorker::KeepAlive => {}
        ToWorker::Auth(_) => return Err("an answer to a challenge that was not sent".into()),
        ToWorker::Environ(rno, pairs) => {
            if conn.requests.contains_key(&rno) {
                return Err(format!("request number {rno} reused while in flight"));
            }
            let environ = match validate::environ(pairs) {
                Ok(env) => env,
                Err(why) => {
                    log::warn!(
                        "{}: request from LB {} refused (400): {why}",
                        request_id(conn, rno),
                        conn.peer
                    );
                    conn.requests.insert(rno, Req::Refused);
                    return Ok(());
                }
            };
            ctx.next_req_id += 1;
            if ctx.trace.is_enabled() {
                let method = environ.get("REQUEST_METHOD").map_or("", String::as_str);
                let url = environ
                    .get("REQUEST_URI")
                    .or_else(|| environ.get("PATH_INFO"))
                    .map_or("", String::as_str);
                ctx.trace
                    .record('B', request_id(conn, rno), format_args!("{method} {url}"));
            }
            conn.requests.insert(
                rno,
                Req::Receiving {
                    req_id: ctx.next_req_id,
                    environ,
                    body: SpillBuffer::new(ctx.cfg.spill_threshold),
                    failed: false,
                },
            );
        }
        ToWorker::Body(rno, data) => {
            let trace_no = conn.trace_no;
            if let Some(Req::Receiving { body, failed, .. }) = conn.requests.get_mut(&rno) {
                if !*failed {
                    if let Err(e) = body.write(&data) {
                        log::error!("{trace_no}.{rno}: cannot store request body: {e}");
                        *failed = true;
                    }
                }
            }
        }
        ToWorker::EndOfBody(rno) => {
            match conn.requests.get(&rno) {
                Some(Req::Receiving { .. }) => {}
                Some(Req::Refused) => {
                    conn.requests.remove(&rno);
                    respond_status(conn, rno, "400 Bad Request");
                    return Ok(());
                }
                _ => return Ok(()),
            }
            let Some(Req::Receiving {
                req_id,
                environ,
                body,
                failed,
            }) = conn.requests.remove(&rno)
            else {
                return Ok(());
            };
            let id = request_id(conn, rno);
            ctx.trace.record('I', &id, body.len());
            let reader = match body.into_reader() {
                Ok(r) if !failed => r,
                Ok(_) => {
                    respond_status(conn, rno, "500 Internal Server Error");
                    return Ok(());
                }
                Err(e) => {
                    log::error!("{id}: cannot read back request body: {e}");
                    respond_status(conn, rno, "500 Internal Server Error");
                    return Ok(());
                }
            };
            let cancel = Arc::new(AtomicBool::new(false));
            let class = environ
                .get("resumelb.request_class")
                .cloned()
                .unwrap_or_default();
            let request = Request {
                environ,
                body: reader,
                class,
                trace: ctx.trace.for_request(id),
                cancel: cancel.clone(),
            };
            let job = Job {
                conn_id: conn.id,
                rno,
                req_id,
                flow: conn.flow.clone(),
                request_cancel: cancel.clone(),
                request: Some(request),
            };
            if ctx.jobs.send(job).is_err() {
                return Err("app threads are gone".into());
            }
            ctx.busy += 1;
            if ctx.busy >= ctx.cfg.max_queued {
                ctx.paused = true;
            }
            conn.requests.insert(rno, Req::Running { req_id, cancel });
        }
        ToWorker::Cancel(rno) => match conn.requests.remove(&rno) {
            Some(Req::Running { cancel, .. }) => {
                cancel.store(true, Ordering::Relaxed);
                conn.flow.poke();
                ctx.trace.record('E', request_id(conn, rno), "cancelled");
            }
            Some(Req::Receiving { .. }) => {
                ctx.trace.record('E', request_id(conn, rno), "cancelled");
            }
            Some(Req::Refused) | None => {}
        },
    }
    Ok(())
}

/// Answer from the I/O thread, with no body: 500 when the body could not
/// be stored, 400 for a refused environ.
fn respond_status(conn: &mut LbConn, rno: Rno, status: &str) {
    let head = ResponseHead {
        status: status.into(),
        headers: vec![("Content-Length".into(), "0".into())],
    };
    let _ = encode_head(conn.out.buf(), rno, &head);
    encode_end(conn.out.buf(), rno);
}
