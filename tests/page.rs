//! The pool's page and the observability listener, end to end: an LB with
//! real workers and classed traffic; `/status.json` and basic
//! authentication over HTTP; and the page rendered in headless Chromium,
//! driven over its DevTools protocol (on a pipe: `--remote-debugging-pipe`,
//! NUL-separated JSON). `make test` installs Debian's chromium and names it
//! in RLB_TEST_CHROMIUM; without that variable the browser test looks for
//! `chromium` on PATH and says so when there is none.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::io::FromRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SITES: [&str; 6] = [
    "alpha.example",
    "beta.example",
    "gamma.example",
    "delta.example",
    "epsilon.example",
    "zeta.example",
];

/// An LB with three demo workers and the observability listener.
struct Pool {
    workers: Vec<WorkerProc>,
    lb: LbProc,
    page: SocketAddr,
}

fn start_pool(extra: &[&str]) -> Pool {
    let workers: Vec<WorkerProc> = (0..3)
        .map(|_| start_worker(&["--app", "demo", "--threads", "2", "--history", "20"]))
        .collect();
    let addrs: Vec<String> = workers.iter().map(|w| w.addr.to_string()).collect();
    let mut args = vec!["--metrics-address", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend(addrs.iter().map(String::as_str));
    let lb = start_lb(&args);
    let needle = "pool page on http://";
    let line = lb.proc.wait_for(needle, Duration::from_secs(10));
    let page = line
        .split(needle)
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no page address in {line:?}"));
    Pool { workers, lb, page }
}

/// Requests for every site, `rounds` times (alpha the busiest).
fn traffic(lb: SocketAddr, rounds: usize) {
    let mut c = HttpConn::connect(lb);
    for r in 0..rounds {
        for (i, site) in SITES.iter().enumerate() {
            for _ in 0..(SITES.len() - i) {
                let req = format!("GET /obj{} HTTP/1.1\r\nHost: {site}\r\n\r\n", r % 5);
                c.send(req.as_bytes());
                let resp = c.response(false).expect("a response");
                assert_eq!(resp.status, 200, "{site}");
            }
        }
    }
}

fn get_with(addr: SocketAddr, path: &str, auth: Option<&str>) -> HttpResp {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: Basic {a}\r\n"));
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
}

fn document(page: SocketAddr) -> Value {
    let r = get_with(page, "/status.json?classes=4", None);
    assert_eq!(r.status, 200);
    r.json()
}

#[test]
fn status_json_describes_workers_classes_and_events() {
    let pool = start_pool(&[]);
    wait_until("three workers in the pool", Duration::from_secs(10), || {
        let d = document(pool.page);
        d["worker_list"]
            .as_array()
            .is_some_and(|l| l.iter().all(|w| w["state"] == "available") && l.len() == 3)
    });
    traffic(pool.lb.addr, 30);
    // Rates are taken each second; résumés come every 20 requests.
    wait_until("rates and scores", Duration::from_secs(10), || {
        let d = document(pool.page);
        d["classes"][0]["requests_per_s"].as_f64().unwrap_or(0.0) > 0.0
            && d["classes"][0]["best_worker"].is_string()
    });
    let d = document(pool.page);
    // The same document as the socket's, with the page's keys.
    for key in ["backlog", "workers", "worker_details", "pool", "placements"] {
        assert!(d.get(key).is_some(), "{key} missing");
    }
    let list = d["worker_list"].as_array().expect("worker_list");
    let mut answered = 0;
    for (w, proc) in list.iter().zip(sorted(&pool.workers)) {
        assert_eq!(w["address"], proc.to_string());
        assert_eq!(w["threads"], 2);
        assert_eq!(w["capacity"].as_u64().map(|c| c >= 2), Some(true), "{w}");
        answered += w["requests"].as_u64().expect("requests");
    }
    let total = 30 * (6 + 5 + 4 + 3 + 2 + 1);
    assert_eq!(answered, total);
    assert_eq!(d["totals"]["requests"], total);
    assert_eq!(d["totals"]["errors_5xx"], 0);
    // Four classes, the busiest first; alpha's requests all went to one
    // worker, the one its score names best.
    let classes = d["classes"].as_array().expect("classes");
    assert_eq!(classes.len(), 4);
    assert_eq!(classes[0]["class"], "alpha.example");
    assert_eq!(classes[0]["requests"], 30 * 6);
    let best = classes[0]["best_worker"].as_str().expect("best worker");
    assert!(classes[0]["scores"][best].as_f64().is_some());
    let share = classes[0]["best_share"].as_f64().expect("share");
    assert!(share > 0.9, "alpha's share to its best worker: {share}");
    assert!(classes[0]["p99"].as_f64() >= classes[0]["p50"].as_f64());
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "joined").count(),
        3,
        "{kinds:?}"
    );
    assert!(!d["history"]["points"]
        .as_array()
        .expect("points")
        .is_empty());
    // The socket's document has the same keys.
    let sock = TempDir::new("page-sock");
    drop(pool);
    let pool = start_pool(&["-s", sock.path("s").to_str().expect("path")]);
    wait_until("a worker in the pool", Duration::from_secs(10), || {
        status(&sock.path("s"))["worker_list"]
            .as_array()
            .is_some_and(|l| l.iter().any(|w| w["state"] == "available"))
    });
    let s = status(&sock.path("s"));
    for key in [
        "lb",
        "totals",
        "worker_list",
        "classes",
        "events",
        "history",
    ] {
        assert!(
            s.get(key).is_some(),
            "{key} missing in the socket's document"
        );
    }
    // The listener only reads.
    let post = http(
        pool.page,
        "POST /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
}

fn sorted(workers: &[WorkerProc]) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = workers.iter().map(|w| w.addr).collect();
    v.sort_by_key(|a| a.to_string());
    v
}

// From the SHA-crypt specification's test vectors: "Hello world!".
const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
const SHA256: &str =
    "$5$rounds=10000$saltstringsaltstring$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA";
/// "ops:Hello world!" and "admin:Hello world!".
const OPS: &str = "b3BzOkhlbGxvIHdvcmxkIQ==";
const ADMIN: &str = "YWRtaW46SGVsbG8gd29ybGQh";

#[test]
fn basic_auth_from_an_htpasswd_file_read_again_on_sighup() {
    let dir = TempDir::new("page-auth");
    let file = dir.path("htpasswd");
    std::fs::write(&file, format!("# the operators\nops:{SHA512}\n")).expect("write");
    let pool = start_pool(&["--metrics-auth-file", file.to_str().expect("path")]);
    for path in ["/", "/status.json", "/metrics", "/page.js"] {
        let r = get_with(pool.page, path, None);
        assert_eq!(r.status, 401, "{path}");
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        assert_eq!(get_with(pool.page, path, Some(OPS)).status, 200, "{path}");
    }
    assert_eq!(get_with(pool.page, "/", Some(ADMIN)).status, 401);
    // A new file counts after SIGHUP; a broken one keeps the last.
    std::fs::write(&file, format!("admin:{SHA256}\n")).expect("write");
    pool.lb.proc.signal("HUP");
    wait_until("the new users", Duration::from_secs(5), || {
        get_with(pool.page, "/", Some(ADMIN)).status == 200
    });
    assert_eq!(get_with(pool.page, "/", Some(OPS)).status, 401);
    std::fs::write(&file, "admin:$apr1$x$y\n").expect("write");
    pool.lb.proc.signal("HUP");
    pool.lb
        .proc
        .wait_for("keeping the users read before", Duration::from_secs(5));
    assert_eq!(get_with(pool.page, "/", Some(ADMIN)).status, 200);
    // A file that cannot be used at start is an error.
    let mut bad = Proc::start(
        LB,
        &[
            "-a",
            "127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
            "--metrics-auth-file",
            file.to_str().expect("path"),
            "127.0.0.1:1",
        ],
    );
    assert_eq!(bad.wait(Duration::from_secs(10)), Some(2));
    assert!(
        bad.stderr().contains("htpasswd:1: user admin:"),
        "{}",
        bad.stderr()
    );
}

/// A DevTools protocol client over Chromium's pipe.
struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    /// Events seen, in order.
    events: Vec<Value>,
    _profile: TempDir,
}

/// A pipe's ends, close-on-exec.
fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array it is given.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    fn start(chromium: &str) -> Browser {
        let profile = TempDir::new("chromium-profile");
        let (cmd_r, cmd_w) = pipe();
        let (ev_r, ev_w) = pipe();
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            &format!("--user-data-dir={}", profile.0.display()),
            "about:blank",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls: the
        // pipe ends become fds 3 (commands in) and 4 (answers out), by way
        // of fds above 10 so that neither is overwritten first.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(cmd_r, libc::F_DUPFD, 10);
                let b = libc::fcntl(ev_w, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromium}: {e}"));
        // SAFETY: these fds are ours alone from here on.
        unsafe {
            libc::close(cmd_r);
            libc::close(ev_w);
        }
        let to = unsafe { std::fs::File::from_raw_fd(cmd_w) };
        let mut from_file = unsafe { std::fs::File::from_raw_fd(ev_r) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                match from_file.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            session: None,
            events: Vec::new(),
            _profile: profile,
        }
    }

    /// Send a command (to the attached page, once there is one) and wait
    /// for its answer; events meanwhile are kept.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let m = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
            self.events.push(m);
        }
    }

    /// Keep events that came without a command.
    fn drain(&mut self) {
        while let Ok(m) = self.from.try_recv() {
            self.events.push(m);
        }
    }

    /// A page of its own, with the domains whose events the test reads.
    fn open_page(&mut self) {
        let target = self.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().expect("target id").to_string();
        let attached = self.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        self.session = Some(attached["sessionId"].as_str().expect("session").to_string());
        for domain in ["Runtime", "Log", "Network", "Page"] {
            self.call(&format!("{domain}.enable"), json!({}));
        }
    }

    /// A JavaScript expression's value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn refreshes(&mut self) -> u64 {
        self.eval("Number(document.body ? document.body.dataset.refreshes : 0)")
            .as_u64()
            .unwrap_or(0)
    }

    fn screenshot(&mut self, name: &str) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        let png = resumelb::testing::base64_decode(data).expect("base64");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).expect("target dir");
        std::fs::write(dir.join(name), png).expect("write the screenshot");
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<String> {
    if let Ok(p) = std::env::var("RLB_TEST_CHROMIUM") {
        assert!(
            std::path::Path::new(&p).exists(),
            "RLB_TEST_CHROMIUM={p} does not exist"
        );
        return Some(p);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if found.is_none() {
        eprintln!("no chromium: the page's browser test did not run (make test installs it)");
    }
    found
}

/// The rendered page's workers (address → state), heat map classes and
/// best-score cells.
fn rendered(b: &mut Browser) -> (HashMap<String, String>, Vec<String>, usize) {
    let v = b.eval(
        "JSON.stringify({
            workers: [...document.querySelectorAll('#workers tbody tr[data-address]')]
                .map(r => [r.dataset.address, r.dataset.state]),
            classes: [...document.querySelectorAll('#classes tbody tr[data-class]')]
                .map(r => r.dataset.class),
            best: document.querySelectorAll('#classes td.best').length,
        })",
    );
    let v: Value = serde_json::from_str(v.as_str().expect("a string")).expect("json");
    let workers = v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or("").to_string(),
                r[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let classes = v["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c.as_str().unwrap_or("").to_string())
        .collect();
    (workers, classes, v["best"].as_u64().unwrap_or(0) as usize)
}

#[test]
fn the_page_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    let mut pool = start_pool(&[]);
    traffic(pool.lb.addr, 30);
    let mut b = Browser::start(&chromium);
    b.open_page();
    b.viewport(1280, 1000, false);
    let origin = format!("http://{}/", pool.page);
    b.call("Page.navigate", json!({"url": origin}));
    wait_until(
        "the page's first refreshes",
        Duration::from_secs(15),
        || b.refreshes() >= 2,
    );
    // Every worker's row, available; the busy classes in the heat map,
    // each with its best-scored worker marked.
    wait_until("scores on the page", Duration::from_secs(10), || {
        let (_, classes, best) = rendered(&mut b);
        classes.len() == SITES.len() && best == SITES.len()
    });
    let (workers, classes, _) = rendered(&mut b);
    for w in &pool.workers {
        assert_eq!(
            workers.get(&w.addr.to_string()).map(String::as_str),
            Some("available"),
            "{workers:?}"
        );
    }
    assert_eq!(classes[0], "alpha.example", "busiest first: {classes:?}");
    for site in SITES {
        assert!(
            classes.iter().any(|c| c == site),
            "{site} not in {classes:?}"
        );
    }
    b.screenshot("page-screenshot.png");
    // A killed worker shows unavailable within two refreshes.
    let victim = pool.workers[1].addr.to_string();
    let _ = pool.workers[1].proc.child.kill();
    let _ = pool.workers[1].proc.child.wait();
    let before = b.refreshes();
    wait_until(
        "the killed worker unavailable",
        Duration::from_secs(10),
        || rendered(&mut b).0.get(&victim).map(String::as_str) == Some("unavailable"),
    );
    let after = b.refreshes();
    assert!(
        after - before <= 2,
        "the killed worker showed after {} refreshes",
        after - before
    );
    // Dark and phone-sized, for a person to look at.
    b.call(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    b.screenshot("page-dark.png");
    b.viewport(390, 844, true);
    b.screenshot("page-phone.png");
    b.drain();
    // No console errors, no exception, nothing from another host.
    let mut urls = Vec::new();
    for e in &b.events {
        let p = &e["params"];
        match e["method"].as_str().unwrap_or("") {
            "Runtime.exceptionThrown" => panic!("exception on the page: {p}"),
            "Runtime.consoleAPICalled" => {
                assert!(
                    p["type"] != "error" && p["type"] != "assert",
                    "console: {p}"
                )
            }
            "Log.entryAdded" => assert!(p["entry"]["level"] != "error", "log: {p}"),
            "Network.requestWillBeSent" => {
                urls.push(p["request"]["url"].as_str().unwrap_or("").to_string())
            }
            _ => {}
        }
    }
    assert!(urls.len() > 5, "requests seen: {urls:?}");
    for u in &urls {
        assert!(u.starts_with(&origin), "a request to another host: {u}");
    }
    assert!(urls
        .iter()
        .any(|u| u.starts_with(&format!("{origin}status.json"))));
}
