//! The worker's timer thread: owns the résumé tracker, folds in samples
//! from the app threads, publishes résumés (to the I/O thread and the résumé
//! file); failed requests are counted apart and logged once a minute.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::shared::{Ctl, TimerMsg};
use crate::resume::{save_file, Tracker};

/// After a failure is logged, how long the next ones are gathered before
/// one line says them.
const FAILURE_LOG: Duration = Duration::from_secs(60);

/// One line for the failures counted since the last one, if any.
fn log_failures(tracker: &mut Tracker) {
    let failures = tracker.take_failures();
    if failures.is_empty() {
        return;
    }
    let total: u64 = failures.values().sum();
    let by_class: Vec<String> = failures
        .iter()
        .map(|(class, n)| format!("{class:?} {n}"))
        .collect();
    log::warn!(
        "{total} request(s) failed (5xx), not counted as skill: {}",
        by_class.join(", ")
    );
}

/// After the timer thread wakes for a message, it sleeps this long before
/// it waits again, taking what came meanwhile in one go: under load it
/// wakes a few hundred times a second, not once per request.
const GATHER: Duration = Duration::from_millis(5);

/// The timer thread's state.
struct Timer {
    tracker: Tracker,
    ctl: Sender<Ctl>,
    waker: Arc<mio::Waker>,
    resume_file: Option<PathBuf>,
    /// Failures are said at most once a minute, with their counts.
    failures_due: Option<Instant>,
}

/// The I/O thread is gone: the timer thread ends.
struct Gone;

pub(crate) fn spawn(
    tracker: Tracker,
    rx: Receiver<TimerMsg>,
    ctl: Sender<Ctl>,
    waker: Arc<mio::Waker>,
    resume_file: Option<PathBuf>,
) -> std::io::Result<JoinHandle<()>> {
    let mut t = Timer {
        tracker,
        ctl,
        waker,
        resume_file,
        failures_due: None,
    };
    std::thread::Builder::new()
        .name("timer".into())
        .spawn(move || loop {
            let msg = match t.failures_due {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let msg = match msg {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    log_failures(&mut t.tracker);
                    // Quiet since the last line: the next one is said at
                    // once again.
                    t.failures_due = None;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    log_failures(&mut t.tracker);
                    return;
                }
            };
            if t.handle(msg).is_err() {
                return;
            }
            std::thread::sleep(GATHER);
            for msg in rx.try_iter() {
                if t.handle(msg).is_err() {
                    return;
                }
            }
        })
}

impl Timer {
    fn handle(&mut self, msg: TimerMsg) -> Result<(), Gone> {
        match msg {
            TimerMsg::Failure(class) => {
                self.tracker.failed(&class);
                // Taken on the I/O thread's next round (no wake).
                self.ctl
                    .send(Ctl::Failed(self.tracker.failed_total().clone()))
                    .map_err(|_| Gone)?;
                // The first is said at once; the next are gathered.
                if self.failures_due.is_none() {
                    log_failures(&mut self.tracker);
                    self.failures_due = Some(Instant::now() + FAILURE_LOG);
                }
            }
            TimerMsg::Sample(class, elapsed) => {
                if let Some(resume) = self.tracker.record(&class, elapsed) {
                    if let Some(path) = &self.resume_file {
                        if let Err(e) = save_file(path, &resume) {
                            log::error!("cannot save résumé file {}: {e}", path.display());
                        }
                    }
                    self.ctl.send(Ctl::Publish(resume)).map_err(|_| Gone)?;
                    let _ = self.waker.wake();
                }
            }
            TimerMsg::Save(done) => {
                // What was learnt since the last publish is kept too.
                if let Some(path) = &self.resume_file {
                    if self.tracker.generation() > 0 {
                        match save_file(path, &self.tracker.resume()) {
                            Ok(()) => log::info!("résumé saved to {}", path.display()),
                            Err(e) => {
                                log::error!("cannot save résumé file {}: {e}", path.display())
                            }
                        }
                    }
                }
                let _ = done.send(());
            }
            TimerMsg::Settings(s) => {
                log::info!(
                    "résumé settings: history {}, max_skill_age {}",
                    s.history,
                    s.max_skill_age()
                );
                self.tracker.update_settings(s);
            }
        }
        Ok(())
    }
}
