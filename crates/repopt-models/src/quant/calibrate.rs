//! Calibrators: the clipping threshold of a layer's activations from a histogram of their
//! magnitudes, gathered over a calibration set. Four rules, because which one works decides
//! whether a re-parameterized model survives post-training quantization:
//!
//! - **max**: the largest magnitude seen;
//! - **percentile**: the magnitude below which a fraction p of the values lie;
//! - **entropy**: the threshold whose 128-level quantized distribution is closest, in KL
//!   divergence, to the clipped reference distribution (TensorRT's entropy calibrator);
//! - **mse**: the threshold minimising the expected squared error of quantizing the
//!   histogram (rounding inside the range, clipping outside).
//!
//! ```
//! use repopt_models::quant::calibrate::{Calibrator, Histogram};
//! // A million values spread evenly over [0, 1) and one outlier at 10.
//! let mut counts = vec![0u64; 2048];
//! for i in 0..1000 {
//!     counts[i * 2048 / 1000 / 10] += 1000;
//! }
//! counts[2047] += 1;
//! let h = Histogram { max: 10.0, counts };
//! assert_eq!(Calibrator::Max.threshold(&h)?, 10.0);
//! let p = Calibrator::Percentile(99.0).threshold(&h)?;
//! assert!(p > 0.95 && p < 1.05, "{p}");
//! // Clipping the one outlier costs less than ten times coarser steps for a million values
//! // (with a thousand values it would not: mse then keeps the outlier).
//! let mse = Calibrator::Mse.threshold(&h)?;
//! assert!(mse < 2.0, "{mse}");
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::{ModelError, Result};

/// Bins of the magnitude histograms (TensorRT's entropy calibrator uses 2048).
pub const BINS: usize = 2048;

/// Quantization levels on one side of zero in symmetric INT8 (`[-127, 127]`).
pub const LEVELS: f64 = 127.0;

/// A histogram of `|x|` over `[0, max]` in equal bins (values at `max` in the last bin).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// The largest magnitude seen: the histogram's upper edge.
    pub max: f32,
    /// Counts per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    fn width(&self) -> f64 {
        self.max as f64 / self.counts.len().max(1) as f64
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// How a layer's clipping threshold is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibrator {
    /// The largest magnitude.
    Max,
    /// The given percentile (e.g. 99.99) of the magnitudes.
    Percentile(f64),
    /// Minimum KL divergence (TensorRT's entropy calibrator).
    Entropy,
    /// Minimum expected squared quantization error.
    Mse,
}

impl Calibrator {
    /// Every calibrator `--calibrator all` compares: max, the three percentiles of the
    /// issue tracker's reports (99.9, 99.99, 99.999), entropy, mse.
    pub fn all() -> Vec<Calibrator> {
        vec![
            Calibrator::Max,
            Calibrator::Percentile(99.9),
            Calibrator::Percentile(99.99),
            Calibrator::Percentile(99.999),
            Calibrator::Entropy,
            Calibrator::Mse,
        ]
    }

    /// The clipping threshold for a histogram: positive and finite, or an error. A layer
    /// whose values are all zero gets the threshold 1, with which zero is exact.
    pub fn threshold(self, h: &Histogram) -> Result<f32> {
        let bad = |m: String| Err(ModelError::Config(format!("calibrator {self}: {m}")));
        if h.counts.is_empty() {
            return bad("an empty histogram".into());
        }
        if !(h.max.is_finite() && h.max >= 0.0) {
            return bad(format!(
                "the histogram's range [0, {}] is not finite",
                h.max
            ));
        }
        let total = h.total();
        if total == 0 {
            return bad("no values were observed (empty calibration set?)".into());
        }
        if h.max == 0.0 {
            return Ok(1.0);
        }
        let t = match self {
            Calibrator::Max => h.max as f64,
            Calibrator::Percentile(p) => {
                if !(p > 0.0 && p <= 100.0) {
                    return bad(format!("percentile {p} is outside (0, 100]"));
                }
                percentile(h, p / 100.0)
            }
            Calibrator::Entropy => entropy(h),
            Calibrator::Mse => mse(h),
        };
        // A threshold below the first bin's width would quantize every value to zero.
        Ok(t.max(h.width()) as f32)
    }
}

impl fmt::Display for Calibrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Calibrator::Max => f.write_str("max"),
            Calibrator::Percentile(p) => write!(f, "percentile-{p}"),
            Calibrator::Entropy => f.write_str("entropy"),
            Calibrator::Mse => f.write_str("mse"),
        }
    }
}

impl FromStr for Calibrator {
    type Err = ModelError;

    /// `max`, `entropy`, `mse`, `percentile` (99.99) or `percentile-P`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Ok(match s.as_str() {
            "max" => Calibrator::Max,
            "entropy" => Calibrator::Entropy,
            "mse" => Calibrator::Mse,
            "percentile" => Calibrator::Percentile(99.99),
            other => match other.strip_prefix("percentile-").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => Calibrator::Percentile(p),
                _ => {
                    return Err(ModelError::Config(format!(
                        "unknown calibrator '{s}' (expected max, percentile, percentile-P with 0 < P <= 100, entropy, mse or all)"
                    )));
                }
            },
        })
    }
}

/// The upper edge of the first bin at which the cumulative count reaches `fraction`.
fn percentile(h: &Histogram, fraction: f64) -> f64 {
    let want = fraction * h.total() as f64;
    let mut seen = 0u64;
    for (i, &c) in h.counts.iter().enumerate() {
        seen += c;
        if seen as f64 >= want {
            return (i + 1) as f64 * h.width();
        }
    }
    h.max as f64
}

/// TensorRT's entropy calibration: for each candidate edge i (from 128 bins on), the
/// reference distribution is the first i bins with everything beyond folded into the last;
/// the candidate is that distribution merged into 128 levels and spread back over the
/// non-empty bins of each level. The edge with the smallest KL divergence wins.
fn entropy(h: &Histogram) -> f64 {
    let n = h.counts.len();
    let levels = 128usize;
    if n <= levels {
        return h.max as f64;
    }
    let mut counts: Vec<f64> = h.counts.iter().map(|&c| c as f64).collect();
    // After ReLU most values are exactly zero; that spike, smeared over a level's bins by
    // the candidate, would dominate every divergence and drive the threshold far too low.
    // Flattening it to its neighbour, as NVIDIA's pytorch-quantization does, keeps the
    // comparison about the distribution's body and tail.
    counts[0] = counts[1];
    let mut best = (f64::INFINITY, n);
    for i in levels..=n {
        let mut p: Vec<f64> = counts[..i].to_vec();
        p[i - 1] += counts[i..].iter().sum::<f64>();
        let mut q = vec![0.0; i];
        for level in 0..levels {
            let (a, b) = (
                level * i / levels,
                ((level + 1) * i / levels).max(level * i / levels + 1),
            );
            let sum: f64 = counts[a..b].iter().sum();
            let nonzero = counts[a..b].iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for j in a..b {
                    if counts[j] > 0.0 {
                        q[j] = sum / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (&pj, &qj) in p.iter().zip(&q) {
            if pj > 0.0 {
                let (pj, qj) = (pj / ps, qj / qs);
                // A reference value the candidate cannot represent: as TensorRT, a tiny
                // stand-in probability instead of an infinite divergence.
                kl += pj * (pj / qj.max(1e-12)).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f64 * h.width()
}

/// The threshold (a bin edge) minimising the expected squared error of symmetric INT8
/// quantization over the histogram, each bin's values taken at its centre.
fn mse(h: &Histogram) -> f64 {
    let w = h.width();
    let n = h.counts.len();
    let mut best = (f64::INFINITY, n);
    for i in 1..=n {
        let t = i as f64 * w;
        let step = t / LEVELS;
        let mut err = 0.0;
        for (j, &c) in h.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let x = (j as f64 + 0.5) * w;
            let e = if x > t {
                x - t
            } else {
                x - (x / step).round() * step
            };
            err += c as f64 * e * e;
        }
        if err < best.0 {
            best = (err, i);
        }
    }
    best.1 as f64 * w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_like(outlier: Option<usize>) -> Histogram {
        // A half-normal shape over the first quarter of the range.
        let mut counts = vec![0u64; BINS];
        for (i, c) in counts.iter_mut().enumerate().take(BINS / 4) {
            let x = i as f64 / (BINS / 16) as f64;
            *c = (10_000.0 * (-x * x / 2.0).exp()).round() as u64;
        }
        if let Some(i) = outlier {
            counts[i] += 1;
        }
        Histogram { max: 8.0, counts }
    }

    #[test]
    fn clipping_calibrators_ignore_a_single_outlier() {
        let h = gaussian_like(Some(BINS - 1));
        let max = Calibrator::Max.threshold(&h).unwrap();
        assert_eq!(max, 8.0);
        for c in [
            Calibrator::Percentile(99.99),
            Calibrator::Entropy,
            Calibrator::Mse,
        ] {
            let t = c.threshold(&h).unwrap();
            assert!(t < 2.5 && t > 0.5, "{c}: {t}");
        }
    }

    #[test]
    fn percentiles_are_ordered_and_cover_their_fraction() {
        let h = gaussian_like(None);
        let ts: Vec<f32> = [99.0, 99.9, 99.99, 100.0]
            .iter()
            .map(|&p| Calibrator::Percentile(p).threshold(&h).unwrap())
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
        let width = 8.0 / BINS as f64;
        let below: u64 = h.counts[..(ts[1] as f64 / width).round() as usize]
            .iter()
            .sum();
        assert!(below as f64 >= 0.999 * h.total() as f64);
    }

    #[test]
    fn mse_prefers_the_full_range_without_outliers() {
        // Values spread evenly to the top: clipping any of them costs more than the step.
        let h = Histogram {
            max: 1.0,
            counts: vec![10; 256],
        };
        let t = Calibrator::Mse.threshold(&h).unwrap();
        assert!(t > 0.95, "{t}");
    }

    #[test]
    fn degenerate_histograms_give_finite_thresholds_or_errors() {
        let zero = Histogram {
            max: 0.0,
            counts: vec![5; BINS],
        };
        for c in Calibrator::all() {
            assert_eq!(c.threshold(&zero).unwrap(), 1.0, "{c}");
        }
        let empty = Histogram {
            max: 1.0,
            counts: vec![0; BINS],
        };
        let e = Calibrator::Entropy
            .threshold(&empty)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no values"), "{e}");
        let nan = Histogram {
            max: f32::NAN,
            counts: vec![1; 4],
        };
        assert!(Calibrator::Max.threshold(&nan).is_err());
        assert!(
            Calibrator::Percentile(0.0)
                .threshold(&gaussian_like(None))
                .is_err()
        );
    }

    #[test]
    fn names_round_trip() {
        for c in Calibrator::all() {
            assert_eq!(c.to_string().parse::<Calibrator>().unwrap(), c);
        }
        assert_eq!(
            "percentile".parse::<Calibrator>().unwrap(),
            Calibrator::Percentile(99.99)
        );
        let e = "kl".parse::<Calibrator>().unwrap_err().to_string();
        assert!(e.contains("'kl'") && e.contains("entropy"), "{e}");
    }
}
