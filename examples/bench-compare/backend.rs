//! The cache-simulating HTTP backend every variant uses unchanged: plain
//! HTTP/1.1 keep-alive, a fixed number of request slots (a request waits
//! for a free one, as in a WSGI server's thread pool), an LRU cache of
//! objects per process; a miss costs `miss_ms` of waiting (sleep, not
//! CPU), a hit nothing. `GET /__stats` answers a JSON object of requests,
//! objects, hits and misses, so that hit rates are measured here.
//!
//! A request names its site in `Host` (`s17.example`) and its objects in
//! the path (`/17_203_4_88`); objects are keyed by (site, id).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use resumelb::worker::demo::Lru;

/// What a backend counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub objects: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Stats {
    pub fn json(&self) -> String {
        format!(
            "{{\"requests\": {}, \"objects\": {}, \"hits\": {}, \"misses\": {}}}",
            self.requests, self.objects, self.hits, self.misses
        )
    }

    pub fn from_json(text: &str) -> Option<Stats> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(Stats {
            requests: v["requests"].as_u64()?,
            objects: v["objects"].as_u64()?,
            hits: v["hits"].as_u64()?,
            misses: v["misses"].as_u64()?,
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Stats) -> Stats {
        Stats {
            requests: self.requests.saturating_sub(before.requests),
            objects: self.objects.saturating_sub(before.objects),
            hits: self.hits.saturating_sub(before.hits),
            misses: self.misses.saturating_sub(before.misses),
        }
    }
}

/// The objects a request names: its site and the ids in its path.
pub fn parse_target(host: &str, path: &str) -> (String, Vec<u64>) {
    let site = host.split(':').next().unwrap_or("").to_string();
    let ids = path
        .trim_start_matches('/')
        .split('_')
        .filter_map(|p| p.parse().ok())
        .collect();
    (site, ids)
}

#[derive(Clone, Copy)]
pub struct BackendConfig {
    pub slots: usize,
    pub cache: usize,
    pub miss: Duration,
}

struct State {
    /// Objects by (site, id): sites never share objects.
    cache: Mutex<Lru<(String, u64)>>,
    stats: Mutex<Stats>,
    free_slots: Mutex<usize>,
    slot_freed: Condvar,
}

impl State {
    /// Serve one request's objects in a slot; the number of misses.
    fn serve(&self, miss: Duration, site: &str, ids: &[u64]) -> u64 {
        {
            let mut free = self.free_slots.lock();
            while *free == 0 {
                self.slot_freed.wait(&mut free);
            }
            *free -= 1;
        }
        let mut misses = 0;
        for &id in ids {
            if !self.cache.lock().touch((site.to_string(), id)) {
                misses += 1;
                std::thread::sleep(miss);
            }
        }
        *self.free_slots.lock() += 1;
        self.slot_freed.notify_one();
        let mut s = self.stats.lock();
        s.requests += 1;
        s.objects += ids.len() as u64;
        s.misses += misses;
        s.hits += ids.len() as u64 - misses;
        misses
    }
}

/// Listen on 127.0.0.1 and serve until the process ends.
pub fn serve(cfg: BackendConfig) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        cache: Mutex::new(Lru::new(cfg.cache)),
        stats: Mutex::new(Stats::default()),
        free_slots: Mutex::new(cfg.slots.max(1)),
        slot_freed: Condvar::new(),
    });
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = state.clone();
            std::thread::spawn(move || connection(stream, &state, cfg.miss));
        }
    });
    Ok(addr)
}

fn connection(mut s: TcpStream, state: &State, miss: Duration) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let used = match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            }
            Err(_) => return,
        };
        let path = req.path.unwrap_or("/").to_string();
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_string())
        };
        let host = header("host").unwrap_or_default();
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        buf.drain(..used);
        let body = if path == "/__stats" {
            state.stats.lock().json()
        } else {
            let (site, ids) = parse_target(&host, &path);
            let misses = state.serve(miss, &site, &ids);
            format!("ok {} {}\n", ids.len() as u64 - misses, misses)
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// A backend's statistics, over HTTP.
pub fn fetch_stats(addr: SocketAddr) -> std::io::Result<Stats> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /__stats HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Stats::from_json(body).ok_or_else(|| std::io::Error::other(format!("bad stats {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_lru_and_sites_never_share_objects() {
        let mut l: Lru<(String, u64)> = Lru::new(2);
        let k = |s: &str, id| (s.to_string(), id);
        assert!(!l.touch(k("a", 1)));
        assert!(!l.touch(k("a", 2)));
        assert!(l.touch(k("a", 1))); // 1 is now the newest
        assert!(!l.touch(k("a", 3))); // evicts 2
        assert_eq!(l.len(), 2);
        assert!(l.touch(k("a", 1)));
        assert!(!l.touch(k("a", 2)));
        assert!(!l.touch(k("b", 1)));
    }

    #[test]
    fn targets_name_site_and_objects() {
        assert_eq!(
            parse_target("s17.example:80", "/17_203_4_88"),
            ("s17.example".to_string(), vec![17, 203, 4, 88])
        );
        assert_eq!(parse_target("x", "/"), ("x".to_string(), vec![]));
    }

    #[test]
    fn a_real_backend_counts_hits_and_misses() {
        let addr = serve(BackendConfig {
            slots: 2,
            cache: 3,
            miss: Duration::from_millis(1),
        })
        .unwrap();
        let get = |host: &str, path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).unwrap();
            let mut t = String::new();
            s.read_to_string(&mut t).unwrap();
            t.split("\r\n\r\n").nth(1).unwrap().to_string()
        };
        assert_eq!(get("s1.example", "/1_2_3"), "ok 0 3\n");
        assert_eq!(get("s1.example", "/1_2"), "ok 2 0\n");
        assert_eq!(get("s2.example", "/1"), "ok 0 1\n"); // evicts s1's 3
        assert_eq!(get("s1.example", "/3"), "ok 0 1\n");
        let s = fetch_stats(addr).unwrap();
        assert_eq!(
            s,
            Stats {
                requests: 4,
                objects: 7,
                hits: 2,
                misses: 5
            }
        );
        let later = Stats {
            requests: 10,
            objects: 9,
            hits: 3,
            misses: 6,
        };
        assert_eq!(
            later.since(&s),
            Stats {
                requests: 6,
                objects: 2,
                hits: 1,
                misses: 1
            }
        );
        assert_eq!(Stats::from_json(&s.json()), Some(s));
    }
}
