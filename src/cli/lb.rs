//! `resumelb [options] HOST:PORT…`: command line → [`LbConfig`], then run.

use getopts::{Matches, Options};

use super::{init_logging, parse, seconds, standard_options, value, CliError};
use crate::classify::Classifier;
use crate::lb::{Lb, LbConfig, WorkerSpec, DEFAULT_DISCONNECT_PAGE};
use crate::pool::{PoolKind, Settings};
use crate::util::linelog::LineLog;

pub const NAME: &str = "resumelb";
const SYNOPSIS: &str = "[options] WORKER_HOST:PORT... (or --workers-file PATH)";

/// Options both LBs share (`zkresumelb` adds its own).
pub fn common_options(o: &mut Options) {
    o.optopt(
        "a",
        "address",
        "address to accept HTTP requests on (default :8080)",
        "HOST:PORT",
    );
    o.optopt(
        "l",
        "access-log",
        "write an access log to PATH, or - for stderr",
        "PATH|-",
    );
    o.optopt("b", "backlog", "listen backlog (default 1024)", "N");
    o.optopt(
        "m",
        "max-connections",
        "most client connections at once; accepting pauses there (default 10000)",
        "N",
    );
    o.optopt(
        "L",
        "logger-configuration",
        "log level: error, warn, info (default), debug, trace, off, or a number 0-5 or 10-50",
        "LEVEL",
    );
    o.optopt("r", "request-classifier", "how to find a request's class: host, or re:NAME:REGEX with a (?P<class>...) group (default host)", "SPEC");
    o.optopt(
        "e",
        "disconnect-message",
        "HTML page sent with 502 when a worker is lost mid-request",
        "PATH",
    );
    o.optopt(
        "t",
        "socket-timeout",
        "seconds any stage of a request may take (default 99)",
        "SECONDS",
    );
    o.optopt(
        "s",
        "status-server",
        "serve the status document on this Unix socket",
        "PATH",
    );
    o.optopt(
        "p",
        "pool",
        "resume (default: the résumé pool, bounded by capacity and aware of latency), \
         classic (the original's résumé pool) or classless",
        "POOL",
    );
    o.optopt(
        "",
        "metrics-address",
        "serve the pool's page at http://HOST:PORT/, the status document at /status.json \
         and Prometheus metrics at /metrics",
        "HOST:PORT",
    );
    o.optopt(
        "",
        "metrics-auth-file",
        "ask for HTTP basic authentication on the metrics address, with the users of this \
         htpasswd file (bcrypt or SHA-crypt hashes; read again on SIGHUP)",
        "PATH",
    );
    o.optopt(
        "",
        "metrics-max-classes",
        "request classes named in metrics, the rest as other (default 100)",
        "N",
    );
    o.optopt(
        "",
        "secret-file",
        "answer workers' challenges with the shared secret in PATH; refuse workers without one",
        "PATH",
    );
}

pub fn options() -> Options {
    let mut o = Options::new();
    common_options(&mut o);
    o.optopt(
        "",
        "workers-file",
        "more worker addresses (one HOST:PORT a line) and NAME = VALUE pool settings, read \
         at start and again on SIGHUP",
        "PATH",
    );
    o.optopt(
        "v",
        "variance",
        "how far a worker's backlog may exceed the mean before it is passed over (default 4.0)",
        "X",
    );
    o.optopt(
        "",
        "backlog-history",
        "requests over which backlogs are averaged (default 9)",
        "N",
    );
    o.optopt(
        "",
        "unskilled-score",
        "score given to a worker for a class it has no résumé entry for (default 1.0)",
        "X",
    );
    o.optopt(
        "",
        "slow-factor",
        "résumé pool: a worker this many times slower than another at a class gets no more \
         of its requests while others can take them (default 4)",
        "X",
    );
    o.optopt(
        "",
        "spill-factor",
        "résumé pool: a request waiting for its class's workers goes to another after this \
         many times the cost of a cold request (default 2)",
        "X",
    );
    o.optopt(
        "",
        "max-depth",
        "résumé pool: most requests in flight per worker thread (default 32)",
        "N",
    );
    o.optopt(
        "",
        "eject-after",
        "gateway failures (502, 503, 504, aborted responses) in a row that take a worker out \
         of the pool for a while; 0: never (default 5)",
        "N",
    );
    standard_options(&mut o);
    o
}

/// The common options into a config (workers and pool settings aside).
pub fn common_config(m: &Matches) -> Result<LbConfig, CliError> {
    init_logging(m, "logger-configuration")?;
    let classifier: Classifier = m
        .opt_str("request-classifier")
        .unwrap_or_else(|| "host".into())
        .parse()
        .map_err(|e: crate::classify::ClassifierError| CliError::Usage(e.to_string()))?;
    if let Some(warning) = classifier.never_matches() {
        log::warn!("{warning}");
    }
    let disconnect_page = match m.opt_str("disconnect-message") {
        None => DEFAULT_DISCONNECT_PAGE.as_bytes().to_vec(),
        Some(p) => std::fs::read(&p)
            .map_err(|e| CliError::Failed(format!("cannot read disconnect message {p}: {e}")))?,
    };
    let access_log = match m.opt_str("access-log") {
        None => LineLog::default(),
        Some(p) => LineLog::open(&p, "access-log")
            .map_err(|e| CliError::Failed(format!("cannot open access log {p}: {e}")))?,
    };
    let pool: PoolKind = value(m, "pool", PoolKind::Resume)?;
    let backlog: i32 = value(m, "backlog", 1024)?;
    if backlog < 1 {
        return Err(CliError::Usage("--backlog must be at least 1".into()));
    }
    let max_connections: usize = value(m, "max-connections", 10_000)?;
    if max_connections < 1 {
        return Err(CliError::Usage(
            "--max-connections must be at least 1".into(),
        ));
    }
    if m.opt_present("metrics-auth-file") && !m.opt_present("metrics-address") {
        return Err(CliError::Usage(
            "--metrics-auth-file needs --metrics-address".into(),
        ));
    }
    Ok(LbConfig {
        address: m.opt_str("address").unwrap_or_else(|| ":8080".into()),
        backlog,
        max_connections,
        classifier,
        disconnect_page,
        pool,
        socket_timeout: seconds(m, "socket-timeout", 99.0)?,
        status_path: m.opt_str("status-server").map(Into::into),
        access_log,
        handle_signals: true,
        metrics_address: m.opt_str("metrics-address"),
        metrics_auth_file: m.opt_str("metrics-auth-file").map(Into::into),
        metrics_max_classes: value(m, "metrics-max-classes", 100)?,
        secret: super::secret_file(m)?,
        ..LbConfig::default()
    })
}

pub fn parse_args(args: &[String]) -> Result<Option<LbConfig>, CliError> {
    let opts = options();
    let Some(m) = parse(NAME, SYNOPSIS, &opts, args)? else {
        return Ok(None);
    };
    let workers_file = m.opt_str("workers-file").map(std::path::PathBuf::from);
    if let Some(p) = &workers_file {
        crate::lb::reload::read(p).map_err(CliError::Usage)?;
    } else if m.free.is_empty() {
        return Err(CliError::Usage("no worker address given".into()));
    }
    let mut cfg = common_config(&m)?;
    let d = Settings::default();
    let settings = Settings {
        variance: value(&m, "variance", 4.0)?,
        backlog_history: value(&m, "backlog-history", 9)?,
        unskilled_score: value(&m, "unskilled-score", 1.0)?,
        slow_factor: value(&m, "slow-factor", d.slow_factor)?,
        spill_factor: value(&m, "spill-factor", d.spill_factor)?,
        max_depth: value(&m, "max-depth", d.max_depth)?,
        eject_after: value(&m, "eject-after", 5)?,
    };
    if !(settings.slow_factor > 1.0 && settings.slow_factor.is_finite()) {
        return Err(CliError::Usage("--slow-factor must be above 1".into()));
    }
    if !(settings.spill_factor >= 0.0 && settings.spill_factor.is_finite()) {
        return Err(CliError::Usage("--spill-factor must be at least 0".into()));
    }
    if !(2..=1024).contains(&settings.max_depth) {
        return Err(CliError::Usage("--max-depth must be from 2 to 1024".into()));
    }
    if !(settings.variance > 0.0 && settings.variance.is_finite()) {
        return Err(CliError::Usage("--variance must be above 0".into()));
    }
    if settings.backlog_history < 1 {
        return Err(CliError::Usage(
            "--backlog-history must be at least 1".into(),
        ));
    }
    if !(settings.unskilled_score >= 0.0 && settings.unskilled_score.is_finite()) {
        return Err(CliError::Usage(
            "--unskilled-score must be at least 0".into(),
        ));
    }
    for w in &m.free {
        crate::worker::resolve(w)
            .map_err(|e| CliError::Usage(format!("bad worker address {w:?}: {e}")))?;
    }
    cfg.settings = settings;
    cfg.workers = m.free.iter().map(|w| WorkerSpec::new(w)).collect();
    cfg.workers_file = workers_file;
    Ok(Some(cfg))
}

pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let Some(cfg) = parse_args(&args)? else {
        return Ok(());
    };
    let address = cfg.address.clone();
    let lb = Lb::bind(cfg).map_err(|e| super::listen_error(&address, e))?;
    lb.run().map_err(CliError::from_run)
}
