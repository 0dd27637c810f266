//! `BENCH_ROUNDS=N`: each variant measured N times, the variants
//! interleaved (round 1 of every variant, then round 2, …), so that a
//! machine whose speed drifts by ±30% still ranks them. A variant's row is
//! its run with the median requests/s (of an even count, the upper one);
//! the table adds the lowest and highest requests/s and p99 of its rounds.

use crate::Measured;

/// The spread of a variant's rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub rounds: usize,
    pub rate: (f64, f64),
    pub p99: (f64, f64),
}

/// Measure `variants` variants `rounds` times, interleaved; for each, its
/// median run (or the error of its last failed round when none ran) and
/// the spread of its rounds.
pub fn interleave(
    rounds: usize,
    variants: usize,
    mut measure: impl FnMut(usize, usize) -> Result<Measured, String>,
) -> Vec<(Result<Measured, String>, Option<Spread>)> {
    let mut runs: Vec<Vec<Measured>> = (0..variants).map(|_| Vec::new()).collect();
    let mut errors: Vec<Option<String>> = vec![None; variants];
    for round in 0..rounds.max(1) {
        for (v, done) in runs.iter_mut().enumerate() {
            match measure(v, round) {
                Ok(m) => done.push(m),
                Err(e) => errors[v] = Some(e),
            }
        }
    }
    runs.into_iter()
        .zip(errors)
        .map(|(mut done, error)| {
            if done.is_empty() {
                return (Err(error.unwrap_or_else(|| "no round ran".into())), None);
            }
            let span = |f: &dyn Fn(&Measured) -> f64| {
                let v: Vec<f64> = done.iter().map(f).collect();
                (
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                )
            };
            let spread = Spread {
                rounds: done.len(),
                rate: span(&|m| m.load.rate()),
                p99: span(&|m| m.load.percentile_ms(99.0)),
            };
            done.sort_by(|a, b| a.load.rate().total_cmp(&b.load.rate()));
            let median = done.swap_remove(done.len() / 2);
            (Ok(median), (spread.rounds > 1).then_some(spread))
        })
        .collect()
}

/// "12345 (11000-13000)" when there were several rounds.
pub fn with_spread(value: String, range: Option<(f64, f64)>, decimals: usize) -> String {
    match range {
        Some((lo, hi)) => format!("{value} ({lo:.decimals$}-{hi:.decimals$})"),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resumelb::loadgen::LoadResult;
    use std::time::Duration;

    fn m(requests: u64) -> Measured {
        Measured {
            load: LoadResult {
                requests,
                elapsed: Duration::from_secs(1),
                latencies: vec![1000 * requests as u32],
                ..LoadResult::default()
            },
            backends: Vec::new(),
            cpu: Vec::new(),
        }
    }

    #[test]
    fn rounds_interleave_and_the_median_run_stands() {
        let mut order = Vec::new();
        let rates = [[10, 30, 20], [5, 5, 5]];
        let out = interleave(3, 2, |v, r| {
            order.push((v, r));
            if v == 1 && r == 1 {
                return Err("down".into());
            }
            Ok(m(rates[v][r]))
        });
        assert_eq!(order, [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]);
        let (first, spread) = &out[0];
        assert_eq!(first.as_ref().unwrap().load.requests, 20);
        let spread = spread.unwrap();
        assert_eq!((spread.rounds, spread.rate), (3, (10.0, 30.0)));
        assert_eq!(spread.p99, (10.0, 30.0));
        // A failed round leaves the others.
        assert_eq!(out[1].1.unwrap().rounds, 2);
        let one = interleave(1, 1, |_, _| Err::<Measured, _>("no".to_string()));
        assert!(one[0].0.is_err() && one[0].1.is_none());
        assert_eq!(with_spread("7".into(), Some((6.0, 8.5)), 1), "7 (6.0-8.5)");
        assert_eq!(with_spread("7".into(), None, 1), "7");
    }
}
