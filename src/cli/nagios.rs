//! `rlb-nagios SOCKET`: a Nagios plugin over an LB's status socket. One line
//! of output with performance data; exit 0 OK, 1 WARNING, 2 CRITICAL,
//! 3 UNKNOWN.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use getopts::{Matches, Options};
use serde_json::Value;

use super::get_lb_status::fetch;

pub const NAME: &str = "rlb-nagios";

/// Our threshold options and the names zc.resumelb's plugin gave them,
/// which are taken too.
const ORIGINAL_NAMES: [(&str, &str); 8] = [
    ("mean-backlog-warning", "worker-mean-backlog-warn"),
    ("mean-backlog-critical", "worker-mean-backlog-error"),
    ("max-backlog-warning", "worker-max-backlog-warn"),
    ("max-backlog-critical", "worker-max-backlog-error"),
    ("age-warning", "worker-request-age-warn"),
    ("age-critical", "worker-request-age-error"),
    ("workers-warning", "minimum-worker-warn"),
    ("workers-critical", "minimum-worker-error"),
];

pub fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "b",
        "mean-backlog-warning",
        "warn when the mean backlog is at least this",
        "N",
    );
    o.optopt(
        "B",
        "mean-backlog-critical",
        "critical when the mean backlog is at least this",
        "N",
    );
    o.optopt(
        "x",
        "max-backlog-warning",
        "warn when a worker's backlog is at least this",
        "N",
    );
    o.optopt(
        "X",
        "max-backlog-critical",
        "critical when a worker's backlog is at least this",
        "N",
    );
    o.optopt(
        "a",
        "age-warning",
        "warn when the oldest request in flight is at least this many seconds old",
        "SECONDS",
    );
    o.optopt(
        "A",
        "age-critical",
        "critical when the oldest request in flight is at least this many seconds old",
        "SECONDS",
    );
    o.optopt(
        "w",
        "workers-warning",
        "warn when there are at most this many workers",
        "N",
    );
    o.optopt(
        "W",
        "workers-critical",
        "critical when there are at most this many workers",
        "N",
    );
    o.optopt(
        "u",
        "unavailable-warning",
        "warn when at least this many workers say their application is unavailable",
        "N",
    );
    o.optopt(
        "U",
        "unavailable-critical",
        "critical when at least this many workers say their application is unavailable",
        "N",
    );
    for (ours, original) in ORIGINAL_NAMES {
        o.optopt(
            "",
            original,
            &format!("the same as --{ours} (the original plugin's name)"),
            "N",
        );
    }
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
    /// Workers whose application is down (they keep their rows).
    pub unavailable: u64,
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
        unavailable: doc["unavailable"].as_u64().unwrap_or(0),
        // The pool's decayed mean backlog, as the original plugin and
        // get-lb-status use it (not the mean of the workers' backlogs now).
        mean_backlog: doc["mean_backlog"].as_f64().unwrap_or(0.0),
        max_backlog: backlogs.iter().copied().max().unwrap_or(0),
        oldest,
    })
}

struct Thresholds {
    mean: (Option<f64>, Option<f64>),
    max: (Option<f64>, Option<f64>),
    age: (Option<f64>, Option<f64>),
    workers: (Option<f64>, Option<f64>),
    unavailable: (Option<f64>, Option<f64>),
}

/// A threshold by our name or the original one: a number ≥ 0.
fn threshold(m: &Matches, ours: &str) -> Result<Option<f64>, String> {
    let original = ORIGINAL_NAMES
        .iter()
        .find(|(o, _)| *o == ours)
        .map(|(_, orig)| *orig);
    let a = num(m, ours)?;
    let b = match original {
        Some(orig) => num(m, orig)?,
        None => None,
    };
    if let (Some(x), Some(y), Some(orig)) = (a, b, original) {
        if x != y {
            return Err(format!("--{ours} {x} and --{orig} {y} disagree"));
        }
    }
    match a.or(b) {
        Some(v) if !(v >= 0.0 && v.is_finite()) => Err(format!(
            "bad value {v} for --{ours} (a number of at least 0)"
        )),
        v => Ok(v),
    }
}

/// A warning threshold must come before the critical one in the order the
/// values alert in.
fn ordered(
    (warn, crit): (Option<f64>, Option<f64>),
    ascending: bool,
    name: &str,
) -> Result<(Option<f64>, Option<f64>), String> {
    if let (Some(w), Some(c)) = (warn, crit) {
        if (ascending && w > c) || (!ascending && w < c) {
            return Err(format!(
                "--{name}-warning {w} is beyond --{name}-critical {c}"
            ));
        }
    }
    Ok((warn, crit))
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

/// A threshold in Nagios range syntax for a value that alerts at or above
/// it (`@N:`: inside [N, ∞)), or at or below it (`@~:N`).
fn range(t: Option<f64>, at_least: bool) -> String {
    match t {
        None => String::new(),
        Some(v) if at_least => format!("@{v}:"),
        Some(v) => format!("@~:{v}"),
    }
}

/// The check: state, one line of text with performance data. Backlogs
/// and age alert at or above their thresholds, the number of workers at
/// or below (as zc.resumelb's plugin did).
fn check(f: &Figures, t: &Thresholds) -> (State, String) {
    let mut state = State::Ok;
    let mut problems = Vec::new();
    let mut rule =
        |label: String, value: f64, (warn, crit): (Option<f64>, Option<f64>), at_least: bool| {
            let hit = |t: f64| if at_least { value >= t } else { value <= t };
            let sign = if at_least { ">=" } else { "<=" };
            if let Some(c) = crit.filter(|&c| hit(c)) {
                state = state.max(State::Critical);
                problems.push(format!("{label} {sign} {c}"));
            } else if let Some(w) = warn.filter(|&w| hit(w)) {
                state = state.max(State::Warning);
                problems.push(format!("{label} {sign} {w}"));
            }
        };
    let mean = (f.mean_backlog * 100.0).round() / 100.0;
    rule(format!("mean backlog {mean}"), mean, t.mean, true);
    rule(
        format!("max backlog {}", f.max_backlog),
        f.max_backlog as f64,
        t.max,
        true,
    );
    rule(
        format!("oldest request {}s", f.oldest),
        f.oldest as f64,
        t.age,
        true,
    );
    rule(
        format!("{} workers", f.workers),
        f.workers as f64,
        t.workers,
        false,
    );
    rule(
        format!("{} unavailable", f.unavailable),
        f.unavailable as f64,
        t.unavailable,
        true,
    );
    let summary = if problems.is_empty() {
        format!(
            "{} workers, mean backlog {:.2}, max backlog {}, oldest request {}s",
            f.workers, f.mean_backlog, f.max_backlog, f.oldest
        )
    } else {
        problems.join(", ")
    };
    let perf = format!(
        "'workers'={};{};{};0 'mean_backlog'={:.2};{};{};0 'max_backlog'={};{};{};0 'oldest_request'={}s;{};{};0 'unavailable'={};{};{};0",
        f.workers,
        range(t.workers.0, false),
        range(t.workers.1, false),
        f.mean_backlog,
        range(t.mean.0, true),
        range(t.mean.1, true),
        f.max_backlog,
        range(t.max.0, true),
        range(t.max.1, true),
        f.oldest,
        range(t.age.0, true),
        range(t.age.1, true),
        f.unavailable,
        range(t.unavailable.0, true),
        range(t.unavailable.1, true),
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
        print!(
            "{}",
            super::help_text(&opts, &format!("Usage: {NAME} [options] SOCKET"))
        );
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
        let pair = |name: &str, ascending: bool| -> Result<_, String> {
            let w = threshold(&m, &format!("{name}-warning"))?;
            let c = threshold(&m, &format!("{name}-critical"))?;
            ordered((w, c), ascending, name)
        };
        Ok(Thresholds {
            mean: pair("mean-backlog", true)?,
            max: pair("max-backlog", true)?,
            age: pair("age", true)?,
            workers: pair("workers", false)?,
            unavailable: pair("unavailable", true)?,
        })
    })();
    let t = match t {
        Ok(t) => t,
        Err(e) => return unknown(&e),
    };
    let any = [t.mean, t.max, t.age, t.workers, t.unavailable]
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
        let f = figures(&json!({"workers": [], "mean_backlog": 0.0}), now).unwrap();
        assert_eq!(
            f,
            Figures {
                workers: 0,
                unavailable: 0,
                mean_backlog: 0.0,
                max_backlog: 0,
                oldest: 0
            }
        );
        // The mean backlog is the document's (the pool's decayed mean).
        let doc = json!({"mean_backlog": 1.57, "unavailable": 1,
                         "workers": [["a", 3, 1.0, 990], ["b", 1, 1.0, null]]});
        let f = figures(&doc, now).unwrap();
        assert_eq!(
            (
                f.workers,
                f.unavailable,
                f.mean_backlog,
                f.max_backlog,
                f.oldest
            ),
            (2, 1, 1.57, 3, 10)
        );
    }

    fn none() -> Thresholds {
        Thresholds {
            mean: (None, None),
            max: (None, None),
            age: (None, None),
            workers: (None, None),
            unavailable: (None, None),
        }
    }

    #[test]
    fn values_at_a_threshold_alert_like_the_original_plugin() {
        let f = Figures {
            workers: 2,
            unavailable: 1,
            mean_backlog: 2.0,
            max_backlog: 5,
            oldest: 12,
        };
        let t = Thresholds {
            workers: (Some(3.0), Some(1.0)),
            ..none()
        };
        let (s, line) = check(&f, &t);
        assert_eq!(s, State::Warning, "{line}");
        assert!(
            line.starts_with("RESUMELB WARNING - 2 workers <= 3"),
            "{line}"
        );
        let t = Thresholds {
            workers: (Some(2.0), Some(2.0)),
            ..none()
        };
        assert_eq!(check(&f, &t).0, State::Critical);
        let t = Thresholds {
            unavailable: (Some(1.0), Some(2.0)),
            ..none()
        };
        let (s, line) = check(&f, &t);
        assert_eq!(s, State::Warning, "{line}");
        assert!(
            line.starts_with("RESUMELB WARNING - 1 unavailable >= 1"),
            "{line}"
        );
        let t = Thresholds {
            max: (Some(5.0), Some(10.0)),
            ..none()
        };
        assert_eq!(check(&f, &t).0, State::Warning);
        let t = Thresholds {
            max: (Some(4.0), Some(5.0)),
            age: (Some(5.0), Some(12.0)),
            mean: (Some(2.5), None),
            ..none()
        };
        let (s, line) = check(&f, &t);
        assert_eq!(s, State::Critical);
        assert!(
            line.starts_with("RESUMELB CRITICAL - max backlog 5 >= 5, oldest request 12s >= 12"),
            "{line}"
        );
    }

    /// Perfdata ranges say exactly the rules: `@N:` alerts at N and above,
    /// `@~:N` at N and below (Nagios plugin guidelines, ranges).
    #[test]
    fn perfdata_ranges_match_the_rules() {
        let f = Figures {
            workers: 3,
            unavailable: 0,
            mean_backlog: 2.0,
            max_backlog: 5,
            oldest: 12,
        };
        let t = Thresholds {
            workers: (Some(2.0), Some(1.0)),
            mean: (Some(4.0), Some(8.5)),
            ..none()
        };
        let (s, line) = check(&f, &t);
        assert_eq!(s, State::Ok);
        assert!(
            line.ends_with(
                "| 'workers'=3;@~:2;@~:1;0 'mean_backlog'=2.00;@4:;@8.5:;0 \
                 'max_backlog'=5;;;0 'oldest_request'=12s;;;0 'unavailable'=0;;;0"
            ),
            "{line}"
        );
    }

    #[test]
    fn thresholds_must_make_sense() {
        let o = options();
        let parse = |args: &[&str]| o.parse(args.iter().map(|s| s.to_string())).unwrap();
        let t = |args: &[&str], name: &str, asc: bool| {
            let m = parse(args);
            let w = threshold(&m, &format!("{name}-warning"))?;
            let c = threshold(&m, &format!("{name}-critical"))?;
            ordered((w, c), asc, name)
        };
        assert_eq!(
            t(&["-b", "2", "-B", "5"], "mean-backlog", true),
            Ok((Some(2.0), Some(5.0)))
        );
        // The original plugin's names.
        assert_eq!(
            t(
                &[
                    "--worker-mean-backlog-warn",
                    "2",
                    "--worker-mean-backlog-error",
                    "5"
                ],
                "mean-backlog",
                true
            ),
            Ok((Some(2.0), Some(5.0)))
        );
        assert_eq!(
            t(
                &["--minimum-worker-warn", "3", "--minimum-worker-error", "1"],
                "workers",
                false
            ),
            Ok((Some(3.0), Some(1.0)))
        );
        for (args, name, asc, why) in [
            (&["-b", "NaN"][..], "mean-backlog", true, "bad value"),
            (&["-x", "-1"][..], "max-backlog", true, "bad value"),
            (&["-a", "9", "-A", "3"][..], "age", true, "beyond"),
            (&["-w", "1", "-W", "3"][..], "workers", false, "beyond"),
            (
                &["-b", "1", "--worker-mean-backlog-warn", "2"][..],
                "mean-backlog",
                true,
                "disagree",
            ),
        ] {
            let e = t(args, name, asc).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
    }
}
