//! Parameter initialisation as in PyTorch's defaults (and so as in the reference
//! implementation): Kaiming-uniform with `a = sqrt(5)` for convolutions and linear layers,
//! which draws from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, and the same bound for biases.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// A seeded generator with a fixed algorithm, so a seed gives the same weights on every
/// platform and release.
pub struct Init {
    rng: Xoshiro256PlusPlus,
}

impl Init {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Init {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// `len` values from `U(-bound, bound)`.
    pub fn uniform(&mut self, len: usize, bound: f32) -> Vec<f32> {
        (0..len)
            .map(|_| self.rng.random_range(-bound..=bound))
            .collect()
    }

    /// A conv kernel `[co, ci, k, k]` (or a linear weight with `k = 1`): `U(+-1/sqrt(ci k k))`.
    pub fn kernel(&mut self, co: usize, ci: usize, k: usize) -> Vec<f32> {
        self.uniform(co * ci * k * k, 1.0 / ((ci * k * k) as f32).sqrt())
    }

    /// A bias for a layer with `fan_in` inputs.
    pub fn bias(&mut self, len: usize, fan_in: usize) -> Vec<f32> {
        self.uniform(len, 1.0 / (fan_in as f32).sqrt())
    }
}
