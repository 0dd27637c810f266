//! Hash maps keyed by integers the process chose itself (request numbers,
//! worker ids, spill ids), with a multiplicative hash instead of SipHash:
//! a lookup is a multiply. Never for keys a client controls (class names,
//! addresses): those keep the standard, keyed hash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`IntHasher`].
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Hashes one integer: Fibonacci hashing, its high half folded into the
/// low so that both ends of the hash (bucket index and tag) vary.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; kept correct for any other.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_keys_spread() {
        let mut m: IntMap<u32, u32> = IntMap::default();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m[&i] == i * 2));
        // Low and high bits both vary for neighbouring keys.
        let h = |n: u64| {
            let mut s = IntHasher::default();
            s.write_u64(n);
            s.finish()
        };
        let lows: std::collections::HashSet<u64> = (0..64).map(|n| h(n) & 63).collect();
        let highs: std::collections::HashSet<u64> = (0..64).map(|n| h(n) >> 57).collect();
        assert!(lows.len() > 32 && highs.len() > 32, "{lows:?} {highs:?}");
    }
}
