//! The workloads. W1: sites with zipf popularity, each request naming a
//! few objects of its site, ids drawn as ⌊|N(0, σ)|⌋. W2: a tiny fixed
//! response, for raw overhead.

use std::sync::Arc;
use std::time::Duration;

use resumelb::loadgen::{RequestMaker, Rng};

/// One W1 regime.
#[derive(Debug, Clone, Copy)]
pub struct Regime {
    pub name: &'static str,
    pub what: &'static str,
    pub zipf: f64,
    pub objects_per_request: usize,
    pub miss: Duration,
}

pub const REGIMES: [Regime; 3] = [
    Regime {
        name: "W1a",
        what: "zipf 1.0, 4 objects, miss 5 ms (CPU-bound)",
        zipf: 1.0,
        objects_per_request: 4,
        miss: Duration::from_millis(5),
    },
    Regime {
        name: "W1b",
        what: "zipf 1.0, 8 objects, miss 20 ms (miss-heavy)",
        zipf: 1.0,
        objects_per_request: 8,
        miss: Duration::from_millis(20),
    },
    Regime {
        name: "W1c",
        what: "zipf 1.4, 4 objects, miss 10 ms (very skewed)",
        zipf: 1.4,
        objects_per_request: 4,
        miss: Duration::from_millis(10),
    },
];

pub const SITES: usize = 60;
pub const SIGMA: f64 = 100.0;

/// Draws ranks 0…n−1 with probability ∝ 1/(rank+1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

/// ⌊|N(0, σ)|⌋ by Box–Muller.
pub fn half_normal(rng: &mut Rng, sigma: f64) -> u64 {
    let u1 = rng.unit().max(f64::MIN_POSITIVE);
    let u2 = rng.unit();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (z.abs() * sigma).floor() as u64
}

/// W1 requests: Host `sN.example`, path `/id_id_…`.
pub fn w1_maker(regime: Regime) -> Arc<RequestMaker> {
    let zipf = Zipf::new(SITES, regime.zipf);
    Arc::new(move |rng: &mut Rng| {
        let site = zipf.sample(rng);
        let ids: Vec<String> = (0..regime.objects_per_request)
            .map(|_| half_normal(rng, SIGMA).to_string())
            .collect();
        (format!("s{site}.example"), format!("/{}", ids.join("_")))
    })
}

/// W2 requests: one host, no objects.
pub fn w2_maker() -> Arc<RequestMaker> {
    Arc::new(|_: &mut Rng| ("tiny.example".to_string(), "/".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_ranks_follow_the_law() {
        let z = Zipf::new(60, 1.0);
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 60];
        for _ in 0..200_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // Rank 1 about twice rank 2 and ten times rank 10.
        let r = |a: usize, b: usize| f64::from(counts[a]) / f64::from(counts[b]);
        assert!((1.8..2.2).contains(&r(0, 1)), "{}", r(0, 1));
        assert!((8.5..11.5).contains(&r(0, 9)), "{}", r(0, 9));
        assert!(counts.iter().all(|&c| c > 0));
    }

    #[test]
    fn object_ids_are_half_normal() {
        let mut rng = Rng::new(2);
        let ids: Vec<u64> = (0..100_000).map(|_| half_normal(&mut rng, 100.0)).collect();
        let within = ids.iter().filter(|&&i| i < 100).count() as f64 / ids.len() as f64;
        // P(|Z| < 1) ≈ 0.683.
        assert!((0.67..0.70).contains(&within), "{within}");
        let mean = ids.iter().sum::<u64>() as f64 / ids.len() as f64;
        // E|Z|·σ ≈ 79.8, less ~0.5 for the floor.
        assert!((77.0..81.0).contains(&mean), "{mean}");
    }

    #[test]
    fn w1_requests_name_a_site_and_objects() {
        let make = w1_maker(REGIMES[1]);
        let mut rng = Rng::new(3);
        let (host, path) = make(&mut rng);
        assert!(host.starts_with('s') && host.ends_with(".example"));
        assert_eq!(path.trim_start_matches('/').split('_').count(), 8);
    }
}
