//! [`Sink`]: where an application's response goes. The app thread encodes
//! the head and body chunks as frames and hands them to the I/O thread,
//! within the connection's flow limit.
//!
//! A sink that is dropped without [`Sink::end`] still tells the I/O thread
//! the request is over: `500` when no head went out yet, an abort when the
//! body broke off, nothing more when the request was cancelled. So an
//! application that returns an error, or panics, never leaves a request
//! hanging.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::app::{status_code, AppError, Body, Response};
use super::shared::{Flow, Job, Out, Shared, TimerMsg};
use crate::http::header;
use crate::proto::{
    encode_body, encode_end, encode_head, encode_null, ResponseHead, Rno, MAX_CHUNK,
};
use crate::tracelog::Trace;

/// Bytes of body frames handed to the I/O thread in one message.
const BATCH: usize = 4 * MAX_CHUNK;

/// One request's response on its way to the LB.
pub struct Sink {
    conn_id: u64,
    rno: Rno,
    req_id: u64,
    flow: Arc<Flow>,
    cancel: Arc<AtomicBool>,
    shared: Arc<Shared>,
    trace: Trace,
    class: String,
    head_only: bool,
    start: Instant,
    /// Frames not handed over yet.
    frames: Vec<u8>,
    /// The status code of the head sent, once sent.
    code: Option<u16>,
    /// Cancelled, or the connection closed: nothing more goes out.
    stopped: bool,
    finished: bool,
}

impl Sink {
    pub(crate) fn new(
        job: Job,
        shared: Arc<Shared>,
        trace: Trace,
        class: String,
        head_only: bool,
    ) -> Sink {
        Sink {
            conn_id: job.conn_id,
            rno: job.rno,
            req_id: job.req_id,
            flow: job.flow,
            cancel: job.request_cancel,
            shared,
            trace,
            class,
            head_only,
            start: Instant::now(),
            frames: Vec::new(),
            code: None,
            stopped: false,
            finished: false,
        }
    }

    /// True once the LB has cancelled the request (the client went away).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The request is a `HEAD`: body chunks are dropped.
    pub fn is_head_only(&self) -> bool {
        self.head_only
    }

    /// Whether the head went out.
    pub fn head_sent(&self) -> bool {
        self.code.is_some()
    }

    /// Send the status line text (e.g. `"200 OK"`) and headers. Once only.
    /// A head that cannot be encoded is replaced by a `500` (and logged).
    pub fn head(&mut self, head: ResponseHead) -> Result<(), AppError> {
        if self.code.is_some() {
            return Err("the response head was already sent".into());
        }
        let mut code = status_code(&head.status);
        let length = header(&head.headers, "content-length")
            .unwrap_or("?")
            .to_string();
        if let Err(e) = encode_head(&mut self.frames, self.rno, &head) {
            log::error!("{}: cannot encode response head: {e}", self.trace.id());
            self.frames.clear();
            code = 500;
            let _ = encode_head(
                &mut self.frames,
                self.rno,
                &ResponseHead {
                    status: "500 Internal Server Error".into(),
                    headers: vec![("Content-Length".into(), "0".into())],
                },
            );
        }
        self.trace.record('A', format_args!("{code} {length}"));
        self.code = Some(code);
        Ok(())
    }

    /// Whether [`Sink::body`] with `len` bytes would hand frames to the I/O
    /// thread, which may wait on the connection's flow limit (smaller
    /// pieces are only buffered).
    pub fn would_hand_over(&self, len: usize) -> bool {
        // Each frame adds 8 bytes of header and up to 9 of CBOR; a head not
        // sent yet (a WSGI application's goes with its first piece) is
        // allowed 16 KiB.
        let head = if self.code.is_none() { 16 * 1024 } else { 0 };
        let framing = 17 * (len / MAX_CHUNK + 1);
        self.frames.len() + head + len + framing >= BATCH
    }

    /// Send body bytes (after the head). False when no more body is
    /// wanted: the request is a `HEAD`, was cancelled, or its connection
    /// closed; the application should stop producing it.
    pub fn body(&mut self, data: &[u8]) -> bool {
        if self.stopped || self.head_only || self.code.is_none() {
            return false;
        }
        // The last piece stays buffered, to go with the end frame.
        for piece in data.chunks(BATCH) {
            encode_body(&mut self.frames, self.rno, piece);
            if self.frames.len() >= BATCH {
                let frames = std::mem::take(&mut self.frames);
                if !self.send(frames, false) {
                    self.stopped = true;
                    return false;
                }
            }
        }
        !self.is_cancelled()
    }

    /// The response is complete. Its time is a sample of the class's speed,
    /// unless it is a 5xx: a failure, not a measure of skill.
    pub fn end(mut self) {
        if self.stopped || self.code.is_none() {
            return; // Drop: cancelled, or a 500
        }
        self.finished = true;
        encode_end(&mut self.frames, self.rno);
        let frames = std::mem::take(&mut self.frames);
        self.send(frames, true);
        let elapsed = self.start.elapsed();
        self.trace.record('E', "");
        let class = std::mem::take(&mut self.class);
        let msg = if self.code < Some(500) {
            TimerMsg::Sample(class, elapsed.as_secs_f64())
        } else {
            TimerMsg::Failure(class)
        };
        let _ = self.shared.timer.send_timeout(msg, Duration::ZERO);
    }

    /// Send a whole [`Response`] and end it (what [`super::App::serve`]
    /// does by default). A streamed body stops when the request is
    /// cancelled; its error is returned, and the response aborted.
    pub fn respond(mut self, response: Response) -> Result<(), AppError> {
        let Response {
            status,
            headers,
            body,
        } = response;
        self.head(ResponseHead { status, headers })?;
        if !self.head_only {
            match body {
                Body::Empty => {}
                Body::Bytes(b) => {
                    if !self.body(&b) {
                        return Ok(());
                    }
                }
                Body::Stream(iter) => {
                    for chunk in iter {
                        if self.is_cancelled() {
                            return Ok(());
                        }
                        let chunk = chunk.map_err(|e| format!("response body failed: {e}"))?;
                        if !chunk.is_empty() && !self.body(&chunk) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        self.end();
        Ok(())
    }

    /// Hand frames to the I/O thread. False when the request was cancelled
    /// or the connection closed. The final message (`done`) always goes, so
    /// that the I/O thread can count the request as finished.
    fn send(&self, mut bytes: Vec<u8>, done: bool) -> bool {
        let ok = self.flow.reserve(bytes.len(), &self.cancel);
        if !ok {
            if !done {
                return false;
            }
            bytes.clear();
        }
        let _ = self.shared.out.send(Out {
            conn_id: self.conn_id,
            rno: self.rno,
            req_id: self.req_id,
            bytes,
            done,
        });
        self.shared.wake();
        ok && !self.is_cancelled()
    }

    fn failure(&mut self) {
        let class = std::mem::take(&mut self.class);
        let _ = self
            .shared
            .timer
            .send_timeout(TimerMsg::Failure(class), Duration::ZERO);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.stopped || self.is_cancelled() {
            self.send(Vec::new(), true);
            self.trace.record('E', "cancelled");
            return;
        }
        if self.code.is_none() {
            // The application gave no response (an error or a panic).
            let body = b"Internal Server Error\n";
            let _ = self.head(ResponseHead {
                status: "500 Internal Server Error".into(),
                headers: vec![
                    ("Content-Type".into(), "text/plain; charset=utf-8".into()),
                    ("Content-Length".into(), body.len().to_string()),
                ],
            });
            if !self.head_only {
                encode_body(&mut self.frames, self.rno, body);
            }
            encode_end(&mut self.frames, self.rno);
            self.trace.record('E', "");
        } else {
            // The body broke off: the LB is told to abort the response.
            encode_null(&mut self.frames, self.rno);
            self.trace.record('E', "aborted");
        }
        let frames = std::mem::take(&mut self.frames);
        self.send(frames, true);
        self.failure();
    }
}
