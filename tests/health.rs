//! Worker health: a worker whose application is down tells its LBs, which
//! stop sending it requests until it is back.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn available(sock: &std::path::Path, addr: &str) -> Option<bool> {
    status(sock)["worker_details"][addr]["available"].as_bool()
}

#[test]
fn a_worker_whose_app_is_down_is_taken_out_of_rotation_and_back() {
    let dir = TempDir::new("health");
    let sock = dir.path("lb.sock");
    let trace = dir.path("a.trace");
    // Outside the ephemeral range: while A's app is down no other process
    // (a test's server on port 0, a client socket) takes its port.
    let app_a = start_waitress(port_outside_ephemeral_range());
    let port_a = app_a.port;
    let app_b = start_waitress(0);
    let a = start_worker(&[
        "--app",
        &format!("upstream:127.0.0.1:{port_a}"),
        "--tracelog",
        trace.to_str().unwrap(),
    ]);
    let b = start_worker(&["--app", &format!("upstream:127.0.0.1:{}", app_b.port)]);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let lb = start_lb(&["-s", sock.to_str().unwrap(), &a_addr, &b_addr]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    assert_eq!(available(&sock, &a_addr), Some(true));

    // A's application goes: the first requests that reach A fail, A says it
    // is unavailable, and from then on every request is served by B.
    drop(app_a);
    let mut i = 0;
    wait_until("A to be unavailable", T, || {
        i += 1;
        get(lb.addr, &format!("c{}", i % 10), "/echo");
        available(&sock, &a_addr) == Some(false)
    });
    lb.proc.wait_for("says its application is unavailable", T);
    let doc = status(&sock);
    assert_eq!(doc["unavailable"].as_u64(), Some(1));
    let rows: Vec<&str> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(rows.contains(&a_addr.as_str()), "A keeps its row: {rows:?}");
    for i in 0..30 {
        let r = get(lb.addr, &format!("c{}", i % 10), "/echo");
        assert_eq!(r.status, 200, "request {i} while A's app is down");
    }
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_get-lb-status"))
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&a_addr) && l.ends_with("unavailable")),
        "{text}"
    );

    // Back on the same port: A says so, and gets work again.
    let _app_a = start_waitress(port_a);
    wait_until("A to be available", T, || {
        available(&sock, &a_addr) == Some(true)
    });
    let served_by_a = || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("A ") && l.contains(" 200 "))
            .count()
    };
    let before = served_by_a();
    let mut i = 0;
    wait_until("A to serve again", T, || {
        i += 1;
        assert_eq!(get(lb.addr, &format!("d{i}"), "/echo").status, 200);
        served_by_a() > before
    });
}

/// A worker whose application answers 503 to everything is taken out of
/// the pool after --eject-after failures in a row, for 1 s and then twice
/// as long each time it fails again; the other serves everything
/// meanwhile.
#[test]
fn a_worker_failing_at_the_gateway_is_ejected_with_a_doubling_back_off() {
    let dir = TempDir::new("eject");
    let sock = dir.path("lb.sock");
    let app_a = start_waitress_with(0, &["status=503"]);
    let app_b = start_waitress(0);
    let a = start_worker(&["--app", &format!("upstream:127.0.0.1:{}", app_a.port)]);
    let b = start_worker(&["--app", &format!("upstream:127.0.0.1:{}", app_b.port)]);
    let a_addr = a.addr.to_string();
    let lb = start_lb(&[
        "-s",
        sock.to_str().unwrap(),
        "--eject-after",
        "3",
        &a_addr,
        &b.addr.to_string(),
    ]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    let mut i = 0;
    wait_until("A to be ejected", T, || {
        i += 1;
        get(lb.addr, &format!("e{}", i % 7), "/echo");
        lb.proc.stderr().contains("ejected from the pool for 1 s")
    });
    let doc = status(&sock);
    assert_eq!(doc["ejected"].as_u64(), Some(1), "{doc}");
    assert!(doc["ejections"].as_u64() >= Some(1));
    assert!(
        doc["worker_details"][&a_addr]["ejected_for"].as_f64() > Some(0.0),
        "{doc}"
    );
    assert!(pool_workers(&sock).contains(&a_addr), "A keeps its row");
    // The half rule leaves B in; it serves while A is out.
    for i in 0..10 {
        assert_eq!(get(lb.addr, &format!("f{i}"), "/echo").status, 200);
    }
    // Back after a second, failing again: out for twice as long. (New
    // classes go to the front of the line, where A comes back.)
    let mut i = 0;
    wait_until("A to be ejected again", T, || {
        i += 1;
        get(lb.addr, &format!("g{i}"), "/echo");
        lb.proc.stderr().contains("ejected from the pool for 2 s")
    });
}

/// Requests served by a worker so far, from its trace log (`A` records:
/// the app returned).
fn served(trace: &std::path::Path) -> usize {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("A "))
        .count()
}

/// `n` GETs from `clients` threads at once, classes `class0`…; the
/// statuses.
fn concurrent_gets(addr: std::net::SocketAddr, clients: usize, n: usize, prefix: &str) -> Vec<u16> {
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                (0..n)
                    .map(|i| get(addr, &format!("{prefix}{}", (t + i) % 4), "/echo").status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// The résumé pool (the default): a worker whose application is 40 times
/// slower than the other's loses its classes to the other: the requests
/// that wait too long for it go to the fast one, which learns the classes,
/// and from then on the slow one is passed over for them.
#[test]
fn resume_pool_moves_a_slow_workers_classes_to_the_others() {
    let dir = TempDir::new("slow");
    let slow_app = start_waitress_with(0, &["delay_ms=200"]);
    let fast_app = start_waitress_with(0, &["delay_ms=5"]);
    let (slow_trace, fast_trace) = (dir.path("slow.trace"), dir.path("fast.trace"));
    let slow = start_worker(&[
        "--app",
        &format!("upstream:127.0.0.1:{}", slow_app.port),
        "--threads",
        "2",
        "--tracelog",
        slow_trace.to_str().unwrap(),
    ]);
    let fast = start_worker(&[
        "--app",
        &format!("upstream:127.0.0.1:{}", fast_app.port),
        "--threads",
        "2",
        "--tracelog",
        fast_trace.to_str().unwrap(),
        "--history",
        "5",
    ]);
    let sock = dir.path("lb.sock");
    let lb = start_lb(&[
        "-s",
        sock.to_str().unwrap(),
        &slow.addr.to_string(),
        &fast.addr.to_string(),
    ]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    // Learning: 8 clients at once, 4 classes.
    let statuses = concurrent_gets(lb.addr, 8, 10, "k");
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // The trace writers may still be behind the responses.
    wait_until("the first traces written", T, || {
        served(&slow_trace) + served(&fast_trace) == 80
    });
    // Then the same again: the fast worker serves most.
    let (s0, f0) = (served(&slow_trace), served(&fast_trace));
    let statuses = concurrent_gets(lb.addr, 8, 10, "k");
    assert!(statuses.iter().all(|&s| s == 200));
    wait_until("the traces written", T, || {
        served(&slow_trace) - s0 + served(&fast_trace) - f0 == 80
    });
    let (slow_n, fast_n) = (served(&slow_trace) - s0, served(&fast_trace) - f0);
    assert!(
        fast_n >= 3 * slow_n,
        "the fast worker served {fast_n} of 80, the slow one {slow_n}"
    );
    // The pool says why: some requests spilled or moved to the fast one.
    let placed = &status(&sock)["placements"];
    let elsewhere = placed["spilled"].as_u64().unwrap_or(0) + placed["moved"].as_u64().unwrap_or(0);
    assert!(elsewhere >= 1, "{placed}");
}

/// A stopped (SIGSTOP) worker: after the silent-worker time the LB holds it
/// out of the pool and sends the requests it had not answered to the other
/// worker, so every client is served while it is stopped; once it goes on
/// it speaks again, is back in the pool and gets work. With each pool (the
/// rule is the LB's).
#[test]
fn a_silent_worker_is_held_out_and_its_requests_go_elsewhere() {
    for pool in ["resume", "classic"] {
        silent_worker(pool);
    }
}

fn silent_worker(pool: &str) {
    let dir = TempDir::new("hung");
    let sock = dir.path("lb.sock");
    let hung_trace = dir.path("hung.trace");
    let hung = start_worker(&[
        "--app",
        "demo",
        "--demo-miss-ms",
        "0",
        "--threads",
        "2",
        "--tracelog",
        hung_trace.to_str().unwrap(),
    ]);
    let other = start_worker(&["--app", "demo", "--demo-miss-ms", "0", "--threads", "4"]);
    let hung_addr = hung.addr.to_string();
    let lb = start_lb(&[
        "-p",
        pool,
        "-s",
        sock.to_str().unwrap(),
        &hung_addr,
        &other.addr.to_string(),
    ]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    // Both serve first (16 classes: the stopped worker is skilled at some).
    for i in 0..32 {
        assert_eq!(get(lb.addr, &format!("h{}", i % 16), "/1").status, 200);
    }
    // (Its trace writer may be a moment behind the responses.)
    wait_until(&format!("{pool}: both workers serving"), T, || {
        served(&hung_trace) > 0
    });
    hung.proc.signal("STOP");
    // 30 requests over 16 classes from 6 clients: those that go to the
    // stopped worker wait for the silent-worker time, then the other
    // serves them.
    let addr = lb.addr;
    let clients: Vec<_> = (0..6)
        .map(|c| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|i| get(addr, &format!("h{}", (c * 5 + i) % 16), "/1").status)
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for t in clients {
        assert!(
            t.join().unwrap().iter().all(|&s| s == 200),
            "{pool}: every request served while the worker is stopped"
        );
    }
    let doc = status(&sock);
    assert_eq!(doc["silent"].as_u64(), Some(1), "{pool}: {doc}");
    assert_eq!(doc["worker_details"][&hung_addr]["silent"], true, "{doc}");
    assert!(doc["retries"].as_u64() >= Some(1), "{pool}: moved: {doc}");
    assert!(
        lb.proc.stderr().contains("nothing heard for 2.0 s"),
        "{pool}: the LB says why"
    );
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_get-lb-status"))
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&hung_addr) && l.ends_with("silent")),
        "{pool}: {text}"
    );
    hung.proc.signal("CONT");
    wait_until("the worker back in the pool", T, || {
        status(&sock)["silent"].as_u64() == Some(0)
    });
    // The résumé pool kept what it knew of the worker (its classes come
    // back to it); the classic pool forgot, and sends it new classes.
    let before = served(&hung_trace);
    let mut i = 0;
    wait_until("the worker to serve again", T, || {
        i += 1;
        let class = match pool {
            "resume" => format!("h{}", i % 16),
            _ => format!("n{i}"),
        };
        get(lb.addr, &class, "/1");
        served(&hung_trace) > before
    });
}

/// The résumé pool places new classes by rendezvous hashing weighted by
/// threads: a worker with 8 threads beside one with 2 ranks first for
/// about four fifths of them, and gets their requests.
#[test]
fn new_classes_go_to_workers_in_proportion_to_their_threads() {
    let dir = TempDir::new("weights");
    let sock = dir.path("lb.sock");
    let big = start_worker(&["--app", "demo", "--demo-miss-ms", "0", "--threads", "8"]);
    let small = start_worker(&["--app", "demo", "--demo-miss-ms", "0", "--threads", "2"]);
    let (big_addr, small_addr) = (big.addr.to_string(), small.addr.to_string());
    let lb = start_lb(&["-s", sock.to_str().unwrap(), &big_addr, &small_addr]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    let mut to_big = 0;
    for c in 0..200 {
        let r = get(lb.addr, &format!("w{c}.example"), "/1");
        assert_eq!(r.status, 200);
        to_big += usize::from(r.worker().ends_with(&format!(":{}", big.addr.port())));
    }
    // 160 expected; five standard deviations (about 28) either side.
    assert!(
        (130..=190).contains(&to_big),
        "the 8-thread worker got {to_big} of 200"
    );
    let doc = status(&sock);
    let classes = |a: &str| {
        doc["worker_details"][a]["resume_size"]
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(classes(&big_addr) + classes(&small_addr), 200, "{doc}");
    assert_eq!(doc["placements"]["new"].as_u64(), Some(200), "{doc}");
}
