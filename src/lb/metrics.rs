//! Prometheus metrics (text format 0.0.4): counted on the I/O thread as
//! requests end, rendered there on request, and served over HTTP by a small
//! thread of their own, so that scrapes never block request handling.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the I/O thread counts.
#[derive(Debug)]
pub struct Metrics {
    max_classes: usize,
    classes: HashSet<String>,
    /// (class label, status class) → requests.
    requests: HashMap<(String, &'static str), u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// Escape a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    pub fn new(max_classes: usize) -> Metrics {
        Metrics {
            max_classes,
            classes: HashSet::new(),
            requests: HashMap::new(),
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// A request ended with `status` after `seconds`.
    pub fn observe(&mut self, class: &str, status: u16, seconds: f64) {
        let label = if self.classes.contains(class) {
            class.to_string()
        } else if self.classes.len() < self.max_classes {
            self.classes.insert(class.to_string());
            class.to_string()
        } else {
            "other".to_string()
        };
        *self
            .requests
            .entry((label, status_class(status)))
            .or_default() += 1;
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The counters as text; `gauges` appends the I/O loop's other figures.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP resumelb_requests_total Requests answered, by request class and status class.\n");
        out.push_str("# TYPE resumelb_requests_total counter\n");
        let mut rows: Vec<_> = self.requests.iter().collect();
        rows.sort();
        for ((class, status), n) in rows {
            let _ = writeln!(
                out,
                "resumelb_requests_total{{class=\"{}\",status=\"{status}\"}} {n}",
                escape(class)
            );
        }
        out.push_str("# HELP resumelb_request_duration_seconds Time from the request head to the end of the response.\n");
        out.push_str("# TYPE resumelb_request_duration_seconds histogram\n");
        for (b, n) in BUCKETS.iter().zip(self.buckets.iter()) {
            let _ = writeln!(
                out,
                "resumelb_request_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "resumelb_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "resumelb_request_duration_seconds_sum {}", self.sum);
        let _ = writeln!(
            out,
            "resumelb_request_duration_seconds_count {}",
            self.count
        );
    }
}

/// Append one metric family with its HELP and TYPE lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// A request from the metrics thread for the current text.
pub type Scrape = Sender<String>;

/// Serve `GET /metrics` on `addr`; each scrape asks the I/O loop for the
/// text through `ask` (which must wake it).
pub fn serve(
    addr: SocketAddr,
    ask: impl Fn(Scrape) + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf);
                let mut words = line.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let reply = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
                    let (tx, rx) = bounded(1);
                    ask(tx);
                    match rx.recv_timeout(Duration::from_secs(5)) {
                        Ok(text) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                            text.len()
                        ),
                        Err(_) => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                    }
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                };
                let _ = s.write_all(reply.as_bytes());
            }
        })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_classes_and_histogram() {
        let mut m = Metrics::new(2);
        m.observe("a", 200, 0.003);
        m.observe("b", 503, 0.2);
        m.observe("c", 200, 20.0);
        m.observe("a", 404, 0.01);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("resumelb_requests_total{class=\"a\",status=\"2xx\"} 1\n"));
        assert!(out.contains("resumelb_requests_total{class=\"a\",status=\"4xx\"} 1\n"));
        assert!(out.contains("resumelb_requests_total{class=\"other\",status=\"2xx\"} 1\n"));
        assert!(out.contains("resumelb_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(out.contains("resumelb_request_duration_seconds_bucket{le=\"0.25\"} 3\n"));
        assert!(out.contains("resumelb_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(out.contains("resumelb_request_duration_seconds_count 4\n"));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
