//! Restarts and reloads under load, with no failed request: the LB
//! reloaded in place (SIGHUP with a changed workers file) and replaced by
//! a new process (hand-over of the listener), and a worker restarted behind
//! two LBs. Clients keep sending GETs and POSTs, on keep-alive connections
//! and on a new connection each; every failure is counted by kind.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use resumelb::loadgen::{Churn, ChurnSpec};

/// Load on each of `lbs`: keep-alive and new-connection clients, GETs
/// and POSTs (`loadgen::Churn`).
struct Load(Vec<Churn>);

fn start_load(lbs: &[SocketAddr], keepalive: usize, fresh: usize) -> Load {
    Load(
        lbs.iter()
            .map(|&target| {
                Churn::start(&ChurnSpec {
                    target,
                    keepalive: keepalive / lbs.len(),
                    fresh: fresh / lbs.len(),
                    duration: Duration::from_secs(60),
                })
                .expect("load")
            })
            .collect(),
    )
}

impl Load {
    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|c| c.tally.summary())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Stop; every request sent was answered with 2xx, and enough were.
    fn finish_clean(self) {
        for c in self.0 {
            let t = c.finish();
            let (sent, ok, ..) = t.counts();
            eprintln!("{}", t.summary());
            assert!(ok > 50, "too little traffic: {}", t.summary());
            assert_eq!(ok, sent, "{}", t.summary());
        }
    }
}

fn pool_has(sock: &std::path::Path, addr: SocketAddr) -> bool {
    std::os::unix::net::UnixStream::connect(sock).is_ok()
        && pool_workers(sock).contains(&addr.to_string())
}

#[test]
fn lb_reloaded_and_handed_over_under_load() {
    let dir = TempDir::new("restart-lb");
    let (sock, file) = (dir.path("lb.sock"), dir.path("workers"));
    let w1 = start_worker(&["--app", "demo", "--threads", "2"]);
    let w2 = start_worker(&["--app", "demo", "--threads", "2"]);
    std::fs::write(&file, format!("# the pool\n{}\n", w1.addr)).expect("write");
    let args = |addr: &str| {
        vec![
            "-a".to_string(),
            addr.to_string(),
            "-s".to_string(),
            sock.to_str().expect("path").to_string(),
            "--workers-file".to_string(),
            file.to_str().expect("path").to_string(),
        ]
    };
    let a = args("127.0.0.1:0");
    let old = start_listening_lb(&a);
    let addr = old.addr;
    wait_until("w1 in the pool", Duration::from_secs(10), || {
        pool_has(&sock, w1.addr)
    });
    let load = start_load(&[addr], 6, 2);
    std::thread::sleep(Duration::from_millis(700));

    // Reload in place: w2 joins; a broken file changes nothing.
    std::fs::write(
        &file,
        format!("{}\n{}  # new\nvariance = 3\n", w1.addr, w2.addr),
    )
    .expect("write");
    old.proc.signal("HUP");
    wait_until("w2 in the pool", Duration::from_secs(10), || {
        pool_has(&sock, w2.addr)
    });
    assert_eq!(status(&sock)["settings"]["variance"], 3.0);
    std::fs::write(&file, format!("{}\nnot an address\n", w1.addr)).expect("write");
    old.proc.signal("HUP");
    old.proc
        .wait_for("keeping the running configuration", Duration::from_secs(5));
    assert!(pool_has(&sock, w2.addr));
    std::thread::sleep(Duration::from_millis(700));
    let after_reload = load.summary();

    // Hand-over: a new process on the same address; the old one exits 0.
    std::fs::write(&file, format!("{}\n{}\n", w1.addr, w2.addr)).expect("write");
    let b = args(&addr.to_string());
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let new = Proc::start(LB, &b);
    new.wait_for("took over the listener", Duration::from_secs(10));
    let mut old = old;
    assert_eq!(
        old.proc.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        old.proc.stderr()
    );
    assert!(old
        .proc
        .stderr()
        .contains("handed the listener over to pid"));
    wait_until(
        "both workers in the new LB's pool",
        Duration::from_secs(10),
        || pool_has(&sock, w1.addr) && pool_has(&sock, w2.addr),
    );
    std::thread::sleep(Duration::from_millis(700));
    eprintln!("after the reload: {after_reload}");
    load.finish_clean();
    drop(new);
}

/// An LB on `args` (its address from the log).
fn start_listening_lb(args: &[String]) -> LbProc {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::start(LB, &a);
    let line = proc.wait_for("listening on ", Duration::from_secs(10));
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    LbProc { proc, addr }
}

#[test]
fn worker_restarted_behind_two_lbs_under_load() {
    let dir = TempDir::new("restart-worker");
    let resume = dir.path("w1.resume");
    let r = resume.to_str().expect("path");
    let w1 = start_worker(&[
        "--app",
        "demo",
        "--threads",
        "2",
        "--history",
        "20",
        "--resume-file",
        r,
    ]);
    let w2 = start_worker(&["--app", "demo", "--threads", "2"]);
    let (s1, s2) = (dir.path("lb1.sock"), dir.path("lb2.sock"));
    let lb = |sock: &std::path::Path| {
        start_lb(&[
            "-s",
            sock.to_str().expect("path"),
            &w1.addr.to_string(),
            &w2.addr.to_string(),
        ])
    };
    let (lb1, lb2) = (lb(&s1), lb(&s2));
    for s in [&s1, &s2] {
        wait_until("both workers in the pool", Duration::from_secs(10), || {
            pool_has(s, w1.addr) && pool_has(s, w2.addr)
        });
    }
    let load = start_load(&[lb1.addr, lb2.addr], 4, 2);
    std::thread::sleep(Duration::from_millis(1000));
    // SIGTERM: w1 tells both LBs it drains, finishes, exits 0.
    let w1_addr = w1.addr;
    let mut w1 = w1;
    w1.proc.signal("TERM");
    assert_eq!(w1.proc.wait(Duration::from_secs(20)), Some(0));
    for lb in [&lb1, &lb2] {
        assert!(lb
            .proc
            .stderr()
            .contains(&format!("worker {w1_addr} is draining")));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Back on the same address with its résumé.
    let port = w1_addr.to_string();
    let again = Proc::start(
        WORKER,
        &[
            "-a",
            &port,
            "--app",
            "demo",
            "--threads",
            "2",
            "--resume-file",
            r,
        ],
    );
    again.wait_for("worker listening on ", Duration::from_secs(10));
    for s in [&s1, &s2] {
        wait_until("w1 back in the pool", Duration::from_secs(10), || {
            pool_has(s, w1_addr)
        });
    }
    std::thread::sleep(Duration::from_millis(700));
    load.finish_clean();
}

#[test]
fn hand_over_between_two_zdaemon_configurations() {
    let dir = TempDir::new("restart-zd");
    let w1 = start_worker(&["--app", "demo", "--threads", "2"]);
    let w2 = start_worker(&["--app", "demo", "--threads", "2"]);
    let port = port_outside_ephemeral_range();
    let sock = dir.path("lb.sock");
    let program = format!(
        "{LB} -a 127.0.0.1:{port} -s {} {} {}",
        sock.display(),
        w1.addr,
        w2.addr
    );
    let (a, b) = (
        write_conf(&dir, "lb-a", &program),
        write_conf(&dir, "lb-b", &program),
    );
    let _cleanup = Cleanup(vec![a.clone(), b.clone()]);
    zd(&a, "start");
    wait_until("lb-a serving", Duration::from_secs(10), || {
        pool_has(&sock, w1.addr) && pool_has(&sock, w2.addr)
    });
    let lb: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let load = start_load(&[lb], 4, 2);
    std::thread::sleep(Duration::from_millis(700));
    // Starting the other configuration hands over; lb-a's program exits 0
    // and its zdaemon leaves it stopped.
    zd(&b, "start");
    wait_until("lb-a's program gone", Duration::from_secs(20), || {
        !zd(&a, "status").contains("program running")
    });
    assert!(zd(&b, "status").contains("program running"));
    let log = std::fs::read_to_string(dir.path("lb-a.log")).unwrap_or_default();
    assert!(log.contains("handed the listener over to pid"), "{log}");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !zd(&a, "status").contains("program running"),
        "zdaemon restarted lb-a"
    );
    load.finish_clean();
}
