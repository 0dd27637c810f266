//! The load balancer (`resumelb`, `zkresumelb`): one mio I/O thread owns
//! the HTTP listener, every client connection, every worker connection and
//! the status socket, split into parts (`clients`, `workers`, `status`)
//! that the loop (`event_loop`) drives; pool decisions are made on that
//! thread. Timeouts, keep-alives and reconnects are deadlines of that loop.
//! See docs/ARCHITECTURE.md.
//!
//! Requests are read whole before they are sent to a worker (bodies over
//! 1 MiB into an unlinked temporary file kept by the spill thread), so that
//! a malformed or slow upload never reaches or holds up a worker; responses
//! are passed on as
//! they arrive, buffered for slow clients in memory up to a cap and then in
//! a temporary file kept by a spill thread (`spill`), so that a slow
//! client never holds up a worker and the I/O thread never waits on disk.

mod access;
mod board;
mod clients;
mod ctx;
pub(crate) mod environ;
mod event_loop;
mod exchange;
mod handover;
pub(crate) mod htpasswd;
pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod outbuf;
mod outliers;
pub(crate) mod reload;
mod report;
mod reqbody;
mod resolver;
mod spill;
pub(crate) mod status;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::classify::Classifier;
use crate::net::{Bound, Control};
use crate::pool::{PoolKind, Settings};
use crate::util::linelog::LineLog;
use crate::util::net::resolve;

/// The page sent with `502 Bad Gateway` when a worker is lost, unless
/// `-e` names another.
pub const DEFAULT_DISCONNECT_PAGE: &str = "<html><head><title>502 Bad Gateway</title></head>\n<body><h1>Bad Gateway</h1>\n<p>The server that was handling your request went away.\nPlease try again.</p></body></html>\n";

/// How an LB runs.
#[derive(Clone)]
pub struct LbConfig {
    pub address: String,
    /// Listen backlog.
    pub backlog: i32,
    /// Most client connections at once; accepting pauses at the limit.
    pub max_connections: usize,
    pub classifier: Classifier,
    pub disconnect_page: Vec<u8>,
    pub settings: Settings,
    pub pool: PoolKind,
    pub single_version: bool,
    /// Limit on every stage of a request.
    pub socket_timeout: Duration,
    pub status_path: Option<PathBuf>,
    pub access_log: LineLog,
    /// Initial worker addresses.
    pub workers: Vec<WorkerSpec>,
    /// More workers, pool settings and the classifier, read at start and
    /// on SIGHUP (`reload`).
    pub workers_file: Option<PathBuf>,
    pub handle_signals: bool,
    pub keepalive: Duration,
    /// A worker silent for this long is taken for dead.
    pub dead_worker_timeout: Duration,
    /// A worker silent for this long with requests in flight is held out
    /// of the pool until it speaks, and its requests that can be sent
    /// again go to other workers (a live worker speaks at least every
    /// second: keep-alives).
    pub silent_worker: Duration,
    pub reconnect_interval: Duration,
    /// Request bodies over this size are buffered in a temporary file.
    pub spill_threshold: usize,
    /// A client's response bytes kept in memory before spilling to a file.
    pub client_mem_cap: usize,
    /// Serve Prometheus metrics, the status document and the pool's page
    /// here.
    pub metrics_address: Option<String>,
    /// Ask for HTTP basic authentication there, with the users of this
    /// htpasswd file.
    pub metrics_auth_file: Option<PathBuf>,
    /// Request classes named in metrics; the rest are `other`.
    pub metrics_max_classes: usize,
    /// Answer workers' challenges under this secret, and refuse workers
    /// that do not challenge.
    pub secret: Option<crate::proto::auth::Secret>,
}

impl Default for LbConfig {
    fn default() -> LbConfig {
        LbConfig {
            address: "127.0.0.1:0".into(),
            backlog: 1024,
            max_connections: 10_000,
            classifier: Classifier::Host,
            disconnect_page: DEFAULT_DISCONNECT_PAGE.as_bytes().to_vec(),
            settings: Settings::default(),
            pool: PoolKind::Resume,
            single_version: false,
            socket_timeout: Duration::from_secs(99),
            status_path: None,
            access_log: LineLog::default(),
            workers: Vec::new(),
            workers_file: None,
            handle_signals: false,
            keepalive: Duration::from_secs(1),
            dead_worker_timeout: Duration::from_secs(10),
            silent_worker: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(1),
            spill_threshold: 1 << 20,
            client_mem_cap: 256 * 1024,
            metrics_address: None,
            metrics_auth_file: None,
            metrics_max_classes: 100,
            secret: None,
        }
    }
}

/// A worker address and, for single-version mode, its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub addr: String,
    pub version: Option<String>,
}

impl WorkerSpec {
    pub fn new(addr: &str) -> WorkerSpec {
        WorkerSpec {
            addr: addr.to_string(),
            version: None,
        }
    }
}

/// Orders for a running LB.
#[derive(Debug, Clone)]
pub enum Command {
    /// Replace the set of worker addresses.
    SetWorkers(Vec<WorkerSpec>),
    UpdateSettings(Settings),
    Stop,
    StopNow,
    /// Reopen the access log.
    Reopen,
    /// Reopen the access log, and read the metrics auth file and the
    /// workers file again.
    Reload,
    /// Send the metrics text.
    Scrape(Sender<String>),
    /// Send the status document with this many busiest request classes.
    Document(usize, Sender<Vec<u8>>),
}

/// Controls a running LB from another thread (ZooKeeper, tests).
#[derive(Clone)]
pub struct LbHandle {
    tx: Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl LbHandle {
    pub fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd);
        let _ = self.waker.wake();
    }
}

/// A bound LB, ready to run.
pub struct Lb {
    bound: Bound,
    config: LbConfig,
    control: Control<Command>,
}

impl Lb {
    /// Bind the HTTP listener with the configured listen backlog.
    /// An LB already listening there hands its listener over (see
    /// `handover`).
    pub fn bind(config: LbConfig) -> std::io::Result<Lb> {
        let bound = match Bound::new(&config.address, config.backlog) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let addr = resolve(&config.address)?;
                match handover::take(addr) {
                    Ok(Some((listener, pid))) => {
                        log::info!(
                            "took over the listener on {addr} from pid {pid}, which finishes its \
                             requests and exits"
                        );
                        Bound::from_listener(listener)?
                    }
                    Ok(None) => return Err(e),
                    Err(he) => {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("{e}; and the LB there did not hand its listener over: {he}"),
                        ))
                    }
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Lb {
            bound,
            config,
            control: Control::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.addr
    }

    pub fn handle(&self) -> LbHandle {
        LbHandle {
            tx: self.control.tx.clone(),
            waker: self.bound.waker.clone(),
        }
    }

    /// Serve until stopped.
    pub fn run(mut self) -> std::io::Result<()> {
        if self.config.handle_signals {
            self.control.handle_signals(&self.bound.waker)?;
        }
        log::info!("listening on {}", self.bound.addr);
        let auth = match &self.config.metrics_auth_file {
            Some(path) => {
                Some(Arc::new(htpasswd::AuthFile::load(path).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
                })?))
            }
            None => None,
        };
        if let Some(addr) = &self.config.metrics_address {
            let handle = self.handle();
            let sa = resolve(addr).map_err(|e| {
                std::io::Error::new(e.kind(), format!("bad --metrics-address {addr:?}: {e}"))
            })?;
            let ask = move |want| {
                handle.send(match want {
                    observe::Want::Metrics(tx) => Command::Scrape(tx),
                    observe::Want::Document(n, tx) => Command::Document(n, tx),
                })
            };
            let bound = observe::serve(sa, auth.clone(), ask).map_err(|e| {
                std::io::Error::new(e.kind(), format!("metrics address {addr}: {e}"))
            })?;
            log::info!("metrics on http://{bound}/metrics");
            log::info!("pool page on http://{bound}/");
        }
        let lp = event_loop::Loop::new(self.bound, self.config, self.control, auth)?;
        lp.run()
    }
}
