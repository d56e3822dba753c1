//! The simulator's only source of randomness: a seeded SplitMix64 generator.

/// Deterministic pseudo-random numbers from a seed.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

/// A `SimRng` an engine can draw its ids and epochs from (`Config::random`).
#[derive(Debug)]
pub struct SharedRng(std::sync::Mutex<SimRng>);

impl SharedRng {
    /// A shared generator for `seed`.
    pub fn new(seed: u64) -> SharedRng {
        SharedRng(std::sync::Mutex::new(SimRng::new(seed)))
    }
}

impl meridian::RandomSource for SharedRng {
    fn next_u64(&self) -> u64 {
        self.0.lock().map_or(0, |mut r| r.next_u64())
    }
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x6A09_E667_F3BC_C908)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}
