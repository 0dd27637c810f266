//! Worker addresses given as names are resolved here, off the I/O thread
//! (getaddrinfo can block for seconds); addresses given as IP:port never
//! need it. Each answer is sent back with a wake of the loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::util::net::resolve;

/// A resolved (or unresolvable) worker address.
pub(super) struct Resolved {
    pub addr: String,
    pub result: io::Result<SocketAddr>,
}

pub(super) struct Resolver {
    tx: Sender<String>,
    pub rx: Receiver<Resolved>,
}

impl Resolver {
    pub(super) fn start(waker: Arc<mio::Waker>) -> io::Result<Resolver> {
        let (tx, jobs) = unbounded::<String>();
        let (done, rx) = unbounded();
        std::thread::Builder::new()
            .name("lb-resolver".into())
            .spawn(move || {
                for addr in jobs {
                    let result = resolve(&addr);
                    if done.send(Resolved { addr, result }).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver { tx, rx })
    }

    /// `addr` as a socket address if it is one already; else it is sent to
    /// be resolved and `None` returned.
    pub(super) fn lookup(&self, addr: &str) -> Option<SocketAddr> {
        if let Ok(sa) = addr.parse() {
            return Some(sa);
        }
        if let Some(port) = addr.strip_prefix(':') {
            if let Ok(port) = port.parse::<u16>() {
                return Some(SocketAddr::from(([0, 0, 0, 0], port)));
            }
        }
        let _ = self.tx.send(addr.to_string());
        None
    }
}
