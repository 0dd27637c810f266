//! The worker (`resumelb-worker`): serves LB connections with an
//! application on a fixed pool of app threads, measures per-class speed and
//! sends its résumé to every LB (docs/ARCHITECTURE.md).
//!
//! Threads: one I/O thread (`io`), `threads` app threads (`threads`), a
//! thread that writes large request bodies to disk (`bodies`), a timer
//! thread that owns the résumé tracker (`timer`), and, when asked to, a
//! signal thread.

pub mod app;
mod bodies;
pub mod demo;
mod health;
mod io;
mod shared;
mod sink;
mod threads;
mod timer;
pub mod upstream;
pub mod validate;
pub mod wsgi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

pub use crate::tracelog::Trace;
pub use crate::util::spill::BodyReader;
pub use app::{App, AppError, Body, Request, Response};
pub use sink::Sink;

use crate::net::{Bound, Control};
use crate::proto::auth::Secret;
use crate::proto::{encode_hello, Hello, DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use crate::resume::{load_file_or_empty, ResumeSettings, Tracker};
use crate::tracelog::TraceLog;
use crate::util::allow::AllowList;
use shared::{Shared, TimerMsg};

/// How a worker runs.
#[derive(Clone)]
pub struct WorkerConfig {
    /// App threads.
    pub threads: usize,
    pub resume: ResumeSettings,
    /// Saved on every publish, read at start-up.
    pub resume_file: Option<PathBuf>,
    pub tracelog: TraceLog,
    /// Request bodies above this many bytes go to a temporary file.
    pub spill_threshold: usize,
    pub max_frame: usize,
    /// Keep-alive interval towards the LBs.
    pub keepalive: Duration,
    /// How long a graceful shutdown may wait for requests in flight.
    pub shutdown_timeout: Duration,
    /// Handle SIGTERM/SIGINT (graceful stop) and SIGUSR2 (reopen logs).
    pub handle_signals: bool,
    /// Sent to LBs in the hello (and registered in ZooKeeper).
    pub version: Option<String>,
    /// LBs must answer a challenge under this secret before anything else.
    pub secret: Option<Secret>,
    /// Peers that may connect (`None`: any).
    pub allow: Option<AllowList>,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            threads: 1,
            resume: ResumeSettings::default(),
            resume_file: None,
            tracelog: TraceLog::disabled(),
            spill_threshold: 1 << 20,
            max_frame: DEFAULT_MAX_FRAME,
            keepalive: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(99),
            handle_signals: false,
            version: None,
            secret: None,
            allow: None,
        }
    }
}

/// Orders for a running worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Graceful stop: drain, finish requests in flight, return.
    Stop,
    /// Return at once.
    StopNow,
    /// Reopen the trace log.
    Reopen,
    /// Peers that may connect from now on (`None`: any); connections from
    /// others are closed.
    Allow(Option<AllowList>),
}

/// Controls a running worker from another thread.
#[derive(Clone)]
pub struct WorkerHandle {
    cmd: Sender<Command>,
    timer: Sender<TimerMsg>,
    waker: Arc<mio::Waker>,
}

impl WorkerHandle {
    pub fn stop(&self) {
        let _ = self.cmd.send(Command::Stop);
        let _ = self.waker.wake();
    }

    pub fn reopen_logs(&self) {
        let _ = self.cmd.send(Command::Reopen);
        let _ = self.waker.wake();
    }

    pub fn stop_now(&self) {
        let _ = self.cmd.send(Command::StopNow);
        let _ = self.waker.wake();
    }

    /// Change which peers may connect.
    pub fn update_allow(&self, allow: Option<AllowList>) {
        let _ = self.cmd.send(Command::Allow(allow));
        let _ = self.waker.wake();
    }

    /// Apply new résumé settings at once.
    pub fn update_resume_settings(&self, settings: ResumeSettings) {
        let _ = self.timer.send(TimerMsg::Settings(settings));
    }
}

/// A bound worker, ready to run.
pub struct Worker {
    bound: Bound,
    config: WorkerConfig,
    control: Control<Command>,
    timer: (Sender<TimerMsg>, Receiver<TimerMsg>),
}

pub(crate) use crate::util::net::resolve;

impl Worker {
    /// Bind the listening socket.
    pub fn bind(addr: &str, config: WorkerConfig) -> std::io::Result<Worker> {
        Ok(Worker {
            bound: Bound::new(addr, 1024)?,
            config,
            control: Control::new(),
            timer: bounded(65_536),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.addr
    }

    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            cmd: self.control.tx.clone(),
            timer: self.timer.0.clone(),
            waker: self.bound.waker.clone(),
        }
    }

    /// Serve until stopped.
    pub fn run(self, app: Arc<dyn App>) -> std::io::Result<()> {
        let Worker {
            bound,
            config,
            mut control,
            timer,
        } = self;
        let Bound {
            poll,
            waker,
            listener,
            addr,
        } = bound;
        let threads = config.threads.max(1);
        let trace = config.tracelog.clone();
        trace.record('S', 0, format_args!("{addr}"));

        let mut tracker = Tracker::new(config.resume);
        if let Some(path) = &config.resume_file {
            tracker.seed(&load_file_or_empty(path));
        }
        let resume = tracker.resume();

        let (ctl_tx, ctl_rx) = unbounded();
        let (out_tx, out_rx) = unbounded();
        let (jobs_tx, jobs_rx) = unbounded();
        let wake_pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shared = Arc::new(Shared {
            out: out_tx,
            waker: waker.clone(),
            timer: timer.0.clone(),
            wake_pending: wake_pending.clone(),
        });
        let app_forwarding = app.forwarding();
        let _health_thread = health::spawn(app.clone(), ctl_tx.clone(), waker.clone())?;
        let _timer_thread = timer::spawn(
            tracker,
            timer.1,
            ctl_tx,
            waker.clone(),
            config.resume_file.clone(),
        )?;
        // Kept to ask for a last save at shutdown.
        let timer_tx = timer.0;
        let bodies = bodies::BodyIo::start(jobs_tx.clone(), shared.clone())?;
        let _app_threads = threads::spawn(threads, app, jobs_rx, shared)?;
        if config.handle_signals {
            control.handle_signals(&waker)?;
        }
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            threads: Some(threads as u32),
            pid: Some(std::process::id()),
            version: config.version.clone(),
            failed: Default::default(),
        };
        encode_hello(&mut Vec::new(), &hello).map_err(std::io::Error::other)?;
        let proxy = match app_forwarding {
            Some(to) => {
                log::info!(
                    "forwarding to {} from the I/O thread, at most {threads} connection(s)",
                    to.addr
                );
                let registry = poll.registry().try_clone()?;
                Some(io::Proxy::new(to, registry, threads, timer_tx.clone()))
            }
            None => None,
        };
        let io = io::IoLoop::new(
            poll,
            listener,
            io::IoConfig {
                max_frame: config.max_frame,
                spill_threshold: config.spill_threshold,
                keepalive: config.keepalive,
                shutdown_timeout: config.shutdown_timeout,
                max_queued: threads * 64 + 1024,
                secret: config.secret.clone(),
                allow: config.allow.clone(),
            },
            jobs_tx,
            proxy,
            bodies,
            io::Inputs {
                out: out_rx,
                ctl: ctl_rx,
                control,
                wake_pending,
            },
            trace.clone(),
            &resume,
            hello,
        )?;
        if let Some(allow) = &config.allow {
            log::info!("connections allowed from {allow}");
        }
        if config.secret.is_some() {
            log::info!("LBs must answer a challenge under the shared secret");
        }
        log::info!("worker listening on {addr} with {threads} app thread(s)");
        let result = io.run();
        let (saved_tx, saved_rx) = bounded(1);
        if timer_tx.send(TimerMsg::Save(saved_tx)).is_ok() {
            let _ = saved_rx.recv_timeout(Duration::from_secs(5));
        }
        trace.record('X', 0, "");
        trace.flush();
        result
    }
}
