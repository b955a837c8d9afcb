//! Deterministic randomness: a stable hash of labelled parts, and a
//! splitmix64 stream. Written out here rather than taken from a crate so
//! that the same seed gives the same fleet and payloads on every version.

/// A 64-bit hash of `parts` (FNV-1a with a separator between parts, then
/// the splitmix64 finaliser to spread the bits).
pub fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A splitmix64 stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A stream keyed by labelled parts.
    pub fn keyed(parts: &[&[u8]]) -> Rng {
        Rng(hash(parts))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_parts_same_hash_and_parts_are_separated() {
        assert_eq!(hash(&[b"a", b"bc"]), hash(&[b"a", b"bc"]));
        assert_ne!(hash(&[b"a", b"bc"]), hash(&[b"ab", b"c"]));
        let mut r = Rng::new(7);
        let u = r.unit();
        assert!((0.0..1.0).contains(&u));
        assert!(r.below(10) < 10);
    }
}
