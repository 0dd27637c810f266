//! The status server: each connection to the Unix socket gets one JSON
//! document (resumelb-protocol(7), "Status document"; made in `report`)
//! and a newline; and `get-lb-status`'s text form of it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde_json::Value;
use slotmap::{Key, SlotMap};

use crate::net::conn_token;

slotmap::new_key_type! { pub(super) struct StatusKey; }

/// The token kind of status connections.
pub(super) const KIND: u8 = 3;

/// One status client being written to.
struct StatusConn {
    stream: UnixStream,
    doc: Vec<u8>,
    pos: usize,
}

impl StatusConn {
    /// Write what the socket takes; true when done (or failed).
    fn write(&mut self) -> bool {
        while self.pos < self.doc.len() {
            match self.stream.write(&self.doc[self.pos..]) {
                Ok(0) => return true,
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }
}

/// The status server: its socket, and the clients being sent a document.
#[derive(Default)]
pub(super) struct Status {
    listener: Option<(UnixListener, PathBuf)>,
    conns: SlotMap<StatusKey, StatusConn>,
}

impl Status {
    /// Listen on `path` (if any), mode 0660. A socket file left by an
    /// earlier run is replaced; one a running LB answers on, or another
    /// kind of file, is not.
    pub(super) fn bind(
        path: Option<&Path>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Status> {
        let Some(path) = path else {
            return Ok(Status::default());
        };
        let status_error = |e: io::Error| {
            io::Error::new(e.kind(), format!("status socket {}: {e}", path.display()))
        };
        match claim_socket_path(path).map_err(status_error)? {
            SocketPath::Free => {}
            SocketPath::InUse => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "status socket {} is in use: another load balancer answers on it",
                        path.display()
                    ),
                ))
            }
            SocketPath::NotASocket => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "status socket {} exists and is not a socket",
                        path.display()
                    ),
                ))
            }
        }
        let mut l = UnixListener::bind(path).map_err(status_error)?;
        // Owner and group only: the document names every worker. (Until
        // this chmod the umask applies; connecting needs write permission,
        // which the usual umask 022 denies.)
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(status_error)?;
        registry.register(&mut l, token, Interest::READABLE)?;
        Ok(Status {
            listener: Some((l, path.to_path_buf())),
            conns: SlotMap::with_key(),
        })
    }

    /// Each new connection gets the document as it is now.
    pub(super) fn accept(&mut self, registry: &Registry, document: impl Fn() -> Vec<u8>) {
        loop {
            let Some((l, _)) = &self.listener else { return };
            match l.accept() {
                Ok((stream, _)) => {
                    let doc = document();
                    let key = self.conns.insert(StatusConn {
                        stream,
                        doc,
                        pos: 0,
                    });
                    let token = conn_token(KIND, key.data());
                    let c = &mut self.conns[key];
                    if registry
                        .register(&mut c.stream, token, Interest::WRITABLE)
                        .is_err()
                    {
                        self.conns.remove(key);
                        continue;
                    }
                    self.event(key, registry);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::error!("status accept failed: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn event(&mut self, key: StatusKey, registry: &Registry) {
        let done = self.conns.get_mut(key).is_some_and(StatusConn::write);
        if done {
            if let Some(mut c) = self.conns.remove(key) {
                let _ = registry.deregister(&mut c.stream);
            }
        }
    }

    /// Handing over to a new process: stop listening, and leave the socket
    /// file for the new process to replace (documents being written are
    /// finished).
    pub(super) fn release(&mut self, registry: &Registry) {
        if let Some((mut l, _)) = self.listener.take() {
            let _ = registry.deregister(&mut l);
        }
    }

    /// Shutting down: the socket file goes.
    pub(super) fn close(&mut self, registry: &Registry) {
        for (_, mut c) in self.conns.drain() {
            let _ = registry.deregister(&mut c.stream);
        }
        if let Some((_, path)) = self.listener.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What is at a status socket's path, for an LB about to listen there.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketPath {
    /// Nothing, or a socket nobody answers on (removed): free to bind.
    Free,
    /// Another process answers on it: do not take it.
    InUse,
    /// A file, directory or the like: the operator must move it.
    NotASocket,
}

/// Look at `path` before binding it; a stale socket file is removed.
pub fn claim_socket_path(path: &std::path::Path) -> io::Result<SocketPath> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SocketPath::Free),
        Err(e) => return Err(e),
        Ok(m) => m,
    };
    if !meta.file_type().is_socket() {
        return Ok(SocketPath::NotASocket);
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(SocketPath::InUse),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)?;
            Ok(SocketPath::Free)
        }
        Err(e) => Err(e),
    }
}

/// Whether `path` holds something other than a socket (for the tools'
/// messages: "exists and is not a socket" rather than "refused").
pub fn is_not_a_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_socket())
}

pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `get-lb-status` text: backlog, mean backlog, and a table of workers.
pub fn format_text(doc: &Value, now: SystemTime) -> String {
    let mut out = String::new();
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    out.push_str(&format!(
        "backlog: {}\nmean backlog: {:.2}\n",
        doc["backlog"].as_i64().unwrap_or(0),
        num(&doc["mean_backlog"])
    ));
    let workers = doc["workers"].as_array().cloned().unwrap_or_default();
    if workers.is_empty() {
        out.push_str("no workers\n");
        return out;
    }
    let name_w = workers
        .iter()
        .map(|w| w[0].as_str().unwrap_or("").len())
        .max()
        .unwrap_or(0)
        .max(6);
    out.push_str(&format!(
        "{:<name_w$}  {:>7}  {:>12}  {:>10}\n",
        "worker", "backlog", "mean backlog", "oldest (s)"
    ));
    let now = unix_secs(now);
    for w in workers {
        let age = match w[3].as_u64() {
            Some(t) => now.saturating_sub(t).to_string(),
            None => "-".to_string(),
        };
        let name = w[0].as_str().unwrap_or("");
        // A worker held out of the pool is marked after its row.
        let details = &doc["worker_details"][name];
        let mark = if details["available"] == Value::Bool(false) {
            "  unavailable"
        } else if details["ejected_for"].is_number() {
            "  ejected"
        } else if details["silent"] == Value::Bool(true) {
            "  silent"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<name_w$}  {:>7}  {:>12.2}  {:>10}{}\n",
            name,
            w[1].as_i64().unwrap_or(0),
            num(&w[2]),
            age,
            mark
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn text_table() {
        let doc = json!({"backlog": 3, "mean_backlog": 2.08,
            "workers": [["127.0.0.1:8001", 2, 1.57, 1000], ["127.0.0.1:8002", 1, 1.0, null]],
            "workers_ex": [],
            "worker_details": {"127.0.0.1:8001": {"available": true, "silent": false},
                               "127.0.0.1:8002": {"available": false}}});
        let t = format_text(&doc, UNIX_EPOCH + Duration::from_secs(1012));
        assert_eq!(
            t,
            "backlog: 3\nmean backlog: 2.08\n\
             worker          backlog  mean backlog  oldest (s)\n\
             127.0.0.1:8001        2          1.57          12\n\
             127.0.0.1:8002        1          1.00           -  unavailable\n"
        );
        let doc = json!({"backlog": 1, "mean_backlog": 1.0,
            "workers": [["127.0.0.1:8001", 1, 1.0, 1000]],
            "worker_details": {"127.0.0.1:8001": {"available": true, "silent": true}}});
        let t = format_text(&doc, UNIX_EPOCH + Duration::from_secs(1003));
        assert!(
            t.ends_with("127.0.0.1:8001        1          1.00           3  silent\n"),
            "{t}"
        );
        let empty = json!({"backlog": 0, "mean_backlog": 0.0, "workers": []});
        assert!(format_text(&empty, UNIX_EPOCH).ends_with("no workers\n"));
    }
}
