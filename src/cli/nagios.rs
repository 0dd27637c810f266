//! `rlb-nagios SOCKET`: a Nagios plugin over an LB's status socket. One line
//! of output with performance data; exit 0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use getopts::{Matches, Options};
use serde_json::Value;

use super::get_lb_status::fetch;

pub const NAME: &str = "rlb-nagios";

pub fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "b",
        "mean-backlog-warning",
        "warn when the mean worker backlog is above this",
        "N",
    );
    o.optopt(
        "B",
        "mean-backlog-critical",
        "critical when the mean worker backlog is above this",
        "N",
    );
    o.optopt(
        "x",
        "max-backlog-warning",
        "warn when a worker's backlog is above this",
        "N",
    );
    o.optopt(
        "X",
        "max-backlog-critical",
        "critical when a worker's backlog is above this",
        "N",
    );
    o.optopt(
        "a",
        "age-warning",
        "warn when the oldest request in flight is older than this many seconds",
        "SECONDS",
    );
    o.optopt(
        "A",
        "age-critical",
        "critical when the oldest request in flight is older than this many seconds",
        "SECONDS",
    );
    o.optopt(
        "w",
        "workers-warning",
        "warn when there are fewer workers than this",
        "N",
    );
    o.optopt(
        "W",
        "workers-critical",
        "critical when there are fewer workers than this",
        "N",
    );
    o.optflag("m", "metrics", "report the figures even without thresholds");
    o.optopt(
        "t",
        "timeout",
        "seconds to wait for the LB (default 5)",
        "SECONDS",
    );
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o
}

/// Nagios states, in order of gravity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// The figures the plugin checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub workers: usize,
    pub mean_backlog: f64,
    pub max_backlog: i64,
    /// Seconds since the oldest request in flight started (0 without one).
    pub oldest: u64,
}

/// Figures from a status document (no workers is fine: all zero).
pub fn figures(doc: &Value, now: SystemTime) -> Result<Figures, String> {
    let workers = doc["workers"]
        .as_array()
        .ok_or("status document without a workers list")?;
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let backlogs: Vec<i64> = workers.iter().map(|w| w[1].as_i64().unwrap_or(0)).collect();
    let oldest = workers
        .iter()
        .filter_map(|w| w[3].as_u64())
        .min()
        .map_or(0, |t| now.saturating_sub(t));
    Ok(Figures {
        workers: workers.len(),
        mean_backlog: if backlogs.is_empty() {
            0.0
        } else {
            backlogs.iter().sum::<i64>() as f64 / backlogs.len() as f64
        },
        max_backlog: backlogs.iter().copied().max().unwrap_or(0),
        oldest,
    })
}

struct Thresholds {
    mean: (Option<f64>, Option<f64>),
    max: (Option<f64>, Option<f64>),
    age: (Option<f64>, Option<f64>),
    workers: (Option<f64>, Option<f64>),
}

fn num(m: &Matches, name: &str) -> Result<Option<f64>, String> {
    match m.opt_str(name) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("bad value {s:?} for --{name}")),
    }
}

fn fmt_t(t: Option<f64>) -> String {
    t.map(|v| format!("{v}")).unwrap_or_default()
}

/// The check: state, one line of text with performance data.
fn check(f: &Figures, t: &Thresholds) -> (State, String) {
    let mut state = State::Ok;
    let mut problems = Vec::new();
    let mut above = |label: &str, value: f64, (warn, crit): (Option<f64>, Option<f64>)| {
        if crit.is_some_and(|c| value > c) {
            state = state.max(State::Critical);
            problems.push(format!("{label} {value} > {}", fmt_t(crit)));
        } else if warn.is_some_and(|w| value > w) {
            state = state.max(State::Warning);
            problems.push(format!("{label} {value} > {}", fmt_t(warn)));
        }
    };
    above(
        "mean backlog",
        (f.mean_backlog * 100.0).round() / 100.0,
        t.mean,
    );
    above("max backlog", f.max_backlog as f64, t.max);
    above("oldest request", f.oldest as f64, t.age);
    let workers = f.workers as f64;
    let (ww, wc) = t.workers;
    if wc.is_some_and(|c| workers < c) {
        state = state.max(State::Critical);
        problems.push(format!("{} workers < {}", f.workers, fmt_t(wc)));
    } else if ww.is_some_and(|w| workers < w) {
        state = state.max(State::Warning);
        problems.push(format!("{} workers < {}", f.workers, fmt_t(ww)));
    }
    let summary = if problems.is_empty() {
        format!(
            "{} workers, mean backlog {:.2}, max backlog {}, oldest request {}s",
            f.workers, f.mean_backlog, f.max_backlog, f.oldest
        )
    } else {
        problems.join(", ")
    };
    let perf = format!(
        "'workers'={};{};{};0 'mean_backlog'={:.2};{};{};0 'max_backlog'={};{};{};0 'oldest_request'={}s;{};{};0",
        f.workers,
        fmt_t(t.workers.0),
        fmt_t(t.workers.1),
        f.mean_backlog,
        fmt_t(t.mean.0),
        fmt_t(t.mean.1),
        f.max_backlog,
        fmt_t(t.max.0),
        fmt_t(t.max.1),
        f.oldest,
        fmt_t(t.age.0),
        fmt_t(t.age.1),
    );
    (
        state,
        format!("RESUMELB {} - {summary} | {perf}", state.word()),
    )
}

fn unknown(msg: &str) -> ExitCode {
    println!("RESUMELB UNKNOWN - {msg}");
    ExitCode::from(State::Unknown as u8)
}

/// The plugin: never exits 2 for a usage error (2 means CRITICAL to
/// Nagios); bad usage is UNKNOWN.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = options();
    let m = match opts.parse(&args) {
        Ok(m) => m,
        Err(e) => return unknown(&e.to_string()),
    };
    if m.opt_present("h") {
        print!("{}", opts.usage(&format!("Usage: {NAME} [options] SOCKET")));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("V") {
        println!("{NAME} {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let [socket] = m.free.as_slice() else {
        return unknown("expected one argument: the LB's status socket");
    };
    let t = (|| -> Result<Thresholds, String> {
        Ok(Thresholds {
            mean: (
                num(&m, "mean-backlog-warning")?,
                num(&m, "mean-backlog-critical")?,
            ),
            max: (
                num(&m, "max-backlog-warning")?,
                num(&m, "max-backlog-critical")?,
            ),
            age: (num(&m, "age-warning")?, num(&m, "age-critical")?),
            workers: (num(&m, "workers-warning")?, num(&m, "workers-critical")?),
        })
    })();
    let t = match t {
        Ok(t) => t,
        Err(e) => return unknown(&e),
    };
    let any = [t.mean, t.max, t.age, t.workers]
        .iter()
        .any(|(w, c)| w.is_some() || c.is_some());
    if !any && !m.opt_present("metrics") {
        return unknown("no thresholds given (and no -m)");
    }
    let timeout = match num(&m, "timeout") {
        Ok(Some(s)) if (super::MIN_SECONDS..=super::MAX_SECONDS).contains(&s) => {
            Duration::from_secs_f64(s)
        }
        Ok(None) => Duration::from_secs(5),
        _ => {
            return unknown(&format!(
                "bad --timeout: must be from {} to {:.0} seconds",
                super::MIN_SECONDS,
                super::MAX_SECONDS
            ))
        }
    };
    let doc = match fetch(socket, timeout) {
        Ok(d) => d,
        Err(e) => return unknown(&format!("{socket}: {e}")),
    };
    let f = match figures(&doc, SystemTime::now()) {
        Ok(f) => f,
        Err(e) => return unknown(&e),
    };
    let (state, line) = check(&f, &t);
    println!("{line}");
    ExitCode::from(state as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_with_and_without_workers() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let f = figures(&json!({"workers": []}), now).unwrap();
        assert_eq!(
            f,
            Figures {
                workers: 0,
                mean_backlog: 0.0,
                max_backlog: 0,
                oldest: 0
            }
        );
        let doc = json!({"workers": [["a", 3, 1.0, 990], ["b", 1, 1.0, null]]});
        let f = figures(&doc, now).unwrap();
        assert_eq!(
            (f.workers, f.mean_backlog, f.max_backlog, f.oldest),
            (2, 2.0, 3, 10)
        );
    }

    #[test]
    fn states_and_perfdata() {
        let f = Figures {
            workers: 3,
            mean_backlog: 2.0,
            max_backlog: 5,
            oldest: 12,
        };
        let none = Thresholds {
            mean: (None, None),
            max: (None, None),
            age: (None, None),
            workers: (Some(2.0), Some(1.0)),
        };
        let (s, line) = check(&f, &none);
        assert_eq!(s, State::Ok);
        assert!(
            line.contains("| 'workers'=3;2;1;0 'mean_backlog'=2.00;;;0"),
            "{line}"
        );
        let warn = Thresholds {
            max: (Some(4.0), Some(10.0)),
            ..none
        };
        assert_eq!(check(&f, &warn).0, State::Warning);
        let crit = Thresholds {
            age: (Some(5.0), Some(10.0)),
            ..warn
        };
        let (s, line) = check(&f, &crit);
        assert_eq!(s, State::Critical);
        assert!(
            line.starts_with("RESUMELB CRITICAL - max backlog 5 > 4, oldest request 12 > 10"),
            "{line}"
        );
    }
}
