//! Reading a client's request: the head (checked, classified, its environ
//! built) and then the body, de-chunked, into memory or a spill file.

use std::time::{Instant, SystemTime};

use super::super::ctx::Ctx;
use super::super::environ;
use super::super::exchange::Exchange;
use super::super::reqbody::ReqBody;
use super::{Client, Request, OUT_LIMIT};
use crate::http::chunked::ChunkedDecoder;
use crate::http::request::{parse_head, BodyFraming, Limits};
use crate::http::response::Ask;
use crate::http::HttpError;

pub(super) enum Reading {
    Sized(u64),
    Chunked(ChunkedDecoder),
    Done,
}

/// What parsing the bytes at hand did.
pub(super) enum Step {
    /// Go on with the rest of the buffer.
    More,
    /// Wait for more bytes.
    Wait,
    /// The request is complete: it wants a worker.
    Complete,
    Refuse(HttpError),
}

/// Parse a request head, if a whole one is there.
pub(super) fn start_request(c: &mut Client, ctx: &Ctx) -> Step {
    if c.out.pending() > OUT_LIMIT || c.rbuf.is_empty() {
        return Step::Wait;
    }
    let (head, used) = match parse_head(&c.rbuf, &Limits::default()) {
        Ok(Some(x)) => x,
        Ok(None) => return Step::Wait,
        Err(e) => return Step::Refuse(e),
    };
    c.rbuf.drain(..used);
    // A pipelined next head, if any, starts now.
    c.head_started = (!c.rbuf.is_empty()).then(Instant::now);
    let mut environ = environ::build(&head, c.peer, ctx.local);
    let class = ctx
        .cfg
        .classifier
        .classify(|n| environ.get(n).map(String::as_str));
    environ.insert("resumelb.request_class".into(), class.clone());
    let class: std::rc::Rc<str> = class.into();
    let reading = match head.body {
        BodyFraming::None => Reading::Done,
        BodyFraming::Sized(n) => Reading::Sized(n),
        BodyFraming::Chunked => Reading::Chunked(ChunkedDecoder::new()),
    };
    if head.expect_continue && !matches!(reading, Reading::Done) {
        let _ = c.out.push(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let now = Instant::now();
    let ask = Ask {
        minor: head.minor,
        head_only: head.is_head(),
        keep_alive: head.keep_alive && ctx.stopping.is_none(),
    };
    let idempotent = matches!(head.method.as_str(), "GET" | "HEAD");
    c.req = Some(Box::new(Request {
        head,
        class,
        environ,
        reading,
        body: ReqBody::new(ctx.spill_io.clone(), c.spill_id, ctx.cfg.spill_threshold),
        started: now,
        wall: SystemTime::now(),
        ex: Exchange::new(ask, idempotent, now),
    }));
    Step::More
}

/// Take body bytes; once the body is complete the request wants a worker.
pub(super) fn read_body(rbuf: &mut Vec<u8>, r: &mut Request) -> Step {
    let body = &mut r.body;
    match &mut r.reading {
        Reading::Done => {}
        Reading::Sized(left) => {
            let n = (*left).min(rbuf.len() as u64) as usize;
            body.write(&rbuf[..n]);
            rbuf.drain(..n);
            *left -= n as u64;
            if *left == 0 {
                r.reading = Reading::Done;
            }
        }
        Reading::Chunked(dec) => match dec.feed(rbuf, &mut |d| body.write(d)) {
            Ok(used) => {
                rbuf.drain(..used);
                if dec.is_done() {
                    r.reading = Reading::Done;
                }
            }
            Err(e) => return Step::Refuse(e),
        },
    }
    if !matches!(r.reading, Reading::Done) {
        return Step::Wait;
    }
    let len = r.body.len();
    r.ex.body_complete(len);
    if len > 0 || r.head.header("content-length").is_some() {
        r.environ.insert("CONTENT_LENGTH".into(), len.to_string());
    }
    Step::Complete
}
