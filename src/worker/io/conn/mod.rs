//! One LB connection on the worker: the shared-secret handshake, request
//! frames (environ, body, end, cancel) turned into jobs for the app
//! threads, and the response frames they send back, written in order.

use crate::util::intmap::IntMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::TcpStream;

use super::super::bodies::{Body, BodyIo};
use super::super::shared::{Flow, Job};
use crate::net::{each_frame, Armed, FrameFault};
use crate::proto::auth::{nonce, Secret};
use crate::proto::{
    encode_available, encode_challenge, encode_hello, encode_null, Hello, ProtoError, Rno, ToWorker,
};
use crate::tracelog::TraceLog;
use crate::util::allow::AllowList;
use crate::util::ratelog::{held_back, LogLimiter};
use crate::util::wbuf::WriteBuf;

mod handshake;
mod requests;

use handshake::{Challenge, AUTH_MAX_FRAME, AUTH_TIMEOUT};

/// Bytes kept in a connection's write buffer before app frames wait.
pub(super) const WBUF_CAP: usize = 256 * 1024;

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

/// What the connections share: settings, the way to the app threads,
/// counters. Kept apart from the connections so that both can be borrowed.
pub(super) struct Ctx {
    pub cfg: IoConfig,
    pub jobs: Sender<Job>,
    /// Forwarding on this thread, when the app only forwards.
    pub proxy: Option<super::proxy::Proxy>,
    pub bodies: BodyIo,
    pub trace: TraceLog,
    /// The current résumé and hello (with the failure counts), encoded,
    /// for new connections.
    pub resume_frame: Vec<u8>,
    pub hello_frame: Vec<u8>,
    pub hello: Hello,
    next_req_id: u64,
    /// Requests handed to app threads (or forwarded) and not yet done.
    pub busy: usize,
    pub paused: bool,
    /// The application can serve (new connections hear it when not).
    pub available: bool,
    pub last_frame: Instant,
    /// Refused peers and failed handshakes, by peer address and reason.
    refusals: LogLimiter<(std::net::IpAddr, String)>,
}

impl Ctx {
    pub(super) fn new(
        cfg: IoConfig,
        jobs: Sender<Job>,
        proxy: Option<super::proxy::Proxy>,
        bodies: BodyIo,
        trace: TraceLog,
        resume_frame: Vec<u8>,
        hello: Hello,
    ) -> Ctx {
        let mut hello_frame = Vec::new();
        let _ = encode_hello(&mut hello_frame, &hello);
        Ctx {
            cfg,
            jobs,
            proxy,
            bodies,
            trace,
            resume_frame,
            hello_frame,
            hello,
            next_req_id: 0,
            busy: 0,
            paused: false,
            available: true,
            last_frame: Instant::now(),
            refusals: LogLimiter::new(Duration::from_secs(60)),
        }
    }

    /// What a new LB connection is told first: the résumé, the hello, and
    /// "unavailable" when the application is down.
    pub(super) fn greeting(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.resume_frame);
        out.extend_from_slice(&self.hello_frame);
        if !self.available {
            encode_available(out, false);
        }
    }

    /// Log a refusal that a peer can cause at will, rate-limited per peer.
    pub(super) fn refused(&mut self, peer: SocketAddr, why: &str) {
        let key = (peer.ip(), why.to_string());
        if let Some(n) = self.refusals.check(key, Instant::now()) {
            log::warn!("LB {peer}: {why}{}", held_back(n));
        }
    }
}

pub(super) enum Req {
    Receiving {
        req_id: u64,
        environ: crate::proto::Environ,
        body: Body,
    },
    Running {
        req_id: u64,
        cancel: Arc<AtomicBool>,
    },
    /// The environ was refused: its body is ignored, and its end answered
    /// with 400 (the LB sees an ordinary request and response).
    Refused,
}

pub(super) struct LbConn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Names this connection in jobs and their output (its slot-map key).
    id: u64,
    pub trace_no: u32,
    pub rbuf: Vec<u8>,
    out: WriteBuf,
    /// App frames waiting for room in `out`.
    held: VecDeque<Vec<u8>>,
    flow: Arc<Flow>,
    requests: IntMap<Rno, Req>,
    /// When a keep-alive is due, unless something is written before.
    keepalive_at: Instant,
    pub armed: Armed,
    /// Set until the LB answers the challenge (with a shared secret only):
    /// nothing but the answer is taken, and nothing but the challenge sent.
    challenge: Option<Challenge>,
}

/// What a deadline did to a connection.
pub(super) enum Due {
    Keep,
    Close(&'static str),
}

impl LbConn {
    /// A new connection, its first frames queued: the challenge, or the
    /// résumé and hello. `None` when no nonce can be had.
    pub(super) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        id: u64,
        trace_no: u32,
        ctx: &Ctx,
    ) -> Option<LbConn> {
        let mut out = WriteBuf::new();
        let challenge = match &ctx.cfg.secret {
            None => {
                ctx.greeting(out.buf());
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
                    return None;
                }
            },
        };
        Some(LbConn {
            stream,
            peer,
            id,
            trace_no,
            rbuf: Vec::new(),
            out,
            held: VecDeque::new(),
            flow: Arc::new(Flow::default()),
            requests: IntMap::default(),
            keepalive_at: Instant::now() + ctx.cfg.keepalive,
            armed: Armed::default(),
            challenge,
        })
    }

    /// Past the handshake (or none is asked for).
    pub(super) fn is_open(&self) -> bool {
        self.challenge.is_none()
    }

    pub(super) fn idle_output(&self) -> bool {
        self.out.unsent() == 0 && self.held.is_empty()
    }

    pub(super) fn has_requests(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Requests whose body is still arriving.
    pub(super) fn receiving(&self) -> usize {
        self.requests
            .values()
            .filter(|r| matches!(r, Req::Receiving { .. }))
            .count()
    }

    /// Queue a frame the I/O thread made (résumé, drain) if the handshake
    /// is over; false if not.
    pub(super) fn send_frame(&mut self, frame: &[u8]) -> bool {
        if !self.is_open() {
            return false;
        }
        self.out.buf().extend_from_slice(frame);
        true
    }

    /// When this connection is next due: the challenge's deadline, or a
    /// keep-alive.
    pub(super) fn deadline(&self) -> Instant {
        match &self.challenge {
            Some(c) => c.deadline,
            None => self.keepalive_at,
        }
    }

    pub(super) fn on_deadline(&mut self, now: Instant, ctx: &mut Ctx) -> Due {
        if let Some(c) = &self.challenge {
            if now < c.deadline {
                return Due::Keep;
            }
            let why = format!(
                "no answer to the challenge within {} s (has it the shared secret, \
                 --secret-file?); closing",
                AUTH_TIMEOUT.as_secs()
            );
            ctx.refused(self.peer, &why);
            return Due::Close("no answer to the challenge");
        }
        if now >= self.keepalive_at {
            // Output still waiting for the socket says as much.
            if self.out.unsent() == 0 {
                encode_null(self.out.buf(), 0);
            }
            self.keepalive_at = crate::util::time::after(now, ctx.cfg.keepalive);
        }
        Due::Keep
    }

    /// An app thread's frames for request `rno` (of job `req_id`). False
    /// when they are for a request no longer here (dropped, flow released).
    pub(super) fn app_output(&mut self, rno: Rno, req_id: u64, bytes: Vec<u8>, done: bool) -> bool {
        let current = matches!(
            self.requests.get(&rno),
            Some(Req::Running { req_id: r, .. }) if *r == req_id
        );
        let n = bytes.len();
        if !current {
            self.flow.release(n);
            return false;
        }
        if done {
            self.requests.remove(&rno);
        }
        if n == 0 {
            return false;
        }
        if self.held.is_empty() && self.out.unsent() < WBUF_CAP {
            self.out.buf().extend_from_slice(&bytes);
            self.flow.release(n);
        } else {
            self.held.push_back(bytes);
        }
        true
    }

    /// Write as much as the socket takes, refilling from held app frames.
    pub(super) fn write_out(&mut self, keepalive: Duration) -> std::io::Result<()> {
        loop {
            while self.out.unsent() < WBUF_CAP {
                let Some(b) = self.held.pop_front() else {
                    break;
                };
                self.out.buf().extend_from_slice(&b);
                self.flow.release(b.len());
            }
            if self.out.flush_to(&mut self.stream)? > 0 {
                self.keepalive_at = crate::util::time::after(Instant::now(), keepalive);
            }
            // All out and more held: go on; otherwise the socket is full.
            if !self.out.is_empty() || self.held.is_empty() {
                return Ok(());
            }
        }
    }

    /// The connection is closing: app threads stop writing to it, bodies
    /// being received are dropped.
    pub(super) fn closed(&mut self, ctx: &Ctx, why: &str) {
        self.flow.close();
        for (_, req) in self.requests.drain() {
            match req {
                Req::Running { cancel, .. } => cancel.store(true, Ordering::Relaxed),
                Req::Receiving { body, .. } => body.discard(&ctx.bodies),
                Req::Refused => {}
            }
        }
        if self.challenge.is_some() {
            // Never got past the challenge: its warning, if any, is out.
            log::debug!("LB {} closed before the handshake ended: {why}", self.peer);
        } else {
            log::info!(
                "LB connection {} from {} closed: {why}",
                self.trace_no,
                self.peer
            );
        }
    }

    /// Decode and handle every whole frame in the read buffer; an error
    /// closes the connection (logged here, or rate-limited where found).
    pub(super) fn take_frames(&mut self, ctx: &mut Ctx) -> Result<(), Closing> {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let result = loop {
            let challenged = self.challenge.is_some();
            let limit = if challenged {
                AUTH_MAX_FRAME
            } else {
                ctx.cfg.max_frame
            };
            let result = each_frame(
                &mut rbuf,
                |b| ToWorker::decode(b, limit),
                |msg| {
                    ctx.last_frame = Instant::now();
                    if self.challenge.is_some() {
                        self.authenticate(ctx, msg)?;
                        // Answered: the frame limit changes for the rest.
                        return Ok(self.challenge.is_some());
                    }
                    self.handle(ctx, msg)?;
                    Ok(!ctx.paused)
                },
            );
            if result.is_ok() && challenged && self.challenge.is_none() && !rbuf.is_empty() {
                continue;
            }
            break result;
        };
        self.rbuf = rbuf;
        let closing = match result {
            Ok(()) => return Ok(()),
            Err(FrameFault::Handler(c)) => c,
            Err(FrameFault::Decode(e)) if self.challenge.is_some() => {
                ctx.refused(
                    self.peer,
                    &format!("{e} before answering the challenge; closing"),
                );
                Closing::Handshake(e.to_string())
            }
            Err(FrameFault::Decode(e)) => Closing::Protocol(e),
        };
        if let Closing::Protocol(e) = &closing {
            log::error!("protocol error from LB {}: {e}", self.peer);
        }
        Err(closing)
    }

    pub(super) fn request_id(&self, rno: Rno) -> String {
        format!("{}.{}", self.trace_no, rno)
    }
}

/// Why a connection is closed while its frames are taken.
pub(super) enum Closing {
    /// The LB broke the protocol (logged where the frames are taken).
    Protocol(ProtoError),
    /// A failed handshake (logged, rate-limited, where it was found).
    Handshake(String),
    /// The app threads are gone: the process is going down.
    AppsGone,
}

impl std::fmt::Display for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closing::Protocol(e) => write!(f, "protocol error: {e}"),
            Closing::Handshake(why) => write!(f, "handshake failed: {why}"),
            Closing::AppsGone => f.write_str("the app threads are gone"),
        }
    }
}
