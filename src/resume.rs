//! The worker's résumé tracker (docs/ALGORITHMS.md §1) and the résumé file.
//!
//! Pure: elapsed times are passed in. The tracker says when a résumé is due
//! to be published; the caller sends it to the LBs and saves the file.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{Map, Value};

use crate::proto::Resume;

/// Shortest elapsed time counted, so that a score is always finite.
pub const MIN_ELAPSED: f64 = 1e-9;

/// Tracker settings: `history` H and `max_skill_age` A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeSettings {
    pub history: u64,
    /// `None`: 10·H.
    pub max_skill_age: Option<u64>,
}

impl Default for ResumeSettings {
    fn default() -> ResumeSettings {
        ResumeSettings {
            history: 9999,
            max_skill_age: None,
        }
    }
}

impl ResumeSettings {
    pub fn max_skill_age(&self) -> u64 {
        self.max_skill_age
            .unwrap_or_else(|| self.history.saturating_mul(10))
    }

    /// Settings from properties (ZooKeeper node data); absent → the value
    /// in `defaults`, `"99"` and `99.5` → 99. Unusable values are named in
    /// the errors and replaced by the default.
    pub fn from_properties(
        props: &Map<String, Value>,
        defaults: &ResumeSettings,
    ) -> (ResumeSettings, Vec<String>) {
        let mut s = *defaults;
        let mut errors = Vec::new();
        let whole = |v: &Value| {
            match v {
                Value::Number(n) => n.as_f64(),
                Value::String(t) => t.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|f| f.is_finite() && *f >= 1.0 && *f <= u64::MAX as f64)
            .map(|f| f.trunc() as u64)
        };
        if let Some(v) = props.get("history") {
            match whole(v) {
                Some(h) => s.history = h,
                None => errors.push(format!(
                    "ignoring setting history={v}: not a whole number of at least 1"
                )),
            }
        }
        if let Some(v) = props.get("max_skill_age") {
            match whole(v) {
                Some(a) => s.max_skill_age = Some(a),
                None => errors.push(format!(
                    "ignoring setting max_skill_age={v}: not a whole number of at least 1"
                )),
            }
        }
        (s, errors)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ClassStat {
    generation: u64,
    time: f64,
    count: f64,
}

/// Per-class speed, decayed by request count.
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: ResumeSettings,
    decay: f64,
    generation: u64,
    classes: HashMap<String, ClassStat>,
    /// Failed requests per class since they were last taken
    /// ([`Tracker::take_failures`]).
    failures: std::collections::BTreeMap<String, u64>,
    /// Failed requests per class since the start.
    failed_total: std::collections::BTreeMap<String, u64>,
}

impl Tracker {
    pub fn new(settings: ResumeSettings) -> Tracker {
        let mut t = Tracker {
            settings,
            decay: 0.0,
            generation: 0,
            classes: HashMap::new(),
            failures: Default::default(),
            failed_total: Default::default(),
        };
        t.update_settings(settings);
        t
    }

    /// Apply new settings at once (a removed setting is passed as default).
    pub fn update_settings(&mut self, settings: ResumeSettings) {
        self.settings = ResumeSettings {
            history: settings.history.max(1),
            ..settings
        };
        self.decay = 1.0 - 1.0 / self.settings.history as f64;
    }

    pub fn settings(&self) -> ResumeSettings {
        self.settings
    }

    /// Seed from a saved résumé: a score s > 0 becomes (gen 0, time H/s,
    /// count H), which reproduces s.
    pub fn seed(&mut self, resume: &Resume) {
        let h = self.settings.history as f64;
        for (class, &score) in resume {
            if score > 0.0 && score.is_finite() {
                self.classes.insert(
                    class.clone(),
                    ClassStat {
                        generation: 0,
                        time: h / score,
                        count: h,
                    },
                );
            }
        }
    }

    /// A request of `class` took `elapsed` seconds. Returns the résumé when
    /// one is due to be published (every H requests).
    pub fn record(&mut self, class: &str, elapsed: f64) -> Option<Resume> {
        let elapsed = if elapsed.is_finite() {
            elapsed.max(MIN_ELAPSED)
        } else {
            MIN_ELAPSED
        };
        let g = self.generation + 1;
        let decay = self.decay;
        let stat = match self.classes.get_mut(class) {
            Some(s) => s,
            None => self.classes.entry(class.to_string()).or_insert(ClassStat {
                generation: g,
                time: 0.0,
                count: 0.0,
            }),
        };
        let d = decay.powf((g - stat.generation) as f64);
        stat.time = stat.time * d + elapsed;
        stat.count = stat.count * d + 1.0;
        stat.generation = g;
        self.generation = g;
        if g % self.settings.history != 0 {
            return None;
        }
        let oldest = g.saturating_sub(self.settings.max_skill_age());
        self.classes.retain(|_, s| s.generation >= oldest);
        Some(self.resume())
    }

    /// A request of `class` failed (a 5xx, whoever produced it). A failure
    /// says nothing about how fast the worker serves the class: it is
    /// counted apart, and neither the scores nor the request count move
    /// (a worker that fails fast would otherwise look most skilled).
    pub fn failed(&mut self, class: &str) {
        *self.failures.entry(class.to_string()).or_insert(0) += 1;
        *self.failed_total.entry(class.to_string()).or_insert(0) += 1;
    }

    /// The failures counted since the start, by class.
    pub fn failed_total(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.failed_total
    }

    /// The failures counted since the last call, by class.
    pub fn take_failures(&mut self) -> std::collections::BTreeMap<String, u64> {
        std::mem::take(&mut self.failures)
    }

    /// The current résumé: class → count / time.
    pub fn resume(&self) -> Resume {
        self.classes
            .iter()
            .map(|(c, s)| (c.clone(), s.count / s.time))
            .collect()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Why a résumé file could not be used.
#[derive(Debug)]
pub enum ResumeFileError {
    Io(io::Error),
    Format(String),
}

impl fmt::Display for ResumeFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeFileError::Io(e) => write!(f, "{e}"),
            ResumeFileError::Format(why) => write!(f, "not a résumé file: {why}"),
        }
    }
}

impl std::error::Error for ResumeFileError {}

/// Read a résumé file: a JSON object of class → score.
pub fn load_file(path: &Path) -> Result<Resume, ResumeFileError> {
    let text = std::fs::read_to_string(path).map_err(ResumeFileError::Io)?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| ResumeFileError::Format(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ResumeFileError::Format("not a JSON object".into()));
    };
    let mut resume = Resume::new();
    for (class, v) in map {
        match v.as_f64() {
            Some(s) if s >= 0.0 && s.is_finite() => {
                resume.insert(class, s);
            }
            _ => {
                return Err(ResumeFileError::Format(format!(
                    "score for {class:?} is not a number ≥ 0"
                )))
            }
        }
    }
    Ok(resume)
}

/// Load a résumé file for start-up: a missing, unreadable or corrupt file
/// is logged and treated as empty, never fatal.
pub fn load_file_or_empty(path: &Path) -> Resume {
    match load_file(path) {
        Ok(r) => r,
        Err(ResumeFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Resume::new(),
        Err(e) => {
            log::warn!("ignoring résumé file {}: {e}", path.display());
            Resume::new()
        }
    }
}

/// Save a résumé atomically: write a temporary file beside it, then rename.
pub fn save_file(path: &Path, resume: &Resume) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "résumé path has no file name")
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, resume)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {

    #[test]
    fn failures_move_neither_scores_nor_the_request_count() {
        let mut t = Tracker::new(ResumeSettings {
            history: 2,
            ..ResumeSettings::default()
        });
        assert!(t.record("a", 0.5).is_none());
        let before = t.resume();
        for _ in 0..5 {
            t.failed("a");
            t.failed("b");
        }
        t.failed("a");
        assert_eq!(t.resume(), before, "no score moved, no class added");
        assert_eq!(t.generation(), 1, "failures are no requests for the résumé");
        let failures = t.take_failures();
        assert_eq!(failures.get("a"), Some(&6));
        assert_eq!(failures.get("b"), Some(&5));
        assert!(t.take_failures().is_empty(), "taken once");
        assert_eq!(t.failed_total().get("a"), Some(&6), "the totals stay");
        assert!(t.record("a", 0.5).is_some(), "the second success publishes");
    }

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn h(history: u64, max_age: Option<u64>) -> Tracker {
        Tracker::new(ResumeSettings {
            history,
            max_skill_age: max_age,
        })
    }

    #[test]
    fn decay_maths_by_hand_with_h4() {
        // decay = 3/4.
        let mut t = h(4, None);
        assert_eq!(t.record("a", 1.0), None); // a: time 1, count 1
        assert_eq!(t.record("a", 0.5), None); // d = .75: time 1.25, count 1.75
        assert!(close(t.resume()["a"], 1.4));
        assert_eq!(t.record("b", 2.0), None); // b: time 2, count 1
                                              // a again at G=4: d = .75² = .5625: time 1.703125, count 1.984375
        let published = t.record("a", 1.0).expect("published at G = H");
        assert!(close(published["a"], 1.984375 / 1.703125));
        assert!(close(published["b"], 0.5));
        assert_eq!(published.len(), 2);
        assert_eq!(t.generation(), 4);
    }

    #[test]
    fn publishes_every_h_requests() {
        let mut t = h(3, None);
        let published: Vec<bool> = (0..9).map(|_| t.record("x", 0.1).is_some()).collect();
        assert_eq!(
            published,
            [false, false, true, false, false, true, false, false, true]
        );
    }

    #[test]
    fn prunes_classes_older_than_max_skill_age() {
        let mut t = h(2, Some(3));
        t.record("old", 1.0); // G = 1
        assert!(t.record("new", 1.0).unwrap().contains_key("old")); // G = 2
        t.record("new", 1.0);
        assert!(t.record("new", 1.0).unwrap().contains_key("old")); // G = 4: 1 ≥ 1
        t.record("new", 1.0);
        let r = t.record("new", 1.0).unwrap(); // G = 6: 1 < 3
        assert!(!r.contains_key("old"));
        assert!(r.contains_key("new"));
    }

    #[test]
    fn slower_class_scores_lower() {
        let mut t = h(10, None);
        for _ in 0..5 {
            t.record("fast", 0.01);
            t.record("slow", 0.2);
        }
        let r = t.resume();
        assert!(r["fast"] > r["slow"] * 10.0);
    }

    #[test]
    fn zero_elapsed_counts_as_a_nanosecond() {
        let mut t = h(10, None);
        t.record("z", 0.0);
        assert!((t.resume()["z"] / 1e9 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn seeded_scores_reproduce_and_do_not_inflate() {
        let saved: Resume = [("a".to_string(), 2.0), ("zero".to_string(), 0.0)]
            .into_iter()
            .collect();
        let mut t = h(100, None);
        t.seed(&saved);
        assert_eq!(t.resume().len(), 1);
        assert!(close(t.resume()["a"], 2.0));
        // One more request at the same speed keeps the score where it was
        // (the original's `time 1/s` seeding made it jump H-fold).
        t.record("a", 0.5);
        assert!(close(t.resume()["a"], 2.0));
    }

    #[test]
    fn settings_change_at_run_time() {
        let mut t = h(4, None);
        t.update_settings(ResumeSettings {
            history: 2,
            max_skill_age: None,
        });
        assert!(t.record("a", 1.0).is_none());
        assert!(t.record("a", 1.0).is_some());
        assert_eq!(t.settings().max_skill_age(), 20);
        let props = serde_json::json!({"history": "7", "max_skill_age": 70.9});
        let (s, errs) =
            ResumeSettings::from_properties(props.as_object().unwrap(), &ResumeSettings::default());
        assert!(errs.is_empty());
        assert_eq!((s.history, s.max_skill_age()), (7, 70));
        let (s, errs) = ResumeSettings::from_properties(
            serde_json::json!({"history": 0}).as_object().unwrap(),
            &ResumeSettings::default(),
        );
        assert_eq!(s, ResumeSettings::default());
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn file_round_trip_and_corrupt_files() {
        let dir = std::env::temp_dir().join(format!("rlb-resume-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resume.json");
        // 100.26180218555547 needs exact float parsing to come back as is.
        let r: Resume = [
            ("a.com".to_string(), 12.5),
            ("b".to_string(), 0.25),
            ("c".to_string(), 100.26180218555547),
        ]
        .into_iter()
        .collect();
        save_file(&path, &r).unwrap();
        assert_eq!(load_file(&path).unwrap(), r);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("resume.json")]);

        for bad in ["{not json", "[1, 2]", "{\"a\": \"x\"}", "{\"a\": -1}"] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(load_file(&path), Err(ResumeFileError::Format(_))),
                "{bad}"
            );
            assert!(load_file_or_empty(&path).is_empty());
        }
        assert!(load_file_or_empty(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
