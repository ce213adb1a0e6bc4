//! Deterministic key-popularity distributions for benchmarks and hit-ratio tests, so
//! every engine and every run sees the same trace.

/// A Zipf(s) sampler over ranks `0..n` by inverse CDF: rank 0 is the most popular.
/// Costs 8 bytes per rank and a binary search per draw; fine up to tens of millions
/// of keys.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Shared, so many workers can draw from one table (`with_seed`) without copying it.
    cdf: std::sync::Arc<[f64]>,
    rng: SplitMix64,
}

impl Zipf {
    /// `n` ranks, exponent `s` (0.99 is the classic skewed cache workload), a seed.
    pub fn new(n: usize, s: f64, seed: u64) -> Self {
        assert!(n > 0, "Zipf needs at least one rank");
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= total);
        Self {
            cdf: cdf.into(),
            rng: SplitMix64(seed),
        }
    }

    /// The same distribution drawn with another seed, sharing the table: one per
    /// benchmark connection costs no extra memory.
    pub fn with_seed(&self, seed: u64) -> Self {
        Self {
            cdf: self.cdf.clone(),
            rng: SplitMix64(seed),
        }
    }

    /// The next rank.
    pub fn next_rank(&mut self) -> u64 {
        let u = self.rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

/// A tiny, fast, seedable generator (SplitMix64); statistical quality is ample for
/// choosing keys, and it needs no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_rank_zero_is_drawn_most_and_the_trace_is_repeatable() {
        let draw = |seed| {
            let mut zipf = Zipf::new(1_000, 0.99, seed);
            (0..10_000).map(|_| zipf.next_rank()).collect::<Vec<_>>()
        };
        let trace = draw(7);
        assert_eq!(trace, draw(7));
        let zeros = trace.iter().filter(|&&r| r == 0).count();
        let tens = trace.iter().filter(|&&r| r == 10).count();
        assert!(zeros > 5 * tens, "{zeros} vs {tens}");
        assert!(trace.iter().all(|&r| r < 1_000));
    }
}
