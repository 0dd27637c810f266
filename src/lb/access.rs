//! Access log lines: Common Log Format, then the duration in seconds and
//! the request class, quoted. A line is written when the client has been
//! sent the last byte of its response (so the duration covers delivery),
//! or when the connection closes. Pure: no sockets, time passed in.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use crate::util::time::clf_date;

/// One exchange's line, waiting for its response to leave.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub peer: IpAddr,
    pub wall: SystemTime,
    /// `METHOD target HTTP/1.x`, or `None` for a request refused before
    /// its head could be read (logged as `"-"`).
    pub request: Option<String>,
    pub status: u16,
    pub bytes: u64,
    pub class: std::rc::Rc<str>,
    pub started: Instant,
}

/// `"text"` with `"`, `\` and control characters escaped (as nginx does),
/// so that a field never splits or ends a line.
pub(super) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Line {
    /// The log line, its duration measured up to `now`.
    pub fn text(&self, now: Instant) -> String {
        format!(
            "{} - - [{}] {} {} {} {:.6} {}\n",
            self.peer,
            clf_date(self.wall),
            self.request.as_deref().map_or("\"-\"".into(), quote),
            self.status,
            if self.bytes == 0 {
                "-".to_string()
            } else {
                self.bytes.to_string()
            },
            now.saturating_duration_since(self.started).as_secs_f64(),
            if self.class.is_empty() {
                "-".to_string()
            } else {
                quote(&self.class)
            },
        )
    }
}

/// A client's lines, each due once the client's output has gone past the
/// end of its response (`mark`, in bytes pushed to the output so far).
#[derive(Debug, Default)]
pub(super) struct Pending(VecDeque<(u64, Line)>);

impl Pending {
    pub fn push(&mut self, mark: u64, line: Line) {
        self.0.push_back((mark, line));
    }

    /// The lines whose response is out, now that `written` bytes are.
    pub fn due(&mut self, written: u64) -> Vec<Line> {
        let mut out = Vec::new();
        while self.0.front().is_some_and(|(mark, _)| *mark <= written) {
            if let Some((_, line)) = self.0.pop_front() {
                out.push(line);
            }
        }
        out
    }

    /// Every line left (the connection is closing).
    pub fn all(&mut self) -> Vec<Line> {
        self.0.drain(..).map(|(_, l)| l).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn line(class: &str, request: Option<&str>, started: Instant) -> Line {
        Line {
            peer: "10.0.0.1".parse().unwrap(),
            wall: UNIX_EPOCH + Duration::from_secs(1_732_752_000),
            request: request.map(str::to_string),
            status: 200,
            bytes: 5,
            class: class.into(),
            started,
        }
    }

    #[test]
    fn fields_are_quoted_and_never_split() {
        let t0 = Instant::now();
        let l = line("a class \"x\"", Some("GET /a\"b HTTP/1.1"), t0);
        assert_eq!(
            l.text(t0 + Duration::from_millis(1500)),
            "10.0.0.1 - - [28/Nov/2024:00:00:00 +0000] \"GET /a\\\"b HTTP/1.1\" 200 5 1.500000 \"a class \\\"x\\\"\"\n"
        );
        let l = line("", None, t0);
        let text = l.text(t0);
        assert!(text.contains("] \"-\" 200 5 0.000000 -\n"), "{text}");
        assert_eq!(quote("a\nb\\"), "\"a\\x0Ab\\\\\"");
    }

    #[test]
    fn a_line_is_due_when_its_response_is_out() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.push(100, line("a", Some("GET / HTTP/1.1"), t0));
        p.push(250, line("b", Some("GET / HTTP/1.1"), t0));
        assert!(p.due(99).is_empty());
        let due = p.due(100);
        assert_eq!(due.len(), 1);
        assert_eq!(&*due[0].class, "a");
        assert!(p.due(200).is_empty());
        assert_eq!(p.all().len(), 1);
        assert!(p.all().is_empty());
    }
}
