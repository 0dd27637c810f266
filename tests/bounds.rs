//! Resource bounds: many idle connections, the -m connection limit, and
//! slowloris clients cut by the socket timeout.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use resumelb::testing::raise_nofile;

const T: Duration = Duration::from_secs(30);

#[test]
fn ten_thousand_idle_connections_and_still_serving() {
    let limit = raise_nofile(20_000);
    assert!(
        limit >= 12_000,
        "descriptor limit {limit} is too low for this test"
    );
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&["-m", "11000", &w.addr.to_string()]);
    lb.proc.wait_for("joined", T);
    let pid = lb.proc.child.id();
    let before = rss_kib(pid);
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(lb.addr).unwrap());
    }
    // Each one sends half a request and waits: a keep-alive client between
    // requests looks the same to the LB.
    for s in idle.iter_mut().step_by(2) {
        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
    }
    let start = Instant::now();
    let r = get(lb.addr, "busy", "/1");
    assert_eq!(r.status, 200);
    let latency = start.elapsed();
    let after = rss_kib(pid);
    eprintln!(
        "10000 idle connections: LB RSS {before} KiB -> {after} KiB, a new request took {latency:?}"
    );
    assert!(after < before + 256 * 1024, "{before} -> {after} KiB");
    drop(idle);
    wait_until("connections closed", T, || {
        get(lb.addr, "busy", "/2").status == 200
    });
}

#[test]
fn max_connections_pauses_accepting_without_failing() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&["-m", "20", &w.addr.to_string()]);
    lb.proc.wait_for("joined", T);
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(lb.addr).unwrap())
        .collect();
    lb.proc.wait_for("accepting paused", T);
    // The 21st connects (the kernel queues it) but is not served yet.
    let mut extra = HttpConn::connect(lb.addr);
    extra
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    extra.send(b"GET /1 HTTP/1.1\r\nHost: m\r\n\r\n");
    let mut probe = [0u8; 1];
    let waited = std::io::Read::read(&mut extra.stream, &mut probe);
    assert!(waited.is_err(), "served past the connection limit");
    // Free some: the queued one is accepted and served.
    held.truncate(10);
    extra.stream.set_read_timeout(Some(T)).unwrap();
    let r = extra.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(lb.proc.child.id() > 0);
}

#[test]
fn slowloris_is_cut_by_the_socket_timeout_and_blocks_no_one() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&["-t", "2", &w.addr.to_string()]);
    lb.proc.wait_for("joined", T);
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(lb.addr).unwrap())
        .collect();
    let head =
        b"GET /1 HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let start = Instant::now();
    // One byte every 250 ms for 5 s: the head would take far longer than the
    // 2 s socket timeout, but bytes keep coming.
    for (i, byte) in head.iter().enumerate() {
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
        for s in slow.iter_mut() {
            let _ = s.write_all(&[*byte]);
        }
        // Others are served all along.
        if i % 2 == 0 {
            assert_eq!(get(lb.addr, "fast", "/2").status, 200);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // While they were still sending, the LB answered 408 and closed (a
    // reset is fine too: our later bytes hit a closed socket).
    for s in slow.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut got = Vec::new();
        match std::io::Read::read_to_end(s, &mut got) {
            Ok(_) => assert!(
                got.starts_with(b"HTTP/1.1 408 "),
                "{:?}",
                String::from_utf8_lossy(&got)
            ),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "connection still open"
            ),
        }
    }
}

/// The lowest descriptor number `pid` does not use: with the limit set
/// there, its next socket fails with EMFILE.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

#[test]
fn out_of_descriptors_with_no_client_connected_the_lb_accepts_again() {
    let a = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let mut b = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&[&a.addr.to_string(), &b.addr.to_string()]);
    wait_until("both workers to join", T, || {
        lb.proc.stderr().matches("joined").count() >= 2
    });
    let pid = lb.proc.child.id();
    let limit = lowest_free_fd(pid);
    let set = std::process::Command::new("prlimit")
        .args([
            &format!("--pid={pid}"),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(set.success());
    // The LB cannot take this connection: accepting pauses, with no client
    // connected whose closing would resume it.
    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: fd\r\n\r\n");
    lb.proc.wait_for("accept failed", T);
    // A worker goes: its descriptor is free, and the queued client is
    // served by the other one.
    b.proc.child.kill().unwrap();
    c.stream.set_read_timeout(Some(T)).unwrap();
    let r = c
        .response(false)
        .expect("the queued connection was never served");
    assert_eq!(r.status, 200);
}
