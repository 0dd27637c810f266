//! `make bench-pool`: cost of one `get` + `put` on the classic résumé pool
//! with 100 workers and 10,000 classes (each class on 1–3 workers, so each
//! worker is skilled in about 270), a random class per request.

use std::collections::VecDeque;
use std::time::Instant;

use resumelb::pool::{ClassicPool, Pool, Settings, WorkerId};
use resumelb::proto::Resume;
use resumelb::testing::Rng;

const WORKERS: usize = 100;
const CLASSES: usize = 10_000;
const IN_FLIGHT: usize = 200;
const ROUNDS: usize = 2_000_000;

fn main() {
    let mut rng = Rng::new(42);
    let classes: Vec<String> = (0..CLASSES)
        .map(|i| format!("site{i}.example.com"))
        .collect();
    let mut resumes: Vec<Resume> = vec![Resume::new(); WORKERS];
    for class in &classes {
        let n = match rng.below(10) {
            0 => 1,
            1 => 2,
            _ => 3,
        };
        for _ in 0..n {
            let w = rng.below(WORKERS as u64) as usize;
            resumes[w].insert(class.clone(), 1.0 + rng.below(100) as f64 / 10.0);
        }
    }
    let skills: usize = resumes.iter().map(|r| r.len()).sum();
    let mut pool = ClassicPool::new(Settings {
        variance: 4.0,
        ..Settings::default()
    });
    for (i, r) in resumes.into_iter().enumerate() {
        pool.new_resume(WorkerId(i as u64), r);
    }
    let picks: Vec<usize> = (0..ROUNDS)
        .map(|_| rng.below(CLASSES as u64) as usize)
        .collect();

    let mut in_flight: VecDeque<WorkerId> = VecDeque::with_capacity(IN_FLIGHT + 1);
    let run = |pool: &mut ClassicPool, in_flight: &mut VecDeque<WorkerId>, n: usize| {
        for &c in &picks[..n] {
            if let Some(w) = pool.get(&classes[c]) {
                in_flight.push_back(w);
            }
            if in_flight.len() > IN_FLIGHT {
                if let Some(w) = in_flight.pop_front() {
                    pool.put(w);
                }
            }
        }
    };
    // Warm up (also gives unskilled scores where the skilled are too busy).
    run(&mut pool, &mut in_flight, ROUNDS / 10);
    let start = Instant::now();
    run(&mut pool, &mut in_flight, ROUNDS);
    let elapsed = start.elapsed();
    println!(
        "workers {WORKERS}, classes {CLASSES}, skills per worker {:.0}, requests in flight {IN_FLIGHT}, rounds {ROUNDS}",
        skills as f64 / WORKERS as f64
    );
    println!(
        "pool get+put: {:.0} ns",
        elapsed.as_nanos() as f64 / ROUNDS as f64
    );
}
