//! A count-min sketch of 4-bit counters with periodic halving (the frequency estimate
//! of TinyLFU). It remembers how often keys were asked for, including keys that are
//! not in the cache any more, at four to eight bytes per cached entry.

/// 4-bit counters per entry the sketch is sized for. Eight (four bytes) measured
/// clearly better hit ratios than four on Zipf traces (`benches/engines.rs`) and
/// about as good as sixteen.
const NIBBLES_PER_ENTRY: usize = 8;
/// After this many recorded accesses per sized entry, every counter is halved, so
/// the sketch follows a popularity that changes over time.
const RESET_FACTOR: u64 = 20;
/// Multipliers that derive four independent row indexes from one 64-bit hash.
const SEEDS: [u64; 4] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0x85EB_CA77_C2B2_AE63,
];

#[derive(Debug)]
pub(crate) struct FrequencySketch {
    /// 16 nibbles per word.
    words: Vec<u64>,
    /// log2 of the number of nibbles.
    bits: u32,
    /// Accesses recorded since the last halving.
    additions: u64,
    /// Entries the table is sized for.
    capacity: usize,
}

impl FrequencySketch {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(16).next_power_of_two();
        let nibbles = capacity * NIBBLES_PER_ENTRY;
        Self {
            words: vec![0; nibbles / 16],
            bits: nibbles.trailing_zeros(),
            additions: 0,
            capacity,
        }
    }

    /// Entries the sketch is sized for; the owner grows it when it holds more.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn position(&self, hash: u64, row: usize) -> (usize, u32) {
        let nibble = (hash.wrapping_mul(SEEDS[row]) >> (64 - self.bits)) as usize;
        (nibble / 16, (nibble % 16) as u32 * 4)
    }

    /// Records one access of the key with this hash.
    pub(crate) fn increment(&mut self, hash: u64) {
        let mut added = false;
        for row in 0..SEEDS.len() {
            let (word, shift) = self.position(hash, row);
            let counter = (self.words[word] >> shift) & 0xF;
            if counter < 15 {
                self.words[word] += 1 << shift;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= RESET_FACTOR * self.capacity as u64 {
                self.halve();
            }
        }
    }

    /// The estimated number of recent accesses, 0..=15.
    pub(crate) fn estimate(&self, hash: u64) -> u8 {
        (0..SEEDS.len())
            .map(|row| {
                let (word, shift) = self.position(hash, row);
                ((self.words[word] >> shift) & 0xF) as u8
            })
            .min()
            .unwrap_or(0)
    }

    fn halve(&mut self) {
        for word in &mut self.words {
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.additions /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (i << 29)
    }

    #[test]
    fn frequent_keys_estimate_higher_than_rare_ones() {
        let mut sketch = FrequencySketch::with_capacity(1024);
        for _ in 0..10 {
            sketch.increment(hash(1));
        }
        sketch.increment(hash(2));
        assert!(sketch.estimate(hash(1)) >= 10);
        assert!(sketch.estimate(hash(2)) >= 1);
        assert!(sketch.estimate(hash(1)) > sketch.estimate(hash(2)));
        assert_eq!(sketch.estimate(hash(3)), 0);
    }

    #[test]
    fn counters_saturate_at_fifteen() {
        let mut sketch = FrequencySketch::with_capacity(16);
        for _ in 0..100 {
            sketch.increment(hash(7));
        }
        assert!(sketch.estimate(hash(7)) <= 15);
    }

    #[test]
    fn counters_halve_after_many_additions_so_old_popularity_fades() {
        let mut sketch = FrequencySketch::with_capacity(16);
        for _ in 0..15 {
            sketch.increment(hash(1));
        }
        let before = sketch.estimate(hash(1));
        for i in 100..(100 + RESET_FACTOR * 16) {
            sketch.increment(hash(i));
        }
        assert!(sketch.estimate(hash(1)) < before);
    }
}
