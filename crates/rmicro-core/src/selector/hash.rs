//! Hashing for the selector: a consistent-hash ring, and a fast per-thread random source.

use std::cell::Cell;

/// Virtual points per node on the ring: enough for an even spread with a few nodes.
const POINTS_PER_NODE: usize = 160;

/// FNV-1a, then a splitmix64 finalizer so nearby inputs land far apart.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A consistent-hash ring over node ids; points map to node indexes.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// Builds the ring for nodes with these ids (index = position in `ids`).
    pub(crate) fn new<'a>(ids: impl Iterator<Item = &'a str>) -> Self {
        let mut points = Vec::new();
        for (index, id) in ids.enumerate() {
            for point in 0..POINTS_PER_NODE {
                points.push((hash64(format!("{id}#{point}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The first node clockwise from `key`'s point that `allowed` accepts.
    pub(crate) fn lookup(&self, key: &str, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = hash64(key.as_bytes());
        let start = self.points.partition_point(|(p, _)| *p < h);
        (0..self.points.len())
            .map(|i| self.points[(start + i) % self.points.len()].1)
            .find(|&index| allowed(index))
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let id = uuid::Uuid::new_v4();
    hash64(id.as_bytes()) | 1
}

/// A uniform random number in `0..n` (xorshift64*; not for cryptography).
pub(crate) fn random_below(n: usize) -> usize {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((u128::from(r) * n as u128) >> 64) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stick_and_only_about_one_nth_move_when_a_node_leaves() {
        let ids = ["n-a", "n-b", "n-c", "n-d"];
        let ring = Ring::new(ids.iter().copied());
        let keys: Vec<String> = (0..4000).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| ring.lookup(k, |_| true).unwrap())
            .collect();
        // Same ring, same answers.
        for (k, b) in keys.iter().zip(&before) {
            assert_eq!(ring.lookup(k, |_| true), Some(*b));
        }
        // Node 2 leaves: only its keys move.
        let after: Vec<usize> = keys
            .iter()
            .map(|k| ring.lookup(k, |i| i != 2).unwrap())
            .collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned_by_2 = before.iter().filter(|&&b| b == 2).count();
        assert_eq!(moved, owned_by_2, "keys of other nodes moved");
        let share = moved as f64 / keys.len() as f64;
        assert!((0.15..0.35).contains(&share), "moved share {share}");
        // The spread is even enough: every node owns 15%..35%.
        for node in 0..4 {
            let owned = before.iter().filter(|&&b| b == node).count() as f64 / keys.len() as f64;
            assert!((0.15..0.35).contains(&owned), "node {node} owns {owned}");
        }
    }

    #[test]
    fn random_below_stays_in_range_and_covers_it() {
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[random_below(5)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }
}
