//! HAProxy and nginx, from Debian's packages, as the peers: a configuration
//! written into a temporary directory, one thread / one worker process,
//! listening on 127.0.0.1 only, stopped when dropped.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a peer balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// HAProxy: `balance hdr(host)`, consistent hashing, bounded load
    /// (`hash-balance-factor 125`), `maxconn` per server.
    HaproxyHash,
    /// HAProxy: `balance leastconn`, `maxconn` per server.
    HaproxyLeastconn,
    /// nginx: `hash $host consistent`.
    NginxHash,
    /// HAProxy in front of one server (W2).
    HaproxyPlain,
    /// nginx in front of one server (W2).
    NginxPlain,
}

/// A running peer; stopped (killed) on drop.
pub struct Peer {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> io::Result<TempDir> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("rlb-bench-{tag}-{}-{n}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(io::Error::other("no temporary directory"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on 127.0.0.1 (peers take their port from the configuration).
fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Where a program is on PATH, if it is.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub fn haproxy_config(addr: SocketAddr, servers: &[SocketAddr], balance: Balance) -> String {
    let (algo, extra, maxconn) = match balance {
        Balance::HaproxyHash => (
            "hdr(host)",
            "    hash-type consistent\n    hash-balance-factor 125\n",
            " maxconn 4",
        ),
        Balance::HaproxyLeastconn => ("leastconn", "", " maxconn 4"),
        _ => ("roundrobin", "", ""),
    };
    let mut cfg = format!(
        "global\n    nbthread 1\n    maxconn 8000\n\n\
         defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n    \
         timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    \
         timeout queue 60s\n\n\
         frontend fe\n    bind {addr}\n    default_backend be\n\n\
         backend be\n    balance {algo}\n{extra}"
    );
    for (i, s) in servers.iter().enumerate() {
        cfg.push_str(&format!("    server b{i} {s}{maxconn}\n"));
    }
    cfg
}

pub fn nginx_config(dir: &Path, addr: SocketAddr, servers: &[SocketAddr], hash: bool) -> String {
    let d = dir.display();
    let mut upstream = String::new();
    if hash {
        upstream.push_str("        hash $host consistent;\n");
    }
    for s in servers {
        upstream.push_str(&format!("        server {s};\n"));
    }
    format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n    access_log off;\n\
         client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         keepalive_requests 1000000;\n\
         upstream be {{\n{upstream}        keepalive 64;\n    }}\n\
         server {{\n        listen {addr};\n        location / {{\n\
         proxy_pass http://be;\n            proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n            proxy_set_header Host $host;\n\
         }}\n    }}\n}}\n"
    )
}

/// Wait until something accepts on `addr`.
fn wait_listening(addr: SocketAddr, child: &mut Child, name: &str) -> io::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(io::Error::other(format!("{name} exited: {status}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::other(format!("{name} did not listen on {addr}")))
}

/// Start a peer in front of `servers`.
pub fn start(balance: Balance, servers: &[SocketAddr], name: &'static str) -> io::Result<Peer> {
    let dir = TempDir::new(name)?;
    let addr = free_port()?;
    let mut cmd = match balance {
        Balance::HaproxyHash | Balance::HaproxyLeastconn | Balance::HaproxyPlain => {
            let bin =
                which("haproxy").ok_or_else(|| io::Error::other("haproxy is not installed"))?;
            let cfg = dir.0.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_config(addr, servers, balance))?;
            let mut c = Command::new(bin);
            c.arg("-db").arg("-f").arg(cfg);
            c
        }
        Balance::NginxHash | Balance::NginxPlain => {
            let bin = which("nginx").ok_or_else(|| io::Error::other("nginx is not installed"))?;
            let cfg = dir.0.join("nginx.conf");
            let hash = balance == Balance::NginxHash;
            std::fs::write(&cfg, nginx_config(&dir.0, addr, servers, hash))?;
            let mut c = Command::new(bin);
            c.arg("-p").arg(&dir.0).arg("-c").arg(cfg);
            c
        }
    };
    resumelb::loadgen::die_with_parent(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {name}: {e}")))?;
    if let Err(e) = wait_listening(addr, &mut child, name) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(Peer {
        child,
        addr,
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_say_what_the_variant_is() {
        let a: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let s: Vec<SocketAddr> = vec![
            "127.0.0.1:9001".parse().unwrap(),
            "127.0.0.1:9002".parse().unwrap(),
        ];
        let h = haproxy_config(a, &s, Balance::HaproxyHash);
        assert!(h.contains("nbthread 1"));
        assert!(h.contains("bind 127.0.0.1:9000"));
        assert!(h.contains("balance hdr(host)"));
        assert!(h.contains("hash-type consistent"));
        assert!(h.contains("hash-balance-factor 125"));
        assert!(h.contains("server b1 127.0.0.1:9002 maxconn 4"));
        let l = haproxy_config(a, &s, Balance::HaproxyLeastconn);
        assert!(l.contains("balance leastconn") && !l.contains("hash-type"));
        let n = nginx_config(Path::new("/tmp/x"), a, &s, true);
        assert!(n.contains("worker_processes 1;"));
        assert!(n.contains("hash $host consistent;"));
        assert!(n.contains("listen 127.0.0.1:9000;"));
        assert!(n.contains("server 127.0.0.1:9001;"));
        assert!(!nginx_config(Path::new("/tmp/x"), a, &s[..1], false).contains("hash"));
    }
}
