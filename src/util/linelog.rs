//! A log file written line by line by its own thread, so that no request
//! path waits on the disk: the trace log and the access log. Reopened on
//! request (SIGUSR2, log rotation). A full queue drops lines and says so.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};

const QUEUE: usize = 65_536;

enum Cmd {
    Line(String),
    Reopen,
    Flush(Sender<()>),
}

struct Inner {
    tx: Sender<Cmd>,
    dropped: AtomicU64,
    name: &'static str,
}

/// A handle on a line log (cheap to clone; a default one does nothing).
#[derive(Clone, Default)]
pub struct LineLog {
    inner: Option<Arc<Inner>>,
}

enum Target {
    Stderr,
    File(PathBuf),
}

impl Target {
    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Target::Stderr => Box::new(io::stderr()),
            Target::File(p) => Box::new(io::BufWriter::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
        })
    }
}

impl LineLog {
    /// Open `-` (stderr) or a file (appended to); `name` names the writer
    /// thread and the log in messages.
    pub fn open(target: &str, name: &'static str) -> io::Result<LineLog> {
        let target = if target == "-" {
            Target::Stderr
        } else {
            Target::File(PathBuf::from(target))
        };
        let mut out = target.open()?;
        let (tx, rx) = bounded::<Cmd>(QUEUE);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(cmd) = rx.recv() {
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        match cmd {
                            Cmd::Line(l) => {
                                if let Err(e) = out.write_all(l.as_bytes()) {
                                    log::error!("{name} write failed: {e}");
                                }
                            }
                            Cmd::Reopen => {
                                let _ = out.flush();
                                match target.open() {
                                    Ok(o) => out = o,
                                    Err(e) => log::error!("cannot reopen {name}: {e}"),
                                }
                            }
                            Cmd::Flush(ack) => {
                                let _ = out.flush();
                                let _ = ack.send(());
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(LineLog {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
                name,
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queue one line (with its newline).
    pub fn line(&self, line: String) {
        let Some(inner) = &self.inner else { return };
        match inner.tx.try_send(Cmd::Line(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                let n = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n % 10_000 == 0 {
                    log::warn!("{} is behind: {n} lines dropped so far", inner.name);
                }
            }
        }
    }

    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.tx.send_timeout(Cmd::Reopen, Duration::from_secs(1));
        }
    }

    /// Wait (up to a second) until everything queued so far is written.
    pub fn flush(&self) {
        if let Some(inner) = &self.inner {
            let (ack_tx, ack_rx) = bounded(1);
            if inner
                .tx
                .send_timeout(Cmd::Flush(ack_tx), Duration::from_secs(1))
                .is_ok()
            {
                let _ = ack_rx.recv_timeout(Duration::from_secs(1));
            }
        }
    }
}
