//! Writing responses to clients: the head the LB derives from a worker's
//! response head, its own short responses, and chunked framing.

use super::{reason, to_latin1, HOP_BY_HOP};
use crate::proto::ResponseHead;

/// How a response body is framed towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Sized(u64),
    Chunked,
    /// HTTP/1.0 without a length: the end of the body is the close.
    UntilClose,
}

/// What the client asked, as far as the response depends on it.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub minor: u8,
    pub head_only: bool,
    pub keep_alive: bool,
}

/// A planned response: head bytes, body framing, whether the connection
/// stays open afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub head: Vec<u8>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub status: u16,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Not allowed in a field value or reason phrase (RFC 9110 §5.5: VCHAR,
/// SP, HTAB, obs-text): controls but tab, and what ISO-8859-1 cannot carry.
fn is_bad_in_field(c: char) -> bool {
    (c.is_ascii_control() && c != '\t') || u32::from(c) > 0xff
}

/// Turn a worker's response head into the client's. An invalid head from
/// the worker (bad status, header injection) is an error: the LB answers
/// 502 instead.
pub fn plan(ask: Ask, head: &ResponseHead) -> Result<Planned, &'static str> {
    let status_text = head.status.trim();
    let code_str = status_text.get(..3).ok_or("bad status from worker")?;
    if !code_str.bytes().all(|b| b.is_ascii_digit())
        || (status_text.len() > 3 && status_text.as_bytes()[3] != b' ')
    {
        return Err("bad status from worker");
    }
    let code: u16 = code_str.parse().map_err(|_| "bad status from worker")?;
    if !(200..600).contains(&code) {
        // Interim responses are not relayed; the worker must send a final one.
        return Err("interim or invalid status from worker");
    }
    if status_text.chars().any(is_bad_in_field) {
        return Err("control character in worker status");
    }
    let mut length: Option<u64> = None;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(if ask.minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(&to_latin1(status_text));
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        if !is_token(name) {
            return Err("bad header name from worker");
        }
        if value.chars().any(is_bad_in_field) {
            return Err("control character in a worker header");
        }
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) {
            continue;
        }
        if lower == "content-length" {
            let n: u64 = value
                .trim()
                .parse()
                .map_err(|_| "bad Content-Length from worker")?;
            if length.is_some_and(|l| l != n) {
                return Err("differing Content-Length from worker");
            }
            if length.is_some() {
                continue;
            }
            length = Some(n);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&to_latin1(value.trim()));
        out.extend_from_slice(b"\r\n");
    }
    let no_body = ask.head_only || code == 204 || code == 304 || (100..200).contains(&code);
    let mut keep_alive = ask.keep_alive;
    let framing = if no_body {
        Framing::None
    } else if let Some(n) = length {
        Framing::Sized(n)
    } else if ask.minor >= 1 {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if ask.minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Planned {
        head: out,
        framing,
        keep_alive,
        status: code,
    })
}

/// A complete response of the LB's own (errors, 503, 502 page).
pub fn simple(ask: Ask, status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    let version = if ask.minor == 0 { "1.0" } else { "1.1" };
    out.extend_from_slice(
        format!(
            "HTTP/{version} {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if keep_alive {
                if ask.minor == 0 {
                    "Connection: keep-alive\r\n"
                } else {
                    ""
                }
            } else {
                "Connection: close\r\n"
            }
        )
        .as_bytes(),
    );
    if !ask.head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Append one chunk (nothing for empty data).
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How to pass on one piece of a worker's response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPiece {
    /// As it is (sized or close-delimited).
    Raw,
    /// As one chunk ([`chunk`]).
    Chunk,
    /// Not at all: the response has no body (HEAD, 204, 304).
    Drop,
}

/// The body went wrong for its framing: the client must be cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// More bytes than the Content-Length announced.
    TooLong,
    /// The end came before the Content-Length was reached.
    TooShort,
}

/// Follows a response body towards the client: how each piece is framed,
/// what the end adds, and whether the framing was kept. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyFramer {
    framing: Framing,
    /// Sized: bytes still to come.
    left: u64,
}

impl BodyFramer {
    pub fn new(framing: Framing) -> BodyFramer {
        let left = match framing {
            Framing::Sized(n) => n,
            _ => 0,
        };
        BodyFramer { framing, left }
    }

    /// `len` more body bytes from the worker.
    pub fn piece(&mut self, len: usize) -> Result<BodyPiece, BodyError> {
        match self.framing {
            Framing::None => Ok(BodyPiece::Drop),
            Framing::Sized(_) => {
                self.left = self
                    .left
                    .checked_sub(len as u64)
                    .ok_or(BodyError::TooLong)?;
                Ok(BodyPiece::Raw)
            }
            Framing::Chunked => Ok(BodyPiece::Chunk),
            Framing::UntilClose => Ok(BodyPiece::Raw),
        }
    }

    /// The worker ended the body: the bytes that close it for the client.
    pub fn end(&self) -> Result<&'static [u8], BodyError> {
        match self.framing {
            Framing::Chunked => Ok(LAST_CHUNK),
            Framing::Sized(_) if self.left > 0 => Err(BodyError::TooShort),
            _ => Ok(b""),
        }
    }

    /// The client has every byte it was promised (nothing left to send
    /// but, for chunked, the last chunk).
    pub fn is_whole(&self) -> bool {
        matches!(self.framing, Framing::None | Framing::Sized(_)) && self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status: status.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    const ASK11: Ask = Ask {
        minor: 1,
        head_only: false,
        keep_alive: true,
    };

    #[test]
    fn sized_chunked_and_close_delimited() {
        let p = plan(
            ASK11,
            &head("200 OK", &[("Content-Length", "5"), ("Connection", "x")]),
        )
        .unwrap();
        assert_eq!(p.framing, Framing::Sized(5));
        assert_eq!(p.head, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let p = plan(ASK11, &head("200 OK", &[("Transfer-Encoding", "chunked")])).unwrap();
        assert_eq!(p.framing, Framing::Chunked);
        assert_eq!(
            p.head,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let ask10 = Ask { minor: 0, ..ASK11 };
        let p = plan(ask10, &head("200 OK", &[])).unwrap();
        assert_eq!(p.framing, Framing::UntilClose);
        assert!(!p.keep_alive);
        assert_eq!(p.head, b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n");
        let head_only = Ask {
            head_only: true,
            ..ASK11
        };
        let p = plan(head_only, &head("200 OK", &[("Content-Length", "5")])).unwrap();
        assert_eq!(p.framing, Framing::None);
        let p = plan(ASK11, &head("304 Not Modified", &[])).unwrap();
        assert_eq!(p.framing, Framing::None);
    }

    #[test]
    fn bad_worker_heads() {
        for h in [
            head("OK", &[]),
            head("2000 OK", &[]),
            head("100 Continue", &[]),
            head("200 OK\r\nX: y", &[]),
            head("200 OK", &[("X-A", "a\r\nSet-Cookie: evil")]),
            // Found by the lb_response fuzz target: clients refuse these.
            head("201 OK", &[("X-A", "\u{19}")]),
            head("200 OK", &[("X-A", "a\u{7f}")]),
            head("200 OK", &[("X-A", "\u{100}")]),
            head("200 O\u{b}K", &[]),
            head("200 OK", &[("Bad Name", "a")]),
            head(
                "200 OK",
                &[("Content-Length", "5"), ("Content-Length", "6")],
            ),
            head("200 OK", &[("Content-Length", "five")]),
        ] {
            assert!(plan(ASK11, &h).is_err(), "{h:?}");
        }
    }

    #[test]
    fn body_framer_follows_each_framing() {
        let mut f = BodyFramer::new(Framing::Sized(5));
        assert!(!f.is_whole());
        assert_eq!(f.piece(3), Ok(BodyPiece::Raw));
        assert_eq!(f.end(), Err(BodyError::TooShort));
        assert_eq!(f.piece(2), Ok(BodyPiece::Raw));
        assert!(f.is_whole());
        assert_eq!(f.end(), Ok(&b""[..]));
        assert_eq!(f.piece(1), Err(BodyError::TooLong));
        let mut f = BodyFramer::new(Framing::Chunked);
        assert_eq!(f.piece(9), Ok(BodyPiece::Chunk));
        assert!(!f.is_whole());
        assert_eq!(f.end(), Ok(LAST_CHUNK));
        let mut f = BodyFramer::new(Framing::None);
        assert_eq!(f.piece(9), Ok(BodyPiece::Drop));
        assert!(f.is_whole());
        let mut f = BodyFramer::new(Framing::UntilClose);
        assert_eq!(f.piece(usize::MAX), Ok(BodyPiece::Raw));
        assert_eq!(f.end(), Ok(&b""[..]));
    }

    #[test]
    fn chunks() {
        let mut out = Vec::new();
        chunk(&mut out, b"hello");
        chunk(&mut out, b"");
        chunk(&mut out, &[b'x'; 26]);
        out.extend_from_slice(LAST_CHUNK);
        let mut want = b"5\r\nhello\r\n1a\r\n".to_vec();
        want.extend_from_slice(&[b'x'; 26]);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, want);
    }
}
