//! `resumelb-worker` end to end: the real binary, real sockets on
//! 127.0.0.1, a test LB speaking the wire protocol, and a real WSGI server
//! (waitress) behind the upstream app.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use resumelb::proto::{ToLb, ToWorker};

const T: Duration = Duration::from_secs(15);

#[test]
fn resume_then_hello_on_every_connection() {
    let w = start_worker(&["--app", "demo", "--threads", "3"]);
    for _ in 0..2 {
        let mut lb = TestLb::connect(w.addr);
        let (r, h) = lb.greeting();
        assert!(r.is_empty());
        assert_eq!(h.protocol, 1);
        assert_eq!(h.threads, Some(3));
        assert_eq!(h.pid, Some(w.proc.child.id()));
    }
}

#[test]
fn get_and_post_through_the_demo_app() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "1"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let r = lb.request(1, environ("GET", "/1_2", "", "a.com"), b"");
    assert_eq!(r.code(), 200);
    assert!(r.ended);
    let j = r.json();
    assert_eq!(j["objects"], serde_json::json!([1, 2]));
    assert_eq!(
        (j["hits"].as_u64(), j["misses"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(j["class"], "a.com");
    let port = w.addr.port().to_string();
    assert!(j["worker"].as_str().unwrap().ends_with(&format!(":{port}")));
    let r = lb.request(2, environ("POST", "/2", "", "a.com"), b"hello world");
    let j = r.json();
    assert_eq!(j["hits"].as_u64(), Some(1));
    assert_eq!(j["body_length"].as_u64(), Some(11));
    assert_eq!(j["body_digest"], digest(b"hello world"));
}

#[test]
fn ten_mib_request_and_response_bodies_arrive_intact() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let size = 10 << 20;
    let body: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let r = lb.request(
        1,
        environ("POST", "/1", &format!("size={size}"), "big"),
        &body,
    );
    assert_eq!(r.code(), 200);
    assert!(r.ended);
    assert_eq!(r.body.len(), size);
    assert!(
        r.body == resumelb::worker::demo::pattern(0, size),
        "response body differs"
    );
    let report: serde_json::Value =
        serde_json::from_str(r.header("X-Demo-Report").unwrap()).unwrap();
    assert_eq!(report["body_length"].as_u64(), Some(size as u64));
    assert_eq!(report["body_digest"], digest(&body));
}

#[test]
fn cancel_frees_the_app_thread() {
    let w = start_worker(&["--app", "demo", "--threads", "1", "--demo-miss-ms", "0"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    // An endless-looking slow stream: 1 GB at 64 KiB every 20 ms.
    lb.send_request(
        1,
        environ("GET", "/", "size=1000000000&chunk_ms=20", "c"),
        b"",
    );
    let Some(ToLb::Head(1, head)) = lb.recv_skip_keepalive() else {
        panic!("no head")
    };
    assert!(head.status.starts_with("200"));
    let Some(ToLb::Body(1, _)) = lb.recv_skip_keepalive() else {
        panic!("no body")
    };
    lb.send(&ToWorker::Cancel(1));
    let start = Instant::now();
    lb.send_request(2, environ("GET", "/", "", "c"), b"");
    let mut others = Vec::new();
    let r = lb.collect(2, &mut others);
    assert_eq!(r.code(), 200, "the only app thread was not freed");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Nothing ends request 1: it was cancelled, not completed.
    assert!(!others.iter().any(|m| matches!(m, ToLb::End(1))));
}

#[test]
fn app_panic_gives_500_and_head_gets_no_body() {
    let w = start_worker(&["--app", "demo", "--threads", "1"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let r = lb.request(1, environ("GET", "/", "panic=1", "p"), b"");
    assert_eq!(r.code(), 500);
    assert!(r.ended && !r.body.is_empty());
    let r = lb.request(2, environ("HEAD", "/", "panic=1", "p"), b"");
    assert_eq!(r.code(), 500);
    assert!(r.ended);
    assert!(r.body.is_empty(), "HEAD got a body");
    let r = lb.request(3, environ("GET", "/", "error=1", "p"), b"");
    assert_eq!(r.code(), 500);
    // The one thread lives on.
    let r = lb.request(4, environ("GET", "/", "", "p"), b"");
    assert_eq!(r.code(), 200);
    w.proc.wait_for("1.1: application panicked", T);
    w.proc.wait_for("1.3: application error", T);
}

#[test]
fn body_failure_mid_stream_aborts_the_response() {
    let w = start_worker(&["--app", "demo"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let r = lb.request(
        1,
        environ("GET", "/", "size=300000&abort_after=100000", "x"),
        b"",
    );
    assert_eq!(r.code(), 200);
    assert!(r.aborted && !r.ended);
    assert!(r.body.len() < 300_000);
}

/// Send `n` requests of `class` (query `q`) one after another on `lb`.
fn run_requests(lb: &mut TestLb, first_rno: u32, n: u32, class: &str, q: &str) -> Vec<ToLb> {
    let mut others = Vec::new();
    for i in 0..n {
        let r = lb.request_collect(first_rno + i, environ("GET", "/", q, class), &mut others);
        assert_eq!(r.code(), 200);
    }
    others
}

trait RequestCollect {
    fn request_collect(
        &mut self,
        rno: u32,
        env: resumelb::proto::Environ,
        others: &mut Vec<ToLb>,
    ) -> Collected;
}

impl RequestCollect for TestLb {
    fn request_collect(
        &mut self,
        rno: u32,
        env: resumelb::proto::Environ,
        others: &mut Vec<ToLb>,
    ) -> Collected {
        self.send_request(rno, env, b"");
        self.collect(rno, others)
    }
}

fn resumes(msgs: &[ToLb]) -> Vec<resumelb::proto::Resume> {
    msgs.iter()
        .filter_map(|m| match m {
            ToLb::Resume(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn resume_after_history_requests_ranks_the_slow_class_lower() {
    let w = start_worker(&["--app", "demo", "--history", "10", "--demo-miss-ms", "0"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let mut others = run_requests(&mut lb, 1, 5, "fast", "");
    others.extend(run_requests(&mut lb, 6, 4, "slow", "sleep=30"));
    assert!(resumes(&others).is_empty(), "résumé before H requests");
    others.extend(run_requests(&mut lb, 10, 1, "slow", "sleep=30"));
    // The résumé may trail the last response by a moment.
    let deadline = Instant::now() + T;
    while resumes(&others).is_empty() && Instant::now() < deadline {
        others.push(lb.recv().unwrap());
    }
    let r = &resumes(&others)[0];
    assert_eq!(r.len(), 2);
    assert!(r["fast"] > r["slow"] * 5.0, "{r:?}");
    assert!(r["slow"] < 1.0 / 0.03 + 1e-9, "{r:?}");
}

#[test]
fn two_lbs_get_the_same_resumes() {
    let w = start_worker(&["--app", "demo", "--history", "3", "--demo-miss-ms", "0"]);
    let mut lb1 = TestLb::connect(w.addr);
    let mut lb2 = TestLb::connect(w.addr);
    lb1.greeting();
    lb2.greeting();
    let mut others = run_requests(&mut lb1, 1, 3, "k", "");
    let deadline = Instant::now() + T;
    while resumes(&others).is_empty() && Instant::now() < deadline {
        others.push(lb1.recv().unwrap());
    }
    let Some(ToLb::Resume(r2)) = lb2.recv_skip_keepalive() else {
        panic!("second LB got no résumé")
    };
    assert_eq!(resumes(&others)[0], r2);
    assert!(r2.contains_key("k"));
}

#[test]
fn resume_file_survives_a_restart() {
    let dir = TempDir::new("resume");
    let file = dir.path("resume.json");
    let f = file.to_str().unwrap();
    let mut w = start_worker(&["--app", "demo", "--history", "4", "--resume-file", f]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let mut others = run_requests(&mut lb, 1, 2, "one", "sleep=5");
    others.extend(run_requests(&mut lb, 3, 2, "two", "sleep=20"));
    let deadline = Instant::now() + T;
    while resumes(&others).is_empty() && Instant::now() < deadline {
        others.push(lb.recv().unwrap());
    }
    let published = resumes(&others).remove(0);
    let saved = resumelb::resume::load_file(&file).unwrap();
    assert_eq!(saved, published);
    drop(lb);
    w.proc.signal("TERM");
    assert_eq!(w.proc.wait(T), Some(0));

    let w2 = start_worker(&["--app", "demo", "--history", "4", "--resume-file", f]);
    let mut lb = TestLb::connect(w2.addr);
    let (r, _) = lb.greeting();
    assert_eq!(r.len(), 2);
    for (class, score) in &published {
        assert!(
            (r[class] / score - 1.0).abs() < 1e-9,
            "{class}: {} vs {score}",
            r[class]
        );
    }
}

#[test]
fn corrupt_resume_file_is_logged_and_ignored() {
    let dir = TempDir::new("corrupt");
    let file = dir.path("resume.json");
    std::fs::write(&file, "{not json").unwrap();
    let w = start_worker(&["--app", "demo", "--resume-file", file.to_str().unwrap()]);
    w.proc.wait_for("ignoring résumé file", T);
    let mut lb = TestLb::connect(w.addr);
    assert!(lb.greeting().0.is_empty());
}

#[test]
fn trace_log_records_one_request_in_order() {
    let dir = TempDir::new("trace");
    let trace = dir.path("trace.log");
    let w = start_worker(&["--app", "demo", "--tracelog", trace.to_str().unwrap()]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let r = lb.request(1, environ("POST", "/7", "q=1", "t"), b"12345");
    assert_eq!(r.code(), 200);
    let read = || std::fs::read_to_string(&trace).unwrap_or_default();
    wait_until("the request's end in the trace", T, || {
        read().lines().any(|l| l.starts_with("E 1.1 "))
    });
    let text = read();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("S 0 "), "{text}");
    let mine: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| {
            let p: Vec<&str> = l.splitn(4, ' ').collect();
            (p.len() >= 3 && p[1] == "1.1").then(|| (p[0], p.get(3).copied().unwrap_or("")))
        })
        .collect();
    let codes: Vec<&str> = mine.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, ["B", "I", "C", "A", "E"], "{text}");
    assert_eq!(mine[0].1, "POST /7?q=1");
    assert_eq!(mine[1].1, "5");
    assert!(mine[3].1.starts_with("200 "), "{text}");
}

#[test]
fn sigterm_drains_and_finishes_the_request_in_flight() {
    let dir = TempDir::new("wterm");
    let trace = dir.path("trace.log");
    let trace_arg = trace.to_str().unwrap();
    let mut w = start_worker(&[
        "--app",
        "demo",
        "--demo-miss-ms",
        "0",
        "--tracelog",
        trace_arg,
    ]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    lb.send_request(1, environ("GET", "/", "sleep=1500", "s"), b"");
    wait_until("the app to be called", T, || {
        std::fs::read_to_string(&trace).is_ok_and(|t| t.lines().any(|l| l.starts_with("C 1.1 ")))
    });
    w.proc.signal("TERM");
    assert!(matches!(lb.recv_skip_keepalive(), Some(ToLb::Drain)));
    let r = lb.collect(1, &mut Vec::new());
    assert_eq!(r.code(), 200);
    assert!(r.ended);
    drop(lb);
    assert_eq!(w.proc.wait(T), Some(0));
    // No longer accepting.
    assert!(std::net::TcpStream::connect(w.addr).is_err());
}

#[test]
fn garbage_closes_only_that_connection() {
    let w = start_worker(&["--app", "demo"]);
    let mut bad = TestLb::connect(w.addr);
    let mut good = TestLb::connect(w.addr);
    bad.greeting();
    good.greeting();
    // A frame of length 2 holding a stray break byte and a null.
    bad.send_raw(&[0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xf6]);
    let mut closed = false;
    while let Some(m) = bad.recv() {
        assert!(matches!(m, ToLb::KeepAlive), "{m:?}");
    }
    closed |= true;
    assert!(closed);
    w.proc.wait_for("protocol error from LB", T);
    let r = good.request(1, environ("GET", "/", "", "g"), b"");
    assert_eq!(r.code(), 200);
}

#[test]
fn upstream_app_in_front_of_waitress() {
    let ws = start_waitress(0);
    let app = format!("upstream:127.0.0.1:{}", ws.port);
    let w = start_worker(&["--app", &app, "--threads", "2"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();

    let mut env = environ("POST", "/echo", "a=1&b=2", "example.com");
    env.insert("HTTP_X_TEST".into(), "yes".into());
    env.insert("REMOTE_ADDR".into(), "10.1.2.3".into());
    env.insert("HTTP_CONNECTION".into(), "keep-alive".into());
    env.insert("CONTENT_TYPE".into(), "text/plain".into());
    let r = lb.request(1, env, b"some body");
    assert_eq!(r.code(), 200, "{:?}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["query"], "a=1&b=2");
    assert_eq!(j["host"], "example.com");
    assert_eq!(j["x_test"], "yes");
    assert_eq!(
        j["remote_addr"], "10.1.2.3",
        "X-Forwarded-For not passed on"
    );
    assert_eq!(j["connection"], serde_json::Value::Null);
    assert_eq!(j["content_type"], "text/plain");
    assert_eq!(j["body_digest"], digest(b"some body"));

    // A streamed (chunked) response and a sized one, both intact.
    let size = 3 * 65536 + 123;
    for (rno, path) in [(2, "/big"), (3, "/sized")] {
        let r = lb.request(rno, environ("GET", path, &format!("size={size}"), "x"), b"");
        assert_eq!(r.code(), 200);
        assert!(r.ended);
        assert!(r.body == resumelb::worker::demo::pattern(0, size), "{path}");
        assert!(r.header("Transfer-Encoding").is_none());
    }
    // HEAD: head only.
    let r = lb.request(4, environ("HEAD", "/sized", "size=10", "x"), b"");
    assert_eq!(r.code(), 200);
    assert!(r.ended && r.body.is_empty());
    let r = lb.request(5, environ("GET", "/nothing", "", "x"), b"");
    assert_eq!(r.code(), 404);
    assert_eq!(r.body, b"not found");

    // Upstream gone: 502 from the worker, logged.
    let port = ws.port;
    drop(ws);
    wait_until("waitress to be gone", T, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    let r = lb.request(6, environ("GET", "/echo", "", "x"), b"");
    assert_eq!(r.code(), 502);
    w.proc.wait_for("upstream", T);
}

fn get_worker_resume(addr: std::net::SocketAddr) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_get-worker-resume"))
        .arg(addr.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// With the default history nothing is published for a long time: the
/// tool says the résumé is empty, SIGTERM saves what was learnt anyway, and
/// a résumé file that cannot be written stops the worker at start-up.
#[test]
fn resume_is_saved_on_shutdown_and_an_empty_one_is_said() {
    let dir = TempDir::new("resume-save");
    let file = dir.path("resume.json");
    let f = file.to_str().unwrap();
    let mut w = start_worker(&["--app", "demo", "--resume-file", f]);
    assert_eq!(get_worker_resume(w.addr), "(empty résumé)\n");
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    run_requests(&mut lb, 1, 3, "learnt", "sleep=1");
    assert!(!file.exists(), "published before --history requests");
    drop(lb);
    w.proc.signal("TERM");
    assert_eq!(w.proc.wait(T), Some(0));
    let saved = resumelb::resume::load_file(&file).unwrap();
    assert!(saved["learnt"] > 0.0, "{saved:?}");

    let w2 = start_worker(&["--app", "demo", "--resume-file", f]);
    assert!(get_worker_resume(w2.addr).starts_with("learnt "));

    let out = Command::new(env!("CARGO_BIN_EXE_resumelb-worker"))
        .args(["-a", "127.0.0.1:0", "--app", "demo"])
        .args(["--resume-file", "/nonexistent/dir/resume.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot write the résumé file"), "{err}");
}

/// A worker whose upstream is down answers 502 itself, at once. Those are
/// failures, not skill: no class gains a score from them (before, the
/// fast 502s made the worker look the most skilled at its classes), and
/// the log says how many failed.
#[test]
fn failed_requests_are_not_counted_as_skill() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = format!("upstream:127.0.0.1:{port}");
    let w = start_worker(&["--app", &app, "--history", "1"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    for rno in 1..=3 {
        let r = lb.request(rno, environ("GET", "/", "", "down"), b"");
        assert_eq!(r.code(), 502);
    }
    w.proc
        .wait_for("request(s) failed (5xx), not counted as skill: \"down\"", T);
    // Every success publishes with --history 1; no failure did. The
    // failures are counted apart, in the worker's hello.
    wait_until("the failures counted", T, || {
        get_worker_resume(w.addr) == "(empty résumé)\nfailed (5xx, not in the résumé):\ndown 3\n"
    });
}

/// What a scripted upstream does with request `nth` (from 0) on its
/// connection `conn` (from 0).
#[derive(Clone, Copy)]
enum Reply {
    /// Answer after this long, the path as the body, keeping the
    /// connection open.
    Answer(Duration),
    /// Read the request and close the connection without an answer.
    Close,
    /// Read the request and never answer.
    Hang,
}

/// An HTTP server on 127.0.0.1 that answers as `script` says, counting
/// connections (all, and the most open at once).
struct Scripted {
    port: u16,
    conns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    most_open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The request targets received, in order.
    paths: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn scripted(script: fn(usize, usize) -> Reply) -> Scripted {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let most_open = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, o, m, ps) = (
        conns.clone(),
        open.clone(),
        most_open.clone(),
        paths.clone(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let conn = c.fetch_add(1, Ordering::SeqCst);
            let now_open = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now_open, Ordering::SeqCst);
            let (o, ps) = (o.clone(), ps.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                for nth in 0.. {
                    // One GET head (no body) at a time.
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => {
                                o.fetch_sub(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    ps.lock().unwrap().push(path.clone());
                    match script(conn, nth) {
                        Reply::Answer(after) => {
                            std::thread::sleep(after);
                            let r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                                path.len()
                            );
                            if s.write_all(r.as_bytes()).is_err() {
                                break;
                            }
                        }
                        Reply::Close => break,
                        Reply::Hang => std::thread::sleep(Duration::from_secs(60)),
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Scripted {
        port,
        conns,
        most_open,
        paths,
    }
}

/// A worker forwarding to `up` (with `args` besides), and a test LB
/// connected to it past the greeting.
fn forwarding_to(up: &Scripted, args: &[&str]) -> (WorkerProc, TestLb) {
    let app = format!("upstream:127.0.0.1:{}", up.port);
    let mut all = vec!["--app", app.as_str()];
    all.extend_from_slice(args);
    let w = start_worker(&all);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    (w, lb)
}

/// Collect the responses to `rnos`, sent together.
fn collect_all(lb: &mut TestLb, rnos: &[u32]) -> std::collections::HashMap<u32, Collected> {
    let mut got: std::collections::HashMap<u32, Collected> = Default::default();
    let mut ended = 0;
    while ended < rnos.len() {
        let Some(m) = lb.recv() else {
            panic!("the worker closed with {ended} of {} answered", rnos.len())
        };
        match m {
            ToLb::Head(r, h) => got.entry(r).or_default().head = Some(h),
            ToLb::Body(r, b) => got.entry(r).or_default().body.extend(b),
            ToLb::End(r) | ToLb::Abort(r) => {
                let c = got.entry(r).or_default();
                c.ended = matches!(m, ToLb::End(_));
                c.aborted = !c.ended;
                ended += 1;
            }
            _ => {}
        }
    }
    got
}

#[test]
fn forwarding_keeps_to_threads_connections_and_answers_every_queued_request() {
    use std::sync::atomic::Ordering;
    let up = scripted(|_, _| Reply::Answer(Duration::from_millis(20)));
    let (_w, mut lb) = forwarding_to(&up, &["--threads", "2"]);
    let rnos: Vec<u32> = (1..=12).collect();
    for &rno in &rnos {
        lb.send_request(rno, environ("GET", &format!("/r{rno}"), "", "x"), b"");
    }
    let got = collect_all(&mut lb, &rnos);
    for &rno in &rnos {
        let c = &got[&rno];
        assert_eq!((c.code(), c.ended), (200, true), "request {rno}");
        assert_eq!(c.body, format!("/r{rno}").as_bytes());
    }
    // Two connections, each kept alive for six requests in turn.
    assert_eq!(up.most_open.load(Ordering::SeqCst), 2);
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
}

#[test]
fn forwarding_sends_again_once_when_a_kept_alive_connection_was_closed() {
    use std::sync::atomic::Ordering;
    // Each connection answers its first request and drops its second.
    let up = scripted(|_, nth| match nth {
        0 => Reply::Answer(Duration::ZERO),
        _ => Reply::Close,
    });
    let (_w, mut lb) = forwarding_to(&up, &["--threads", "1"]);
    for rno in 1..=3 {
        let r = lb.request(rno, environ("GET", &format!("/s{rno}"), "", "x"), b"");
        assert_eq!((r.code(), r.ended), (200, true), "request {rno}");
        assert_eq!(r.body, format!("/s{rno}").as_bytes());
    }
    // Requests 2 and 3 each found their connection dropped and were sent
    // again on a new one.
    assert_eq!(up.conns.load(Ordering::SeqCst), 3);
    // A new connection that fails is not retried: 502.
    let up = scripted(|_, _| Reply::Close);
    let (w, mut lb) = forwarding_to(&up, &["--threads", "1"]);
    let r = lb.request(1, environ("GET", "/x", "", "x"), b"");
    assert_eq!(r.code(), 502);
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
    w.proc
        .wait_for("closed the connection before a response", T);
}

#[test]
fn forwarding_gives_up_on_a_silent_upstream_after_the_timeout() {
    let up = scripted(|conn, _| match conn {
        0 => Reply::Hang,
        _ => Reply::Answer(Duration::ZERO),
    });
    let (w, mut lb) = forwarding_to(&up, &["--threads", "1", "--upstream-timeout", "0.5"]);
    let started = Instant::now();
    let r = lb.request(1, environ("GET", "/hang", "", "x"), b"");
    assert_eq!(r.code(), 502);
    assert!(started.elapsed() < T);
    w.proc.wait_for("no response within 0.5 s", T);
    // The connection is replaced: the next request is answered.
    let r = lb.request(2, environ("GET", "/next", "", "x"), b"");
    assert_eq!((r.code(), r.body.as_slice()), (200, &b"/next"[..]));
}

#[test]
fn forwarding_passes_large_bodies_both_ways() {
    let ws = start_waitress(0);
    let app = format!("upstream:127.0.0.1:{}", ws.port);
    let w = start_worker(&["--app", &app, "--threads", "2"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    // Over the worker's 1 MiB spill threshold: an app thread sends it.
    let body = resumelb::worker::demo::pattern(7, 3 << 20);
    let r = lb.request(1, environ("POST", "/echo", "", "x"), &body);
    assert_eq!(r.code(), 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["body_digest"], digest(&body));
    // Under it: the I/O thread sends it.
    let body = resumelb::worker::demo::pattern(8, 900 << 10);
    let r = lb.request(2, environ("POST", "/echo", "", "x"), &body);
    assert_eq!(r.json()["body_digest"], digest(&body));
    // A response past the flow limit (1 MiB) streams whole, chunked and
    // sized, also to an LB that starts reading late (the upstream
    // connection waits for room meanwhile).
    let size = (16 << 20) + 17;
    for (rno, path) in [(3, "/big"), (4, "/sized")] {
        lb.send_request(rno, environ("GET", path, &format!("size={size}"), "x"), b"");
        std::thread::sleep(Duration::from_millis(500));
        let r = lb.collect(rno, &mut Vec::new());
        assert_eq!((r.code(), r.ended), (200, true));
        assert!(r.body == resumelb::worker::demo::pattern(0, size), "{path}");
    }
}

#[test]
fn forwarding_drops_a_cancelled_request_and_goes_on() {
    let up = scripted(|_, _| Reply::Answer(Duration::from_millis(300)));
    let (_w, mut lb) = forwarding_to(&up, &["--threads", "1"]);
    // 1 takes the only connection, 2 waits for it, 3 waits behind 2.
    for rno in 1..=3 {
        lb.send_request(rno, environ("GET", &format!("/c{rno}"), "", "x"), b"");
    }
    lb.send(&ToWorker::Cancel(1));
    lb.send(&ToWorker::Cancel(2));
    let mut others = Vec::new();
    let r = lb.collect(3, &mut others);
    assert_eq!((r.code(), r.body.as_slice()), (200, &b"/c3"[..]));
    assert!(
        others.iter().all(|m| !matches!(
            m,
            ToLb::Head(1 | 2, _) | ToLb::Body(1 | 2, _) | ToLb::End(1 | 2)
        )),
        "frames of cancelled requests: {others:?}"
    );
    // 2 was never sent upstream (1 was, unless its cancel came before its
    // connection was up).
    let paths = up.paths.lock().unwrap().clone();
    assert!(!paths.contains(&"/c2".to_string()), "{paths:?}");
    assert_eq!(paths.last().map(String::as_str), Some("/c3"), "{paths:?}");
}
