//! What the pool's page shows besides the current figures: recent events
//! (workers joining and leaving, ejections, unavailability, settings
//! changes) and a few minutes of history, sampled once a second on the I/O
//! thread.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Events kept (the newest).
pub const EVENTS: usize = 50;

/// History points kept: one a [`TICK`].
pub const POINTS: usize = 300;

/// How often the history is sampled and rates are taken.
pub const TICK: Duration = Duration::from_secs(1);

/// Something that happened to the pool.
#[derive(Debug, Clone)]
struct Event {
    at: SystemTime,
    kind: &'static str,
    worker: Option<String>,
    text: String,
}

/// One second's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at: SystemTime,
    pub requests_per_s: f64,
    pub backlog: i64,
    pub in_flight: usize,
    pub waiting: usize,
}

#[derive(Debug)]
pub struct Board {
    started: SystemTime,
    events: VecDeque<Event>,
    history: VecDeque<Point>,
}

impl Default for Board {
    fn default() -> Board {
        Board {
            started: SystemTime::now(),
            events: VecDeque::with_capacity(EVENTS),
            history: VecDeque::with_capacity(POINTS),
        }
    }
}

pub fn unix(t: SystemTime) -> f64 {
    let s = t
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (s * 1000.0).round() / 1000.0
}

impl Board {
    /// Note an event of `kind` (one word), about `worker` if any.
    pub fn event(&mut self, kind: &'static str, worker: Option<&str>, text: String) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at: SystemTime::now(),
            kind,
            worker: worker.map(str::to_string),
            text,
        });
    }

    pub fn sample(&mut self, p: Point) {
        if self.history.len() == POINTS {
            self.history.pop_front();
        }
        self.history.push_back(p);
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The events, oldest first.
    pub fn events_json(&self) -> Value {
        Value::Array(
            self.events
                .iter()
                .map(|e| {
                    json!({
                        "time": unix(e.at),
                        "kind": e.kind,
                        "worker": e.worker,
                        "text": e.text,
                    })
                })
                .collect(),
        )
    }

    /// The history as rows of `[time, requests/s, backlog, in flight,
    /// waiting]`, oldest first.
    pub fn history_json(&self) -> Value {
        json!({
            "interval": TICK.as_secs_f64(),
            "columns": ["time", "requests_per_s", "backlog", "in_flight", "waiting"],
            "points": self.history.iter().map(|p| json!([
                unix(p.at),
                (p.requests_per_s * 10.0).round() / 10.0,
                p.backlog,
                p.in_flight,
                p.waiting,
            ])).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_events_and_history() {
        let mut b = Board::default();
        for i in 0..EVENTS + 5 {
            b.event("joined", Some("w:1"), format!("event {i}"));
        }
        b.event("settings", None, "pool settings changed".into());
        let ev = b.events_json();
        let ev = ev.as_array().expect("array");
        assert_eq!(ev.len(), EVENTS);
        assert_eq!(ev[0]["text"], "event 6");
        assert_eq!(ev[EVENTS - 1]["kind"], "settings");
        assert_eq!(ev[EVENTS - 1]["worker"], Value::Null);
        assert_eq!(ev[EVENTS - 2]["worker"], "w:1");
        for i in 0..POINTS + 1 {
            b.sample(Point {
                at: UNIX_EPOCH + Duration::from_secs(i as u64),
                requests_per_s: i as f64 + 0.04,
                backlog: 2,
                in_flight: 3,
                waiting: 0,
            });
        }
        let h = b.history_json();
        let pts = h["points"].as_array().expect("points");
        assert_eq!(pts.len(), POINTS);
        assert_eq!(pts[0], json!([1.0, 1.0, 2, 3, 0]));
        assert_eq!(h["columns"][1], "requests_per_s");
    }
}
