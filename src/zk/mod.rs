//! ZooKeeper: registration of ephemeral provider nodes, watched settings
//! and watched membership, wrapped in one module so that the client can be
//! replaced. The `zookeeper` crate (0.8) runs its own threads and does not
//! recover from an expired session, so an [`Agent`] thread rebuilds the
//! client, registers again and re-reads everything when that happens. While
//! ZooKeeper is away the processes keep serving with what they know.

pub mod props;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use serde_json::{Map, Value};
use zookeeper::{Acl, CreateMode, KeeperState, WatchedEvent, ZkError, ZkState, ZooKeeper};

/// What the agent keeps and watches.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// `host:port[,host:port…]`.
    pub connect: String,
    pub session_timeout: Duration,
    /// Ephemeral nodes to keep registered: (path, data).
    pub registrations: Vec<(String, Vec<u8>)>,
    /// A node whose properties are the settings.
    pub settings_path: Option<String>,
    /// A node whose children are the providers (links followed).
    pub providers_path: Option<String>,
}

/// One provider node: its name (`host:port`) and properties.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    pub props: Map<String, Value>,
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Settings(Map<String, Value>),
    Providers(Vec<Provider>),
}

enum Ev {
    /// Connected (again).
    Up,
    /// Connection lost; the client tries to get it back within the session.
    Down,
    /// Session over (expired, closed, refused).
    Gone,
    Changed,
}

enum Cmd {
    Deregister(Sender<()>),
}

/// The ZooKeeper agent of a process; dropping it leaves the thread running
/// until the process ends.
pub struct Agent {
    tx: Sender<Cmd>,
}

impl Agent {
    /// Start the agent thread; `on_update` is called from it.
    pub fn start(
        spec: AgentSpec,
        on_update: impl Fn(Update) + Send + 'static,
    ) -> std::io::Result<Agent> {
        let (tx, rx) = unbounded();
        std::thread::Builder::new()
            .name("zookeeper".into())
            .spawn(move || run(spec, rx, on_update))?;
        Ok(Agent { tx })
    }

    /// Delete the registrations and close the session, waiting at most
    /// `timeout` (ZooKeeper may be away).
    pub fn deregister(&self, timeout: Duration) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Cmd::Deregister(ack_tx)).is_ok() && ack_rx.recv_timeout(timeout).is_err() {
            log::warn!("could not deregister from ZooKeeper in time");
        }
    }
}

fn watcher(tx: &Sender<Ev>) -> impl Fn(WatchedEvent) + Send + 'static {
    let tx = tx.clone();
    move |_: WatchedEvent| {
        let _ = tx.send(Ev::Changed);
    }
}

/// Create `path`'s missing ancestors as empty persistent nodes.
fn ensure_parents(zk: &ZooKeeper, path: &str) -> Result<(), ZkError> {
    let mut cur = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for p in &parts[..parts.len().saturating_sub(1)] {
        cur.push('/');
        cur.push_str(p);
        match zk.create(
            &cur,
            Vec::new(),
            Acl::open_unsafe().clone(),
            CreateMode::Persistent,
        ) {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn register(zk: &ZooKeeper, regs: &[(String, Vec<u8>)]) -> Result<(), ZkError> {
    for (path, data) in regs {
        ensure_parents(zk, path)?;
        // A node left by our previous session would vanish when that
        // session expires: replace it with one of this session.
        match zk.delete(path, None) {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
        zk.create(
            path,
            data.clone(),
            Acl::open_unsafe().clone(),
            CreateMode::Ephemeral,
        )?;
        log::info!("registered {path} in ZooKeeper");
    }
    Ok(())
}

fn read_props(
    zk: &ZooKeeper,
    path: &str,
    watch: Option<&Sender<Ev>>,
) -> Result<Option<Map<String, Value>>, ZkError> {
    let r = match watch {
        Some(tx) => zk.get_data_w(path, watcher(tx)),
        None => zk.get_data(path, false),
    };
    match r {
        Ok((data, _)) => Ok(Some(props::parse(path, &data))),
        Err(ZkError::NoNode) => {
            if let Some(tx) = watch {
                // Watch for it to appear.
                let _ = zk.exists_w(path, watcher(tx));
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn read_providers(zk: &ZooKeeper, path: &str, tx: &Sender<Ev>) -> Result<Vec<Provider>, ZkError> {
    let resolved = props::resolve(path, |p| read_props(zk, p, Some(tx)).ok().flatten());
    let mut names = match zk.get_children_w(&resolved, watcher(tx)) {
        Ok(c) => c,
        Err(ZkError::NoNode) => {
            let _ = zk.exists_w(&resolved, watcher(tx));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let child = format!("{}/{name}", resolved.trim_end_matches('/'));
        // A provider that vanished between the listing and now is skipped.
        if let Some(p) = read_props(zk, &child, Some(tx))? {
            out.push(Provider { name, props: p });
        }
    }
    Ok(out)
}

/// Longest wait for a session (its first request) and for one round of
/// operations: the `zookeeper` crate can wait forever on a server that went
/// away at the wrong moment, so a client that does not answer in time is
/// abandoned and a new one made.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `f` on its own thread; `None` if it takes longer than `OP_TIMEOUT`.
fn timed<T: Send + 'static>(
    zk: &Arc<ZooKeeper>,
    f: impl FnOnce(&ZooKeeper) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let zk = zk.clone();
    std::thread::Builder::new()
        .name("zookeeper-op".into())
        .spawn(move || {
            let _ = tx.send(f(&zk));
        })
        .ok()?;
    rx.recv_timeout(OP_TIMEOUT).ok()
}

/// Close a client without waiting for it (closing can block forever).
fn abandon(zk: Arc<ZooKeeper>) {
    let _ = std::thread::Builder::new()
        .name("zookeeper-close".into())
        .spawn(move || drop(zk));
}

type Snapshot = (Option<Map<String, Value>>, Option<Vec<Provider>>);

fn read_all(zk: &ZooKeeper, spec: &AgentSpec, tx: &Sender<Ev>) -> Result<Snapshot, ZkError> {
    let settings = match &spec.settings_path {
        Some(p) => Some(read_props(zk, p, Some(tx))?.unwrap_or_default()),
        None => None,
    };
    let providers = match &spec.providers_path {
        Some(p) => Some(read_providers(zk, p, tx)?),
        None => None,
    };
    Ok((settings, providers))
}

enum SessionEnd {
    /// Deregistered on request: the agent is done.
    Done,
    /// Expired, lost or stuck: make a new client.
    Retry,
}

/// Failed tries to reach ZooKeeper, for one line when it is lost and one
/// every [`AWAY_LOG_INTERVAL`] while it stays away.
#[derive(Default)]
struct Away {
    tries: u32,
    last_line: Option<Instant>,
}

/// While ZooKeeper stays away: one line this often at most.
const AWAY_LOG_INTERVAL: Duration = Duration::from_secs(30);

impl Away {
    /// A try failed: log if it is the first or the interval has passed.
    fn failed(&mut self, connect: &str) {
        self.tries += 1;
        let due = self
            .last_line
            .is_none_or(|t| t.elapsed() >= AWAY_LOG_INTERVAL);
        if due {
            self.last_line = Some(Instant::now());
            log::error!(
                "cannot reach ZooKeeper at {connect} (failed tries so far: {}); still trying \
                 (serving with what is known)",
                self.tries
            );
        }
    }

    /// Connected: say so if it had been away.
    fn back(&mut self, connect: &str) {
        if self.tries > 0 {
            log::info!(
                "connected to ZooKeeper at {connect} (failed tries before: {})",
                self.tries
            );
        }
        *self = Away::default();
    }
}

fn run(spec: AgentSpec, cmds: Receiver<Cmd>, on_update: impl Fn(Update)) {
    let mut last = (None, None);
    let mut failures = Away::default();
    loop {
        match session(&spec, &cmds, &on_update, &mut last, &mut failures) {
            SessionEnd::Done => return,
            SessionEnd::Retry => {
                if wait_or_deregister(&cmds, Duration::from_millis(500)) {
                    return;
                }
            }
        }
    }
}

/// One client's life: connect, register, then read and watch.
fn session(
    spec: &AgentSpec,
    cmds: &Receiver<Cmd>,
    on_update: &impl Fn(Update),
    last: &mut Snapshot,
    failures: &mut Away,
) -> SessionEnd {
    let (tx, rx) = unbounded::<Ev>();
    let stx = tx.clone();
    let zk = match ZooKeeper::connect(
        &spec.connect,
        spec.session_timeout,
        move |e: WatchedEvent| {
            let ev = match e.keeper_state {
                KeeperState::SyncConnected | KeeperState::ConnectedReadOnly => Ev::Up,
                KeeperState::Disconnected => Ev::Down,
                KeeperState::Expired | KeeperState::AuthFailed => Ev::Gone,
                _ => return,
            };
            let _ = stx.send(ev);
        },
    ) {
        Ok(zk) => Arc::new(zk),
        Err(e) => {
            log::debug!("cannot use ZooKeeper at {}: {e:?}", spec.connect);
            failures.failed(&spec.connect);
            return SessionEnd::Retry;
        }
    };
    let ltx = tx.clone();
    zk.add_listener(move |state: ZkState| {
        #[allow(deprecated)]
        let ev = match state {
            ZkState::Connected | ZkState::ConnectedReadOnly => Ev::Up,
            ZkState::Connecting | ZkState::NotConnected => Ev::Down,
            ZkState::Closed | ZkState::AuthFailed => Ev::Gone,
            ZkState::Associating => return,
        };
        let _ = ltx.send(ev);
    });
    // The first request waits for the session: answered in time, we are in.
    if !matches!(timed(&zk, |zk| zk.exists("/", false)), Some(Ok(_))) {
        failures.failed(&spec.connect);
        abandon(zk);
        if let Ok(Cmd::Deregister(ack)) = cmds.try_recv() {
            let _ = ack.send(());
            return SessionEnd::Done;
        }
        return SessionEnd::Retry;
    }
    failures.back(&spec.connect);
    let regs = spec.registrations.clone();
    match timed(&zk, move |zk| register(zk, &regs)) {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            log::error!("ZooKeeper registration failed: {e:?}; retrying");
            abandon(zk);
            return SessionEnd::Retry;
        }
        None => {
            log::error!("ZooKeeper did not answer the registration; retrying");
            abandon(zk);
            return SessionEnd::Retry;
        }
    }
    loop {
        let (s2, t2) = (spec.clone(), tx.clone());
        let wait = match timed(&zk, move |zk| read_all(zk, &s2, &t2)) {
            Some(Ok((settings, providers))) => {
                if let Some(p) = settings.filter(|p| last.0.as_ref() != Some(p)) {
                    last.0 = Some(p.clone());
                    on_update(Update::Settings(p));
                }
                if let Some(p) = providers.filter(|p| last.1.as_ref() != Some(p)) {
                    last.1 = Some(p.clone());
                    on_update(Update::Providers(p));
                }
                Duration::from_secs(10)
            }
            Some(Err(e)) => {
                log::warn!("reading ZooKeeper: {e:?}");
                Duration::from_secs(1)
            }
            None => {
                log::warn!("ZooKeeper does not answer; making a new client");
                abandon(zk);
                return SessionEnd::Retry;
            }
        };
        let deadline = crate::util::time::after(Instant::now(), wait);
        crossbeam_channel::select! {
            recv(rx) -> ev => match ev {
                Ok(Ev::Changed) => {
                    // Coalesce a burst of watch events.
                    std::thread::sleep(Duration::from_millis(20));
                    while let Ok(Ev::Changed) = rx.try_recv() {}
                }
                Ok(Ev::Gone) => {
                    log::warn!("ZooKeeper session ended: registering again with a new one");
                    abandon(zk);
                    return SessionEnd::Retry;
                }
                Ok(Ev::Down) => {
                    log::warn!("lost the ZooKeeper connection; serving with what is known");
                    // Wait for the client to reconnect within the session,
                    // or give up on it when it does not.
                    if !reconnected(&rx, spec.session_timeout) {
                        abandon(zk);
                        return SessionEnd::Retry;
                    }
                    log::info!("ZooKeeper connection back");
                }
                Ok(Ev::Up) => {}
                Err(_) => {
                    abandon(zk);
                    return SessionEnd::Retry;
                }
            },
            recv(cmds) -> cmd => {
                if let Ok(Cmd::Deregister(ack)) = cmd {
                    let regs = spec.registrations.clone();
                    let done = timed(&zk, move |zk| {
                        for (path, _) in &regs {
                            match zk.delete(path, None) {
                                Ok(()) => log::info!("deregistered {path} from ZooKeeper"),
                                Err(e) => log::warn!("deregistering {path}: {e:?}"),
                            }
                        }
                    });
                    if done.is_none() {
                        log::warn!("ZooKeeper did not answer the deregistration");
                    }
                    let _ = ack.send(());
                }
                abandon(zk);
                return SessionEnd::Done;
            },
            default(deadline.saturating_duration_since(Instant::now())) => {}
        }
    }
}

/// After a disconnect: true if the session comes back before it would
/// have expired.
fn reconnected(rx: &Receiver<Ev>, within: Duration) -> bool {
    let deadline = crate::util::time::after(Instant::now(), within);
    loop {
        match rx.recv_deadline(deadline) {
            Ok(Ev::Up) => return true,
            Ok(Ev::Gone) => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Sleep `d` unless a deregistration comes (answered; returns true).
fn wait_or_deregister(cmds: &Receiver<Cmd>, d: Duration) -> bool {
    match cmds.recv_timeout(d) {
        Ok(Cmd::Deregister(ack)) => {
            let _ = ack.send(());
            true
        }
        Err(RecvTimeoutError::Disconnected) => true,
        Err(RecvTimeoutError::Timeout) => false,
    }
}

/// The addresses to register for a listener bound to `bound`: itself, or
/// for an unspecified host (`:PORT`, `0.0.0.0`) every non-loopback IPv4
/// address of the machine (loopback only if there is none).
pub fn registration_addresses(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut ips = local_ipv4();
    if ips.is_empty() {
        ips.push(IpAddr::from([127, 0, 0, 1]));
    }
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

/// Non-loopback IPv4 addresses of this machine.
fn local_ipv4() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for iface in if_addrs::get_if_addrs().unwrap_or_default() {
        let ip = iface.ip();
        if ip.is_ipv4() && !ip.is_loopback() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_addresses_of_a_bound_host_are_itself() {
        let a: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert_eq!(registration_addresses(a), vec![a]);
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let got = registration_addresses(any);
        assert!(!got.is_empty());
        assert!(got
            .iter()
            .all(|s| s.port() == 8000 && !s.ip().is_unspecified()));
    }
}
