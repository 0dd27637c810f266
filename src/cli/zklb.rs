//! `zkresumelb [options] CONN PATH`: the LB with its workers, settings and
//! registration in ZooKeeper.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use getopts::Options;

use super::lb::common_options;
use super::worker::ZK_SESSION_TIMEOUT;
use super::{parse, CliError};
use crate::lb::{Command, Lb, WorkerSpec};
use crate::pool::Settings;
use crate::util::signals::{forward, SignalEvent};
use crate::zk::{registration_addresses, Agent, AgentSpec, Update};

pub const NAME: &str = "zkresumelb";
const SYNOPSIS: &str = "[options] ZOOKEEPER_HOST:PORT[,...] PATH";

pub fn options() -> Options {
    let mut o = Options::new();
    common_options(&mut o);
    o.optflag(
        "v",
        "single-version",
        "serve only the workers of one version at a time (their registered version property)",
    );
    super::standard_options(&mut o);
    o
}

/// A provider's version property as text.
fn version_of(props: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    match props.get("version")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub fn run(args: Vec<String>) -> Result<(), CliError> {
    let opts = options();
    let Some(m) = parse(NAME, SYNOPSIS, &opts, &args)? else {
        return Ok(());
    };
    let [connect, path] = m.free.as_slice() else {
        return Err(CliError::Usage(
            "expected two arguments: the ZooKeeper servers and the LB's path".into(),
        ));
    };
    if !path.starts_with('/') {
        return Err(CliError::Usage(format!("path {path:?} must start with /")));
    }
    let path = path.trim_end_matches('/').to_string();
    let mut cfg = super::lb::common_config(&m)?;
    cfg.single_version = m.opt_present("single-version");
    cfg.handle_signals = false;
    let address = cfg.address.clone();
    let lb = Lb::bind(cfg).map_err(|e| super::listen_error(&address, e))?;
    let handle = lb.handle();
    let data = serde_json::json!({"pid": std::process::id()})
        .to_string()
        .into_bytes();
    let registrations = registration_addresses(lb.local_addr())
        .into_iter()
        .map(|a| (format!("{path}/providers/{a}"), data.clone()))
        .collect();
    let h = handle.clone();
    let agent = Arc::new(
        Agent::start(
            AgentSpec {
                connect: connect.clone(),
                session_timeout: ZK_SESSION_TIMEOUT,
                registrations,
                settings_path: Some(path.clone()),
                providers_path: Some(format!("{path}/workers/providers")),
            },
            move |update| match update {
                Update::Settings(props) => {
                    let (s, errors) = Settings::from_properties(&props, &Settings::default());
                    for e in errors {
                        log::warn!("{e}");
                    }
                    h.send(Command::UpdateSettings(s));
                }
                Update::Providers(providers) => {
                    let specs = providers
                        .iter()
                        .map(|p| WorkerSpec {
                            addr: p.name.clone(),
                            version: version_of(&p.props),
                        })
                        .collect();
                    h.send(Command::SetWorkers(specs));
                }
            },
        )
        .map_err(|e| CliError::Failed(format!("cannot start the ZooKeeper agent: {e}")))?,
    );
    let stopping = AtomicBool::new(false);
    let agent2 = agent.clone();
    let h = handle.clone();
    forward(move |ev| match ev {
        SignalEvent::Reopen => h.send(Command::Reopen),
        SignalEvent::Reload => h.send(Command::Reload),
        SignalEvent::Stop => {
            if stopping.swap(true, Ordering::SeqCst) {
                h.send(Command::StopNow);
            } else {
                agent2.deregister(Duration::from_secs(3));
                h.send(Command::Stop);
            }
        }
    })
    .map_err(|e| CliError::Failed(format!("cannot handle signals: {e}")))?;
    let result = lb.run().map_err(CliError::from_run);
    drop(agent);
    result
}
