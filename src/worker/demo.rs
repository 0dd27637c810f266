//! The built-in demo application: a simulated cache. A request touches the
//! objects named by its class and by the decimal ids in its path
//! (`/17_4_230`; any other path touches object 0). One LRU cache per worker
//! process holds `cache_size` objects; each miss costs `miss_ms`
//! milliseconds. The body reports the worker, the objects, hits and misses,
//! and the length and digest of the request body, so that clients can
//! compute hit rates and check what they sent.
//!
//! Query parameters for tests and demos: `size=N` (answer N bytes of the
//! pattern `i % 251` instead, the report in the `X-Demo-Report` header),
//! `chunk_ms=MS` (pause between 64 KiB pieces of that body), `sleep=MS`,
//! `abort_after=N` (fail the body after N bytes), `panic=1`, `error=1`.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::io::{self, Read};
use std::time::Duration;

use parking_lot::Mutex;

use super::app::{App, AppError, Body, Request, Response};

/// Settings of the demo app.
#[derive(Debug, Clone, Copy)]
pub struct DemoConfig {
    pub cache_size: usize,
    pub miss_ms: u64,
}

impl Default for DemoConfig {
    fn default() -> DemoConfig {
        DemoConfig {
            cache_size: 100,
            miss_ms: 10,
        }
    }
}

/// A simulated cache: an LRU set of object keys holding at most
/// `capacity` of them (0: nothing is kept). The benchmarks' backend uses it
/// too.
#[derive(Debug)]
pub struct Lru<K> {
    capacity: usize,
    stamps: HashMap<K, u64>,
    order: BTreeMap<u64, K>,
    clock: u64,
}

impl<K: Hash + Eq + Clone> Lru<K> {
    pub fn new(capacity: usize) -> Lru<K> {
        Lru {
            capacity,
            stamps: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Use `key`: true if it was cached. It is the newest afterwards.
    pub fn touch(&mut self, key: K) -> bool {
        self.clock += 1;
        let hit = match self.stamps.insert(key.clone(), self.clock) {
            Some(old) => {
                self.order.remove(&old);
                true
            }
            None => false,
        };
        self.order.insert(self.clock, key);
        while self.stamps.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.stamps.remove(&oldest);
        }
        hit
    }

    /// Objects cached now.
    pub fn len(&self) -> usize {
        self.stamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stamps.is_empty()
    }
}

/// The demo app.
pub struct DemoApp {
    config: DemoConfig,
    worker: String,
    cache: Mutex<Lru<String>>,
}

impl DemoApp {
    /// `worker` names this worker in reports (e.g. `pid:port`).
    pub fn new(config: DemoConfig, worker: String) -> DemoApp {
        DemoApp {
            config,
            worker,
            cache: Mutex::new(Lru::new(config.cache_size)),
        }
    }
}

/// FNV-1a, 64 bits: a digest the tests can recompute.
pub fn fnv1a(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The demo's body pattern: byte `i` is `i % 251`.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn num(query: &str, name: &str) -> Option<u64> {
    param(query, name).and_then(|v| v.parse().ok())
}

/// Object ids named by a path `/ID_ID_…`; any other path names object 0.
pub fn object_ids(path: &str) -> Vec<u64> {
    let ids: Option<Vec<u64>> = path
        .strip_prefix('/')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('_').map(|s| s.parse::<u64>().ok()).collect())
        .unwrap_or(None);
    ids.unwrap_or_else(|| vec![0])
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl App for DemoApp {
    fn call(&self, mut req: Request) -> Result<Response, AppError> {
        let query = req.query().to_string();
        if param(&query, "panic").is_some() {
            panic!("demo app asked to panic");
        }
        if param(&query, "error").is_some() {
            return Err("demo app asked to fail".into());
        }
        let ids = object_ids(req.path());
        let (mut hits, mut misses) = (0u64, 0u64);
        {
            let mut cache = self.cache.lock();
            for id in &ids {
                if cache.touch(format!("{}/{id}", req.class)) {
                    hits += 1;
                } else {
                    misses += 1;
                }
            }
        }
        let sleep_ms = misses * self.config.miss_ms + num(&query, "sleep").unwrap_or(0);
        if sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(sleep_ms));
        }
        let (mut body_len, mut digest) = (0u64, FNV_OFFSET);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = req.body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body_len += n as u64;
            digest = fnv1a(&buf[..n], digest);
        }
        let report = format!(
            "{{\"worker\": {}, \"class\": {}, \"objects\": {:?}, \"hits\": {hits}, \"misses\": {misses}, \"body_length\": {body_len}, \"body_digest\": \"{digest:016x}\"}}",
            json_str(&self.worker),
            json_str(&req.class),
            ids,
        );
        let Some(size) = num(&query, "size") else {
            return Ok(Response::with_body(
                "200 OK",
                "application/json",
                format!("{report}\n").into_bytes(),
            )
            .header("X-Worker", &self.worker));
        };
        let chunk_ms = num(&query, "chunk_ms").unwrap_or(0);
        let abort_after = num(&query, "abort_after");
        let mut sent = 0u64;
        let body = std::iter::from_fn(move || {
            if sent >= size {
                return None;
            }
            if let Some(limit) = abort_after {
                if sent >= limit {
                    return Some(Err(io::Error::other("demo app asked to abort")));
                }
            }
            if chunk_ms > 0 && sent > 0 {
                std::thread::sleep(Duration::from_millis(chunk_ms));
            }
            let n = (size - sent).min(64 * 1024) as usize;
            let piece = pattern(sent, n);
            sent += n as u64;
            Some(Ok(piece))
        });
        Ok(Response::new("200 OK")
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &size.to_string())
            .header("X-Worker", &self.worker)
            .header("X-Demo-Report", &report)
            .body(Body::Stream(Box::new(body))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Environ;
    use crate::util::spill::BodyReader;

    fn request(class: &str, path: &str, query: &str) -> Request {
        let mut env = Environ::new();
        env.insert("REQUEST_METHOD".into(), "GET".into());
        env.insert("PATH_INFO".into(), path.into());
        env.insert("QUERY_STRING".into(), query.into());
        env.insert("resumelb.request_class".into(), class.into());
        Request::new(env, BodyReader::empty())
    }

    fn report(r: Response) -> serde_json::Value {
        let Body::Bytes(b) = r.body else {
            panic!("not bytes")
        };
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn ids_from_paths() {
        assert_eq!(object_ids("/17_4_230"), vec![17, 4, 230]);
        assert_eq!(object_ids("/5"), vec![5]);
        assert_eq!(object_ids("/"), vec![0]);
        assert_eq!(object_ids("/a_1"), vec![0]);
        assert_eq!(object_ids("/1/2"), vec![0]);
    }

    #[test]
    fn cache_hits_misses_and_eviction() {
        let app = DemoApp::new(
            DemoConfig {
                cache_size: 2,
                miss_ms: 0,
            },
            "w".into(),
        );
        let r = report(app.call(request("a", "/1_2", "")).unwrap());
        assert_eq!(
            (r["hits"].as_u64(), r["misses"].as_u64()),
            (Some(0), Some(2))
        );
        let r = report(app.call(request("a", "/1_2", "")).unwrap());
        assert_eq!(
            (r["hits"].as_u64(), r["misses"].as_u64()),
            (Some(2), Some(0))
        );
        // Another class's object evicts a/1 (least recently used).
        app.call(request("b", "/1", "")).unwrap();
        let r = report(app.call(request("a", "/2_1", "")).unwrap());
        assert_eq!(
            (r["hits"].as_u64(), r["misses"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(r["worker"], "w");
        assert_eq!(r["class"], "a");
    }

    #[test]
    fn sized_body_follows_the_pattern() {
        let app = DemoApp::new(DemoConfig::default(), "w".into());
        let r = app.call(request("a", "/", "size=70000")).unwrap();
        assert_eq!(r.content_length(), Some("70000"));
        let Body::Stream(it) = r.body else { panic!() };
        let all: Vec<u8> = it.flat_map(|c| c.unwrap()).collect();
        assert_eq!(all, pattern(0, 70000));
    }
}
