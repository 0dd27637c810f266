//! Reading HTTP/1.1 responses, as a client does: the upstream app reading
//! its HTTP server, the load generator and soak reading the LB, and the
//! tests. Strict in the same ways as the request side: conflicting
//! `Content-Length`s and bad chunk framing are errors, a chunked body is
//! decoded by [`ChunkedDecoder`], interim (1xx) responses are skipped.
//! Blocking: the caller's stream decides timeouts.

use std::io::{self, Read};

use super::chunked::ChunkedDecoder;
use super::latin1;
use super::response::Framing;

/// The largest response head read.
pub const MAX_HEAD: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;

/// A response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub code: u16,
    /// Code and reason phrase, as in a status line ("200 OK").
    pub status: String,
    pub minor: u8,
    /// Every header as sent, values as ISO-8859-1 text.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// The connection can carry another request after this response.
    pub keep_alive: bool,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::header(&self.headers, name)
    }
}

/// Where a response body is.
pub struct Body {
    framing: Framing,
    /// Sized: bytes still to come.
    left: u64,
    chunked: ChunkedDecoder,
    done: bool,
}

impl Body {
    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn eof(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, why.to_string())
}

/// Bytes read from a connection and not used yet, across responses.
#[derive(Debug, Default)]
pub struct ResponseReader {
    /// Read into at `end`; grown only when a read would not fit, so it is
    /// zeroed once, not for every read.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader::default()
    }

    /// Bytes read and not used yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Read more bytes onto the buffer; 0 at end of stream.
    pub fn fill(&mut self, src: &mut impl Read) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < CHUNK {
            self.buf.resize(self.end + CHUNK, 0);
        }
        loop {
            match src.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
            }
        }
    }

    /// The next final response head (interim ones skipped); `None` when
    /// the connection closed before any byte of one.
    pub fn head(&mut self, src: &mut impl Read, head_request: bool) -> io::Result<Option<Head>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut headers);
            let used = match resp
                .parse(self.buffered())
                .map_err(|e| invalid(format!("bad response: {e}")))?
            {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => {
                    if self.buffered().len() >= MAX_HEAD {
                        return Err(invalid("response head too large".into()));
                    }
                    let empty = self.buffered().is_empty();
                    if self.fill(src)? == 0 {
                        if empty {
                            return Ok(None);
                        }
                        return Err(eof("the connection closed in a response head"));
                    }
                    continue;
                }
            };
            let code = resp.code.unwrap_or(0);
            if !(100..600).contains(&code) {
                // "020" parses as 20.
                return Err(invalid(format!("bad status {code:03}")));
            }
            let minor = resp.version.unwrap_or(1);
            let status = format!("{code} {}", resp.reason.unwrap_or(""))
                .trim_end()
                .to_string();
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| (h.name.to_string(), latin1(h.value)))
                .collect();
            self.consume(used);
            if (100..200).contains(&code) && code != 101 {
                continue;
            }
            let (framing, keep_alive) = framing(code, minor, &headers, head_request)?;
            return Ok(Some(Head {
                code,
                status,
                minor,
                headers,
                framing,
                keep_alive,
            }));
        }
    }

    /// The body that follows a head with `framing`.
    pub fn body_for(&self, framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Sized(n) => n,
                _ => 0,
            },
            chunked: ChunkedDecoder::new(),
            done: matches!(framing, Framing::None | Framing::Sized(0)),
        }
    }

    /// The next piece of the body, at most `max` bytes (for a chunked body,
    /// what one read decodes); `None` at its end. An error means the body
    /// is cut off or malformed.
    pub fn piece(
        &mut self,
        src: &mut impl Read,
        body: &mut Body,
        max: usize,
    ) -> io::Result<Option<Vec<u8>>> {
        if body.done {
            return Ok(None);
        }
        match body.framing {
            Framing::None => Ok(None),
            Framing::Sized(_) => {
                if self.buffered().is_empty() && self.fill(src)? == 0 {
                    return Err(eof("the connection closed before the end of the body"));
                }
                let n = self.buffered().len().min(max).min(body.left as usize);
                let piece = self.buffered()[..n].to_vec();
                self.consume(n);
                body.left -= n as u64;
                body.done = body.left == 0;
                Ok(Some(piece))
            }
            Framing::UntilClose => {
                if self.buffered().is_empty() && self.fill(src)? == 0 {
                    body.done = true;
                    return Ok(None);
                }
                let n = self.buffered().len().min(max);
                let piece = self.buffered()[..n].to_vec();
                self.consume(n);
                Ok(Some(piece))
            }
            Framing::Chunked => loop {
                let mut piece = Vec::new();
                let used = body
                    .chunked
                    .feed(self.buffered(), &mut |d| piece.extend_from_slice(d))
                    .map_err(|e| invalid(format!("bad chunked body: {}", e.why)))?;
                self.consume(used);
                if body.chunked.is_done() {
                    body.done = true;
                }
                if !piece.is_empty() {
                    return Ok(Some(piece));
                }
                if body.done {
                    return Ok(None);
                }
                if self.fill(src)? == 0 {
                    return Err(eof("the connection closed in a chunked body"));
                }
            },
        }
    }

    /// The whole body, and whether it ended as its framing says (else it
    /// was cut off or malformed, and what came is returned).
    pub fn read_body(&mut self, src: &mut impl Read, head: &Head) -> (Vec<u8>, bool) {
        let mut body = self.body_for(head.framing);
        let mut out = Vec::new();
        loop {
            match self.piece(src, &mut body, usize::MAX) {
                Ok(Some(p)) => out.extend_from_slice(&p),
                Ok(None) => return (out, true),
                Err(_) => return (out, false),
            }
        }
    }
}

/// How a response's body is delimited, and whether the connection stays
/// open after it (RFC 9112 §6.3).
fn framing(
    code: u16,
    minor: u8,
    headers: &[(String, String)],
    head_request: bool,
) -> io::Result<(Framing, bool)> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = minor == 0;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| invalid("bad Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in value.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") && minor == 0 {
                    close = false;
                }
            }
        }
    }
    let framing = if head_request || code == 204 || code == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Sized(n)
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok((framing, !close))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &[u8], head_request: bool) -> (Head, Vec<u8>, bool) {
        let mut src = raw;
        let mut r = ResponseReader::new();
        let head = r.head(&mut src, head_request).unwrap().unwrap();
        let (body, complete) = r.read_body(&mut src, &head);
        (head, body, complete)
    }

    #[test]
    fn sized_chunked_and_close_delimited_bodies() {
        let (h, b, ok) = read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA",
            false,
        );
        assert_eq!(
            (h.code, h.status.as_str(), h.keep_alive),
            (200, "200 OK", true)
        );
        assert_eq!((b.as_slice(), ok), (&b"abc"[..], true));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\nT: 1\r\n\r\n";
        let (_, b, ok) = read(raw, false);
        assert_eq!((b.as_slice(), ok), (&b"abcde"[..], true));
        let (h, b, ok) = read(b"HTTP/1.0 200 OK\r\n\r\nuntil close", false);
        assert_eq!(
            (b.as_slice(), ok, h.keep_alive),
            (&b"until close"[..], true, false)
        );
    }

    #[test]
    fn cut_and_malformed_bodies_are_incomplete() {
        let (_, b, ok) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false);
        assert_eq!((b.as_slice(), ok), (&b"abc"[..], false));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+a\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ] {
            let (_, _, ok) = read(bad, false);
            assert!(!ok, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn interim_heads_are_skipped_and_head_responses_have_no_body() {
        let (h, b, ok) = read(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            true,
        );
        assert_eq!((h.code, b.len(), ok), (200, 0, true));
    }

    #[test]
    fn bad_heads_are_errors_and_an_early_close_is_none() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 020 Odd\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        ] {
            let mut src = bad;
            assert!(ResponseReader::new().head(&mut src, false).is_err());
        }
        let mut empty: &[u8] = b"";
        assert!(ResponseReader::new()
            .head(&mut empty, false)
            .unwrap()
            .is_none());
        let mut partial: &[u8] = b"HTTP/1.1 200";
        assert!(ResponseReader::new().head(&mut partial, false).is_err());
    }
}
