//! Worker health: a worker whose application is down tells its LBs, which
//! stop sending it requests until it is back.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn available(sock: &std::path::Path, addr: &str) -> Option<bool> {
    status(sock)["worker_details"][addr]["available"].as_bool()
}

#[test]
fn a_worker_whose_app_is_down_is_taken_out_of_rotation_and_back() {
    let dir = TempDir::new("health");
    let sock = dir.path("lb.sock");
    let trace = dir.path("a.trace");
    let app_a = start_waitress(0);
    let port_a = app_a.port;
    let app_b = start_waitress(0);
    let a = start_worker(&[
        "--app",
        &format!("upstream:127.0.0.1:{port_a}"),
        "--tracelog",
        trace.to_str().unwrap(),
    ]);
    let b = start_worker(&["--app", &format!("upstream:127.0.0.1:{}", app_b.port)]);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let lb = start_lb(&["-s", sock.to_str().unwrap(), &a_addr, &b_addr]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    assert_eq!(available(&sock, &a_addr), Some(true));

    // A's application goes: the first requests that reach A fail, A says it
    // is unavailable, and from then on every request is served by B.
    drop(app_a);
    let mut i = 0;
    wait_until("A to be unavailable", T, || {
        i += 1;
        get(lb.addr, &format!("c{}", i % 10), "/echo");
        available(&sock, &a_addr) == Some(false)
    });
    lb.proc.wait_for("says its application is unavailable", T);
    let doc = status(&sock);
    assert_eq!(doc["unavailable"].as_u64(), Some(1));
    let rows: Vec<&str> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(rows.contains(&a_addr.as_str()), "A keeps its row: {rows:?}");
    for i in 0..30 {
        let r = get(lb.addr, &format!("c{}", i % 10), "/echo");
        assert_eq!(r.status, 200, "request {i} while A's app is down");
    }
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_get-lb-status"))
        .arg(&sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&a_addr) && l.ends_with("unavailable")),
        "{text}"
    );

    // Back on the same port: A says so, and gets work again.
    let _app_a = start_waitress(port_a);
    wait_until("A to be available", T, || {
        available(&sock, &a_addr) == Some(true)
    });
    let served_by_a = || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("A ") && l.contains(" 200 "))
            .count()
    };
    let before = served_by_a();
    let mut i = 0;
    wait_until("A to serve again", T, || {
        i += 1;
        assert_eq!(get(lb.addr, &format!("d{i}"), "/echo").status, 200);
        served_by_a() > before
    });
}

/// A worker whose application answers 503 to everything is taken out of
/// the pool after --eject-after failures in a row, for 1 s and then twice
/// as long each time it fails again; the other serves everything
/// meanwhile.
#[test]
fn a_worker_failing_at_the_gateway_is_ejected_with_a_doubling_back_off() {
    let dir = TempDir::new("eject");
    let sock = dir.path("lb.sock");
    let app_a = start_waitress_with(0, &["503"]);
    let app_b = start_waitress(0);
    let a = start_worker(&["--app", &format!("upstream:127.0.0.1:{}", app_a.port)]);
    let b = start_worker(&["--app", &format!("upstream:127.0.0.1:{}", app_b.port)]);
    let a_addr = a.addr.to_string();
    let lb = start_lb(&[
        "-s",
        sock.to_str().unwrap(),
        "--eject-after",
        "3",
        &a_addr,
        &b.addr.to_string(),
    ]);
    wait_until("both workers in the pool", T, || {
        pool_workers(&sock).len() == 2
    });
    let mut i = 0;
    wait_until("A to be ejected", T, || {
        i += 1;
        get(lb.addr, &format!("e{}", i % 7), "/echo");
        lb.proc.stderr().contains("ejected from the pool for 1 s")
    });
    let doc = status(&sock);
    assert_eq!(doc["ejected"].as_u64(), Some(1), "{doc}");
    assert!(doc["ejections"].as_u64() >= Some(1));
    assert!(
        doc["worker_details"][&a_addr]["ejected_for"].as_f64() > Some(0.0),
        "{doc}"
    );
    assert!(pool_workers(&sock).contains(&a_addr), "A keeps its row");
    // The half rule leaves B in; it serves while A is out.
    for i in 0..10 {
        assert_eq!(get(lb.addr, &format!("f{i}"), "/echo").status, 200);
    }
    // Back after a second, failing again: out for twice as long. (New
    // classes go to the front of the line, where A comes back.)
    let mut i = 0;
    wait_until("A to be ejected again", T, || {
        i += 1;
        get(lb.addr, &format!("g{i}"), "/echo");
        lb.proc.stderr().contains("ejected from the pool for 2 s")
    });
}
