//! The `upstream` app: forwards each request as HTTP/1.1 to a server on
//! this host (a WSGI app under waitress or gunicorn, say) over keep-alive
//! connections, at most one per app thread, and streams the answer back.
//!
//! Hop-by-hop headers are dropped both ways; `Host` and the raw request
//! target are kept; `X-Forwarded-For` and `X-Forwarded-Proto` are added.
//! An upstream that is down or resets the connection before answering gets
//! `502 Bad Gateway` from the worker (logged). A stale keep-alive
//! connection is retried once on a fresh one.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

mod request;

use super::app::{App, AppError, Body, Request, Response};
use crate::http::client::{Body as ReadBody, ResponseReader};
use crate::http::response::Framing;
use crate::http::HOP_BY_HOP;
pub use request::request_head;

const CHUNK: usize = 64 * 1024;
/// The longest a check of a down upstream waits for its connect.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Forwards requests to an HTTP server.
pub struct UpstreamApp {
    addr: SocketAddr,
    timeout: Duration,
    idle: Arc<Mutex<Vec<Conn>>>,
    /// The upstream could not be reached (refused, or no answer to the
    /// connect in time) and has not been since; shared with the worker's
    /// I/O thread when it forwards requests itself.
    down: Arc<AtomicBool>,
}

/// Where an app that only forwards requests sends them ([`App::forwarding`]):
/// the worker's I/O thread then forwards them itself, over non-blocking
/// connections in its own poll, with no app thread between.
pub struct Forwarding {
    pub addr: SocketAddr,
    /// Bounds connecting, and the wait for each read or write.
    pub timeout: Duration,
    /// Set while the upstream cannot be reached (see [`App::available`]).
    pub down: Arc<AtomicBool>,
}

/// Where a connection's bytes come from: the upstream, or (for the fuzz
/// target and tests) bytes given in advance.
enum Stream {
    Tcp(TcpStream),
    Bytes(io::Cursor<Vec<u8>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Bytes(c) => c.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Bytes(_) => Err(io::Error::other("a byte source takes no writes")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Bytes(_) => Ok(()),
        }
    }
}

/// A connection and the response bytes read from it and not used yet.
struct Conn {
    stream: Stream,
    reader: ResponseReader,
}

impl Conn {
    fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn::over(Stream::Tcp(stream)))
    }

    fn over(stream: Stream) -> Conn {
        Conn {
            stream,
            reader: ResponseReader::new(),
        }
    }
}

fn eof(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, why.to_string())
}

/// A response head as the worker passes it on.
pub(crate) struct Head {
    pub status: String,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// Read one response head (see [`pass_on`]).
fn read_head(conn: &mut Conn, head_request: bool) -> io::Result<Head> {
    let h = conn
        .reader
        .head(&mut conn.stream, head_request)?
        .ok_or_else(|| eof("upstream closed the connection before a response"))?;
    Ok(pass_on(h, head_request))
}

/// A response head as read from the upstream, made into what the worker
/// passes on: hop-by-hop headers (and those `Connection` names) are
/// dropped, and a `Content-Length` beside chunked coding.
pub(crate) fn pass_on(h: crate::http::client::Head, head_request: bool) -> Head {
    let listed: Vec<String> = h
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let chunked = h.framing == Framing::Chunked;
    let headers = h
        .headers
        .into_iter()
        .filter(|(n, _)| {
            let lower = n.to_ascii_lowercase();
            let dropped = HOP_BY_HOP.contains(&lower.as_str())
                || listed.contains(&lower)
                || (chunked && lower == "content-length");
            !dropped
        })
        .collect();
    Head {
        status: h.status,
        headers,
        framing: h.framing,
        // Some servers (waitress among them) send the body of a GET in
        // answer to HEAD; the connection cannot be trusted after it.
        keep_alive: h.keep_alive && !head_request,
    }
}

/// An error before any response byte: the connection closed or was reset.
pub(crate) fn is_early(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Outcome of sending a request and reading its response head.
enum Attempt {
    Ok(Conn, Head),
    /// Failed before any response byte arrived: a stale keep-alive
    /// connection looks like this, so a reused one is retried.
    Early(io::Error),
    Failed(io::Error),
}

impl UpstreamApp {
    /// Forward to `addr`; `timeout` bounds connecting and each read/write.
    pub fn new(addr: SocketAddr, timeout: Duration) -> UpstreamApp {
        UpstreamApp {
            addr,
            timeout,
            idle: Arc::default(),
            down: Arc::new(AtomicBool::new(false)),
        }
    }

    fn attempt(&self, mut conn: Conn, head: &[u8], req: &mut Request) -> Attempt {
        let head_request = req.method() == "HEAD";
        let sent = (|| -> io::Result<()> {
            conn.stream.write_all(head)?;
            req.body.rewind()?;
            io::copy(&mut req.body, &mut conn.stream)?;
            conn.stream.flush()
        })();
        if let Err(e) = sent {
            return Attempt::Early(e);
        }
        match read_head(&mut conn, head_request) {
            Ok(h) => Attempt::Ok(conn, h),
            // Nothing came back: a stale keep-alive connection looks so.
            Err(e) if conn.reader.buffered().is_empty() && is_early(&e) => Attempt::Early(e),
            Err(e) => Attempt::Failed(e),
        }
    }

    fn connect(&self, req: &Request) -> Option<Conn> {
        match Conn::connect(self.addr, self.timeout) {
            Ok(c) => {
                self.down.store(false, Ordering::Relaxed);
                Some(c)
            }
            Err(e) => {
                self.down.store(true, Ordering::Relaxed);
                log::error!(
                    "{}: upstream {} unreachable: {e}",
                    req.trace.id(),
                    self.addr
                );
                None
            }
        }
    }
}

/// The status and body of the answer when the upstream fails.
pub(crate) const BAD_GATEWAY: (&str, &[u8]) = (
    "502 Bad Gateway",
    b"Bad Gateway: the application server did not answer\n",
);

fn bad_gateway() -> Response {
    Response::with_body(
        BAD_GATEWAY.0,
        "text/plain; charset=utf-8",
        BAD_GATEWAY.1.to_vec(),
    )
}

impl App for UpstreamApp {
    /// Requests with bodies in memory are forwarded by the worker's I/O
    /// thread; [`App::call`] serves those whose bodies were spilled to
    /// disk (and embedders that call it themselves).
    fn forwarding(&self) -> Option<Forwarding> {
        Some(Forwarding {
            addr: self.addr,
            timeout: self.timeout,
            down: self.down.clone(),
        })
    }

    /// Down since a connect failed, until a new connection succeeds (tried
    /// here, at most once per call).
    fn available(&self) -> bool {
        if !self.down.load(Ordering::Relaxed) {
            return true;
        }
        let probe = TcpStream::connect_timeout(&self.addr, self.timeout.min(PROBE_TIMEOUT));
        let up = probe.is_ok();
        if up {
            self.down.store(false, Ordering::Relaxed);
        }
        up
    }

    fn call(&self, mut req: Request) -> Result<Response, AppError> {
        let head = request_head(&req, req.body.len());
        let reused = self.idle.lock().pop();
        let mut fresh = reused.is_none();
        let Some(mut conn) = reused.or_else(|| self.connect(&req)) else {
            return Ok(bad_gateway());
        };
        let (conn, h) = loop {
            match self.attempt(conn, &head, &mut req) {
                Attempt::Ok(c, h) => break (c, h),
                Attempt::Early(e) if !fresh => {
                    log::debug!("stale upstream connection ({e}); retrying on a new one");
                    fresh = true;
                    let Some(c) = self.connect(&req) else {
                        return Ok(bad_gateway());
                    };
                    conn = c;
                }
                Attempt::Early(e) | Attempt::Failed(e) => {
                    log::error!("{}: upstream {} failed: {e}", req.trace.id(), self.addr);
                    return Ok(bad_gateway());
                }
            }
        };
        let body = conn.reader.body_for(h.framing);
        let mut stream = BodyStream {
            conn: Some(conn),
            body,
            keep_alive: h.keep_alive,
            idle: self.idle.clone(),
        };
        let mut response = Response::new(h.status);
        response.headers = h.headers;
        response.body = if stream.body.is_done() {
            stream.finish();
            Body::Empty
        } else {
            Body::Stream(Box::new(stream))
        };
        Ok(response)
    }
}

/// A response body read from upstream as the worker sends it on. At its
/// end a reusable connection goes back to the idle list; dropped early (a
/// cancel) the connection is closed.
struct BodyStream {
    conn: Option<Conn>,
    body: ReadBody,
    keep_alive: bool,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl BodyStream {
    fn finish(&mut self) {
        if let Some(c) = self.conn.take() {
            if self.keep_alive && self.body.is_done() && c.reader.buffered().is_empty() {
                self.idle.lock().push(c);
            }
        }
    }

    fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        conn.reader.piece(&mut conn.stream, &mut self.body, CHUNK)
    }
}

impl Iterator for BodyStream {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        match self.next_piece() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.finish();
                None
            }
            Err(e) => {
                self.conn = None;
                Some(Err(e))
            }
        }
    }
}

/// A response as the upstream app read it (see [`read_response`]).
#[doc(hidden)]
pub struct ReadResponse {
    pub status: String,
    /// The headers it passes on.
    pub headers: Vec<(String, String)>,
    /// The body pieces, the last one an error if the body failed.
    pub pieces: Vec<io::Result<Vec<u8>>>,
}

/// A response as the upstream app reads it from `bytes`. For the fuzz
/// target and tests; the app itself reads from its connections.
#[doc(hidden)]
pub fn read_response(bytes: Vec<u8>, head_request: bool) -> io::Result<ReadResponse> {
    let mut conn = Conn::over(Stream::Bytes(io::Cursor::new(bytes)));
    let h = read_head(&mut conn, head_request)?;
    let body = BodyStream {
        body: conn.reader.body_for(h.framing),
        conn: Some(conn),
        keep_alive: h.keep_alive,
        idle: Arc::default(),
    };
    // Stops at the first error (the stream ends after it).
    Ok(ReadResponse {
        status: h.status,
        headers: h.headers,
        pieces: body.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(raw: &str) -> Result<Vec<u8>, String> {
        let r = read_response(raw.as_bytes().to_vec(), false).map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        for p in r.pieces {
            body.extend(p.map_err(|e| e.to_string())?);
        }
        Ok(body)
    }

    #[test]
    fn chunked_bodies_from_upstream_are_read_strictly() {
        let ok = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\n\r\n";
        assert_eq!(body_of(ok).unwrap(), b"hello");
        for (raw, why) in [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
                "chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
                "not ended by CRLF",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
                "not followed by CRLF",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
                "CRLF",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello",
                "before the end",
            ),
        ] {
            let e = body_of(raw).unwrap_err();
            assert!(e.contains(why), "{raw:?}: {e}");
        }
        let r = read_response(
            b"HTTP/1.1 204 No Content\r\nConnection: close, X-A\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
                .to_vec(),
            false,
        )
        .ok()
        .unwrap();
        assert_eq!(r.status, "204 No Content");
        assert_eq!(r.headers, vec![("X-B".to_string(), "2".to_string())]);
    }
}
