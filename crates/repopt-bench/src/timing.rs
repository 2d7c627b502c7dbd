//! Timing GPU work honestly: warm-up excluded, every timed region ends in a device sync,
//! enough repetitions per sample to dwarf the sync's own cost, and the median of samples.

use std::time::Instant;

use repopt_tensor::{Gpu, Result};

/// Median and spread of a timed region, per repetition.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median seconds per repetition.
    pub median_s: f64,
    /// Fastest sample, seconds per repetition.
    pub min_s: f64,
    /// Repetitions per sample.
    pub reps_per_sample: usize,
    /// Samples taken.
    pub samples: usize,
}

/// How long to time.
#[derive(Clone, Copy, Debug)]
pub struct TimingBudget {
    /// Untimed runs before measuring (pipeline compilation, pool warm-up).
    pub warmup: usize,
    /// Timed samples; the median is reported.
    pub samples: usize,
    /// Minimum seconds one sample should last (repetitions are added until it does).
    pub min_sample_s: f64,
}

impl Default for TimingBudget {
    fn default() -> Self {
        TimingBudget {
            warmup: 2,
            samples: 5,
            min_sample_s: 0.05,
        }
    }
}

impl TimingBudget {
    /// A short budget for smoke runs and tests.
    pub fn quick() -> Self {
        TimingBudget {
            warmup: 1,
            samples: 2,
            min_sample_s: 0.0,
        }
    }
}

/// Times `f` (which records GPU work) as described in the module docs.
pub fn time_gpu(
    gpu: &Gpu,
    budget: TimingBudget,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    let start = Instant::now();
    for _ in 0..budget.warmup.max(1) {
        f()?;
    }
    gpu.synchronize()?;
    let per_run = start.elapsed().as_secs_f64() / budget.warmup.max(1) as f64;
    let reps = if per_run > 0.0 {
        ((budget.min_sample_s / per_run).ceil() as usize).clamp(1, 1000)
    } else {
        1
    };
    let mut samples = Vec::with_capacity(budget.samples);
    for _ in 0..budget.samples.max(1) {
        let t = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        gpu.synchronize()?;
        samples.push(t.elapsed().as_secs_f64() / reps as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(Timing {
        median_s: samples[samples.len() / 2],
        min_s: samples[0],
        reps_per_sample: reps,
        samples: samples.len(),
    })
}
