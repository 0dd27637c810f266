//! Pool tests: the reference scenario, load rules, single-version mode and
//! a seeded random-operation run.

use std::collections::HashMap;

use super::*;

fn w(n: u64) -> WorkerId {
    WorkerId(n)
}

fn resume(pairs: &[(&str, f64)]) -> Resume {
    pairs.iter().map(|(c, s)| (c.to_string(), *s)).collect()
}

fn mb(p: &dyn Pool, id: u64) -> f64 {
    p.worker_status(w(id)).unwrap().mean_backlog
}

/// Decayed mean of the backlogs seen at each bump, computed directly as a
/// weighted mean: Σ dᵏ⁻ⁱ bᵢ / Σ dᵏ⁻ⁱ.
fn decayed_mean(backlogs: &[i64], d: f64) -> f64 {
    let k = backlogs.len();
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &b) in backlogs.iter().enumerate() {
        let wt = d.powi((k - 1 - i) as i32);
        num += wt * b as f64;
        den += wt;
    }
    num / den
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

const T0: Time = std::time::Duration::ZERO;

fn bget(b: &mut Balancer, class: &str) -> Option<WorkerId> {
    b.get(&Ask::new(class, T0))
}

fn bput(b: &mut Balancer, w: WorkerId) {
    b.put(w, &Done::without_sample("c", T0))
}

fn gets(p: &mut ClassicPool, class: &str, n: usize) -> Vec<u64> {
    (0..n).map(|_| p.get(class).unwrap().0).collect()
}

#[test]
fn reference_scenario() {
    let mut p = ClassicPool::new(Settings {
        variance: 1.5,
        backlog_history: 2,
        unskilled_score: 0.5,
        ..Settings::default()
    });
    let wd = 1.0 - 1.0 / 4.0;

    // 1
    assert_eq!(p.get("foo"), None);
    // 2
    p.new_resume(w(1), Resume::new());
    assert_eq!(gets(&mut p, "foo", 1), [1]);
    // 3
    p.new_resume(w(2), Resume::new());
    assert_eq!(p.get("foo"), Some(w(1)));
    assert_eq!(p.get("bar"), Some(w(2)));
    assert!(close(mb(&p, 1), decayed_mean(&[1, 2], wd), 1e-12));
    assert!(close(mb(&p, 1), 11.0 / 7.0, 1e-9));
    let st = p.status();
    assert_eq!(st.backlog, 3);
    // Pool decay 0.75 while N = 1, then 0.875 with N = 2.
    let (mut d, mut n) = (1.0_f64, 1.0_f64);
    for (b, dec) in [(1, 0.75), (2, 0.875), (3, 0.875)] {
        d = d * dec + b as f64;
        n = n * dec + 1.0;
        if b == 1 {
            (d, n) = (1.0, 1.0);
        }
    }
    assert!(close(st.mean_backlog, d / n, 1e-12));
    assert!(close(st.mean_backlog / 2.0, 1.0443, 1e-4));
    // 4
    p.new_resume(w(3), Resume::new());
    assert_eq!(gets(&mut p, "foo", 2), [1, 1]);
    assert!(close(mb(&p, 1), decayed_mean(&[1, 2, 3, 4], wd), 1e-12));
    assert!(close(mb(&p, 1), 2.8514, 1e-4));
    // 5
    assert_eq!(gets(&mut p, "foo", 10), [3, 3, 3, 3, 1, 3, 1, 3, 1, 3]);
    let (m1, m3) = (mb(&p, 1), mb(&p, 3));
    assert!(close(m1, decayed_mean(&[1, 2, 3, 4, 5, 6, 7], wd), 1e-12));
    assert!(close(m3, decayed_mean(&[1, 2, 3, 4, 5, 6, 7], wd), 1e-12));
    assert!(close(m1, 5.0783, 1e-4) && close(m3, 5.0783, 1e-4));
    assert!(close(p.status().mean_backlog / 3.0, 3.2061, 1e-4));
    // 6
    p.new_resume(w(4), Resume::new());
    p.new_resume(w(5), Resume::new());
    assert_eq!(gets(&mut p, "foo", 2), [5, 5]);
    // 7
    for _ in 0..7 {
        p.put(w(1));
    }
    for _ in 0..7 {
        p.put(w(3));
    }
    let down = [1, 2, 3, 4, 5, 6, 7, 6, 5, 4, 3, 2, 1, 0];
    assert!(close(mb(&p, 1), decayed_mean(&down, wd), 1e-12));
    assert!(close(mb(&p, 3), decayed_mean(&down, wd), 1e-12));
    assert!(close(mb(&p, 1), 2.2934, 1e-4));
    assert!(close(mb(&p, 5), 11.0 / 7.0, 1e-9));
    // 8
    assert_eq!(p.get("foo"), Some(w(1)));
}

#[test]
fn new_worker_under_load() {
    let mut p = ClassicPool::new(Settings {
        variance: 1.0,
        ..Settings::default()
    });
    for i in 1..=3 {
        p.new_resume(w(i), resume(&[("bar", 2.0)]));
    }
    let mut count: HashMap<u64, usize> = HashMap::new();
    for _ in 0..30 {
        *count.entry(p.get("bar").unwrap().0).or_default() += 1;
    }
    assert_eq!(count.values().copied().collect::<Vec<_>>(), [10, 10, 10]);
    for i in 1..=3 {
        assert_eq!(p.worker_status(w(i)).unwrap().backlog, 10);
    }
    p.new_resume(w(4), Resume::new());
    assert_eq!(p.get("bar"), Some(w(4)));
    // It was given the unskilled score for bar in the LB's copy.
    assert_eq!(p.worker_status(w(4)).unwrap().resume_size, 1);
}

#[test]
fn skill_wins_over_lru_and_ties_go_to_the_least_recently_used() {
    let mut p = ClassicPool::new(Settings::default());
    p.new_resume(w(1), resume(&[("a", 5.0)]));
    p.new_resume(w(2), resume(&[("a", 1.0), ("b", 3.0)]));
    p.new_resume(w(3), resume(&[("b", 3.0)]));
    // Line: 3, 2, 1.
    assert_eq!(p.get("a"), Some(w(1)));
    p.put(w(1));
    // b: 2 and 3 tie at 3.0, 3 is nearer the front.
    assert_eq!(p.get("b"), Some(w(3)));
    p.put(w(3));
    assert_eq!(p.get("b"), Some(w(2)));
    p.put(w(2));
    // A new résumé replaces the skills.
    p.new_resume(w(1), resume(&[("b", 10.0)]));
    assert_eq!(p.get("b"), Some(w(1)));
    assert_eq!(p.get("a"), Some(w(2)));
}

#[test]
fn leave_with_later_puts() {
    let mut p = ClassicPool::new(Settings::default());
    p.new_resume(w(1), resume(&[("a", 1.0)]));
    p.new_resume(w(2), resume(&[("a", 1.0)]));
    let got = gets(&mut p, "a", 4);
    assert_eq!(got.iter().filter(|&&x| x == 1).count(), 2);
    p.remove(w(1));
    assert_eq!(p.len(), 1);
    assert_eq!(p.status().backlog, 4);
    assert_eq!(p.status().workers.len(), 1);
    // w1 is never chosen again, but its puts still count.
    assert_eq!(gets(&mut p, "a", 3), [2, 2, 2]);
    p.put(w(1));
    assert_eq!(p.worker_status(w(1)).unwrap().backlog, 1);
    p.put(w(1));
    assert_eq!(p.status().backlog, 5);
    // Idle and gone: forgotten; a stray put changes nothing.
    assert!(p.worker_status(w(1)).is_none());
    p.put(w(1));
    assert_eq!(p.status().backlog, 5);
    p.remove(w(2));
    assert_eq!(p.get("a"), None);
}

#[test]
fn settings_change_the_decay() {
    let mut p = ClassicPool::new(Settings::default());
    p.new_resume(w(1), Resume::new());
    p.get("x");
    p.get("x");
    // worker_decay = 1 - 1/18 with B = 9.
    assert!(close(
        mb(&p, 1),
        decayed_mean(&[1, 2], 1.0 - 1.0 / 18.0),
        1e-12
    ));
    p.update_settings(&Settings {
        backlog_history: 1,
        ..Settings::default()
    });
    p.get("x");
    let mut b = Backlog::default();
    for (bl, d) in [(1, 1.0 - 1.0 / 18.0), (2, 1.0 - 1.0 / 18.0), (3, 0.5)] {
        b.backlog = bl;
        b.bump(d);
    }
    assert!(close(mb(&p, 1), b.mbacklog, 1e-12));
    assert_eq!(p.settings().backlog_history, 1);
}

#[test]
fn classless_prefers_idle_then_least_busy_in_line_order() {
    let mut p = ClasslessPool::new(Settings::default());
    assert_eq!(p.get("x"), None);
    for i in 1..=3 {
        p.new_resume(w(i), Resume::new());
    }
    // Line: 3 2 1; each idle in turn.
    let order: Vec<u64> = (0..3).map(|_| p.get("x").unwrap().0).collect();
    assert_eq!(order, [3, 2, 1]);
    p.put(w(2));
    assert_eq!(p.get("y"), Some(w(2)));
    // All at 1: the front of the line (3).
    assert_eq!(p.get("y"), Some(w(3)));
    let st = p.status();
    assert_eq!(st.backlog, 4);
    assert!(close(st.mean_backlog, 4.0 / 3.0, 1e-12));
    p.remove(w(3));
    p.put(w(3));
    p.put(w(3));
    assert_eq!(p.status().backlog, 2);
    assert!(p.worker_status(w(3)).is_none());
}

/// Workers in the pool (sorted), after checking that `get` picks only them.
fn versions_served(b: &mut Balancer, n: usize) -> Vec<u64> {
    let mut members: Vec<u64> = b.status().workers.iter().map(|s| s.id.0).collect();
    members.sort_unstable();
    for _ in 0..n {
        let g = bget(b, "c").unwrap();
        assert!(members.contains(&g.0), "{g:?} is not in the pool");
        bput(b, g);
    }
    members
}

#[test]
fn single_version_switches_only_on_a_strict_majority() {
    let mut b = Balancer::new(PoolKind::Classic, Settings::default(), true);
    b.new_resume(w(1), Some("1"), Resume::new());
    b.new_resume(w(2), Some("1"), Resume::new());
    assert_eq!(b.current_version(), Some("1"));
    b.new_resume(w(3), Some("2"), Resume::new());
    assert_eq!(versions_served(&mut b, 10), [1, 2]);
    b.new_resume(w(4), Some("2"), Resume::new());
    // 2 against 2: no switch.
    assert_eq!(b.current_version(), Some("1"));
    assert_eq!(versions_served(&mut b, 10), [1, 2]);
    b.new_resume(w(5), Some("2"), Resume::new());
    assert_eq!(b.current_version(), Some("2"));
    // Line order: the earliest joiner at the front.
    let line: Vec<u64> = b.status().workers.iter().map(|s| s.id.0).collect();
    assert_eq!(line, [3, 4, 5]);
    assert_eq!(versions_served(&mut b, 12), [3, 4, 5]);
    // Version 2 workers leave until version 1 has more.
    b.remove(w(5));
    assert_eq!(b.current_version(), Some("2"));
    b.remove(w(4));
    assert_eq!(b.current_version(), Some("1"));
    assert_eq!(versions_served(&mut b, 10), [1, 2]);
}

#[test]
fn single_version_keeps_counters_across_switches_and_flaps() {
    let mut b = Balancer::new(PoolKind::Classic, Settings::default(), true);
    b.new_resume(w(1), Some("a"), Resume::new());
    let busy = bget(&mut b, "c").unwrap();
    assert_eq!(busy, w(1));
    // Version b takes over while w1 has a request in flight.
    b.new_resume(w(2), Some("b"), Resume::new());
    b.new_resume(w(3), Some("b"), Resume::new());
    assert_eq!(b.current_version(), Some("b"));
    assert_eq!(b.pool().worker_status(w(1)).unwrap().backlog, 1);
    // w1 flaps: leaves and comes back with version a, twice.
    for _ in 0..2 {
        b.remove(w(1));
        b.new_resume(w(1), Some("a"), Resume::new());
    }
    assert_eq!(b.pool().worker_status(w(1)).unwrap().backlog, 1);
    bput(&mut b, w(1));
    assert_eq!(b.status().backlog, 0);
    assert_eq!(b.pool().worker_status(w(1)).unwrap().backlog, 0);
    // Version a wins back the majority: w1 re-enters with its counters.
    b.new_resume(w(4), Some("a"), Resume::new());
    b.new_resume(w(5), Some("a"), Resume::new());
    assert_eq!(b.current_version(), Some("a"));
    let mut ids: Vec<u64> = b.status().workers.iter().map(|s| s.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 4, 5]);
    assert!(b.pool().worker_status(w(1)).unwrap().mean_backlog > 0.0);
}

fn random_operations(kind: PoolKind, single_version: bool, seed: u64) {
    let mut rng = crate::util::rng::Rng::new(seed);
    let mut b = Balancer::new(kind, Settings::default(), single_version);
    let mut in_flight: Vec<WorkerId> = Vec::new();
    let mut live: Vec<WorkerId> = Vec::new();
    let mut next_id = 0u64;
    for step in 0..10_000 {
        match rng.below(20) {
            0 => {
                next_id += 1;
                live.push(WorkerId(next_id));
            }
            1 if !live.is_empty() => {
                let i = rng.below(live.len() as u64) as usize;
                b.remove(live.swap_remove(i));
            }
            2..=4 if !live.is_empty() => {
                let wk = live[rng.below(live.len() as u64) as usize];
                let r: Resume = (0..rng.below(5))
                    .map(|_| (format!("c{}", rng.below(8)), rng.below(4) as f64 * 0.5))
                    .collect();
                let version = format!("v{}", rng.below(3));
                b.new_resume(wk, Some(&version), r);
            }
            5..=12 => {
                let class = format!("c{}", rng.below(10));
                // A pool that bounds workers may say "wait"; past any
                // spill time, a free worker takes the request.
                let long = Ask {
                    class: &class,
                    waited: std::time::Duration::from_secs(3600),
                    now: T0,
                };
                let got = bget(&mut b, &class).or_else(|| b.get(&long));
                match got {
                    Some(wk) => in_flight.push(wk),
                    None => assert!(
                        b.is_empty() || (kind == PoolKind::Resume && !b.has_free()),
                        "step {step}: no worker from a non-empty pool"
                    ),
                }
            }
            _ if !in_flight.is_empty() => {
                let i = rng.below(in_flight.len() as u64) as usize;
                let wk = in_flight.swap_remove(i);
                bput(&mut b, wk);
            }
            _ => {}
        }
        let st = b.status();
        assert_eq!(st.backlog, in_flight.len() as i64, "step {step}");
        assert!(st.mean_backlog >= 0.0 && st.mean_backlog.is_finite());
        for ws in &st.workers {
            assert!(ws.backlog >= 0, "step {step}");
            let mine = in_flight.iter().filter(|&&x| x == ws.id).count() as i64;
            assert_eq!(ws.backlog, mine, "step {step}");
        }
    }
}

#[test]
fn random_operations_keep_backlogs_consistent() {
    for seed in 1..=2 {
        random_operations(PoolKind::Resume, false, seed);
        random_operations(PoolKind::Resume, true, seed);
        random_operations(PoolKind::Classic, false, seed);
        random_operations(PoolKind::Classic, true, seed);
        random_operations(PoolKind::Classless, false, seed);
        random_operations(PoolKind::Classless, true, seed);
    }
}

#[test]
fn every_pool_name_parses() {
    for name in PoolKind::NAMES {
        assert!(name.parse::<PoolKind>().is_ok(), "{name}");
    }
    assert!("nonsense".parse::<PoolKind>().is_err());
}

/// Single-version mode with the résumé pool: only the current version's
/// workers are served, and a switch needs a strict majority, as with the
/// other pools.
#[test]
fn single_version_with_the_resume_pool() {
    let mut b = Balancer::new(PoolKind::Resume, Settings::default(), true);
    for (id, version) in [(1, "1"), (2, "1"), (3, "2"), (4, "2")] {
        b.describe(w(id), &format!("10.0.0.{id}:80"), 8);
        b.new_resume(w(id), Some(version), Resume::new());
    }
    assert_eq!(b.current_version(), Some("1"));
    assert_eq!(versions_served(&mut b, 10), [1, 2]);
    b.describe(w(5), "10.0.0.5:80", 8);
    b.new_resume(w(5), Some("2"), Resume::new());
    assert_eq!(b.current_version(), Some("2"));
    assert_eq!(versions_served(&mut b, 12), [3, 4, 5]);
}
