//! W3: the cache workload with a WSGI application (cache_wsgi.py, a
//! per-process LRU cache, a miss waits) as people deploy one today: in
//! resumelb's workers (`--app wsgi:`), or under granian or gunicorn behind
//! nginx's or HAProxy's consistent hash. 4 processes × 4 threads each; the
//! hit rate is counted in each process (the app writes its counts to a
//! directory the benchmark reads).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use resumelb::loadgen::{bin_dir, run, spawn_env, LoadSpec, Spawned};

use crate::backend::Stats;
use crate::peers::{self, Balance, TempDir};
use crate::workload::{self, Regime};
use crate::{bench_python, cpu_seconds, rounds, Measured, Row, Settings, HELLO_WSGI, HISTORY};

pub const PROCESSES: usize = 4;
pub const THREADS: usize = 4;
const CACHE: usize = 5000;
const CONNECTIONS: usize = 64;

/// W3's regimes: the same request shapes as W1, cheap and expensive misses.
pub const REGIMES: [Regime; 2] = [
    Regime {
        name: "W3a",
        what: "WSGI app, zipf 1.0, 4 objects, miss 1 ms (cheap misses)",
        zipf: 1.0,
        objects_per_request: 4,
        miss: Duration::from_millis(1),
    },
    Regime {
        name: "W3b",
        what: "WSGI app, zipf 1.0, 8 objects, miss 20 ms (expensive misses)",
        zipf: 1.0,
        objects_per_request: 8,
        miss: Duration::from_millis(20),
    },
];

/// Who serves the WSGI application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Granian,
    Gunicorn,
}

#[derive(Debug, Clone)]
pub enum Variant {
    /// resumelb with this pool, the app in its workers.
    Resumelb(String),
    /// A peer's hash in front of one server process each.
    Peer(Balance, Server),
}

impl Variant {
    pub fn all() -> Vec<Variant> {
        let mut all = vec![
            Variant::Resumelb("resume".into()),
            Variant::Resumelb("classic".into()),
            Variant::Peer(Balance::NginxHash, Server::Granian),
            Variant::Peer(Balance::NginxHash, Server::Gunicorn),
            Variant::Peer(Balance::HaproxyHash, Server::Granian),
        ];
        all.extend(super::tried_pools().into_iter().map(Variant::Resumelb));
        all
    }

    pub fn name(&self) -> String {
        match self {
            Variant::Resumelb(pool) => format!("resumelb {pool} (app in the workers)"),
            Variant::Peer(b, s) => {
                let peer = match b {
                    Balance::NginxHash => "nginx hash $host consistent",
                    _ => "haproxy hdr(host) consistent",
                };
                let server = match s {
                    Server::Granian => "granian",
                    Server::Gunicorn => "gunicorn gthread",
                };
                format!("{peer} -> {server}")
            }
        }
    }
}

/// A Python server in a process group of its own (servers fork workers),
/// which is stopped whole when dropped.
pub struct PyServer {
    pub child: Child,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory effects; the group is ours.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn free_addr() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> io::Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(io::Error::other(format!("{what} exited: {status}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::other(format!("{what} did not listen on {addr}")))
}

/// The app's environment for a regime.
fn app_env(regime: Regime, stats: &Path) -> Vec<(String, String)> {
    vec![
        ("CACHE_OBJECTS".into(), CACHE.to_string()),
        ("MISS_MS".into(), regime.miss.as_millis().to_string()),
        ("RLB_W3_STATS".into(), stats.display().to_string()),
    ]
}

fn start_server(
    server: Server,
    regime: Regime,
    stats: &Path,
) -> io::Result<(PyServer, SocketAddr)> {
    start_python(server, "cache_wsgi:application", &app_env(regime, stats))
}

/// `app` (MODULE:CALLABLE in examples/bench-compare) under one server
/// process with 4 threads, on a port of its own.
pub fn start_python(
    server: Server,
    app: &str,
    env: &[(String, String)],
) -> io::Result<(PyServer, SocketAddr)> {
    let python = bench_python()?;
    let bin = python.parent().unwrap_or(Path::new("."));
    let addr = free_addr()?;
    let (port, threads) = (addr.port().to_string(), THREADS.to_string());
    let mut cmd = match server {
        Server::Granian => {
            let mut c = Command::new(bin.join("granian"));
            c.args([
                "--interface",
                "wsgi",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
            ]);
            c.args([
                "--workers",
                "1",
                "--blocking-threads",
                &threads,
                "--no-access-log",
            ]);
            c.args(["--log-level", "warning", "--working-dir", HELLO_WSGI]);
            c.arg(app);
            c
        }
        Server::Gunicorn => {
            let mut c = Command::new(bin.join("gunicorn"));
            c.args(["-k", "gthread", "--workers", "1", "--threads", &threads]);
            c.args(["-b", &format!("127.0.0.1:{port}"), "--chdir", HELLO_WSGI]);
            c.args(["--log-level", "warning", app]);
            c
        }
    };
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setpgid and prctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let name = format!("{server:?}").to_lowercase();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            io::Error::other(format!(
                "cannot start {name}: {e} (make bench-compare installs it)"
            ))
        })?;
    if let Err(e) = wait_listening(addr, &mut child, &name) {
        drop(PyServer { child });
        return Err(e);
    }
    Ok((PyServer { child }, addr))
}

/// The processes' counts, summed by process, from the stats directory.
fn read_stats(dir: &Path) -> Vec<(String, Stats)> {
    // Each process writes every 50 ms: let the last counts land.
    std::thread::sleep(Duration::from_millis(200));
    let mut out: Vec<(String, Stats)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().to_string(),
                Stats::from_json(&text)?,
            ))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What happened in each process between two readings.
fn since(after: &[(String, Stats)], before: &[(String, Stats)]) -> Vec<Stats> {
    after
        .iter()
        .map(|(name, a)| {
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| *s)
                .unwrap_or_default();
            a.since(&b)
        })
        .collect()
}

struct Running {
    target: SocketAddr,
    /// resumelb's status socket.
    status: Option<PathBuf>,
    /// (role, pid) whose CPU is counted.
    pids: Vec<(&'static str, u32)>,
    _ours: Vec<Spawned>,
    _servers: Vec<PyServer>,
    _peer: Option<peers::Peer>,
}

fn start(v: &Variant, regime: Regime, stats: &Path) -> io::Result<Running> {
    match v {
        Variant::Resumelb(pool) => {
            let bins = bin_dir();
            let env = app_env(regime, stats);
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let mut ours = Vec::new();
            let mut pids = Vec::new();
            let mut addrs = Vec::new();
            let threads = THREADS.to_string();
            for _ in 0..PROCESSES {
                let args = [
                    "-a",
                    "127.0.0.1:0",
                    "--app",
                    "wsgi:cache_wsgi",
                    "--python-path",
                    HELLO_WSGI,
                    "--threads",
                    &threads,
                    "--history",
                    HISTORY,
                ];
                let w = spawn_env(
                    &bins.join("resumelb-worker"),
                    &args,
                    &env,
                    "worker listening on ",
                )?;
                pids.push(("worker", w.child.id()));
                addrs.push(w.addr.to_string());
                ours.push(w);
            }
            let sock = stats.with_extension("sock");
            let sock_arg = sock.display().to_string();
            let mut args = vec!["-a", "127.0.0.1:0", "-L", "info"];
            args.extend(["-s", sock_arg.as_str()]);
            let extra = super::pool_args(pool);
            args.extend(extra.iter().map(String::as_str));
            args.extend(addrs.iter().map(String::as_str));
            let lb = spawn_env(&bins.join("resumelb"), &args, &[], "listening on ")?;
            pids.push(("LB", lb.child.id()));
            let target = lb.addr;
            ours.push(lb);
            std::thread::sleep(Duration::from_millis(1500));
            Ok(Running {
                target,
                status: Some(sock),
                pids,
                _ours: ours,
                _servers: Vec::new(),
                _peer: None,
            })
        }
        Variant::Peer(balance, server) => {
            let mut servers = Vec::new();
            let mut addrs = Vec::new();
            let mut pids = Vec::new();
            for _ in 0..PROCESSES {
                let (s, a) = start_server(*server, regime, stats)?;
                pids.push(("worker", s.child.id()));
                servers.push(s);
                addrs.push(a);
            }
            let peer = peers::start(*balance, &addrs, "w3")?;
            pids.push(("LB", peer.child.id()));
            Ok(Running {
                target: peer.addr,
                status: None,
                pids,
                _ours: Vec::new(),
                _servers: servers,
                _peer: Some(peer),
            })
        }
    }
}

fn measure(s: &Settings, v: &Variant, regime: Regime) -> io::Result<Measured> {
    let dir = TempDir::new("w3")?;
    let stats = PathBuf::from(&dir.0);
    let running = start(v, regime, &stats)?;
    let spec = |duration: Duration, seed: u64| LoadSpec {
        targets: vec![running.target],
        connections: CONNECTIONS,
        duration,
        max_requests: 50_000_000,
        make: workload::w1_maker(regime),
        demo_report: false,
        seed,
    };
    run(&spec(s.warmup, 1))?;
    let before = read_stats(&stats);
    let cpu_before: Vec<f64> = running.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let load = run(&spec(s.measure, 2))?;
    let cpu = running
        .pids
        .iter()
        .zip(cpu_before)
        .map(|((role, pid), b)| (*role, cpu_seconds(*pid) - b))
        .collect();
    let after = read_stats(&stats);
    if let Some(line) = placements(running.status.as_slice()) {
        eprintln!("{}: {}: {line}", regime.name, v.name());
    }
    let backends = since(&after, &before);
    if backends.is_empty() {
        return Err(io::Error::other("no process wrote its counts"));
    }
    Ok(Measured {
        load,
        backends,
        cpu,
    })
}

/// How resumelb's pools placed requests (summed over its LBs), for whoever
/// reads the log.
pub fn placements(sockets: &[PathBuf]) -> Option<String> {
    let mut sum = [0u64; 4];
    let keys = ["skilled", "new", "spilled", "moved"];
    for sock in sockets {
        let path = sock.display().to_string();
        let doc = resumelb::cli::get_lb_status::fetch(&path, Duration::from_secs(5)).ok()?;
        for (n, k) in sum.iter_mut().zip(keys) {
            *n += doc["placements"][k].as_u64().unwrap_or(0);
        }
    }
    (!sockets.is_empty()).then(|| {
        let parts: Vec<String> = keys
            .iter()
            .zip(sum)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!("placed: {}", parts.join(", "))
    })
}

/// Every W3 variant `s` selects, in a regime, `s.rounds` times
/// interleaved.
pub fn run_regime(s: &Settings, regime: Regime) -> Vec<Row> {
    let wanted: Vec<Variant> = Variant::all()
        .into_iter()
        .filter(|v| s.wants(regime.name, &v.name()))
        .collect();
    let results = rounds::interleave(s.rounds, wanted.len(), |i, round| {
        let v = &wanted[i];
        let name = v.name();
        eprintln!("{}: {name} (round {}) ...", regime.name, round + 1);
        let result = measure(s, v, regime).map_err(|e| e.to_string());
        if let Err(e) = &result {
            eprintln!("{}: {name}: SKIPPED: {e}", regime.name);
        }
        result
    });
    wanted
        .iter()
        .zip(results)
        .map(|(v, (result, spread))| Row {
            name: v.name(),
            ours: matches!(v, Variant::Resumelb(_)),
            result,
            spread,
        })
        .collect()
}
