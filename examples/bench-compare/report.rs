//! Output: aligned text tables and SVG bar charts (written by hand: a few
//! rectangles and labels do not need a plotting library).

use std::fmt::Write as _;

/// A table: a header row, then rows; the first column is left-aligned,
/// the others right-aligned.
#[derive(Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A row for a variant that did not run: its name, then SKIPPED and
    /// why; never a zero that could pass for a measurement.
    pub fn skipped(&mut self, name: &str, why: &str) {
        let mut cells = vec![name.to_string(), "SKIPPED".to_string()];
        cells.push(format!("({why})"));
        self.rows.push(cells);
    }

    pub fn text(&self) -> String {
        let n = self.header.len();
        let mut width = vec![0; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            // A SKIPPED row's reason runs past the columns.
            if r.get(1).map(String::as_str) == Some("SKIPPED") {
                width[0] = width[0].max(r[0].chars().count());
                continue;
            }
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let skipped = r.get(1).map(String::as_str) == Some("SKIPPED");
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let pad = width.get(i).copied().unwrap_or(0);
                if i == 0 {
                    let _ = write!(line, "{c:<pad$}");
                } else if skipped {
                    let _ = write!(line, "  {c}");
                } else {
                    let _ = write!(line, "  {c:>pad$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The same as a Markdown table (for the README).
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.header.join(" | "));
        for i in 0..self.header.len() {
            out.push_str(if i == 0 { "---|" } else { "---:|" });
        }
        out.push('\n');
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.header.len(), String::new());
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

/// One panel of a chart: bars by label, `None` drawn as SKIPPED.
pub struct Panel {
    pub title: String,
    pub bars: Vec<(String, Option<f64>)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Horizontal bar panels side by side under one title.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    const PANEL_W: f64 = 420.0;
    const LABEL_W: f64 = 190.0;
    const BAR_H: f64 = 22.0;
    const TOP: f64 = 60.0;
    let rows = panels.iter().map(|p| p.bars.len()).max().unwrap_or(0) as f64;
    let width = PANEL_W * panels.len() as f64 + 20.0;
    let height = TOP + rows * (BAR_H + 8.0) + 20.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        esc(title)
    );
    for (pi, panel) in panels.iter().enumerate() {
        let x0 = 10.0 + pi as f64 * PANEL_W;
        let _ = writeln!(
            out,
            "<text x=\"{x0}\" y=\"46\" font-weight=\"bold\">{}</text>",
            esc(&panel.title)
        );
        let max = panel
            .bars
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(0.0_f64, f64::max)
            .max(f64::MIN_POSITIVE);
        let bar_max = PANEL_W - LABEL_W - 70.0;
        for (i, (name, value)) in panel.bars.iter().enumerate() {
            let y = TOP + i as f64 * (BAR_H + 8.0);
            let _ = writeln!(
                out,
                "<text x=\"{x0}\" y=\"{:.1}\">{}</text>",
                y + 15.0,
                esc(name)
            );
            let bx = x0 + LABEL_W;
            match value {
                Some(v) => {
                    let w = (v / max * bar_max).max(1.0);
                    let fill = if name.starts_with("resumelb") {
                        "#2b6cb0"
                    } else {
                        "#a0aec0"
                    };
                    let _ = writeln!(
                        out,
                        "<rect x=\"{bx}\" y=\"{y}\" width=\"{w:.1}\" height=\"{BAR_H}\" fill=\"{fill}\"/>\n\
                         <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                        bx + w + 4.0,
                        y + 15.0,
                        label(*v)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "<text x=\"{bx}\" y=\"{:.1}\" fill=\"#c53030\">SKIPPED</text>",
                        y + 15.0
                    );
                }
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_show_skipped_rows() {
        let mut t = Table::new(&["variant", "req/s", "p99 ms"]);
        t.row(vec!["resumelb".into(), "1234".into(), "5.6".into()]);
        t.row(vec!["haproxy hash".into(), "98".into(), "12.25".into()]);
        t.skipped("nginx hash", "nginx is not installed");
        assert_eq!(
            t.text(),
            "variant       req/s  p99 ms\n\
             resumelb       1234     5.6\n\
             haproxy hash     98   12.25\n\
             nginx hash    SKIPPED  (nginx is not installed)\n"
        );
        assert_eq!(
            t.markdown(),
            "| variant | req/s | p99 ms |\n|---|---:|---:|\n\
             | resumelb | 1234 | 5.6 |\n| haproxy hash | 98 | 12.25 |\n\
             | nginx hash | SKIPPED | (nginx is not installed) |\n"
        );
    }

    #[test]
    fn charts_draw_a_bar_per_value_and_mark_skipped_ones() {
        let s = svg(
            "W1a <test>",
            &[Panel {
                title: "req/s".into(),
                bars: vec![
                    ("resumelb".into(), Some(100.0)),
                    ("nginx".into(), Some(50.0)),
                    ("haproxy".into(), None),
                ],
            }],
        );
        assert!(s.starts_with("<svg"));
        assert!(s.contains("W1a &lt;test&gt;"));
        assert_eq!(s.matches("<rect").count(), 3); // background + two bars
        assert!(s.contains("SKIPPED"));
        assert!(s.contains(">100.0<") && s.contains(">50.0<"));
    }
}
