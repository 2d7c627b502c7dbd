//! Seed derivation for reproducible shuffling and augmentation.
//!
//! Every random decision of an epoch is a pure function of
//! `(seed, epoch, sample index)`: the shuffle gets its own stream and every
//! sample gets its own, so results do not depend on how samples are spread
//! over worker threads or on where a resumed run starts.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// The generator used for shuffling and augmentation.
///
/// A named algorithm rather than `StdRng`/`SmallRng`, whose algorithms may
/// change between `rand` releases: checkpoints must resume bit-identically.
///
/// # Example
///
/// ```
/// use rand::RngExt;
/// let mut rng = repopt_train::data::sample_rng(0, 1, 2);
/// let _coin: bool = rng.random();
/// ```
pub type AugRng = Xoshiro256PlusPlus;

const SHUFFLE_DOMAIN: u64 = 0x5348_5546_464c_4521; // "SHUFFLE!"
const SAMPLE_DOMAIN: u64 = 0x5341_4d50_4c45_2121; // "SAMPLE!!"

/// SplitMix64's finaliser: a bijection that spreads every input bit over
/// the output, so that neighbouring seeds give unrelated streams.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one 64-bit seed (order-sensitive).
///
/// # Example
///
/// ```
/// use repopt_train::data::derive_seed;
/// assert_eq!(derive_seed(&[1, 2]), derive_seed(&[1, 2]));
/// assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
/// ```
pub fn derive_seed(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x0123_4567_89ab_cdef, |h, &p| mix(h ^ mix(p)))
}

/// The generator that shuffles epoch `epoch` of a run seeded with `seed`.
///
/// # Example
///
/// ```
/// use rand::Rng;
/// use repopt_train::data::epoch_rng;
/// assert_eq!(epoch_rng(7, 3).next_u64(), epoch_rng(7, 3).next_u64());
/// ```
pub fn epoch_rng(seed: u64, epoch: u64) -> AugRng {
    AugRng::seed_from_u64(derive_seed(&[SHUFFLE_DOMAIN, seed, epoch]))
}

/// The generator that augments dataset sample `index` in epoch `epoch` of a
/// run seeded with `seed`.
///
/// # Example
///
/// ```
/// use rand::Rng;
/// use repopt_train::data::sample_rng;
/// assert_ne!(sample_rng(7, 3, 0).next_u64(), sample_rng(7, 3, 1).next_u64());
/// ```
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> AugRng {
    AugRng::seed_from_u64(derive_seed(&[SAMPLE_DOMAIN, seed, epoch, index as u64]))
}
