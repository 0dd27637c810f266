//! The shared-secret handshake on the worker's side: a fresh challenge
//! for each LB connection, and nothing taken from the LB but the answer
//! until it proves it has the secret.

use std::time::{Duration, Instant};

use super::{Closing, Ctx, LbConn};
use crate::proto::auth::NONCE_LEN;
use crate::proto::ToWorker;

/// How long an LB has to answer the challenge.
pub(super) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest frame taken from a peer that has not answered the
/// challenge yet (an answer is about 50 bytes).
pub(super) const AUTH_MAX_FRAME: usize = 1024;

/// A challenge sent on a connection and not answered yet.
pub(super) struct Challenge {
    pub nonce: [u8; NONCE_LEN],
    pub deadline: Instant,
}

impl LbConn {
    /// The only frame taken before the challenge is answered: the answer.
    /// Right, and the connection starts as any other (résumé, hello).
    pub(super) fn authenticate(&mut self, ctx: &mut Ctx, msg: ToWorker) -> Result<(), Closing> {
        let (Some(challenge), Some(secret)) = (&self.challenge, &ctx.cfg.secret) else {
            return Ok(());
        };
        let why = match msg {
            // An LB may keep the connection alive while it waits for the
            // challenge (it was late); that is no answer, and no offence.
            ToWorker::KeepAlive => return Ok(()),
            ToWorker::Auth(mac) if secret.verify(&challenge.nonce, &mac) => {
                self.challenge = None;
                ctx.greeting(self.out.buf());
                let ip = self.peer.ip();
                ctx.refusals.forget_if(|(k, _)| *k == ip);
                log::info!(
                    "LB connected from {} (connection {}), shared secret proven",
                    self.peer,
                    self.trace_no
                );
                return Ok(());
            }
            ToWorker::Auth(_) => "wrong answer to the challenge: the shared secrets differ",
            _ => {
                "sent a request frame instead of answering the challenge (has it no \
                 --secret-file?)"
            }
        };
        ctx.refused(self.peer, &format!("{why}; closing"));
        Err(Closing::Handshake(why.into()))
    }
}
