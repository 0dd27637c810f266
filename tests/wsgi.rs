//! WSGI applications hosted in the worker (`--app wsgi:` and `--app
//! paste:`), end to end: the real worker binary with CPython embedded, the
//! test application tests/pep3333_app.py, a test LB speaking the wire
//! protocol, and the real LB for uploads from HTTP clients.
//!
//! Built with the cargo feature `wsgi` (the Makefile turns it on).

#![cfg(feature = "wsgi")]

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use resumelb::proto::{Rno, ToLb, ToWorker};

const T: Duration = Duration::from_secs(15);
const TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");

fn wsgi_worker(extra: &[&str]) -> WorkerProc {
    let mut args = vec!["--app", "wsgi:pep3333_app", "--python-path", TESTS];
    args.extend_from_slice(extra);
    start_worker(&args)
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn text(c: &Collected) -> String {
    String::from_utf8_lossy(&c.body).into_owned()
}

/// How often each resource's close() was called, as the app counted.
fn closes(lb: &mut TestLb, rno: &mut Rno) -> serde_json::Value {
    *rno += 1;
    lb.request(*rno, environ("GET", "/closed", "", "c"), b"")
        .json()
}

#[test]
fn every_pep3333_point_as_wsgi() {
    let dir = TempDir::new("wsgi");
    let trace = dir.path("trace.log");
    let w = wsgi_worker(&["--threads", "2", "--tracelog", trace.to_str().unwrap()]);
    every_pep3333_point(&w, &trace, "hello");
}

/// The same application through PasteDeploy (installed in the virtualenv
/// named by VIRTUAL_ENV), its ini's setting passed to the factory.
#[test]
fn every_pep3333_point_through_paste() {
    let dir = TempDir::new("paste");
    let trace = dir.path("trace.log");
    let app = format!("paste:{TESTS}/pep3333.ini");
    let w = start_worker_env(
        &[
            "--app",
            &app,
            "--python-path",
            TESTS,
            "--threads",
            "2",
            "--tracelog",
            trace.to_str().unwrap(),
        ],
        &[("VIRTUAL_ENV", &virtualenv())],
    );
    every_pep3333_point(&w, &trace, "from paste");
}

fn every_pep3333_point(w: &WorkerProc, trace: &std::path::Path, greeting: &str) {
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let mut rno = 0;
    let mut next = || {
        rno += 1;
        rno
    };

    // The environ: CGI keys, headers, wsgi.* and what zc.resumelb gave.
    let mut env = environ("POST", "/environ", "a=1", "env-class");
    env.insert("HTTP_X_THING".into(), "x y".into());
    let r = lb.request(next(), env, b"the body");
    assert_eq!(r.code(), 200, "{}", text(&r));
    let e = r.json();
    assert_eq!(e["wsgi.version"], serde_json::json!([1, 0]));
    assert_eq!(e["wsgi.multithread"], true);
    assert_eq!(e["wsgi.multiprocess"], true);
    assert_eq!(e["wsgi.run_once"], false);
    assert_eq!(e["wsgi.url_scheme"], "http");
    assert_eq!(e["wsgi.input"], "<Input>");
    assert_eq!(e["wsgi.errors"], "<Errors>");
    assert_eq!(e["input.read"], "the body");
    assert_eq!(e["CONTENT_LENGTH"], "8");
    assert_eq!(e["REQUEST_METHOD"], "POST");
    assert_eq!(e["PATH_INFO"], "/environ");
    assert_eq!(e["QUERY_STRING"], "a=1");
    assert_eq!(e["HTTP_X_THING"], "x y");
    assert_eq!(e["zc.resumelb.request_class"], "env-class");
    assert_eq!(e["tracelog.log"], true);
    assert_eq!(e["greeting"], greeting);
    let started = e["zc.resumelb.time"].as_f64().unwrap();
    let now = e["now"].as_f64().unwrap();
    assert!(started <= now && now - started < 10.0, "{started} {now}");
    assert_eq!(e["sys.path[:3]"][0], TESTS);

    // An iterable with close(); a generator that calls start_response
    // late; write() before the iterable.
    let r = lb.request(next(), environ("GET", "/stream", "n=4", "s"), b"");
    assert_eq!(
        (r.code(), r.ended, text(&r).as_str()),
        (200, true, "chunk 0\nchunk 1\nchunk 2\nchunk 3\n")
    );
    let r = lb.request(next(), environ("GET", "/generator", "", "s"), b"");
    assert_eq!((r.code(), text(&r).as_str()), (200, "from a generator"));
    let r = lb.request(next(), environ("GET", "/write", "", "s"), b"");
    assert_eq!(
        (r.code(), text(&r).as_str()),
        (200, "written, then returned")
    );

    // HEAD: the head, no body, close() still called.
    let r = lb.request(next(), environ("HEAD", "/stream", "", "s"), b"");
    assert_eq!((r.code(), r.ended, r.body.len()), (200, true, 0));

    // wsgi.file_wrapper, its file closed by the response's close().
    let r = lb.request(next(), environ("GET", "/file", "", "f"), b"");
    assert_eq!(r.code(), 200);
    assert_eq!(r.body.len(), 110_000);
    assert_eq!(Some(sha256(&r.body).as_str()), r.header("X-Sha256"));

    let mut n = rno;
    let c = closes(&mut lb, &mut n);
    assert_eq!(c["stream"], 2, "{c}");
    assert_eq!(c["write"], 1, "{c}");
    assert_eq!(c["file"], 1, "{c}");
    rno = n;
    let mut next = || {
        rno += 1;
        rno
    };

    // exc_info before any output replaces the response; after output it
    // re-raises, and the response is aborted.
    let r = lb.request(next(), environ("GET", "/exc_info", "", "x"), b"");
    assert_eq!(r.code(), 503);
    assert_eq!(r.header("X-Replaced"), Some("yes"));
    assert_eq!(text(&r), "replaced by exc_info");
    let late = next();
    let r = lb.request(late, environ("GET", "/exc_info_late", "", "x"), b"");
    assert!(r.aborted && !r.ended, "{r:?}");
    assert_eq!(text(&r), "partial output");
    w.proc
        .wait_for("ValueError: after output: exc_info re-raised", T);
    w.proc
        .wait_for(&format!(".{late}: the WSGI application raised"), T);

    // start_response twice, a str chunk, an exception: 500, the traceback
    // in the log with the request's trace id, and the thread lives on.
    let twice = next();
    let r = lb.request(twice, environ("GET", "/twice", "", "x"), b"");
    assert_eq!(r.code(), 500);
    w.proc
        .wait_for("AssertionError: start_response() was already called", T);
    let r = lb.request(next(), environ("GET", "/str", "", "x"), b"");
    assert_eq!(r.code(), 500);
    w.proc
        .wait_for("TypeError: the application's response holds a str", T);
    let failed = next();
    let r = lb.request(failed, environ("GET", "/error", "", "x"), b"");
    assert_eq!(
        (r.code(), text(&r).as_str()),
        (500, "Internal Server Error\n")
    );
    let line = w
        .proc
        .wait_for(&format!(".{failed}: the WSGI application raised"), T);
    assert!(line.contains("ERROR"), "{line}");
    w.proc.wait_for("Traceback (most recent call last)", T);
    w.proc
        .wait_for("RuntimeError: the test app failed on purpose", T);
    let r = lb.request(next(), environ("HEAD", "/error", "", "x"), b"");
    assert_eq!((r.code(), r.body.len()), (500, 0));
    for _ in 0..3 {
        let r = lb.request(next(), environ("GET", "/stream", "n=1", "s"), b"");
        assert_eq!(r.code(), 200);
    }

    // Content-Length: more than announced is cut, less is an abort.
    let r = lb.request(next(), environ("GET", "/length", "", "l"), b"");
    assert_eq!((r.code(), r.ended, text(&r).as_str()), (200, true, "hello"));
    let r = lb.request(next(), environ("GET", "/short", "", "l"), b"");
    assert!(r.aborted, "{r:?}");
    w.proc
        .wait_for("byte(s) shorter than its Content-Length", T);

    // wsgi.errors to the log, a line at a time.
    let errs = next();
    let r = lb.request(errs, environ("GET", "/errors", "", "e"), b"");
    assert_eq!(text(&r), "logged");
    for l in ["first line", "second line", "unfinished"] {
        w.proc.wait_for(&format!(".{errs}: wsgi.errors: {l}"), T);
    }

    // The application's own trace log records.
    let traced = next();
    let r = lb.request(traced, environ("GET", "/trace", "m=42", "t"), b"");
    assert_eq!(text(&r), "traced");
    wait_until("the app's trace records", T, || {
        let log = std::fs::read_to_string(trace).unwrap_or_default();
        let mine = |code: &str, msg: &str| {
            log.lines().any(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                f.len() == 4 && f[0] == code && f[1].ends_with(&format!(".{traced}")) && f[3] == msg
            })
        };
        mine("-", "app record 42") && mine("T", "coded record")
    });
}

/// A client that goes away: the app thread stops iterating at the next
/// chunk and calls close(); the slow response does not run to its end.
#[test]
fn a_cancelled_response_stops_and_is_closed() {
    let w = wsgi_worker(&["--threads", "2"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    lb.send_request(1, environ("GET", "/slow", "name=cancelled", "slow"), b"");
    // Wait for the head and a first tick, then cancel.
    loop {
        match lb.recv_skip_keepalive() {
            Some(ToLb::Body(1, _)) => break,
            Some(_) => {}
            None => panic!("the worker closed the connection"),
        }
    }
    lb.send(&ToWorker::Cancel(1));
    // 400 ticks of 25 ms would take 10 s; close() comes well before.
    let mut rno = 1;
    let mut other = TestLb::connect(w.addr);
    other.greeting();
    wait_until(
        "close() of the cancelled response",
        Duration::from_secs(5),
        || closes(&mut other, &mut rno)["cancelled"] == 1,
    );
    assert!(!w.proc.stderr().contains("raised"), "{}", w.proc.stderr());
}

/// The same through the LB: an HTTP client that goes away after the first
/// chunk; the LB cancels, the app thread stops and calls close().
#[test]
fn a_client_that_goes_away_has_its_response_closed() {
    let w = wsgi_worker(&["--threads", "2"]);
    let lb = start_lb(&[&w.addr.to_string()]);
    let mut c = HttpConn::connect(lb.addr);
    c.send(b"GET /slow?name=client-gone HTTP/1.1\r\nHost: slow\r\n\r\n");
    let mut first = [0u8; 64];
    let n = std::io::Read::read(&mut c.stream, &mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(c);
    let mut probe = TestLb::connect(w.addr);
    probe.greeting();
    let mut rno = 0;
    wait_until(
        "close() after the client left",
        Duration::from_secs(5),
        || closes(&mut probe, &mut rno)["client-gone"] == 1,
    );
}

/// A 10 MiB chunked upload through the LB, read by the app with
/// readline() (and the other ways, on a smaller body): the worker spills
/// it to disk, wsgi.input reads it back.
#[test]
fn chunked_uploads_through_the_lb() {
    let w = wsgi_worker(&["--threads", "2"]);
    let lb = start_lb(&[&w.addr.to_string()]);
    let mut body = Vec::new();
    let mut i = 0u64;
    while body.len() < 10 << 20 {
        // Lines of 1 to ~2000 bytes, and one without a newline at the end.
        let len = (i * 7919) % 2000;
        body.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len as usize));
        body.push(b'\n');
        i += 1;
    }
    body.extend_from_slice(b"no newline at the end");
    let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
    for (mode, size) in [
        ("readline", body.len()),
        ("read", 1 << 20),
        ("readlines", 1 << 20),
        ("iter", 1 << 20),
    ] {
        let part = &body[body.len() - size..];
        let mut c = HttpConn::connect(lb.addr);
        c.send(
            format!(
                "POST /upload?mode={mode} HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        for piece in part.chunks(100_000) {
            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
            chunk.extend_from_slice(piece);
            chunk.extend_from_slice(b"\r\n");
            c.stream.write_all(&chunk).unwrap();
        }
        c.send(b"0\r\n\r\n");
        let r = c.response(false).expect("a response");
        assert_eq!(
            r.status,
            200,
            "{mode}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert_eq!(j["bytes"], part.len(), "{mode}");
        assert_eq!(j["sha256"], sha256(part), "{mode}");
        if mode == "readline" {
            assert_eq!(j["lines"], lines);
        }
    }
}

/// A paste file's other application, by name.
#[test]
fn paste_files_name_their_applications() {
    let app = format!("paste:{TESTS}/pep3333.ini#other");
    let w = start_worker_env(
        &["--app", &app, "--python-path", TESTS],
        &[("VIRTUAL_ENV", &virtualenv())],
    );
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    let r = lb.request(1, environ("GET", "/environ", "", "p"), b"");
    assert_eq!(r.json()["greeting"], "the other one");
}

/// Per-class speed of the Python application shows in the résumé.
#[test]
fn the_resume_reflects_the_apps_speed_per_class() {
    let w = wsgi_worker(&["--threads", "2", "--history", "4"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    for rno in 1..=8 {
        let (class, ms) = if rno % 2 == 0 {
            ("fast", "0")
        } else {
            ("slow", "60")
        };
        let r = lb.request(
            rno,
            environ("GET", "/sleep", &format!("ms={ms}"), class),
            b"",
        );
        assert_eq!(r.code(), 200);
    }
    let resume = || -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_get-worker-resume"))
            .args(["--json", &w.addr.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v
    };
    let mut last = serde_json::Value::Null;
    wait_until("both classes in the résumé", T, || {
        last = resume();
        last.to_string().contains("fast") && last.to_string().contains("slow")
    });
    let text = last.to_string();
    let score = |class: &str| -> f64 {
        fn find(v: &serde_json::Value, class: &str) -> Option<f64> {
            match v {
                serde_json::Value::Object(m) => m
                    .get(class)
                    .and_then(serde_json::Value::as_f64)
                    .or_else(|| m.values().find_map(|x| find(x, class))),
                serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, class)),
                _ => None,
            }
        }
        find(&last, class).unwrap_or_else(|| panic!("no score for {class} in {text}"))
    };
    let (fast, slow) = (score("fast"), score("slow"));
    // Scores are requests per second: 60 ms of sleep is at most ~16.
    assert!(slow < 20.0, "{text}");
    assert!(fast > 5.0 * slow, "{text}");
}

/// Applications that cannot be loaded stop the worker at start-up with one
/// line naming the module and the Python exception, and exit 2.
#[test]
fn applications_that_cannot_load_stop_the_worker() {
    let dir = TempDir::new("wsgi-bad");
    std::fs::write(dir.path("broken_app.py"), "def application(:\n").unwrap();
    std::fs::write(
        dir.path("raising_app.py"),
        "raise ImportError('no database')\n",
    )
    .unwrap();
    let d = dir.0.to_str().unwrap().to_string();
    /// Arguments, environment, what the one line says.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        (&["--app", "wsgi:no_such_module"], &[], "cannot import WSGI module no_such_module: ModuleNotFoundError: No module named 'no_such_module'"),
        (&["--app", "wsgi:broken_app", "--python-path", &d], &[], "cannot import WSGI module broken_app: SyntaxError"),
        (&["--app", "wsgi:raising_app", "--python-path", &d], &[], "cannot import WSGI module raising_app: ImportError: no database"),
        (&["--app", "wsgi:pep3333_app:nothing", "--python-path", TESTS], &[], "no WSGI application nothing in module pep3333_app: AttributeError"),
        (&["--app", "wsgi:pep3333_app:CLOSED", "--python-path", TESTS], &[], "wsgi:pep3333_app:CLOSED is a dict, not a WSGI application"),
        (&["--app", &format!("paste:{TESTS}/pep3333.ini")], &[("VIRTUAL_ENV", "")], "needs PasteDeploy, which this Python"),
    ];
    for (args, env, expected) in cases {
        let mut all = vec!["-a", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut p = Proc::start_env(WORKER, &all, env);
        assert_eq!(p.wait(T), Some(2), "{args:?}: {}", p.stderr());
        let err = p.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("listening"), "{err}");
    }
}
