//! The status server: each connection to the Unix socket gets one JSON
//! document (resumelb-protocol(7), "Status document") and a newline.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use serde_json::{json, Value};
use slotmap::{Key, SlotMap};

use super::clients::Clients;
use super::ctx::Ctx;
use super::workers::Workers;
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
    pub(super) fn accept(
        &mut self,
        registry: &Registry,
        ctx: &Ctx,
        workers: &Workers,
        clients: &Clients,
    ) {
        loop {
            let Some((l, _)) = &self.listener else { return };
            match l.accept() {
                Ok((stream, _)) => {
                    let doc = document(ctx, workers, clients);
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

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The status document, as JSON text with a newline.
fn document(ctx: &Ctx, workers: &Workers, clients: &Clients) -> Vec<u8> {
    let st = ctx.balancer.status();
    let mut rows: Vec<(String, Value, Value)> = Vec::new();
    for ws in &st.workers {
        let Some(w) = workers.by_id(ws.id) else {
            continue;
        };
        let oldest = w.oldest().map_or(Value::Null, |t| json!(unix_secs(t)));
        rows.push((
            w.addr.clone(),
            json!([w.addr, ws.backlog, ws.mean_backlog, oldest]),
            json!([w.addr, w.unsent()]),
        ));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut details = serde_json::Map::new();
    for ws in &st.workers {
        if let Some(w) = workers.by_id(ws.id) {
            let mut d = json!({"resume_size": ws.resume_size});
            if let Some(h) = &w.hello {
                d["threads"] = json!(h.threads);
                d["pid"] = json!(h.pid);
                d["version"] = json!(h.version);
            }
            details.insert(w.addr.clone(), d);
        }
    }
    let settings = ctx.balancer.settings();
    let doc = json!({
        "backlog": st.backlog,
        "mean_backlog": st.mean_backlog,
        "workers": rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
        "workers_ex": rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>(),
        "worker_details": details,
        "waiting": clients.waiting(),
        "clients": clients.len(),
        "settings": {
            "variance": settings.variance,
            "backlog_history": settings.backlog_history,
            "unskilled_score": settings.unskilled_score,
        },
        "version": ctx.balancer.current_version(),
        "retries": ctx.counters.retries,
        "bad_gateway": ctx.counters.bad_gateway,
        "spilled_bytes": ctx.counters.spilled_bytes,
    });
    let mut out = doc.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Prometheus text: the counters, then the pool and the workers.
pub(super) fn metrics_text(ctx: &Ctx, workers: &Workers, clients: &Clients) -> String {
    use super::metrics::{escape, family};
    let mut out = String::with_capacity(4096);
    ctx.metrics.render(&mut out);
    let st = ctx.balancer.status();
    family(
        &mut out,
        "resumelb_pool_backlog",
        "gauge",
        "Requests in flight in the pool.",
        &[(String::new(), st.backlog as f64)],
    );
    family(
        &mut out,
        "resumelb_pool_mean_backlog",
        "gauge",
        "The pool's decayed mean backlog.",
        &[(String::new(), st.mean_backlog)],
    );
    let mut backlog = Vec::new();
    let mut mean = Vec::new();
    let mut size = Vec::new();
    for ws in &st.workers {
        if let Some(w) = workers.by_id(ws.id) {
            let l = format!("worker=\"{}\"", escape(&w.addr));
            backlog.push((l.clone(), ws.backlog as f64));
            mean.push((l.clone(), ws.mean_backlog));
            size.push((l, ws.resume_size as f64));
        }
    }
    backlog.sort_by(|a, b| a.0.cmp(&b.0));
    mean.sort_by(|a, b| a.0.cmp(&b.0));
    size.sort_by(|a, b| a.0.cmp(&b.0));
    family(
        &mut out,
        "resumelb_worker_backlog",
        "gauge",
        "Requests in flight on a worker.",
        &backlog,
    );
    family(
        &mut out,
        "resumelb_worker_mean_backlog",
        "gauge",
        "A worker's decayed mean backlog.",
        &mean,
    );
    family(
        &mut out,
        "resumelb_worker_resume_size",
        "gauge",
        "Request classes in a worker's résumé.",
        &size,
    );
    let mut up: Vec<(String, f64)> = workers
        .addresses()
        .map(|(addr, up)| {
            (
                format!("worker=\"{}\"", escape(addr)),
                if up { 1.0 } else { 0.0 },
            )
        })
        .collect();
    up.sort_by(|a, b| a.0.cmp(&b.0));
    family(
        &mut out,
        "resumelb_worker_up",
        "gauge",
        "1 when a configured worker is connected and in the pool.",
        &up,
    );
    family(
        &mut out,
        "resumelb_retries_total",
        "counter",
        "Requests sent again after their worker was lost.",
        &[(String::new(), ctx.counters.retries as f64)],
    );
    family(
        &mut out,
        "resumelb_bad_gateway_total",
        "counter",
        "502 responses for lost or failing workers.",
        &[(String::new(), ctx.counters.bad_gateway as f64)],
    );
    family(
        &mut out,
        "resumelb_spilled_bytes_total",
        "counter",
        "Response bytes buffered on disk for slow clients.",
        &[(String::new(), ctx.counters.spilled_bytes as f64)],
    );
    family(
        &mut out,
        "resumelb_clients",
        "gauge",
        "Open client connections.",
        &[(String::new(), clients.len() as f64)],
    );
    family(
        &mut out,
        "resumelb_waiting",
        "gauge",
        "Requests waiting for a worker.",
        &[(String::new(), clients.waiting() as f64)],
    );
    out
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
        out.push_str(&format!(
            "{:<name_w$}  {:>7}  {:>12.2}  {:>10}\n",
            w[0].as_str().unwrap_or(""),
            w[1].as_i64().unwrap_or(0),
            num(&w[2]),
            age
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn text_table() {
        let doc = json!({"backlog": 3, "mean_backlog": 2.08,
            "workers": [["127.0.0.1:8001", 2, 1.57, 1000], ["127.0.0.1:8002", 1, 1.0, null]],
            "workers_ex": []});
        let t = format_text(&doc, UNIX_EPOCH + Duration::from_secs(1012));
        assert_eq!(
            t,
            "backlog: 3\nmean backlog: 2.08\n\
             worker          backlog  mean backlog  oldest (s)\n\
             127.0.0.1:8001        2          1.57          12\n\
             127.0.0.1:8002        1          1.00           -\n"
        );
        let empty = json!({"backlog": 0, "mean_backlog": 0.0, "workers": []});
        assert!(format_text(&empty, UNIX_EPOCH).ends_with("no workers\n"));
    }
}
