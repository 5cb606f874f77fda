//! A small seeded pseudo-random number generator for the synthetic season and
//! the Monte Carlo win probability.
//!
//! Written here rather than taken from `rand` so the library keeps one
//! dependency and, more importantly, so its streams can never change under us
//! with a dependency upgrade: the same seed gives the same season and the
//! same simulation on every machine, which snapshot tests and the
//! socceraction cross-check rely on. The generator is xoshiro256++ seeded
//! through SplitMix64, the pairing its authors recommend. It is fast and
//! statistically sound for simulation; it is not cryptographic.

/// A xoshiro256++ generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut mixer = SplitMix64(seed);
        let state = [mixer.next_u64(), mixer.next_u64(), mixer.next_u64(), mixer.next_u64()];
        // SplitMix64 never yields four zero words in a row, but the all-zero
        // state is xoshiro's one fixed point, so rule it out explicitly.
        if state == [0; 4] {
            return Self { state: [1, 0, 0, 0] };
        }
        Self { state }
    }

    /// An independent generator for sub-stream `stream` of `seed`.
    ///
    /// Work split into numbered pieces (a match, a block of simulated
    /// samples) draws each piece from its own stream, so a piece's numbers do
    /// not depend on which thread ran it or on what ran before it.
    pub fn stream(seed: u64, stream: u64) -> Self {
        // Mix the stream number before combining so neighbouring streams of
        // neighbouring seeds do not start from related states.
        let mixed = SplitMix64(stream ^ 0x6a09_e667_f3bc_c909).next_u64();
        Self::new(seed ^ mixed)
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.state;
        let result = s0.wrapping_add(s3).rotate_left(23).wrapping_add(s0);
        let t = s1 << 17;
        let s2 = s2 ^ s0;
        let s3 = s3 ^ s1;
        let s1 = s1 ^ s2;
        let s0 = s0 ^ s3;
        let s2 = s2 ^ t;
        let s3 = s3.rotate_left(45);
        self.state = [s0, s1, s2, s3];
        result
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `(0, 1]`, safe to take the logarithm of.
    pub fn next_f64_open_zero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's method).
    /// Returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut product = u128::from(self.next_u64()) * u128::from(n);
        // Reject the few low products that would make some values more
        // likely than others.
        if (product as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (product as u64) < threshold {
                product = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (product >> 64) as u64
    }
}

/// SplitMix64, used only to spread a seed over xoshiro's 256-bit state.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_output() {
        // First outputs of the reference C implementation for seed 1234567.
        let mut mixer = SplitMix64(1_234_567);
        assert_eq!(mixer.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(mixer.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a: Vec<u64> = (0..4).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(Rng::new(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..4).scan(Rng::new(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(Rng::stream(7, 0), Rng::stream(7, 1));
    }

    #[test]
    fn floats_stay_in_their_intervals_and_below_is_uniform_enough() {
        let mut rng = Rng::new(42);
        let mut buckets = [0u32; 6];
        for _ in 0..60_000 {
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            let g = rng.next_f64_open_zero();
            assert!(g > 0.0 && g <= 1.0);
            buckets[rng.below(6) as usize] += 1;
        }
        // Each bucket expects 10,000; 5 standard deviations is about 456.
        for count in buckets {
            assert!((9_500..=10_500).contains(&count), "bucket count {count}");
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }
}
