//! `make demo`: four demo workers and a resumelb on loopback, a classed
//! workload (40 sites with skewed popularity) for a while with the résumé
//! pool, then the same with the classless pool; one table of the results.
//!
//! DEMO_SECONDS sets the time per pool (default 20).

use std::sync::Arc;
use std::time::Duration;

use resumelb::loadgen::{bin_dir, run, spawn, LoadResult, LoadSpec, Rng};

const WORKERS: usize = 4;
const SITES: usize = 40;
const OBJECTS_PER_SITE: u64 = 100;

fn workload() -> Arc<resumelb::loadgen::RequestMaker> {
    // Zipf-like popularity: site i has weight 1/(i+1).
    let weights: Vec<f64> = (0..SITES).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    let total: f64 = weights.iter().sum();
    let cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect();
    Arc::new(move |rng: &mut Rng| {
        let u = rng.unit();
        let site = cumulative.iter().position(|&c| u < c).unwrap_or(SITES - 1);
        let a = rng.below(OBJECTS_PER_SITE);
        let b = rng.below(OBJECTS_PER_SITE);
        (format!("site{site}.example.com"), format!("/{a}_{b}"))
    })
}

fn one_run(pool: &str, seconds: u64) -> std::io::Result<LoadResult> {
    let bins = bin_dir();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(spawn(
            &bins.join("resumelb-worker"),
            &[
                "-a",
                "127.0.0.1:0",
                "--app",
                "demo",
                "--threads",
                "2",
                "--history",
                "100",
                "--demo-cache-size",
                "1000",
                "--demo-miss-ms",
                "5",
            ],
            "worker listening on ",
        )?);
    }
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.to_string()).collect();
    let mut args = vec!["-a", "127.0.0.1:0", "-p", pool];
    args.extend(addrs.iter().map(String::as_str));
    let lb = spawn(&bins.join("resumelb"), &args, "listening on ")?;
    std::thread::sleep(Duration::from_millis(500));
    let result = run(&LoadSpec {
        targets: vec![lb.addr],
        connections: 16,
        duration: Duration::from_secs(seconds),
        max_requests: 5_000_000,
        make: workload(),
        demo_report: true,
        seed: 42,
    })?;
    drop(lb);
    drop(workers);
    Ok(result)
}

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::var("DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!(
        "resumelb demo: {WORKERS} workers (2 threads, cache 1000 objects, miss 5 ms), \
         {SITES} sites x {OBJECTS_PER_SITE} objects, 16 connections, {seconds} s per pool"
    );
    let mut rows = Vec::new();
    for pool in ["resume", "classless"] {
        eprintln!("running the {pool} pool for {seconds} s ...");
        rows.push((pool, one_run(pool, seconds)?));
    }
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>9} {:>7}  requests per worker",
        "pool", "req/s", "p50 ms", "p99 ms", "hit rate", "errors"
    );
    for (pool, r) in &rows {
        let per: Vec<String> = r.per_worker.values().map(|n| n.to_string()).collect();
        println!(
            "{:<10} {:>9.0} {:>8.1} {:>8.1} {:>8.1}% {:>7}  {}",
            pool,
            r.rate(),
            r.percentile_ms(50.0),
            r.percentile_ms(99.0),
            r.hit_rate() * 100.0,
            r.errors,
            per.join(" ")
        );
    }
    Ok(())
}
