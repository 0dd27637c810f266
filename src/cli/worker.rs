//! `resumelb-worker`: command line → [`WorkerConfig`] and app, then run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use getopts::Options;

use super::{init_logging, parse, seconds, standard_options, value, CliError};
use crate::resume::ResumeSettings;
use crate::tracelog::TraceLog;
use crate::worker::demo::{DemoApp, DemoConfig};
use crate::worker::upstream::UpstreamApp;
use crate::worker::{resolve, App, Worker, WorkerConfig};

pub const NAME: &str = "resumelb-worker";
const SYNOPSIS: &str = "-a HOST:PORT --app demo|upstream:HOST:PORT [options]";

/// Which application to run.
#[derive(Debug, Clone, PartialEq)]
pub enum AppSpec {
    Demo,
    Upstream(String),
}

impl std::str::FromStr for AppSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<AppSpec, String> {
        let s = s.trim();
        if s == "demo" {
            return Ok(AppSpec::Demo);
        }
        for sep in [':', ' ', '='] {
            if let Some(addr) = s.strip_prefix("upstream").and_then(|r| r.strip_prefix(sep)) {
                let addr = addr.trim();
                if addr.is_empty() {
                    break;
                }
                return Ok(AppSpec::Upstream(addr.to_string()));
            }
        }
        Err(format!(
            "unknown app {s:?} (expected \"demo\" or \"upstream:HOST:PORT\")"
        ))
    }
}

pub fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "a",
        "address",
        "address to listen on for LBs (required; port 0 picks one)",
        "HOST:PORT",
    );
    o.optopt(
        "",
        "app",
        "the application: demo, or upstream:HOST:PORT to forward to an HTTP server (required)",
        "APP",
    );
    o.optopt("", "threads", "app threads (default 1)", "N");
    o.optopt(
        "",
        "history",
        "résumé history: requests per résumé and decay horizon (default 9999)",
        "N",
    );
    o.optopt(
        "",
        "max-skill-age",
        "forget classes not seen for this many requests (default 10 x history)",
        "N",
    );
    o.optopt(
        "",
        "resume-file",
        "save the résumé here on every publish, read it at start-up",
        "PATH",
    );
    o.optopt(
        "",
        "tracelog",
        "write trace records to PATH, or - for stderr",
        "PATH|-",
    );
    o.optopt(
        "L",
        "logger-configuration",
        "log level: error, warn, info, debug, trace, or a number (default info)",
        "LEVEL",
    );
    o.optopt(
        "",
        "demo-cache-size",
        "demo app: objects its cache holds (default 100)",
        "N",
    );
    o.optopt(
        "",
        "demo-miss-ms",
        "demo app: milliseconds a cache miss costs (default 10)",
        "MS",
    );
    o.optopt(
        "",
        "upstream-timeout",
        "upstream app: seconds to connect, and for each read and write (default 99)",
        "SECONDS",
    );
    o.optopt(
        "",
        "shutdown-timeout",
        "seconds a graceful shutdown waits for requests in flight (default 99)",
        "SECONDS",
    );
    standard_options(&mut o);
    o
}

/// Everything `resumelb-worker` was asked to do.
pub struct WorkerArgs {
    pub address: String,
    pub app: AppSpec,
    pub config: WorkerConfig,
    pub demo: DemoConfig,
    pub upstream_timeout: Duration,
    pub tracelog: Option<String>,
}

pub fn parse_args(args: &[String]) -> Result<Option<WorkerArgs>, CliError> {
    let opts = options();
    let Some(m) = parse(NAME, SYNOPSIS, &opts, args)? else {
        return Ok(None);
    };
    if let Some(extra) = m.free.first() {
        return Err(CliError::Usage(format!("unexpected argument {extra:?}")));
    }
    init_logging(&m, "logger-configuration")?;
    let address = m
        .opt_str("address")
        .ok_or_else(|| CliError::Usage("an address is required: -a HOST:PORT".into()))?;
    let app: AppSpec = m
        .opt_str("app")
        .ok_or_else(|| {
            CliError::Usage(
                "an application is required: --app demo or --app upstream:HOST:PORT".into(),
            )
        })?
        .parse()
        .map_err(CliError::Usage)?;
    let threads: usize = value(&m, "threads", 1)?;
    if threads == 0 || threads > 4096 {
        return Err(CliError::Usage("--threads must be from 1 to 4096".into()));
    }
    let history: u64 = value(&m, "history", 9999)?;
    if history == 0 {
        return Err(CliError::Usage("--history must be at least 1".into()));
    }
    let max_skill_age: Option<u64> = match m.opt_str("max-skill-age") {
        None => None,
        Some(_) => Some(value(&m, "max-skill-age", 0)?),
    };
    if max_skill_age == Some(0) {
        return Err(CliError::Usage("--max-skill-age must be at least 1".into()));
    }
    let demo = DemoConfig {
        cache_size: value(&m, "demo-cache-size", 100)?,
        miss_ms: value(&m, "demo-miss-ms", 10)?,
    };
    let config = WorkerConfig {
        threads,
        resume: ResumeSettings {
            history,
            max_skill_age,
        },
        resume_file: m.opt_str("resume-file").map(PathBuf::from),
        shutdown_timeout: seconds(&m, "shutdown-timeout", 99.0)?,
        handle_signals: true,
        ..WorkerConfig::default()
    };
    Ok(Some(WorkerArgs {
        address,
        app,
        config,
        demo,
        upstream_timeout: seconds(&m, "upstream-timeout", 99.0)?,
        tracelog: m.opt_str("tracelog"),
    }))
}

pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let Some(mut a) = parse_args(&args)? else {
        return Ok(());
    };
    if let Some(t) = &a.tracelog {
        a.config.tracelog = TraceLog::open(t)
            .map_err(|e| CliError::Failed(format!("cannot open trace log {t}: {e}")))?;
    }
    let worker = Worker::bind(&a.address, a.config)
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", a.address)))?;
    let bound = worker.local_addr();
    let app: Arc<dyn App> = match &a.app {
        AppSpec::Demo => Arc::new(DemoApp::new(
            a.demo,
            format!("{}:{}", std::process::id(), bound.port()),
        )),
        AppSpec::Upstream(addr) => {
            let sa = resolve(addr)
                .map_err(|e| CliError::Usage(format!("bad upstream address {addr:?}: {e}")))?;
            Arc::new(UpstreamApp::new(sa, a.upstream_timeout))
        }
    };
    worker.run(app).map_err(|e| CliError::Failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_specs() {
        assert_eq!("demo".parse::<AppSpec>(), Ok(AppSpec::Demo));
        for s in [
            "upstream:127.0.0.1:8080",
            "upstream 127.0.0.1:8080",
            "upstream=127.0.0.1:8080",
        ] {
            assert_eq!(
                s.parse::<AppSpec>(),
                Ok(AppSpec::Upstream("127.0.0.1:8080".into()))
            );
        }
        assert!("upstream".parse::<AppSpec>().is_err());
        assert!("wsgi".parse::<AppSpec>().is_err());
    }
}
