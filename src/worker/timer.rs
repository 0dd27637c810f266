//! The worker's timer thread: owns the résumé tracker, folds in samples
//! from the app threads, publishes résumés (to the I/O thread and the résumé
//! file).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::shared::{Ctl, TimerMsg};
use crate::resume::{save_file, Tracker};

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
            for msg in rx {
                match msg {
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
