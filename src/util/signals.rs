//! Signals for event loops: a thread waits for them and passes each one on
//! over a channel, then wakes the loop.

use std::io;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;

/// What a signal asks of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: shut down gracefully (a second one: at once).
    Stop,
    /// SIGUSR2: reopen log files (what `zdaemon logreopen` sends).
    Reopen,
    /// SIGHUP: reopen log files too (what logrotate's scripts send; it
    /// would otherwise kill the process and leave its status socket
    /// behind), and, in the LB, read its files again.
    Reload,
}

/// The signals a process of ours handles.
const HANDLED: [i32; 4] = [SIGTERM, SIGINT, SIGUSR2, SIGHUP];

fn event_of(sig: i32) -> SignalEvent {
    if sig == SIGHUP {
        SignalEvent::Reload
    } else if sig == SIGUSR2 {
        SignalEvent::Reopen
    } else {
        SignalEvent::Stop
    }
}

/// Start the signal thread. Each signal is sent on the returned channel and
/// `waker` is woken.
pub fn spawn(waker: Arc<mio::Waker>) -> io::Result<Receiver<SignalEvent>> {
    let (tx, rx): (Sender<SignalEvent>, Receiver<SignalEvent>) = crossbeam_channel::unbounded();
    let mut signals = Signals::new(HANDLED)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(event_of(sig)).is_err() {
                    break;
                }
                let _ = waker.wake();
            }
        })?;
    Ok(rx)
}

/// Start a thread that calls `on` for each signal (for processes that must
/// do something of their own, such as leaving ZooKeeper, before stopping).
pub fn forward(on: impl Fn(SignalEvent) + Send + 'static) -> io::Result<()> {
    let mut signals = Signals::new(HANDLED)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                on(event_of(sig));
            }
        })?;
    Ok(())
}
