//! The trace log: one line per event, `CODE ID TIMESTAMP [MESSAGE]`, written
//! by its own thread so that no request path waits on the disk.
//!
//! Codes used by the worker: `S`/`X` process start and exit (id 0), and per
//! request `B` begin, `I` input read, `C` app called, `A` app returned, `E`
//! end. Applications may add their own codes through [`Trace`].

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{bounded, Sender, TrySendError};

use crate::util::time::utc_timestamp;

const QUEUE: usize = 65_536;

enum Cmd {
    Line(String),
    Reopen,
    Flush(Sender<()>),
}

/// A handle on the trace log (cheap to clone; disabled handles do nothing).
#[derive(Clone, Default)]
pub struct TraceLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: Sender<Cmd>,
    dropped: AtomicU64,
}

enum Target {
    Stderr,
    File(PathBuf),
}

impl Target {
    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Target::Stderr => Box::new(io::stderr()),
            Target::File(p) => Box::new(io::BufWriter::new(open_append(p)?)),
        })
    }
}

fn open_append(p: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

impl TraceLog {
    /// A trace log that records nothing.
    pub fn disabled() -> TraceLog {
        TraceLog { inner: None }
    }

    /// Open `-` (stderr) or a file (appended to), and start its writer.
    pub fn open(target: &str) -> io::Result<TraceLog> {
        let target = if target == "-" {
            Target::Stderr
        } else {
            Target::File(PathBuf::from(target))
        };
        let mut out = target.open()?;
        let (tx, rx) = bounded::<Cmd>(QUEUE);
        std::thread::Builder::new()
            .name("tracelog".into())
            .spawn(move || {
                while let Ok(cmd) = rx.recv() {
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        match cmd {
                            Cmd::Line(l) => {
                                if let Err(e) = out.write_all(l.as_bytes()) {
                                    log::error!("trace log write failed: {e}");
                                }
                            }
                            Cmd::Reopen => {
                                let _ = out.flush();
                                match target.open() {
                                    Ok(o) => out = o,
                                    Err(e) => log::error!("cannot reopen trace log: {e}"),
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
        Ok(TraceLog {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Write one record.
    pub fn record(&self, code: char, id: impl Display, message: impl Display) {
        let Some(inner) = &self.inner else { return };
        let ts = utc_timestamp(SystemTime::now(), 6);
        let line = format!("{code} {id} {ts} {message}");
        let line = format!("{}\n", line.trim_end());
        match inner.tx.try_send(Cmd::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n % 10_000 == 0 {
                    log::warn!("trace log is behind: {n} records dropped so far");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Reopen the file (after log rotation renamed it).
    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.tx.send_timeout(Cmd::Reopen, Duration::from_secs(1));
        }
    }

    /// Wait (up to a second) until everything recorded so far is written.
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

    /// A handle for one request, with its id.
    pub fn for_request(&self, id: String) -> Trace {
        Trace {
            log: self.clone(),
            id,
        }
    }
}

/// The trace log as one request sees it.
#[derive(Clone, Default)]
pub struct Trace {
    log: TraceLog,
    id: String,
}

impl Trace {
    /// The request's id, `CONN.RNO`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Add a record for this request.
    pub fn record(&self, code: char, message: impl Display) {
        self.log.record(code, &self.id, message);
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trace({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lines_and_reopens() {
        let dir = std::env::temp_dir().join(format!("rlb-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trace.log");
        let log = TraceLog::open(path.to_str().unwrap()).unwrap();
        log.record('S', 0, "");
        log.for_request("1.7".into()).record('B', "GET /x");
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("S 0 20"));
        let parts: Vec<&str> = lines[1].splitn(4, ' ').collect();
        assert_eq!((parts[0], parts[1], parts[3]), ("B", "1.7", "GET /x"));
        std::fs::rename(&path, dir.join("trace.log.1")).unwrap();
        log.reopen();
        log.record('X', 0, "");
        log.flush();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("X 0 "));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
