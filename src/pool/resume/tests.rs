//! The résumé pool's rules, one test each, in pool time (no sockets, no
//! clock).

use std::collections::HashMap;

use super::*;

fn w(n: u64) -> WorkerId {
    WorkerId(n)
}

fn ms(n: u64) -> Time {
    Duration::from_millis(n)
}

fn resume(pairs: &[(&str, f64)]) -> Resume {
    pairs.iter().map(|(c, s)| (c.to_string(), *s)).collect()
}

/// A worker: id, threads, résumé.
type Spec<'a> = (u64, usize, &'a [(&'a str, f64)]);

fn pool(workers: &[Spec]) -> ResumePool {
    let mut p = ResumePool::new(Settings::default());
    for &(id, threads, skills) in workers {
        p.describe(w(id), &format!("10.0.0.{id}:8000"), threads);
        p.new_resume(w(id), resume(skills));
    }
    p
}

fn get(p: &mut ResumePool, class: &str, at: Time) -> Option<u64> {
    p.get(&Ask::new(class, at)).map(|w| w.0)
}

fn get_waited(p: &mut ResumePool, class: &str, waited: Duration, at: Time) -> Option<u64> {
    let ask = Ask {
        class,
        waited,
        now: at,
    };
    p.get(&ask).map(|w| w.0)
}

fn put(p: &mut ResumePool, id: u64, class: &str, at: Time, latency: Option<Duration>) {
    p.put(
        w(id),
        &Done {
            class,
            now: at,
            latency,
        },
    );
}

fn in_flight(p: &ResumePool, id: u64) -> i64 {
    p.worker_status(w(id)).map_or(-1, |s| s.backlog)
}

#[test]
fn a_worker_holds_no_more_than_its_bound() {
    // Two threads, no latency measured yet: one queued per thread.
    let mut p = pool(&[(1, 2, &[("a", 100.0)])]);
    for _ in 0..4 {
        assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    }
    assert_eq!(get(&mut p, "a", ms(0)), None, "full: the request waits");
    assert!(!p.has_free());
    // Slow responses (40 ms): one more than its threads covers a 20 ms
    // round trip.
    for _ in 0..4 {
        put(&mut p, 1, "a", ms(10), Some(ms(40)));
    }
    let taken = (0..10)
        .filter(|_| get(&mut p, "a", ms(10)).is_some())
        .count();
    assert_eq!(taken, 3);
    // Fast ones (10 µs): as deep as max_depth allows per thread.
    for _ in 0..3 {
        put(&mut p, 1, "a", ms(11), Some(Duration::from_micros(10)));
    }
    for _ in 0..200 {
        put(&mut p, 1, "a", ms(11), None);
        get(&mut p, "a", ms(11));
        put(&mut p, 1, "a", ms(11), Some(Duration::from_micros(10)));
        get(&mut p, "a", ms(11));
    }
    while get(&mut p, "a", ms(11)).is_some() {}
    let depth = i64::from(crate::pool::Settings::default().max_depth);
    assert_eq!(in_flight(&p, 1), 2 * depth);
}

#[test]
fn the_best_score_wins_and_load_divides_it() {
    let mut p = pool(&[(1, 1, &[("a", 10.0)]), (2, 1, &[("a", 4.0)])]);
    assert_eq!(get(&mut p, "a", ms(0)), Some(1), "10 against 4");
    assert_eq!(get(&mut p, "a", ms(0)), Some(1), "10/2 against 4");
    assert_eq!(get(&mut p, "a", ms(0)), Some(2), "10/3 against 4");
    assert_eq!(p.status().placements.skilled, 3);
}

#[test]
fn lbs_place_new_classes_alike_whatever_the_ids_and_order() {
    let names = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];
    let mut a = ResumePool::new(Settings::default());
    let mut b = ResumePool::new(Settings::default());
    for (i, name) in names.iter().enumerate() {
        a.describe(w(i as u64 + 1), name, 4);
        a.new_resume(w(i as u64 + 1), Resume::new());
    }
    for (i, name) in names.iter().enumerate().rev() {
        b.describe(w(100 + i as u64), name, 4);
        b.new_resume(w(100 + i as u64), Resume::new());
    }
    let mut spread: HashMap<u64, usize> = HashMap::new();
    for c in 0..200 {
        let class = format!("site{c}");
        let pa = get(&mut a, &class, ms(0)).unwrap();
        let pb = get(&mut b, &class, ms(0)).unwrap();
        assert_eq!(pa + 99, pb, "{class}: both LBs pick the same worker");
        *spread.entry(pa).or_default() += 1;
        put(&mut a, pa, &class, ms(0), None);
        put(&mut b, pb, &class, ms(0), None);
    }
    assert_eq!(spread.len(), 4, "every worker gets new classes");
    assert!(spread.values().all(|&n| n > 25), "{spread:?}");
    assert_eq!(a.status().placements.new, 200);
    // A new class sticks to the worker that took it.
    let first = get(&mut a, "site7", ms(0)).unwrap();
    assert_eq!(get(&mut a, "site7", ms(0)), Some(first));
}

#[test]
fn workers_rank_first_for_classes_in_proportion_to_their_threads() {
    let mut p = pool(&[(1, 1, &[]), (2, 2, &[]), (3, 3, &[]), (4, 4, &[])]);
    let mut count = [0usize; 5];
    for c in 0..4000 {
        let class = format!("c{c}");
        let id = get(&mut p, &class, ms(0)).unwrap();
        count[id as usize] += 1;
        put(&mut p, id, &class, ms(0), None);
    }
    for (id, &n) in count.iter().enumerate().skip(1) {
        let share = n as f64 / 4000.0;
        let want = id as f64 / 10.0;
        assert!(
            (share - want).abs() < 0.03,
            "worker {id}: {share} of the classes, not {want}"
        );
    }
}

#[test]
fn a_waiting_request_spills_after_its_time_to_a_free_worker() {
    let mut p = pool(&[(1, 1, &[("a", 100.0)]), (2, 1, &[])]);
    // Worker 1 holds its bound (one thread, one queued).
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, "a", ms(0)), None, "its skilled worker is full");
    // No cold request measured yet: 2 × 50 ms.
    let spill = p.spill_after("a").unwrap();
    assert_eq!(spill, ms(100));
    assert_eq!(get_waited(&mut p, "a", ms(99), ms(0)), None);
    assert_eq!(get_waited(&mut p, "a", spill, ms(0)), Some(2));
    assert_eq!(p.status().placements.spilled, 1);
    // Worker 2 now counts as skilled at "a" (half the best score): the
    // next request goes to it at once while worker 1 is full.
    assert_eq!(get(&mut p, "a", ms(0)), Some(2));
    // The cold request's latency sets the spill time: 2 × 30 ms.
    put(&mut p, 2, "a", ms(30), Some(ms(30)));
    assert_eq!(p.spill_after("a"), Some(ms(60)));
    // At least 20 ms, at most 2 s.
    p.update_settings(&Settings {
        spill_factor: 0.0,
        ..Settings::default()
    });
    assert_eq!(p.spill_after("a"), Some(MIN_SPILL));
    p.update_settings(&Settings {
        spill_factor: 1000.0,
        ..Settings::default()
    });
    assert_eq!(p.spill_after("a"), Some(MAX_SPILL));
    assert_eq!(p.spill_after("unknown"), None);
}

/// Serve `n` requests of `class`, answering each at once with the latency
/// of the worker that got it.
fn serve(p: &mut ResumePool, class: &str, n: usize, at: Time, latency: impl Fn(u64) -> u64) {
    for _ in 0..n {
        let id = get(p, class, at).unwrap();
        put(p, id, class, at, Some(ms(latency(id))));
    }
}

#[test]
fn a_worker_much_slower_than_another_at_a_class_is_passed_over() {
    // Worker 2 has the better score, but is 60 times slower at "a" than
    // worker 1, which has served it (worker 2 away meanwhile).
    let mut p = pool(&[(1, 4, &[("a", 100.0)]), (2, 4, &[("a", 200.0)])]);
    let latency = |id| if id == 1 { 5 } else { 300 };
    p.park(w(2));
    serve(&mut p, "a", 5, ms(0), latency);
    p.new_resume(w(2), resume(&[("a", 200.0)]));
    let mut to_two = 0;
    for i in 0..40 {
        let id = get(&mut p, "a", ms(i)).unwrap();
        to_two += usize::from(id == 2);
        put(&mut p, id, "a", ms(i), Some(ms(latency(id))));
    }
    assert_eq!(to_two, 3, "passed over once measured");
    // Its measure goes stale: one request measures it again, and while it
    // is out the others go to worker 1.
    // (Worker 1 last measured at 39 ms is still fresh at 5.02 s.)
    let later = ms(5_020);
    assert_eq!(get(&mut p, "a", later), Some(2), "one request to measure");
    assert_eq!(get(&mut p, "a", later), Some(1));
    assert_eq!(get(&mut p, "a", later), Some(1));
    put(&mut p, 2, "a", later, Some(ms(300)));
    assert_eq!(get(&mut p, "a", later), Some(1), "still slow");
    // A slow worker takes over no class and comes last for spills.
    let (w1, w2) = (p.by_id[&w(1)], p.by_id[&w(2)]);
    assert!(p.w(w2).slow(later) && !p.w(w1).slow(later));
}

#[test]
fn a_worker_new_to_a_class_may_be_as_slow_as_a_cold_request() {
    let mut p = pool(&[(1, 1, &[("a", 100.0)]), (2, 1, &[])]);
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    // Worker 2 takes "a" cold (a spill): 40 ms, the cost of a cold
    // request; worker 1 answers in 2 ms.
    assert_eq!(get_waited(&mut p, "a", ms(500), ms(0)), Some(2));
    put(&mut p, 2, "a", ms(40), Some(ms(40)));
    put(&mut p, 1, "a", ms(40), Some(ms(2)));
    put(&mut p, 1, "a", ms(40), Some(ms(2)));
    // Warming up at 50 ms (over 4 × worker 1's 2 ms, under 4 × the cold
    // cost) it still takes what worker 1 cannot, until it has 20 samples.
    let mut t = 40;
    let mut to_two = 0;
    for _ in 0..30 {
        t += 1;
        assert_eq!(get(&mut p, "a", ms(t)), Some(1));
        assert_eq!(get(&mut p, "a", ms(t)), Some(1));
        if get(&mut p, "a", ms(t)) == Some(2) {
            to_two += 1;
            put(&mut p, 2, "a", ms(t), Some(ms(50)));
        }
        put(&mut p, 1, "a", ms(t), Some(ms(2)));
        put(&mut p, 1, "a", ms(t), Some(ms(2)));
    }
    assert_eq!(to_two, WARM_SAMPLES as usize - 1, "then passed over");
}

#[test]
fn a_stalled_worker_takes_no_new_requests() {
    let mut p = pool(&[(1, 4, &[("a", 100.0)]), (2, 4, &[("a", 10.0)])]);
    // Worker 1 answers in 1 ms as a rule.
    serve(&mut p, "a", 5, ms(0), |_| 1);
    assert_eq!(get(&mut p, "a", ms(100)), Some(1));
    assert_eq!(get(&mut p, "a", ms(150)), Some(1), "busy, not stalled");
    // Nothing finished for over 100 ms (10 × its latency, at least
    // 100 ms): the next request goes to worker 2.
    assert_eq!(get(&mut p, "a", ms(201)), Some(2));
    put(&mut p, 1, "a", ms(300), Some(ms(200)));
    assert_eq!(get(&mut p, "a", ms(300)), Some(1), "it finished one");
}

#[test]
fn an_idle_worker_takes_over_a_class_whose_requests_wait() {
    let classes = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let skills: Vec<(&str, f64)> = classes.iter().map(|&c| (c, 100.0)).collect();
    let mut p = pool(&[(1, 1, &skills), (2, 1, &[])]);
    // Worker 1 is kept at its bound for a second: worker 2 idles.
    let mut t = 0;
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    while t < 1000 {
        t += 50;
        put(&mut p, 1, "a", ms(t), Some(ms(50)));
        assert_eq!(get(&mut p, "a", ms(t)), Some(1));
    }
    // Its classes wait for it; worker 2 (a home of every class: there are
    // two workers) takes one over, then no other for half a second.
    let first = classes
        .iter()
        .find(|c| get(&mut p, c, ms(t)).is_some())
        .expect("a class taken over");
    assert_eq!(p.status().placements.moved, 1);
    assert_eq!(get(&mut p, first, ms(t)), Some(2), "it stays with worker 2");
    put(&mut p, 2, first, ms(t), Some(ms(1)));
    put(&mut p, 2, first, ms(t), Some(ms(1)));
    let other = classes.iter().find(|c| *c != first).unwrap();
    assert_eq!(get(&mut p, other, ms(t + 100)), None, "one class at a time");
    assert_eq!(get(&mut p, other, ms(t + 600)), Some(2));
}

#[test]
fn a_new_resume_replaces_scores_and_keeps_lent_classes() {
    let mut p = pool(&[(1, 4, &[])]);
    assert_eq!(get(&mut p, "x", ms(0)), Some(1), "x is lent to it");
    p.new_resume(w(1), resume(&[("y", 3.0)]));
    assert_eq!(p.worker_status(w(1)).unwrap().resume_size, 2);
    // A résumé without y drops it; x, still lent, stays.
    p.new_resume(w(1), Resume::new());
    assert_eq!(p.worker_status(w(1)).unwrap().resume_size, 1);
    assert!(p.classes.contains_key("x") && !p.classes.contains_key("y"));
    // The résumé names x: its score now.
    p.new_resume(w(1), resume(&[("x", 7.0)]));
    let skill = p.classes["x"].skills[0];
    assert!(!skill.lent && skill.score == 7.0);
}

#[test]
fn removed_and_parked_workers_get_nothing_and_puts_balance() {
    let mut p = pool(&[(1, 2, &[("a", 10.0)]), (2, 2, &[("a", 5.0)])]);
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    p.remove(w(1));
    assert_eq!(p.len(), 1);
    assert_eq!(get(&mut p, "a", ms(0)), Some(2));
    put(&mut p, 1, "a", ms(1), None);
    assert!(p.worker_status(w(1)).is_none(), "forgotten once idle");
    put(&mut p, 2, "a", ms(1), None);
    assert_eq!(p.status().backlog, 0);
    p.park(w(2));
    assert_eq!(p.len(), 0);
    assert_eq!(get(&mut p, "a", ms(2)), None);
    p.new_resume(w(2), resume(&[("a", 5.0)]));
    assert_eq!(get(&mut p, "a", ms(2)), Some(2));
    assert_eq!(p.status().workers.len(), 1);
}

#[test]
fn at_equal_scores_the_worker_whose_resume_names_the_class_wins() {
    let mut p = pool(&[(1, 2, &[]), (2, 2, &[("a", 50.0)])]);
    p.lend(p.by_id[&w(1)], "a", 50.0);
    for _ in 0..2 {
        let id = get(&mut p, "a", ms(0)).unwrap();
        assert_eq!(id, 2);
        put(&mut p, id, "a", ms(0), None);
    }
}

/// A class worker 1 ranks first for against worker 2, both with `threads`.
fn ranked_first_by_worker_1(threads: f64) -> String {
    (0..)
        .map(|i| format!("n{i}"))
        .find(|c| rendezvous(c, "10.0.0.1:8000", threads) > rendezvous(c, "10.0.0.2:8000", threads))
        .expect("some class ranks worker 1 first")
}

#[test]
fn a_new_class_waits_for_the_worker_ranking_first_for_it() {
    let mut p = pool(&[(1, 1, &[("a", 10.0)]), (2, 1, &[])]);
    let class = ranked_first_by_worker_1(1.0);
    // Worker 1 at its bound (one thread, one queued): the new class waits
    // for it rather than go to worker 2, so that every LB puts it there.
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, &class, ms(0)), None);
    put(&mut p, 1, "a", ms(1), Some(ms(1)));
    assert_eq!(get(&mut p, &class, ms(1)), Some(1));
    assert_eq!(p.status().placements.new, 0, "it was known once it waited");
}

#[test]
fn a_new_class_skips_a_worker_loaded_over_the_pools_mean() {
    let mut p = pool(&[(1, 2, &[("a", 10.0)]), (2, 2, &[])]);
    let class = ranked_first_by_worker_1(2.0);
    // Worker 1 busy (2 of 2 threads) for two seconds, worker 2 idle.
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    assert_eq!(get(&mut p, "a", ms(0)), Some(1));
    put(&mut p, 1, "a", ms(2000), Some(ms(2000)));
    assert_eq!(get(&mut p, "a", ms(2000)), Some(1));
    assert_eq!(get(&mut p, &class, ms(2000)), Some(2));
}
