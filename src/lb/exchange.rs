//! The request lifecycle on the LB, as a state machine with no sockets and
//! no clock (times are passed in). The client part owns one exchange per
//! connection at a time and asks it what each event means; the answers say
//! what to do (retry, 502, cut, cancel on the worker, which timeout).
//!
//! ```text
//!            body complete           a worker is free        response head
//!   Body ───────────────────▶ (dispatch) ─────────────▶ Sent ─────────────▶ Streaming ──end──▶ done
//!                                 │  ▲                   │                      │
//!                   none free     ▼  │ one joins         │ worker lost:         │ worker lost,
//!                              Waiting                   │  GET/HEAD, no body,  │ timeout, short
//!                                 │                      │  < 5 tries: again    │ or long body:
//!                                 │ timeout: 503         │  else 502            │ cut (reset)
//!                                                        │ timeout: 504         │
//! ```
//!
//! The client may go at any stage: a request on a worker is then cancelled
//! there, unless the client already has the whole response. Timeouts count
//! from the first dispatch until the head is out (so retries cannot stretch
//! them), then from the last progress.

use std::time::{Duration, Instant};

use crate::http::response::{Ask, BodyError, BodyFramer, BodyPiece, Framing, Planned};
use crate::proto::Rno;
use crate::util::time::after;

/// Attempts for a retryable request before it gets 502.
pub(super) const MAX_ATTEMPTS: u32 = 5;

/// Where an exchange is; `W` names a worker connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase<W> {
    /// Reading the request body.
    Body,
    /// Complete, no worker free since then.
    Waiting { since: Instant },
    /// On a worker, no response head yet.
    Sent { worker: W, rno: Rno },
    /// The response head went to the client; its body is passing.
    Streaming { worker: W, rno: Rno },
}

/// What losing the worker means for the exchange.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lost {
    /// Send it again (to another worker, or wait for one).
    Retry,
    /// Answer 502 with the disconnect page.
    BadGateway,
    /// Part of the response is out: reset the client's connection.
    Cut,
    /// It was not on a worker.
    NotOnWorker,
}

/// What a timeout does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// Answer with this status (408, 503, 504) and close.
    Status(u16),
    /// Reset the connection: part of the response is out.
    Cut,
}

#[derive(Debug)]
pub(super) struct Exchange<W> {
    /// What the client asked for (version, HEAD, keep-alive).
    pub ask: Ask,
    /// GET or HEAD: may be sent again if its worker is lost before the head.
    idempotent: bool,
    body_len: u64,
    phase: Phase<W>,
    attempts: u32,
    status: u16,
    sent_body: u64,
    response: BodyFramer,
    first_dispatch: Option<Instant>,
    last_progress: Instant,
}

impl<W: Copy> Exchange<W> {
    pub(super) fn new(ask: Ask, idempotent: bool, now: Instant) -> Exchange<W> {
        Exchange {
            ask,
            idempotent,
            body_len: 0,
            phase: Phase::Body,
            attempts: 0,
            status: 0,
            sent_body: 0,
            response: BodyFramer::new(Framing::None),
            first_dispatch: None,
            last_progress: now,
        }
    }

    pub(super) fn phase(&self) -> Phase<W> {
        self.phase
    }

    /// The response status, once its head went out (else 0).
    pub(super) fn status(&self) -> u16 {
        self.status
    }

    /// Response body bytes sent to the client.
    pub(super) fn sent_body(&self) -> u64 {
        self.sent_body
    }

    pub(super) fn body_len(&self) -> u64 {
        self.body_len
    }

    /// The request body is complete (`len` bytes).
    pub(super) fn body_complete(&mut self, len: u64) {
        self.body_len = len;
    }

    /// It goes to the pool (the first time or again).
    pub(super) fn dispatching(&mut self, now: Instant) {
        self.first_dispatch.get_or_insert(now);
    }

    /// No worker is free.
    pub(super) fn wait(&mut self, now: Instant) {
        self.phase = Phase::Waiting { since: now };
    }

    /// Since when it waits for a worker, if it does.
    pub(super) fn waiting_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { since } => Some(since),
            _ => None,
        }
    }

    /// Sent to `worker` as request `rno`.
    pub(super) fn sent(&mut self, worker: W, rno: Rno, now: Instant) {
        self.attempts += 1;
        self.phase = Phase::Sent { worker, rno };
        self.last_progress = now;
    }

    /// The worker and request number, while it is on a worker.
    pub(super) fn on_worker(&self) -> Option<(W, Rno)> {
        match self.phase {
            Phase::Sent { worker, rno } | Phase::Streaming { worker, rno } => Some((worker, rno)),
            _ => None,
        }
    }

    /// The response head, planned for this client, goes out. False when no
    /// head was expected (none is sent then).
    pub(super) fn head(&mut self, planned: &Planned, now: Instant) -> bool {
        let Phase::Sent { worker, rno } = self.phase else {
            return false;
        };
        self.status = planned.status;
        self.response = BodyFramer::new(planned.framing);
        self.ask.keep_alive = planned.keep_alive;
        self.phase = Phase::Streaming { worker, rno };
        self.last_progress = now;
        true
    }

    /// `len` bytes of the response body came: how to pass them on. An error
    /// means more than the head announced (cut the client off).
    pub(super) fn body(&mut self, len: usize, now: Instant) -> Result<BodyPiece, BodyError> {
        self.last_progress = now;
        let piece = self.response.piece(len)?;
        if !matches!(piece, BodyPiece::Drop) {
            self.sent_body += len as u64;
        }
        Ok(piece)
    }

    /// The response ended: the bytes that close its body. An error means
    /// less than the head announced (cut the client off).
    pub(super) fn end(&self) -> Result<&'static [u8], BodyError> {
        self.response.end()
    }

    /// The worker is lost (closed, aborted, answered a head it should not).
    pub(super) fn worker_lost(&self) -> Lost {
        match self.phase {
            Phase::Streaming { .. } => Lost::Cut,
            Phase::Sent { .. } if self.retryable() => Lost::Retry,
            Phase::Sent { .. } => Lost::BadGateway,
            _ => Lost::NotOnWorker,
        }
    }

    /// On `worker` as `rno` with no response head yet, and may be sent
    /// again.
    pub(super) fn movable(&self, worker: W, rno: Rno) -> bool
    where
        W: PartialEq,
    {
        self.phase == (Phase::Sent { worker, rno }) && self.retryable()
    }

    fn retryable(&self) -> bool {
        self.idempotent && self.body_len == 0 && self.attempts < MAX_ATTEMPTS
    }

    /// The client is gone: the request to cancel on its worker, if any (a
    /// response the client has whole needs none: its end puts the worker
    /// back as usual).
    pub(super) fn cancel_when_gone(&self) -> Option<(W, Rno)> {
        match self.phase {
            Phase::Streaming { .. } if self.response.is_whole() => None,
            _ => self.on_worker(),
        }
    }

    /// When the exchange times out and what that does; `last_read` is when
    /// the client last sent bytes (the body's clock).
    pub(super) fn deadline(&self, limit: Duration, last_read: Instant) -> (Instant, Expiry) {
        match self.phase {
            Phase::Body => (after(last_read, limit), Expiry::Status(408)),
            Phase::Waiting { since } => (
                after(self.first_dispatch.unwrap_or(since), limit),
                Expiry::Status(503),
            ),
            Phase::Sent { .. } => (
                after(self.first_dispatch.unwrap_or(self.last_progress), limit),
                Expiry::Status(504),
            ),
            Phase::Streaming { .. } => (after(self.last_progress, limit), Expiry::Cut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::plan;
    use crate::proto::ResponseHead;

    const W1: u8 = 1;
    const W2: u8 = 2;
    const LIMIT: Duration = Duration::from_secs(10);

    fn ask() -> Ask {
        Ask {
            minor: 1,
            head_only: false,
            keep_alive: true,
        }
    }

    fn get(now: Instant) -> Exchange<u8> {
        let mut ex = Exchange::new(ask(), true, now);
        ex.body_complete(0);
        ex
    }

    fn planned(headers: &[(&str, &str)]) -> Planned {
        let head = ResponseHead {
            status: "200 OK".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        plan(ask(), &head).unwrap()
    }

    fn secs(t: Instant, s: u64) -> Instant {
        t + Duration::from_secs(s)
    }

    #[test]
    fn a_request_goes_body_sent_streaming_and_ends() {
        let t = Instant::now();
        let mut ex = Exchange::new(ask(), false, t);
        assert_eq!(ex.phase(), Phase::Body);
        assert_eq!(ex.worker_lost(), Lost::NotOnWorker);
        assert_eq!(ex.cancel_when_gone(), None);
        assert_eq!(
            ex.deadline(LIMIT, secs(t, 1)),
            (secs(t, 11), Expiry::Status(408))
        );
        ex.body_complete(5);
        ex.dispatching(secs(t, 2));
        ex.sent(W1, 7, secs(t, 2));
        assert_eq!(ex.on_worker(), Some((W1, 7)));
        assert_eq!(ex.deadline(LIMIT, t), (secs(t, 12), Expiry::Status(504)));
        assert!(ex.head(&planned(&[("Content-Length", "4")]), secs(t, 3)));
        assert_eq!(ex.status(), 200);
        assert_eq!(ex.phase(), Phase::Streaming { worker: W1, rno: 7 });
        assert_eq!(ex.body(4, secs(t, 4)), Ok(BodyPiece::Raw));
        assert_eq!(ex.sent_body(), 4);
        assert_eq!(ex.deadline(LIMIT, t), (secs(t, 14), Expiry::Cut));
        assert_eq!(ex.end(), Ok(&b""[..]));
    }

    #[test]
    fn waiting_times_out_from_the_first_dispatch_with_503() {
        let t = Instant::now();
        let mut ex = get(t);
        ex.dispatching(secs(t, 1));
        ex.wait(secs(t, 1));
        assert_eq!(ex.waiting_since(), Some(secs(t, 1)));
        assert_eq!(ex.on_worker(), None);
        assert_eq!(
            ex.cancel_when_gone(),
            None,
            "nothing to cancel while waiting"
        );
        assert_eq!(ex.deadline(LIMIT, t), (secs(t, 11), Expiry::Status(503)));
        assert_eq!(ex.worker_lost(), Lost::NotOnWorker);
    }

    #[test]
    fn a_lost_get_is_retried_up_to_the_limit_then_502_and_retries_do_not_stretch_the_timeout() {
        let t = Instant::now();
        let mut ex = get(t);
        ex.dispatching(t);
        for attempt in 1..=MAX_ATTEMPTS {
            let now = secs(t, attempt.into());
            ex.dispatching(now);
            ex.sent(if attempt % 2 == 0 { W2 } else { W1 }, attempt, now);
            assert_eq!(
                ex.deadline(LIMIT, now).0,
                secs(t, 10),
                "counted from the first"
            );
            let lost = ex.worker_lost();
            if attempt < MAX_ATTEMPTS {
                assert_eq!(lost, Lost::Retry, "attempt {attempt}");
            } else {
                assert_eq!(lost, Lost::BadGateway);
            }
        }
    }

    #[test]
    fn a_request_with_a_body_or_not_idempotent_gets_502_at_once() {
        let t = Instant::now();
        let mut with_body = Exchange::new(ask(), true, t);
        with_body.body_complete(3);
        with_body.sent(W1, 1, t);
        assert_eq!(with_body.worker_lost(), Lost::BadGateway);
        let mut post = Exchange::new(ask(), false, t);
        post.body_complete(0);
        post.sent(W1, 1, t);
        assert_eq!(post.worker_lost(), Lost::BadGateway);
    }

    #[test]
    fn a_worker_lost_while_streaming_cuts_the_client_off() {
        let t = Instant::now();
        let mut ex = get(t);
        ex.sent(W1, 1, t);
        assert!(ex.head(&planned(&[("Content-Length", "10")]), t));
        assert_eq!(ex.worker_lost(), Lost::Cut);
        assert!(!ex.head(&planned(&[]), t), "a second head is not taken");
    }

    #[test]
    fn a_client_gone_cancels_on_the_worker_unless_its_response_is_whole() {
        let t = Instant::now();
        let mut ex = get(t);
        assert_eq!(ex.cancel_when_gone(), None, "not on a worker yet");
        ex.sent(W2, 9, t);
        assert_eq!(ex.cancel_when_gone(), Some((W2, 9)), "sent, no head");
        assert!(ex.head(&planned(&[("Content-Length", "3")]), t));
        assert_eq!(ex.cancel_when_gone(), Some((W2, 9)), "part of the body out");
        assert_eq!(ex.body(3, t), Ok(BodyPiece::Raw));
        assert_eq!(ex.cancel_when_gone(), None, "the client has it whole");
    }

    #[test]
    fn response_bodies_longer_or_shorter_than_announced_are_errors() {
        let t = Instant::now();
        let mut long = get(t);
        long.sent(W1, 1, t);
        long.head(&planned(&[("Content-Length", "2")]), t);
        assert!(long.body(3, t).is_err());
        let mut short = get(t);
        short.sent(W1, 1, t);
        short.head(&planned(&[("Content-Length", "2")]), t);
        assert_eq!(short.body(1, t), Ok(BodyPiece::Raw));
        assert!(short.end().is_err());
    }

    #[test]
    fn chunked_responses_are_framed_and_closed() {
        let t = Instant::now();
        let mut ex = get(t);
        ex.sent(W1, 1, t);
        ex.head(&planned(&[]), t);
        assert_eq!(ex.body(5, t), Ok(BodyPiece::Chunk));
        assert_eq!(ex.end(), Ok(&b"0\r\n\r\n"[..]));
    }

    #[test]
    fn head_requests_drop_the_body_and_count_nothing_sent() {
        let t = Instant::now();
        let head_ask = Ask {
            head_only: true,
            ..ask()
        };
        let mut ex: Exchange<u8> = Exchange::new(head_ask, true, t);
        ex.sent(W1, 1, t);
        let p = plan(
            head_ask,
            &ResponseHead {
                status: "200 OK".into(),
                headers: vec![("Content-Length".into(), "9".into())],
            },
        )
        .unwrap();
        ex.head(&p, t);
        assert_eq!(ex.body(9, t), Ok(BodyPiece::Drop));
        assert_eq!(ex.sent_body(), 0);
        assert_eq!(ex.cancel_when_gone(), None);
    }
}
