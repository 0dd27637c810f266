//! What the worker's threads pass each other: jobs for the app threads,
//! response frames for the I/O thread, samples for the timer thread, and the
//! per-connection flow limit that keeps response memory bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::app::Request;
use crate::proto::{Resume, Rno};
use crate::resume::ResumeSettings;

/// Response bytes an LB connection may have waiting for the socket before
/// app threads writing to it wait.
pub(crate) const FLOW_LIMIT: usize = 1 << 20;

/// Flow control for one LB connection: response bytes handed over by app
/// threads and not yet taken into the socket's write buffer.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    state: Mutex<FlowState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct FlowState {
    pending: usize,
    closed: bool,
}

impl Flow {
    /// Wait for room, then count `n` more bytes as pending. False (nothing
    /// counted) when the connection closed or `cancel` was set.
    pub(crate) fn reserve(&self, n: usize, cancel: &AtomicBool) -> bool {
        let mut st = self.state.lock();
        loop {
            if st.closed || cancel.load(Ordering::Relaxed) {
                return false;
            }
            if st.pending <= FLOW_LIMIT {
                st.pending += n;
                return true;
            }
            // Woken by release/close/cancel; the timeout is a safety net.
            self.cv.wait_for(&mut st, Duration::from_millis(200));
        }
    }

    /// Count `n` more bytes as pending without waiting: for frames the I/O
    /// thread makes itself (forwarding), which check [`Flow::has_room`]
    /// before they read more.
    pub(crate) fn add(&self, n: usize) {
        self.state.lock().pending += n;
    }

    /// Whether more may be handed over now.
    pub(crate) fn has_room(&self) -> bool {
        self.state.lock().pending <= FLOW_LIMIT
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// `n` bytes left the pending count.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut st = self.state.lock();
        st.pending = st.pending.saturating_sub(n);
        drop(st);
        self.cv.notify_all();
    }

    /// Wake writers so they notice a cancel.
    pub(crate) fn poke(&self) {
        self.cv.notify_all();
    }

    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.cv.notify_all();
    }
}

/// A request ready for an app thread.
pub(crate) struct Job {
    pub conn_id: u64,
    pub rno: Rno,
    pub req_id: u64,
    pub flow: Arc<Flow>,
    pub request_cancel: Arc<AtomicBool>,
    pub request: Option<Request>,
}

/// Encoded frames of one request's response, for the I/O thread.
pub(crate) struct Out {
    pub conn_id: u64,
    pub rno: Rno,
    pub req_id: u64,
    pub bytes: Vec<u8>,
    /// The app thread is done with the request.
    pub done: bool,
}

/// Messages to the timer thread.
pub(crate) enum TimerMsg {
    Sample(String, f64),
    /// A request of this class failed (5xx): not a sample.
    Failure(String),
    Settings(ResumeSettings),
    /// Shutting down: save the résumé as it stands, then answer.
    Save(crossbeam_channel::Sender<()>),
}

/// Messages from the timer thread to the I/O thread.
pub(crate) enum Ctl {
    Publish(Resume),
    /// The application can serve (true) or not (false) since now.
    Available(bool),
    /// Failed requests since the start, by class (for the hello).
    Failed(std::collections::BTreeMap<String, u64>),
}

/// Channels every app thread holds.
pub(crate) struct Shared {
    pub out: Sender<Out>,
    pub waker: Arc<mio::Waker>,
    pub timer: Sender<TimerMsg>,
    /// A wake-up is on its way: the I/O thread will drain the channel
    /// anyway, so further messages need no wake (a syscall each).
    pub wake_pending: Arc<AtomicBool>,
}

impl Shared {
    /// Wake the I/O thread unless a wake-up is already pending.
    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }
}
