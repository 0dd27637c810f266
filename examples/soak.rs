//! `make soak`: the chaos soak (see `resumelb::soak`). SOAK_SECONDS sets its
//! length (default 120).

use std::time::Duration;

use resumelb::loadgen::bin_dir;
use resumelb::soak::{run, SoakConfig};

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let bins = bin_dir();
    eprintln!("chaos soak for {seconds} s: 1 LB, 4 demo workers, 8 connections, a worker killed every 3 s");
    let report = run(&SoakConfig {
        lb: bins.join("resumelb"),
        worker: bins.join("resumelb-worker"),
        duration: Duration::from_secs(seconds),
        workers: 4,
        connections: 8,
        chaos_every: Duration::from_secs(3),
        seed: 20261127,
    })?;
    print!("{}", report.text());
    let verdict = report.truncated_undetected == 0
        && report.temp_files_left == 0
        && report.get_success_rate() >= 0.999;
    println!("verdict: {}", if verdict { "PASS" } else { "FAIL" });
    if verdict {
        Ok(())
    } else {
        Err(std::io::Error::other("soak targets missed"))
    }
}
