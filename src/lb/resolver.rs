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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn addresses_are_taken_as_they_are_and_names_are_answered_by_the_thread() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).unwrap());
        let r = Resolver::start(waker).unwrap();
        assert_eq!(r.lookup("127.0.0.1:81"), Some(([127, 0, 0, 1], 81).into()));
        assert_eq!(r.lookup("[::1]:82"), Some("[::1]:82".parse().unwrap()));
        assert_eq!(r.lookup(":83"), Some(([0, 0, 0, 0], 83).into()));
        assert!(r.rx.is_empty(), "no thread round trip for addresses");
        assert_eq!(r.lookup("localhost:84"), None);
        let answer = r.rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(answer.addr, "localhost:84");
        if let Ok(sa) = answer.result {
            assert!(sa.ip().is_loopback() && sa.port() == 84);
        }
    }
}
