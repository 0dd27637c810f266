//! LB settings that can change at run time: the classic pool's
//! (`variance`, `backlog_history`, `unskilled_score`), the résumé pool's
//! (`slow_factor`, `spill_factor`, `max_depth`, and `unskilled_score` and
//! `backlog_history` too) and outlier detection's (`eject_after`), and
//! their coercion from properties (ZooKeeper node data, JSON).

use std::fmt;

use serde_json::{Map, Value};

/// Settings of the pools (docs/ALGORITHMS.md §2 and §6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub variance: f64,
    pub backlog_history: u32,
    pub unskilled_score: f64,
    /// Résumé pool: a worker this many times slower than another at a
    /// class gets no more of its requests while others can take them.
    pub slow_factor: f64,
    /// Résumé pool: a waiting request spills to a worker not skilled at
    /// its class after this many times the measured cost of a cold
    /// request.
    pub spill_factor: f64,
    /// Résumé pool: most requests in flight per worker thread.
    pub max_depth: u32,
    /// Gateway failures in a row that take a worker out of the pool for a
    /// while (0: never). Not a pool setting: the LB applies it.
    pub eject_after: u32,
}

impl Default for Settings {
    /// The pool's own defaults (the `resumelb` command line has others).
    fn default() -> Settings {
        Settings {
            variance: 1.0,
            backlog_history: 9,
            unskilled_score: 1.0,
            slow_factor: 4.0,
            spill_factor: 2.0,
            max_depth: 32,
            eject_after: 5,
        }
    }
}

/// A property that could not be used; the default stands in for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingError {
    pub name: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ignoring setting {}={}: {}",
            self.name, self.value, self.why
        )
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

impl Settings {
    /// The properties [`Settings::from_properties`] reads.
    pub const NAMES: [&'static str; 7] = [
        "variance",
        "backlog_history",
        "unskilled_score",
        "slow_factor",
        "spill_factor",
        "max_depth",
        "eject_after",
    ];

    /// Settings from properties: every setting is set, an absent one to its
    /// value in `defaults`; `"2"` → 2.0, `6.2` → 6 for `backlog_history`.
    /// Unusable values are reported and replaced by the default.
    pub fn from_properties(
        props: &Map<String, Value>,
        defaults: &Settings,
    ) -> (Settings, Vec<SettingError>) {
        let mut s = *defaults;
        let mut errors = Vec::new();
        let mut bad = |name, v: &Value, why| {
            errors.push(SettingError {
                name,
                value: v.to_string(),
                why,
            })
        };
        if let Some(v) = props.get("variance") {
            match as_f64(v) {
                Some(x) if x > 0.0 => s.variance = x,
                _ => bad("variance", v, "not a number above 0"),
            }
        }
        if let Some(v) = props.get("backlog_history") {
            match as_f64(v).map(f64::trunc) {
                Some(x) if (1.0..=u32::MAX as f64).contains(&x) => s.backlog_history = x as u32,
                _ => bad("backlog_history", v, "not a whole number of at least 1"),
            }
        }
        if let Some(v) = props.get("unskilled_score") {
            match as_f64(v) {
                Some(x) if x >= 0.0 => s.unskilled_score = x,
                _ => bad("unskilled_score", v, "not a number of at least 0"),
            }
        }
        if let Some(v) = props.get("slow_factor") {
            match as_f64(v) {
                Some(x) if x > 1.0 => s.slow_factor = x,
                _ => bad("slow_factor", v, "not a number above 1"),
            }
        }
        if let Some(v) = props.get("spill_factor") {
            match as_f64(v) {
                Some(x) if x >= 0.0 => s.spill_factor = x,
                _ => bad("spill_factor", v, "not a number of at least 0"),
            }
        }
        if let Some(v) = props.get("max_depth") {
            match as_f64(v).map(f64::trunc) {
                Some(x) if (2.0..=1024.0).contains(&x) => s.max_depth = x as u32,
                _ => bad("max_depth", v, "not a whole number from 2 to 1024"),
            }
        }
        if let Some(v) = props.get("eject_after") {
            match as_f64(v).map(f64::trunc) {
                Some(x) if (0.0..=u32::MAX as f64).contains(&x) => s.eject_after = x as u32,
                _ => bad("eject_after", v, "not a whole number of at least 0"),
            }
        }
        (s, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults() {
        let s = Settings::default();
        assert_eq!(
            (s.variance, s.backlog_history, s.unskilled_score),
            (1.0, 9, 1.0)
        );
    }

    #[test]
    fn coercion() {
        let (s, errs) = Settings::from_properties(
            &props(
                json!({"variance": "2", "backlog_history": 6.2, "unskilled_score": 3,
                          "eject_after": "0", "slow_factor": "2.5", "spill_factor": 0,
                          "max_depth": 3.7}),
            ),
            &Settings::default(),
        );
        assert!(errs.is_empty());
        assert_eq!(s.eject_after, 0);
        assert_eq!(s.variance, 2.0);
        assert_eq!(s.backlog_history, 6);
        assert_eq!(s.unskilled_score, 3.0);
        assert_eq!((s.slow_factor, s.spill_factor, s.max_depth), (2.5, 0.0, 3));
        let (s, _) = Settings::from_properties(
            &props(json!({"backlog_history": "7"})),
            &Settings::default(),
        );
        assert_eq!(s.backlog_history, 7);
    }

    #[test]
    fn absent_reverts_to_default() {
        let base = Settings {
            variance: 4.0,
            ..Settings::default()
        };
        let (s, _) = Settings::from_properties(&props(json!({"variance": 9})), &base);
        assert_eq!(s.variance, 9.0);
        let (s, _) = Settings::from_properties(&props(json!({})), &base);
        assert_eq!(s, base);
    }

    #[test]
    fn bad_values_are_reported_and_defaulted() {
        let (s, errs) = Settings::from_properties(
            &props(
                json!({"variance": "lots", "backlog_history": 0, "unskilled_score": -1,
                          "eject_after": -2, "slow_factor": 1, "spill_factor": "x",
                          "max_depth": 1}),
            ),
            &Settings::default(),
        );
        assert_eq!(s, Settings::default());
        let names: Vec<_> = errs.iter().map(|e| e.name).collect();
        assert_eq!(names, Settings::NAMES);
        assert!(errs[0].to_string().contains("variance=\"lots\""));
    }
}
