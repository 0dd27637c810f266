//! `resumelb` end to end: the real LB and worker binaries on 127.0.0.1,
//! real HTTP clients, and a hand-driven fake worker where a test needs to
//! control every frame.

mod common;

use std::time::{Duration, Instant};

use common::*;
use resumelb::proto::ToLb;

const T: Duration = Duration::from_secs(20);

fn addr_arg(w: &WorkerProc) -> String {
    w.addr.to_string()
}

fn lb_with(workers: &[&WorkerProc], extra: &[&str]) -> LbProc {
    let addrs: Vec<String> = workers.iter().map(|w| addr_arg(w)).collect();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(addrs.iter().map(String::as_str));
    start_lb(&args)
}

fn wait_joined(lb: &LbProc, n: usize) {
    let needle = "joined";
    wait_until("workers to join", T, || {
        lb.proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
            >= n
    });
}

#[test]
fn get_through_lb_and_worker() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&w], &[]);
    wait_joined(&lb, 1);
    let r = get(lb.addr, "www.Example.com", "/4_5");
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let j = r.json();
    assert_eq!(j["class"], "example.com");
    assert_eq!(j["objects"], serde_json::json!([4, 5]));
    assert!(r.worker().ends_with(&format!(":{}", w.addr.port())));
    let r = http(
        lb.addr,
        "HEAD /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.header("Content-Length").is_some());
}

/// Each class sticks to one worker, with either résumé pool; the classic
/// pool puts a new class on the least recently used worker, so the two
/// classes part (the résumé pool may put both on the worker that ranks
/// first for them).
#[test]
fn each_class_stays_on_its_own_worker() {
    for pool in ["classic", "resume"] {
        classes_stick(pool);
    }
}

fn classes_stick(pool: &str) {
    let w1 = start_worker(&["--app", "demo", "--history", "4", "--demo-miss-ms", "5"]);
    let w2 = start_worker(&["--app", "demo", "--history", "4", "--demo-miss-ms", "5"]);
    let lb = lb_with(&[&w1, &w2], &["-p", pool]);
    wait_joined(&lb, 2);
    let mut seen: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for _ in 0..20 {
        for class in ["a.com", "b.com"] {
            let r = get(lb.addr, class, "/1_2_3");
            assert_eq!(r.status, 200);
            seen.entry(class).or_default().push(r.worker());
        }
    }
    // After the first few (résumés every 4 requests), each class sticks.
    let a: std::collections::HashSet<_> = seen["a.com"][4..].iter().collect();
    let b: std::collections::HashSet<_> = seen["b.com"][4..].iter().collect();
    assert_eq!(a.len(), 1, "{pool}: a.com moved: {:?}", seen["a.com"]);
    assert_eq!(b.len(), 1, "{pool}: b.com moved: {:?}", seen["b.com"]);
    if pool == "classic" {
        assert_ne!(a, b, "both classes on one worker");
    }
    // And the sticking shows in the cache: the last requests hit.
    let last = get(lb.addr, "a.com", "/1_2_3").json();
    assert_eq!(last["hits"].as_u64(), Some(3));
}

#[test]
fn big_and_chunked_posts_arrive_intact() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&w], &[]);
    wait_joined(&lb, 1);
    let size = 10 << 20;
    let body: Vec<u8> = (0..size as u64).map(|i| (i * 7 + i / 1000) as u8).collect();
    let mut c = HttpConn::connect(lb.addr);
    c.send(format!("POST /1 HTTP/1.1\r\nHost: big\r\nContent-Length: {size}\r\n\r\n").as_bytes());
    c.send(&body);
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_length"].as_u64(), Some(size as u64));
    assert_eq!(r.json()["body_digest"], digest(&body));

    // Chunked, with Expect: 100-continue, on the same connection.
    let parts: [&[u8]; 3] = [b"hello ", b"chunked ", b"world"];
    c.send(b"POST /2 HTTP/1.1\r\nHost: big\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
    for p in parts {
        c.send(format!("{:x}\r\n", p.len()).as_bytes());
        c.send(p);
        c.send(b"\r\n");
    }
    c.send(b"0\r\nX-Trailer: 1\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_length"].as_u64(), Some(19));
    assert_eq!(r.json()["body_digest"], digest(b"hello chunked world"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let w = start_worker(&["--app", "demo", "--threads", "4", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&w], &[]);
    wait_joined(&lb, 1);
    let mut c = HttpConn::connect(lb.addr);
    // The first is slow: the others must still come after it.
    let mut raw = String::from("GET /1?sleep=300 HTTP/1.1\r\nHost: p\r\n\r\n");
    for i in 2..=5 {
        raw.push_str(&format!("GET /{i} HTTP/1.1\r\nHost: p\r\n\r\n"));
    }
    raw.push_str("HEAD /6 HTTP/1.1\r\nHost: p\r\n\r\nGET /7 HTTP/1.0\r\n\r\n");
    c.send(raw.as_bytes());
    for i in 1..=5u64 {
        let r = c.response(false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["objects"][0].as_u64(), Some(i));
    }
    let r = c.response(true).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = c.response(false).unwrap();
    assert_eq!(r.json()["objects"][0].as_u64(), Some(7));
    assert!(c.closed(), "HTTP/1.0 without keep-alive must close");
}

#[test]
fn chunked_to_http11_close_delimited_to_http10_and_cut_when_aborted() {
    let fake = FakeWorker::start();
    let lb = start_lb(&[&fake.addr.to_string()]);
    let mut wc = fake.accept();
    wait_joined(&lb, 1);

    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    let (rno, env, _) = wc.request();
    assert_eq!(env["REQUEST_URI"], "/a");
    wc.respond_head(rno, "200 OK", &[("Content-Type", "text/plain")]);
    wc.send(&ToLb::Body(rno, b"hello ".to_vec()));
    wc.send(&ToLb::Body(rno, b"world".to_vec()));
    wc.send(&ToLb::End(rno));
    let r = c.response(false).unwrap();
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert!(r.complete);
    assert_eq!(r.body, b"hello world");

    let mut c10 = HttpConn::connect(lb.addr);
    c10.send(b"GET /b HTTP/1.0\r\n\r\n");
    let (rno, _, _) = wc.request();
    wc.respond_head(rno, "200 OK", &[]);
    wc.send(&ToLb::Body(rno, b"old".to_vec()));
    wc.send(&ToLb::End(rno));
    let r = c10.response(false).unwrap();
    assert_eq!(r.body, b"old");
    assert!(r.header("Transfer-Encoding").is_none());

    // Abort after the head: the chunked body never ends.
    c.send(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    let (rno, _, _) = wc.request();
    wc.respond_head(rno, "200 OK", &[]);
    wc.send(&ToLb::Body(rno, b"part".to_vec()));
    wc.send(&ToLb::Abort(rno));
    let r = c.response(false).unwrap();
    assert!(!r.complete, "an aborted response looked complete");

    // Abort after a head with a length: short, and the connection closed.
    let mut c2 = HttpConn::connect(lb.addr);
    c2.send(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
    let (rno, _, _) = wc.request();
    wc.respond_head(rno, "200 OK", &[("Content-Length", "100")]);
    wc.send(&ToLb::Body(rno, vec![b'x'; 10]));
    wc.send(&ToLb::Abort(rno));
    let r = c2.response(false).unwrap();
    assert!(!r.complete);
    assert!(r.body.len() < 100);
}

#[test]
fn killed_worker_get_retried_post_gets_502_and_restart_is_used() {
    let dir = TempDir::new("kill");
    let page = dir.path("sorry.html");
    std::fs::write(&page, "<p>sorry, try again</p>").unwrap();
    let sock = dir.path("lb.sock");
    let mut a = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let a_addr = a.addr.to_string();
    let b = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&[
        "-e",
        page.to_str().unwrap(),
        "-s",
        sock.to_str().unwrap(),
        &a_addr,
        &b.addr.to_string(),
    ]);
    wait_joined(&lb, 2);
    let mut g = HttpConn::connect(lb.addr);
    let mut p = HttpConn::connect(lb.addr);
    // A fresh class goes to the front of the line; find which worker that
    // is and use a class for a.
    let port_a = format!(":{}", a.addr.port());
    let class = (0..50)
        .map(|i| format!("c{i}"))
        .find(|c| get(lb.addr, c, "/1").worker().ends_with(&port_a))
        .expect("no class went to worker a");
    g.send(format!("GET /1?sleep=3000 HTTP/1.1\r\nHost: {class}\r\n\r\n").as_bytes());
    p.send(
        format!("POST /1?sleep=3000 HTTP/1.1\r\nHost: {class}\r\nContent-Length: 2\r\n\r\nhi")
            .as_bytes(),
    );
    wait_until("two requests in flight", T, || {
        status(&sock)["backlog"].as_i64() == Some(2)
    });
    a.proc.child.kill().unwrap();
    let _ = a.proc.child.wait();

    let r = g.response(false).unwrap();
    assert_eq!(r.status, 200, "GET was not retried");
    assert!(!r.worker().ends_with(&port_a));
    let r = p.response(false).unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.body, b"<p>sorry, try again</p>");
    assert_eq!(status(&sock)["retries"].as_u64(), Some(1));

    // Restarted on the same port: the LB reconnects and uses it again.
    let a2 = common::Proc::start(
        WORKER,
        &["-a", &a_addr, "--app", "demo", "--demo-miss-ms", "0"],
    );
    a2.wait_for("worker listening", T);
    wait_until("a to rejoin", T, || pool_workers(&sock).contains(&a_addr));
    let used = (0..50).any(|i| {
        get(lb.addr, &format!("new{i}"), "/1")
            .worker()
            .ends_with(&port_a)
    });
    assert!(used, "restarted worker got no requests");
}

#[test]
fn slow_client_response_spills_to_disk_with_bounded_memory() {
    let dir = TempDir::new("slow");
    let sock = dir.path("lb.sock");
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&w], &["-s", sock.to_str().unwrap()]);
    wait_joined(&lb, 1);
    let pid = lb.proc.child.id();
    let before = rss_kib(pid);
    let size = 50 << 20;
    let mut c = HttpConn::connect(lb.addr);
    // A small receive buffer makes the client slow from the LB's view.
    c.send(
        format!("GET /1?size={size} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    // The worker finishes (its backlog drops to 0) while we do not read.
    wait_until("the response to reach a spill file", T, || {
        spill_fds(pid) >= 1
    });
    wait_until("the worker to finish", T, || {
        status(&sock)["backlog"].as_i64() == Some(0)
    });
    let during = rss_kib(pid);
    assert!(spill_fds(pid) >= 1, "no spill file while the client lags");
    assert!(
        during < before + 64 * 1024,
        "LB RSS grew from {before} KiB to {during} KiB"
    );
    let r = c.response(false).unwrap();
    assert!(r.complete);
    assert_eq!(r.body.len(), size);
    assert!(
        r.body == resumelb::worker::demo::pattern(0, size),
        "body differs"
    );
    wait_until("the spill file to go", T, || spill_fds(pid) == 0);
    assert!(status(&sock)["spilled_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn malformed_requests_get_their_status_and_never_reach_a_worker() {
    let dir = TempDir::new("bad");
    let trace = dir.path("trace.log");
    let w = start_worker(&["--app", "demo", "--tracelog", trace.to_str().unwrap()]);
    let lb = lb_with(&[&w], &[]);
    wait_joined(&lb, 1);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(10_000));
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "y".repeat(70_000)
    );
    let cases: Vec<(String, u16)> = vec![
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc".into(), 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(), 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc".into(), 400),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n  b\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-Sp : a\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX@Y: a\r\n\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n".into(), 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(), 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n".into(), 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n".into(), 400),
        (long_target, 414),
        (big_head, 431),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n".into(), 501),
    ];
    for (raw, want) in &cases {
        let mut c = HttpConn::connect(lb.addr);
        c.send(raw.as_bytes());
        let r = c
            .response(false)
            .unwrap_or_else(|| panic!("no response to {:.60?}", raw));
        assert_eq!(r.status, *want, "{:.80?}", raw);
        assert!(c.closed(), "connection left open after {want}");
    }
    // A good request afterwards is the only one the worker ever saw.
    assert_eq!(get(lb.addr, "a", "/1").status, 200);
    wait_until("the trace", T, || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("E "))
    });
    let text = std::fs::read_to_string(&trace).unwrap();
    let begins = text.lines().filter(|l| l.starts_with("B ")).count();
    assert_eq!(begins, 1, "{text}");
}

#[test]
fn status_document_and_get_lb_status() {
    let dir = TempDir::new("status");
    let sock = dir.path("lb.sock");
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&w], &["-s", sock.to_str().unwrap()]);
    wait_joined(&lb, 1);
    // Owner and group only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "status socket mode {mode:o}");
    let mut slow = HttpConn::connect(lb.addr);
    slow.send(b"GET /1?sleep=1500 HTTP/1.1\r\nHost: s\r\n\r\n");
    wait_until("the request in flight", T, || {
        status(&sock)["backlog"].as_i64() == Some(1)
    });
    let doc = status(&sock);
    assert!(doc["backlog"].is_i64());
    assert!(doc["mean_backlog"].is_f64());
    let row = &doc["workers"][0];
    assert_eq!(row[0], w.addr.to_string());
    assert_eq!(row[1].as_i64(), Some(1));
    assert!(row[2].is_f64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - row[3].as_u64().unwrap() <= 2);
    assert_eq!(doc["workers_ex"][0][0], w.addr.to_string());
    assert!(doc["workers_ex"][0][1].is_u64());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_get-lb-status"))
        .arg(&sock)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("backlog: 1\nmean backlog: "), "{text}");
    assert!(text.contains(&w.addr.to_string()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_get-lb-status"))
        .args(["--json", sock.to_str().unwrap()])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["workers"][0][0], w.addr.to_string());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_get-lb-status"))
        .arg(dir.path("missing.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(slow.response(false).unwrap().status, 200);
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let dir = TempDir::new("term");
    let sock = dir.path("lb.sock");
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let mut lb = lb_with(&[&w], &["-s", sock.to_str().unwrap()]);
    wait_joined(&lb, 1);
    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /1?sleep=1000 HTTP/1.1\r\nHost: s\r\n\r\n");
    wait_until("the request at the worker", T, || {
        status(&sock)["backlog"].as_i64() == Some(1)
    });
    lb.proc.signal("TERM");
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(lb.proc.wait(T), Some(0));
}

#[test]
fn no_worker_waits_then_is_served_or_gets_503() {
    let dir = TempDir::new("nowork");
    let fake = FakeWorker::start();
    let port = fake.addr.port();
    drop(fake);
    let addr = format!("127.0.0.1:{port}");
    let lb = start_lb(&["-t", "2", "-s", dir.path("s").to_str().unwrap(), &addr]);
    let start = Instant::now();
    let r = get(lb.addr, "x", "/1");
    assert_eq!(r.status, 503);
    assert!(start.elapsed() >= Duration::from_millis(1900));

    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
    let sock = dir.path("s");
    wait_until("the request to wait for a worker", T, || {
        status(&sock)["waiting"].as_u64() == Some(1)
    });
    let _w = common::Proc::start(
        WORKER,
        &["-a", &addr, "--app", "demo", "--demo-miss-ms", "0"],
    );
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["objects"][0].as_u64(), Some(2));
}

#[test]
fn draining_worker_gets_no_new_requests_and_finishes_its_own() {
    let dir = TempDir::new("drain");
    let sock = dir.path("lb.sock");
    let mut a = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let b = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&a, &b], &["-s", sock.to_str().unwrap()]);
    wait_joined(&lb, 2);
    let port_a = format!(":{}", a.addr.port());
    let class = (0..50)
        .map(|i| format!("d{i}"))
        .find(|c| get(lb.addr, c, "/1").worker().ends_with(&port_a))
        .expect("no class went to a");
    let mut slow = HttpConn::connect(lb.addr);
    slow.send(format!("GET /1?sleep=1500 HTTP/1.1\r\nHost: {class}\r\n\r\n").as_bytes());
    wait_until("the request on a", T, || {
        status(&sock)["backlog"].as_i64() == Some(1)
    });
    a.proc.signal("TERM");
    wait_until("a out of the pool", T, || {
        pool_workers(&sock) == vec![b.addr.to_string()]
    });
    for i in 0..5 {
        let r = get(lb.addr, &class, &format!("/{i}"));
        assert_eq!(r.status, 200);
        assert!(!r.worker().ends_with(&port_a), "a draining worker got work");
    }
    let r = slow.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.worker().ends_with(&port_a));
    assert_eq!(a.proc.wait(T), Some(0));
}

#[test]
fn client_going_away_cancels_on_the_worker_and_access_log_records() {
    let dir = TempDir::new("cancel");
    let log = dir.path("access.log");
    let fake = FakeWorker::start();
    let lb = start_lb(&["-l", log.to_str().unwrap(), &fake.addr.to_string()]);
    let mut wc = fake.accept();
    wait_joined(&lb, 1);

    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /gone HTTP/1.1\r\nHost: www.Cancel.com\r\n\r\n");
    let (rno, env, _) = wc.request();
    assert_eq!(env["resumelb.request_class"], "cancel.com");
    drop(c);
    match wc.recv() {
        Some(resumelb::proto::ToWorker::Cancel(r)) => assert_eq!(r, rno),
        other => panic!("expected a cancel, got {other:?}"),
    }

    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /ok?x=1 HTTP/1.1\r\nHost: a.com\r\nConnection: close\r\n\r\n");
    let (rno, _, _) = wc.request();
    wc.respond_head(rno, "200 OK", &[("Content-Length", "5")]);
    wc.send(&ToLb::Body(rno, b"hello".to_vec()));
    wc.send(&ToLb::End(rno));
    assert_eq!(c.response(false).unwrap().body, b"hello");
    wait_until("the access log line", T, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("/ok")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("/ok")).unwrap();
    // CLF, then duration and class (quoted).
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /ok\?x=1 HTTP/1\.1" 200 5 \d+\.\d{6} "a\.com"$"#,
    )
    .unwrap();
    assert!(re.is_match(line), "{line}");
}

#[test]
fn changing_the_worker_set_never_opens_two_connections_to_one_address() {
    use resumelb::lb::{Command, Lb, LbConfig, WorkerSpec};
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let spec = WorkerSpec::new(&w.addr.to_string());
    let lb = Lb::bind(LbConfig {
        workers: vec![spec.clone()],
        ..LbConfig::default()
    })
    .unwrap();
    let addr = lb.local_addr();
    let handle = lb.handle();
    let t = std::thread::spawn(move || lb.run());
    wait_until("a first response", T, || get(addr, "x", "/1").status == 200);
    // Listed again, and again, and with itself twice: still one connection.
    for _ in 0..20 {
        handle.send(Command::SetWorkers(vec![spec.clone()]));
        handle.send(Command::SetWorkers(vec![spec.clone(), spec.clone()]));
    }
    // Commands are taken in order: once a scrape is answered, the LB has
    // taken every list before it.
    let (tx, rx) = crossbeam_channel::bounded(1);
    handle.send(Command::Scrape(tx));
    rx.recv_timeout(T).expect("a scrape answer");
    assert_eq!(get(addr, "x", "/1").status, 200);
    let connected = w
        .proc
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("LB connected"))
        .count();
    assert_eq!(connected, 1, "{}", w.proc.stderr());
    // Removed: closed, and requests wait (here: 503 after the timeout is
    // not awaited; the pool is simply empty).
    handle.send(Command::SetWorkers(vec![]));
    w.proc.wait_for("closed by the LB", T);
    handle.send(Command::SetWorkers(vec![spec]));
    wait_until("the worker back", T, || get(addr, "x", "/1").status == 200);
    handle.send(Command::Stop);
    t.join().unwrap().unwrap();
}

/// Refused requests are in the access log too; a class with a space stays
/// one quoted field; the duration runs until the client has the response.
#[test]
fn access_log_has_refused_requests_quoted_classes_and_delivery_time() {
    let dir = TempDir::new("access");
    let log = dir.path("access.log");
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(
        &[&w],
        &[
            "-l",
            log.to_str().unwrap(),
            "-r",
            "re:HTTP_X_CLASS:(?P<class>.+)",
        ],
    );
    wait_joined(&lb, 1);
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();

    let r = http(lb.addr, "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    wait_until("the refused request's line", T, || {
        lines().contains("\"-\" 400")
    });

    let r = http(
        lb.addr,
        "GET /q HTTP/1.1\r\nHost: x\r\nX-Class: two words\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    wait_until("the classed line", T, || lines().contains("/q"));
    let text = lines();
    let line = text.lines().find(|l| l.contains("/q")).unwrap();
    assert!(line.ends_with(" \"two words\""), "{line}");

    // 8 MiB to a client that waits 1.5 s before reading.
    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /big?size=8388608 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::thread::sleep(Duration::from_millis(1500));
    let r = c.response(false).unwrap();
    assert_eq!(r.body.len(), 8_388_608);
    wait_until("the download's line", T, || lines().contains("/big"));
    let text = lines();
    let line = text.lines().find(|l| l.contains("/big")).unwrap();
    let seconds: f64 = line.split_whitespace().nth(10).unwrap().parse().unwrap();
    assert!(
        seconds >= 1.5,
        "logged {seconds} s for a 1.5 s download: {line}"
    );
}

/// A worker that stops answering (SIGSTOP): the request gets 504 when the
/// socket timeout runs out, not a retry that starts the wait again.
#[test]
fn a_stopped_worker_gives_504_within_the_socket_timeout() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = lb_with(&[&w], &["-t", "2"]);
    wait_joined(&lb, 1);
    assert_eq!(get(lb.addr, "x", "/1").status, 200);
    w.proc.signal("STOP");
    let r = get(lb.addr, "x", "/2");
    w.proc.signal("CONT");
    assert_eq!(r.status, 504, "{:?}", String::from_utf8_lossy(&r.body));
}

/// Shutting down with a request waiting and no worker in the pool: 503 at
/// once, not after the socket timeout.
#[test]
fn sigterm_answers_503_at_once_to_requests_waiting_for_no_worker() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let dir = TempDir::new("waiting");
    let sock = dir.path("lb.sock");
    let mut lb = start_lb(&["-t", "60", "-s", sock.to_str().unwrap(), &addr]);
    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_until("the waiting request", T, || {
        status(&sock)["waiting"].as_u64() == Some(1)
    });
    lb.proc.signal("TERM");
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(lb.proc.wait(T), Some(0));
}
