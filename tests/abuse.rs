//! Protocol abuse: a fake worker that misbehaves in front of a real LB, and
//! a fake LB that misbehaves in front of a real worker. The bad connection
//! is closed (or the frame ignored where resumelb-protocol(7) says so), the affected
//! requests follow the retry/502 rules, and everything else keeps serving.

mod common;

use std::time::Duration;

use common::*;
use resumelb::lb::{Command, Lb, LbConfig, LbHandle, WorkerSpec};
use resumelb::proto::{ToLb, ToWorker};

const T: Duration = Duration::from_secs(20);

struct InLb {
    addr: std::net::SocketAddr,
    handle: LbHandle,
    sock: std::path::PathBuf,
    _dir: TempDir,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Drop for InLb {
    fn drop(&mut self) {
        self.handle.send(Command::StopNow);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An LB in this process with a short dead-worker timeout, in front of the
/// fake worker only.
fn lb_for(fake: &FakeWorker) -> InLb {
    let dir = TempDir::new("abuse");
    let sock = dir.path("lb.sock");
    let lb = Lb::bind(LbConfig {
        workers: vec![WorkerSpec::new(&fake.addr.to_string())],
        dead_worker_timeout: Duration::from_secs(1),
        status_path: Some(sock.clone()),
        ..LbConfig::default()
    })
    .unwrap();
    let addr = lb.local_addr();
    let handle = lb.handle();
    let thread = Some(std::thread::spawn(move || lb.run()));
    InLb {
        addr,
        handle,
        sock,
        _dir: dir,
        thread,
    }
}

/// A request in flight on the fake worker, and a real worker in the pool
/// too, ready to take retries.
fn setup(method_line: &str) -> (FakeWorker, FakeConn, WorkerProc, InLb, HttpConn, u32) {
    let fake = FakeWorker::start();
    let lb = lb_for(&fake);
    let mut wc = fake.accept();
    wait_until("the fake in the pool", T, || {
        pool_workers(&lb.sock).len() == 1
    });
    let mut c = HttpConn::connect(lb.addr);
    c.send(method_line.as_bytes());
    let (rno, _, _) = wc.request();
    let real = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    lb.handle.send(Command::SetWorkers(vec![
        WorkerSpec::new(&fake.addr.to_string()),
        WorkerSpec::new(&real.addr.to_string()),
    ]));
    wait_until("the real worker in the pool", T, || {
        pool_workers(&lb.sock).len() == 2
    });
    (fake, wc, real, lb, c, rno)
}

const GET: &str = "GET /1 HTTP/1.1\r\nHost: abuse\r\n\r\n";
const POST: &str = "POST /1 HTTP/1.1\r\nHost: abuse\r\nContent-Length: 2\r\n\r\nhi";

fn served_by_real(r: &HttpResp, real: &WorkerProc) -> bool {
    r.status == 200 && r.worker().ends_with(&format!(":{}", real.addr.port()))
}

#[test]
fn oversized_frame_closes_the_worker_get_is_retried() {
    let (_fake, mut wc, real, lb, mut c, rno) = setup(GET);
    // A frame announcing 2 GiB.
    wc.send_raw(&[0, 0, 0, rno as u8, 0x7f, 0xff, 0xff, 0xff]);
    let r = c.response(false).unwrap();
    assert!(served_by_real(&r, &real), "{r:?}");
    assert!(wc.recv().is_none(), "the LB kept the connection");
    assert_eq!(get(lb.addr, "other", "/2").status, 200);
    assert_eq!(status(&lb.sock)["retries"].as_u64(), Some(1));
}

#[test]
fn garbage_closes_the_worker_post_gets_502() {
    let (_fake, mut wc, _real, lb, mut c, _) = setup(POST);
    wc.send_raw(b"\x00\x00\x00\x01\x00\x00\x00\x03\xff\xff\xff");
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 502);
    assert!(wc.recv().is_none());
    assert_eq!(get(lb.addr, "other", "/2").status, 200);
}

#[test]
fn frames_for_unknown_requests_are_ignored() {
    let (_fake, mut wc, _real, lb, mut c, rno) = setup(GET);
    wc.respond_head(rno + 1000, "200 OK", &[]);
    wc.send(&ToLb::Body(rno + 1000, b"stray".to_vec()));
    wc.send(&ToLb::End(rno + 1000));
    wc.respond_head(rno, "200 OK", &[("Content-Length", "2")]);
    wc.send(&ToLb::Body(rno, b"ok".to_vec()));
    wc.send(&ToLb::End(rno));
    let r = c.response(false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(pool_workers(&lb.sock).len(), 2, "the fake was dropped");
}

#[test]
fn second_head_closes_the_worker_and_cuts_the_response() {
    let (_fake, mut wc, _real, lb, mut c, rno) = setup(GET);
    wc.respond_head(rno, "200 OK", &[("Content-Length", "10")]);
    wc.send(&ToLb::Body(rno, b"12345".to_vec()));
    wc.respond_head(rno, "200 OK", &[]);
    let r = c.response(false).unwrap();
    assert!(!r.complete, "a cut response looked complete: {r:?}");
    assert!(wc.recv().is_none());
    assert_eq!(get(lb.addr, "other", "/2").status, 200);
}

#[test]
fn body_before_head_is_a_protocol_error() {
    let (_fake, mut wc, real, _lb, mut c, rno) = setup(GET);
    wc.send(&ToLb::Body(rno, b"early".to_vec()));
    let r = c.response(false).unwrap();
    assert!(served_by_real(&r, &real), "{r:?}");
    assert!(wc.recv().is_none());
}

#[test]
fn silent_worker_is_dropped_after_the_dead_worker_timeout() {
    let (_fake, _wc, real, lb, mut c, _) = setup(GET);
    // The fake says nothing more, not even keep-alives.
    let r = c.response(false).unwrap();
    assert!(served_by_real(&r, &real), "{r:?}");
    wait_until("the fake out of the pool", T, || {
        pool_workers(&lb.sock).len() == 1
    });
}

#[test]
fn worker_closes_a_fake_lb_that_sends_an_oversized_frame() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let mut bad = TestLb::connect(w.addr);
    let mut good = TestLb::connect(w.addr);
    bad.greeting();
    good.greeting();
    bad.send_raw(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
    while let Some(m) = bad.recv() {
        assert!(matches!(m, ToLb::KeepAlive), "{m:?}");
    }
    w.proc.wait_for("over the limit", T);
    assert_eq!(
        good.request(1, environ("GET", "/", "", "g"), b"").code(),
        200
    );
}

#[test]
fn worker_ignores_frames_for_unknown_requests_and_refuses_a_reused_number() {
    let w = start_worker(&["--app", "demo", "--demo-miss-ms", "0"]);
    let mut lb = TestLb::connect(w.addr);
    lb.greeting();
    lb.send(&ToWorker::Body(77, b"nobody".to_vec()));
    lb.send(&ToWorker::EndOfBody(78));
    lb.send(&ToWorker::Cancel(79));
    assert_eq!(lb.request(1, environ("GET", "/", "", "u"), b"").code(), 200);
    // A second environ for a request still in flight.
    lb.send(&ToWorker::Environ(
        2,
        environ("GET", "/", "sleep=500", "u").into_iter().collect(),
    ));
    lb.send(&ToWorker::Environ(
        2,
        environ("GET", "/", "", "u").into_iter().collect(),
    ));
    while let Some(m) = lb.recv() {
        assert!(matches!(m, ToLb::KeepAlive), "{m:?}");
    }
    w.proc.wait_for("reused while in flight", T);
}
