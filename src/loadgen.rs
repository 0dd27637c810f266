//! Our load generator, for `make demo` and `make bench`: keep-alive HTTP/1.1
//! connections from client threads, bounded in time and in count, to
//! loopback addresses only.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::client::ResponseReader;

/// What one request should be: (Host header, path).
pub type RequestMaker = dyn Fn(&mut Rng) -> (String, String) + Send + Sync;

/// A load to apply.
pub struct LoadSpec {
    /// Connection `i` goes to `targets[i % targets.len()]`.
    pub targets: Vec<SocketAddr>,
    pub connections: usize,
    pub duration: Duration,
    /// Stop after this many requests in all.
    pub max_requests: u64,
    pub make: Arc<RequestMaker>,
    /// Read the demo app's JSON report (hits, misses).
    pub demo_report: bool,
    pub seed: u64,
}

/// What a load run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted.
    pub latencies: Vec<u32>,
    /// Requests per `X-Worker` value.
    pub per_worker: BTreeMap<String, u64>,
    pub hits: u64,
    pub misses: u64,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p / 100.0).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }

    pub fn hit_rate(&self) -> f64 {
        let all = self.hits + self.misses;
        if all == 0 {
            0.0
        } else {
            self.hits as f64 / all as f64
        }
    }
}

pub use crate::util::rng::Rng;

struct Response {
    worker: Option<String>,
    body: Vec<u8>,
    close: bool,
}

fn read_response(s: &mut TcpStream, reader: &mut ResponseReader) -> io::Result<Response> {
    let head = reader
        .head(s, false)?
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let (body, complete) = reader.read_body(s, &head);
    if !complete {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if head.code != 200 {
        return Err(io::Error::other(format!("status {}", head.code)));
    }
    Ok(Response {
        worker: head.header("x-worker").map(str::to_owned),
        body,
        close: !head.keep_alive,
    })
}

/// Apply a load and measure it.
pub fn run(spec: &LoadSpec) -> io::Result<LoadResult> {
    if spec.targets.is_empty() || spec.targets.iter().any(|t| !t.ip().is_loopback()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the load generator only targets loopback addresses",
        ));
    }
    let start = Instant::now();
    let deadline = start + spec.duration;
    let per_conn = spec.max_requests / spec.connections.max(1) as u64 + 1;
    let threads: Vec<_> = (0..spec.connections)
        .map(|i| {
            let make = spec.make.clone();
            let target = spec.targets[i % spec.targets.len()];
            let demo = spec.demo_report;
            let seed = spec.seed.wrapping_add(i as u64 * 7919);
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                let mut r = LoadResult::default();
                let mut conn: Option<TcpStream> = None;
                let mut buf = ResponseReader::new();
                let mut sent = 0;
                while Instant::now() < deadline && sent < per_conn {
                    sent += 1;
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => match TcpStream::connect(target) {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                                buf = ResponseReader::new();
                                conn.insert(s)
                            }
                            Err(_) => {
                                r.errors += 1;
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        },
                    };
                    let (host, path) = make(&mut rng);
                    let t0 = Instant::now();
                    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                    let result = s
                        .write_all(req.as_bytes())
                        .and_then(|_| read_response(s, &mut buf));
                    match result {
                        Ok(resp) => {
                            let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                            r.latencies.push(us);
                            r.requests += 1;
                            if let Some(w) = resp.worker {
                                *r.per_worker.entry(w).or_default() += 1;
                            }
                            if demo {
                                if let Ok(j) =
                                    serde_json::from_slice::<serde_json::Value>(&resp.body)
                                {
                                    r.hits += j["hits"].as_u64().unwrap_or(0);
                                    r.misses += j["misses"].as_u64().unwrap_or(0);
                                }
                            }
                            if resp.close {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            r.errors += 1;
                            conn = None;
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for t in threads {
        let r = t
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))?;
        total.requests += r.requests;
        total.errors += r.errors;
        total.latencies.extend(r.latencies);
        for (w, n) in r.per_worker {
            *total.per_worker.entry(w).or_default() += n;
        }
        total.hits += r.hits;
        total.misses += r.misses;
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    Ok(total)
}

/// A process of ours started for a demo or benchmark; killed on drop.
pub struct Spawned {
    pub child: std::process::Child,
    /// The address it logged it listens on.
    pub addr: SocketAddr,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Have the child killed when the process that started it dies, so that an
/// interrupted demo or benchmark leaves nothing running.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Start `bin` and wait (up to 10 s) for its stderr line `… <ready> ADDR …`.
pub fn spawn(bin: &std::path::Path, args: &[&str], ready: &str) -> io::Result<Spawned> {
    spawn_env(bin, args, &[], ready)
}

/// [`spawn`] with these environment variables set for the child.
pub fn spawn_env(
    bin: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    ready: &str,
) -> io::Result<Spawned> {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(bin);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", bin.display())))?;
    let err = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("no stderr"))?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let ready = ready.to_string();
    // RLB_CHILD_LOG=1 passes the children's log lines on (debugging).
    let echo = std::env::var_os("RLB_CHILD_LOG").is_some();
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("[{name}] {line}");
            }
            if !sent {
                if let Some(rest) = line.split(&ready).nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
            // Keep draining so that the child never blocks on stderr.
        }
    });
    let mut s = Spawned {
        child,
        addr: "127.0.0.1:0".parse().expect("literal"),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| io::Error::other(format!("{} did not start", bin.display())))?;
    s.addr = addr
        .parse()
        .map_err(|_| io::Error::other(format!("bad address {addr:?}")))?;
    Ok(s)
}

/// The directory of our binaries, next to a running example or bench, or
/// `RLB_BIN_DIR` when set (`BENCH_BASELINE` runs an older build so).
pub fn bin_dir() -> std::path::PathBuf {
    // Another build's binaries (an older revision's, to compare with).
    if let Some(dir) = std::env::var_os("RLB_BIN_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if dir.ends_with("examples") || dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_loopback_targets() {
        let spec = LoadSpec {
            targets: vec!["192.0.2.1:80".parse().unwrap()],
            connections: 1,
            duration: Duration::from_millis(1),
            max_requests: 1,
            make: Arc::new(|_| ("a".into(), "/".into())),
            demo_report: false,
            seed: 1,
        };
        assert!(run(&spec).is_err());
    }

    #[test]
    fn percentiles() {
        let r = LoadResult {
            latencies: (1..=100).map(|i| i * 1000).collect(),
            ..LoadResult::default()
        };
        assert_eq!(r.percentile_ms(50.0), 51.0);
        assert_eq!(r.percentile_ms(99.0), 99.0);
    }
}

/// A load for restarts and reloads: keep-alive clients that reconnect
/// only when told `Connection: close`, clients with a new connection per
/// request, GETs and every third request a POST with a body, each counted
/// by how it ended. Runs until `stop` or `duration`.
#[derive(Debug, Clone)]
pub struct ChurnSpec {
    pub target: SocketAddr,
    pub keepalive: usize,
    pub fresh: usize,
    pub duration: Duration,
}

/// How a churn load's requests ended.
#[derive(Debug, Default)]
pub struct ChurnTally {
    pub sent: std::sync::atomic::AtomicU64,
    /// 2xx, with the request's Host in the body (both the demo app and
    /// the test WSGI app's `/echo` say it).
    pub ok: std::sync::atomic::AtomicU64,
    /// Connections refused (or failing to open).
    pub refused: std::sync::atomic::AtomicU64,
    /// Resets, and connections closed with a request unanswered.
    pub broken: std::sync::atomic::AtomicU64,
    pub not_2xx: std::sync::atomic::AtomicU64,
    /// A 2xx response for another request.
    pub mixed_up: std::sync::atomic::AtomicU64,
}

impl ChurnTally {
    fn get(n: &std::sync::atomic::AtomicU64) -> u64 {
        n.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// (sent, ok, refused, broken, non-2xx, mixed up).
    pub fn counts(&self) -> (u64, u64, u64, u64, u64, u64) {
        (
            Self::get(&self.sent),
            Self::get(&self.ok),
            Self::get(&self.refused),
            Self::get(&self.broken),
            Self::get(&self.not_2xx),
            Self::get(&self.mixed_up),
        )
    }

    pub fn summary(&self) -> String {
        let (s, ok, r, b, n, m) = self.counts();
        format!("sent {s}, ok {ok}, refused {r}, broken {b}, non-2xx {n}, mixed up {m}")
    }
}

/// A running churn load.
pub struct Churn {
    stop: Arc<std::sync::atomic::AtomicBool>,
    pub tally: Arc<ChurnTally>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Churn {
    /// Start the load (loopback targets only).
    pub fn start(spec: &ChurnSpec) -> io::Result<Churn> {
        if !spec.target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the load generator only targets loopback addresses",
            ));
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tally = Arc::new(ChurnTally::default());
        let end = Instant::now() + spec.duration;
        let threads = (0..spec.keepalive + spec.fresh)
            .map(|i| {
                let (stop, tally) = (stop.clone(), tally.clone());
                let (target, reuse) = (spec.target, i < spec.keepalive);
                std::thread::spawn(move || churn_client(target, reuse, i, end, &stop, &tally))
            })
            .collect();
        Ok(Churn {
            stop,
            tally,
            threads,
        })
    }

    /// Stop and wait for the clients.
    pub fn finish(self) -> Arc<ChurnTally> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.tally
    }
}

fn churn_client(
    target: SocketAddr,
    reuse: bool,
    id: usize,
    end: Instant,
    stop: &std::sync::atomic::AtomicBool,
    t: &ChurnTally,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut conn: Option<(TcpStream, ResponseReader)> = None;
    let mut n = 0u64;
    while !stop.load(Relaxed) && Instant::now() < end {
        if conn.is_none() {
            match TcpStream::connect(target) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    conn = Some((s, ResponseReader::new()));
                }
                Err(_) => {
                    t.refused.fetch_add(1, Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            }
        }
        let Some((s, reader)) = conn.as_mut() else {
            continue;
        };
        n += 1;
        let close = if reuse { "" } else { "Connection: close\r\n" };
        let site = format!("site{}.example", n % 7);
        let req = if n % 3 == 0 {
            let body = format!("{id}-{n}").repeat(20);
            format!(
                "POST /echo?c={id}-{n} HTTP/1.1\r\nHost: {site}\r\n{close}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            format!("GET /echo?c={id}-{n} HTTP/1.1\r\nHost: {site}\r\n{close}\r\n")
        };
        t.sent.fetch_add(1, Relaxed);
        if s.write_all(req.as_bytes()).is_err() {
            t.broken.fetch_add(1, Relaxed);
            conn = None;
            continue;
        }
        let head = match reader.head(s, false) {
            Ok(Some(h)) => h,
            _ => {
                t.broken.fetch_add(1, Relaxed);
                conn = None;
                continue;
            }
        };
        let (body, complete) = reader.read_body(s, &head);
        if !complete {
            t.broken.fetch_add(1, Relaxed);
            conn = None;
            continue;
        }
        if !(200..300).contains(&head.code) {
            t.not_2xx.fetch_add(1, Relaxed);
        } else if !String::from_utf8_lossy(&body).contains(&format!("\"{site}\"")) {
            t.mixed_up.fetch_add(1, Relaxed);
        } else {
            t.ok.fetch_add(1, Relaxed);
        }
        if !reuse || !head.keep_alive {
            conn = None;
        }
    }
}
