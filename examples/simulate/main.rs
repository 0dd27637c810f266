//! `make simulate`: the pool simulator. The real pool code (`-p resume`,
//! `-p classic`, `-p classless`), driven by simulated clients and workers
//! in simulated time (see `sim.rs` for the model), so that a pool's
//! behaviour in a scenario is a matter of seconds and repeats exactly for
//! a seed. One table per scenario: for each pool and phase, requests/s,
//! hit rate, p50/p99, requests over 1 s and each worker's share.
//!
//! `simulate` runs every scenario; `simulate --scenario w1b,hung` some;
//! `simulate --help` lists the options for a workload of your own.

mod sim;
#[path = "../bench-compare/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::time::{Duration, Instant};

use resumelb::pool::{Placements, PoolKind, Settings};
use sim::{Config, Fault, Phase, Sim, Workload};

/// A named scenario: what it shows, and its configuration for a pool.
struct Scenario {
    name: &'static str,
    what: &'static str,
    config: fn(PoolKind, u64) -> Config,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn phase(name: &str, from: f64, to: f64) -> (String, Duration, Duration) {
    (name.to_string(), secs(from), secs(to))
}

/// The W1 workload of `make bench-compare`: 60 zipf sites, 4 workers x 4
/// threads with 5,000 cached objects each, 64 connections, 2 cores.
fn w1(pool: PoolKind, seed: u64, zipf: f64, objects: usize, miss_ms: u64) -> Config {
    Config {
        workers: vec![4; 4],
        lbs: 1,
        connections: 64,
        workload: Workload::Sites {
            sites: 60,
            zipf,
            objects,
            sigma: 100.0,
            miss: Duration::from_millis(miss_ms),
            cache: 5000,
        },
        cores: 2,
        cpu: Duration::from_micros(80),
        hop: Duration::from_micros(25),
        history: 100,
        pool,
        settings: lb_settings(),
        faults: Vec::new(),
        phases: vec![phase("steady", 10.0, 25.0)],
        seed,
    }
}

/// `make faults`' set-up: 3 workers x 4 threads, 10 classes, 8
/// connections, résumés every 9,999 requests (the worker's default).
fn faults(pool: PoolKind, seed: u64, service: Duration) -> Config {
    Config {
        workers: vec![4; 3],
        lbs: 1,
        connections: 8,
        workload: Workload::Uniform {
            classes: 10,
            service,
        },
        cores: 2,
        cpu: Duration::from_micros(40),
        hop: Duration::from_micros(25),
        history: 9999,
        pool,
        settings: lb_settings(),
        faults: Vec::new(),
        phases: Vec::new(),
        seed,
    }
}

/// `resumelb`'s command-line defaults.
fn lb_settings() -> Settings {
    Settings {
        variance: 4.0,
        ..Settings::default()
    }
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "w1a",
        what: "W1a: zipf 1.0, 4 objects, miss 5 ms (CPU-bound)",
        config: |p, s| w1(p, s, 1.0, 4, 5),
    },
    Scenario {
        name: "w1b",
        what: "W1b: zipf 1.0, 8 objects, miss 20 ms (miss-heavy)",
        config: |p, s| w1(p, s, 1.0, 8, 20),
    },
    Scenario {
        name: "w1c",
        what: "W1c: zipf 1.4, 4 objects, miss 10 ms (very skewed)",
        config: |p, s| w1(p, s, 1.4, 4, 10),
    },
    Scenario {
        name: "3lbs",
        what: "W1b with 3 LBs sharing the workers, connections spread over them",
        config: |p, s| Config {
            lbs: 3,
            ..w1(p, s, 1.0, 8, 20)
        },
    },
    Scenario {
        name: "threads",
        what: "W1b with workers of 2, 4, 6 and 8 threads (shares should follow)",
        config: |p, s| Config {
            workers: vec![2, 4, 6, 8],
            ..w1(p, s, 1.0, 8, 20)
        },
    },
    Scenario {
        name: "added",
        what: "W1b with 3 workers; a 4th joins at 15 s",
        config: |p, s| Config {
            workers: vec![4; 3],
            faults: vec![(secs(15.0), Fault::Add(4))],
            phases: vec![
                phase("before", 10.0, 15.0),
                phase("0-5 s after", 15.0, 20.0),
                phase("5-15 s after", 20.0, 30.0),
            ],
            ..w1(p, s, 1.0, 8, 20)
        },
    },
    Scenario {
        name: "slow",
        what: "make faults' slow app: 5 ms requests, one worker 40x slower at 10 s",
        config: |p, s| Config {
            faults: vec![(secs(10.0), Fault::Slow(0, 40.0))],
            phases: vec![
                phase("before", 5.0, 10.0),
                phase("0-5 s after", 10.0, 15.0),
                phase("5-10 s after", 15.0, 20.0),
            ],
            ..faults(p, s, Duration::from_millis(5))
        },
    },
    Scenario {
        name: "hung",
        what:
            "make faults' hung worker: fast requests, worker 1 stopped at 10 s, continued at 30 s",
        config: |p, s| Config {
            faults: vec![(secs(10.0), Fault::Stop(0)), (secs(30.0), Fault::Cont(0))],
            phases: vec![
                phase("before", 5.0, 10.0),
                phase("0-5 s stopped", 10.0, 15.0),
                phase("5-10 s stopped", 15.0, 20.0),
                phase("0-5 s after", 30.0, 35.0),
                phase("5-10 s after", 35.0, 40.0),
            ],
            ..faults(p, s, Duration::ZERO)
        },
    },
    Scenario {
        name: "hung-short",
        what: "the hung worker, stopped for 5 s only (under the dead-worker timeout)",
        config: |p, s| Config {
            faults: vec![(secs(10.0), Fault::Stop(0)), (secs(15.0), Fault::Cont(0))],
            phases: vec![
                phase("before", 5.0, 10.0),
                phase("stopped", 10.0, 15.0),
                phase("0-5 s after", 15.0, 20.0),
                phase("5-10 s after", 20.0, 25.0),
            ],
            ..faults(p, s, Duration::ZERO)
        },
    },
];

fn table(title: &str, rows: &[(PoolKind, (Vec<Phase>, Placements))]) -> String {
    let mut out = format!(
        "{title}\n{:<10} {:<15} {:>8} {:>7} {:>8} {:>8} {:>6}  shares %\n",
        "pool", "phase", "req/s", "hits", "p50 ms", "p99 ms", ">1s"
    );
    for (pool, (phases, placed)) in rows {
        for p in phases {
            let shares: Vec<String> = p.shares().iter().map(|s| format!("{s:.0}")).collect();
            out.push_str(&format!(
                "{:<10} {:<15} {:>8.0} {:>7} {:>8.2} {:>8.2} {:>6}  {}\n",
                pool.name(),
                p.name,
                p.rate(),
                p.hit_rate()
                    .map_or("-".to_string(), |h| format!("{:.1}%", h * 100.0)),
                p.percentile_ms(50.0),
                p.percentile_ms(99.0),
                p.over(Duration::from_secs(1)),
                shares.join("/")
            ));
        }
        let all = placed.skilled + placed.new + placed.spilled + placed.moved;
        if all > 0 {
            out.push_str(&format!(
                "{:<10} placed: {} to skilled workers, {} new classes, {} spilled, {} moved\n",
                pool.name(),
                placed.skilled,
                placed.new,
                placed.spilled,
                placed.moved
            ));
        }
    }
    out
}

fn options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "",
        "scenario",
        "scenarios to run, comma-separated, or custom (default: all)",
        "NAMES",
    );
    o.optopt(
        "",
        "pools",
        "pools to compare (default resume,classic)",
        "POOLS",
    );
    o.optopt("", "seed", "random seed (default 1)", "N");
    o.optopt(
        "",
        "workers",
        "custom: threads of each worker, e.g. 4,4,4,4",
        "LIST",
    );
    o.optopt(
        "",
        "lbs",
        "custom: LBs sharing the workers (default 1)",
        "N",
    );
    o.optopt(
        "",
        "connections",
        "custom: client connections (default 64)",
        "N",
    );
    o.optopt(
        "",
        "sites",
        "custom: request classes (sites, default 60)",
        "N",
    );
    o.optopt(
        "",
        "zipf",
        "custom: zipf exponent of site popularity (default 1.0)",
        "S",
    );
    o.optopt(
        "",
        "objects",
        "custom: objects a request names (default 4)",
        "N",
    );
    o.optopt(
        "",
        "sigma",
        "custom: spread of object ids (default 100)",
        "X",
    );
    o.optopt(
        "",
        "miss-ms",
        "custom: cost of a cache miss (default 5)",
        "MS",
    );
    o.optopt(
        "",
        "cache",
        "custom: objects each worker caches (default 5000)",
        "N",
    );
    o.optopt(
        "",
        "cpu-us",
        "custom: processor time of a request (default 80)",
        "US",
    );
    o.optopt(
        "",
        "cores",
        "custom: processors the workers share (default 2)",
        "N",
    );
    o.optopt(
        "",
        "history",
        "custom: the workers' résumé history (default 100)",
        "N",
    );
    o.optopt(
        "",
        "seconds",
        "custom: measured seconds after 10 s of warm-up (default 15)",
        "S",
    );
    o.optopt(
        "",
        "slow-factor",
        "the résumé pool's --slow-factor (default 4)",
        "X",
    );
    o.optopt(
        "",
        "spill-factor",
        "the résumé pool's --spill-factor (default 4)",
        "X",
    );
    o.optopt(
        "",
        "max-depth",
        "the résumé pool's --max-depth (default 32)",
        "N",
    );
    o.optflag("h", "help", "print this help");
    o
}

fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: T) -> Result<T, String> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{name}: not a number: {v}")),
    }
}

fn custom(m: &getopts::Matches, pool: PoolKind, seed: u64) -> Result<Config, String> {
    let workers = match m.opt_str("workers") {
        None => vec![4; 4],
        Some(list) => list
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .map_err(|_| format!("--workers: not a number: {t}"))
            })
            .collect::<Result<Vec<usize>, String>>()?,
    };
    if workers.is_empty() || workers.contains(&0) {
        return Err("--workers: every worker needs at least one thread".into());
    }
    let seconds: f64 = num(m, "seconds", 15.0)?;
    Ok(Config {
        workers,
        lbs: num::<usize>(m, "lbs", 1)?.max(1),
        connections: num::<usize>(m, "connections", 64)?.max(1),
        workload: Workload::Sites {
            sites: num::<usize>(m, "sites", 60)?.max(1),
            zipf: num(m, "zipf", 1.0)?,
            objects: num(m, "objects", 4)?,
            sigma: num(m, "sigma", 100.0)?,
            miss: Duration::from_secs_f64(num::<f64>(m, "miss-ms", 5.0)?.max(0.0) / 1000.0),
            cache: num::<usize>(m, "cache", 5000)?.max(1),
        },
        cores: num::<usize>(m, "cores", 2)?.max(1),
        cpu: Duration::from_secs_f64(num::<f64>(m, "cpu-us", 80.0)?.max(0.0) / 1e6),
        hop: Duration::from_micros(25),
        history: num::<u64>(m, "history", 100)?.max(1),
        pool,
        settings: lb_settings(),
        faults: Vec::new(),
        phases: vec![phase("steady", 10.0, 10.0 + seconds.max(1.0))],
        seed,
    })
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = options();
    let m = opts.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        print!("{}", opts.usage("Usage: simulate [options]"));
        println!("\nScenarios:");
        for s in SCENARIOS {
            println!("  {:<11} {}", s.name, s.what);
        }
        println!(
            "  {:<11} the options marked custom (a cache workload)",
            "custom"
        );
        return Ok(());
    }
    let seed: u64 = num(&m, "seed", 1)?;
    let pools: Vec<PoolKind> = m
        .opt_str("pools")
        .unwrap_or_else(|| "resume,classic".into())
        .split(',')
        .map(|p| p.trim().parse::<PoolKind>())
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = match m.opt_str("scenario") {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        None if m.opt_present("workers") || m.opt_present("sites") => vec!["custom".into()],
        None => SCENARIOS.iter().map(|s| s.name.to_string()).collect(),
    };
    for name in &names {
        let started = Instant::now();
        let mut rows = Vec::new();
        let what = if name == "custom" {
            "custom workload".to_string()
        } else {
            SCENARIOS
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| format!("unknown scenario {name:?} (see --help)"))?
                .what
                .to_string()
        };
        for &pool in &pools {
            let mut cfg = if name == "custom" {
                custom(&m, pool, seed)?
            } else {
                let s = SCENARIOS.iter().find(|s| s.name == name).expect("checked");
                (s.config)(pool, seed)
            };
            cfg.settings.slow_factor = num(&m, "slow-factor", cfg.settings.slow_factor)?;
            cfg.settings.spill_factor = num(&m, "spill-factor", cfg.settings.spill_factor)?;
            cfg.settings.max_depth = num(&m, "max-depth", cfg.settings.max_depth)?;
            rows.push((pool, Sim::new(cfg).run()));
        }
        println!(
            "{}({:.1} s)\n",
            table(&format!("{name}: {what}"), &rows),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("simulate: {e}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, pool: PoolKind, seed: u64) -> (Vec<Phase>, Placements) {
        let s = SCENARIOS.iter().find(|s| s.name == name).unwrap();
        Sim::new((s.config)(pool, seed)).run()
    }

    #[test]
    fn a_seed_gives_the_same_run() {
        let (a, pa) = run("slow", PoolKind::Resume, 7);
        let (b, pb) = run("slow", PoolKind::Resume, 7);
        assert_eq!(pa, pb);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (x.requests, &x.latencies, &x.per_worker),
                (y.requests, &y.latencies, &y.per_worker)
            );
        }
        let (c, _) = run("slow", PoolKind::Resume, 8);
        assert_ne!(a[0].latencies, c[0].latencies, "another seed, another run");
    }

    /// In simulated time, so exact for the seed: the résumé pool passes
    /// over a worker made 40 times slower, the classic pool does not.
    #[test]
    fn the_resume_pool_contains_a_slow_worker() {
        let (phases, _) = run("slow", PoolKind::Resume, 1);
        let later = &phases[2];
        assert!(
            later.percentile_ms(99.0) < 100.0,
            "p99 {}",
            later.percentile_ms(99.0)
        );
        assert!(later.shares()[0] < 1.0, "{:?}", later.shares());
        let (phases, _) = run("slow", PoolKind::Classic, 1);
        assert!(phases[2].percentile_ms(99.0) > 100.0);
    }

    /// A stopped worker: its requests go elsewhere after the silent-worker
    /// time, and once it goes on it serves a share again.
    #[test]
    fn a_stopped_worker_is_worked_around_and_comes_back() {
        let (phases, _) = run("hung-short", PoolKind::Resume, 1);
        let stopped = &phases[1];
        let within = 1.0 - stopped.over(Duration::from_secs(1)) as f64 / stopped.requests as f64;
        assert!(within >= 0.95, "{within}");
        assert!(phases[3].shares()[0] >= 5.0, "{:?}", phases[3].shares());
    }
}
