//! Request classifiers (docs/ALGORITHMS.md §5): `host`, and `re:NAME:REGEX` over
//! an environ value, parsed from the `-r` option text.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

/// Sorts a request into a request class.
#[derive(Debug, Clone)]
pub enum Classifier {
    /// The `Host` header, lower-cased, a leading `www.` removed.
    Host,
    /// The named group `class` of `regex` searched in environ value `name`.
    Regex { name: String, regex: Regex },
}

/// Why a classifier spec is unusable.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassifierError {
    Unknown(String),
    MissingName(String),
    BadRegex(String),
    NoClassGroup(String),
}

impl fmt::Display for ClassifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassifierError::Unknown(s) => write!(
                f,
                "unknown request classifier {s:?} (expected \"host\" or \"re:NAME:REGEX\")"
            ),
            ClassifierError::MissingName(s) => write!(
                f,
                "request classifier {s:?} needs an environ name and a regex: re:NAME:REGEX"
            ),
            ClassifierError::BadRegex(e) => write!(f, "bad request classifier regex: {e}"),
            ClassifierError::NoClassGroup(s) => write!(
                f,
                "request classifier regex {s:?} has no group named \"class\" (use (?P<class>...))"
            ),
        }
    }
}

impl std::error::Error for ClassifierError {}

/// The regex crate's message without its drawing of the pattern: the line
/// that says what is wrong (one line for the operator).
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Environ keys the LB sets besides `HTTP_*` headers (resumelb-protocol(7)).
const LB_KEYS: [&str; 14] = [
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "REQUEST_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "resumelb.request_class",
];

/// Headers the LB consumes and never passes on as `HTTP_*`.
const NEVER_HTTP: [&str; 4] = [
    "HTTP_CONTENT_LENGTH",
    "HTTP_CONTENT_TYPE",
    "HTTP_TRANSFER_ENCODING",
    "HTTP_EXPECT",
];

impl Classifier {
    /// Why this classifier could never see a value (every request would be
    /// in the empty class), if that is so: for a start-up warning.
    pub fn never_matches(&self) -> Option<String> {
        let Classifier::Regex { name, .. } = self else {
            return None;
        };
        let header_key = name.strip_prefix("HTTP_").is_some_and(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
        if NEVER_HTTP.contains(&name.as_str()) {
            Some(format!(
                "request classifier: {name} is never set (the LB consumes that header; \
                 use CONTENT_TYPE or CONTENT_LENGTH): every request will be in the empty class"
            ))
        } else if LB_KEYS.contains(&name.as_str()) || header_key {
            None
        } else {
            Some(format!(
                "request classifier: no request carries {name:?} (expected a CGI key such as \
                 PATH_INFO or HTTP_HOST, or an upper-case HTTP_* header): every request will \
                 be in the empty class"
            ))
        }
    }
}

impl FromStr for Classifier {
    type Err = ClassifierError;

    fn from_str(spec: &str) -> Result<Classifier, ClassifierError> {
        if spec == "host" {
            return Ok(Classifier::Host);
        }
        let Some(rest) = spec.strip_prefix("re:") else {
            return Err(ClassifierError::Unknown(spec.to_string()));
        };
        let Some((name, pattern)) = rest.split_once(':') else {
            return Err(ClassifierError::MissingName(spec.to_string()));
        };
        if name.is_empty() {
            return Err(ClassifierError::MissingName(spec.to_string()));
        }
        let regex = Regex::new(pattern).map_err(|e| ClassifierError::BadRegex(one_line(&e)))?;
        if !regex.capture_names().any(|n| n == Some("class")) {
            return Err(ClassifierError::NoClassGroup(pattern.to_string()));
        }
        Ok(Classifier::Regex {
            name: name.to_string(),
            regex,
        })
    }
}

impl Classifier {
    /// The environ names this classifier reads.
    pub fn reads(&self) -> &str {
        match self {
            Classifier::Host => "HTTP_HOST",
            Classifier::Regex { name, .. } => name,
        }
    }

    /// The request class, given a lookup of environ values.
    pub fn classify<'a>(&self, environ: impl Fn(&str) -> Option<&'a str>) -> String {
        match self {
            Classifier::Host => environ("HTTP_HOST").map(host_class).unwrap_or_default(),
            Classifier::Regex { name, regex } => environ(name)
                .and_then(|v| regex.captures(v))
                .and_then(|c| c.name("class"))
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
        }
    }
}

/// `Host` header → class: lower-cased, port kept, leading `www.` removed.
pub fn host_class(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    match host.strip_prefix("www.") {
        Some(rest) => rest.to_string(),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(c: &Classifier, e: &HashMap<String, String>) -> String {
        c.classify(|n| e.get(n).map(String::as_str))
    }

    #[test]
    fn host_strips_www_lowercases_keeps_port() {
        let c: Classifier = "host".parse().unwrap();
        assert_eq!(
            run(&c, &env(&[("HTTP_HOST", "www.Example.COM:8080")])),
            "example.com:8080"
        );
        assert_eq!(
            run(&c, &env(&[("HTTP_HOST", "wwwx.example.com")])),
            "wwwx.example.com"
        );
        assert_eq!(
            run(&c, &env(&[("HTTP_HOST", "a.www.example.com")])),
            "a.www.example.com"
        );
        assert_eq!(run(&c, &env(&[])), "");
    }

    #[test]
    fn first_path_segment() {
        let c: Classifier = "re:PATH_INFO:/(?P<class>[^/]+)".parse().unwrap();
        assert_eq!(run(&c, &env(&[("PATH_INFO", "/shop/cart/1")])), "shop");
        assert_eq!(run(&c, &env(&[("PATH_INFO", "/")])), "");
        assert_eq!(run(&c, &env(&[])), "");
        assert_eq!(c.reads(), "PATH_INFO");
    }

    #[test]
    fn regex_searches_and_may_contain_colons() {
        let c: Classifier = "re:QUERY_STRING:site=(?<class>[a-z:]+)".parse().unwrap();
        assert_eq!(
            run(&c, &env(&[("QUERY_STRING", "x=1&site=ab:cd&y")])),
            "ab:cd"
        );
        assert_eq!(run(&c, &env(&[("QUERY_STRING", "nothing")])), "");
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let e = |s: &str| s.parse::<Classifier>().unwrap_err();
        assert!(matches!(e("path"), ClassifierError::Unknown(_)));
        assert!(matches!(e("re:PATH_INFO"), ClassifierError::MissingName(_)));
        assert!(matches!(
            e("re::(?P<class>x)"),
            ClassifierError::MissingName(_)
        ));
        assert!(matches!(
            e("re:PATH_INFO:(unclosed"),
            ClassifierError::BadRegex(_)
        ));
        let nc = e("re:PATH_INFO:/([^/]+)");
        assert!(matches!(nc, ClassifierError::NoClassGroup(_)));
        assert!(nc.to_string().contains("class"));
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    fn c(spec: &str) -> Classifier {
        spec.parse().unwrap()
    }

    #[test]
    fn names_no_request_carries_are_warned_about() {
        assert!(c("host").never_matches().is_none());
        for ok in [
            "PATH_INFO",
            "HTTP_HOST",
            "HTTP_X_SITE",
            "REMOTE_ADDR",
            "wsgi.url_scheme",
        ] {
            assert!(
                c(&format!("re:{ok}:(?P<class>.*)"))
                    .never_matches()
                    .is_none(),
                "{ok}"
            );
        }
        for bad in [
            "PATHINFO",
            "HTTP_host",
            "path_info",
            "HTTP_",
            "HTTP_CONTENT_TYPE",
        ] {
            let w = c(&format!("re:{bad}:(?P<class>.*)")).never_matches();
            assert!(w.is_some_and(|w| w.contains(bad)), "{bad}");
        }
    }

    #[test]
    fn a_bad_regex_is_one_line() {
        let e = "re:PATH_INFO:(?P<class>[a"
            .parse::<Classifier>()
            .unwrap_err();
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("unclosed character class"), "{text}");
    }
}
