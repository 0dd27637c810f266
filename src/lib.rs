//! resumelb: a résumé-based HTTP load balancer.
//!
//! Workers measure how fast they serve each *request class* and send the LB
//! a *résumé* (class → score); the LB sends each request to a worker that
//! is good at its class, bounded by backlog rules. This crate holds the
//! pure core (wire codec, pools, résumé tracker, classifiers) and the
//! processes built on it.

pub mod classify;
pub mod cli;
pub mod http;
pub mod lb;
pub mod loadgen;
pub(crate) mod net;
pub mod pool;
pub mod proto;
pub mod resume;
pub mod soak;
pub mod tracelog;
pub mod util;
pub mod worker;
pub mod zk;
