//! Command lines as an operator types them, odd values included: messages
//! and exit codes of the real binaries (no server needed).

mod common;

use std::process::Command;

use common::*;

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every duration option, out of range: one usage line naming the option,
/// exit 2; never a panic (`-t 1e20` used to abort with exit 101).
#[test]
fn durations_out_of_range_are_usage_errors() {
    let lb = env!("CARGO_BIN_EXE_resumelb");
    let zklb = env!("CARGO_BIN_EXE_zkresumelb");
    let worker = env!("CARGO_BIN_EXE_resumelb-worker");
    let wargs = ["-a", "127.0.0.1:0", "--app", "demo"];
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (lb, vec!["-t", "1e20", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "1e19", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "0", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "NaN", "127.0.0.1:1"], "--socket-timeout"),
        (lb, vec!["-t", "-5", "127.0.0.1:1"], "--socket-timeout"),
        (
            zklb,
            vec!["-t", "1e20", "127.0.0.1:1", "/x"],
            "--socket-timeout",
        ),
        (
            worker,
            [&wargs[..], &["--upstream-timeout", "1e20"]].concat(),
            "--upstream-timeout",
        ),
        (
            worker,
            [&wargs[..], &["--shutdown-timeout", "1e20"]].concat(),
            "--shutdown-timeout",
        ),
        (
            env!("CARGO_BIN_EXE_get-lb-status"),
            vec!["-t", "1e20", "/nonexistent.sock"],
            "--timeout",
        ),
        (
            env!("CARGO_BIN_EXE_get-worker-resume"),
            vec!["-t", "1e20", "127.0.0.1:1"],
            "--timeout",
        ),
    ];
    for (bin, args, option) in cases {
        let (code, _, err) = run(bin, &args);
        assert_eq!(code, Some(2), "{bin} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bin} {args:?}: {err}");
        assert!(err.contains(option) && err.contains("seconds"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The Nagios plugin says UNKNOWN (exit 3), as for any bad command line.
    let (code, out, err) = run(
        env!("CARGO_BIN_EXE_rlb-nagios"),
        &["-t", "1e20", "-b", "1", "/nonexistent.sock"],
    );
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.contains("UNKNOWN") && out.contains("--timeout"),
        "{out}"
    );
    assert!(out.contains("seconds"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
}

/// get-lb-status or rlb-nagios (with a threshold, which it requires) on
/// `path`, with a 1 s timeout.
fn tool(bin: &str, path: &std::path::Path) -> (Option<i32>, String) {
    let mut args = vec!["-t", "1"];
    if bin.ends_with("rlb-nagios") {
        args.extend(["-b", "1"]);
    }
    args.push(path.to_str().unwrap());
    let (code, out, err) = run(bin, &args);
    (code, format!("{out}{err}"))
}

/// A second LB never takes a live status socket; a stale one is replaced;
/// a file in the way is named as such, by the LB and by the tools.
#[test]
fn status_socket_is_never_stolen() {
    let dir = TempDir::new("status-path");
    let sock = dir.path("lb.sock");
    let s = sock.to_str().unwrap();
    let first = start_lb(&["-s", s, "127.0.0.1:1"]);
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_resumelb"),
        &["-a", "127.0.0.1:0", "-s", s, "127.0.0.1:1"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");
    // The first LB still has its socket.
    assert!(status(&sock)["workers"].is_array());
    drop(first); // killed: its socket file is left behind, stale

    let second = start_lb(&["-s", s, "127.0.0.1:1"]);
    assert!(status(&sock)["workers"].is_array());
    drop(second);

    let file = dir.path("plain-file");
    std::fs::write(&file, "not a socket").unwrap();
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_resumelb"),
        &[
            "-a",
            "127.0.0.1:0",
            "-s",
            file.to_str().unwrap(),
            "127.0.0.1:1",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
    let (code, text) = tool(env!("CARGO_BIN_EXE_get-lb-status"), &file);
    assert_eq!(code, Some(1));
    assert!(text.contains("exists and is not a socket"), "{text}");
    let (code, text) = tool(env!("CARGO_BIN_EXE_rlb-nagios"), &file);
    assert_eq!(code, Some(3));
    assert!(text.contains("exists and is not a socket"), "{text}");
}

/// The tools tell "not a status document" and "no answer in time" apart
/// from "unreachable".
#[test]
fn status_tools_say_what_went_wrong() {
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    let dir = TempDir::new("status-tools");
    let other = dir.path("other.sock");
    let l = UnixListener::bind(&other).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"{\"hello\": \"world\"}\n");
        }
    });
    let (code, text) = tool(env!("CARGO_BIN_EXE_get-lb-status"), &other);
    assert_eq!(code, Some(1));
    assert!(text.contains("not a resumelb status document"), "{text}");

    let silent = dir.path("silent.sock");
    let l = UnixListener::bind(&silent).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c); // never answers
        }
    });
    let (code, text) = tool(env!("CARGO_BIN_EXE_get-lb-status"), &silent);
    assert_eq!(code, Some(1));
    assert!(text.contains("timed out after 1 s"), "{text}");
    let (code, text) = tool(env!("CARGO_BIN_EXE_rlb-nagios"), &silent);
    assert_eq!(code, Some(3));
    assert!(text.contains("timed out after 1 s"), "{text}");

    let (code, text) = tool(env!("CARGO_BIN_EXE_get-lb-status"), &dir.path("none.sock"));
    assert_eq!(code, Some(1));
    assert!(text.contains("unreachable"), "{text}");
}

const T: std::time::Duration = std::time::Duration::from_secs(15);

/// One rule for exit codes: what the operator must fix exits 2 (so that
/// zdaemon's `exit-codes 0,2` does not restart it forever), what may clear
/// by itself exits 1.
#[test]
fn bad_addresses_exit_2_and_an_address_in_use_exits_1() {
    let lb = env!("CARGO_BIN_EXE_resumelb");
    let zklb = env!("CARGO_BIN_EXE_zkresumelb");
    let worker = env!("CARGO_BIN_EXE_resumelb-worker");
    for (bin, args) in [
        (lb, vec!["-a", "nonsense", "127.0.0.1:1"]),
        (lb, vec!["-a", "1.2.3.4:99999", "127.0.0.1:1"]),
        (zklb, vec!["-a", "nonsense", "127.0.0.1:1", "/x"]),
        (worker, vec!["-a", "nonsense", "--app", "demo"]),
        (worker, vec!["-a", "127.0.0.1:99999", "--app", "demo"]),
    ] {
        let (code, _, err) = run(bin, &args);
        assert_eq!(code, Some(2), "{bin} {args:?}: {err}");
        assert!(
            err.contains("bad address -a") && err.contains(args[1]),
            "{err}"
        );
    }
    let (code, _, err) = run(
        lb,
        &[
            "-a",
            "127.0.0.1:0",
            "--metrics-address",
            "nonsense",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--metrics-address \"nonsense\""), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (bin, args) in [
        (lb, vec!["-a", addr.as_str(), "127.0.0.1:1"]),
        (worker, vec!["-a", addr.as_str(), "--app", "demo"]),
    ] {
        let (code, _, err) = run(bin, &args);
        assert_eq!(code, Some(1), "{bin}: {err}");
        assert!(err.contains("cannot listen on"), "{err}");
    }
}

/// SIGHUP reopens the logs like SIGUSR2 instead of killing the process
/// (exit 129, status socket left behind).
#[test]
fn sighup_reopens_logs_and_does_not_kill() {
    let dir = TempDir::new("sighup");
    let log = dir.path("access.log");
    let mut lb = start_lb(&["-l", log.to_str().unwrap(), "127.0.0.1:1"]);
    let w = start_worker(&[
        "--app",
        "demo",
        "--tracelog",
        dir.path("trace").to_str().unwrap(),
    ]);
    std::fs::rename(&log, dir.path("access.log.1")).unwrap();
    lb.proc.signal("HUP");
    w.proc.signal("HUP");
    wait_until("the access log reopened", T, || log.exists());
    assert!(lb.proc.child.try_wait().unwrap().is_none(), "the LB died");
    lb.proc.signal("TERM");
    assert_eq!(lb.proc.wait(T), Some(0));
    let mut w = w;
    assert!(
        w.proc.child.try_wait().unwrap().is_none(),
        "the worker died"
    );
    w.proc.signal("TERM");
    assert_eq!(w.proc.wait(T), Some(0));
}

/// A second Ctrl-C exits at once; when that cuts requests in flight, the
/// exit status is not 0.
#[test]
fn a_second_stop_that_cuts_requests_exits_1() {
    let dir = TempDir::new("second-stop");
    let sock = dir.path("lb.sock");
    // The trace log on stderr: `I` records a request handed to an app thread.
    let mut w = start_worker(&["--app", "demo", "--threads", "2", "--tracelog", "-"]);
    let mut lb = start_lb(&["-s", sock.to_str().unwrap(), &w.addr.to_string()]);
    lb.proc.wait_for("joined", T);
    let mut client = HttpConn::connect(lb.addr);
    client.send(b"GET /1?sleep=5000 HTTP/1.1\r\nHost: a\r\n\r\n");
    wait_until("the request in flight", T, || {
        status(&sock)["backlog"].as_i64() == Some(1)
    });
    lb.proc.signal("INT");
    lb.proc.wait_for("shutting down", T);
    lb.proc.signal("INT");
    assert_eq!(lb.proc.wait(T), Some(1), "{}", lb.proc.stderr());
    assert!(lb.proc.stderr().contains("cut off"));

    // The worker likewise, with a request running in an app thread.
    let started = |w: &WorkerProc| {
        w.proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("I "))
            .count()
    };
    let before = started(&w);
    let mut tlb = TestLb::connect(w.addr);
    tlb.greeting();
    tlb.send_request(1, environ("GET", "/1", "sleep=5000", "c"), b"");
    wait_until("the request at an app thread", T, || started(&w) > before);
    w.proc.signal("INT");
    w.proc.wait_for("shutting down", T);
    w.proc.signal("INT");
    assert_eq!(w.proc.wait(T), Some(1), "{}", w.proc.stderr());
    assert!(w.proc.stderr().contains("cut off"));
}

/// `re:NAME:…` with a NAME no request carries is warned about at start-up;
/// a bad regex is one line.
#[test]
fn request_classifier_mistakes_are_said() {
    let lb = start_lb(&["-r", "re:PATHINFO:(?P<class>.*)", "127.0.0.1:1"]);
    let line = lb.proc.wait_for("no request carries", T);
    assert!(line.contains("WARN") && line.contains("PATHINFO"), "{line}");
    let (code, _, err) = run(
        env!("CARGO_BIN_EXE_resumelb"),
        &["-r", "re:PATH_INFO:(?P<class>[a", "127.0.0.1:1"],
    );
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unclosed character class"), "{err}");
}

/// A worker that accepts but never answers (SIGSTOPped, say): the tool
/// says it timed out, not "Resource temporarily unavailable".
#[test]
fn get_worker_resume_says_it_timed_out() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (code, _, err) = run(env!("CARGO_BIN_EXE_get-worker-resume"), &["-t", "1", &addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert!(!err.contains("temporarily unavailable"), "{err}");
    drop(silent);
}

/// A worker address with nothing listening, and one that speaks HTTP
/// instead of the worker protocol: one warning each, saying so, however
/// often the LB retries.
#[test]
fn misconfigured_worker_addresses_are_warned_about_once() {
    use std::io::{Read, Write};
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut c in http.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let lb = start_lb(&["-L", "debug", &closed_addr, &http_addr]);
    let count = |needle: &str| lb.proc.stderr().matches(needle).count();
    let tries = |addr: &str| {
        lb.proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("DEBUG") && l.contains(&format!("worker {addr}:")))
            .count()
    };
    wait_until("three tries at each address", T, || {
        tries(&closed_addr) >= 3 && tries(&http_addr) >= 3
    });
    let unreachable = format!("worker {closed_addr} cannot be reached");
    assert_eq!(count(&unreachable), 1, "{}", lb.proc.stderr());
    let not_a_worker = format!("no résumé from worker {http_addr}");
    assert_eq!(count(&not_a_worker), 1, "{}", lb.proc.stderr());
    assert!(lb.proc.stderr().contains("is it a resumelb worker?"));
}

/// `-L` takes what the man pages list: names with `off`, 0-5 and 10-50.
#[test]
fn log_levels_out_of_range_are_refused() {
    let lb = env!("CARGO_BIN_EXE_resumelb");
    for level in ["6", "51", "loud"] {
        let (code, _, err) = run(lb, &["-L", level, "127.0.0.1:1"]);
        assert_eq!(code, Some(2), "-L {level}: {err}");
        assert!(err.contains("bad log level"), "{err}");
    }
    let (code, out, _) = run(lb, &["--help"]);
    assert_eq!(code, Some(0));
    let folded = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        folded.contains("trace, off, or a number 0-5 or 10-50"),
        "{out}"
    );
}

/// `--help` says whether WSGI applications are built in; a worker without
/// them refuses `--app wsgi:` and `--app paste:` at start-up, exit 2.
#[test]
fn the_worker_says_whether_it_hosts_wsgi_apps() {
    let worker = env!("CARGO_BIN_EXE_resumelb-worker");
    let (code, help, _) = run(worker, &["--help"]);
    assert_eq!(code, Some(0));
    let built_in = cfg!(feature = "wsgi");
    let said = if built_in {
        "(built in)"
    } else {
        "(not built in: this build has no Python)"
    };
    assert!(
        help.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains(said),
        "{help}"
    );
    for bad in ["wsgi:", "wsgi:a b", "paste:"] {
        let (code, _, err) = run(worker, &["-a", "127.0.0.1:0", "--app", bad]);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(
            err.contains("bad ") || err.contains("unknown app"),
            "{bad}: {err}"
        );
    }
    if !built_in {
        for app in ["wsgi:myapp", "paste:site.ini"] {
            let (code, _, err) = run(worker, &["-a", "127.0.0.1:0", "--app", app]);
            assert_eq!(code, Some(2), "{err}");
            assert!(err.contains("built without WSGI support"), "{err}");
        }
    }
}
