//! A tiny `log::Log` that writes one line per record to stderr:
//! `2026-11-27T23:50:42.123Z WARN resumelb::worker: message`.

use std::io::Write;
use std::str::FromStr;

use log::{LevelFilter, Log, Metadata, Record};

use super::time::utc_timestamp;

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // The ZooKeeper client logs every failed try, at error, while a
        // server is away; src/zk says what matters (lost, still away, back)
        // at a pace an operator can read. Its own lines show only when
        // debugging.
        if metadata.target().starts_with("zookeeper") {
            // (The level in force is log's maximum; `level` stays at Trace
            // so that it can be changed after start-up.)
            return log::max_level() >= LevelFilter::Debug;
        }
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {} {}: {}\n",
            utc_timestamp(std::time::SystemTime::now(), 3),
            record.level(),
            record.target(),
            record.args()
        );
        // One write per line so that lines from threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Parse `-L`: a level name (`error` … `trace`, `off`, any case) or a
/// number, either 0–5 (off … trace) or Python's 10–50 (DEBUG … CRITICAL),
/// as zc.resumelb took.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    if let Ok(n) = s.trim().parse::<u32>() {
        return match n {
            0 => Ok(LevelFilter::Off),
            1 => Ok(LevelFilter::Error),
            2 => Ok(LevelFilter::Warn),
            3 => Ok(LevelFilter::Info),
            4 => Ok(LevelFilter::Debug),
            5 => Ok(LevelFilter::Trace),
            // Python's levels: DEBUG 10, INFO 20, WARNING 30, ERROR 40,
            // CRITICAL 50 (errors are what we log at that level).
            10..=19 => Ok(LevelFilter::Debug),
            20..=29 => Ok(LevelFilter::Info),
            30..=39 => Ok(LevelFilter::Warn),
            40..=50 => Ok(LevelFilter::Error),
            _ => Err(format!(
                "bad log level {s:?} (a number must be 0 to 5, or Python's 10 to 50)"
            )),
        };
    }
    match s.trim().to_ascii_lowercase().as_str() {
        "warning" => Ok(LevelFilter::Warn),
        "critical" | "fatal" => Ok(LevelFilter::Error),
        other => LevelFilter::from_str(other).map_err(|_| {
            format!(
                "bad log level {s:?} (expected error, warn, info, debug, trace, off or a number)"
            )
        }),
    }
}

/// Install the stderr logger (once per process; later calls only change
/// the level).
pub fn init(level: LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(StderrLogger {
        level: LevelFilter::Trace,
    }));
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_by_name_and_number() {
        assert_eq!(parse_level("INFO"), Ok(LevelFilter::Info));
        assert_eq!(parse_level("warning"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("10"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("40"), Ok(LevelFilter::Error));
        assert_eq!(parse_level("4"), Ok(LevelFilter::Debug));
        assert!(parse_level("loud").is_err());
        assert_eq!(parse_level("0"), Ok(LevelFilter::Off));
        assert_eq!(parse_level("5"), Ok(LevelFilter::Trace));
        assert_eq!(parse_level("50"), Ok(LevelFilter::Error));
        assert_eq!(parse_level("off"), Ok(LevelFilter::Off));
        for out_of_range in ["6", "9", "51", "99"] {
            assert!(parse_level(out_of_range).is_err(), "{out_of_range}");
        }
    }
}
