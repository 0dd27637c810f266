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
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::app::{App, AppError, Body, Request, Response};
use crate::http::HOP_BY_HOP;

const MAX_HEAD: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;

/// Forwards requests to an HTTP server.
pub struct UpstreamApp {
    addr: SocketAddr,
    timeout: Duration,
    idle: Arc<Mutex<Vec<Conn>>>,
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

/// A connection with its own read buffer.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
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
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Read more bytes onto the buffer; 0 at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        let r = loop {
            match self.stream.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        r
    }

    /// Up to `max` body bytes: buffered ones first, else one read.
    fn take(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if self.available().is_empty() && self.fill()? == 0 {
            return Ok(Vec::new());
        }
        let n = self.available().len().min(max);
        let out = self.available()[..n].to_vec();
        self.consume(n);
        Ok(out)
    }

    /// One CRLF-terminated line (without it), at most `limit` bytes. A
    /// bare LF is an error: a reader that took it where the upstream did
    /// not could be made to see another body than the upstream sent.
    fn line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.available().iter().position(|&b| b == b'\n') {
                let mut l = self.available()[..i].to_vec();
                self.consume(i + 1);
                if l.pop() != Some(b'\r') {
                    return Err(invalid("a line in a chunked body ends in a bare LF"));
                }
                return Ok(l);
            }
            if self.available().len() > limit {
                return Err(invalid("line too long in a chunked body"));
            }
            if self.fill()? == 0 {
                return Err(eof("upstream closed the connection in a chunked body"));
            }
        }
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn eof(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, why.to_string())
}

/// ISO-8859-1 text back to its bytes (PROTOCOL.md: each char is one byte).
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// Bytes to ISO-8859-1 text.
fn from_latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// `HTTP_X_FOO_BAR` → `X-Foo-Bar`.
fn header_name(env_key: &str) -> String {
    env_key
        .split('_')
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &cs.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A decoded path as a request target: characters other than unreserved,
/// sub-delims, `:`, `@` and `/` percent-encoded (ISO-8859-1 characters as
/// their byte, any other as its UTF-8 bytes).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c) {
            out.push(c);
        } else if let Ok(b) = u8::try_from(u32::from(c)) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The request head to send upstream.
#[doc(hidden)]
pub fn request_head(req: &Request, body_len: u64) -> Vec<u8> {
    let env = &req.environ;
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    let mut target = get("REQUEST_URI").to_string();
    if target.is_empty() {
        // PATH_INFO is decoded: encode it again, or a decoded space or '?'
        // would change the request line's meaning.
        target = encode_path(get("PATH_INFO"));
        if !get("QUERY_STRING").is_empty() {
            target = format!("{target}?{}", get("QUERY_STRING"));
        }
    }
    if target.is_empty() {
        target = "/".into();
    }
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(req.method().as_bytes());
    head.push(b' ');
    head.extend_from_slice(&latin1(&target));
    head.extend_from_slice(b" HTTP/1.1\r\n");
    // Headers named in Connection are hop-by-hop too.
    let listed: Vec<String> = get("HTTP_CONNECTION")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut push = |name: &str, value: &str| {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&latin1(value));
        head.extend_from_slice(b"\r\n");
    };
    let mut forwarded_for = String::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("HTTP_") else {
            continue;
        };
        let name = header_name(rest);
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || listed.contains(&lower)
            || lower == "content-length"
            || lower == "content-type"
        {
            continue;
        }
        if lower == "x-forwarded-for" {
            forwarded_for = v.clone();
            continue;
        }
        push(&name, v);
    }
    if !env.contains_key("HTTP_HOST") {
        // HTTP/1.0 without Host: HTTP/1.1 requires one. The address the
        // LB took the request on is what a WSGI server would use.
        let host = match (get("SERVER_NAME"), get("SERVER_PORT")) {
            ("", _) => "localhost".to_string(),
            (name, "") | (name, "80") => name.to_string(),
            (name, port) => format!("{name}:{port}"),
        };
        push("Host", &host);
    }
    if !get("CONTENT_TYPE").is_empty() {
        push("Content-Type", get("CONTENT_TYPE"));
    }
    let method = req.method();
    if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        push("Content-Length", &body_len.to_string());
    }
    let remote = get("REMOTE_ADDR");
    if !remote.is_empty() {
        if forwarded_for.is_empty() {
            forwarded_for = remote.to_string();
        } else {
            forwarded_for = format!("{forwarded_for}, {remote}");
        }
    }
    if !forwarded_for.is_empty() {
        push("X-Forwarded-For", &forwarded_for);
    }
    let scheme = get("wsgi.url_scheme");
    push(
        "X-Forwarded-Proto",
        if scheme.is_empty() { "http" } else { scheme },
    );
    head.extend_from_slice(b"\r\n");
    head
}

enum Framing {
    None,
    Sized(u64),
    Chunked,
    UntilClose,
}

struct Head {
    status: String,
    headers: Vec<(String, String)>,
    framing: Framing,
    keep_alive: bool,
}

/// Read one response head, skipping interim (1xx) responses.
fn read_head(conn: &mut Conn, head_request: bool) -> io::Result<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        let used = match resp
            .parse(conn.available())
            .map_err(|e| invalid(&format!("bad response: {e}")))?
        {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                if conn.available().len() >= MAX_HEAD {
                    return Err(invalid("response head too large"));
                }
                if conn.fill()? == 0 {
                    return Err(eof("upstream closed the connection in a response head"));
                }
                continue;
            }
        };
        let code = resp.code.unwrap_or(0);
        if !(100..600).contains(&code) {
            // "020" parses as 20: not a status the LB could pass on.
            return Err(invalid(&format!("bad status {code:03} from upstream")));
        }
        let minor = resp.version.unwrap_or(1);
        let reason = resp.reason.unwrap_or("").to_string();
        let mut out = Vec::new();
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut close = minor == 0;
        let mut listed: Vec<String> = Vec::new();
        for h in resp.headers.iter() {
            let lower = h.name.to_ascii_lowercase();
            let value = from_latin1(h.value);
            match lower.as_str() {
                "content-length" => {
                    let n: u64 = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid("bad Content-Length from upstream"))?;
                    if length.is_some_and(|l| l != n) {
                        return Err(invalid("conflicting Content-Length from upstream"));
                    }
                    length = Some(n);
                }
                "transfer-encoding" => {
                    chunked = value
                        .rsplit(',')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
                }
                "connection" => {
                    for t in value.split(',') {
                        let t = t.trim().to_ascii_lowercase();
                        if t == "close" {
                            close = true;
                        } else if t == "keep-alive" && minor == 0 {
                            close = false;
                        }
                        listed.push(t);
                    }
                }
                _ => {}
            }
            if !HOP_BY_HOP.contains(&lower.as_str()) {
                out.push((h.name.to_string(), value));
            }
        }
        conn.consume(used);
        if (100..200).contains(&code) && code != 101 {
            continue;
        }
        out.retain(|(n, _)| !listed.contains(&n.to_ascii_lowercase()));
        if head_request {
            // Some servers (waitress among them) send the body of a GET in
            // answer to HEAD; the connection cannot be trusted after it.
            close = true;
        }
        let framing = if head_request || code == 204 || code == 304 {
            Framing::None
        } else if chunked {
            // Chunked wins over a Content-Length (RFC 9112 §6.3); the
            // length is not passed on.
            out.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Sized(n)
        } else {
            close = true;
            Framing::UntilClose
        };
        return Ok(Head {
            status: format!("{code} {reason}").trim_end().to_string(),
            headers: out,
            framing,
            keep_alive: !close,
        });
    }
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
        if conn.available().is_empty() {
            match conn.fill() {
                Ok(0) => return Attempt::Early(eof("upstream closed the connection")),
                Ok(_) => {}
                Err(e) => return Attempt::Early(e),
            }
        }
        match read_head(&mut conn, head_request) {
            Ok(h) => Attempt::Ok(conn, h),
            Err(e) => Attempt::Failed(e),
        }
    }

    fn connect(&self, req: &Request) -> Option<Conn> {
        match Conn::connect(self.addr, self.timeout) {
            Ok(c) => Some(c),
            Err(e) => {
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

fn bad_gateway() -> Response {
    Response::with_body(
        "502 Bad Gateway",
        "text/plain; charset=utf-8",
        b"Bad Gateway: the application server did not answer\n".to_vec(),
    )
}

impl App for UpstreamApp {
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
        let mut body = BodyStream {
            conn: Some(conn),
            framing: h.framing,
            keep_alive: h.keep_alive,
            chunk_left: 0,
            idle: self.idle.clone(),
        };
        let mut response = Response::new(h.status);
        response.headers = h.headers;
        response.body = match body.framing {
            Framing::None | Framing::Sized(0) => {
                body.finish();
                Body::Empty
            }
            _ => Body::Stream(Box::new(body)),
        };
        Ok(response)
    }
}

/// A response body read from upstream as the worker sends it on. At its
/// end a reusable connection goes back to the idle list; dropped early (a
/// cancel) the connection is closed.
struct BodyStream {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    /// Chunked: bytes left in the current chunk (0: a size line is next).
    chunk_left: u64,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl BodyStream {
    fn finish(&mut self) {
        if let Some(c) = self.conn.take() {
            if self.keep_alive && c.available().is_empty() {
                self.idle.lock().push(c);
            }
        }
    }

    fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        match self.framing {
            Framing::None => Ok(None),
            Framing::Sized(0) => Ok(None),
            Framing::Sized(left) => {
                let piece = conn.take(left.min(CHUNK as u64) as usize)?;
                if piece.is_empty() {
                    return Err(eof(
                        "upstream closed the connection before the end of the body",
                    ));
                }
                self.framing = Framing::Sized(left - piece.len() as u64);
                Ok(Some(piece))
            }
            Framing::UntilClose => {
                let piece = conn.take(CHUNK)?;
                if piece.is_empty() {
                    self.keep_alive = false;
                    return Ok(None);
                }
                Ok(Some(piece))
            }
            Framing::Chunked => {
                if self.chunk_left == 0 {
                    let line = conn.line(4096)?;
                    let text = String::from_utf8_lossy(&line);
                    let size_text = text.split(';').next().unwrap_or("").trim();
                    if size_text.is_empty()
                        || size_text.len() > 15
                        || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(invalid("bad chunk size from upstream"));
                    }
                    let size = u64::from_str_radix(size_text, 16)
                        .map_err(|_| invalid("bad chunk size from upstream"))?;
                    if size == 0 {
                        // Trailers, up to the empty line; not passed on.
                        while !conn.line(MAX_HEAD)?.is_empty() {}
                        self.framing = Framing::None;
                        return Ok(None);
                    }
                    self.chunk_left = size;
                }
                let piece = conn.take(self.chunk_left.min(CHUNK as u64) as usize)?;
                if piece.is_empty() {
                    return Err(eof("upstream closed the connection in a chunk"));
                }
                self.chunk_left -= piece.len() as u64;
                if self.chunk_left == 0 && !conn.line(2)?.is_empty() {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                Ok(Some(piece))
            }
        }
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
        conn: Some(conn),
        framing: h.framing,
        keep_alive: h.keep_alive,
        chunk_left: 0,
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
    use crate::proto::Environ;
    use crate::util::spill::BodyReader;

    #[test]
    fn header_names_and_hop_by_hop() {
        assert_eq!(header_name("X_FOO_BAR"), "X-Foo-Bar");
        let mut env = Environ::new();
        for (k, v) in [
            ("REQUEST_METHOD", "POST"),
            ("REQUEST_URI", "/a%20b?x=\u{e9}"),
            ("HTTP_HOST", "example.com"),
            ("HTTP_CONNECTION", "keep-alive, X-Secret"),
            ("HTTP_X_SECRET", "no"),
            ("HTTP_TE", "trailers"),
            ("HTTP_ACCEPT", "*/*"),
            ("CONTENT_TYPE", "text/plain"),
            ("REMOTE_ADDR", "10.0.0.1"),
            ("HTTP_X_FORWARDED_FOR", "1.2.3.4"),
        ] {
            env.insert(k.into(), v.into());
        }
        let req = Request::new(env, BodyReader::empty());
        let head = request_head(&req, 5);
        let text = String::from_utf8_lossy(&head).to_string();
        assert!(
            head.starts_with(b"POST /a%20b?x=\xe9 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("Host: example.com\r\n"));
        assert!(text.contains("Accept: */*\r\n"));
        assert!(text.contains("Content-Type: text/plain\r\n"));
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("X-Forwarded-For: 1.2.3.4, 10.0.0.1\r\n"));
        assert!(!text.contains("Secret"));
        assert!(!text.contains("Connection"));
        assert!(!text.to_ascii_lowercase().contains("te: trailers"));
        assert!(text.ends_with("\r\n\r\n"));
    }

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
                "bare LF",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
                "bare LF",
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

    /// HTTP/1.0 without Host went upstream as HTTP/1.1 without Host.
    #[test]
    fn a_request_without_host_gets_one() {
        let head = |pairs: &[(&str, &str)]| {
            let env: Environ = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            String::from_utf8(request_head(&Request::new(env, BodyReader::empty()), 0)).unwrap()
        };
        let h = head(&[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", "/x"),
            ("SERVER_PROTOCOL", "HTTP/1.0"),
            ("SERVER_NAME", "10.0.0.5"),
            ("SERVER_PORT", "8080"),
        ]);
        assert!(h.starts_with("GET /x HTTP/1.1\r\n"), "{h}");
        assert_eq!(h.matches("Host: ").count(), 1, "{h}");
        assert!(h.contains("Host: 10.0.0.5:8080\r\n"), "{h}");
        let h = head(&[
            ("REQUEST_METHOD", "GET"),
            ("SERVER_NAME", "a"),
            ("SERVER_PORT", "80"),
        ]);
        assert!(h.contains("Host: a\r\n"), "{h}");
        let h = head(&[("REQUEST_METHOD", "GET")]);
        assert!(h.contains("Host: localhost\r\n"), "{h}");
        let h = head(&[("REQUEST_METHOD", "GET"), ("HTTP_HOST", "example.com")]);
        assert_eq!(h.matches("Host: ").count(), 1, "{h}");
        assert!(h.contains("Host: example.com\r\n"), "{h}");
    }

    #[test]
    fn a_decoded_path_is_encoded_again_when_there_is_no_request_uri() {
        assert_eq!(
            encode_path("/a b/%?#\u{e9}\u{2603}"),
            "/a%20b/%25%3F%23%E9%E2%98%83"
        );
        let env: Environ = [
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/x HTTP/1.1\r\nHost: evil"),
            ("QUERY_STRING", "q=1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let head = request_head(&Request::new(env, BodyReader::empty()), 0);
        assert!(head.starts_with(b"GET /x%20HTTP/1.1%0D%0AHost:%20evil?q=1 HTTP/1.1\r\n"));
    }
}
