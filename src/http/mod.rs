//! The LB's HTTP/1.1 front end, the pure parts: a strict request-head
//! parser on top of httparse, a chunked-body decoder, and response writing.
//! No sockets here; the LB's client connections drive these.

pub mod chunked;
pub mod client;
pub mod request;
pub mod response;

use std::fmt;

/// A request the LB refuses: the status to answer with, then close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub why: &'static str,
}

impl HttpError {
    pub const fn bad(why: &'static str) -> HttpError {
        HttpError { status: 400, why }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.why)
    }
}

impl std::error::Error for HttpError {}

/// Bytes to ISO-8859-1 text: each byte one character (WSGI's rule).
pub fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// ISO-8859-1 text back to bytes (characters above U+00FF become `?`).
pub fn to_latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// The first value of header `name` (any case) in a list of headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Hop-by-hop fields (RFC 9110 §7.6.1), never passed on by a proxy.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The reason phrase for the statuses the LB itself sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
