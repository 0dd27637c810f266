//! The worker's I/O thread: one `mio::Poll` owning the listener and every
//! LB connection (`conn`). It hands complete requests to the app threads,
//! writes the response frames they send back, publishes résumés, and shuts
//! down by draining. Built on the shared loop core (`crate::net`).

mod conn;
mod proxy;

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpListener;
use mio::{Poll, Token};
use slotmap::{Key, KeyData, SlotMap};

use super::bodies::BodyIo;
use super::shared::{Ctl, Job, Out};
use super::Command;
use crate::net::{
    fired, read_chunk, register_conn, token_conn, Accepted, Acceptor, Chunk, Control, Deadlines,
    DirtySet, Reactor, Ready, Scratch, StopVerdict, Stops, ACCEPT_RETRY, LISTENER,
};
use crate::proto::{encode_available, encode_drain, encode_hello, encode_resume, Hello, Resume};
use crate::tracelog::TraceLog;
use crate::util::allow::AllowList;

pub(crate) use conn::IoConfig;
use conn::{Ctx, LbConn};
pub(crate) use proxy::Proxy;

const CONN: u8 = 1;

/// How long a draining worker waits for stray requests after the last
/// frame from its LBs.
const DRAIN_QUIET: Duration = Duration::from_millis(500);

slotmap::new_key_type! { struct ConnKey; }

/// What a deadline is for.
#[derive(Debug, Clone, Copy)]
enum Due {
    Conn(ConnKey),
    /// Accepting paused after a failure: try again.
    Accept,
    /// Draining: see whether all is quiet, or the time is up.
    Drain,
}

/// The channels the I/O thread reads.
pub(crate) struct Inputs {
    pub out: Receiver<Out>,
    pub ctl: Receiver<Ctl>,
    pub control: Control<Command>,
    /// Set by app threads that woke us; cleared before draining their
    /// channel.
    pub wake_pending: Arc<AtomicBool>,
}

pub(crate) struct IoLoop {
    poll: Poll,
    acceptor: Acceptor,
    conns: SlotMap<ConnKey, LbConn>,
    /// Trace numbers in use (a new connection takes the smallest free one).
    trace_nos: BTreeSet<u32>,
    inputs: Inputs,
    dirty: DirtySet<ConnKey>,
    deadlines: Deadlines<Due>,
    draining: Option<Instant>,
    /// Where sockets are read into.
    scratch: Scratch,
    ctx: Ctx,
}

impl IoLoop {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        poll: Poll,
        listener: TcpListener,
        cfg: IoConfig,
        jobs: Sender<Job>,
        proxy: Option<Proxy>,
        bodies: BodyIo,
        inputs: Inputs,
        trace: TraceLog,
        resume: &Resume,
        hello: Hello,
    ) -> io::Result<IoLoop> {
        let acceptor = Acceptor::new(listener, poll.registry(), LISTENER)?;
        let mut resume_frame = Vec::new();
        encode_resume(&mut resume_frame, resume).map_err(io::Error::other)?;
        Ok(IoLoop {
            poll,
            acceptor,
            conns: SlotMap::with_key(),
            trace_nos: BTreeSet::new(),
            inputs,
            dirty: DirtySet::default(),
            deadlines: Deadlines::default(),
            draining: None,
            scratch: Scratch::default(),
            ctx: Ctx::new(cfg, jobs, proxy, bodies, trace, resume_frame, hello),
        })
    }

    /// Run until shut down.
    pub(crate) fn run(mut self) -> io::Result<()> {
        crate::net::run(&mut self)
    }

    fn accept_lbs(&mut self) {
        // New connections are greeted with the latest hello and state.
        self.take_ctl();
        loop {
            let (stream, peer) = match self.acceptor.accept() {
                Accepted::Conn(s, p) => (s, p),
                Accepted::Empty => return,
                Accepted::Failed(e) => {
                    self.acceptor.failed(&e, self.poll.registry());
                    self.deadlines
                        .push(Instant::now() + ACCEPT_RETRY, Due::Accept);
                    return;
                }
            };
            if let Some(allow) = &self.ctx.cfg.allow {
                if !allow.permits(peer.ip()) {
                    drop(stream);
                    self.ctx.refused(peer, "connection refused: not in --allow");
                    continue;
                }
            }
            let _ = stream.set_nodelay(true);
            let trace_no = (1..)
                .find(|n| !self.trace_nos.contains(n))
                .unwrap_or(u32::MAX);
            let ctx = &self.ctx;
            let key = self.conns.try_insert_with_key(|key| {
                LbConn::new(stream, peer, key.data().as_ffi(), trace_no, ctx).ok_or(())
            });
            let Ok(key) = key else { continue };
            let conn = &mut self.conns[key];
            let registry = self.poll.registry();
            if !register_conn(registry, &mut conn.stream, CONN, key.data(), &peer) {
                self.conns.remove(key);
                continue;
            }
            self.trace_nos.insert(trace_no);
            if self.ctx.cfg.secret.is_some() {
                // Logged at info once it answers (a peer without the secret
                // may retry every second).
                log::debug!("LB connected from {peer}: challenge sent");
            } else {
                log::info!("LB connected from {peer} (connection {trace_no})");
            }
            self.arm(key);
            self.dirty.mark(key);
        }
    }

    /// Take frames already read (held back by a pause), then what the
    /// socket has, until it is empty or reading pauses.
    fn read(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut outcome = if conn.rbuf.is_empty() {
            Ok(())
        } else {
            conn.take_frames(&mut self.ctx).map_err(|c| c.to_string())
        };
        while outcome.is_ok() && !self.ctx.paused {
            outcome = match read_chunk(&mut conn.stream, &mut conn.rbuf, &mut self.scratch) {
                Chunk::Data => conn.take_frames(&mut self.ctx).map_err(|c| c.to_string()),
                Chunk::Empty => break,
                Chunk::Closed => Err("closed by the LB".to_string()),
                Chunk::Failed(e) => Err(e.to_string()),
            };
        }
        match outcome {
            Ok(()) if !conn.idle_output() => self.dirty.mark(key),
            Ok(()) => {}
            Err(why) => self.close(key, &why),
        }
    }

    fn close(&mut self, key: ConnKey, why: &str) {
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.trace_nos.remove(&conn.trace_no);
        conn.closed(&self.ctx, why);
    }

    fn close_all(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().collect();
        for key in keys {
            self.flush(key);
            self.close(key, "worker shutting down");
        }
    }

    /// Messages from the other threads, and what stop requests among them
    /// ask for.
    fn take_inputs(&mut self) -> StopVerdict {
        // Cleared first: a message sent after this wakes us again.
        self.inputs.wake_pending.store(false, Ordering::Release);
        while let Ok(out) = self.inputs.out.try_recv() {
            self.on_out(out);
        }
        self.take_ctl();
        let mut stops = Stops::default();
        let (commands, reopen, reload) = self.inputs.control.take(&mut stops);
        let reopen = reopen || reload;
        if reopen {
            self.ctx.trace.reopen();
        }
        for cmd in commands {
            match cmd {
                Command::Stop => stops.graceful(),
                Command::StopNow => stops.at_once(),
                Command::Reopen => self.ctx.trace.reopen(),
                Command::Allow(allow) => self.set_allow(allow),
            }
        }
        let verdict = stops.verdict(self.draining.is_some());
        if verdict == StopVerdict::Start {
            self.start_drain();
        }
        verdict
    }

    /// Messages from the timer and health threads: résumés to publish,
    /// failure counts for the hello, availability.
    fn take_ctl(&mut self) {
        while let Ok(ctl) = self.inputs.ctl.try_recv() {
            match ctl {
                Ctl::Publish(resume) => self.publish(&resume),
                Ctl::Failed(failed) => {
                    // New connections' hello carries the counts.
                    self.ctx.hello.failed = failed;
                    self.ctx.hello_frame.clear();
                    let _ = encode_hello(&mut self.ctx.hello_frame, &self.ctx.hello);
                }
                Ctl::Available(available) => {
                    self.ctx.available = available;
                    let mut frame = Vec::new();
                    encode_available(&mut frame, available);
                    self.send_all(&frame);
                }
            }
        }
    }

    /// A new list of peers that may connect; connections from peers no
    /// longer on it are closed.
    fn set_allow(&mut self, allow: Option<AllowList>) {
        match &allow {
            Some(a) => log::info!("connections allowed from {a}"),
            None => log::info!("connections allowed from any address"),
        }
        if let Some(a) = &allow {
            let refused: Vec<(ConnKey, std::net::SocketAddr)> = self
                .conns
                .iter()
                .filter(|(_, c)| !a.permits(c.peer.ip()))
                .map(|(k, c)| (k, c.peer))
                .collect();
            for (key, peer) in refused {
                log::warn!("LB {peer} is not in the new allowed list; closing");
                self.close(key, "not in the allowed list any more");
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
        self.acceptor.close(self.poll.registry());
        let now = Instant::now();
        let deadline = crate::util::time::after(now, self.ctx.cfg.shutdown_timeout);
        self.draining = Some(deadline);
        self.ctx.last_frame = now;
        self.deadlines.push(deadline, Due::Drain);
        self.deadlines.push(now + DRAIN_QUIET, Due::Drain);
        self.send_all(&{
            let mut f = Vec::new();
            encode_drain(&mut f);
            f
        });
    }

    /// Draining and done: nothing in flight and the LBs quiet, or the time
    /// is up.
    fn drained(&mut self) -> bool {
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
                .values()
                .all(|c| !c.has_requests() && c.idle_output());
        idle && self.ctx.last_frame.elapsed() >= DRAIN_QUIET
    }

    fn on_out(&mut self, out: Out) {
        if out.done {
            self.ctx.busy = self.ctx.busy.saturating_sub(1);
        }
        let key = ConnKey::from(KeyData::from_ffi(out.conn_id));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.app_output(out.rno, out.req_id, out.bytes, out.done) {
            self.dirty.mark(key);
        }
    }

    fn publish(&mut self, resume: &Resume) {
        let mut frame = Vec::new();
        if let Err(e) = encode_resume(&mut frame, resume) {
            log::error!("cannot encode résumé: {e}");
            return;
        }
        self.send_all(&frame);
        self.ctx.resume_frame = frame;
    }

    /// Queue a frame on every connection past its handshake.
    fn send_all(&mut self, frame: &[u8]) {
        for (key, conn) in self.conns.iter_mut() {
            if conn.send_frame(frame) {
                self.dirty.mark(key);
            }
        }
    }

    /// Make sure a connection's next deadline is in the heap.
    fn arm(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            let at = conn.deadline();
            self.deadlines.arm(&mut conn.armed, at, Due::Conn(key));
        }
    }

    fn run_deadlines(&mut self) {
        let now = Instant::now();
        if let Some(proxy) = self.ctx.proxy.as_mut() {
            proxy.run_deadlines(now);
        }
        while let Some((at, due)) = self.deadlines.pop_due(now) {
            match due {
                Due::Conn(key) => {
                    let Some(conn) = fired(&mut self.conns, key, at, |c| &mut c.armed) else {
                        continue;
                    };
                    match conn.on_deadline(now, &mut self.ctx) {
                        conn::Due::Keep => {
                            self.dirty.mark(key);
                            self.arm(key);
                        }
                        conn::Due::Close(why) => self.close(key, why),
                    }
                }
                Due::Accept => {
                    if self.acceptor.resume(self.poll.registry()) {
                        self.accept_lbs();
                    }
                }
                // `drained` looks at it after this round.
                Due::Drain => {
                    let quiet = self.ctx.last_frame + DRAIN_QUIET;
                    if self.draining.is_some() && quiet > now {
                        self.deadlines.push(quiet, Due::Drain);
                    }
                }
            }
        }
    }

    fn flush_dirty(&mut self) {
        for key in self.dirty.take() {
            self.flush(key);
            self.arm(key);
        }
    }

    /// Route what forwarding made and write it out, until no connection
    /// held for room can move on.
    fn forward_and_flush(&mut self) {
        loop {
            if let Some(proxy) = self.ctx.proxy.as_mut() {
                for out in proxy.take_outs() {
                    self.on_out(out);
                }
            }
            self.flush_dirty();
            let moved = self.ctx.proxy.as_mut().is_some_and(Proxy::resume_held);
            if !moved {
                return;
            }
        }
    }

    fn flush(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Err(e) = conn.write_out(self.ctx.cfg.keepalive) {
            self.close(key, &format!("write failed: {e}"));
        }
    }

    fn maybe_unpause(&mut self) {
        if self.ctx.paused && self.ctx.busy < self.ctx.cfg.max_queued / 2 {
            self.ctx.paused = false;
            // Edge-triggered: data that arrived while paused brings no new
            // event, so read every connection now.
            let keys: Vec<ConnKey> = self.conns.keys().collect();
            for key in keys {
                self.read(key);
            }
            self.forward_and_flush();
        }
    }
}

impl Reactor for IoLoop {
    fn poll(&mut self) -> &mut Poll {
        &mut self.poll
    }

    fn next_deadline(&self) -> Option<Instant> {
        let own = self.deadlines.next();
        match self.ctx.proxy.as_ref().and_then(Proxy::next_deadline) {
            Some(at) => Some(own.map_or(at, |o| o.min(at))),
            None => own,
        }
    }

    fn accept(&mut self) {
        self.accept_lbs();
    }

    fn ready(&mut self, token: Token, ready: Ready) {
        let Some((kind, key)) = token_conn(token) else {
            return;
        };
        if kind == proxy::UPSTREAM {
            if let Some(proxy) = self.ctx.proxy.as_mut() {
                proxy.ready(key);
            }
            return;
        }
        let key = ConnKey::from(key);
        if ready.readable {
            self.read(key);
        }
        if ready.writable {
            self.dirty.mark(key);
        }
    }

    fn round(&mut self) -> Option<io::Result<()>> {
        if self.take_inputs() == StopVerdict::Exit {
            // Requests in flight are cut off, and the exit status says so.
            let cut = self.ctx.busy + self.conns.values().map(LbConn::receiving).sum::<usize>();
            self.close_all();
            return Some(crate::net::stopped_at_once(cut));
        }
        self.run_deadlines();
        self.forward_and_flush();
        self.maybe_unpause();
        if self.drained() {
            self.close_all();
            return Some(Ok(()));
        }
        None
    }
}
