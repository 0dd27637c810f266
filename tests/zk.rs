//! ZooKeeper deployment against a real ZooKeeper server: `make test` starts
//! one (scripts/with-zookeeper) and sets RLB_TEST_ZK; the restart test runs
//! a server of its own. Each test works under its own root node.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use zookeeper::{Acl, CreateMode, ZkError, ZooKeeper};

const T: Duration = Duration::from_secs(30);
const ZKLB: &str = env!("CARGO_BIN_EXE_zkresumelb");

fn zk_addr() -> String {
    std::env::var("RLB_TEST_ZK").expect(
        "RLB_TEST_ZK is not set: run the tests with `make test` (or scripts/with-zookeeper cargo test)",
    )
}

/// A test client. The `zookeeper` crate can miss a server that was not
/// ready yet and then wait forever, so a session that does not come in a
/// few seconds is abandoned and tried again.
fn client(addr: &str) -> std::sync::Arc<ZooKeeper> {
    let end = std::time::Instant::now() + T;
    loop {
        let zk = ZooKeeper::connect(addr, Duration::from_secs(10), |_| {}).unwrap();
        let zk = std::sync::Arc::new(zk);
        let (tx, rx) = std::sync::mpsc::channel();
        let z2 = zk.clone();
        std::thread::spawn(move || {
            let _ = tx.send(z2.exists("/", false).is_ok());
        });
        if rx.recv_timeout(Duration::from_secs(3)) == Ok(true) {
            return zk;
        }
        assert!(
            std::time::Instant::now() < end,
            "no ZooKeeper session at {addr}"
        );
        // Closing a client that never connected can block: let it go.
        std::thread::spawn(move || drop(zk));
    }
}

/// Create `path` (and its parents) with `data`, or set its data.
fn put(zk: &ZooKeeper, path: &str, data: &str) {
    let mut cur = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, p) in parts.iter().enumerate() {
        cur.push('/');
        cur.push_str(p);
        let d = if i + 1 == parts.len() {
            data.as_bytes().to_vec()
        } else {
            Vec::new()
        };
        match zk.create(
            &cur,
            d.clone(),
            Acl::open_unsafe().clone(),
            CreateMode::Persistent,
        ) {
            Ok(_) => {}
            Err(ZkError::NodeExists) if i + 1 == parts.len() => {
                zk.set_data(&cur, d, None).unwrap();
            }
            Err(ZkError::NodeExists) => {}
            Err(e) => panic!("create {cur}: {e:?}"),
        }
    }
}

fn data(zk: &ZooKeeper, path: &str) -> serde_json::Value {
    let (d, _) = zk.get_data(path, false).unwrap();
    serde_json::from_slice(&d).unwrap()
}

/// A unique root for one test.
fn root(name: &str) -> String {
    format!("/rlbtest-{name}-{}", std::process::id())
}

fn zk_worker(zk: &str, path: &str, extra: &[&str]) -> WorkerProc {
    let mut args = vec![
        "--app",
        "demo",
        "--demo-miss-ms",
        "0",
        "--zookeeper",
        zk,
        "--path",
        path,
    ];
    args.extend_from_slice(extra);
    start_worker(&args)
}

struct ZkLb {
    proc: Proc,
    addr: std::net::SocketAddr,
}

fn zk_lb(zk: &str, path: &str, extra: &[&str]) -> ZkLb {
    let mut args = vec!["-a", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.push(zk);
    args.push(path);
    let proc = Proc::start(ZKLB, &args);
    let line = proc.wait_for("listening on ", T);
    let addr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ZkLb { proc, addr }
}

fn lb_workers(lb: &ZkLb, sock: &std::path::Path) -> Vec<String> {
    let _ = lb;
    pool_workers(sock)
}

#[test]
fn worker_registers_with_its_properties_and_leaves_on_stop() {
    let zs = zk_addr();
    let zk = client(&zs);
    let path = format!("{}/app", root("reg"));
    put(&zk, &path, r#"{"history": 5}"#);
    let mut w = zk_worker(
        &zs,
        &path,
        &["--description", "test worker", "--version", "7"],
    );
    let node = format!("{path}/providers/{}", w.addr);
    wait_until("the registration", T, || {
        zk.exists(&node, false).ok().flatten().is_some()
    });
    let d = data(&zk, &node);
    assert_eq!(d["pid"].as_u64(), Some(u64::from(w.proc.child.id())));
    assert_eq!(d["description"], "test worker");
    assert_eq!(d["version"], "7");
    w.proc.wait_for("résumé settings: history 5", T);
    w.proc.signal("TERM");
    assert_eq!(w.proc.wait(T), Some(0));
    assert!(
        zk.exists(&node, false).unwrap().is_none(),
        "registration left behind"
    );
}

#[test]
fn zkresumelb_follows_workers_settings_and_registers_itself() {
    let zs = zk_addr();
    let zk = client(&zs);
    let r = root("lb");
    let dir = TempDir::new("zklb");
    let sock = dir.path("lb.sock");
    put(&zk, &r, r#"{"variance": 2.5}"#);
    put(&zk, &format!("{r}/workers"), r#"{"history": 4}"#);
    let w1 = zk_worker(&zs, &format!("{r}/workers"), &["--history", "4"]);
    let w2 = zk_worker(&zs, &format!("{r}/workers"), &["--history", "4"]);
    let mut lb = zk_lb(&zs, &r, &["-s", sock.to_str().unwrap()]);
    let me = format!("{r}/providers/{}", lb.addr);
    wait_until("the LB registration", T, || {
        zk.exists(&me, false).ok().flatten().is_some()
    });
    let both = {
        let mut v = vec![w1.addr.to_string(), w2.addr.to_string()];
        v.sort();
        v
    };
    wait_until("both workers", T, || lb_workers(&lb, &sock) == both);

    // Settings from ZooKeeper, live, and back to defaults when removed.
    assert_eq!(status(&sock)["settings"]["variance"].as_f64(), Some(2.5));
    put(&zk, &r, r#"{"variance": 3, "backlog_history": "5"}"#);
    wait_until("new settings", T, || {
        let s = status(&sock)["settings"].clone();
        s["variance"].as_f64() == Some(3.0) && s["backlog_history"].as_u64() == Some(5)
    });
    put(&zk, &r, "{}");
    wait_until("default settings", T, || {
        let s = status(&sock)["settings"].clone();
        s["variance"].as_f64() == Some(1.0) && s["backlog_history"].as_u64() == Some(9)
    });

    // Routing by class: each class sticks to one worker.
    let mut seen = std::collections::HashMap::new();
    for i in 0..12 {
        for class in ["a.com", "b.com"] {
            let got = get(lb.addr, class, &format!("/{i}")).worker();
            seen.entry(class)
                .or_insert_with(std::collections::HashSet::new)
                .insert(got);
        }
    }
    assert_eq!(seen["a.com"].len(), 1, "{seen:?}");
    assert_eq!(seen["b.com"].len(), 1, "{seen:?}");

    // One stops: dropped; another starts: added.
    let mut w1 = w1;
    w1.proc.signal("TERM");
    assert_eq!(w1.proc.wait(T), Some(0));
    wait_until("w1 gone", T, || {
        lb_workers(&lb, &sock) == vec![w2.addr.to_string()]
    });
    let w3 = zk_worker(&zs, &format!("{r}/workers"), &[]);
    wait_until("w3 added", T, || {
        lb_workers(&lb, &sock).contains(&w3.addr.to_string())
    });
    assert_eq!(get(lb.addr, "c.com", "/1").status, 200);

    lb.proc.signal("TERM");
    assert_eq!(lb.proc.wait(T), Some(0));
    assert!(
        zk.exists(&me, false).unwrap().is_none(),
        "LB registration left behind"
    );
}

#[test]
fn flapping_provider_leaves_one_connection_per_worker() {
    let zs = zk_addr();
    let zk = client(&zs);
    let r = root("flap");
    let dir = TempDir::new("flap");
    let sock = dir.path("lb.sock");
    put(&zk, &format!("{r}/workers/providers"), "");
    // A worker outside ZooKeeper; the test registers (and flaps) it.
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let node = format!("{r}/workers/providers/{}", w.addr);
    put(&zk, &node, "{}");
    let lb = zk_lb(&zs, &r, &["-s", sock.to_str().unwrap()]);
    wait_until("the worker", T, || {
        lb_workers(&lb, &sock) == vec![w.addr.to_string()]
    });
    for i in 0..40 {
        zk.delete(&node, None).unwrap();
        if i % 3 == 0 {
            std::thread::sleep(Duration::from_millis(30));
        }
        zk.create(
            &node,
            b"{}".to_vec(),
            Acl::open_unsafe().clone(),
            CreateMode::Persistent,
        )
        .unwrap();
    }
    // ZooKeeper's events come in order, and the LB takes the worker lists
    // and settings they bring in order: once this setting shows, the LB has
    // taken every list before it.
    put(&zk, &r, r#"{"variance": 2.5}"#);
    lb.proc.wait_for("variance 2.5", T);
    wait_until("the worker back in the pool", T, || {
        lb_workers(&lb, &sock) == vec![w.addr.to_string()]
    });
    assert_eq!(get(lb.addr, "x", "/1").status, 200);
    let lines = w.proc.lines.lock().unwrap().clone();
    let opened = lines.iter().filter(|l| l.contains("LB connected")).count();
    let closed = lines
        .iter()
        .filter(|l| l.contains("closed by the LB"))
        .count();
    assert_eq!(
        opened - closed,
        1,
        "open LB connections: {}",
        w.proc.stderr()
    );
}

#[test]
fn single_version_switches_on_a_strict_majority() {
    let zs = zk_addr();
    let zk = client(&zs);
    let r = root("sv");
    let dir = TempDir::new("sv");
    let sock = dir.path("lb.sock");
    let wp = format!("{r}/workers");
    put(&zk, &format!("{wp}/providers"), "");
    let mut v1a = zk_worker(&zs, &wp, &["--version", "1"]);
    let v1b = zk_worker(&zs, &wp, &["--version", "1"]);
    let lb = zk_lb(&zs, &r, &["-v", "-s", sock.to_str().unwrap()]);
    let mut ones = vec![v1a.addr.to_string(), v1b.addr.to_string()];
    ones.sort();
    wait_until("version 1 serving", T, || lb_workers(&lb, &sock) == ones);
    lb.proc.wait_for("VERSION: 1", T);
    let v2a = zk_worker(&zs, &wp, &["--version", "2"]);
    let v2b = zk_worker(&zs, &wp, &["--version", "2"]);
    // Both v2 workers are known to the LB (with their résumés) and still
    // are not served: two against two does not switch.
    for w in [&v2a, &v2b] {
        lb.proc.wait_for(&format!("worker {} joined", w.addr), T);
    }
    // 2 against 2: version 1 still serves.
    assert_eq!(lb_workers(&lb, &sock), ones);
    for i in 0..5 {
        let w = get(lb.addr, &format!("k{i}"), "/1").worker();
        let port = w.rsplit(':').next().unwrap().to_string();
        assert!(
            ones.iter().any(|a| a.ends_with(&format!(":{port}"))),
            "{w} served under version 1"
        );
    }
    // One of version 1 leaves: version 2 has the majority.
    v1a.proc.signal("TERM");
    assert_eq!(v1a.proc.wait(T), Some(0));
    let mut twos = vec![v2a.addr.to_string(), v2b.addr.to_string()];
    twos.sort();
    wait_until("version 2 serving", T, || lb_workers(&lb, &sock) == twos);
    lb.proc.wait_for("VERSION: 2", T);
    let w = get(lb.addr, "k", "/1").worker();
    let port = w.rsplit(':').next().unwrap().to_string();
    assert!(twos.iter().any(|a| a.ends_with(&format!(":{port}"))));
}

#[test]
fn link_property_shares_a_worker_tree() {
    let zs = zk_addr();
    let zk = client(&zs);
    let r = root("link");
    let dir = TempDir::new("link");
    let sock = dir.path("lb.sock");
    put(&zk, &format!("{r}/app"), "{}");
    put(&zk, &format!("{r}/lb"), r#"{"workers ->": "../app"}"#);
    let w = zk_worker(&zs, &format!("{r}/app"), &[]);
    let lb = zk_lb(&zs, &format!("{r}/lb"), &["-s", sock.to_str().unwrap()]);
    wait_until("the linked worker", T, || {
        lb_workers(&lb, &sock) == vec![w.addr.to_string()]
    });
    assert_eq!(get(lb.addr, "x", "/1").status, 200);
}

/// A ZooKeeper server of this test's own, to stop and start again.
struct OwnZk {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnZk {
    fn new() -> OwnZk {
        let dir = TempDir::new("ownzk");
        let port = port_outside_ephemeral_range();
        std::fs::write(
            dir.path("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nminSessionTimeout=1000\nmaxSessionTimeout=60000\nmaxClientCnxns=0\n",
                dir.path("data").display()
            ),
        )
        .unwrap();
        let mut z = OwnZk {
            dir,
            port,
            child: None,
        };
        z.start();
        z
    }

    fn start(&mut self) {
        let cp = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-simple.jar:/usr/share/java/netty-all.jar";
        let child = Command::new("java")
            .args(["-cp", cp, "org.apache.zookeeper.server.ZooKeeperServerMain"])
            .arg(self.dir.path("zoo.cfg"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path("zk.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("java");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until("ZooKeeper to listen", T, || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client, or a panic that shows the server's log.
    fn client(&self) -> std::sync::Arc<ZooKeeper> {
        let addr = self.addr();
        std::panic::catch_unwind(|| client(&addr)).unwrap_or_else(|_| {
            panic!(
                "no session with our own ZooKeeper; its log:\n{}",
                std::fs::read_to_string(self.dir.path("zk.log")).unwrap_or_default()
            )
        })
    }
}

impl Drop for OwnZk {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn zookeeper_down_at_start_and_restarted_under_load() {
    // Down at start-up: a clear line, no crash.
    let port = port_outside_ephemeral_range();
    let nowhere = format!("127.0.0.1:{port}");
    let early = zk_lb(&nowhere, "/x", &[]);
    early.proc.wait_for("cannot reach ZooKeeper", T);
    assert!(
        std::net::TcpStream::connect(early.addr).is_ok(),
        "LB died without ZooKeeper"
    );
    drop(early);

    let mut own = OwnZk::new();
    let zs = own.addr();
    let zk = own.client();
    let r = "/restart";
    put(&zk, &format!("{r}/workers/providers"), "");
    let w1 = zk_worker(&zs, &format!("{r}/workers"), &[]);
    let w2 = zk_worker(&zs, &format!("{r}/workers"), &[]);
    let lb = zk_lb(&zs, r, &[]);
    let lb_node = format!("{r}/providers/{}", lb.addr);
    wait_until("both workers serving", T, || {
        let mut seen = std::collections::HashSet::new();
        for i in 0..20 {
            seen.insert(get(lb.addr, &format!("c{i}"), "/1").worker());
        }
        seen.len() == 2
    });
    drop(zk);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, ok, bad, addr) = (stop.clone(), ok.clone(), bad.clone(), lb.addr);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                i += 1;
                let r =
                    std::panic::catch_unwind(|| get(addr, &format!("c{}", i % 10), "/1").status);
                match r {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    wait_until("requests served", T, || ok.load(Ordering::Relaxed) >= 20);
    own.stop();
    // Served on while ZooKeeper is away.
    let before = ok.load(Ordering::Relaxed);
    wait_until("requests served without ZooKeeper", T, || {
        ok.load(Ordering::Relaxed) >= before + 50
    });
    let during = ok.load(Ordering::Relaxed);
    own.start();
    let zk = own.client();
    let nodes = [
        format!("{r}/workers/providers/{}", w1.addr),
        format!("{r}/workers/providers/{}", w2.addr),
        lb_node,
    ];
    wait_until("registrations back", T, || {
        nodes
            .iter()
            .all(|n| zk.exists(n, false).ok().flatten().is_some())
    });
    wait_until("requests served after the restart", T, || {
        ok.load(Ordering::Relaxed) > during + 20
    });
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(during > 0);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "requests failed while ZooKeeper was away"
    );
}

/// The worker's `allow` property applies at once (and a removed one
/// reverts to the command line); zkresumelb with the same secret as the
/// worker gets in.
#[test]
fn allow_property_and_secret_through_zookeeper() {
    let zs = zk_addr();
    let zk = client(&zs);
    let lb_path = root("allow");
    let path = format!("{lb_path}/workers");
    put(&zk, &path, r#"{"allow": "10.0.0.0/8"}"#);
    let dir = TempDir::new("zk-secret");
    let secret = dir.path("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let secret = secret.to_str().unwrap();
    let w = zk_worker(&zs, &path, &["--secret-file", secret]);
    w.proc.wait_for("connections allowed from 10.0.0.0/8", T);
    let mut refused = TestLb::connect(w.addr);
    assert!(
        refused.recv().is_none(),
        "a peer outside the list got a frame"
    );
    w.proc.wait_for("not in --allow", T);

    // Removed: back to the command line's (any address); zkresumelb with
    // the secret joins the worker.
    put(&zk, &path, "{}");
    w.proc.wait_for("connections allowed from any address", T);
    let sock = dir.path("lb.sock");
    let lb = zk_lb(
        &zs,
        &lb_path,
        &["--secret-file", secret, "-s", sock.to_str().unwrap()],
    );
    lb.proc.wait_for("joined", T);
    assert_eq!(lb_workers(&lb, &sock), vec![w.addr.to_string()]);
    w.proc.wait_for("shared secret proven", T);

    // A new list that leaves it out closes its connection.
    put(&zk, &path, r#"{"allow": ["10.0.0.0/8"]}"#);
    w.proc.wait_for("not in the new allowed list", T);
}

/// ZooKeeper away for a fixed 6 s: the LB and a worker each log a handful
/// of lines (lost, still away, back), not the client library's every
/// failed try (85,000 or more a second before).
#[test]
fn zookeeper_outage_logs_a_few_lines_not_a_flood() {
    let mut own = OwnZk::new();
    let zs = own.addr();
    let zk = own.client();
    let r = "/outage";
    put(&zk, &format!("{r}/workers/providers"), "");
    drop(zk);
    let w = zk_worker(&zs, &format!("{r}/workers"), &[]);
    let lb = zk_lb(&zs, r, &[]);
    lb.proc.wait_for("joined", T);
    let lines = |p: &Proc| p.lines.lock().unwrap().len();
    let (lb_before, w_before) = (lines(&lb.proc), lines(&w.proc));

    own.stop();
    std::thread::sleep(Duration::from_secs(6));
    let (lb_during, w_during) = (lines(&lb.proc) - lb_before, lines(&w.proc) - w_before);
    own.start();
    // Back within the session, or (when a request timed out meanwhile)
    // with a new client: either is the LB reconnecting.
    wait_until("the LB back on ZooKeeper", T, || {
        lb.proc.lines.lock().unwrap()[lb_before..].iter().any(|l| {
            l.contains("ZooKeeper connection back") || l.contains("connected to ZooKeeper at")
        })
    });

    assert!(
        lb_during <= 5,
        "LB: {lb_during} lines:\n{}",
        lb.proc.stderr()
    );
    assert!(
        w_during <= 5,
        "worker: {w_during} lines:\n{}",
        w.proc.stderr()
    );
    assert!(
        !lb.proc.stderr().contains("zookeeper::io"),
        "{}",
        lb.proc.stderr()
    );
}

#[test]
fn zkresumelb_hands_over_to_a_new_process_and_stays_registered() {
    let zs = zk_addr();
    let zk = client(&zs);
    let r = root("handover");
    let dir = TempDir::new("zkhand");
    let sock = dir.path("lb.sock");
    put(&zk, &r, "{}");
    let w = zk_worker(&zs, &format!("{r}/workers"), &[]);
    let mut old = zk_lb(&zs, &r, &["-s", sock.to_str().unwrap()]);
    wait_until("the worker", T, || {
        lb_workers(&old, &sock) == [w.addr.to_string()]
    });
    assert_eq!(get(old.addr, "a.com", "/1").status, 200);
    // Keep-alive client of the old one: its next response closes.
    let mut kept = HttpConn::connect(old.addr);
    kept.send(b"GET /2 HTTP/1.1\r\nHost: a.com\r\n\r\n");
    assert_eq!(kept.response(false).unwrap().status, 200);
    let addr = old.addr.to_string();
    let new = Proc::start(ZKLB, &["-a", &addr, "-s", sock.to_str().unwrap(), &zs, &r]);
    new.wait_for("took over the listener", T);
    kept.send(b"GET /3 HTTP/1.1\r\nHost: a.com\r\n\r\n");
    let last = kept.response(false).unwrap();
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    assert_eq!(old.proc.wait(T), Some(0), "{}", old.proc.stderr());
    // The new one's registration survives the old one's session.
    let me = format!("{r}/providers/{addr}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        zk.exists(&me, false).ok().flatten().is_some(),
        "{me} is gone"
    );
    wait_until("the worker in the new pool", T, || {
        pool_workers(&sock) == [w.addr.to_string()]
    });
    assert_eq!(get(old.addr, "a.com", "/4").status, 200);
    drop(new);
}
