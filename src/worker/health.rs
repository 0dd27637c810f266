//! The worker's health thread: about once a second it asks the application
//! whether it can serve ([`App::available`]) and tells the I/O thread when
//! the answer changes, which tells every LB ("unavailable" / "available").

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::app::App;
use super::shared::Ctl;

/// How often the application is asked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(crate) fn spawn(
    app: Arc<dyn App>,
    ctl: Sender<Ctl>,
    waker: Arc<mio::Waker>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let mut available = true;
            loop {
                std::thread::sleep(CHECK_EVERY);
                let now = app.available();
                if now == available {
                    continue;
                }
                available = now;
                if available {
                    log::info!("the application is available again: telling the LBs");
                } else {
                    log::warn!("the application is unavailable: telling the LBs");
                }
                if ctl.send(Ctl::Available(available)).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })
}
