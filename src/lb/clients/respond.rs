//! What a worker's frames do to a client's exchange (head, body, end,
//! abort, worker lost), the LB's own answers (refusals, 502, timeouts), and
//! the access log lines written once a response has reached its client.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::super::access;
use super::super::ctx::{Ctx, Dirty, Effect, Response};
use super::super::exchange::{Lost, Phase};
use super::super::outliers::gateway_failure;
use super::{ClientKey, Clients, Request};
use crate::http::response::{chunk, plan, simple, Ask, BodyPiece};
use crate::http::{reason, HttpError};
use crate::proto::ResponseHead;

/// The answer when a request body cannot be buffered (disk full, say).
pub(super) const BUFFER_FAILED: HttpError = HttpError {
    status: 500,
    why: "cannot buffer the request body",
};

const HTML: &str = "text/html; charset=utf-8";

/// An exchange's access log line (`logging`: the access log is on; else
/// only what the metrics need is filled in).
pub(super) fn line(peer: SocketAddr, r: &Request, status: u16, logging: bool) -> access::Line {
    access::Line {
        peer: peer.ip(),
        wall: r.wall,
        request: logging.then(|| {
            format!(
                "{} {} HTTP/1.{}",
                r.head.method, r.head.target, r.head.minor
            )
        }),
        status,
        bytes: r.ex.sent_body(),
        class: r.class.clone(),
        started: r.started,
    }
}

/// Count the lines in the metrics and write them to the access log.
pub(super) fn write_lines(lines: Vec<access::Line>, ctx: &mut Ctx) {
    let now = Instant::now();
    for line in lines {
        let seconds = now.saturating_duration_since(line.started).as_secs_f64();
        ctx.metrics.observe(&line.class, line.status, seconds, now);
        if ctx.cfg.access_log.is_enabled() {
            ctx.cfg.access_log.line(line.text(now));
        }
    }
}

impl Clients {
    /// A worker's frame for the client's exchange.
    pub(in crate::lb) fn response(&mut self, key: ClientKey, resp: Response, ctx: &mut Ctx) {
        match resp {
            Response::Head(head) => self.response_head(key, head, ctx),
            Response::Body(data) => self.response_body(key, &data, ctx),
            Response::End => self.response_end(key, ctx),
            Response::Abort(why) => {
                log::warn!("{why}");
                self.worker_lost(key, ctx);
            }
            Response::Lost => self.worker_lost(key, ctx),
        }
        self.arm(key, ctx);
    }

    fn response_head(&mut self, key: ClientKey, head: ResponseHead, ctx: &mut Ctx) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        let Some(r) = c.req.as_mut() else { return };
        let Some((worker, rno)) = r.ex.on_worker() else {
            return;
        };
        match plan(r.ex.ask, &head) {
            Ok(p) => {
                if !r.ex.head(&p, Instant::now()) {
                    return;
                }
                ctx.effect(Effect::Outcome(worker, gateway_failure(p.status)));
                if let Err(e) = c.out.push(&p.head) {
                    self.close(key, &format!("cannot buffer the response: {e}"), ctx);
                    return;
                }
                ctx.dirty.mark(Dirty::Client(key));
            }
            Err(why) => {
                ctx.effect(Effect::BadResponse(worker, rno, why));
                ctx.counters.bad_gateway += 1;
                let page = ctx.cfg.disconnect_page.clone();
                self.refuse_with(key, 502, HTML, &page, ctx);
            }
        }
    }

    fn response_body(&mut self, key: ClientKey, data: &[u8], ctx: &mut Ctx) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        let Some(r) = c.req.as_mut() else { return };
        let Some((worker, rno)) = r.ex.on_worker() else {
            return;
        };
        let pushed = match r.ex.body(data.len(), Instant::now()) {
            Err(_) => {
                // More than announced: the worker is wrong; cut the client
                // off rather than send a corrupt stream.
                log::warn!("worker sent more than its Content-Length");
                ctx.effect(Effect::Cancel(worker, rno));
                self.cut(key, ctx);
                return;
            }
            Ok(BodyPiece::Drop) => Ok(()),
            Ok(BodyPiece::Raw) => c.out.push(data),
            Ok(BodyPiece::Chunk) => {
                let mut framed = Vec::with_capacity(data.len() + 16);
                chunk(&mut framed, data);
                c.out.push(&framed)
            }
        };
        if let Err(e) = pushed {
            self.close(key, &format!("cannot buffer the response: {e}"), ctx);
            return;
        }
        ctx.dirty.mark(Dirty::Client(key));
    }

    /// The worker sent the end of the response (and was put back).
    fn response_end(&mut self, key: ClientKey, ctx: &mut Ctx) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        let Some(r) = c.req.as_mut() else { return };
        match r.ex.phase() {
            Phase::Streaming { .. } => {}
            Phase::Sent { .. } => {
                // An end without a head: as if the worker had failed.
                log::warn!("the worker ended a response it never began");
                self.worker_lost(key, ctx);
                return;
            }
            _ => return,
        }
        match r.ex.end() {
            Ok(closing) => {
                let _ = c.out.push(closing);
            }
            Err(_) => {
                log::warn!("worker sent less than its Content-Length");
                self.cut(key, ctx);
                return;
            }
        }
        self.finish(key, ctx);
    }

    /// The worker of the client's exchange is gone (already put back).
    fn worker_lost(&mut self, key: ClientKey, ctx: &mut Ctx) {
        let Some(r) = self.map.get(key).and_then(|c| c.req.as_ref()) else {
            return;
        };
        match r.ex.worker_lost() {
            Lost::NotOnWorker => {}
            Lost::Cut => self.cut(key, ctx),
            Lost::Retry => {
                ctx.counters.retries += 1;
                ctx.effect(Effect::Dispatch(key));
            }
            Lost::BadGateway => {
                ctx.counters.bad_gateway += 1;
                let page = ctx.cfg.disconnect_page.clone();
                self.refuse_with(key, 502, HTML, &page, ctx);
            }
        }
    }

    /// End a response that is incomplete: the client must be able to tell,
    /// so the connection is reset after what was buffered is tried once.
    pub(super) fn cut(&mut self, key: ClientKey, ctx: &mut Ctx) {
        if let Some(c) = self.map.get_mut(key) {
            c.reset = true;
            c.close_after = true;
            if let Some(r) = c.req.take() {
                let status = r.ex.status();
                self.log_exchange(key, &r, status, ctx);
            }
        }
        self.flush(key, ctx);
        // Whatever did not fit goes: the response is incomplete anyway.
        self.close(key, "response cut off", ctx);
    }

    /// The exchange is complete: log it and go on with the next request.
    fn finish(&mut self, key: ClientKey, ctx: &mut Ctx) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        let Some(r) = c.req.take() else { return };
        if !r.ex.ask.keep_alive || ctx.stopping.is_some() {
            c.close_after = true;
        }
        let status = r.ex.status();
        self.log_exchange(key, &r, status, ctx);
        ctx.dirty.mark(Dirty::Client(key));
        self.pull(key, ctx);
    }

    /// An exchange ended: its metrics and access log line are written once
    /// the client has its response (or the connection closes).
    fn log_exchange(&mut self, key: ClientKey, r: &Request, status: u16, ctx: &mut Ctx) {
        let logging = ctx.cfg.access_log.is_enabled();
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        let l = line(c.peer, r, status, logging);
        c.log_lines.push(c.out.pushed, l);
        self.write_delivered(key, ctx);
    }

    /// Write the lines of the responses the client has been sent.
    pub(super) fn write_delivered(&mut self, key: ClientKey, ctx: &mut Ctx) {
        if let Some(c) = self.map.get_mut(key) {
            write_lines(c.log_lines.due(c.out.written), ctx);
        }
    }

    /// Refuse a request: the status, and close.
    pub(in crate::lb) fn refuse(&mut self, key: ClientKey, e: HttpError, ctx: &mut Ctx) {
        let body = format!("{} {}: {}\n", e.status, reason(e.status), e.why);
        let text = "text/plain; charset=utf-8";
        self.refuse_with(key, e.status, text, body.as_bytes(), ctx);
    }

    /// Answer with the LB's own response and close after it.
    fn refuse_with(
        &mut self,
        key: ClientKey,
        status: u16,
        content_type: &str,
        body: &[u8],
        ctx: &mut Ctx,
    ) {
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        let req = c.req.take();
        let ask = req.as_ref().map_or(
            Ask {
                minor: 1,
                head_only: false,
                keep_alive: false,
            },
            |r| r.ex.ask,
        );
        let bytes = simple(ask, status, content_type, body, false);
        let _ = c.out.push(&bytes);
        c.close_after = true;
        c.rbuf.clear();
        match req {
            Some(r) => {
                let mut l = line(c.peer, &r, status, ctx.cfg.access_log.is_enabled());
                l.bytes = if ask.head_only { 0 } else { body.len() as u64 };
                c.log_lines.push(c.out.pushed, l);
            }
            None => {
                // Refused before a head could be read (malformed, too
                // large, too slow): logged all the same, request "-".
                let l = access::Line {
                    peer: c.peer.ip(),
                    wall: SystemTime::now(),
                    request: None,
                    status,
                    bytes: body.len() as u64,
                    class: "".into(),
                    started: c.head_started.unwrap_or(c.last_read),
                };
                c.log_lines.push(c.out.pushed, l);
            }
        }
        self.write_delivered(key, ctx);
        ctx.dirty.mark(Dirty::Client(key));
    }
}
