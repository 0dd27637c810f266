//! What the LB reports about itself: the status document and the
//! Prometheus metrics text, read from every part (like the loop, and unlike
//! the parts, this module sees them all).

use std::time::Instant;

use serde_json::{json, Value};

use super::clients::Clients;
use super::ctx::Ctx;
use super::status::unix_secs;
use super::workers::{WorkerConn, Workers};
use crate::pool::WorkerStatus;

/// The status document, as JSON text with a newline. A worker's row shows
/// while it is in the pool, and while it is held out of it: unavailable
/// (`worker_details[addr].available` false) or ejected after gateway
/// failures (`worker_details[addr].ejected_for`, seconds left).
///
/// The page's keys (`lb`, `totals`, `worker_list`, `classes`, `events`,
/// `history`) come from `page`; `classes` is how many of the busiest
/// request classes `classes` lists.
pub(super) fn document(ctx: &Ctx, workers: &Workers, clients: &Clients, classes: usize) -> Vec<u8> {
    let st = ctx.balancer.status();
    let mut shown: Vec<(&WorkerConn, WorkerStatus)> = st
        .workers
        .iter()
        .filter_map(|ws| Some((workers.by_id(ws.id)?, ws.clone())))
        .collect();
    for w in workers.held_out() {
        let ws = ctx
            .balancer
            .pool()
            .worker_status(w.id())
            .unwrap_or(WorkerStatus {
                id: w.id(),
                backlog: 0,
                mean_backlog: 0.0,
                resume_size: w.resume_size(),
                capacity: None,
            });
        shown.push((w, ws));
    }
    shown.sort_by(|a, b| a.0.addr.cmp(&b.0.addr));
    let now = Instant::now();
    let mut details = serde_json::Map::new();
    for (w, ws) in &shown {
        let mut d = json!({
            "resume_size": ws.resume_size,
            "available": !w.is_unavailable(),
            "silent": w.is_silent(),
        });
        if let Some(until) = w.ejected_until() {
            let left = until.saturating_duration_since(now).as_secs_f64();
            d["ejected_for"] = json!((left * 10.0).ceil() / 10.0);
        }
        if let Some(h) = &w.hello {
            d["threads"] = json!(h.threads);
            d["pid"] = json!(h.pid);
            d["version"] = json!(h.version);
        }
        details.insert(w.addr.clone(), d);
    }
    let rows: Vec<Value> = shown
        .iter()
        .map(|(w, ws)| {
            let oldest = w.oldest().map_or(Value::Null, |t| json!(unix_secs(t)));
            json!([w.addr, ws.backlog, ws.mean_backlog, oldest])
        })
        .collect();
    let rows_ex: Vec<Value> = shown
        .iter()
        .map(|(w, _)| json!([w.addr, w.unsent()]))
        .collect();
    let unavailable = shown.iter().filter(|s| s.0.is_unavailable()).count();
    let silent = shown.iter().filter(|s| s.0.is_silent()).count();
    let placed = st.placements;
    let ejected = shown
        .iter()
        .filter(|s| s.0.ejected_until().is_some())
        .count();
    let settings = ctx.balancer.settings();
    let doc = json!({
        "backlog": st.backlog,
        "mean_backlog": st.mean_backlog,
        "workers": rows,
        "workers_ex": rows_ex,
        "worker_details": details,
        "unavailable": unavailable,
        "silent": silent,
        "ejected": ejected,
        "ejections": ctx.counters.ejections,
        "waiting": clients.waiting(),
        "clients": clients.len(),
        "settings": {
            "variance": settings.variance,
            "backlog_history": settings.backlog_history,
            "unskilled_score": settings.unskilled_score,
            "slow_factor": settings.slow_factor,
            "spill_factor": settings.spill_factor,
            "max_depth": settings.max_depth,
            "eject_after": settings.eject_after,
        },
        "version": ctx.balancer.current_version(),
        "retries": ctx.counters.retries,
        "bad_gateway": ctx.counters.bad_gateway,
        "spilled_bytes": ctx.counters.spilled_bytes,
        "pool": ctx.cfg.pool.name(),
        "placements": {
            "skilled": placed.skilled,
            "new": placed.new,
            "spilled": placed.spilled,
            "moved": placed.moved,
        },
    });
    let mut doc = doc;
    page(&mut doc, ctx, workers, classes);
    let mut out = doc.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// Rounded to 3 decimals, for a document that is read by people too.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The keys the pool's page shows (resumelb-protocol(7) lists them).
fn page(doc: &mut Value, ctx: &Ctx, workers: &Workers, classes: usize) {
    let now = Instant::now();
    let st = ctx.balancer.status();
    let by_id: std::collections::HashMap<_, _> = st.workers.iter().map(|w| (w.id, w)).collect();
    let listing = workers.listing();
    let rows: Vec<Value> = listing
        .iter()
        .map(|(addr, conn)| {
            let Some(w) = conn else {
                return json!({
                    "address": addr,
                    "state": "unavailable",
                    "reason": "not connected",
                    "in_flight": 0,
                });
            };
            let (state, reason) = w.state();
            let (answered, errors, ejections, rate) = w.counts();
            let ws = by_id
                .get(&w.id())
                .map(|ws| (*ws).clone())
                .or_else(|| ctx.balancer.pool().worker_status(w.id()));
            let mut row = json!({
                "address": addr,
                "state": state,
                "reason": reason,
                "in_flight": w.in_flight(),
                "requests": answered,
                "requests_per_s": r3(rate),
                "errors_5xx": errors,
                "ejections": ejections,
                "resume_size": w.resume_size(),
            });
            if let Some(ws) = ws {
                row["backlog"] = json!(ws.backlog);
                row["mean_backlog"] = json!(r3(ws.mean_backlog));
                row["capacity"] = json!(ws.capacity);
            }
            if let Some(h) = &w.hello {
                row["threads"] = json!(h.threads);
                row["pid"] = json!(h.pid);
                row["version"] = json!(h.version);
            }
            row
        })
        .collect();
    let connected: Vec<&super::workers::WorkerConn> =
        listing.iter().filter_map(|(_, c)| *c).collect();
    let class_rows: Vec<Value> = ctx
        .metrics
        .busiest(classes)
        .into_iter()
        .map(|(class, c)| {
            let mut scores = serde_json::Map::new();
            let mut best: Option<(&super::workers::WorkerConn, f64)> = None;
            for w in &connected {
                if let Some(s) = w.score(class) {
                    scores.insert(w.addr.clone(), json!(r3(s)));
                    if best.is_none_or(|b| s > b.1) {
                        best = Some((w, s));
                    }
                }
            }
            let (p50, p99) = ctx
                .metrics
                .percentiles(c, now)
                .map_or((Value::Null, Value::Null), |(a, b)| (json!(a), json!(b)));
            json!({
                "class": class,
                "requests": c.requests,
                "requests_per_s": r3(c.rate.per_second()),
                "p50": p50,
                "p99": p99,
                "best_worker": best.map(|b| b.0.addr.clone()),
                "best_share": best.and_then(|b| c.share(b.0.id())).map(r3),
                "scores": scores,
            })
        })
        .collect();
    let (requests, errors) = ctx.metrics.totals();
    doc["lb"] = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "address": ctx.local.to_string(),
        "started": super::board::unix(ctx.board.started()),
        "now": super::board::unix(std::time::SystemTime::now()),
    });
    doc["totals"] = json!({
        "requests": requests,
        "errors_5xx": errors,
        "requests_per_s": r3(ctx.metrics.rate.per_second()),
        "in_flight": workers.in_flight(),
    });
    doc["worker_list"] = Value::Array(rows);
    doc["classes"] = Value::Array(class_rows);
    doc["events"] = ctx.board.events_json();
    doc["history"] = ctx.board.history_json();
}

/// Prometheus text: the counters, then the pool and the workers.
pub(super) fn metrics_text(ctx: &Ctx, workers: &Workers, clients: &Clients) -> String {
    use super::metrics::{escape, family};
    let mut out = String::with_capacity(4096);
    ctx.metrics.render(&mut out);
    let st = ctx.balancer.status();
    family(
        &mut out,
        "resumelb_pool_backlog",
        "gauge",
        "Requests in flight in the pool.",
        &[(String::new(), st.backlog as f64)],
    );
    family(
        &mut out,
        "resumelb_pool_mean_backlog",
        "gauge",
        "The pool's decayed mean backlog.",
        &[(String::new(), st.mean_backlog)],
    );
    let mut backlog = Vec::new();
    let mut mean = Vec::new();
    let mut size = Vec::new();
    for ws in &st.workers {
        if let Some(w) = workers.by_id(ws.id) {
            let l = format!("worker=\"{}\"", escape(&w.addr));
            backlog.push((l.clone(), ws.backlog as f64));
            mean.push((l.clone(), ws.mean_backlog));
            size.push((l, ws.resume_size as f64));
        }
    }
    backlog.sort_by(|a, b| a.0.cmp(&b.0));
    mean.sort_by(|a, b| a.0.cmp(&b.0));
    size.sort_by(|a, b| a.0.cmp(&b.0));
    family(
        &mut out,
        "resumelb_worker_backlog",
        "gauge",
        "Requests in flight on a worker.",
        &backlog,
    );
    family(
        &mut out,
        "resumelb_worker_mean_backlog",
        "gauge",
        "A worker's decayed mean backlog.",
        &mean,
    );
    family(
        &mut out,
        "resumelb_worker_resume_size",
        "gauge",
        "Request classes in a worker's résumé.",
        &size,
    );
    let mut up: Vec<(String, f64)> = workers
        .addresses()
        .map(|(addr, up)| {
            (
                format!("worker=\"{}\"", escape(addr)),
                if up { 1.0 } else { 0.0 },
            )
        })
        .collect();
    up.sort_by(|a, b| a.0.cmp(&b.0));
    family(
        &mut out,
        "resumelb_worker_up",
        "gauge",
        "1 when a configured worker is connected and in the pool.",
        &up,
    );
    family(
        &mut out,
        "resumelb_workers_unavailable",
        "gauge",
        "Connected workers whose application is down (they said \"unavailable\").",
        &[(
            String::new(),
            workers.held_out().filter(|w| w.is_unavailable()).count() as f64,
        )],
    );
    family(
        &mut out,
        "resumelb_workers_silent",
        "gauge",
        "Workers held out of the pool because nothing was heard from them while they had \
         requests.",
        &[(
            String::new(),
            workers.held_out().filter(|w| w.is_silent()).count() as f64,
        )],
    );
    let placed = st.placements;
    family(
        &mut out,
        "resumelb_pool_placements_total",
        "counter",
        "Requests the pool placed, by why their worker was chosen (pools that count them).",
        &[
            ("reason=\"skilled\"".to_string(), placed.skilled as f64),
            ("reason=\"new\"".to_string(), placed.new as f64),
            ("reason=\"spilled\"".to_string(), placed.spilled as f64),
            ("reason=\"moved\"".to_string(), placed.moved as f64),
        ],
    );
    family(
        &mut out,
        "resumelb_workers_ejected",
        "gauge",
        "Workers out of the pool for a while after gateway failures in a row.",
        &[(
            String::new(),
            workers
                .held_out()
                .filter(|w| w.ejected_until().is_some())
                .count() as f64,
        )],
    );
    family(
        &mut out,
        "resumelb_ejections_total",
        "counter",
        "Times a worker was taken out of the pool after gateway failures in a row.",
        &[(String::new(), ctx.counters.ejections as f64)],
    );
    family(
        &mut out,
        "resumelb_retries_total",
        "counter",
        "Requests sent again after their worker was lost.",
        &[(String::new(), ctx.counters.retries as f64)],
    );
    family(
        &mut out,
        "resumelb_bad_gateway_total",
        "counter",
        "502 responses for lost or failing workers.",
        &[(String::new(), ctx.counters.bad_gateway as f64)],
    );
    family(
        &mut out,
        "resumelb_spilled_bytes_total",
        "counter",
        "Response bytes buffered on disk for slow clients.",
        &[(String::new(), ctx.counters.spilled_bytes as f64)],
    );
    family(
        &mut out,
        "resumelb_clients",
        "gauge",
        "Open client connections.",
        &[(String::new(), clients.len() as f64)],
    );
    family(
        &mut out,
        "resumelb_waiting",
        "gauge",
        "Requests waiting for a worker.",
        &[(String::new(), clients.waiting() as f64)],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::board::Point;
    use crate::lb::resolver::Resolver;
    use crate::lb::spill::SpillIo;
    use crate::lb::{LbConfig, WorkerSpec};
    use crate::pool::WorkerId;
    use std::sync::Arc;
    use std::time::SystemTime;

    /// The page's keys from the loop's parts, with no worker running: a
    /// configured address nobody answers on, counted requests, an event
    /// and a history point.
    #[test]
    fn the_page_keys_of_the_document() {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).expect("waker"));
        let (spill, _rx) = SpillIo::start(waker.clone()).expect("spill thread");
        let registry = poll.registry().try_clone().expect("registry");
        let local = "127.0.0.1:8080".parse().expect("address");
        let mut ctx = Ctx::new(LbConfig::default(), local, registry, spill);
        let mut workers = Workers::new(Resolver::start(waker).expect("resolver"));
        // Port 1 on loopback: refused, so never joined.
        workers.set(vec![WorkerSpec::new("127.0.0.1:1")], &mut ctx);
        let now = Instant::now();
        for (class, status) in [("a.com", 200), ("a.com", 503), ("b.com", 200)] {
            ctx.metrics.observe(class, status, 0.002, now);
            ctx.metrics.served(class, WorkerId(7));
        }
        ctx.metrics.tick(1.0);
        ctx.board
            .event("settings", None, "pool settings changed".into());
        ctx.board.sample(Point {
            at: SystemTime::now(),
            requests_per_s: 3.0,
            backlog: 1,
            in_flight: 1,
            waiting: 0,
        });
        let doc: Value = serde_json::from_slice(&document(&ctx, &workers, &Clients::default(), 1))
            .expect("json");
        assert_eq!(doc["lb"]["address"], "127.0.0.1:8080");
        assert_eq!(doc["lb"]["pid"], std::process::id());
        assert_eq!(doc["totals"]["requests"], 3);
        assert_eq!(doc["totals"]["errors_5xx"], 1);
        assert_eq!(doc["totals"]["requests_per_s"], 3.0);
        let list = doc["worker_list"].as_array().expect("worker_list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["address"], "127.0.0.1:1");
        assert_eq!(list[0]["state"], "unavailable");
        assert!(list[0]["reason"].is_string(), "{}", list[0]);
        // One class asked for: the busiest, with no score (no résumé) and
        // its requests all answered by one worker no résumé names.
        let classes = doc["classes"].as_array().expect("classes");
        assert_eq!(classes.len(), 1);
        assert_eq!(classes[0]["class"], "a.com");
        assert_eq!(classes[0]["requests"], 2);
        assert_eq!(classes[0]["p50"], 0.002);
        assert_eq!(classes[0]["best_worker"], Value::Null);
        assert_eq!(classes[0]["best_share"], Value::Null);
        let events = doc["events"].as_array().expect("events");
        assert_eq!(
            events.last().map(|e| e["kind"].clone()),
            Some(json!("settings"))
        );
        assert!(events.iter().any(|e| e["kind"] == "added"));
        assert_eq!(doc["history"]["points"][0][1], 3.0);
        // The document's older keys are all still there.
        for key in ["backlog", "workers", "worker_details", "settings", "pool"] {
            assert!(doc.get(key).is_some(), "{key}");
        }
    }
}
