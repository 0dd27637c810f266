//! What a worker says to the LB: the shared-secret handshake, résumés and
//! hellos, drain, and response frames, which go to their clients as
//! effects.

use std::time::Instant;

use super::super::ctx::{Ctx, Dirty, Effect, Response};
use super::{Handshake, WorkerKey, Workers};
use crate::net::{each_frame, read_chunk, Chunk, FrameFault};
use crate::pool::Done;
use crate::proto::{encode_auth, ProtoError, Rno, ToLb, DEFAULT_MAX_FRAME};

impl Workers {
    pub(in crate::lb) fn event(
        &mut self,
        key: WorkerKey,
        readable: bool,
        writable: bool,
        ctx: &mut Ctx,
    ) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
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
                    self.close(key, &format!("connect failed: {e}"), ctx);
                    return;
                }
                Ok(None) => {
                    self.close(key, "connect failed", ctx);
                    return;
                }
            }
        }
        if readable {
            self.read(key, ctx);
        }
        if writable {
            ctx.dirty.mark(Dirty::Worker(key));
        }
        self.arm(key, ctx);
    }

    fn read(&mut self, key: WorkerKey, ctx: &mut Ctx) {
        loop {
            let Some(w) = self.map.get_mut(key) else {
                return;
            };
            match read_chunk(&mut w.stream, &mut w.rbuf, &mut ctx.scratch) {
                Chunk::Data => {
                    w.last_read = Instant::now();
                    if w.is_silent() {
                        self.heard_again(key, ctx);
                    }
                    if let Err(why) = self.take_frames(key, ctx) {
                        // A worker that never joined is said once a minute
                        // when it closes (it may not be a worker at all).
                        if let Some(w) = self.map.get(key).filter(|w| w.joined) {
                            log::error!("protocol error from worker {}: {why}", w.addr);
                        }
                        self.close(key, &format!("protocol error: {why}"), ctx);
                        return;
                    }
                }
                Chunk::Empty => return,
                Chunk::Closed if w.handshake == Handshake::Answered => {
                    let why = "closed the connection after our answer to its challenge: \
                               the shared secrets differ";
                    self.handshake_failed(key, why, ctx);
                    return;
                }
                Chunk::Closed => {
                    self.close(key, "closed by the worker", ctx);
                    return;
                }
                Chunk::Failed(e) => {
                    self.close(key, &format!("read failed: {e}"), ctx);
                    return;
                }
            }
        }
    }

    /// Handle every whole frame in a worker's read buffer.
    fn take_frames(&mut self, key: WorkerKey, ctx: &mut Ctx) -> Result<(), ProtoError> {
        let Some(w) = self.map.get_mut(key) else {
            return Ok(());
        };
        let mut rbuf = std::mem::take(&mut w.rbuf);
        let result = each_frame(
            &mut rbuf,
            |b| ToLb::decode(b, DEFAULT_MAX_FRAME),
            |msg| {
                self.message(key, msg, ctx)?;
                Ok(self.map.contains_key(key))
            },
        );
        if let Some(w) = self.map.get_mut(key) {
            w.rbuf = rbuf;
        }
        result.map_err(|e| match e {
            FrameFault::Decode(e) | FrameFault::Handler(e) => e,
        })
    }

    fn message(&mut self, key: WorkerKey, msg: ToLb, ctx: &mut Ctx) -> Result<(), ProtoError> {
        if !self.handshake(key, &msg, ctx)? {
            return Ok(());
        }
        let Some(w) = self.map.get_mut(key) else {
            return Ok(());
        };
        let id = w.id;
        match msg {
            ToLb::KeepAlive | ToLb::Unknown(_) | ToLb::Challenge(_) => {}
            ToLb::Hello(h) => {
                let threads = h.threads.unwrap_or(1) as usize;
                w.hello = Some(h);
                ctx.balancer.describe(id, &w.addr, threads);
            }
            ToLb::Resume(r) => {
                w.resume = r.clone();
                if w.draining || w.unlisted {
                    return Ok(());
                }
                let first = !w.joined;
                w.joined = true;
                let version = self.addrs.get(&w.addr).and_then(|a| a.version.clone());
                if first {
                    log::info!("worker {} joined with {} classes", w.addr, r.len());
                    let n = r.len();
                    let text = format!("joined with {n} class{}", if n == 1 { "" } else { "es" });
                    ctx.board.event("joined", Some(&w.addr), text);
                }
                if w.held_out() {
                    // Kept for when it is back in the pool.
                    return Ok(());
                }
                w.join_pool(version.as_deref(), r, ctx);
                if first {
                    ctx.effect(Effect::ServeWaiting);
                }
            }
            ToLb::Unavailable => {
                if !w.unavailable {
                    w.unavailable = true;
                    log::warn!(
                        "worker {} says its application is unavailable: no new requests \
                         until it is back",
                        w.addr
                    );
                    ctx.balancer.hold(id);
                    let text = "its application is unavailable".to_string();
                    ctx.board.event("unavailable", Some(&w.addr), text);
                }
            }
            ToLb::Available => {
                if w.unavailable {
                    w.unavailable = false;
                    log::info!("worker {} is available again", w.addr);
                    let text = "its application is available again".to_string();
                    ctx.board.event("available", Some(&w.addr), text);
                    if !w.unlisted {
                        let version = self.addrs.get(&w.addr).and_then(|a| a.version.clone());
                        self.relist(key, version.as_deref(), ctx);
                    }
                }
            }
            ToLb::Drain => {
                if !w.draining {
                    w.draining = true;
                    log::info!("worker {} is draining", w.addr);
                    ctx.board
                        .event("draining", Some(&w.addr), "draining".into());
                    ctx.balancer.remove(id);
                    self.close_if_drained(key, ctx);
                }
            }
            ToLb::Head(rno, head) => {
                let client = match w.inflight.get_mut(&rno) {
                    Some(f) if f.status.is_some() => {
                        let what = "a second response head";
                        return Err(ProtoError::Sequence { rno, what });
                    }
                    Some(f) => {
                        f.status = Some(head.code());
                        f.client
                    }
                    None => return Ok(()),
                };
                ctx.effect(Effect::Response(client, Response::Head(head)));
            }
            ToLb::Body(rno, data) => {
                let client = match w.inflight.get(&rno) {
                    Some(f) if f.status.is_none() => {
                        let what = "a body before the response head";
                        return Err(ProtoError::Sequence { rno, what });
                    }
                    Some(f) => f.client,
                    None => return Ok(()),
                };
                ctx.effect(Effect::Response(client, Response::Body(data)));
            }
            ToLb::End(rno) => self.end(key, rno, Response::End, ctx),
            ToLb::Abort(rno) => {
                let why = "the worker aborted the response";
                self.end(key, rno, Response::Abort(why), ctx);
                self.outcome(key, true, ctx);
            }
        }
        Ok(())
    }

    /// The worker's part of a request is over: forget it, put the worker
    /// back, and tell the client.
    fn end(&mut self, key: WorkerKey, rno: Rno, resp: Response, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        let Some(f) = w.inflight.remove(&rno) else {
            return;
        };
        w.sending.retain(|&r| r != rno);
        w.answered += 1;
        let failed = !matches!(resp, Response::End) || f.status.is_some_and(|s| s >= 500);
        w.errors += failed as u64;
        ctx.metrics.served(&f.class, w.id);
        // A served response is a latency sample for the pool; a failure
        // (5xx, aborted) is not.
        let served =
            matches!(resp, Response::End) && f.status.is_some_and(|s| (200..500).contains(&s));
        let now = Instant::now();
        let done = Done {
            class: &f.class,
            now: ctx.pool_time(now),
            latency: served.then(|| now.saturating_duration_since(f.sent)),
        };
        ctx.balancer.put(w.id, &done);
        // A slot is free: a request waiting for one may take it.
        ctx.effect(Effect::ServeWaiting);
        ctx.effect(Effect::Response(f.client, resp));
        self.close_if_drained(key, ctx);
    }

    /// The shared-secret handshake's part of a worker message: false when
    /// the message was the handshake's (or ended the connection).
    fn handshake(&mut self, key: WorkerKey, msg: &ToLb, ctx: &mut Ctx) -> Result<bool, ProtoError> {
        let Some(w) = self.map.get_mut(key) else {
            return Ok(false);
        };
        if w.handshake == Handshake::Open && !matches!(msg, ToLb::Challenge(_)) {
            return Ok(true);
        }
        let refusal = match (msg, w.handshake, &ctx.cfg.secret) {
            (ToLb::Challenge(nonce), Handshake::AwaitChallenge, Some(secret)) => {
                encode_auth(w.out.buf(), &secret.mac(nonce));
                w.handshake = Handshake::Answered;
                ctx.dirty.mark(Dirty::Worker(key));
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
            (ToLb::Challenge(_), _, _) => {
                let what = "a second challenge";
                return Err(ProtoError::Sequence { rno: 0, what });
            }
            (_, Handshake::Answered, _) => {
                w.handshake = Handshake::Open;
                let addr = w.addr.clone();
                self.log.forget_if(|(a, _)| *a == addr);
                return Ok(true);
            }
            _ => return Ok(true),
        };
        self.handshake_failed(key, refusal, ctx);
        Ok(false)
    }

    /// Refuse a worker that failed the shared-secret handshake: one warning
    /// a minute for each address (it is retried about once a second).
    fn handshake_failed(&mut self, key: WorkerKey, why: &str, ctx: &mut Ctx) {
        let Some(w) = self.map.get_mut(key) else {
            return;
        };
        w.refused = true;
        let addr = w.addr.clone();
        self.warn(
            &addr,
            "handshake",
            &format!("worker {addr} {why}; refusing it"),
        );
        self.close(key, "shared-secret handshake failed", ctx);
    }
}
