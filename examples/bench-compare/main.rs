//! `make bench-compare`: resumelb side by side with HAProxy and nginx (and,
//! for WSGI applications, granian and gunicorn) on this machine, in one
//! run, under one load generator (ours, keep-alive, loopback only), with
//! the same cache-simulating backends.
//!
//! W1 (the cache workload): 60 sites with zipf popularity, each request
//! naming several objects of its site; 4 backends × 4 slots, 5,000 cached
//! objects each; fresh backends per variant, a warm-up, then a measured
//! window; hit rates counted at the backends. Regimes W1a, W1b, W1c.
//! W2 (raw overhead): a tiny response, 32 connections, CPU per process;
//! also a trivial WSGI application in the worker, under waitress and under
//! granian. W3 (`w3.rs`): W1's shape with a WSGI application that caches.
//!
//! Environment: BENCH_QUICK=1 (short windows), BENCH_SECONDS (measured
//! window), BENCH_WARMUP, BENCH_ROUNDS=N (each variant N times,
//! interleaved: the median run and the spread, `rounds.rs`),
//! BENCH_ONLY=W1a,W2,W3,haproxy,… (regimes and/or variant name parts),
//! BENCH_OUT (default target/bench-compare), BENCH_LB_ARGS (more options
//! for every resumelb started, e.g. `--max-depth 16`, to try settings),
//! BENCH_TRY (more resumelb variants in W1 and W3, `;`-separated pools
//! with options, e.g. `resume --max-depth 32`, to compare settings side by
//! side in one run).
//! Prints tables and ratios, writes results.md and SVG charts to
//! BENCH_OUT; exits 1 if a peer could not run (its rows say SKIPPED).
//!
//! Run as `bench-compare backend SLOTS CACHE MISS_MS`, it is one backend.

mod backend;
mod peers;
mod report;
mod rounds;
mod w3;
mod workload;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use resumelb::loadgen::{bin_dir, run, spawn, LoadResult, LoadSpec, RequestMaker, Spawned};
use resumelb::pool::PoolKind;
use resumelb::testing::raise_nofile;

use backend::Stats;
use peers::Balance;
use report::{svg, Panel, Table};
use workload::{Regime, REGIMES};

const BACKENDS: usize = 4;
const SLOTS: usize = 4;
const CACHE: usize = 5000;
const W1_CONNECTIONS: usize = 64;
const W2_CONNECTIONS: usize = 32;
const WORKER_THREADS: &str = "4";
const HISTORY: &str = "100";

struct Settings {
    /// BENCH_ROUNDS: times each variant is measured, interleaved.
    rounds: usize,
    warmup: Duration,
    measure: Duration,
    only: Vec<String>,
    out: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let secs = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Settings {
            rounds: secs("BENCH_ROUNDS", 1).max(1) as usize,
            warmup: Duration::from_secs(secs("BENCH_WARMUP", if quick { 3 } else { 10 })),
            measure: Duration::from_secs(secs("BENCH_SECONDS", if quick { 8 } else { 25 })),
            only: std::env::var("BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            out: std::env::var_os("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target/bench-compare")),
        }
    }

    /// Whether BENCH_ONLY selects this regime or variant (regime names and
    /// variant name parts; a filter of only regimes keeps every variant).
    fn wants(&self, regime: &str, variant: &str) -> bool {
        if self.only.is_empty() {
            return true;
        }
        let regime = regime.to_ascii_lowercase();
        let variant = variant.to_ascii_lowercase();
        let is_regime = |f: &String| f.starts_with("w1") || f.starts_with("w3") || f == "w2";
        let regimes: Vec<&String> = self.only.iter().filter(|f| is_regime(f)).collect();
        let variants: Vec<&String> = self.only.iter().filter(|f| !is_regime(f)).collect();
        let regime_ok =
            regimes.is_empty() || regimes.iter().any(|f| regime.starts_with(f.as_str()));
        let variant_ok =
            variants.is_empty() || variants.iter().any(|f| variant.contains(f.as_str()));
        regime_ok && variant_ok
    }
}

/// One backend process of ours.
fn start_backend(slots: usize, cache: usize, miss: Duration) -> io::Result<Spawned> {
    let exe = std::env::current_exe()?;
    spawn(
        &exe,
        &[
            "backend",
            &slots.to_string(),
            &cache.to_string(),
            &miss.as_millis().to_string(),
        ],
        "backend listening on ",
    )
}

fn stats_of(backends: &[Spawned]) -> io::Result<Vec<Stats>> {
    backends
        .iter()
        .map(|b| backend::fetch_stats(b.addr))
        .collect()
}

/// What runs in front of the backends for one variant: our processes or a
/// peer's, and the addresses the load goes to.
struct Front {
    targets: Vec<SocketAddr>,
    /// (role, pid) of the processes whose CPU is counted.
    pids: Vec<(&'static str, u32)>,
    _ours: Vec<Spawned>,
    _peer: Option<peers::Peer>,
    _servers: Vec<w3::PyServer>,
    /// resumelb's status sockets (in `_dir`).
    status: Vec<std::path::PathBuf>,
    _dir: Option<peers::TempDir>,
}

#[derive(Clone)]
enum Variant {
    /// resumelb with this pool, `lbs` load balancers sharing the workers.
    Resumelb {
        pool: String,
        lbs: usize,
    },
    /// resumelb with a worker running the in-process demo app with this
    /// many threads (W2).
    ResumelbDemo(&'static str),

    Peer(Balance),
    /// Straight at the backend (W2).
    Direct,
    /// A trivial WSGI application (hello_wsgi.py) in three set-ups (W2).
    Python(Py),
}

/// Where W2's WSGI application runs.
#[derive(Clone, Copy)]
enum Py {
    /// In the worker (`--app wsgi:`), with this many threads.
    InWorker(&'static str),
    /// Under waitress, the worker forwarding to it (`--app upstream:`).
    Upstream,
    /// Under waitress, the load straight at it.
    Direct,
    /// Under granian (1 process, 4 blocking threads), the load straight at
    /// it.
    Granian,
    /// Under granian, nginx in front.
    NginxGranian,
}

/// BENCH_LB_ARGS, split at whitespace: options added to every resumelb.
pub fn extra_lb_args() -> Vec<String> {
    std::env::var("BENCH_LB_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// BENCH_TRY: extra "POOL OPTIONS…" variants.
pub fn tried_pools() -> Vec<String> {
    std::env::var("BENCH_TRY")
        .unwrap_or_default()
        .split(';')
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// The LB options for a variant's pool ("resume --max-depth 32": `-p
/// resume --max-depth 32`), with BENCH_LB_ARGS.
pub fn pool_args(pool: &str) -> Vec<String> {
    let mut words = pool.split_whitespace().map(String::from);
    let mut args = vec!["-p".to_string(), words.next().unwrap_or_default()];
    args.extend(words);
    args.extend(extra_lb_args());
    args
}

/// " --threads N" unless N is the usual count.
fn threads_suffix(threads: &str) -> String {
    if threads == WORKER_THREADS {
        String::new()
    } else {
        format!(" --threads {threads}")
    }
}

const HELLO_WSGI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bench-compare");

/// The virtualenv's Python with waitress (`make deps`), or
/// `RLB_BENCH_PYTHON`.
fn bench_python() -> io::Result<std::path::PathBuf> {
    let p = std::env::var_os("RLB_BENCH_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into());
    if p.exists() {
        Ok(p)
    } else {
        Err(io::Error::other(format!(
            "no {} with waitress (make deps)",
            p.display()
        )))
    }
}

fn start_waitress() -> io::Result<Spawned> {
    let script = format!("{HELLO_WSGI}/hello_wsgi.py");
    spawn(&bench_python()?, &[&script], "waitress listening on ")
}

impl Variant {
    fn name(&self) -> String {
        match self {
            Variant::Resumelb { pool, lbs: 1 } => format!("resumelb {pool}"),
            Variant::Resumelb { pool, lbs } => format!("resumelb {pool} x{lbs} LBs"),
            Variant::ResumelbDemo(t) => {
                format!("resumelb + worker --app demo{}", threads_suffix(t))
            }

            Variant::Peer(Balance::HaproxyHash) => "haproxy hdr(host) consistent".into(),
            Variant::Peer(Balance::HaproxyLeastconn) => "haproxy leastconn".into(),
            Variant::Peer(Balance::NginxHash) => "nginx hash $host consistent".into(),
            Variant::Peer(Balance::HaproxyPlain) => "haproxy proxy".into(),
            Variant::Peer(Balance::NginxPlain) => "nginx proxy".into(),
            Variant::Direct => "direct to the backend".into(),
            Variant::Python(Py::InWorker(t)) => {
                format!("resumelb + worker --app wsgi:{}", threads_suffix(t))
            }
            Variant::Python(Py::Upstream) => "resumelb + worker --app upstream: -> waitress".into(),
            Variant::Python(Py::Direct) => "waitress direct".into(),
            Variant::Python(Py::Granian) => "granian direct".into(),
            Variant::Python(Py::NginxGranian) => "nginx proxy -> granian".into(),
        }
    }

    fn is_ours(&self) -> bool {
        matches!(
            self,
            Variant::Resumelb { .. }
                | Variant::ResumelbDemo(_)
                | Variant::Python(Py::InWorker(_) | Py::Upstream)
        )
    }

    /// Uses the Rust backend.
    fn uses_backend(&self) -> bool {
        !matches!(self, Variant::ResumelbDemo(_) | Variant::Python(_))
    }
}

fn start_front(variant: &Variant, backends: &[SocketAddr]) -> io::Result<Front> {
    let bins = bin_dir();
    match variant {
        Variant::Direct => Ok(Front {
            targets: backends.to_vec(),
            pids: Vec::new(),
            _ours: Vec::new(),
            _peer: None,
            _servers: Vec::new(),
            status: Vec::new(),
            _dir: None,
        }),
        Variant::Peer(balance) => {
            let peer = peers::start(*balance, backends, "peer")?;
            let pid = peer.child.id();
            let role = match balance {
                Balance::NginxHash | Balance::NginxPlain => "nginx",
                _ => "haproxy",
            };
            Ok(Front {
                targets: vec![peer.addr],
                pids: vec![(role, pid)],
                _ours: Vec::new(),
                _peer: Some(peer),
                _servers: Vec::new(),
                status: Vec::new(),
                _dir: None,
            })
        }
        Variant::Python(Py::Granian) => {
            let (server, addr) =
                w3::start_python(w3::Server::Granian, "hello_wsgi:application", &[])?;
            Ok(Front {
                targets: vec![addr],
                pids: Vec::new(),
                _ours: Vec::new(),
                _peer: None,
                _servers: vec![server],
                status: Vec::new(),
                _dir: None,
            })
        }
        Variant::Python(Py::NginxGranian) => {
            let (server, addr) =
                w3::start_python(w3::Server::Granian, "hello_wsgi:application", &[])?;
            let peer = peers::start(Balance::NginxPlain, &[addr], "peer")?;
            Ok(Front {
                targets: vec![peer.addr],
                pids: vec![("nginx", peer.child.id())],
                _ours: Vec::new(),
                _peer: Some(peer),
                _servers: vec![server],
                status: Vec::new(),
                _dir: None,
            })
        }
        Variant::Python(Py::Direct) => {
            let waitress = start_waitress()?;
            Ok(Front {
                targets: vec![waitress.addr],
                pids: Vec::new(),
                _ours: vec![waitress],
                _peer: None,
                _servers: Vec::new(),
                status: Vec::new(),
                _dir: None,
            })
        }
        Variant::Resumelb { .. } | Variant::ResumelbDemo(_) | Variant::Python(_) => {
            let (pool, lbs) = match variant {
                Variant::Resumelb { pool, lbs } => (pool.as_str(), *lbs),
                _ => ("resume", 1),
            };
            let mut ours = Vec::new();
            let mut pids = Vec::new();
            let mut worker_addrs = Vec::new();
            // The demo and WSGI apps answer in the worker itself: one
            // worker, no backend; waitress counts as the worker's side.
            let apps: Vec<String> = match variant {
                Variant::ResumelbDemo(_) => vec!["demo".to_string()],
                Variant::Python(Py::InWorker(_)) => vec!["wsgi:hello_wsgi".to_string()],
                Variant::Python(_) => {
                    let waitress = start_waitress()?;
                    pids.push(("worker", waitress.child.id()));
                    let app = format!("upstream:{}", waitress.addr);
                    ours.push(waitress);
                    vec![app]
                }
                _ => backends.iter().map(|b| format!("upstream:{b}")).collect(),
            };
            let threads = match variant {
                Variant::ResumelbDemo(t) | Variant::Python(Py::InWorker(t)) => t,
                _ => WORKER_THREADS,
            };
            for app in apps {
                let mut args = vec![
                    "-a",
                    "127.0.0.1:0",
                    "--app",
                    &app,
                    "--threads",
                    threads,
                    "--history",
                    HISTORY,
                    "--demo-miss-ms",
                    "0",
                ];
                if app.starts_with("wsgi:") {
                    args.extend(["--python-path", HELLO_WSGI]);
                }
                let w = spawn(&bins.join("resumelb-worker"), &args, "worker listening on ")?;
                pids.push(("worker", w.child.id()));
                worker_addrs.push(w.addr.to_string());
                ours.push(w);
            }
            let mut targets = Vec::new();
            let dir = peers::TempDir::new("lb")?;
            let mut status = Vec::new();
            let extra = pool_args(pool);
            for i in 0..lbs {
                let sock = dir.0.join(format!("lb{i}.sock"));
                let sock_arg = sock.display().to_string();
                status.push(sock);
                let mut args = vec!["-a", "127.0.0.1:0", "-L", "info"];
                args.extend(["-s", sock_arg.as_str()]);
                args.extend(extra.iter().map(String::as_str));
                args.extend(worker_addrs.iter().map(String::as_str));
                let lb = spawn(&bins.join("resumelb"), &args, "listening on ")?;
                pids.push(("LB", lb.child.id()));
                targets.push(lb.addr);
                ours.push(lb);
            }
            // Let every LB connect to every worker before the load starts.
            std::thread::sleep(Duration::from_millis(1500));
            Ok(Front {
                targets,
                pids,
                _ours: ours,
                _peer: None,
                _servers: Vec::new(),
                status,
                _dir: Some(dir),
            })
        }
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

struct Measured {
    load: LoadResult,
    /// Per backend: what it did during the measured window.
    backends: Vec<Stats>,
    /// (role, CPU seconds during the window).
    cpu: Vec<(&'static str, f64)>,
}

fn measure(
    s: &Settings,
    front: &Front,
    make: Arc<RequestMaker>,
    connections: usize,
    backends: &[Spawned],
) -> io::Result<Measured> {
    let spec = |duration: Duration, seed: u64| LoadSpec {
        targets: front.targets.clone(),
        connections,
        duration,
        max_requests: 50_000_000,
        make: make.clone(),
        demo_report: false,
        seed,
    };
    run(&spec(s.warmup, 1))?;
    let before = stats_of(backends)?;
    let cpu_before: Vec<f64> = front.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let load = run(&spec(s.measure, 2))?;
    let cpu = front
        .pids
        .iter()
        .zip(cpu_before)
        .map(|((role, pid), b)| (*role, cpu_seconds(*pid) - b))
        .collect();
    let after = stats_of(backends)?;
    if let Some(line) = w3::placements(&front.status) {
        eprintln!("{line}");
    }
    let backends = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
    Ok(Measured {
        load,
        backends,
        cpu,
    })
}

fn ms(v: f64) -> String {
    format!("{v:.2}")
}

/// Results of one variant in one regime: its run with the median
/// requests/s (an error: skipped), and the spread of its rounds.
struct Row {
    name: String,
    ours: bool,
    result: Result<Measured, String>,
    spread: Option<rounds::Spread>,
}

fn hit_rate(b: &[Stats]) -> f64 {
    let hits: u64 = b.iter().map(|s| s.hits).sum();
    let all: u64 = b.iter().map(|s| s.hits + s.misses).sum();
    if all == 0 {
        0.0
    } else {
        hits as f64 / all as f64
    }
}

fn shares(b: &[Stats]) -> String {
    let total: u64 = b.iter().map(|s| s.requests).sum::<u64>().max(1);
    b.iter()
        .map(|s| format!("{:.0}", s.requests as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join("/")
}

fn run_w1(s: &Settings, regime: Regime, variants: &[Variant]) -> Vec<Row> {
    let wanted: Vec<&Variant> = variants
        .iter()
        .filter(|v| s.wants(regime.name, &v.name()))
        .collect();
    let results = rounds::interleave(s.rounds, wanted.len(), |i, round| {
        let v = wanted[i];
        let name = v.name();
        eprintln!("{}: {name} (round {}) ...", regime.name, round + 1);
        let result = (|| -> io::Result<Measured> {
            let backends: Vec<Spawned> = (0..BACKENDS)
                .map(|_| start_backend(SLOTS, CACHE, regime.miss))
                .collect::<io::Result<_>>()?;
            let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
            let front = start_front(v, &addrs)?;
            measure(
                s,
                &front,
                workload::w1_maker(regime),
                W1_CONNECTIONS,
                &backends,
            )
        })()
        .map_err(|e| e.to_string());
        if let Err(e) = &result {
            eprintln!("{}: {name}: SKIPPED: {e}", regime.name);
        }
        result
    });
    rows_of(&wanted, results)
}

fn rows_of(
    variants: &[&Variant],
    results: Vec<(Result<Measured, String>, Option<rounds::Spread>)>,
) -> Vec<Row> {
    variants
        .iter()
        .zip(results)
        .map(|(v, (result, spread))| Row {
            name: v.name(),
            ours: v.is_ours(),
            result,
            spread,
        })
        .collect()
}

fn run_w2(s: &Settings, variants: &[Variant]) -> Vec<Row> {
    let wanted: Vec<&Variant> = variants
        .iter()
        .filter(|v| s.wants("W2", &v.name()))
        .collect();
    let results = rounds::interleave(s.rounds, wanted.len(), |i, round| {
        let v = wanted[i];
        let name = v.name();
        eprintln!("W2: {name} (round {}) ...", round + 1);
        let result = (|| -> io::Result<Measured> {
            let backends = vec![start_backend(64, 1, Duration::ZERO)?];
            let addrs = vec![backends[0].addr];
            let front = start_front(v, &addrs)?;
            let used: Vec<Spawned> = if v.uses_backend() {
                backends
            } else {
                Vec::new()
            };
            measure(s, &front, workload::w2_maker(), W2_CONNECTIONS, &used)
        })()
        .map_err(|e| e.to_string());
        if let Err(e) = &result {
            eprintln!("W2: {name}: SKIPPED: {e}");
        }
        result
    });
    rows_of(&wanted, results)
}

/// "resumelb resume / resumelb classic: …" (the default pool against the
/// original's), when both ran.
fn pool_ratio(rows: &[Row]) -> Option<String> {
    let find = |prefix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix) && !r.name.contains(" x"))
            .and_then(|r| r.result.as_ref().ok())
    };
    let (new, classic) = (find("resumelb resume")?, find("resumelb classic")?);
    Some(format!(
        "resumelb resume / resumelb classic: throughput {:.2}x, hit rate {:+.1} points, p99 {:.2}x",
        new.load.rate() / classic.load.rate().max(1e-9),
        (hit_rate(&new.backends) - hit_rate(&classic.backends)) * 100.0,
        new.load.percentile_ms(99.0) / classic.load.percentile_ms(99.0).max(1e-9),
    ))
}

/// "resumelb X / best peer (Y): throughput …x, p99 …x" lines.
fn ratios(rows: &[Row]) -> Vec<String> {
    let ok = |r: &&Row| r.result.is_ok();
    let peers: Vec<&Row> = rows
        .iter()
        .filter(ok)
        .filter(|r| !r.ours && !r.name.contains("direct"))
        .collect();
    let best_rate = peers.iter().max_by(|a, b| {
        let ra = a.result.as_ref().map(|m| m.load.rate()).unwrap_or(0.0);
        let rb = b.result.as_ref().map(|m| m.load.rate()).unwrap_or(0.0);
        ra.total_cmp(&rb)
    });
    let best_p99 = peers.iter().min_by(|a, b| {
        let pa = a
            .result
            .as_ref()
            .map(|m| m.load.percentile_ms(99.0))
            .unwrap_or(f64::MAX);
        let pb = b
            .result
            .as_ref()
            .map(|m| m.load.percentile_ms(99.0))
            .unwrap_or(f64::MAX);
        pa.total_cmp(&pb)
    });
    let (Some(br), Some(bp)) = (best_rate, best_p99) else {
        return vec!["(no peer ran: no ratios)".into()];
    };
    let (Ok(brm), Ok(bpm)) = (&br.result, &bp.result) else {
        return Vec::new();
    };
    rows.iter()
        .filter(ok)
        .filter(|r| r.ours)
        .filter_map(|r| {
            let m = r.result.as_ref().ok()?;
            Some(format!(
                "{} / best peer: throughput {:.2}x ({}), p99 {:.2}x ({})",
                r.name,
                m.load.rate() / brm.load.rate().max(1e-9),
                br.name,
                m.load.percentile_ms(99.0) / bpm.load.percentile_ms(99.0).max(1e-9),
                bp.name
            ))
        })
        .collect()
}

fn w1_table(rows: &[Row]) -> Table {
    let mut t = Table::new(&[
        "variant",
        "req/s",
        "p50 ms",
        "p99 ms",
        "hit rate",
        "per backend %",
        "LB us/req",
        "errors",
    ]);
    for r in rows {
        match &r.result {
            Ok(m) => t.row(vec![
                r.name.clone(),
                rounds::with_spread(format!("{:.0}", m.load.rate()), r.spread.map(|x| x.rate), 0),
                ms(m.load.percentile_ms(50.0)),
                rounds::with_spread(ms(m.load.percentile_ms(99.0)), r.spread.map(|x| x.p99), 2),
                format!("{:.1}%", hit_rate(&m.backends) * 100.0),
                shares(&m.backends),
                ["LB", "haproxy", "nginx"]
                    .iter()
                    .find_map(|role| cpu_us(m, role))
                    .map_or("-".into(), |us| format!("{us:.1}")),
                m.load.errors.to_string(),
            ]),
            Err(e) => t.skipped(&r.name, e),
        }
    }
    t
}

fn cpu_us(m: &Measured, role: &str) -> Option<f64> {
    let secs: f64 = m
        .cpu
        .iter()
        .filter(|(r, _)| *r == role)
        .map(|(_, c)| c)
        .sum();
    let any = m.cpu.iter().any(|(r, _)| *r == role);
    (any && m.load.requests > 0).then(|| secs * 1e6 / m.load.requests as f64)
}

fn w2_table(rows: &[Row]) -> (Table, Vec<String>) {
    let mut t = Table::new(&[
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "LB CPU s",
        "LB us/req",
        "worker us/req",
        "vs HAProxy",
        "errors",
    ]);
    let haproxy = rows
        .iter()
        .find(|r| r.name == "haproxy proxy")
        .and_then(|r| r.result.as_ref().ok())
        .map(|m| m.load.rate());
    let direct = rows
        .iter()
        .find(|r| r.name == "direct to the backend")
        .and_then(|r| r.result.as_ref().ok())
        .map(|m| m.load.rate());
    let mut notes = Vec::new();
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .and_then(|r| r.result.as_ref().ok())
    };
    if let (Some(ours), Some(peer)) = (
        find("resumelb + worker --app wsgi:"),
        find("nginx proxy -> granian"),
    ) {
        notes.push(format!(
            "resumelb + worker --app wsgi: / nginx proxy -> granian: throughput {:.2}x, p99 {:.2}x",
            ours.load.rate() / peer.load.rate().max(1e-9),
            ours.load.percentile_ms(99.0) / peer.load.percentile_ms(99.0).max(1e-9)
        ));
    }
    // More app threads must not slow a CPU-bound application down.
    for app in ["demo", "wsgi:"] {
        let base = format!("resumelb + worker --app {app}");
        if let (Some(one), Some(eight)) = (
            find(&format!("{base} --threads 1")),
            find(&format!("{base} --threads 8")),
        ) {
            notes.push(format!(
                "{base} --threads 8 / --threads 1: throughput {:.2}x, p99 {:.2}x",
                eight.load.rate() / one.load.rate().max(1e-9),
                eight.load.percentile_ms(99.0) / one.load.percentile_ms(99.0).max(1e-9)
            ));
        }
    }
    if rows.iter().any(|r| r.name.contains("-> waitress")) {
        notes.push(
            "worker us/req of \"-> waitress\" counts the worker and waitress together".to_string(),
        );
    }
    for r in rows {
        let m = match &r.result {
            Ok(m) => m,
            Err(e) => {
                t.skipped(&r.name, e);
                continue;
            }
        };
        let lb = ["LB", "haproxy", "nginx"]
            .iter()
            .find_map(|role| cpu_us(m, role).map(|us| (*role, us)));
        let lb_secs: f64 = m
            .cpu
            .iter()
            .filter(|(r, _)| ["LB", "haproxy", "nginx"].contains(r))
            .map(|(_, c)| c)
            .sum();
        t.row(vec![
            r.name.clone(),
            rounds::with_spread(format!("{:.0}", m.load.rate()), r.spread.map(|x| x.rate), 0),
            ms(m.load.percentile_ms(50.0)),
            rounds::with_spread(ms(m.load.percentile_ms(99.0)), r.spread.map(|x| x.p99), 2),
            if lb.is_some() {
                format!("{lb_secs:.2}")
            } else {
                "-".into()
            },
            lb.map_or("-".into(), |(_, us)| format!("{us:.1}")),
            cpu_us(m, "worker").map_or("-".into(), |us| format!("{us:.1}")),
            haproxy.map_or("-".into(), |h| {
                format!("{:.2}", m.load.rate() / h.max(1e-9))
            }),
            m.load.errors.to_string(),
        ]);
        if let Some(d) = direct {
            if !r.name.contains("direct") && m.load.rate() >= 0.9 * d {
                notes.push(format!(
                    "{} came within 10% of the direct figure: it measures the load generator, \
                     not the LB",
                    r.name
                ));
            }
        }
    }
    (t, notes)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {}", kernel.trim())
}

fn version_of(cmd: &str, arg: &str) -> String {
    std::process::Command::new(peers::which(cmd).unwrap_or_else(|| cmd.into()))
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .to_string();
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{cmd}: not installed"))
}

/// A Python peer's version from the bench virtualenv.
fn python_version(program: &str) -> String {
    let Ok(python) = bench_python() else {
        return format!("{program}: no virtualenv");
    };
    let bin = python.with_file_name(program);
    std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{program}: not installed"))
}

fn chart(title: &str, rows: &[Row], hit: bool) -> String {
    let bars = |f: &dyn Fn(&Measured) -> f64| -> Vec<(String, Option<f64>)> {
        rows.iter()
            .map(|r| (r.name.clone(), r.result.as_ref().ok().map(f)))
            .collect()
    };
    let mut panels = vec![
        Panel {
            title: "requests/s (more is better)".into(),
            bars: bars(&|m| m.load.rate()),
        },
        Panel {
            title: "p99 latency, ms (less is better)".into(),
            bars: bars(&|m| m.load.percentile_ms(99.0)),
        },
    ];
    if hit {
        panels.push(Panel {
            title: "hit rate at the backends, %".into(),
            bars: bars(&|m| hit_rate(&m.backends) * 100.0),
        });
    }
    svg(title, &panels)
}

/// Print a cache regime's table and ratios, add them to the markdown, and
/// write its chart; whether a variant was skipped.
fn report_regime(s: &Settings, regime: Regime, rows: &[Row], md: &mut String) -> io::Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    let t = w1_table(rows);
    let mut lines = ratios(rows);
    lines.extend(pool_ratio(rows));
    println!(
        "\n{}: {}\n{}{}",
        regime.name,
        regime.what,
        t.text(),
        lines.join("\n")
    );
    md.push_str(&format!(
        "\n### {}: {}\n\n{}\n{}\n\n![{}](bench/{}.svg)\n",
        regime.name,
        regime.what,
        t.markdown(),
        lines
            .iter()
            .map(|l| format!("- {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        regime.name,
        regime.name.to_ascii_lowercase()
    ));
    let title = format!("{}: {}", regime.name, regime.what);
    std::fs::write(
        s.out
            .join(format!("{}.svg", regime.name.to_ascii_lowercase())),
        chart(&title, rows, true),
    )?;
    Ok(rows.iter().any(|r| r.result.is_err()))
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("backend") {
        let num = |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
        let addr = backend::serve(backend::BackendConfig {
            slots: num(1) as usize,
            cache: num(2) as usize,
            miss: Duration::from_millis(num(3)),
        })?;
        eprintln!("backend listening on {addr}");
        loop {
            std::thread::park();
        }
    }
    raise_nofile(65_536);
    let s = Settings::from_env();
    std::fs::create_dir_all(&s.out)?;
    let mut missing = Vec::new();
    for peer in ["haproxy", "nginx"] {
        if peers::which(peer).is_none() {
            missing.push(peer);
        }
    }
    let mut w1_variants: Vec<Variant> = PoolKind::NAMES
        .iter()
        .map(|p| Variant::Resumelb {
            pool: p.to_string(),
            lbs: 1,
        })
        .collect();
    for pool in ["resume", "classic"] {
        w1_variants.push(Variant::Resumelb {
            pool: pool.into(),
            lbs: 3,
        });
    }
    w1_variants.extend(
        tried_pools()
            .into_iter()
            .map(|pool| Variant::Resumelb { pool, lbs: 1 }),
    );
    w1_variants.extend([
        Variant::Peer(Balance::HaproxyHash),
        Variant::Peer(Balance::HaproxyLeastconn),
        Variant::Peer(Balance::NginxHash),
    ]);
    let w2_variants = [
        Variant::Direct,
        Variant::Peer(Balance::HaproxyPlain),
        Variant::Peer(Balance::NginxPlain),
        Variant::Resumelb {
            pool: "resume".into(),
            lbs: 1,
        },
        Variant::ResumelbDemo(WORKER_THREADS),
        Variant::ResumelbDemo("1"),
        Variant::ResumelbDemo("8"),
        Variant::Python(Py::Direct),
        Variant::Python(Py::Upstream),
        Variant::Python(Py::Granian),
        Variant::Python(Py::NginxGranian),
        Variant::Python(Py::InWorker(WORKER_THREADS)),
        Variant::Python(Py::InWorker("1")),
        Variant::Python(Py::InWorker("8")),
    ];
    let header = format!(
        "resumelb bench-compare on {}\n{}; {}; warm-up {} s, measured {} s per variant, {} round(s)\n\
         W1: {BACKENDS} backends x {SLOTS} slots, {CACHE} cached objects each, {} sites, \
         {W1_CONNECTIONS} keep-alive connections; workers --threads {WORKER_THREADS} \
         --history {HISTORY}\n\
         W3: {} processes x {} threads of a caching WSGI application; {}; {}\n",
        machine(),
        version_of("haproxy", "-v"),
        version_of("nginx", "-v"),
        s.warmup.as_secs(),
        s.measure.as_secs(),
        s.rounds,
        workload::SITES,
        w3::PROCESSES,
        w3::THREADS,
        python_version("granian"),
        python_version("gunicorn"),
    );
    print!("{header}");
    let mut md = format!("{}\n", header.replace('\n', "  \n"));
    let mut skipped = false;
    for regime in REGIMES {
        if !s.wants(regime.name, "") && !w1_variants.iter().any(|v| s.wants(regime.name, &v.name()))
        {
            continue;
        }
        let rows = run_w1(&s, regime, &w1_variants);
        skipped |= report_regime(&s, regime, &rows, &mut md)?;
    }
    for regime in w3::REGIMES {
        let rows = w3::run_regime(&s, regime);
        skipped |= report_regime(&s, regime, &rows, &mut md)?;
    }
    let rows = run_w2(&s, &w2_variants);
    if !rows.is_empty() {
        skipped |= rows.iter().any(|r| r.result.is_err());
        let (t, notes) = w2_table(&rows);
        println!(
            "\nW2: tiny response, {W2_CONNECTIONS} keep-alive connections\n{}{}",
            t.text(),
            notes.join("\n")
        );
        md.push_str(&format!(
            "\n### W2: tiny response, {W2_CONNECTIONS} keep-alive connections\n\n{}\n{}\n\n![W2](bench/w2.svg)\n",
            t.markdown(),
            notes.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")
        ));
        std::fs::write(
            s.out.join("w2.svg"),
            chart("W2: tiny response, raw overhead", &rows, false),
        )?;
    }
    std::fs::write(s.out.join("results.md"), md)?;
    println!("\ntables and charts in {}", s.out.display());
    if skipped || !missing.is_empty() {
        if !missing.is_empty() {
            eprintln!(
                "not installed: {} (`make bench-compare` installs them)",
                missing.join(", ")
            );
        }
        eprintln!("some variants were SKIPPED");
        std::process::exit(1);
    }
    Ok(())
}
