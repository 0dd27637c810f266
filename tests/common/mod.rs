//! Helpers for the integration tests: run the real binaries on 127.0.0.1
//! and talk to them through real sockets.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resumelb::http::client::ResponseReader;
use resumelb::proto::{
    Decoded, Environ, ResponseHead, Resume, Rno, ToLb, ToWorker, DEFAULT_MAX_FRAME,
};

pub const WORKER: &str = env!("CARGO_BIN_EXE_resumelb-worker");

/// A running binary whose stderr is collected line by line.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn start(bin: &str, args: &[&str]) -> Proc {
        Proc::start_env(bin, args, &[])
    }

    /// The same with environment variables set (an empty value removes one).
    pub fn start_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("RLB_TEST_VERBOSE").is_some() {
                    eprintln!("| {line}");
                }
                l2.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    /// Wait until a stderr line contains `needle`; returns that line.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no line with {needle:?} in time; stderr so far:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for exit, at most `timeout`; returns the exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > end {
                panic!("process did not exit in time; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worker process listening on an ephemeral port.
pub struct WorkerProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

/// Start `bin -a 127.0.0.1:0 EXTRA…` and read the address it logs after
/// `needle`.
fn start_listening(bin: &str, needle: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    start_listening_env(bin, needle, extra, &[])
}

fn start_listening_env(
    bin: &str,
    needle: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Proc, SocketAddr) {
    let mut args = vec!["-a", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proc = Proc::start_env(bin, &args, env);
    let line = proc.wait_for(needle, Duration::from_secs(10));
    let addr = line
        .split(needle)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (proc, addr)
}

pub fn start_worker(extra: &[&str]) -> WorkerProc {
    start_worker_env(extra, &[])
}

/// A worker with environment variables set (an empty value removes one).
pub fn start_worker_env(extra: &[&str], env: &[(&str, &str)]) -> WorkerProc {
    let (proc, addr) = start_listening_env(WORKER, "worker listening on ", extra, env);
    WorkerProc { proc, addr }
}

/// Read the next frame of type `T` from `stream` (buffered in `buf`);
/// `None` when the peer closed the connection.
fn next_frame<T>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    decode: fn(&[u8], usize) -> Result<Decoded<T>, resumelb::proto::ProtoError>,
) -> Option<T> {
    let mut chunk = [0u8; 65536];
    loop {
        match decode(buf, DEFAULT_MAX_FRAME).expect("the peer sent a bad frame") {
            Decoded::Complete(m, used) => {
                buf.drain(..used);
                return Some(m);
            }
            Decoded::Partial => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("no frame in time: {e}")
            }
            Err(_) => return None,
        }
    }
}

/// A test LB: a protocol client over one connection.
pub struct TestLb {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A response collected from a worker.
#[derive(Debug, Default)]
pub struct Collected {
    pub head: Option<ResponseHead>,
    pub body: Vec<u8>,
    pub ended: bool,
    pub aborted: bool,
}

impl Collected {
    pub fn code(&self) -> u16 {
        self.head
            .as_ref()
            .and_then(|h| h.status.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .as_ref()?
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn environ(method: &str, path: &str, query: &str, class: &str) -> Environ {
    let mut env = Environ::new();
    for (k, v) in [
        ("REQUEST_METHOD", method),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", path),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "localhost"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "5555"),
        ("wsgi.url_scheme", "http"),
        ("HTTP_HOST", class),
        ("resumelb.request_class", class),
    ] {
        env.insert(k.into(), v.into());
    }
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    env.insert("REQUEST_URI".into(), uri);
    env
}

impl TestLb {
    pub fn connect(addr: SocketAddr) -> TestLb {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        TestLb {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, msg: &ToWorker) {
        let mut out = Vec::new();
        msg.encode(&mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next message, or `None` if the worker closed the connection.
    pub fn recv(&mut self) -> Option<ToLb> {
        next_frame(&mut self.stream, &mut self.buf, ToLb::decode)
    }

    /// The next message that is not a keep-alive.
    pub fn recv_skip_keepalive(&mut self) -> Option<ToLb> {
        loop {
            match self.recv()? {
                ToLb::KeepAlive => continue,
                m => return Some(m),
            }
        }
    }

    /// Read the greeting: résumé, then hello.
    pub fn greeting(&mut self) -> (Resume, resumelb::proto::Hello) {
        let Some(ToLb::Resume(r)) = self.recv() else {
            panic!("first frame is not a résumé")
        };
        let Some(ToLb::Hello(h)) = self.recv() else {
            panic!("second frame is not a hello")
        };
        (r, h)
    }

    /// Send a whole request.
    pub fn send_request(&mut self, rno: Rno, env: Environ, body: &[u8]) {
        let mut out = Vec::new();
        ToWorker::Environ(rno, env.into_iter().collect())
            .encode(&mut out)
            .unwrap();
        resumelb::proto::encode_body(&mut out, rno, body);
        resumelb::proto::encode_end(&mut out, rno);
        self.stream.write_all(&out).unwrap();
    }

    /// Collect the response for `rno`; frames of other requests and
    /// connection-level messages go to `others`.
    pub fn collect(&mut self, rno: Rno, others: &mut Vec<ToLb>) -> Collected {
        let mut c = Collected::default();
        loop {
            let Some(m) = self.recv() else {
                return c;
            };
            match m {
                ToLb::Head(r, h) if r == rno => c.head = Some(h),
                ToLb::Body(r, b) if r == rno => c.body.extend(b),
                ToLb::End(r) if r == rno => {
                    c.ended = true;
                    return c;
                }
                ToLb::Abort(r) if r == rno => {
                    c.aborted = true;
                    return c;
                }
                ToLb::KeepAlive => {}
                other => others.push(other),
            }
        }
    }

    pub fn request(&mut self, rno: Rno, env: Environ, body: &[u8]) -> Collected {
        self.send_request(rno, env, body);
        self.collect(rno, &mut Vec::new())
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("rlb-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// FNV-1a 64, as the demo app reports it.
pub fn digest(data: &[u8]) -> String {
    format!(
        "{:016x}",
        resumelb::worker::demo::fnv1a(data, resumelb::worker::demo::FNV_OFFSET)
    )
}

pub const LB: &str = env!("CARGO_BIN_EXE_resumelb");

/// An LB process on an ephemeral port.
pub struct LbProc {
    pub proc: Proc,
    pub addr: SocketAddr,
}

pub fn start_lb(extra: &[&str]) -> LbProc {
    let (proc, addr) = start_listening(LB, "listening on ", extra);
    LbProc { proc, addr }
}

/// An HTTP response read off a socket.
#[derive(Debug, Default)]
pub struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing says (length reached, last chunk, or
    /// a clean close for close-delimited bodies).
    pub complete: bool,
}

impl HttpResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        resumelb::http::header(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The demo app's `X-Worker` (pid:port).
    pub fn worker(&self) -> String {
        self.header("X-Worker").unwrap_or("").to_string()
    }
}

/// A client connection that reads responses one after another.
pub struct HttpConn {
    pub stream: TcpStream,
    reader: ResponseReader,
}

/// A read error that means the peer is gone.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
    )
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> HttpConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        HttpConn {
            stream,
            reader: ResponseReader::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    /// Read one response; `head_request` for responses to HEAD. `None`
    /// when the connection closed before a status line.
    pub fn response(&mut self, head_request: bool) -> Option<HttpResp> {
        let head = match self.reader.head(&mut self.stream, head_request) {
            Ok(h) => h?,
            Err(e) if gone(&e) => return None,
            Err(e) => panic!("read: {e}"),
        };
        let (body, complete) = self.reader.read_body(&mut self.stream, &head);
        Some(HttpResp {
            status: head.code,
            headers: head.headers,
            body,
            complete,
        })
    }

    /// True if the peer closed the connection (reads EOF or reset).
    pub fn closed(&mut self) -> bool {
        if !self.reader.buffered().is_empty() {
            return false;
        }
        match self.reader.fill(&mut self.stream) {
            Ok(n) => n == 0,
            Err(e) if gone(&e) => true,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One request on a fresh connection.
pub fn http(addr: SocketAddr, raw: &str) -> HttpResp {
    let mut c = HttpConn::connect(addr);
    c.send(raw.as_bytes());
    c.response(raw.starts_with("HEAD "))
        .expect("connection closed without a response")
}

pub fn get(addr: SocketAddr, host: &str, path: &str) -> HttpResp {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
}

/// Wait until `f` is true, polling; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The LB's status document.
pub fn status(path: &std::path::Path) -> serde_json::Value {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Workers in an LB's pool, by name.
pub fn pool_workers(path: &std::path::Path) -> Vec<String> {
    status(path)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[0].as_str().unwrap().to_string())
        .collect()
}

#[allow(unused_imports)]
pub use resumelb::testing::rss_kib;

/// Open descriptors of a process that point at deleted spill files.
pub fn spill_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|p| {
                    let s = p.to_string_lossy();
                    s.contains("resumelb-") && s.contains(".spill")
                })
                .count()
        })
        .unwrap_or(0)
}

/// A hand-driven worker: the test decides every frame it sends.
pub struct FakeWorker {
    pub addr: SocketAddr,
    listener: std::net::TcpListener,
}

pub struct FakeConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl FakeWorker {
    pub fn start() -> FakeWorker {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        FakeWorker {
            addr: listener.local_addr().unwrap(),
            listener,
        }
    }

    /// Accept the LB's connection and send it an empty résumé.
    pub fn accept(&self) -> FakeConn {
        let (stream, _) = self.listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut c = FakeConn {
            stream,
            buf: Vec::new(),
        };
        c.send(&ToLb::Resume(Resume::new()));
        c
    }
}

impl FakeConn {
    pub fn send(&mut self, msg: &ToLb) {
        let mut out = Vec::new();
        msg.encode(&mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame from the LB, skipping keep-alives; `None` on close.
    pub fn recv(&mut self) -> Option<ToWorker> {
        loop {
            match next_frame(&mut self.stream, &mut self.buf, ToWorker::decode)? {
                ToWorker::KeepAlive => continue,
                m => return Some(m),
            }
        }
    }

    /// A whole request: (rno, environ, body).
    pub fn request(&mut self) -> (Rno, Environ, Vec<u8>) {
        let Some(ToWorker::Environ(rno, env)) = self.recv() else {
            panic!("expected an environ")
        };
        let mut body = Vec::new();
        loop {
            match self.recv() {
                Some(ToWorker::Body(r, b)) if r == rno => body.extend(b),
                Some(ToWorker::EndOfBody(r)) if r == rno => {
                    return (rno, env.into_iter().collect(), body)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    pub fn respond_head(&mut self, rno: Rno, status: &str, headers: &[(&str, &str)]) {
        self.send(&ToLb::Head(
            rno,
            ResponseHead {
                status: status.into(),
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            },
        ));
    }
}

/// A free port below Linux's ephemeral range (32768–60999), so that no
/// process binding port 0 or connecting out can take it while our server
/// is down between its two runs.
pub fn port_outside_ephemeral_range() -> u16 {
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    loop {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + (x >> 33) as u16 % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The Python with waitress that `make test` prepares.
pub fn python() -> String {
    if let Ok(p) = std::env::var("RLB_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(
        std::path::Path::new(venv).exists(),
        "no {venv}: run `make test` (it creates the virtualenv with waitress)"
    );
    venv.to_string()
}

/// The virtualenv of [`python()`] (it has waitress and PasteDeploy).
pub fn virtualenv() -> String {
    let python = std::path::PathBuf::from(python());
    python
        .parent()
        .and_then(|bin| bin.parent())
        .unwrap_or_else(|| panic!("{} is not in a virtualenv", python.display()))
        .display()
        .to_string()
}

/// tests/wsgi_app.py under waitress, killed on drop.
pub struct Waitress {
    _proc: Proc,
    pub port: u16,
}

/// Start tests/wsgi_app.py on `port` of 127.0.0.1 (0: any free one).
pub fn start_waitress(port: u16) -> Waitress {
    start_waitress_with(port, &[])
}

/// The same with more arguments (a status: every request gets it).
pub fn start_waitress_with(port: u16, args: &[&str]) -> Waitress {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wsgi_app.py");
    let mut child = Command::new(python())
        .arg(script)
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start waitress");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("waitress said {line:?}"));
    Waitress {
        _proc: Proc {
            child,
            lines: Default::default(),
        },
        port,
    }
}

// zdaemon, from the test virtualenv (`make test` installs it).

pub fn zdaemon() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/zdaemon"));
    assert!(
        p.exists(),
        "no {}: run `make test` (it installs zdaemon)",
        p.display()
    );
    p
}

pub fn zd(conf: &Path, cmd: &str) -> String {
    let out = Command::new(zdaemon())
        .arg("-C")
        .arg(conf)
        .arg(cmd)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn zd_pid(conf: &Path) -> Option<u32> {
    let s = zd(conf, "status");
    s.split("pid=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub fn write_conf(dir: &TempDir, name: &str, program: &str) -> PathBuf {
    let conf = dir.path(&format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "<runner>\n  program {program}\n  socket-name {}\n  transcript {}\n  exit-codes 0,2\n  stop-timeout 30\n  backoff-limit 3\n</runner>\n",
            dir.path(&format!("{name}.zdsock")).display(),
            dir.path(&format!("{name}.log")).display(),
        ),
    )
    .unwrap();
    conf
}

/// Stops zdaemon-run programs even when a test fails.
pub struct Cleanup(pub Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = zd(c, "stop");
        }
    }
}
