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

pub(crate) fn spawn(
    mut tracker: Tracker,
    rx: Receiver<TimerMsg>,
    ctl: Sender<Ctl>,
    waker: Arc<mio::Waker>,
    resume_file: Option<PathBuf>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("timer".into())
        .spawn(move || {
            // Failures are said at most once a minute, with their counts.
            let mut failures_due: Option<Instant> = None;
            loop {
                let msg = match failures_due {
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        log_failures(&mut tracker);
                        // Quiet since the last line: the next one is said at
                        // once again.
                        failures_due = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        log_failures(&mut tracker);
                        return;
                    }
                };
                match msg {
                    TimerMsg::Failure(class) => {
                        tracker.failed(&class);
                        // Taken on the I/O thread's next round (no wake).
                        if ctl
                            .send(Ctl::Failed(tracker.failed_total().clone()))
                            .is_err()
                        {
                            return;
                        }
                        // The first is said at once; the next are gathered.
                        if failures_due.is_none() {
                            log_failures(&mut tracker);
                            failures_due = Some(Instant::now() + FAILURE_LOG);
                        }
                    }
                    TimerMsg::Sample(class, elapsed) => {
                        if let Some(resume) = tracker.record(&class, elapsed) {
                            if let Some(path) = &resume_file {
                                if let Err(e) = save_file(path, &resume) {
                                    log::error!("cannot save résumé file {}: {e}", path.display());
                                }
                            }
                            if ctl.send(Ctl::Publish(resume)).is_err() {
                                return;
                            }
                            let _ = waker.wake();
                        }
                    }
                    TimerMsg::Save(done) => {
                        // What was learnt since the last publish is kept too.
                        if let Some(path) = &resume_file {
                            if tracker.generation() > 0 {
                                match save_file(path, &tracker.resume()) {
                                    Ok(()) => log::info!("résumé saved to {}", path.display()),
                                    Err(e) => log::error!(
                                        "cannot save résumé file {}: {e}",
                                        path.display()
                                    ),
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
                        tracker.update_settings(s);
                    }
                }
            }
        })
}
