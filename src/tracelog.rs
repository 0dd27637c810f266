//! The trace log: one line per event, `CODE ID TIMESTAMP [MESSAGE]`, written
//! by its own thread so that no request path waits on the disk.
//!
//! Codes used by the worker: `S`/`X` process start and exit (id 0), and per
//! request `B` begin, `I` input read, `C` app called, `A` app returned, `E`
//! end. Applications may add their own codes through [`Trace`].

use std::fmt::Display;
use std::time::SystemTime;

use crate::util::linelog::LineLog;
use crate::util::time::utc_timestamp;

/// A handle on the trace log (cheap to clone; disabled handles do nothing).
#[derive(Clone, Default)]
pub struct TraceLog {
    log: LineLog,
}

impl TraceLog {
    /// A trace log that records nothing.
    pub fn disabled() -> TraceLog {
        TraceLog::default()
    }

    /// Open `-` (stderr) or a file (appended to), and start its writer.
    pub fn open(target: &str) -> std::io::Result<TraceLog> {
        Ok(TraceLog {
            log: LineLog::open(target, "tracelog")?,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.log.is_enabled()
    }

    /// Write one record.
    pub fn record(&self, code: impl Display, id: impl Display, message: impl Display) {
        if !self.is_enabled() {
            return;
        }
        let ts = utc_timestamp(SystemTime::now(), 6);
        let line = format!("{code} {id} {ts} {message}");
        self.log.line(format!("{}\n", line.trim_end()));
    }

    /// Reopen the file (after log rotation renamed it).
    pub fn reopen(&self) {
        self.log.reopen();
    }

    /// Wait (up to a second) until everything recorded so far is written.
    pub fn flush(&self) {
        self.log.flush();
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
    pub fn record(&self, code: impl Display, message: impl Display) {
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
