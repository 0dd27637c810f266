//! Operations: `make install`, `rlb-nagios` against a real status socket,
//! Prometheus metrics, and supervision under zdaemon (from the test
//! virtualenv that `make test` prepares).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);
const NAGIOS: &str = env!("CARGO_BIN_EXE_rlb-nagios");

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn make_install_and_uninstall() {
    let dest = TempDir::new("install");
    let manifest = env!("CARGO_MANIFEST_DIR");
    let destdir = format!("DESTDIR={}", dest.0.display());
    // The debug binaries this test run built stand in for the release ones.
    let build = format!(
        "BUILD_DIR={}",
        Path::new(env!("CARGO_BIN_EXE_resumelb"))
            .parent()
            .unwrap()
            .display()
    );
    let out = Command::new("make")
        .args([
            "-s",
            "-C",
            manifest,
            "install",
            &destdir,
            "PREFIX=/usr/local",
            "CARGO=true",
            &build,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bins = [
        "get-lb-status",
        "get-worker-resume",
        "resumelb",
        "resumelb-worker",
        "rlb-nagios",
        "zkresumelb",
    ];
    let mut want: Vec<String> = bins.iter().map(|b| format!("usr/local/bin/{b}")).collect();
    want.extend(
        bins.iter()
            .map(|b| format!("usr/local/share/man/man1/{b}.1")),
    );
    want.push("usr/local/share/man/man7/resumelb-protocol.7".into());
    want.sort();
    assert_eq!(files_under(&dest.0), want);
    for b in bins {
        let exe = dest.0.join("usr/local/bin").join(b);
        let out = Command::new(&exe).arg("--version").output().unwrap();
        assert!(out.status.success(), "{b} --version failed");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{b} ")));
    }
    for page in want.iter().filter(|p| p.contains("/man/")) {
        let out = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(dest.0.join(page))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success(), "man -l {page} failed");
        assert!(out.stdout.len() > 500, "{page} renders to almost nothing");
    }
    let out = Command::new("make")
        .args([
            "-s",
            "-C",
            manifest,
            "uninstall",
            &destdir,
            "PREFIX=/usr/local",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        files_under(&dest.0).is_empty(),
        "left behind: {:?}",
        files_under(&dest.0)
    );
}

fn nagios(args: &[&str]) -> (i32, String) {
    let out = Command::new(NAGIOS).args(args).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "not one line: {text:?}");
    (out.status.code().unwrap(), text)
}

#[test]
fn nagios_plugin_reports_each_state() {
    let dir = TempDir::new("nagios");
    let sock = dir.path("lb.sock");
    let s = sock.to_str().unwrap();
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&["-s", s, &w.addr.to_string()]);
    lb.proc.wait_for("joined", T);

    // The number of workers alerts at or below its thresholds.
    let (code, text) = nagios(&["-w", "0", "-W", "0", s]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("RESUMELB OK - 1 workers"), "{text}");
    assert!(
        text.contains("| 'workers'=1;@~:0;@~:0;0 'mean_backlog'=0.00;;;0"),
        "{text}"
    );
    let (code, text) = nagios(&["-w", "1", s]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("RESUMELB WARNING - 1 workers <= 1"),
        "{text}"
    );
    let (code, _) = nagios(&["-w", "2", "-W", "1", s]);
    assert_eq!(code, 2);
    // The original plugin's option names work too.
    let (code, text) = nagios(&["--minimum-worker-warn", "1", s]);
    assert_eq!(code, 1, "{text}");
    // Thresholds that make no sense are UNKNOWN, not a false alarm.
    for args in [
        &["-b", "NaN"][..],
        &["-x", "-1"][..],
        &["-x", "5", "-X", "2"][..],
    ] {
        let mut a = args.to_vec();
        a.push(s);
        let (code, text) = nagios(&a);
        assert_eq!(code, 3, "{args:?}: {text}");
    }

    // A request in flight: backlog and age thresholds.
    let mut slow = HttpConn::connect(lb.addr);
    slow.send(b"GET /1?sleep=2500 HTTP/1.1\r\nHost: n\r\n\r\n");
    wait_until("the request in flight", T, || {
        status(&sock)["backlog"].as_i64() == Some(1)
    });
    let (code, text) = nagios(&["-x", "1", "-X", "5", s]);
    assert_eq!(code, 1, "{text}");
    let (code, text) = nagios(&["-x", "1", "-X", "1", s]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("'max_backlog'=1;@1:;@1:;0"), "{text}");
    let (code, text) = nagios(&["-a", "0", "-A", "0", s]);
    assert_eq!(code, 2, "{text}");
    assert_eq!(slow.response(false).unwrap().status, 200);

    // Unknown: no thresholds, no socket, a socket that talks nonsense.
    let (code, text) = nagios(&[s]);
    assert_eq!(code, 3, "{text}");
    let (code, text) = nagios(&["-m", dir.path("missing").to_str().unwrap()]);
    assert_eq!(code, 3);
    assert!(text.starts_with("RESUMELB UNKNOWN"));
    let bad = dir.path("bad.sock");
    let l = std::os::unix::net::UnixListener::bind(&bad).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            use std::io::Write;
            let mut c = c;
            let _ = c.write_all(b"this is not json\n");
        }
    });
    let (code, text) = nagios(&["-m", bad.to_str().unwrap()]);
    assert_eq!(code, 3, "{text}");
}

#[test]
fn nagios_plugin_works_with_zero_workers() {
    let dir = TempDir::new("nagios0");
    let sock = dir.path("lb.sock");
    let lb = start_lb(&["-s", sock.to_str().unwrap(), "127.0.0.1:1"]);
    let _ = lb.addr;
    wait_until("the status socket", T, || sock.exists());
    let (code, text) = nagios(&["-m", sock.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("'workers'=0;;;0 'mean_backlog'=0.00;;;0"),
        "{text}"
    );
    let (code, _) = nagios(&["-W", "1", sock.to_str().unwrap()]);
    assert_eq!(code, 2);
}

fn scrape(addr: &str) -> (String, String) {
    let r = http(
        addr.parse().unwrap(),
        "GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    (
        r.header("Content-Type").unwrap_or("").to_string(),
        String::from_utf8(r.body).unwrap(),
    )
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[test]
fn prometheus_metrics_follow_traffic() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let lb = start_lb(&[
        "--metrics-address",
        "127.0.0.1:0",
        "--metrics-max-classes",
        "2",
        &w.addr.to_string(),
    ]);
    let line = lb.proc.wait_for("metrics on http://", T);
    let maddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    lb.proc.wait_for("joined", T);
    let (ctype, before) = scrape(&maddr);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert!(before.ends_with('\n'));
    for _ in 0..3 {
        assert_eq!(get(lb.addr, "one.com", "/1").status, 200);
    }
    assert_eq!(get(lb.addr, "two\"q.com", "/1").status, 200);
    assert_eq!(get(lb.addr, "three.com", "/1").status, 200);
    // A response can reach its client just before the worker's end frame
    // reaches the LB: wait for the count to settle.
    wait_until("five requests counted", T, || {
        sample(&scrape(&maddr).1, "resumelb_request_duration_seconds_count") == 5.0
    });
    let (_, after) = scrape(&maddr);
    assert_eq!(
        sample(
            &after,
            "resumelb_requests_total{class=\"one.com\",status=\"2xx\"}"
        ),
        3.0
    );
    // Escaped, and the third class beyond the limit of two is "other".
    assert_eq!(
        sample(
            &after,
            "resumelb_requests_total{class=\"two\\\"q.com\",status=\"2xx\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "resumelb_requests_total{class=\"other\",status=\"2xx\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "resumelb_request_duration_seconds_count"),
        5.0
    );
    let up = format!("resumelb_worker_up{{worker=\"{}\"}}", w.addr);
    assert_eq!(sample(&after, &up), 1.0);
    // Every sample's family has HELP and TYPE lines before it.
    let mut declared = std::collections::HashSet::new();
    for l in after.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            declared.insert(rest.split_whitespace().next().unwrap().to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                declared.contains(name) || declared.contains(family),
                "{name} has no TYPE line"
            );
        }
    }
    assert_eq!(
        after.matches("# HELP ").count(),
        after.matches("# TYPE ").count()
    );
    let r = http(
        maddr.parse().unwrap(),
        "GET /other HTTP/1.1\r\nHost: m\r\n\r\n",
    );
    assert_eq!(r.status, 404);
}

/// A port no other test takes meanwhile (below the ephemeral range).
fn free_port() -> u16 {
    port_outside_ephemeral_range()
}

#[test]
fn lb_and_worker_under_zdaemon() {
    let dir = TempDir::new("zd");
    let wport = free_port();
    let lport = free_port();
    let trace = dir.path("trace.log");
    let access = dir.path("access.log");
    let wconf = write_conf(
        &dir,
        "worker",
        &format!(
            "{WORKER} -a 127.0.0.1:{wport} --app demo --demo-miss-ms 0 --tracelog {}",
            trace.display()
        ),
    );
    let lconf = write_conf(
        &dir,
        "lb",
        &format!(
            "{LB} -a 127.0.0.1:{lport} -l {} 127.0.0.1:{wport}",
            access.display()
        ),
    );
    let lb: std::net::SocketAddr = format!("127.0.0.1:{lport}").parse().unwrap();
    zd(&wconf, "start");
    zd(&lconf, "start");
    let cleanup = Cleanup(vec![wconf.clone(), lconf.clone()]);
    wait_until("serving under zdaemon", T, || {
        std::net::TcpStream::connect(lb).is_ok() && get(lb, "z", "/1").status == 200
    });
    assert!(zd(&lconf, "status").contains("program running"));
    assert!(zd(&wconf, "status").contains("program running"));

    // logreopen: the renamed files stay behind, new lines go to new files.
    wait_until("the first log lines", T, || {
        access.exists() && trace.exists()
    });
    std::fs::rename(&access, dir.path("access.log.1")).unwrap();
    std::fs::rename(&trace, dir.path("trace.log.1")).unwrap();
    zd(&lconf, "logreopen");
    zd(&wconf, "logreopen");
    // Reopening creates the files again.
    wait_until("the logs reopened", T, || access.exists() && trace.exists());
    assert_eq!(get(lb, "z", "/reopened").status, 200);
    wait_until("new access log", T, || {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .contains("/reopened")
    });
    wait_until("new trace log", T, || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .contains("/reopened")
    });
    assert!(!std::fs::read_to_string(dir.path("access.log.1"))
        .unwrap()
        .contains("/reopened"));

    // A crash (SIGKILL) is restarted.
    let pid = zd_pid(&lconf).expect("no LB pid");
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wait_until("a new LB process", T, || {
        zd_pid(&lconf).is_some_and(|p| p != pid)
    });
    wait_until("serving again", T, || get(lb, "z", "/2").status == 200);

    // stop: SIGTERM, the request in flight completes, no restart.
    let mut slow = HttpConn::connect(lb);
    slow.send(b"GET /3?sleep=1500 HTTP/1.1\r\nHost: z\r\n\r\n");
    wait_until("the request at the app", T, || {
        std::fs::read_to_string(&trace).is_ok_and(|t| t.contains("GET /3?sleep=1500"))
    });
    zd(&lconf, "stop");
    assert_eq!(slow.response(false).unwrap().status, 200);
    assert!(!zd(&lconf, "status").contains("program running"));
    let log = std::fs::read_to_string(dir.path("lb.log")).unwrap();
    assert!(log.contains("all requests finished"), "{log}");
    drop(cleanup);
}

#[test]
fn usage_error_under_zdaemon_is_not_restarted() {
    let dir = TempDir::new("zdusage");
    let conf = write_conf(&dir, "bad", &format!("{LB} --no-such-option"));
    zd(&conf, "start");
    let _cleanup = Cleanup(vec![conf.clone()]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!zd(&conf, "status").contains("program running"));
    let log = std::fs::read_to_string(dir.path("bad.log")).unwrap_or_default();
    assert_eq!(log.matches("Unrecognized option").count(), 1, "{log}");
}
