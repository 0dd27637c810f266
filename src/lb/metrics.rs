//! What is counted of requests as they end, on the I/O thread: the
//! Prometheus metrics (text format 0.0.4, served by `observe`) and, per
//! request class, the rates, latencies and worker shares of the status
//! document.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::pool::WorkerId;

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Latency samples kept per request class (the newest).
const SAMPLES: usize = 256;

/// Latency percentiles are of the samples no older than this.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);

/// Each second, a class's count of requests served by each worker is
/// multiplied by this: the shares are of the last ten seconds or so.
const SHARE_DECAY: f64 = 0.9;

/// Requests per second over the last few ticks of a counter.
#[derive(Debug, Default, Clone)]
pub struct Rate {
    last: u64,
    /// (count, seconds) of the last ticks, oldest overwritten first.
    ticks: [(u64, f64); 5],
    next: usize,
}

impl Rate {
    /// The counter is at `total`, `secs` after the last tick.
    pub fn tick(&mut self, total: u64, secs: f64) {
        self.ticks[self.next] = (total.saturating_sub(self.last), secs);
        self.next = (self.next + 1) % self.ticks.len();
        self.last = total;
    }

    pub fn per_second(&self) -> f64 {
        let (n, secs) = self
            .ticks
            .iter()
            .fold((0, 0.0), |(n, s), (dn, ds)| (n + dn, s + ds));
        if secs > 0.0 {
            n as f64 / secs
        } else {
            0.0
        }
    }
}

/// What is counted of one request class.
#[derive(Debug, Default)]
pub struct ClassStats {
    /// Requests answered, by status class (1xx … 5xx, other).
    by_status: [u64; 6],
    pub requests: u64,
    pub rate: Rate,
    /// (second of the LB's life, microseconds), a ring of the newest.
    latencies: Vec<(u32, u32)>,
    next: usize,
    /// Requests each worker answered, decayed each second.
    served_by: Vec<(WorkerId, f64)>,
}

impl ClassStats {
    /// The share of the class's recent requests that `w` answered (none
    /// when nothing was answered lately).
    pub fn share(&self, w: WorkerId) -> Option<f64> {
        let all: f64 = self.served_by.iter().map(|s| s.1).sum();
        (all > 0.0).then(|| {
            self.served_by
                .iter()
                .find(|s| s.0 == w)
                .map_or(0.0, |s| s.1 / all)
        })
    }
}

/// What the I/O thread counts.
#[derive(Debug)]
pub struct Metrics {
    max_classes: usize,
    /// By request class; past `max_classes` classes, the rest count as
    /// `other`.
    classes: HashMap<String, ClassStats>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
    errors: u64,
    pub rate: Rate,
    epoch: Instant,
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

fn status_class(status: u16) -> usize {
    match status {
        100..=599 => (status / 100 - 1) as usize,
        _ => 5,
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
            classes: HashMap::new(),
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0.0,
            errors: 0,
            rate: Rate::default(),
            epoch: Instant::now(),
        }
    }

    /// The class's counters (`other`'s when too many classes are named).
    fn class(&mut self, class: &str) -> &mut ClassStats {
        let label = if self.classes.contains_key(class) || self.classes.len() < self.max_classes {
            class
        } else {
            "other"
        };
        if !self.classes.contains_key(label) {
            self.classes
                .insert(label.to_string(), ClassStats::default());
        }
        self.classes.get_mut(label).expect("inserted above")
    }

    /// A request ended with `status` after `seconds`, at `now`.
    pub fn observe(&mut self, class: &str, status: u16, seconds: f64, now: Instant) {
        let at = now.saturating_duration_since(self.epoch).as_secs() as u32;
        let micros = (seconds * 1e6).min(u32::MAX as f64) as u32;
        let c = self.class(class);
        c.by_status[status_class(status)] += 1;
        c.requests += 1;
        if c.latencies.len() < SAMPLES {
            c.latencies.push((at, micros));
        } else {
            c.latencies[c.next] = (at, micros);
        }
        c.next = (c.next + 1) % SAMPLES;
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
        if status >= 500 {
            self.errors += 1;
        }
    }

    /// Worker `w` answered a request of `class`.
    pub fn served(&mut self, class: &str, w: WorkerId) {
        let c = self.class(class);
        match c.served_by.iter_mut().find(|s| s.0 == w) {
            Some(s) => s.1 += 1.0,
            None => c.served_by.push((w, 1.0)),
        }
    }

    /// Once a second or so: rates, and the decay of the shares.
    pub fn tick(&mut self, secs: f64) {
        for c in self.classes.values_mut() {
            c.rate.tick(c.requests, secs);
            for s in &mut c.served_by {
                s.1 *= SHARE_DECAY;
            }
            c.served_by.retain(|s| s.1 >= 0.01);
        }
        self.rate.tick(self.count, secs);
    }

    /// Requests answered, and those with a 5xx status.
    pub fn totals(&self) -> (u64, u64) {
        (self.count, self.errors)
    }

    /// The `n` busiest classes: by recent requests per second, then by
    /// requests.
    pub fn busiest(&self, n: usize) -> Vec<(&str, &ClassStats)> {
        let mut all: Vec<(&str, &ClassStats)> =
            self.classes.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.sort_by(|a, b| {
            b.1.rate
                .per_second()
                .total_cmp(&a.1.rate.per_second())
                .then(b.1.requests.cmp(&a.1.requests))
                .then(a.0.cmp(b.0))
        });
        all.truncate(n);
        all
    }

    /// The class's median and 99th percentile latency in seconds, of its
    /// samples from the last [`LATENCY_WINDOW`] (none without samples).
    pub fn percentiles(&self, c: &ClassStats, now: Instant) -> Option<(f64, f64)> {
        let at = now.saturating_duration_since(self.epoch).as_secs() as u32;
        let since = at.saturating_sub(LATENCY_WINDOW.as_secs() as u32);
        let mut v: Vec<u32> = c
            .latencies
            .iter()
            .filter(|s| s.0 >= since)
            .map(|s| s.1)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at =
            |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1e6;
        Some((at(0.5), at(0.99)))
    }

    /// The counters as text; `gauges` appends the I/O loop's other figures.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP resumelb_requests_total Requests answered, by request class and status class.\n");
        out.push_str("# TYPE resumelb_requests_total counter\n");
        let mut rows: Vec<(&str, &str, u64)> = Vec::new();
        for (class, c) in &self.classes {
            for (i, n) in c.by_status.iter().enumerate() {
                if *n > 0 {
                    rows.push((class, STATUS_CLASSES[i], *n));
                }
            }
        }
        rows.sort();
        for (class, status, n) in rows {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_classes_and_histogram() {
        let mut m = Metrics::new(2);
        let now = Instant::now();
        m.observe("a", 200, 0.003, now);
        m.observe("b", 503, 0.2, now);
        m.observe("c", 200, 20.0, now);
        m.observe("a", 404, 0.01, now);
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

    #[test]
    fn class_rates_percentiles_and_shares() {
        let mut m = Metrics::new(10);
        let t0 = Instant::now();
        for i in 1..=100 {
            m.observe("busy", 200, i as f64 / 1000.0, t0);
            m.served("busy", WorkerId(if i <= 75 { 1 } else { 2 }));
        }
        m.observe("quiet", 500, 0.5, t0);
        m.served("quiet", WorkerId(2));
        m.tick(1.0);
        for _ in 0..10 {
            m.observe("quiet", 200, 0.5, t0);
        }
        m.tick(1.0);
        // 100 + 0 busy requests in 2 s; 11 quiet.
        let top = m.busiest(1);
        assert_eq!(top[0].0, "busy");
        assert_eq!(top[0].1.rate.per_second(), 50.0);
        let (p50, p99) = m.percentiles(top[0].1, t0).expect("samples");
        assert_eq!((p50, p99), (0.05, 0.099));
        // Decay keeps the proportions.
        let busy = top[0].1;
        assert!((busy.share(WorkerId(1)).expect("served") - 0.75).abs() < 1e-9);
        assert_eq!(busy.share(WorkerId(3)), Some(0.0));
        assert_eq!(m.busiest(5).len(), 2);
        assert_eq!(m.totals(), (111, 1));
        // Samples older than the window do not count.
        let later = t0 + LATENCY_WINDOW + Duration::from_secs(2);
        assert_eq!(m.percentiles(busy, later), None);
        let never = ClassStats::default();
        assert_eq!(never.share(WorkerId(1)), None);
    }
}
