//! The worker's app threads: a fixed pool, each taking requests from one
//! channel, calling the application and streaming its response back to the
//! I/O thread. A panic or error becomes `500`; the thread lives on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::app::{App, Body, Response};
use super::shared::{Flow, Job, Out, Shared, TimerMsg};
use crate::proto::{encode_body, encode_end, encode_head, encode_null, ResponseHead, MAX_CHUNK};
use crate::tracelog::Trace;

/// Bytes of body frames handed to the I/O thread in one message.
const BATCH: usize = 4 * MAX_CHUNK;

pub(crate) fn spawn(
    n: usize,
    app: Arc<dyn App>,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let (app, jobs, shared) = (app.clone(), jobs.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("app-{i}"))
                .spawn(move || {
                    while let Ok(job) = jobs.recv() {
                        run_job(app.as_ref(), job, &shared);
                    }
                })
        })
        .collect()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn error_500() -> Response {
    Response::with_body(
        "500 Internal Server Error",
        "text/plain; charset=utf-8",
        b"Internal Server Error\n".to_vec(),
    )
}

/// Sends one request's frames to the I/O thread, within the connection's
/// flow limit.
struct Responder<'a> {
    job: &'a Job,
    out: &'a Sender<Out>,
    shared: &'a Shared,
}

impl Responder<'_> {
    fn cancelled(&self) -> bool {
        self.job.request_cancel.load(Ordering::Relaxed)
    }

    /// False when the request was cancelled or the connection closed. The
    /// final message (`done`) always goes, so that the I/O thread can count
    /// the request as finished.
    fn send(&self, mut bytes: Vec<u8>, done: bool) -> bool {
        let flow: &Flow = &self.job.flow;
        let ok = flow.reserve(bytes.len(), &self.job.request_cancel);
        if !ok {
            if !done {
                return false;
            }
            bytes.clear();
        }
        let _ = self.out.send(Out {
            conn_id: self.job.conn_id,
            rno: self.job.rno,
            req_id: self.job.req_id,
            bytes,
            done,
        });
        self.shared.wake();
        ok && !self.cancelled()
    }
}

fn run_job(app: &dyn App, mut job: Job, shared: &Shared) {
    let Some(request) = job.request.take() else {
        return;
    };
    let trace = request.trace.clone();
    let class = request.class.clone();
    let head_only = request.method() == "HEAD";
    let responder = Responder {
        job: &job,
        out: &shared.out,
        shared,
    };
    if responder.cancelled() {
        responder.send(Vec::new(), true);
        return;
    }
    trace.record('C', "");
    let start = Instant::now();
    let mut ok = true;
    let response = match catch_unwind(AssertUnwindSafe(|| app.call(request))) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            log::error!("{}: application error: {e}", trace.id());
            ok = false;
            error_500()
        }
        Err(p) => {
            log::error!(
                "{}: application panicked: {}",
                trace.id(),
                panic_message(p.as_ref())
            );
            ok = false;
            error_500()
        }
    };
    let code = response.code();
    trace.record(
        'A',
        format_args!("{code} {}", response.content_length().unwrap_or("?")),
    );
    // A 5xx, from the application or from an app of ours standing for it
    // (the upstream app's 502), is a failure, not a measure of skill.
    ok &= code < 500;
    let Response {
        status,
        headers,
        body,
    } = response;
    let mut frames = Vec::new();
    let head = ResponseHead { status, headers };
    if let Err(e) = encode_head(&mut frames, job.rno, &head) {
        log::error!("{}: cannot encode response head: {e}", trace.id());
        frames.clear();
        let _ = encode_head(
            &mut frames,
            job.rno,
            &ResponseHead {
                status: "500 Internal Server Error".into(),
                headers: vec![("Content-Length".into(), "0".into())],
            },
        );
        ok = false;
    }
    let mut complete = true;
    if !head_only {
        match body {
            Body::Empty => {}
            Body::Bytes(b) => {
                // The last piece goes with the end frame, in one message.
                for piece in b.chunks(BATCH) {
                    encode_body(&mut frames, job.rno, piece);
                    if frames.len() >= BATCH && !responder.send(std::mem::take(&mut frames), false)
                    {
                        complete = false;
                        break;
                    }
                }
            }
            Body::Stream(mut iter) => loop {
                if responder.cancelled() {
                    complete = false;
                    break;
                }
                match catch_unwind(AssertUnwindSafe(|| iter.next())) {
                    Ok(None) => break,
                    Ok(Some(Ok(chunk))) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        encode_body(&mut frames, job.rno, &chunk);
                        if frames.len() >= BATCH
                            && !responder.send(std::mem::take(&mut frames), false)
                        {
                            complete = false;
                            break;
                        }
                    }
                    Ok(Some(Err(e))) => {
                        log::error!("{}: response body failed: {e}", trace.id());
                        abort(&responder, frames, job.rno, &trace);
                        failure(shared, class);
                        return;
                    }
                    Err(p) => {
                        log::error!(
                            "{}: response body panicked: {}",
                            trace.id(),
                            panic_message(p.as_ref())
                        );
                        abort(&responder, frames, job.rno, &trace);
                        failure(shared, class);
                        return;
                    }
                }
            },
        }
    }
    if !complete {
        responder.send(Vec::new(), true);
        trace.record('E', "cancelled");
        return;
    }
    encode_end(&mut frames, job.rno);
    responder.send(frames, true);
    let elapsed = start.elapsed();
    trace.record('E', "");
    if ok {
        let _ = shared.timer.send_timeout(
            TimerMsg::Sample(class, elapsed.as_secs_f64()),
            Duration::ZERO,
        );
    } else {
        failure(shared, class);
    }
}

/// Give up on a response whose body failed: the LB is told to abort it.
fn abort(responder: &Responder, mut frames: Vec<u8>, rno: crate::proto::Rno, trace: &Trace) {
    encode_null(&mut frames, rno);
    responder.send(frames, true);
    trace.record('E', "aborted");
}

/// Tell the résumé tracker a request of `class` failed.
fn failure(shared: &Shared, class: String) {
    let _ = shared
        .timer
        .send_timeout(TimerMsg::Failure(class), Duration::ZERO);
}
