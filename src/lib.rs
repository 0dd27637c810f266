//! resumelb: a résumé-based HTTP load balancer.
//!
//! Workers measure how fast they serve each *request class* and send the LB
//! a *résumé* (class → score); the LB sends each request to a worker that
//! is good at its class, bounded by backlog rules. This crate holds the
//! pure core (wire codec, pools, résumé tracker, classifiers) and the
//! processes built on it.
//!
//! The public surface: the commands (`cli`), the LB and the worker to
//! embed (`lb`, `worker`, with the `App` trait), and the pure parts they
//! are made of (`proto`, `http`, `pool`, `resume`, `classify`). The event
//! loop core, ZooKeeper and the helpers are internal. The load generator,
//! the soak and test helpers are behind the `testing` feature, which the
//! crate's own tests, examples and benchmarks turn on (see Cargo.toml).

pub mod alloc;
pub mod classify;
pub mod cli;
pub mod http;
pub mod lb;
pub(crate) mod net;
pub mod pool;
pub mod proto;
pub mod resume;
pub(crate) mod tracelog;
pub(crate) mod util;
pub mod worker;
pub(crate) mod zk;

#[cfg(feature = "testing")]
pub mod loadgen;
#[cfg(feature = "testing")]
pub mod soak;

/// What the crate's tests, examples, benchmarks and fuzz targets need
/// beyond the public surface. Not a stable interface.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::lb::htpasswd::base64_decode;
    pub use crate::util::procinfo::{fd_count, raise_nofile, rss_kib};
    pub use crate::util::rng::Rng;
}
