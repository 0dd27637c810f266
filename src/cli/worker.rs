//! `resumelb-worker`: command line → [`WorkerConfig`] and app, then run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use getopts::Options;

use super::{init_logging, parse, seconds, value, CliError};
use crate::resume::ResumeSettings;
use crate::tracelog::TraceLog;
use crate::util::allow::AllowList;
use crate::util::signals::{forward, SignalEvent};
use crate::worker::demo::{DemoApp, DemoConfig};
use crate::worker::upstream::UpstreamApp;
use crate::worker::wsgi::{self, WsgiSpec};
use crate::worker::{resolve, App, Worker, WorkerConfig};
use crate::zk::{registration_addresses, Agent, AgentSpec, Update};

/// ZooKeeper session timeout of workers and LBs.
pub const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

pub const NAME: &str = "resumelb-worker";
const SYNOPSIS: &str = "-a HOST:PORT --app demo|upstream:HOST:PORT|wsgi:MODULE[:CALLABLE]|paste:FILE.ini[#NAME] [options]\n       resumelb-worker -a HOST:PORT --app APP --zookeeper CONN --path PATH [options]";

/// Which application to run.
#[derive(Debug, Clone, PartialEq)]
pub enum AppSpec {
    Demo,
    Upstream(String),
    /// `wsgi:MODULE[:CALLABLE]` or `paste:FILE.ini[#NAME]`.
    Wsgi(WsgiSpec),
}

impl std::str::FromStr for AppSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<AppSpec, String> {
        let s = s.trim();
        if s == "demo" {
            return Ok(AppSpec::Demo);
        }
        if let Some(m) = s.strip_prefix("wsgi:") {
            return WsgiSpec::module(m).map(AppSpec::Wsgi);
        }
        if let Some(f) = s.strip_prefix("paste:") {
            return WsgiSpec::paste(f).map(AppSpec::Wsgi);
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
            "unknown app {s:?} (expected demo, upstream:HOST:PORT, wsgi:MODULE[:CALLABLE] or paste:FILE.ini[#NAME])"
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
        &format!(
            "the application (required): demo; upstream:HOST:PORT to forward to an HTTP server; wsgi:MODULE[:CALLABLE] or paste:FILE.ini[#NAME] for a WSGI application run in the worker ({})",
            if wsgi::BUILT_IN {
                "built in"
            } else {
                "not built in: this build has no Python"
            }
        ),
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
        "log level: error, warn, info (default), debug, trace, off, or a number 0-5 or 10-50",
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
    o.optmulti(
        "",
        "python-path",
        "WSGI app: a directory put first on sys.path (repeatable)",
        "DIR",
    );
    o.optopt(
        "",
        "shutdown-timeout",
        "seconds a graceful shutdown waits for requests in flight (default 99)",
        "SECONDS",
    );
    o.optopt(
        "",
        "allow",
        "accept LB connections only from these addresses or networks (default: any)",
        "ADDR[/PREFIX][,...]",
    );
    o.optopt(
        "",
        "secret-file",
        "challenge every LB: only those with the shared secret in PATH are served",
        "PATH",
    );
    o.optopt(
        "",
        "zookeeper",
        "register in ZooKeeper at these servers and read settings there",
        "HOST:PORT[,...]",
    );
    o.optopt("", "path", "ZooKeeper node of the worker tree: settings in its properties, registration under PATH/providers", "PATH");
    o.optopt(
        "",
        "description",
        "ZooKeeper: description to register",
        "TEXT",
    );
    o.optflag("h", "help", "print this help and exit");
    o.optflagopt("V", "version", "print the version and exit; with a value (--version V), the version to register in ZooKeeper", "V");
    o
}

/// Everything `resumelb-worker` was asked to do.
pub struct WorkerArgs {
    pub address: String,
    pub app: AppSpec,
    pub config: WorkerConfig,
    pub demo: DemoConfig,
    pub upstream_timeout: Duration,
    /// `--python-path`, in order.
    pub python_path: Vec<PathBuf>,
    pub tracelog: Option<String>,
    pub zookeeper: Option<ZkArgs>,
}

/// `--zookeeper`, `--path`, `--description`, `--version V`.
pub struct ZkArgs {
    pub connect: String,
    pub path: String,
    pub description: Option<String>,
}

/// `--version V` (a worker version for ZooKeeper) as getopts reads an
/// optional value: `--version=V`. A bare `--version` still prints ours.
fn join_version_value(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if a == "--version" {
            if let Some(v) = it.next_if(|v| !v.starts_with('-')) {
                out.push(format!("--version={v}"));
                continue;
            }
        }
        out.push(a.clone());
    }
    out
}

pub fn parse_args(args: &[String]) -> Result<Option<WorkerArgs>, CliError> {
    let opts = options();
    let args = join_version_value(args);
    let Some(m) = parse(NAME, SYNOPSIS, &opts, &args)? else {
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
                "an application is required: --app demo, upstream:HOST:PORT, wsgi:MODULE[:CALLABLE] or paste:FILE.ini[#NAME]".into(),
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
        version: m.opt_str("version"),
        secret: super::secret_file(&m)?,
        allow: match m.opt_str("allow") {
            None => None,
            Some(a) => Some(
                a.parse::<AllowList>()
                    .map_err(|e| CliError::Usage(format!("bad --allow {a:?}: {e}")))?,
            ),
        },
        ..WorkerConfig::default()
    };
    let zookeeper = match (m.opt_str("zookeeper"), m.opt_str("path")) {
        (Some(connect), Some(path)) => {
            if !path.starts_with('/') {
                return Err(CliError::Usage(format!(
                    "--path {path:?} must start with /"
                )));
            }
            Some(ZkArgs {
                connect,
                path: path.trim_end_matches('/').to_string(),
                description: m.opt_str("description"),
            })
        }
        (None, None) => None,
        _ => return Err(CliError::Usage("--zookeeper and --path go together".into())),
    };
    Ok(Some(WorkerArgs {
        address,
        app,
        config,
        demo,
        upstream_timeout: seconds(&m, "upstream-timeout", 99.0)?,
        python_path: m
            .opt_strs("python-path")
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        tracelog: m.opt_str("tracelog"),
        zookeeper,
    }))
}

pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let Some(mut a) = parse_args(&args)? else {
        return Ok(());
    };
    if let Some(path) = &a.config.resume_file {
        check_writable(path)?;
    }
    if let Some(t) = &a.tracelog {
        a.config.tracelog = TraceLog::open(t)
            .map_err(|e| CliError::Failed(format!("cannot open trace log {t}: {e}")))?;
    }
    // A WSGI application is loaded before anything listens: one that
    // cannot be imported stops the worker here.
    let wsgi = match &a.app {
        AppSpec::Wsgi(spec) => Some(load_wsgi(spec, &a.python_path)?),
        _ => None,
    };
    if a.zookeeper.is_some() {
        // Signals go through the ZooKeeper agent (deregister first).
        a.config.handle_signals = false;
    }
    let worker = Worker::bind(&a.address, a.config.clone())
        .map_err(|e| super::listen_error(&a.address, e))?;
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
        AppSpec::Wsgi(_) => wsgi.ok_or_else(|| CliError::Failed("no WSGI application".into()))?,
    };
    let _agent = match &a.zookeeper {
        Some(z) => Some(start_zookeeper(z, &worker, &a.config)?),
        None => None,
    };
    worker.run(app).map_err(|e| CliError::Failed(e.to_string()))
}

#[cfg(feature = "wsgi")]
fn load_wsgi(spec: &WsgiSpec, python_path: &[PathBuf]) -> Result<Arc<dyn App>, CliError> {
    let app = wsgi::WsgiApp::load(spec, python_path).map_err(CliError::Config)?;
    log::info!(
        "WSGI application {spec} loaded (Python {})",
        wsgi::WsgiApp::python_version()
    );
    Ok(Arc::new(app))
}

#[cfg(not(feature = "wsgi"))]
fn load_wsgi(spec: &WsgiSpec, _python_path: &[PathBuf]) -> Result<Arc<dyn App>, CliError> {
    Err(CliError::Config(format!(
        "--app {spec}: this resumelb-worker was built without WSGI support (cargo feature wsgi, which needs Python's headers: make deps, then make)"
    )))
}

/// The résumé file is written by a temporary file and a rename in its
/// directory: make sure that works now, not at the first publish.
fn check_writable(path: &std::path::Path) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = dir.join(format!(".resumelb-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            CliError::Config(format!(
                "cannot write the résumé file {} (in {}): {e}",
                path.display(),
                dir.display()
            ))
        })
}

/// Register in ZooKeeper, follow the settings there, and leave ZooKeeper
/// first when told to stop.
fn start_zookeeper(
    z: &ZkArgs,
    worker: &Worker,
    config: &WorkerConfig,
) -> Result<Arc<Agent>, CliError> {
    let mut data = serde_json::Map::new();
    data.insert("pid".into(), std::process::id().into());
    if let Some(d) = &z.description {
        data.insert("description".into(), d.clone().into());
    }
    if let Some(v) = &config.version {
        data.insert("version".into(), v.clone().into());
    }
    let data = serde_json::Value::Object(data).to_string().into_bytes();
    let registrations = registration_addresses(worker.local_addr())
        .into_iter()
        .map(|a| (format!("{}/providers/{a}", z.path), data.clone()))
        .collect();
    let handle = worker.handle();
    let defaults = config.resume;
    let allow_default = config.allow.clone();
    // Only a change is applied (and logged); settings updates come often.
    let allow_now = parking_lot::Mutex::new(config.allow.clone());
    let settings_handle = handle.clone();
    let agent = Arc::new(
        Agent::start(
            AgentSpec {
                connect: z.connect.clone(),
                session_timeout: ZK_SESSION_TIMEOUT,
                registrations,
                settings_path: Some(z.path.clone()),
                providers_path: None,
            },
            move |update| {
                if let Update::Settings(props) = update {
                    let (s, errors) = ResumeSettings::from_properties(&props, &defaults);
                    for e in errors {
                        log::warn!("{e}");
                    }
                    settings_handle.update_resume_settings(s);
                    let allow = allow_property(&props, &allow_default);
                    let mut now = allow_now.lock();
                    if allow != *now {
                        settings_handle.update_allow(allow.clone());
                        *now = allow;
                    }
                }
            },
        )
        .map_err(|e| CliError::Failed(format!("cannot start the ZooKeeper agent: {e}")))?,
    );
    let stopping = std::sync::atomic::AtomicBool::new(false);
    let agent2 = agent.clone();
    forward(move |ev| match ev {
        SignalEvent::Reopen | SignalEvent::Reload => handle.reopen_logs(),
        SignalEvent::Stop => {
            if stopping.swap(true, std::sync::atomic::Ordering::SeqCst) {
                handle.stop_now();
            } else {
                agent2.deregister(Duration::from_secs(3));
                handle.stop();
            }
        }
    })
    .map_err(|e| CliError::Failed(format!("cannot handle signals: {e}")))?;
    Ok(agent)
}

/// The `allow` property (a string `"ADDR[/PREFIX],…"` or a list of such
/// strings) over the command line's `--allow`; absent or unusable (logged)
/// means the command line's.
fn allow_property(
    props: &serde_json::Map<String, serde_json::Value>,
    default: &Option<AllowList>,
) -> Option<AllowList> {
    let text = match props.get("allow") {
        None | Some(serde_json::Value::Null) => return default.clone(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(items)) => {
            let texts: Option<Vec<&str>> = items.iter().map(|v| v.as_str()).collect();
            match texts {
                Some(t) => t.join(","),
                None => {
                    log::warn!("property allow: a list must hold strings; using --allow");
                    return default.clone();
                }
            }
        }
        Some(other) => {
            log::warn!("property allow: {other} is not a string or list; using --allow");
            return default.clone();
        }
    };
    match text.parse() {
        Ok(a) => Some(a),
        Err(e) => {
            log::warn!("property allow {text:?}: {e}; using --allow");
            default.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_property_over_the_command_line() {
        let cli: Option<AllowList> = Some("10.0.0.0/8".parse().unwrap());
        let props = |j: serde_json::Value| j.as_object().unwrap().clone();
        let p = |j| allow_property(&props(j), &cli).map(|a| a.to_string());
        assert_eq!(p(serde_json::json!({})), Some("10.0.0.0/8".into()));
        assert_eq!(
            p(serde_json::json!({"allow": "127.0.0.1"})),
            Some("127.0.0.1/32".into())
        );
        assert_eq!(
            p(serde_json::json!({"allow": ["127.0.0.1", "::1"]})),
            Some("127.0.0.1/32,::1/128".into())
        );
        assert_eq!(
            p(serde_json::json!({"allow": "nonsense"})),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            p(serde_json::json!({"allow": 3})),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(allow_property(&props(serde_json::json!({})), &None), None);
    }

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
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            join_version_value(&a(&["--version", "7", "-L", "info"])),
            a(&["--version=7", "-L", "info"])
        );
        assert_eq!(join_version_value(&a(&["--version"])), a(&["--version"]));
        assert_eq!(
            join_version_value(&a(&["--version", "--threads", "2"])),
            a(&["--version", "--threads", "2"])
        );
        assert!("wsgi".parse::<AppSpec>().is_err());
    }
}
