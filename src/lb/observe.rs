//! The observability listener (`--metrics-address`): `/metrics`
//! (Prometheus text), `/status.json` (the status document) and `/`, the
//! pool's live page, with its stylesheet, script and icon. Served by
//! threads of their own, one a connection up to [`MAX_CONNS`], which ask
//! the I/O loop for what they send: a slow or idle browser never holds up
//! request handling. Read only: nothing here changes the pool.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};

use super::htpasswd::AuthFile;

/// Connections served at once; more get a 503 and are closed.
pub const MAX_CONNS: usize = 32;

/// A connection idle for this long between requests is closed.
const IDLE: Duration = Duration::from_secs(15);

/// The request head's limit.
const MAX_HEAD: usize = 16 * 1024;

/// Request classes in the page's heat map unless `?classes=N` says.
pub const DEFAULT_CLASSES: usize = 20;

/// At most this many classes in a document.
pub const MAX_CLASSES: usize = 200;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/page.js");
const STYLE: &str = include_str!("page/page.css");
const ICON: &str = include_str!("page/icon.svg");

/// What a connection asks of the I/O loop.
pub enum Want {
    /// The metrics text.
    Metrics(Sender<String>),
    /// The status document with this many busiest classes.
    Document(usize, Sender<Vec<u8>>),
}

/// Serve on `addr`; `ask` passes a want to the I/O loop (and wakes it).
pub fn serve(
    addr: SocketAddr,
    auth: Option<Arc<AuthFile>>,
    ask: impl Fn(Want) + Send + Sync + 'static,
) -> io::Result<SocketAddr> {
    // SO_REUSEPORT: a new LB taking over from this one (`handover`) binds
    // the same address while this one finishes (the kernel lets only the
    // same user share it).
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    let listener: TcpListener = socket.into();
    let bound = listener.local_addr()?;
    let ask = Arc::new(ask);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("observe".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                if open.load(Ordering::Relaxed) >= MAX_CONNS {
                    let _ = s.write_all(&reply(503, "text/plain", b"busy\n", false, &[]));
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (ask, auth, left) = (ask.clone(), auth.clone(), open.clone());
                let spawned = std::thread::Builder::new()
                    .name("observe-conn".into())
                    .spawn(move || {
                        connection(s, auth.as_deref(), &*ask);
                        left.fetch_sub(1, Ordering::Relaxed);
                    });
                if let Err(e) = spawned {
                    open.fetch_sub(1, Ordering::Relaxed);
                    log::error!("observability listener: cannot start a thread: {e}");
                }
            }
        })?;
    Ok(bound)
}

/// A response with its head; `head_only` for HEAD requests.
fn reply(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        400 => "Bad Request",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// One request's head.
struct Head {
    method: String,
    path: String,
    authorization: Option<String>,
    close: bool,
}

/// Read the next request head: none at the end of the connection or an
/// error (a bad head is answered first).
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Head> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let header = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let connection = header("connection").unwrap_or_default();
                let has_body = header("content-length").is_some_and(|v| v.trim() != "0")
                    || header("transfer-encoding").is_some();
                let head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    path: req.path.unwrap_or("").to_string(),
                    authorization: header("authorization"),
                    // Bodies are not read: a request with one is the last.
                    close: req.version == Some(0)
                        || connection.to_ascii_lowercase().contains("close")
                        || has_body,
                };
                buf.drain(..n);
                return Some(head);
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                let _ = s.write_all(&reply(431, "text/plain", b"head too large\n", false, &[]));
                return None;
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => {
                let _ = s.write_all(&reply(400, "text/plain", b"bad request\n", false, &[]));
                return None;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The number of classes a `/status.json?classes=N` asks for.
fn classes_asked(query: &str) -> usize {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("classes="))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(DEFAULT_CLASSES, |n| n.clamp(1, MAX_CLASSES))
}

/// Serve one connection's requests until it closes or idles.
fn connection(mut s: TcpStream, auth: Option<&AuthFile>, ask: &dyn Fn(Want)) {
    let _ = s.set_read_timeout(Some(IDLE));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(head) = read_head(&mut s, &mut buf) {
        let out = answer(&head, auth, ask);
        if s.write_all(&out).is_err() || head.close {
            return;
        }
    }
}

/// The response to one request.
fn answer(head: &Head, auth: Option<&AuthFile>, ask: &dyn Fn(Want)) -> Vec<u8> {
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        let allow = [("Allow", "GET, HEAD")];
        return reply(405, "text/plain", b"read only\n", false, &allow);
    }
    if let Some(a) = auth {
        if !a.allows(head.authorization.as_deref()) {
            let challenge = [(
                "WWW-Authenticate",
                "Basic realm=\"resumelb\", charset=\"UTF-8\"",
            )];
            return reply(
                401,
                "text/plain",
                b"authentication required\n",
                head_only,
                &challenge,
            );
        }
    }
    let (path, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    let page = |kind: &str, body: &str| {
        // Everything the page uses comes from here; a browser enforces it.
        let csp = [(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )];
        reply(200, kind, body.as_bytes(), head_only, &csp)
    };
    match path {
        "/" | "/index.html" => page("text/html; charset=utf-8", PAGE),
        "/page.js" => page("text/javascript; charset=utf-8", SCRIPT),
        "/page.css" => page("text/css; charset=utf-8", STYLE),
        "/icon.svg" | "/favicon.ico" => page("image/svg+xml", ICON),
        "/metrics" => {
            let (tx, rx) = bounded(1);
            ask(Want::Metrics(tx));
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(text) => reply(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.as_bytes(),
                    head_only,
                    &[],
                ),
                Err(_) => reply(503, "text/plain", b"no answer\n", head_only, &[]),
            }
        }
        "/status.json" => {
            let (tx, rx) = bounded(1);
            ask(Want::Document(classes_asked(query), tx));
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(doc) => reply(200, "application/json", &doc, head_only, &[]),
                Err(_) => reply(503, "text/plain", b"no answer\n", head_only, &[]),
            }
        }
        _ => reply(404, "text/plain", b"not found\n", head_only, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_count_from_the_query() {
        assert_eq!(classes_asked(""), DEFAULT_CLASSES);
        assert_eq!(classes_asked("classes=5"), 5);
        assert_eq!(classes_asked("x=1&classes=0"), 1);
        assert_eq!(classes_asked("classes=100000"), MAX_CLASSES);
        assert_eq!(classes_asked("classes=abc"), DEFAULT_CLASSES);
    }

    #[test]
    fn routes_methods_and_auth() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("pw", 4).expect("hash");
        std::fs::write(&path, format!("ops:{hash}\n")).expect("write");
        let auth = AuthFile::load(&path).expect("loads");
        let ask = |w: Want| match w {
            Want::Metrics(tx) => {
                let _ = tx.send("m 1\n".into());
            }
            Want::Document(n, tx) => {
                let _ = tx.send(format!("{{\"n\":{n}}}").into_bytes());
            }
        };
        let get = |path: &str, authorization: Option<&str>, a: Option<&AuthFile>| {
            let head = Head {
                method: "GET".into(),
                path: path.into(),
                authorization: authorization.map(str::to_string),
                close: false,
            };
            String::from_utf8(answer(&head, a, &ask)).expect("text")
        };
        let doc = get("/status.json?classes=3", None, None);
        assert!(
            doc.starts_with("HTTP/1.1 200 OK\r\n") && doc.ends_with("{\"n\":3}"),
            "{doc}"
        );
        assert!(get("/metrics", None, None).ends_with("\r\n\r\nm 1\n"));
        let page = get("/", None, None);
        assert!(page.contains("Content-Security-Policy: default-src 'self'"));
        assert!(page.contains("<script src=\"page.js\""));
        assert!(get("/nope", None, None).starts_with("HTTP/1.1 404"));
        let denied = get("/", None, Some(&auth));
        assert!(denied.starts_with("HTTP/1.1 401") && denied.contains("WWW-Authenticate: Basic"));
        // "ops:pw"
        assert!(get("/", Some("Basic b3BzOnB3"), Some(&auth)).starts_with("HTTP/1.1 200"));
        let post = Head {
            method: "POST".into(),
            path: "/".into(),
            authorization: None,
            close: true,
        };
        let r = String::from_utf8(answer(&post, None, &ask)).expect("text");
        assert!(r.starts_with("HTTP/1.1 405") && r.contains("Allow: GET, HEAD"));
    }
}
