//! The chaos soak (`make soak`; a short one in `make test`): an LB and four
//! demo workers on loopback, a mixed load of GET/HEAD/POST (bodies up to
//! 1 MiB, some chunked) while workers are killed (SIGKILL, sometimes
//! SIGTERM) and restarted. Every response is checked: complete and correct,
//! a clean 502/503, or cut off in a way the client can tell. Bounded in time
//! and count; loopback only.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::client::ResponseReader;
use crate::loadgen::{spawn, Rng, Spawned};
use crate::util::procinfo::{fd_count, rss_kib};
use crate::worker::demo::{fnv1a, pattern, FNV_OFFSET};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub lb: PathBuf,
    pub worker: PathBuf,
    pub duration: Duration,
    pub workers: usize,
    pub connections: usize,
    /// Time between two worker kills.
    pub chaos_every: Duration,
    pub seed: u64,
}

/// What the soak saw.
#[derive(Debug, Default, Clone)]
pub struct SoakReport {
    pub requests: u64,
    pub gets: u64,
    pub gets_ok: u64,
    pub ok: u64,
    pub bad_gateway: u64,
    pub unavailable: u64,
    pub truncated_detected: u64,
    pub truncated_undetected: u64,
    pub no_response: u64,
    pub kills: u64,
    pub terms: u64,
    pub fds: [usize; 3],
    pub rss_kib: [u64; 3],
    pub temp_files_left: usize,
}

impl SoakReport {
    pub fn get_success_rate(&self) -> f64 {
        if self.gets == 0 {
            1.0
        } else {
            self.gets_ok as f64 / self.gets as f64
        }
    }

    /// The report as text, one figure a line.
    pub fn text(&self) -> String {
        format!(
            "requests {}\nGET success {:.3}% ({} of {})\nok {}\n502 {}\n503 {}\ntruncated and detected {}\ntruncated and undetected {}\nno response {}\nworkers killed {} (SIGKILL) and {} (SIGTERM)\nLB fds start/middle/end {}/{}/{}\nLB RSS KiB start/middle/end {}/{}/{}\ntemp files left {}\n",
            self.requests,
            self.get_success_rate() * 100.0,
            self.gets_ok,
            self.gets,
            self.ok,
            self.bad_gateway,
            self.unavailable,
            self.truncated_detected,
            self.truncated_undetected,
            self.no_response,
            self.kills,
            self.terms,
            self.fds[0],
            self.fds[1],
            self.fds[2],
            self.rss_kib[0],
            self.rss_kib[1],
            self.rss_kib[2],
            self.temp_files_left,
        )
    }
}

/// A free port below the ephemeral range, so that a killed worker can come
/// back on it.
fn stable_port(rng: &mut Rng) -> u16 {
    loop {
        let p = 20_000 + rng.below(12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn temp_files() -> usize {
    std::fs::read_dir(std::env::temp_dir()).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.starts_with("resumelb-") && n.ends_with(".spill")
            })
            .count()
    })
}

/// One response as a client sees it.
struct Seen {
    status: u16,
    body: Vec<u8>,
    complete: bool,
    close: bool,
}

/// Read a response; `None` if the connection closed (or failed) before
/// its head.
fn read_response(s: &mut TcpStream, reader: &mut ResponseReader, head_only: bool) -> Option<Seen> {
    let head = reader.head(s, head_only).ok()??;
    let (body, complete) = reader.read_body(s, &head);
    Some(Seen {
        status: head.code,
        body,
        complete,
        close: !head.keep_alive,
    })
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    gets: AtomicU64,
    gets_ok: AtomicU64,
    ok: AtomicU64,
    bad_gateway: AtomicU64,
    unavailable: AtomicU64,
    truncated_detected: AtomicU64,
    truncated_undetected: AtomicU64,
    no_response: AtomicU64,
}

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What a response must show to count as correct.
enum Expect {
    /// GET `?size=N`: N bytes of the demo's pattern.
    Pattern(usize),
    /// HEAD: no body.
    NoBody,
    /// POST: the demo's report names this body's length and digest.
    Echo(Vec<u8>),
}

/// One client connection's loop.
fn client(target: SocketAddr, seed: u64, deadline: Instant, tally: Arc<Tally>) {
    let mut rng = Rng::new(seed);
    let mut conn: Option<TcpStream> = None;
    let mut buf = ResponseReader::new();
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < 1_000_000 {
        sent += 1;
        if conn.is_none() {
            match TcpStream::connect(target) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    buf = ResponseReader::new();
                    conn = Some(s);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(s) = conn.as_mut() else { continue };
        let class = format!("site{}", rng.below(8));
        let kind = rng.below(10);
        // What goes on the wire, and what the response must show.
        let (wire, expect) = if kind < 5 {
            let size = rng.below(16 * 1024) as usize;
            let req = format!(
                "GET /{}?size={size} HTTP/1.1\r\nHost: {class}\r\n\r\n",
                rng.below(50)
            );
            (req.into_bytes(), Expect::Pattern(size))
        } else if kind < 6 {
            let req = format!("HEAD /{} HTTP/1.1\r\nHost: {class}\r\n\r\n", rng.below(50));
            (req.into_bytes(), Expect::NoBody)
        } else {
            let len = rng.below(1 << 20) as usize;
            let body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let path = rng.below(50);
            let mut wire;
            if rng.below(2) == 0 {
                wire = format!(
                    "POST /{path} HTTP/1.1\r\nHost: {class}\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .into_bytes();
                for piece in body.chunks(100_000) {
                    wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    wire.extend_from_slice(piece);
                    wire.extend_from_slice(b"\r\n");
                }
                wire.extend_from_slice(b"0\r\n\r\n");
            } else {
                wire = format!(
                    "POST /{path} HTTP/1.1\r\nHost: {class}\r\nContent-Length: {len}\r\n\r\n"
                )
                .into_bytes();
                wire.extend_from_slice(&body);
            }
            (wire, Expect::Echo(body))
        };
        let (head_only, is_get) = (
            matches!(expect, Expect::NoBody),
            matches!(expect, Expect::Pattern(_)),
        );
        add(&tally.requests);
        if is_get {
            add(&tally.gets);
        }
        if s.write_all(&wire).is_err() {
            add(&tally.no_response);
            conn = None;
            continue;
        }
        let Some(seen) = read_response(s, &mut buf, head_only) else {
            add(&tally.no_response);
            conn = None;
            continue;
        };
        match seen.status {
            200 if !seen.complete => {
                add(&tally.truncated_detected);
                conn = None;
                continue;
            }
            200 => {
                let correct = match &expect {
                    Expect::Pattern(size) => seen.body == pattern(0, *size),
                    Expect::NoBody => seen.body.is_empty(),
                    Expect::Echo(sent) => {
                        // The demo's report names the body it got.
                        let text = String::from_utf8_lossy(&seen.body);
                        let digest = format!("{:016x}", fnv1a(sent, FNV_OFFSET));
                        text.contains(&format!("\"body_length\": {}", sent.len()))
                            && text.contains(&digest)
                    }
                };
                if correct {
                    add(&tally.ok);
                    if is_get {
                        add(&tally.gets_ok);
                    }
                } else {
                    add(&tally.truncated_undetected);
                }
            }
            502 => add(&tally.bad_gateway),
            503 => add(&tally.unavailable),
            _ => add(&tally.truncated_undetected),
        }
        if seen.close {
            conn = None;
        }
    }
}

struct Workers {
    bin: PathBuf,
    ports: Vec<u16>,
    procs: Vec<Option<Spawned>>,
}

impl Workers {
    fn start(&mut self, i: usize) -> io::Result<()> {
        let addr = format!("127.0.0.1:{}", self.ports[i]);
        let args = [
            "-a",
            &addr,
            "--app",
            "demo",
            "--threads",
            "2",
            "--demo-miss-ms",
            "1",
            "--shutdown-timeout",
            "5",
        ];
        // A port just given up can take a moment to be free again.
        let mut tries = 0;
        loop {
            match spawn(&self.bin, &args, "worker listening on ") {
                Ok(p) => {
                    self.procs[i] = Some(p);
                    return Ok(());
                }
                Err(e) if tries < 20 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Run the soak.
pub fn run(cfg: &SoakConfig) -> io::Result<SoakReport> {
    let mut rng = Rng::new(cfg.seed);
    let ports: Vec<u16> = (0..cfg.workers).map(|_| stable_port(&mut rng)).collect();
    let mut workers = Workers {
        bin: cfg.worker.clone(),
        ports: ports.clone(),
        procs: (0..cfg.workers).map(|_| None).collect(),
    };
    for i in 0..cfg.workers {
        workers.start(i)?;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["-a", "127.0.0.1:0", "-t", "10"];
    args.extend(addrs.iter().map(String::as_str));
    let lb = spawn(&cfg.lb, &args, "listening on ")?;
    let pid = lb.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let mut report = SoakReport::default();
    let temp_before = temp_files();
    report.fds[0] = fd_count(pid);
    report.rss_kib[0] = rss_kib(pid);

    let start = Instant::now();
    let deadline = start + cfg.duration;
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..cfg.connections)
        .map(|i| {
            let t = tally.clone();
            let target = lb.addr;
            let seed = cfg.seed.wrapping_add(1 + i as u64);
            std::thread::spawn(move || client(target, seed, deadline, t))
        })
        .collect();
    let stop = AtomicBool::new(false);
    let mut sampled_mid = false;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(
            cfg.chaos_every
                .min(deadline.saturating_duration_since(Instant::now())),
        );
        if Instant::now() >= deadline {
            break;
        }
        if !sampled_mid && start.elapsed() >= cfg.duration / 2 {
            report.fds[1] = fd_count(pid);
            report.rss_kib[1] = rss_kib(pid);
            sampled_mid = true;
        }
        let i = rng.below(cfg.workers as u64) as usize;
        if let Some(mut p) = workers.procs[i].take() {
            let term = rng.below(5) == 0;
            let sig = if term { "-TERM" } else { "-KILL" };
            let _ = std::process::Command::new("kill")
                .args([sig, &p.child.id().to_string()])
                .status();
            let _ = p.child.wait();
            if term {
                report.terms += 1;
            } else {
                report.kills += 1;
            }
        }
        workers.start(i)?;
    }
    for c in clients {
        let _ = c.join();
    }
    if !sampled_mid {
        report.fds[1] = fd_count(pid);
        report.rss_kib[1] = rss_kib(pid);
    }
    // Let closed connections and spill files go, and the LB give back
    // memory it freed (it trims each second once idle).
    std::thread::sleep(Duration::from_millis(2500));
    report.fds[2] = fd_count(pid);
    report.rss_kib[2] = rss_kib(pid);
    report.temp_files_left = temp_files().saturating_sub(temp_before);
    let t = &tally;
    report.requests = t.requests.load(Ordering::Relaxed);
    report.gets = t.gets.load(Ordering::Relaxed);
    report.gets_ok = t.gets_ok.load(Ordering::Relaxed);
    report.ok = t.ok.load(Ordering::Relaxed);
    report.bad_gateway = t.bad_gateway.load(Ordering::Relaxed);
    report.unavailable = t.unavailable.load(Ordering::Relaxed);
    report.truncated_detected = t.truncated_detected.load(Ordering::Relaxed);
    report.truncated_undetected = t.truncated_undetected.load(Ordering::Relaxed);
    report.no_response = t.no_response.load(Ordering::Relaxed);
    drop(lb);
    Ok(report)
}
