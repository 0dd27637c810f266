//! Who may talk to a worker, and what it accepts from them: the real
//! worker binary, a test LB speaking the wire protocol on 127.0.0.1, and a
//! capturing HTTP server as the upstream, so that the tests see exactly
//! what reached the application.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use resumelb::proto::{Environ, EnvironPairs, ToLb, ToWorker};

const T: Duration = Duration::from_secs(15);

/// An HTTP/1.1 server that records every request head it gets and answers
/// each with `200 ok` on the same (keep-alive) connection.
struct CaptureServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl CaptureServer {
    fn start() -> CaptureServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = buf.drain(..end + 4).collect();
                            seen.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&head).into_owned());
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if stream.write_all(reply).is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        CaptureServer { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn pairs(env: Environ) -> EnvironPairs {
    env.into_iter().collect()
}

fn with(key: &str, value: &str) -> EnvironPairs {
    let mut env = pairs(environ("GET", "/bad", "", "c"));
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
    env
}

/// Send one request as raw environ pairs (repeated keys possible).
fn request_pairs(lb: &mut TestLb, rno: u32, env: EnvironPairs) -> Collected {
    lb.send(&ToWorker::Environ(rno, env));
    lb.send(&ToWorker::EndOfBody(rno));
    lb.collect(rno, &mut Vec::new())
}

/// The fuzzer's crash input (first byte: the rno; the rest: the payload),
/// an environ whose key turns into a header name holding a line break.
const FUZZ_CRASH: &str = "01a26e485454505f530a284d4554484f4463474554694854545024454f5354613a";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn malicious_environs_are_refused_and_the_connection_carries_on() {
    let up = CaptureServer::start();
    let app = format!("upstream:{}", up.addr);
    let w = start_worker(&["--app", &app, "--threads", "2"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();

    let mut repeated = pairs(environ("GET", "/bad", "", "c"));
    repeated.push(("HTTP_HOST".into(), "other.example".into()));
    let cases: Vec<(&str, EnvironPairs)> = vec![
        (
            "smuggling key",
            with("HTTP_X\r\nGET /smuggled HTTP/1.1\r\nX", "y"),
        ),
        ("header name with a colon", with("HTTP_X:Y", "1")),
        ("header name with a space", with("HTTP_X Y", "1")),
        ("empty header name", with("HTTP_", "1")),
        ("CRLF in a header value", with("HTTP_X", "a\r\nX-Evil: 1")),
        ("LF in a header value", with("HTTP_X", "a\nb")),
        ("NUL in a header value", with("HTTP_X", "a\0b")),
        ("CR in CONTENT_TYPE", with("CONTENT_TYPE", "a\rb")),
        ("method with a space", with("REQUEST_METHOD", "GET /x")),
        ("method with CRLF", with("REQUEST_METHOD", "GET\r\n")),
        ("empty method", with("REQUEST_METHOD", "")),
        ("space in REQUEST_URI", with("REQUEST_URI", "/a HTTP/1.1")),
        ("space in QUERY_STRING", with("QUERY_STRING", "a b")),
        ("CRLF in PATH_INFO", with("PATH_INFO", "/a\r\nb")),
        ("letters in CONTENT_LENGTH", with("CONTENT_LENGTH", "12x")),
        ("negative CONTENT_LENGTH", with("CONTENT_LENGTH", "-1")),
        ("a key twice", repeated),
    ];
    let mut rno = 0;
    for (what, env) in cases {
        rno += 1;
        let r = request_pairs(&mut lb, rno, env);
        assert_eq!(r.code(), 400, "{what}");
        assert!(r.ended, "{what}");
        // The next request on the same connection is served.
        rno += 1;
        let r = lb.request(rno, environ("GET", "/good", "", "c"), b"");
        assert_eq!(r.code(), 200, "after {what}");
        assert_eq!(r.body, b"ok");
    }

    // The fuzzer's crash input, byte for byte, as a frame.
    let crash = unhex(FUZZ_CRASH);
    let (crash_rno, payload) = (u32::from(crash[0]) + 100, &crash[1..]);
    let mut frame = crash_rno.to_be_bytes().to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    lb.send_raw(&frame);
    lb.send(&ToWorker::EndOfBody(crash_rno));
    let r = lb.collect(crash_rno, &mut Vec::new());
    assert_eq!(r.code(), 400);
    let r = lb.request(rno + 1, environ("GET", "/good", "", "c"), b"");
    assert_eq!(r.code(), 200);

    // Only the good requests reached the upstream, each a clean head.
    let heads = up.heads();
    assert_eq!(heads.len(), 18, "{heads:#?}");
    for head in &heads {
        assert!(head.starts_with("GET /good HTTP/1.1\r\n"), "{head:?}");
        assert!(!head.to_ascii_lowercase().contains("smuggled"), "{head:?}");
        assert!(!head.contains("Evil"), "{head:?}");
    }
    // One log line per refusal, naming the request.
    let log = w.proc.wait_for("refused (400)", T);
    assert!(log.contains("1.1: request from LB"), "{log}");
    assert_eq!(w.proc.stderr().matches("refused (400)").count(), 18);
}

/// A worker that refuses 127.0.0.1 closes the connection at once, says so
/// once however often the peer tries, and serves when the list allows it.
#[test]
fn allow_refuses_peers_outside_the_list() {
    let w = start_worker(&["--app", "demo", "--allow", "10.0.0.0/8, fd00::/8"]);
    for _ in 0..3 {
        let mut lb = TestLb::connect(w.addr);
        assert!(lb.recv().is_none(), "a refused peer got a frame");
    }
    let line = w.proc.wait_for("not in --allow", T);
    assert!(
        line.contains("LB 127.0.0.1:") && line.contains("connection refused"),
        "{line}"
    );
    // Rate-limited: three refusals, one line.
    assert_eq!(w.proc.stderr().matches("not in --allow").count(), 1);

    let w = start_worker(&["--app", "demo", "--allow", "127.0.0.0/8"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let r = lb.request(1, environ("GET", "/", "", "c"), b"");
    assert_eq!(r.code(), 200);
}

fn secret(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.path(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn get_worker_resume(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_get-worker-resume"))
        .args(args)
        .output()
        .unwrap()
}

/// Same secret on both sides: the LB answers the challenge, the worker
/// joins and serves; get-worker-resume answers it too.
#[test]
fn matching_secret_lets_the_lb_in() {
    let dir = TempDir::new("secret-ok");
    let s = secret(&dir, "s", "correct horse battery staple\n");
    let w = start_worker(&["--app", "demo", "--secret-file", &s]);
    let lb = start_lb(&["--secret-file", &s, &w.addr.to_string()]);
    lb.proc.wait_for("joined", T);
    let r = get(lb.addr, "example.com", "/1");
    assert_eq!(r.status, 200);
    w.proc.wait_for("shared secret proven", T);

    // By hand, on the wire: challenge first, then résumé and hello.
    let mut conn = TestLb::connect(w.addr);
    let Some(ToLb::Challenge(nonce)) = conn.recv() else {
        panic!("no challenge first")
    };
    assert_eq!(nonce.len(), 32);
    let key = resumelb::proto::auth::Secret::new(b"correct horse battery staple").unwrap();
    // A keep-alive before the answer (an LB that waited for a late
    // challenge) is no offence.
    conn.send(&ToWorker::KeepAlive);
    conn.send(&ToWorker::Auth(key.mac(&nonce)));
    conn.greeting();

    let out = get_worker_resume(&["--secret-file", &s, &w.addr.to_string()]);
    assert!(out.status.success(), "{out:?}");
}

/// Different secrets: both sides refuse, each says why once, and no
/// request reaches the worker.
#[test]
fn mismatched_secret_is_refused_on_both_sides() {
    let dir = TempDir::new("secret-bad");
    let s1 = secret(&dir, "s1", "one");
    let s2 = secret(&dir, "s2", "two");
    let w = start_worker(&["--app", "demo", "--secret-file", &s1]);
    let lb = start_lb(&["-L", "debug", "--secret-file", &s2, &w.addr.to_string()]);
    let line = lb.proc.wait_for("shared secrets differ", T);
    assert!(line.contains(&w.addr.to_string()), "{line}");
    let line = w.proc.wait_for("wrong answer to the challenge", T);
    assert!(line.contains("127.0.0.1"), "{line}");
    // The LB retries about once a second: still one warning on each side.
    wait_until("three connection tries", T, || {
        lb.proc.stderr().matches("connected to worker").count() >= 3
    });
    assert_eq!(lb.proc.stderr().matches("shared secrets differ").count(), 1);
    assert_eq!(w.proc.stderr().matches("wrong answer").count(), 1);
    assert!(!lb.proc.stderr().contains("joined"));

    let out = get_worker_resume(&["--secret-file", &s2, &w.addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shared secrets differ"), "{err}");
}

/// A secret on one side only: refused, with a line saying which side
/// lacks it.
#[test]
fn missing_secret_on_either_side_is_refused() {
    let dir = TempDir::new("secret-missing");
    let s = secret(&dir, "s", "only here");

    // The LB has one, the worker not.
    let open = start_worker(&["--app", "demo"]);
    let lb = start_lb(&["--secret-file", &s, &open.addr.to_string()]);
    let line = lb.proc.wait_for("did not send a challenge", T);
    assert!(line.contains(&open.addr.to_string()), "{line}");
    let out = get_worker_resume(&["--secret-file", &s, &open.addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sent no challenge"));

    // The worker has one, the LB not.
    let closed = start_worker(&["--app", "demo", "--secret-file", &s]);
    let lb = start_lb(&[&closed.addr.to_string()]);
    let line = lb.proc.wait_for("asks for a shared secret", T);
    assert!(line.contains(&closed.addr.to_string()), "{line}");
    let out = get_worker_resume(&[&closed.addr.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --secret-file"));

    // A peer that sends a request instead of the answer: closed at once.
    let mut peer = TestLb::connect(closed.addr);
    assert!(matches!(peer.recv(), Some(ToLb::Challenge(_))));
    let _ = peer.stream.write_all(&frame_of(&ToWorker::Environ(
        1,
        pairs(environ("GET", "/", "", "c")),
    )));
    assert!(peer.recv().is_none());
    closed
        .proc
        .wait_for("instead of answering the challenge", T);

    // A peer that says nothing: closed after the answer time.
    let mut silent = TestLb::connect(closed.addr);
    assert!(matches!(silent.recv(), Some(ToLb::Challenge(_))));
    assert!(
        silent.recv().is_none(),
        "still open after the challenge timeout"
    );
    closed
        .proc
        .wait_for("no answer to the challenge within 5 s", T);

    // An unreadable or empty secret file is a usage error (exit 2).
    let empty = secret(&dir, "empty", "\n");
    for f in [empty.as_str(), "/nonexistent/secret"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_resumelb-worker"))
            .args(["-a", "127.0.0.1:0", "--app", "demo", "--secret-file", f])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("secret file"));
    }
}

fn frame_of(msg: &ToWorker) -> Vec<u8> {
    let mut out = Vec::new();
    msg.encode(&mut out).unwrap();
    out
}
