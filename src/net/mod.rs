//! The event-loop core that the LB and the worker are both built on: one
//! `mio::Poll` per process owns every socket; connections live in slot maps
//! whose keys are their tokens; deadlines in a heap set the poll timeout;
//! output is flushed once per round for the connections marked dirty; stop
//! requests (commands and signals) are tallied the same way. What is
//! specific to each process (its connections and what they say) lives in
//! `lb/` and `worker/`; see docs/ARCHITECTURE.md.

pub(crate) mod deadlines;
pub(crate) mod dirty;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use slotmap::KeyData;

use crate::proto::{Decoded, ProtoError};
use crate::util::ratelog::{held_back, LogLimiter};
use crate::util::signals::SignalEvent;

pub(crate) use deadlines::{Armed, Deadlines};
pub(crate) use dirty::DirtySet;

/// Bytes read from a socket at a time.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// How long accepting pauses after `accept` fails (out of descriptors, say).
pub(crate) const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The token of a connection: its slot-map key, with its kind (1 to 3) in
/// bits 30 and 31 of the slot index. Fixed tokens (listeners, the waker)
/// are small numbers, which have kind 0.
pub(crate) fn conn_token(kind: u8, key: KeyData) -> Token {
    debug_assert!((1..=3).contains(&kind));
    let ffi = key.as_ffi();
    debug_assert!(ffi & (3 << 30) == 0, "slot index over 2^30");
    Token((ffi | (u64::from(kind) << 30)) as usize)
}

/// Register a new connection's socket for reading and writing under its
/// token. False (logged, naming `peer`) when that fails: the caller drops
/// the connection.
pub(crate) fn register_conn(
    registry: &Registry,
    stream: &mut TcpStream,
    kind: u8,
    key: KeyData,
    peer: &dyn std::fmt::Display,
) -> bool {
    let interest = Interest::READABLE | Interest::WRITABLE;
    match registry.register(stream, conn_token(kind, key), interest) {
        Ok(()) => true,
        Err(e) => {
            log::error!("cannot register the connection with {peer}: {e}");
            false
        }
    }
}

/// The connection a popped deadline entry at `at` is for, if the entry is
/// still the one it is armed for (it is disarmed then); `None` for a gone
/// connection or a stale entry.
pub(crate) fn fired<K: slotmap::Key, V>(
    map: &mut slotmap::SlotMap<K, V>,
    key: K,
    at: std::time::Instant,
    armed: impl FnOnce(&mut V) -> &mut Armed,
) -> Option<&mut V> {
    let conn = map.get_mut(key)?;
    armed(conn).fire(at).then_some(conn)
}

/// The kind and key of a connection's token; `None` for a fixed token.
pub(crate) fn token_conn(token: Token) -> Option<(u8, KeyData)> {
    let t = token.0 as u64;
    let kind = ((t >> 30) & 3) as u8;
    (kind != 0).then(|| (kind, KeyData::from_ffi(t & !(3 << 30))))
}

/// The token of each process's listening socket.
pub(crate) const LISTENER: Token = Token(0);
/// The token of each process's waker.
pub(crate) const WAKER: Token = Token(1);
/// The longest a poll sleeps with no deadline due.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// What a socket is ready for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    /// Data, end of stream or an error: a read says which.
    pub readable: bool,
    pub writable: bool,
}

/// One process's I/O thread, as [`run`] drives it: events go to `accept`
/// and `ready`, then `round` does the rest (messages from other threads,
/// deadlines, output) and says when to stop.
pub(crate) trait Reactor {
    fn poll(&mut self) -> &mut Poll;
    /// The earliest deadline (the poll sleeps until then, at most a second).
    fn next_deadline(&self) -> Option<std::time::Instant>;
    /// The listener has connections waiting.
    fn accept(&mut self);
    /// A socket other than the listener is ready.
    fn ready(&mut self, token: Token, ready: Ready);
    /// After each round of events; `Some` ends the loop with that result.
    fn round(&mut self) -> Option<io::Result<()>>;
}

/// Run a reactor until its `round` says it is done.
pub(crate) fn run(r: &mut impl Reactor) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    loop {
        let now = std::time::Instant::now();
        let timeout = r.next_deadline().map_or(MAX_WAIT, |at| {
            at.saturating_duration_since(now).min(MAX_WAIT)
        });
        poll(r.poll(), &mut events, timeout)?;
        for event in events.iter() {
            match event.token() {
                LISTENER => r.accept(),
                WAKER => {}
                token => {
                    let ready = Ready {
                        readable: readable(event),
                        writable: event.is_writable() || event.is_write_closed(),
                    };
                    r.ready(token, ready);
                }
            }
        }
        if let Some(result) = r.round() {
            return result;
        }
    }
}

/// What a process starts from: its listening socket, and the poll and
/// waker its I/O thread will own.
pub(crate) struct Bound {
    pub poll: Poll,
    pub waker: Arc<mio::Waker>,
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

impl Bound {
    /// Listen on `addr` (port 0 picks one) with listen backlog `backlog`.
    pub(crate) fn new(addr: &str, backlog: i32) -> io::Result<Bound> {
        let (listener, _) = crate::util::net::listener(addr, backlog)?;
        Bound::around(listener)
    }

    /// Start from a listening socket another process handed over.
    pub(crate) fn from_listener(listener: std::net::TcpListener) -> io::Result<Bound> {
        listener.set_nonblocking(true)?;
        Bound::around(TcpListener::from_std(listener))
    }

    fn around(listener: TcpListener) -> io::Result<Bound> {
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        Ok(Bound {
            poll,
            waker,
            listener,
            addr,
        })
    }
}

/// Commands from other threads and, when the process handles them,
/// signals.
pub(crate) struct Control<C> {
    pub tx: Sender<C>,
    rx: Receiver<C>,
    signals: Option<Receiver<SignalEvent>>,
}

impl<C> Control<C> {
    pub(crate) fn new() -> Control<C> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Control {
            tx,
            rx,
            signals: None,
        }
    }

    /// Start taking SIGTERM, SIGINT, SIGHUP and SIGUSR2 (they wake `waker`).
    pub(crate) fn handle_signals(&mut self, waker: &Arc<mio::Waker>) -> io::Result<()> {
        self.signals = Some(crate::util::signals::spawn(waker.clone())?);
        Ok(())
    }

    /// The commands waiting. Stop signals are counted in `stops`; then
    /// whether a signal asked to reopen the log files (SIGUSR2), and
    /// whether one asked for a reload (SIGHUP, which reopens them too).
    pub(crate) fn take(&self, stops: &mut Stops) -> (Vec<C>, bool, bool) {
        let (mut reopen, mut reload) = (false, false);
        for sig in self.signals.iter().flat_map(|rx| rx.try_iter()) {
            match sig {
                SignalEvent::Stop => stops.graceful(),
                SignalEvent::Reopen => reopen = true,
                SignalEvent::Reload => reload = true,
            }
        }
        (self.rx.try_iter().collect(), reopen, reload)
    }
}

/// Wait for events, at most `timeout`; a signal's interruption is no error.
fn poll(poll: &mut Poll, events: &mut Events, timeout: Duration) -> io::Result<()> {
    match poll.poll(events, Some(timeout)) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        r => r,
    }
}

/// Whether an event means "try reading" (data, end of stream or error: a
/// read says which).
fn readable(event: &mio::event::Event) -> bool {
    event.is_readable() || event.is_read_closed() || event.is_error()
}

/// What one read from a socket gave.
pub(crate) enum Chunk {
    /// Bytes, appended to the buffer.
    Data,
    /// Nothing more for now.
    Empty,
    /// The peer closed its side.
    Closed,
    Failed(io::Error),
}

/// A loop's read buffer: bytes land here before they are appended to a
/// connection's buffer. One per loop, zeroed once (a fresh 64 KiB array
/// for every read would be zeroed every time).
pub(crate) struct Scratch(Box<[u8]>);

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch(vec![0; READ_CHUNK].into_boxed_slice())
    }
}

/// Read one chunk from `stream` onto `buf` (edge-triggered: callers read
/// until [`Chunk::Empty`], or they get no new event).
pub(crate) fn read_chunk(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> Chunk {
    loop {
        return match stream.read(&mut scratch.0) {
            Ok(0) => Chunk::Closed,
            Ok(n) => {
                buf.extend_from_slice(&scratch.0[..n]);
                Chunk::Data
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Chunk::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Chunk::Failed(e),
        };
    }
}

/// Why handling a connection's frames stopped it.
pub(crate) enum FrameFault<E> {
    /// The bytes are not a frame of the protocol.
    Decode(ProtoError),
    /// The handler refused a frame.
    Handler(E),
}

/// Decode and handle the whole frames at the start of `buf`, removing them.
/// `handle` returns false to stop early (the rest stays in `buf`).
pub(crate) fn each_frame<M, E>(
    buf: &mut Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<Decoded<M>, ProtoError>,
    mut handle: impl FnMut(M) -> Result<bool, E>,
) -> Result<(), FrameFault<E>> {
    let mut pos = 0;
    let result = loop {
        match decode(&buf[pos..]) {
            Ok(Decoded::Complete(msg, used)) => {
                pos += used;
                match handle(msg) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(FrameFault::Handler(e)),
                }
            }
            Ok(Decoded::Partial) => break Ok(()),
            Err(e) => break Err(FrameFault::Decode(e)),
        }
    };
    buf.drain(..pos);
    result
}

/// A listening socket that can pause (at the connection limit, or after
/// `accept` failed) and stop (shutting down).
pub(crate) struct Acceptor {
    listener: Option<TcpListener>,
    token: Token,
    paused: bool,
    /// Failed accepts are retried every [`ACCEPT_RETRY`]: said once a
    /// minute.
    failures: LogLimiter<&'static str>,
}

/// What one `accept` gave.
pub(crate) enum Accepted {
    Conn(TcpStream, SocketAddr),
    /// No connection waiting (or not listening).
    Empty,
    /// Out of descriptors or the like: pause and try again later.
    Failed(io::Error),
}

impl Acceptor {
    pub(crate) fn new(
        mut listener: TcpListener,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Acceptor> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Acceptor {
            listener: Some(listener),
            token,
            paused: false,
            failures: LogLimiter::new(Duration::from_secs(60)),
        })
    }

    pub(crate) fn accept(&self) -> Accepted {
        let Some(l) = self.listener.as_ref().filter(|_| !self.paused) else {
            return Accepted::Empty;
        };
        loop {
            return match l.accept() {
                Ok((stream, peer)) => Accepted::Conn(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Accepted::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Accepted::Failed(e),
            };
        }
    }

    /// `accept` failed (out of descriptors, say): pause, and say so once a
    /// minute. The caller resumes after [`ACCEPT_RETRY`] (edge-triggered:
    /// no new event would come for connections already queued).
    pub(crate) fn failed(&mut self, e: &io::Error, registry: &Registry) {
        if let Some(n) = self.failures.check("accept", std::time::Instant::now()) {
            log::error!(
                "accept failed: {e}; retrying every {} ms{}",
                ACCEPT_RETRY.as_millis(),
                held_back(n)
            );
        }
        self.pause(registry);
    }

    pub(crate) fn pause(&mut self, registry: &Registry) {
        if let Some(l) = self.listener.as_mut().filter(|_| !self.paused) {
            let _ = registry.deregister(l);
            self.paused = true;
        }
    }

    /// Listen again after a pause. The caller then accepts: connections
    /// that queued meanwhile bring no event.
    pub(crate) fn resume(&mut self, registry: &Registry) -> bool {
        let Some(l) = self.listener.as_mut().filter(|_| self.paused) else {
            return false;
        };
        if registry
            .register(l, self.token, Interest::READABLE)
            .is_err()
        {
            return false;
        }
        self.paused = false;
        true
    }

    /// Stop listening for good (shutting down).
    /// The listening socket's descriptor, while listening.
    pub(crate) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.listener.as_ref().map(|l| l.as_raw_fd())
    }

    pub(crate) fn close(&mut self, registry: &Registry) {
        if let Some(mut l) = self.listener.take() {
            if !self.paused {
                let _ = registry.deregister(&mut l);
            }
        }
    }
}

/// Stop requests seen in one round of a loop: from commands and signals.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stops(u32);

/// What a loop does about the stop requests of a round.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StopVerdict {
    None,
    /// Stop gracefully: no new work, finish what is in flight.
    Start,
    /// Exit now, cutting off what is in flight.
    Exit,
}

impl Stops {
    pub(crate) fn graceful(&mut self) {
        self.0 += 1;
    }

    pub(crate) fn at_once(&mut self) {
        self.0 += 2;
    }

    /// A second stop (or a stop-now) ends the process at once.
    pub(crate) fn verdict(self, already_stopping: bool) -> StopVerdict {
        match self.0 {
            0 => StopVerdict::None,
            1 if !already_stopping => StopVerdict::Start,
            _ => {
                log::warn!("second stop request: exiting at once");
                StopVerdict::Exit
            }
        }
    }
}

/// The result of a loop stopped at once: an error when that cut requests
/// off, so that the exit status says so.
pub(crate) fn stopped_at_once(cut: usize) -> io::Result<()> {
    if cut == 0 {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "stopped at once: {cut} request(s) in flight cut off"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotmap::{Key, SlotMap};

    #[test]
    fn tokens_carry_kind_and_key_and_miss_fixed_tokens() {
        let mut m: SlotMap<slotmap::DefaultKey, ()> = SlotMap::new();
        let keys: Vec<_> = (0..5).map(|_| m.insert(())).collect();
        m.remove(keys[2]);
        let reused = m.insert(());
        for (kind, key) in [(1, keys[0]), (2, keys[4]), (3, reused)] {
            let t = conn_token(kind, key.data());
            assert_eq!(token_conn(t), Some((kind, key.data())));
        }
        assert_ne!(conn_token(1, reused.data()), conn_token(1, keys[2].data()));
        for fixed in 0..3 {
            assert_eq!(token_conn(Token(fixed)), None);
        }
    }

    #[test]
    fn stop_verdicts() {
        let mut s = Stops::default();
        assert_eq!(s.verdict(false), StopVerdict::None);
        s.graceful();
        assert_eq!(s.verdict(false), StopVerdict::Start);
        assert_eq!(s.verdict(true), StopVerdict::Exit);
        let mut s = Stops::default();
        s.at_once();
        assert_eq!(s.verdict(false), StopVerdict::Exit);
        assert!(stopped_at_once(0).is_ok());
        assert!(stopped_at_once(2)
            .unwrap_err()
            .to_string()
            .contains("2 request(s)"));
    }

    #[test]
    fn frames_are_handled_and_removed_up_to_a_partial_one() {
        let mut buf = Vec::new();
        crate::proto::encode_null(&mut buf, 0);
        crate::proto::encode_drain(&mut buf);
        let whole = buf.len();
        crate::proto::encode_null(&mut buf, 0);
        buf.truncate(whole + 3);
        let mut seen = Vec::new();
        let r: Result<(), FrameFault<()>> = each_frame(
            &mut buf,
            |b| crate::proto::ToLb::decode(b, 1024),
            |m| {
                seen.push(format!("{m:?}"));
                Ok(true)
            },
        );
        assert!(r.is_ok());
        assert_eq!(seen.len(), 2);
        assert_eq!(buf.len(), 3, "the partial frame stays");
    }
}
