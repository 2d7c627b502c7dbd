//! Learning rate per iteration: linear warm-up, then cosine annealing to zero, with the
//! base rate scaled linearly with the batch size (as in the paper: 0.1 for batch 256).

use serde::{Deserialize, Serialize};

/// A warm-up + cosine schedule over a fixed number of iterations.
///
/// ```
/// use repopt_train::schedule::LrSchedule;
/// let s = LrSchedule::new(0.1, 256, 128, 10, 1, 2);
/// assert!((s.base_lr - 0.05).abs() < 1e-9);         // scaled to batch 128
/// assert!(s.lr_at(0) < s.lr_at(9));                 // warming up over the first epoch
/// assert!((s.lr_at(10) - 0.05).abs() < 1e-6);       // peak right after warm-up
/// assert!(s.lr_at(19) < 0.01);                      // cosine towards zero at the end
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate, already scaled to the batch size.
    pub base_lr: f64,
    /// Warm-up iterations.
    pub warmup_iters: u64,
    /// Total iterations.
    pub total_iters: u64,
}

impl LrSchedule {
    /// `lr` is the rate for batch `reference_batch`; the schedule uses
    /// `lr * batch / reference_batch`, warms up linearly over `warmup_epochs`, then follows a
    /// cosine over the remaining iterations of `epochs`.
    pub fn new(
        lr: f64,
        reference_batch: usize,
        batch: usize,
        iters_per_epoch: u64,
        warmup_epochs: u64,
        epochs: u64,
    ) -> Self {
        let total_iters = (iters_per_epoch * epochs).max(1);
        LrSchedule {
            base_lr: lr * batch as f64 / reference_batch.max(1) as f64,
            warmup_iters: (iters_per_epoch * warmup_epochs).min(total_iters),
            total_iters,
        }
    }

    /// The rate for iteration `iter` (0-based).
    pub fn lr_at(&self, iter: u64) -> f64 {
        if iter < self.warmup_iters {
            return self.base_lr * (iter + 1) as f64 / self.warmup_iters as f64;
        }
        let span = (self.total_iters - self.warmup_iters).max(1) as f64;
        let progress = ((iter - self.warmup_iters) as f64 / span).min(1.0);
        0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_and_cosine_ends_near_zero() {
        let s = LrSchedule::new(0.1, 256, 256, 100, 5, 120);
        assert!((s.lr_at(0) - 0.1 / 500.0).abs() < 1e-12);
        assert!((s.lr_at(249) - 0.05).abs() < 1e-9);
        assert!((s.lr_at(500) - 0.1).abs() < 1e-12);
        let mid = 500 + (12000 - 500) / 2;
        assert!((s.lr_at(mid) - 0.05).abs() < 1e-4);
        assert!(s.lr_at(11999) < 1e-5);
        let no_warmup = LrSchedule::new(0.1, 256, 256, 10, 0, 1);
        assert!((no_warmup.lr_at(0) - 0.1).abs() < 1e-12);
    }
}
