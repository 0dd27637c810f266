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
use resumelb::proto::{Environ, EnvironPairs, ToWorker};

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
