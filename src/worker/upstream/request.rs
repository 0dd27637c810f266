//! The request the upstream app sends: rebuilt from the environ, with the
//! raw target, the client's headers minus hop-by-hop ones, and
//! `X-Forwarded-For` / `X-Forwarded-Proto` added.

use super::super::app::Request;
use crate::http::{to_latin1, HOP_BY_HOP};

/// `HTTP_X_FOO_BAR` → `X-Foo-Bar`.
pub(super) fn header_name(env_key: &str) -> String {
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
    head.extend_from_slice(&to_latin1(&target));
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
        head.extend_from_slice(&to_latin1(value));
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
