//! Request frames on the worker: an environ (checked, or refused with a
//! 400 at its end), body pieces, the end that hands the request to the app
//! threads, and cancels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::super::super::app::Request;
use super::super::super::bodies::{status_response, Body};
use super::super::super::shared::Job;
use super::super::super::validate;
use super::{Closing, Ctx, LbConn, Req};
use crate::proto::{ProtoError, Rno, ToWorker};
use crate::util::spill::BodyReader;

impl LbConn {
    pub(super) fn handle(&mut self, ctx: &mut Ctx, msg: ToWorker) -> Result<(), Closing> {
        match msg {
            ToWorker::KeepAlive => {}
            ToWorker::Auth(_) => {
                let what = "an answer to a challenge that was not sent";
                return Err(Closing::Protocol(ProtoError::Sequence { rno: 0, what }));
            }
            ToWorker::Environ(rno, pairs) => {
                if self.requests.contains_key(&rno) {
                    let what = "a request number reused while in flight";
                    return Err(Closing::Protocol(ProtoError::Sequence { rno, what }));
                }
                let environ = match validate::environ(pairs) {
                    Ok(env) => env,
                    Err(why) => {
                        log::warn!(
                            "{}: request from LB {} refused (400): {why}",
                            self.request_id(rno),
                            self.peer
                        );
                        self.requests.insert(rno, Req::Refused);
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
                        .record('B', self.request_id(rno), format_args!("{method} {url}"));
                }
                self.requests.insert(
                    rno,
                    Req::Receiving {
                        req_id: ctx.next_req_id,
                        environ,
                        body: Body::new(),
                    },
                );
            }
            ToWorker::Body(rno, data) => {
                if let Some(Req::Receiving { body, req_id, .. }) = self.requests.get_mut(&rno) {
                    body.write(data, ctx.cfg.spill_threshold, *req_id, &ctx.bodies);
                }
            }
            ToWorker::EndOfBody(rno) => self.end_of_body(ctx, rno)?,
            ToWorker::Cancel(rno) => match self.requests.remove(&rno) {
                Some(Req::Running { cancel, .. }) => {
                    cancel.store(true, Ordering::Relaxed);
                    self.flow.poke();
                    ctx.trace.record('E', self.request_id(rno), "cancelled");
                }
                Some(Req::Receiving { body, .. }) => {
                    body.discard(&ctx.bodies);
                    ctx.trace.record('E', self.request_id(rno), "cancelled");
                }
                Some(Req::Refused) | None => {}
            },
        }
        Ok(())
    }

    /// A request is complete: forwarded from this thread, or to the app
    /// threads (a spilled body always, by way of the body thread); a
    /// refused one is answered 400.
    fn end_of_body(&mut self, ctx: &mut Ctx, rno: Rno) -> Result<(), Closing> {
        let (req_id, environ, body) = match self.requests.remove(&rno) {
            Some(Req::Receiving {
                req_id,
                environ,
                body,
            }) => (req_id, environ, body),
            Some(Req::Refused) => {
                status_response(self.out.buf(), rno, "400 Bad Request");
                return Ok(());
            }
            Some(running) => {
                self.requests.insert(rno, running);
                return Ok(());
            }
            None => return Ok(()),
        };
        let id = self.request_id(rno);
        ctx.trace.record('I', &id, body.len());
        let cancel = Arc::new(AtomicBool::new(false));
        let class = environ
            .get("resumelb.request_class")
            .cloned()
            .unwrap_or_default();
        let job = Job {
            conn_id: self.id,
            rno,
            req_id,
            flow: self.flow.clone(),
            request_cancel: cancel.clone(),
            request: Some(Request {
                environ,
                body: BodyReader::empty(),
                class,
                trace: ctx.trace.for_request(id),
                cancel: cancel.clone(),
            }),
        };
        if let Some(job) = body.finish(job, &ctx.bodies) {
            match ctx.proxy.as_mut() {
                Some(proxy) => proxy.start(job),
                None => {
                    if ctx.jobs.send(job).is_err() {
                        return Err(Closing::AppsGone);
                    }
                }
            }
        }
        ctx.busy += 1;
        if ctx.busy >= ctx.cfg.max_queued {
            ctx.paused = true;
        }
        self.requests.insert(rno, Req::Running { req_id, cancel });
        Ok(())
    }
}
