//! The workers file (`resumelb --workers-file PATH`), read at start and on
//! SIGHUP: worker addresses, one `HOST:PORT` a line, and lines
//! `NAME = VALUE` that set pool settings (the names of the ZooKeeper
//! properties) or the request classifier (`request_classifier = SPEC`),
//! over what the command line says. `#` starts a comment line; an address
//! may have one after it. A file with any bad line is not used at all:
//! at start that is a configuration error, on SIGHUP the running
//! configuration stays and the reason is logged.

use std::path::Path;

use serde_json::{Map, Value};

use super::WorkerSpec;
use crate::classify::Classifier;
use crate::pool::Settings;

/// What a workers file says.
#[derive(Debug, Clone)]
pub struct WorkersFile {
    pub workers: Vec<WorkerSpec>,
    /// Settings it sets, as properties.
    pub settings: Map<String, Value>,
    /// The classifier it names, with its spec.
    pub classifier: Option<(String, Classifier)>,
}

impl WorkersFile {
    /// The pool settings: `base` (the command line's) with the file's over
    /// them.
    pub fn settings_over(&self, base: &Settings) -> Settings {
        Settings::from_properties(&self.settings, base).0
    }
}

/// Whether `addr` looks like `HOST:PORT` (names are resolved later).
fn is_address(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Parse the file's text; `path` names it in messages.
pub fn parse(path: &Path, text: &str) -> Result<WorkersFile, String> {
    let at = |i: usize, why: String| format!("{}:{}: {why}", path.display(), i + 1);
    let mut f = WorkersFile {
        workers: Vec::new(),
        settings: Map::new(),
        classifier: None,
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            let (name, value) = (name.trim(), value.trim());
            if name == "request_classifier" {
                let c = value
                    .parse::<Classifier>()
                    .map_err(|e| at(i, format!("request_classifier: {e}")))?;
                f.classifier = Some((value.to_string(), c));
            } else if Settings::NAMES.contains(&name) {
                let one: Map<String, Value> =
                    std::iter::once((name.to_string(), Value::String(value.to_string()))).collect();
                let (_, errors) = Settings::from_properties(&one, &Settings::default());
                if let Some(e) = errors.first() {
                    return Err(at(i, format!("{name} = {value}: {}", e.why)));
                }
                f.settings
                    .insert(name.to_string(), Value::String(value.to_string()));
            } else {
                return Err(at(i, format!("unknown setting {name:?}")));
            }
            continue;
        }
        let mut words = line.split_whitespace();
        let addr = words.next().unwrap_or("");
        let rest = words.next();
        if !is_address(addr) || rest.is_some_and(|w| !w.starts_with('#')) {
            return Err(at(
                i,
                format!("{line:?} is neither HOST:PORT nor NAME = VALUE"),
            ));
        }
        if !f.workers.iter().any(|w| w.addr == addr) {
            f.workers.push(WorkerSpec::new(addr));
        }
    }
    Ok(f)
}

/// Read and parse the file.
pub fn read(path: &Path) -> Result<WorkersFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("workers file {}: {e}", path.display()))?;
    parse(path, &text)
}

/// The command line's workers and the file's, without repeats.
pub fn merged(base: &[WorkerSpec], file: &WorkersFile) -> Vec<WorkerSpec> {
    let mut all = base.to_vec();
    for w in &file.workers {
        if !all.iter().any(|b| b.addr == w.addr) {
            all.push(w.clone());
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_settings_and_classifier() {
        let p = Path::new("workers");
        let f = parse(
            p,
            "# the pool\n127.0.0.1:8001\n  w2.example:8002  # rack 2\n127.0.0.1:8001\n\n\
             variance = 2.5\neject_after=3\nrequest_classifier = re:path:^/(?P<class>[^/]*)\n",
        )
        .expect("parses");
        let addrs: Vec<&str> = f.workers.iter().map(|w| w.addr.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:8001", "w2.example:8002"]);
        let s = f.settings_over(&Settings::default());
        assert_eq!((s.variance, s.eject_after), (2.5, 3));
        assert_eq!(s.max_depth, Settings::default().max_depth);
        assert_eq!(
            f.classifier.as_ref().map(|c| c.0.as_str()),
            Some("re:path:^/(?P<class>[^/]*)")
        );
        let base = vec![WorkerSpec::new("127.0.0.1:8001"), WorkerSpec::new("h:1")];
        let m: Vec<String> = merged(&base, &f).into_iter().map(|w| w.addr).collect();
        assert_eq!(m, ["127.0.0.1:8001", "h:1", "w2.example:8002"]);
    }

    #[test]
    fn one_bad_line_refuses_the_file() {
        let p = Path::new("w");
        let err = |t: &str| parse(p, t).expect_err("refused");
        assert_eq!(
            err("127.0.0.1:1\nnonsense\n"),
            "w:2: \"nonsense\" is neither HOST:PORT nor NAME = VALUE"
        );
        assert!(err("h:0\n").starts_with("w:1:"));
        assert!(err("h:1 h:2\n").starts_with("w:1:"));
        assert_eq!(err("colour = red\n"), "w:1: unknown setting \"colour\"");
        assert!(err("variance = -1\n").starts_with("w:1: variance = -1: "));
        assert!(err("request_classifier = bogus\n").starts_with("w:1: request_classifier: "));
        assert!(parse(p, "# nothing\n")
            .expect("empty is fine")
            .workers
            .is_empty());
    }
}
