//! `make faults`: what a failing, slow or hung worker does to the clients,
//! with the default pool (`resume`) and the original's (`classic`). Three
//! workers behind one LB on loopback, 8 keep-alive connections over 10
//! request classes; for each fault a phase before it, one right after it
//! (0–5 s) and one later (5–10 s):
//!
//! - app down: the HTTP application behind one `upstream` worker is killed;
//! - slow app: one application becomes 40 times slower (5 ms → 200 ms);
//! - hung worker: one `demo` worker is stopped with SIGSTOP, then goes on
//!   (SIGCONT) and two more phases follow (0–5 s and 5–10 s after).
//!
//! Prints requests/s, the share of failed (non-200) requests, p50/p99, the
//! share of requests that took over a second, and (demo workers) the share
//! of requests the faulty worker served. Figures, not assertions.
//! FAULT_SECONDS sets the phase length (default 5).
//!
//! Then restarts under load (keep-alive and new-connection clients, GET
//! and POST, `loadgen::Churn`), three in a run of twice the phase length,
//! in front of two applications: resumelb reloaded with SIGHUP (a changed
//! workers file), handed over to a new process, and stopped and started
//! (what `zdaemon restart` does); HAProxy reloaded in master-worker mode
//! (SIGUSR2, listeners passed on through its stats socket) and nginx
//! reloaded (SIGHUP). Prints the requests sent and how they ended.
//! FAULT_ONLY=restarts runs only those.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use resumelb::loadgen::{
    bin_dir, die_with_parent, run, spawn, Churn, ChurnSpec, LoadResult, LoadSpec, Rng, Spawned,
};

const POOLS: [&str; 2] = ["resume", "classic"];
const WORKERS: usize = 3;

/// tests/wsgi_app.py under waitress (the virtualenv `make deps` makes).
struct App {
    child: Child,
    port: u16,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_app(port: u16, delay_ms: u64) -> std::io::Result<App> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("RLB_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/bin/python"));
    let mut cmd = Command::new(python);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .arg(root.join("tests/wsgi_app.py"))
        .arg(port.to_string())
        .arg(format!("delay_ms={delay_ms}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("the app said {line:?}")))?;
    Ok(App { child, port })
}

fn load(lb: SocketAddr, seconds: u64, path: &'static str) -> std::io::Result<LoadResult> {
    run(&LoadSpec {
        targets: vec![lb],
        connections: 8,
        duration: Duration::from_secs(seconds),
        max_requests: 10_000_000,
        make: Arc::new(move |rng: &mut Rng| (format!("class{}", rng.below(10)), path.to_string())),
        demo_report: false,
        seed: 11,
    })
}

/// One phase's line; `faulty`: the faulty worker's port, when its
/// responses name it (demo workers).
fn row(fault: &str, pool: &str, phase: &str, r: &LoadResult, faulty: Option<u16>) {
    let all = r.requests + r.errors;
    let pct = |n: u64| {
        if all == 0 {
            0.0
        } else {
            100.0 * n as f64 / all as f64
        }
    };
    let slow = r.latencies.iter().filter(|&&us| us > 1_000_000).count() as u64;
    let share = faulty.map_or("-".to_string(), |port| {
        let suffix = format!(":{port}");
        let n: u64 = r
            .per_worker
            .iter()
            .filter(|(w, _)| w.ends_with(&suffix))
            .map(|(_, n)| n)
            .sum();
        format!("{:.1}", 100.0 * n as f64 / r.requests.max(1) as f64)
    });
    println!(
        "{fault:<13} {pool:<8} {phase:<15} {:>7.0} {:>6.2} {:>8.2} {:>8.2} {:>6.2} {:>7}",
        r.rate(),
        pct(r.errors),
        r.percentile_ms(50.0),
        r.percentile_ms(99.0),
        pct(slow),
        share
    );
}

fn worker(bins: &Path, app: &str) -> std::io::Result<Spawned> {
    spawn(
        &bins.join("resumelb-worker"),
        &[
            "-a",
            "127.0.0.1:0",
            "--app",
            app,
            "--threads",
            "4",
            "--demo-miss-ms",
            "0",
        ],
        "worker listening on ",
    )
}

fn lb(bins: &Path, pool: &str, workers: &[Spawned]) -> std::io::Result<Spawned> {
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.to_string()).collect();
    let mut args = vec!["-a", "127.0.0.1:0", "-p", pool];
    args.extend(addrs.iter().map(String::as_str));
    spawn(&bins.join("resumelb"), &args, "listening on ")
}

/// Applications (5 ms a request), an `upstream` worker in front of each,
/// and an LB with `pool` in front of the workers.
fn upstream_front(bins: &Path, pool: &str) -> std::io::Result<(Vec<App>, Vec<Spawned>, Spawned)> {
    let apps: Vec<App> = (0..WORKERS)
        .map(|_| start_app(0, 5))
        .collect::<std::io::Result<_>>()?;
    let workers: Vec<Spawned> = apps
        .iter()
        .map(|a| worker(bins, &format!("upstream:127.0.0.1:{}", a.port)))
        .collect::<std::io::Result<_>>()?;
    let front = lb(bins, pool, &workers)?;
    Ok((apps, workers, front))
}

/// A warm-up, the phase before the fault, the fault, and two phases after.
fn phases(
    fault: &str,
    pool: &str,
    lb: SocketAddr,
    path: &'static str,
    secs: u64,
    faulty: Option<u16>,
    cause: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    load(lb, 2, path)?;
    row(fault, pool, "before", &load(lb, secs, path)?, faulty);
    cause()?;
    row(
        fault,
        pool,
        &format!("0-{secs} s after"),
        &load(lb, secs, path)?,
        faulty,
    );
    let later = format!("{secs}-{} s after", 2 * secs);
    row(fault, pool, &later, &load(lb, secs, path)?, faulty);
    Ok(())
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status();
}

fn main() -> std::io::Result<()> {
    let bins = bin_dir();
    let secs: u64 = std::env::var("FAULT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let pools: &[&str] = if std::env::var("FAULT_ONLY").is_ok_and(|v| v == "restarts") {
        &[]
    } else {
        &POOLS
    };
    if !pools.is_empty() {
        println!(
            "faults: {WORKERS} workers x 4 threads, 8 connections, 10 classes, phases of {secs} s"
        );
        println!(
            "{:<13} {:<8} {:<15} {:>7} {:>6} {:>8} {:>8} {:>6} {:>7}",
            "fault", "pool", "phase", "req/s", "fail%", "p50 ms", "p99 ms", ">1s %", "faulty%"
        );
    }
    for &pool in pools {
        // The application behind one worker dies.
        let (mut apps, workers, front) = upstream_front(&bins, pool)?;
        phases("app down", pool, front.addr, "/echo", secs, None, || {
            drop(apps.remove(0));
            Ok(())
        })?;
        drop((front, workers, apps));

        // One application becomes 40 times slower.
        let (mut apps, workers, front) = upstream_front(&bins, pool)?;
        phases("slow app", pool, front.addr, "/echo", secs, None, || {
            let port = apps[0].port;
            drop(apps.remove(0));
            apps.push(start_app(port, 200)?);
            Ok(())
        })?;
        drop((front, workers, apps));

        // One worker hangs (SIGSTOP), then goes on.
        let workers: Vec<Spawned> = (0..WORKERS)
            .map(|_| worker(&bins, "demo"))
            .collect::<std::io::Result<_>>()?;
        let front = lb(&bins, pool, &workers)?;
        let port = Some(workers[0].addr.port());
        phases("hung worker", pool, front.addr, "/1", secs, port, || {
            signal(&workers[0].child, "STOP");
            Ok(())
        })?;
        signal(&workers[0].child, "CONT");
        let phase = format!("0-{secs} s cont.");
        row(
            "hung worker",
            pool,
            &phase,
            &load(front.addr, secs, "/1")?,
            port,
        );
        let phase = format!("{secs}-{} s cont.", 2 * secs);
        row(
            "hung worker",
            pool,
            &phase,
            &load(front.addr, secs, "/1")?,
            port,
        );
        drop((front, workers));
    }
    restarts(&bins, secs)
}

/// A free loopback port (bound and released).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A running server under restart: how to restart it, and what to drop.
struct Subject {
    name: &'static str,
    restart: &'static str,
    addr: SocketAddr,
    /// Restart it (the n-th time).
    go: Box<dyn FnMut(usize) -> std::io::Result<()>>,
}

/// Three restarts during a churn load of `secs`; one row.
fn churn_row(mut s: Subject, secs: u64) -> std::io::Result<()> {
    // Warm: every server has a connection to each backend.
    load(s.addr, 1, "/echo")?;
    let churn = Churn::start(&ChurnSpec {
        target: s.addr,
        keepalive: 6,
        fresh: 2,
        duration: Duration::from_secs(secs + 5),
    })?;
    let step = Duration::from_millis(secs * 1000 / 4);
    for n in 0..3 {
        std::thread::sleep(step);
        (s.go)(n)?;
    }
    std::thread::sleep(step);
    let t = churn.finish();
    let (sent, ok, refused, broken, bad, mixed) = t.counts();
    println!(
        "{:<9} {:<26} {sent:>7} {ok:>7} {refused:>8} {broken:>7} {bad:>8} {mixed:>6}",
        s.name, s.restart
    );
    Ok(())
}

fn restarts(bins: &Path, secs: u64) -> std::io::Result<()> {
    let secs = 2 * secs;
    println!(
        "\nrestarts: 6 keep-alive + 2 new-connection clients, GET and POST (1 in 3), \
         3 restarts in {secs} s, 2 applications"
    );
    println!(
        "{:<9} {:<26} {:>7} {:>7} {:>8} {:>7} {:>8} {:>6}",
        "server", "restart", "sent", "2xx", "refused", "broken", "non-2xx", "mixed"
    );
    let apps: Vec<App> = (0..2)
        .map(|_| start_app(0, 1))
        .collect::<std::io::Result<_>>()?;
    let workers: Vec<Spawned> = apps
        .iter()
        .map(|a| worker(bins, &format!("upstream:127.0.0.1:{}", a.port)))
        .collect::<std::io::Result<_>>()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("workers");
    let lb_bin = bins.join("resumelb");

    // SIGHUP with the workers file alternating between one and two workers.
    std::fs::write(&file, format!("{}\n{}\n", workers[0].addr, workers[1].addr))?;
    let port = free_port()?.to_string();
    let addr = format!("127.0.0.1:{port}");
    let args = ["-a", &addr, "--workers-file", file.to_str().unwrap_or("")];
    let front = spawn(&lb_bin, &args, "listening on ")?;
    let (pid, at) = (front.child.id(), front.addr);
    let (w0, w1) = (workers[0].addr, workers[1].addr);
    let f2 = file.clone();
    churn_row(
        Subject {
            name: "resumelb",
            restart: "reload (SIGHUP)",
            addr: at,
            go: Box::new(move |n| {
                let text = if n % 2 == 0 {
                    format!("{w0}\n")
                } else {
                    format!("{w0}\n{w1}\n")
                };
                std::fs::write(&f2, text)?;
                kill(pid, "HUP");
                Ok(())
            }),
        },
        secs,
    )?;
    drop(front);

    // Hand-over: a new process on the same address each time.
    std::fs::write(&file, format!("{w0}\n{w1}\n"))?;
    let first = spawn(&lb_bin, &args, "listening on ")?;
    let at = first.addr;
    let lbs = std::rc::Rc::new(std::cell::RefCell::new(vec![first]));
    let l2 = lbs.clone();
    let (b2, a2): (PathBuf, Vec<String>) =
        (lb_bin.clone(), args.iter().map(|a| a.to_string()).collect());
    churn_row(
        Subject {
            name: "resumelb",
            restart: "hand-over (new process)",
            addr: at,
            go: Box::new(move |_| {
                let a: Vec<&str> = a2.iter().map(String::as_str).collect();
                l2.borrow_mut().push(spawn(&b2, &a, "listening on ")?);
                Ok(())
            }),
        },
        secs,
    )?;
    drop(lbs);

    // Stop and start: what a supervisor's restart does.
    let first = spawn(&lb_bin, &args, "listening on ")?;
    let at = first.addr;
    let current = std::rc::Rc::new(std::cell::RefCell::new(Some(first)));
    let c2 = current.clone();
    let (b2, a2): (PathBuf, Vec<String>) =
        (lb_bin.clone(), args.iter().map(|a| a.to_string()).collect());
    churn_row(
        Subject {
            name: "resumelb",
            restart: "stop (SIGTERM) and start",
            addr: at,
            go: Box::new(move |_| {
                if let Some(mut old) = c2.borrow_mut().take() {
                    kill(old.child.id(), "TERM");
                    let _ = old.child.wait();
                }
                let a: Vec<&str> = a2.iter().map(String::as_str).collect();
                *c2.borrow_mut() = Some(spawn(&b2, &a, "listening on ")?);
                Ok(())
            }),
        },
        secs,
    )?;
    drop(current);

    let backends: Vec<String> = apps
        .iter()
        .map(|a| format!("127.0.0.1:{}", a.port))
        .collect();
    match which("haproxy") {
        Some(bin) => {
            let port = free_port()?;
            let d = dir.path();
            let servers: String = backends
                .iter()
                .enumerate()
                .map(|(i, b)| format!("    server s{i} {b}\n"))
                .collect();
            let cfg = format!(
                "global\n    master-worker\n    stats socket {}/haproxy.sock mode 600 expose-fd listeners level admin\n\
                 defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend f\n    bind 127.0.0.1:{port}\n    default_backend b\n\
                 backend b\n    balance roundrobin\n{servers}",
                d.display()
            );
            let path = d.join("haproxy.cfg");
            std::fs::write(&path, cfg)?;
            reload_row(
                "HAProxy",
                "reload (SIGUSR2, -W)",
                &bin,
                &[
                    "-W".as_ref(),
                    "-db".as_ref(),
                    "-f".as_ref(),
                    path.as_os_str(),
                ],
                port,
                "USR2",
                secs,
            )?;
        }
        None => println!("HAProxy   (not installed: make bench-peers)"),
    }
    match which("nginx") {
        Some(bin) => {
            let port = free_port()?;
            let d = dir.path();
            let servers: String = backends.iter().map(|b| format!("server {b}; ")).collect();
            let cfg = format!(
                "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n    access_log off;\n    upstream be {{ {servers}keepalive 16; }}\n\
                 server {{\n        listen 127.0.0.1:{port};\n        location / {{\n\
                 proxy_pass http://be;\n            proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n            proxy_set_header Host $host;\n\
                 }}\n    }}\n}}\n",
                d = d.display()
            );
            let path = d.join("nginx.conf");
            std::fs::write(&path, cfg)?;
            reload_row(
                "nginx",
                "reload (SIGHUP)",
                &bin,
                &[
                    "-p".as_ref(),
                    d.as_os_str(),
                    "-c".as_ref(),
                    path.as_os_str(),
                ],
                port,
                "HUP",
                secs,
            )?;
        }
        None => println!("nginx     (not installed: make bench-peers)"),
    }
    drop((workers, apps));
    Ok(())
}

/// A peer started as `bin args` on `port`, reloaded with `sig` three
/// times under load: one row.
fn reload_row(
    name: &'static str,
    restart: &'static str,
    bin: &Path,
    args: &[&std::ffi::OsStr],
    port: u16,
    sig: &'static str,
    secs: u64,
) -> std::io::Result<()> {
    let mut cmd = Command::new(bin);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    let result = wait_for_port(at).and_then(|()| {
        let pid = child.id();
        churn_row(
            Subject {
                name,
                restart,
                addr: at,
                go: Box::new(move |_| {
                    kill(pid, sig);
                    Ok(())
                }),
            },
            secs,
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// Wait until something accepts on `addr` (10 s at most).
fn wait_for_port(addr: SocketAddr) -> std::io::Result<()> {
    for _ in 0..500 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other(format!("nothing listens on {addr}")))
}
