//! Building a request's environ (resumelb-protocol(7), "Requests") from its parsed head.

use std::net::SocketAddr;

use crate::http::request::RequestHead;
use crate::proto::Environ;

/// Headers the LB consumes itself and does not pass on as `HTTP_*`: the
/// body is de-chunked and its length is `CONTENT_LENGTH`; `Expect` was
/// answered by the LB.
const CONSUMED: [&str; 4] = [
    "content-length",
    "content-type",
    "transfer-encoding",
    "expect",
];

/// The environ for `head` from `peer`, received on `local`. The body's
/// `CONTENT_LENGTH` is added once the (de-chunked) body is complete.
pub fn build(head: &RequestHead, peer: SocketAddr, local: SocketAddr) -> Environ {
    let mut env = Environ::new();
    let mut put = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    put("REQUEST_METHOD", head.method.clone());
    put("SCRIPT_NAME", String::new());
    put("PATH_INFO", head.path.clone());
    put("QUERY_STRING", head.query.clone());
    put("REQUEST_URI", head.target.clone());
    put("SERVER_PROTOCOL", format!("HTTP/1.{}", head.minor));
    let (server_name, server_port) = match head.header("host") {
        Some(h) if !h.is_empty() => match h.rsplit_once(':') {
            Some((name, port))
                if !name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (name.to_string(), port.to_string())
            }
            _ => (h.to_string(), local.port().to_string()),
        },
        _ => (local.ip().to_string(), local.port().to_string()),
    };
    put("SERVER_NAME", server_name);
    put("SERVER_PORT", server_port);
    put("REMOTE_ADDR", peer.ip().to_string());
    put("REMOTE_PORT", peer.port().to_string());
    put("wsgi.url_scheme", "http".to_string());
    if let Some(ct) = head.header("content-type") {
        put("CONTENT_TYPE", ct.to_string());
    }
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        // A name with '_' would collide with its '-' spelling once in the
        // environ (header smuggling); like nginx, such fields are dropped.
        if CONSUMED.contains(&lower.as_str()) || name.contains('_') {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        match env.get_mut(&key) {
            Some(v) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => {
                env.insert(key, value.clone());
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_head, Limits};

    #[test]
    fn environ_from_a_head() {
        let raw = "POST /a%2Fb?x=%41 HTTP/1.1\r\nHost: www.Example.com:8080\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nX-Multi: 1\r\nX-Multi: 2\r\nX_Sneaky: 1\r\nCookie: a=\u{e9}\r\n\r\n";
        let raw: Vec<u8> = raw.chars().map(|c| c as u32 as u8).collect();
        let (head, _) = parse_head(&raw, &Limits::default()).unwrap().unwrap();
        let env = build(
            &head,
            "10.0.0.9:4444".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let g = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(g("REQUEST_METHOD"), Some("POST"));
        assert_eq!(g("PATH_INFO"), Some("/a/b"));
        assert_eq!(g("QUERY_STRING"), Some("x=%41"));
        assert_eq!(g("REQUEST_URI"), Some("/a%2Fb?x=%41"));
        assert_eq!(g("SERVER_NAME"), Some("www.Example.com"));
        assert_eq!(g("SERVER_PORT"), Some("8080"));
        assert_eq!(g("REMOTE_ADDR"), Some("10.0.0.9"));
        assert_eq!(g("REMOTE_PORT"), Some("4444"));
        assert_eq!(g("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(g("CONTENT_LENGTH"), None, "added when the body is complete");
        assert_eq!(g("HTTP_X_MULTI"), Some("1, 2"));
        assert_eq!(g("HTTP_COOKIE"), Some("a=\u{e9}"));
        assert_eq!(g("HTTP_TRANSFER_ENCODING"), None);
        assert_eq!(g("HTTP_X_SNEAKY"), None);
        assert_eq!(g("HTTP_HOST"), Some("www.Example.com:8080"));
    }
}
