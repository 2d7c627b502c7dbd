//! What every numeric setting accepts, defined once: the command line's parsers, the
//! configuration files' checks and the architecture's validation all read these, so a flag
//! and the key it sets can never disagree, and every refusal reads the same way:
//! `NAME must be in RANGE, got VALUE`.
//!
//! Also the byte limits sizes are held to before anything is allocated: a size is computed
//! with checked arithmetic first, so a setting whose arrays cannot exist is an error naming
//! the size and the limit instead of an overflow or an aborted allocation.
//!
//! ```
//! use repopt_models::domain::{MOMENTUM, NUM_BLOCKS};
//! assert_eq!(MOMENTUM.check("momentum", 0.9), Ok(0.9));
//! assert_eq!(
//!     MOMENTUM.check("--momentum", 1.5).unwrap_err(),
//!     "--momentum must be in [0, 1), got 1.5"
//! );
//! assert_eq!(
//!     NUM_BLOCKS.parse("--num-blocks", "x").unwrap_err(),
//!     "--num-blocks must be a number in [1, 128], got 'x'"
//! );
//! ```

use std::fmt;
use std::str::FromStr;

/// The one phrasing of every refusal: `NAME must be EXPECTED, got GOT`.
///
/// ```
/// use repopt_models::domain::must_be;
/// assert_eq!(must_be("--out", "a non-empty path", "''"), "--out must be a non-empty path, got ''");
/// ```
pub fn must_be(name: &str, expected: impl fmt::Display, got: impl fmt::Display) -> String {
    format!("{name} must be {expected}, got {got}")
}

/// A value a [`Domain`] can bound: a number that parses and prints.
///
/// ```
/// use repopt_models::domain::Bounded;
/// assert!(!f32::NAN.is_real() && 3usize.is_real());
/// assert_eq!(1e30f32.show(), "1e30");
/// assert_eq!(0.25f64.show(), "0.25");
/// ```
pub trait Bounded: Copy + PartialOrd + fmt::Display + FromStr {
    /// Whether the value is a real number (false for NaN and the infinities).
    fn is_real(self) -> bool;
    /// The value as messages print it (floats far from 1 in exponent form).
    fn show(self) -> String {
        self.to_string()
    }
}

macro_rules! bounded_int {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            fn is_real(self) -> bool {
                true
            }
        }
    )*};
}
bounded_int!(usize, u64, u32);

macro_rules! bounded_float {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            fn is_real(self) -> bool {
                self.is_finite()
            }
            fn show(self) -> String {
                let a = self.abs();
                // 1e30 reads better than its thirty-one digits.
                if a.is_finite() && a != 0.0 && !(1e-4..1e6).contains(&a) {
                    format!("{self:e}")
                } else {
                    self.to_string()
                }
            }
        }
    )*};
}
bounded_float!(f32, f64);

/// An interval of accepted values, closed or open at each end and possibly unbounded
/// above; NaN and the infinities are never in it.
///
/// ```
/// use repopt_models::domain::Domain;
/// let share = Domain::closed_open(0.0f32, 1.0);
/// assert!(share.contains(0.0) && !share.contains(1.0) && !share.contains(f32::NAN));
/// assert_eq!(share.check("dropout", 2.0).unwrap_err(), "dropout must be in [0, 1), got 2");
/// assert_eq!(Domain::at_least(1u64).to_string(), "[1, inf)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Domain<T> {
    min: T,
    min_open: bool,
    max: Option<T>,
    max_open: bool,
}

impl<T: Bounded> Domain<T> {
    /// `[min, max]`.
    pub const fn closed(min: T, max: T) -> Self {
        Domain {
            min,
            min_open: false,
            max: Some(max),
            max_open: false,
        }
    }

    /// `[min, max)`.
    pub const fn closed_open(min: T, max: T) -> Self {
        Domain {
            min,
            min_open: false,
            max: Some(max),
            max_open: true,
        }
    }

    /// `(min, max]`.
    pub const fn open_closed(min: T, max: T) -> Self {
        Domain {
            min,
            min_open: true,
            max: Some(max),
            max_open: false,
        }
    }

    /// `[min, inf)`.
    pub const fn at_least(min: T) -> Self {
        Domain {
            min,
            min_open: false,
            max: None,
            max_open: true,
        }
    }

    /// `(min, inf)`.
    pub const fn above(min: T) -> Self {
        Domain {
            min,
            min_open: true,
            max: None,
            max_open: true,
        }
    }

    /// Whether `v` is accepted.
    pub fn contains(&self, v: T) -> bool {
        let above = if self.min_open {
            v > self.min
        } else {
            v >= self.min
        };
        let below = match self.max {
            None => true,
            Some(m) if self.max_open => v < m,
            Some(m) => v <= m,
        };
        v.is_real() && above && below
    }

    /// `v`, or `NAME must be in RANGE, got V`.
    pub fn check(&self, name: &str, v: T) -> Result<T, String> {
        if self.contains(v) {
            Ok(v)
        } else {
            Err(must_be(name, format_args!("in {self}"), v.show()))
        }
    }

    /// Every value of `values` (a list setting), refusing the first outside the domain.
    pub fn check_all(&self, name: &str, values: &[T]) -> Result<(), String> {
        values
            .iter()
            .try_for_each(|&v| self.check(name, v).map(|_| ()))
    }

    /// Parses `text` and checks it; text that is no number is refused the same way.
    pub fn parse(&self, name: &str, text: &str) -> Result<T, String> {
        match text.trim().parse::<T>() {
            Ok(v) => self.check(name, v),
            Err(_) => Err(must_be(
                name,
                format_args!("a number in {self}"),
                format_args!("'{text}'"),
            )),
        }
    }
}

impl<T: Bounded> fmt::Display for Domain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = if self.min_open { '(' } else { '[' };
        match self.max {
            Some(m) => {
                let close = if self.max_open { ')' } else { ']' };
                write!(f, "{open}{}, {}{close}", self.min.show(), m.show())
            }
            None => write!(f, "{open}{}, inf)", self.min.show()),
        }
    }
}

/// Refuses an empty path or name: `NAME must be a non-empty path, got ''`.
///
/// ```
/// use repopt_models::domain::non_empty;
/// assert!(non_empty("--out", "path", "runs/a").is_ok());
/// assert_eq!(non_empty("out", "path", " ").unwrap_err(), "out must be a non-empty path, got ' '");
/// ```
pub fn non_empty(name: &str, kind: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(must_be(
            name,
            format_args!("a non-empty {kind}"),
            format_args!("'{value}'"),
        ))
    } else {
        Ok(())
    }
}

// Architecture.

/// Blocks per stage: the presets use up to 24; past 128 a stage is no VGG anyone trains.
pub const NUM_BLOCKS: Domain<usize> = Domain::closed(1, 128);
/// Width multipliers: the presets use up to 5; 16 gives 8192 channels in the last stage.
pub const WIDTH: Domain<f32> = Domain::open_closed(0.0, 16.0);
/// Strides of the first block of each stage.
pub const STRIDE: Domain<usize> = Domain::closed(1, 2);
/// Channels of the input images.
pub const IN_CHANNELS: Domain<usize> = Domain::closed(1, 1024);
/// Classes of the classifier.
pub const CLASSES: Domain<usize> = Domain::closed(1, 1 << 20);
/// Square input resolution (ImageNet models use 224 to 320).
pub const RESOLUTION: Domain<usize> = Domain::closed(1, 4096);

// Optimisation.

/// Learning rate (unbounded above: the divergence guard handles the absurd ones).
pub const LR: Domain<f64> = Domain::above(0.0);
/// Batch size a learning rate is given for.
pub const LR_BATCH: Domain<usize> = Domain::closed(1, 1 << 20);
/// SGD momentum.
pub const MOMENTUM: Domain<f32> = Domain::closed_open(0.0, 1.0);
/// Weight decay.
pub const WEIGHT_DECAY: Domain<f32> = Domain::closed(0.0, 1.0);
/// Label smoothing.
pub const LABEL_SMOOTHING: Domain<f32> = Domain::closed_open(0.0, 1.0);
/// Gradient-norm clipping threshold.
pub const CLIP_GRAD: Domain<f32> = Domain::above(0.0);

// Schedule and data.

/// Epochs (also of warm-up, which may be 0).
pub const EPOCHS: Domain<u64> = Domain::closed(1, 100_000);
/// Warm-up epochs.
pub const WARMUP_EPOCHS: Domain<u64> = Domain::closed(0, 100_000);
/// Training, evaluation and benchmark batch sizes.
pub const BATCH: Domain<usize> = Domain::closed(1, 1 << 16);
/// Loader threads (0: one per core).
pub const WORKERS: Domain<usize> = Domain::closed(0, 1024);
/// Runs a pipeline trains at once (`--jobs`).
pub const JOBS: Domain<usize> = Domain::closed(1, 64);
/// Image counts of `train_limit` and `test_limit`.
pub const IMAGE_LIMIT: Domain<usize> = Domain::at_least(1);
/// Steps between logged losses, and the step count of `stop_after_steps`.
pub const STEPS: Domain<u64> = Domain::at_least(1);

// Benchmarks and conversion.

/// Side of the benchmark's square matmul (16384: three 1 GiB matrices).
pub const MATMUL: Domain<usize> = Domain::closed(1, 1 << 14);
/// Parameter elements of the update benchmark (1 GiB per tensor).
pub const UPDATE_PARAMS: Domain<usize> = Domain::closed(1, 1 << 28);
/// The engine memory limit `bench maxbatch` plans against: 1 MiB to 1 TiB.
pub const MEMORY_LIMIT: Domain<u64> = Domain::closed(1 << 20, 1 << 40);
/// Images of `repopt convert`'s equivalence check.
pub const CHECK_BATCH: Domain<usize> = Domain::closed(1, 4096);

// Sizes.

/// The largest single array (a weight, a batch of images) built for one device tensor:
/// Vulkan counts a storage buffer's range in 32 bits, so no larger tensor can be bound there.
pub const MAX_TENSOR_BYTES: u64 = 1 << 32;
/// The largest model, all parameter tensors together: 4 G parameters, some 50 times the
/// largest preset, before gradients and optimizer state multiply it.
pub const MAX_MODEL_BYTES: u64 = 1 << 34;

/// Bytes of an f32 array of shape `dims`, or None when the product overflows.
///
/// ```
/// use repopt_models::domain::f32_bytes;
/// assert_eq!(f32_bytes(&[2, 3, 4]), Some(96));
/// assert_eq!(f32_bytes(&[usize::MAX, 2]), None);
/// ```
pub fn f32_bytes(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
}

/// `what` (needing `bytes`, None past 2^64) within `limit`, or a message naming both.
///
/// ```
/// use repopt_models::domain::within;
/// assert!(within("a batch", Some(16), 32).is_ok());
/// assert_eq!(
///     within("a batch", Some(64), 32).unwrap_err(),
///     "a batch needs 64 bytes, more than the limit of 32 bytes"
/// );
/// ```
pub fn within(what: &str, bytes: Option<u64>, limit: u64) -> Result<u64, String> {
    match bytes {
        Some(b) if b <= limit => Ok(b),
        Some(b) => Err(format!(
            "{what} needs {b} bytes, more than the limit of {limit} bytes"
        )),
        None => Err(format!(
            "{what} needs more than 2^64 bytes, more than the limit of {limit} bytes"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_print_and_test_their_ends() {
        assert_eq!(MOMENTUM.to_string(), "[0, 1)");
        assert_eq!(WIDTH.to_string(), "(0, 16]");
        assert_eq!(STEPS.to_string(), "[1, inf)");
        assert_eq!(LR.to_string(), "(0, inf)");
        assert!(MOMENTUM.contains(0.0) && !MOMENTUM.contains(1.0));
        assert!(!WIDTH.contains(0.0) && WIDTH.contains(16.0));
        assert!(!LR.contains(f64::INFINITY) && !LR.contains(f64::NAN) && LR.contains(1e300));
        assert!(STEPS.contains(u64::MAX) && !STEPS.contains(0));
    }

    #[test]
    fn refusals_name_the_setting_the_range_and_the_value() {
        assert_eq!(
            LR.check("lr", f64::NAN).unwrap_err(),
            "lr must be in (0, inf), got NaN"
        );
        assert_eq!(
            WIDTH.check_all("widths", &[1.0, 1e30]).unwrap_err(),
            "widths must be in (0, 16], got 1e30"
        );
        assert_eq!(
            BATCH.parse("--batch-size", "-1").unwrap_err(),
            "--batch-size must be a number in [1, 65536], got '-1'"
        );
        assert_eq!(EPOCHS.parse("--epochs", " 3 "), Ok(3));
    }

    #[test]
    fn sizes_are_computed_without_wrapping() {
        assert_eq!(f32_bytes(&[]), Some(4));
        assert_eq!(f32_bytes(&[1 << 40, 1 << 30]), None);
        assert!(
            within("x", None, 8)
                .unwrap_err()
                .contains("more than 2^64 bytes")
        );
    }
}
