//! What the worker accepts from the wire as a request environ. Whoever can
//! open a TCP connection to a worker can send one, so nothing in it is
//! trusted: an environ that could put a line break into an upstream request
//! head, name a header that is not an HTTP token, or say two things for one
//! key is refused before any application sees it (the worker answers 400
//! for that request; the connection and its other requests carry on).
//!
//! Pure: no sockets, no clock. The rules are listed in resumelb-worker(1),
//! SECURITY.

use std::collections::btree_map::Entry;
use std::fmt;

use crate::proto::{Environ, EnvironPairs};

/// Why an environ was refused. Names the key, never echoes the value (it
/// may hold control characters meant for somebody else's log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The same key twice in one environ.
    RepeatedKey(String),
    /// A key with a control character.
    BadKey(String),
    /// `HTTP_*` key whose header name would not be an HTTP token.
    BadHeaderName(String),
    /// A value with a character its key does not allow.
    BadValue { key: String, what: &'static str },
    /// `REQUEST_METHOD` missing, empty or not a token.
    BadMethod,
    /// `CONTENT_LENGTH` not made of digits.
    BadContentLength,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::RepeatedKey(k) => write!(f, "key {k:?} given twice"),
            Refusal::BadKey(k) => write!(f, "key {k:?} has a control character"),
            Refusal::BadHeaderName(k) => {
                write!(f, "key {k:?} does not name an HTTP header (not a token)")
            }
            Refusal::BadValue { key, what } => write!(f, "value of {key:?} has {what}"),
            Refusal::BadMethod => f.write_str("REQUEST_METHOD is missing or not a token"),
            Refusal::BadContentLength => f.write_str("CONTENT_LENGTH is not a decimal number"),
        }
    }
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// Line breaks and NUL: never allowed anywhere.
fn breaks_lines(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\0')
}

/// The character classes a value may be refused for, per key.
#[derive(Clone, Copy)]
enum Rule {
    /// No CR, LF or NUL (anything else: the key is not sent on as HTTP).
    NoLineBreaks,
    /// A header field value: ISO-8859-1, no control character but HTAB.
    FieldValue,
    /// A raw request target or query: ISO-8859-1, no space, no control.
    Target,
    /// A percent-decoded path: ISO-8859-1, no CR, LF or NUL (a decoded
    /// space or other control is legitimate; the upstream app encodes it).
    Path,
}

fn rule_for(key: &str) -> Rule {
    match key {
        "REQUEST_URI" | "QUERY_STRING" => Rule::Target,
        "PATH_INFO" => Rule::Path,
        // These end up in the upstream request's header fields.
        "CONTENT_TYPE" | "REMOTE_ADDR" | "SERVER_NAME" | "SERVER_PORT" | "wsgi.url_scheme" => {
            Rule::FieldValue
        }
        k if k.starts_with("HTTP_") => Rule::FieldValue,
        _ => Rule::NoLineBreaks,
    }
}

/// What `value` breaks under `rule`, if anything.
fn check_value(rule: Rule, value: &str) -> Option<&'static str> {
    for c in value.chars() {
        if breaks_lines(c) {
            return Some("a line break or NUL");
        }
        let latin1 = u32::from(c) <= 0xff;
        let control = c.is_ascii_control();
        let bad = match rule {
            Rule::NoLineBreaks => None,
            Rule::Path => (!latin1).then_some("a character outside ISO-8859-1"),
            Rule::FieldValue => {
                if !latin1 {
                    Some("a character outside ISO-8859-1")
                } else if control && c != '\t' {
                    Some("a control character")
                } else {
                    None
                }
            }
            Rule::Target => {
                if !latin1 {
                    Some("a character outside ISO-8859-1")
                } else if control || c == ' ' {
                    Some("a space or control character")
                } else {
                    None
                }
            }
        };
        if bad.is_some() {
            return bad;
        }
    }
    None
}

/// Check every entry and build the environ the application sees.
pub fn environ(pairs: EnvironPairs) -> Result<Environ, Refusal> {
    let mut env = Environ::new();
    for (key, value) in pairs {
        if key.chars().any(|c| c.is_control()) {
            return Err(Refusal::BadKey(key));
        }
        if let Some(name) = key.strip_prefix("HTTP_") {
            if !is_token(name) {
                return Err(Refusal::BadHeaderName(key));
            }
        }
        if let Some(what) = check_value(rule_for(&key), &value) {
            return Err(Refusal::BadValue { key, what });
        }
        match env.entry(key) {
            Entry::Occupied(e) => return Err(Refusal::RepeatedKey(e.key().clone())),
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
    }
    if !env.get("REQUEST_METHOD").is_some_and(|m| is_token(m)) {
        return Err(Refusal::BadMethod);
    }
    // Empty means "no body" (PEP 3333 allows it); otherwise digits only,
    // small enough to be a length.
    if let Some(n) = env.get("CONTENT_LENGTH") {
        let digits = n.bytes().all(|b| b.is_ascii_digit());
        if !digits || (!n.is_empty() && n.parse::<u64>().is_err()) {
            return Err(Refusal::BadContentLength);
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EnvironPairs {
        [
            ("REQUEST_METHOD", "GET"),
            ("SCRIPT_NAME", ""),
            ("PATH_INFO", "/a b/\u{e9}"),
            ("QUERY_STRING", "x=1"),
            ("REQUEST_URI", "/a%20b/%C3%A9?x=1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("SERVER_NAME", "example.com"),
            ("SERVER_PORT", "80"),
            ("REMOTE_ADDR", "10.0.0.1"),
            ("REMOTE_PORT", "4444"),
            ("wsgi.url_scheme", "http"),
            ("HTTP_HOST", "example.com"),
            ("HTTP_X_TAB", "a\tb \u{ff}"),
            ("resumelb.request_class", "example.com"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with(key: &str, value: &str) -> EnvironPairs {
        let mut env: EnvironPairs = base().into_iter().filter(|(k, _)| k != key).collect();
        env.push((key.to_string(), value.to_string()));
        env
    }

    #[test]
    fn what_the_lb_sends_is_accepted() {
        let env = environ(base()).unwrap();
        assert_eq!(env.len(), base().len());
        assert_eq!(env["PATH_INFO"], "/a b/\u{e9}");
        assert!(environ(with("CONTENT_LENGTH", "")).is_ok());
        assert!(environ(with("CONTENT_LENGTH", "12345")).is_ok());
        assert!(environ(with("PATH_INFO", "/%01\u{7f}")).is_ok());
        assert!(environ(with("HTTP_X_CUSTOM_", "ok")).is_ok());
        // Keys that are not sent on as HTTP may hold other text.
        assert!(environ(with("app.note", "\u{2603}\u{1}")).is_ok());
    }

    /// The crash the fuzzer found: a key whose header name held a line break.
    #[test]
    fn fuzz_crash_header_name_with_a_line_break() {
        let env = with("HTTP_S\n(METHOD", "x");
        assert_eq!(environ(env), Err(Refusal::BadKey("HTTP_S\n(METHOD".into())));
    }

    #[test]
    fn malicious_environs_are_refused() {
        let cases: Vec<(EnvironPairs, &str)> = vec![
            (
                with("HTTP_X\r\nGET /smuggled HTTP/1.1\r\nX", "y"),
                "control character",
            ),
            (with("HTTP_X:Y", "1"), "not a token"),
            (with("HTTP_X Y", "1"), "not a token"),
            (with("HTTP_", "1"), "not a token"),
            (with("HTTP_\u{e9}", "1"), "not a token"),
            (with("HTTP_X", "a\r\nX-Evil: 1"), "line break"),
            (with("HTTP_X", "a\nb"), "line break"),
            (with("HTTP_X", "a\0b"), "line break"),
            (with("HTTP_X", "a\u{b}b"), "control character"),
            (with("HTTP_X", "\u{100}"), "outside ISO-8859-1"),
            (with("CONTENT_TYPE", "text/plain\r\nX: 1"), "line break"),
            (with("REMOTE_ADDR", "1.2.3.4\u{7f}"), "control character"),
            (with("REQUEST_METHOD", "GET /x HTTP/1.1\r\n"), "line break"),
            (with("REQUEST_METHOD", "GE T"), "REQUEST_METHOD"),
            (with("REQUEST_METHOD", ""), "REQUEST_METHOD"),
            (with("REQUEST_URI", "/a b"), "space"),
            (with("REQUEST_URI", "/a\tb"), "space or control"),
            (with("QUERY_STRING", "a=1 HTTP/1.1"), "space"),
            (with("PATH_INFO", "/a\r\nb"), "line break"),
            (with("PATH_INFO", "/\u{2603}"), "outside ISO-8859-1"),
            (with("CONTENT_LENGTH", "12a"), "CONTENT_LENGTH"),
            (with("CONTENT_LENGTH", "-1"), "CONTENT_LENGTH"),
            (with("CONTENT_LENGTH", " 1"), "CONTENT_LENGTH"),
            (
                with("CONTENT_LENGTH", "99999999999999999999999"),
                "CONTENT_LENGTH",
            ),
            (with("resumelb.request_class", "a\nb"), "line break"),
            (with("SERVER_NAME", "a\0"), "line break"),
            (with("SERVER_NAME", "a\u{b}b"), "control character"),
            (with("a\rb", "1"), "control character"),
        ];
        for (env, expect) in cases {
            let shown = format!("{env:?}");
            match environ(env) {
                Err(r) => assert!(r.to_string().contains(expect), "{shown}: {r}"),
                Ok(_) => panic!("accepted: {shown}"),
            }
        }
        let mut missing = base();
        missing.retain(|(k, _)| k != "REQUEST_METHOD");
        assert_eq!(environ(missing), Err(Refusal::BadMethod));
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        let mut env = base();
        env.push(("HTTP_HOST".into(), "other.example".into()));
        assert_eq!(environ(env), Err(Refusal::RepeatedKey("HTTP_HOST".into())));
    }

    #[test]
    fn refusals_never_echo_the_value() {
        let r = environ(with("HTTP_X", "secret\r\n")).unwrap_err();
        assert!(!r.to_string().contains("secret"));
    }
}
