//! The configured worker addresses: the list (set from the command line
//! or ZooKeeper), connecting and reconnecting about once a second, names
//! resolved off the loop, and warnings about addresses that fail, at most
//! one a minute each.

use crate::util::intmap::IntMap;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use slotmap::Key;

use super::super::ctx::{Ctx, Due};
use super::super::resolver::Resolved;
use super::super::WorkerSpec;
use super::{Addr, Handshake, WorkerConn, Workers, KIND};
use crate::net::{register_conn, Armed};
use crate::pool::WorkerId;
use crate::util::ratelog::held_back;
use crate::util::time::after;
use crate::util::wbuf::WriteBuf;

impl Workers {
    /// Answers from the resolver thread, to take on the I/O thread.
    pub(in crate::lb) fn resolved(&mut self, ctx: &mut Ctx) {
        while let Ok(Resolved { addr, result }) = self.resolver.rx.try_recv() {
            let now = Instant::now();
            let Some(a) = self.addrs.get_mut(&addr) else {
                continue;
            };
            a.resolving = false;
            if a.conn.is_some() || ctx.stopping.is_some() {
                continue;
            }
            match result {
                Ok(sa) => self.connect(&addr, sa, now, ctx),
                Err(e) => {
                    a.retry_at = after(now, ctx.cfg.reconnect_interval);
                    self.warn(&addr, "unresolvable", &format!("worker {addr}: {e}"));
                }
            }
        }
        self.arm_reconnect(ctx);
    }

    /// Replace the set of worker addresses: connect to new ones, drop the
    /// ones no longer listed. An address that stays keeps its connection.
    pub(in crate::lb) fn set(&mut self, specs: Vec<WorkerSpec>, ctx: &mut Ctx) {
        let wanted: HashMap<String, Option<String>> =
            specs.into_iter().map(|s| (s.addr, s.version)).collect();
        let gone: Vec<String> = self
            .addrs
            .keys()
            .filter(|a| !wanted.contains_key(*a))
            .cloned()
            .collect();
        for addr in gone {
            if let Some(a) = self.addrs.remove(&addr) {
                log::info!("worker {addr} removed");
                let text = "removed from the worker list".to_string();
                ctx.board.event("removed", Some(&addr), text);
                if let Some(key) = a.conn {
                    self.unlist(key, ctx);
                }
            }
        }
        let now = Instant::now();
        for (addr, version) in wanted {
            match self.addrs.get_mut(&addr) {
                Some(a) => {
                    if a.version != version {
                        a.version = version.clone();
                        if let Some(key) = a.conn {
                            self.relist(key, version.as_deref(), ctx);
                        }
                    }
                }
                None => {
                    log::info!("worker {addr} added");
                    let text = "added to the worker list".to_string();
                    ctx.board.event("added", Some(&addr), text);
                    // Still connected from before it was removed? Keep that
                    // connection: never two to one address.
                    let open = self
                        .map
                        .iter()
                        .find(|(_, w)| w.addr == addr)
                        .map(|(k, _)| k);
                    self.addrs.insert(
                        addr,
                        Addr {
                            version: version.clone(),
                            conn: open,
                            retry_at: now,
                            resolving: false,
                        },
                    );
                    if let Some(key) = open {
                        self.relist(key, version.as_deref(), ctx);
                    }
                }
            }
        }
        self.connect_due(now, ctx);
    }

    /// Open connections to configured addresses that have none and whose
    /// retry time has come (names are resolved first, off the loop).
    pub(in crate::lb) fn connect_due(&mut self, now: Instant, ctx: &mut Ctx) {
        if ctx.stopping.is_some() {
            return;
        }
        let due: Vec<String> = self
            .addrs
            .iter()
            .filter(|(_, a)| a.conn.is_none() && !a.resolving && a.retry_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for addr in due {
            match self.resolver.lookup(&addr) {
                Some(sa) => self.connect(&addr, sa, now, ctx),
                None => {
                    if let Some(a) = self.addrs.get_mut(&addr) {
                        a.resolving = true;
                    }
                }
            }
        }
        self.arm_reconnect(ctx);
    }

    /// The next reconnect time, in the deadlines.
    pub(super) fn arm_reconnect(&mut self, ctx: &mut Ctx) {
        if ctx.stopping.is_some() {
            return;
        }
        let next = self
            .addrs
            .values()
            .filter(|a| a.conn.is_none() && !a.resolving)
            .map(|a| a.retry_at)
            .min();
        if let Some(at) = next {
            ctx.deadlines.arm(&mut self.reconnect, at, Due::Reconnect);
        }
    }

    /// The reconnect deadline came: connect what is due.
    pub(in crate::lb) fn on_reconnect(&mut self, at: Instant, now: Instant, ctx: &mut Ctx) {
        if self.reconnect.fire(at) {
            self.connect_due(now, ctx);
        }
    }

    fn connect(&mut self, addr: &str, sa: SocketAddr, now: Instant, ctx: &mut Ctx) {
        let retry = after(now, ctx.cfg.reconnect_interval);
        if let Some(a) = self.addrs.get_mut(addr) {
            a.retry_at = retry;
        }
        let stream = match TcpStream::connect(sa) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("worker {addr}: connect failed: {e}");
                let msg = format!(
                    "worker {addr} cannot be reached (connect failed: {e}); \
                     retrying about once a second"
                );
                self.warn(addr, "unreachable", &msg);
                return;
            }
        };
        let id = WorkerId(ctx.new_id());
        let key = self.map.insert(WorkerConn {
            id,
            addr: addr.to_string(),
            stream,
            connected: false,
            rbuf: Vec::new(),
            out: WriteBuf::new(),
            joined: false,
            draining: false,
            unavailable: false,
            silent: false,
            outlier: Default::default(),
            unlisted: false,
            resume: crate::proto::Resume::new(),
            answered: 0,
            errors: 0,
            ejections: 0,
            rate: Default::default(),
            hello: None,
            handshake: if ctx.cfg.secret.is_some() {
                Handshake::AwaitChallenge
            } else {
                Handshake::Open
            },
            refused: false,
            next_rno: 0,
            inflight: IntMap::default(),
            sending: VecDeque::new(),
            last_read: now,
            keepalive_at: after(now, ctx.cfg.keepalive),
            armed: Armed::default(),
        });
        let w = &mut self.map[key];
        let peer = format!("worker {addr}");
        if !register_conn(&ctx.registry, &mut w.stream, KIND, key.data(), &peer) {
            self.map.remove(key);
            return;
        }
        self.by_id.insert(id, key);
        if let Some(a) = self.addrs.get_mut(addr) {
            a.conn = Some(key);
        }
        self.arm(key, ctx);
    }

    /// A warning about a worker address that the LB retries about once a
    /// second: at most one a minute for each address and reason.
    pub(super) fn warn(&mut self, addr: &str, reason: &'static str, msg: &str) {
        if let Some(n) = self.log.check((addr.to_string(), reason), Instant::now()) {
            log::warn!("{msg}{}", held_back(n));
        }
    }
}
