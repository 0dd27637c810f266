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

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use resumelb::loadgen::{bin_dir, die_with_parent, run, spawn, LoadResult, LoadSpec, Rng, Spawned};

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
    println!(
        "faults: {WORKERS} workers x 4 threads, 8 connections, 10 classes, phases of {secs} s"
    );
    println!(
        "{:<13} {:<8} {:<15} {:>7} {:>6} {:>8} {:>8} {:>6} {:>7}",
        "fault", "pool", "phase", "req/s", "fail%", "p50 ms", "p99 ms", ">1s %", "faulty%"
    );
    for pool in POOLS {
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
    Ok(())
}
