//! `make bench`: the LB's raw overhead. A tiny HTTP server answers `ok`;
//! the same load runs straight at it, then through resumelb and a worker
//! (upstream app) in front of it. Prints requests/s and p50/p99 latency for
//! both and their ratio, and the LB's resident memory. Figures, not
//! assertions. BENCH_SECONDS sets the time per run (default 5).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use resumelb::loadgen::{bin_dir, run, spawn, LoadResult, LoadSpec, Rng};
use resumelb::testing::{raise_nofile, rss_kib};

/// A keep-alive HTTP/1.1 server answering every request with "ok".
fn tiny_server() -> std::io::Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    Ok(addr)
}

fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let resp =
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
            if s.write_all(resp).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn load(target: std::net::SocketAddr, seconds: u64) -> std::io::Result<LoadResult> {
    run(&LoadSpec {
        targets: vec![target],
        connections: 16,
        duration: Duration::from_secs(seconds),
        max_requests: 10_000_000,
        make: Arc::new(|rng: &mut Rng| (format!("site{}", rng.below(10)), "/".to_string())),
        demo_report: false,
        seed: 7,
    })
}

fn main() -> std::io::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    raise_nofile(20_000);
    let upstream = tiny_server()?;
    let direct = load(upstream, seconds)?;

    let bins = bin_dir();
    let app = format!("upstream:{upstream}");
    let worker = spawn(
        &bins.join("resumelb-worker"),
        &["-a", "127.0.0.1:0", "--app", &app, "--threads", "16"],
        "worker listening on ",
    )?;
    let waddr = worker.addr.to_string();
    let lb = spawn(
        &bins.join("resumelb"),
        &["-a", "127.0.0.1:0", "-m", "12000", &waddr],
        "listening on ",
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let via = load(lb.addr, seconds)?;
    let lb_rss = rss_kib(lb.child.id());

    println!("W2 raw overhead: tiny response, 16 keep-alive connections, {seconds} s each, 2 cores shared by all processes");
    println!(
        "{:<22} {:>10} {:>8} {:>8} {:>7}",
        "path", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for (name, r) in [("direct to upstream", &direct), ("through resumelb", &via)] {
        println!(
            "{:<22} {:>10.0} {:>8.2} {:>8.2} {:>7}",
            name,
            r.rate(),
            r.percentile_ms(50.0),
            r.percentile_ms(99.0),
            r.errors
        );
    }
    println!(
        "ratio (through / direct): req/s {:.2}, p50 {:.2}x, p99 {:.2}x",
        via.rate() / direct.rate().max(1e-9),
        via.percentile_ms(50.0) / direct.percentile_ms(50.0).max(1e-9),
        via.percentile_ms(99.0) / direct.percentile_ms(99.0).max(1e-9),
    );
    println!("LB resident memory after the run: {lb_rss} KiB");

    // Resource bound: 10,000 idle keep-alive connections.
    let limit = raise_nofile(20_000);
    if limit < 10_500 {
        println!("10,000 idle connections: skipped (descriptor limit {limit})");
        return Ok(());
    }
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(lb.addr)?);
    }
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let check = load(lb.addr, 1)?;
    println!(
        "10,000 idle connections: LB RSS {} KiB (was {lb_rss} KiB); meanwhile {:.0} req/s, p99 {:.2} ms (checked in {:?})",
        rss_kib(lb.child.id()),
        check.rate(),
        check.percentile_ms(99.0),
        t0.elapsed()
    );
    drop(idle);
    Ok(())
}
