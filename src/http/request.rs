//! Strict request-head parsing (RFC 9112, at least as strict as nginx):
//! httparse does the grammar; this adds the rules that keep requests
//! unambiguous, and turns the head into what the LB needs.

use super::{latin1, HttpError};

/// Limits on a request head.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line (→ 414).
    pub max_request_line: usize,
    /// Largest head (→ 431).
    pub max_head: usize,
    /// Most header fields (→ 431).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line: 8 * 1024,
            max_head: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Sized(u64),
    Chunked,
}

/// A parsed, checked request head.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead {
    pub method: String,
    /// The raw request target, as ISO-8859-1 text.
    pub target: String,
    /// Percent-decoded path, as ISO-8859-1 text.
    pub path: String,
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header fields in order: name as sent, value as ISO-8859-1 text.
    pub headers: Vec<(String, String)>,
    pub body: BodyFraming,
    /// The connection may stay open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header(&self.headers, name)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode (a malformed `%` sequence stays as it is, as WSGI
/// servers do).
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Split a request target into (path, query); absolute-form targets lose
/// their scheme and authority.
fn split_target(target: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let mut t = target;
    if t == b"*" {
        return Ok((b"*", b""));
    }
    for scheme in [&b"http://"[..], &b"https://"[..]] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            t = match rest.iter().position(|&b| b == b'/' || b == b'?') {
                Some(i) => &rest[i..],
                None => b"/",
            };
            break;
        }
    }
    if t.first() != Some(&b'/') && t.first() != Some(&b'?') {
        return Err(HttpError::bad("bad request target"));
    }
    Ok(match t.iter().position(|&b| b == b'?') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, b""),
    })
}

/// Parse the request head at the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the head and its length.
/// `METHOD SP target SP HTTP/d.d` (RFC 9112 §3), whatever the version.
fn well_formed_request_line(data: &[u8]) -> bool {
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let line = data[..end].strip_suffix(b"\r").unwrap_or(&data[..end]);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return false;
    };
    let token = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let version_ok = matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit());
    token(method)
        && !target.is_empty()
        && !target.iter().any(|b| b.is_ascii_control())
        && version_ok
}

pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Leading empty lines before a request are allowed (RFC 9112 §2.2).
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let data = &buf[skip..];
    match data.iter().position(|&b| b == b'\n') {
        None if data.len() > limits.max_request_line => {
            return Err(HttpError {
                status: 414,
                why: "request line too long",
            })
        }
        Some(i) if i > limits.max_request_line => {
            return Err(HttpError {
                status: 414,
                why: "request line too long",
            })
        }
        _ => {}
    }
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(data) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError {
                status: 431,
                why: "too many header fields",
            })
        }
        // httparse says "version" for anything at that place: only a
        // well-formed request line with another version is a 505.
        Err(httparse::Error::Version) if well_formed_request_line(data) => {
            return Err(HttpError {
                status: 505,
                why: "HTTP version not supported",
            })
        }
        Err(_) => return Err(HttpError::bad("malformed request head")),
    };
    let used = match status {
        httparse::Status::Partial => {
            if data.len() > limits.max_head {
                return Err(HttpError {
                    status: 431,
                    why: "request head too large",
                });
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    if used > limits.max_head {
        return Err(HttpError {
            status: 431,
            why: "request head too large",
        });
    }
    // httparse takes a bare LF as a line end; a bare CR anywhere in the
    // head is refused.
    let head_bytes = &data[..used];
    if head_bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && head_bytes.get(i + 1) != Some(&b'\n'))
    {
        return Err(HttpError::bad("bare CR in request head"));
    }
    let method = req.method.unwrap_or("").to_string();
    let minor = req.version.unwrap_or(1);
    let target_raw = req.path.unwrap_or("").as_bytes();
    let (path, query) = split_target(target_raw)?;
    if path == b"*" && method != "OPTIONS" {
        return Err(HttpError::bad("bad request target"));
    }

    let mut hs = Vec::with_capacity(req.headers.len());
    let mut host_count = 0;
    let mut content_length: Option<u64> = None;
    let mut te: Vec<String> = Vec::new();
    let mut te_seen = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        if h.value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(HttpError::bad("control character in a header value"));
        }
        let value = latin1(h.value);
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            host_count += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = value.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::bad("malformed Content-Length"));
            }
            let n: u64 = v
                .parse()
                .map_err(|_| HttpError::bad("Content-Length too large"))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HttpError::bad("differing Content-Length fields"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_seen = true;
            te.extend(
                value
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty()),
            );
        } else if name.eq_ignore_ascii_case("connection") {
            for t in value.split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("close") {
                    conn_close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect")
            && value.trim().eq_ignore_ascii_case("100-continue")
        {
            expect_continue = true;
        }
        hs.push((name.to_string(), value));
    }
    if minor == 1 && host_count == 0 {
        return Err(HttpError::bad("missing Host header"));
    }
    if host_count > 1 {
        return Err(HttpError::bad("more than one Host header"));
    }
    let body = if te_seen {
        if content_length.is_some() {
            return Err(HttpError::bad("both Content-Length and Transfer-Encoding"));
        }
        if minor == 0 {
            return Err(HttpError::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if te.len() == 1 && te[0] == "chunked" {
            BodyFraming::Chunked
        } else if te.last().is_some_and(|t| t == "chunked") || te.is_empty() {
            return Err(HttpError {
                status: 501,
                why: "unsupported transfer coding",
            });
        } else {
            // The final coding is not chunked: the length is unknowable.
            return Err(HttpError {
                status: if te.iter().any(|t| t == "chunked") {
                    400
                } else {
                    501
                },
                why: "unsupported transfer coding",
            });
        }
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Sized(n),
        }
    };
    let keep_alive = if minor == 0 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    Ok(Some((
        RequestHead {
            method,
            target: latin1(target_raw),
            path: latin1(&percent_decode(path)),
            query: latin1(query),
            minor,
            headers: hs,
            body,
            keep_alive,
            expect_continue: expect_continue && minor == 1,
        },
        skip + used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_head(s.as_bytes(), &Limits::default())
    }

    fn status(s: &str) -> u16 {
        match parse(s) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(e) => e.status,
        }
    }

    #[test]
    fn simple_get() {
        let input = "GET /a%20b/c?x=1&y HTTP/1.1\r\nHost: Example.com\r\nX-A: 1\r\n\r\nrest";
        let (h, used) = parse(input).unwrap().unwrap();
        assert_eq!(&input[used..], "rest");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a%20b/c?x=1&y");
        assert_eq!(h.path, "/a b/c");
        assert_eq!(h.query, "x=1&y");
        assert_eq!(h.header("host"), Some("Example.com"));
        assert_eq!(h.body, BodyFraming::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn partial_then_complete() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n"), 0);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
    }

    #[test]
    fn framing_and_connection() {
        let (h, _) =
            parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.body, BodyFraming::Sized(5));
        let (h, _) = parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(h.expect_continue);
        let (h, _) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) = parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn refusals() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-Space : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX(y): a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 400),
            ("GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("GET nohost HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            // Malformed request lines are 400, not 505.
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / FOO\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /\r\nHost: a\r\n\r\n", 400),
        ];
        for (req, want) in cases {
            assert_eq!(status(req), want, "{req:?}");
        }
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
    }

    #[test]
    fn size_limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_line), 414);
        let unfinished_line = format!("GET /{}", "a".repeat(9000));
        assert_eq!(status(&unfinished_line), 414);
        let big_head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n",
            "b".repeat(70_000)
        );
        assert_eq!(status(&big_head), 431);
        let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
    }

    #[test]
    fn absolute_form_and_percent_decoding() {
        let (h, _) = parse("GET http://example.com/x%2fy?q HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.path, "/x/y");
        assert_eq!(h.query, "q");
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(percent_decode(b"%e9"), vec![0xe9]);
    }
}
