//! Choosing between kernel variants that compute the same result (a convolution by its
//! direct kernels, by Winograd, or as matrix products): by a fixed rule, by measurement on
//! first use, or by force.
//!
//! Measured choices are kept per adapter and driver in a small text file in the user's cache
//! directory, so a shape is timed once per machine rather than once per process. The file is
//! a hint: a line that does not parse is ignored, and a file that cannot be written leaves the
//! choices in memory only.
//!
//! ```no_run
//! use repopt_tensor::tuning::{ConvAlgorithm, Tuning};
//! use repopt_tensor::{ops, Gpu, GpuOptions, Tensor};
//! // Measure on first use, keeping the choices in a file of our own.
//! let tuning = Tuning::Measure { cache: Some("choices.txt".into()) };
//! let gpu = Gpu::new(GpuOptions { tuning, ..Default::default() })?;
//! let x = Tensor::zeros(&gpu, &[8, 64, 16, 16])?;
//! let w = Tensor::zeros(&gpu, &[64, 64, 3, 3])?;
//! ops::conv2d(&x, &w, ops::Conv2dConfig::same(3, 1))?;
//! for (shape, algorithm) in gpu.tuned_choices() {
//!     println!("{shape}: {}", algorithm.name());
//! }
//! assert_eq!(gpu.tuning_file(), Some(std::path::Path::new("choices.txt")));
//! // Or always one algorithm where it applies (the direct kernels elsewhere).
//! let winograd = Gpu::new(GpuOptions {
//!     tuning: Tuning::Force(ConvAlgorithm::Winograd),
//!     ..Default::default()
//! })?;
//! # Ok::<(), repopt_tensor::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::adapter::AdapterSummary;
use crate::error::{Error, Result};

/// The environment variable read by [`Tuning::from_env`].
pub const TUNE_ENV: &str = "REPOPT_TUNE";

/// The environment variable that overrides where measured choices are cached.
pub const CACHE_DIR_ENV: &str = "REPOPT_CACHE_DIR";

/// A way to compute one direction of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvAlgorithm {
    /// The direct kernels (`shaders/conv*.wgsl`): every shape.
    Direct,
    /// Winograd F(2x2, 3x3): transforms and 16 matrix products; 3x3, stride 1, padding 1.
    Winograd,
    /// Patches gathered into columns and one matrix product (`shaders/conv_gemm.wgsl`):
    /// every shape whose columns fit one buffer.
    Gemm,
    /// One implicit matrix product on 64 x 64 workgroup tiles with double-buffered workgroup
    /// memory (`shaders/conv_implicit.wgsl`): the GPU-shaped kernel, every shape whose
    /// tensors fit one buffer on adapters with workgroups of 256.
    Implicit,
    /// [`ConvAlgorithm::Implicit`] on operands rounded to f16 and stored as f16 (half the
    /// bytes the product gathers), summed in f32 (`shaders/conv_implicit_f16.wgsl`): where
    /// the adapter has `SHADER_F16`. Its results differ from the f32 algorithms' by the
    /// operands' rounding (relative 2^-12 each), so measuring never picks it; only
    /// [`Tuning::Force`] runs it.
    ImplicitF16,
}

impl ConvAlgorithm {
    /// The name used in cache files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgorithm::Direct => "direct",
            ConvAlgorithm::Winograd => "winograd",
            ConvAlgorithm::Gemm => "gemm",
            ConvAlgorithm::Implicit => "implicit",
            ConvAlgorithm::ImplicitF16 => "implicit-f16",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(ConvAlgorithm::Direct),
            "winograd" => Some(ConvAlgorithm::Winograd),
            "gemm" => Some(ConvAlgorithm::Gemm),
            "implicit" => Some(ConvAlgorithm::Implicit),
            "implicit-f16" => Some(ConvAlgorithm::ImplicitF16),
            _ => None,
        }
    }
}

/// How a [`Gpu`](crate::Gpu) picks kernel variants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tuning {
    /// Always the direct kernels: results depend only on the shape and the kernel family
    /// (what tests and memory plans use).
    #[default]
    Fixed,
    /// Time every applicable variant on the first use of a shape and keep the fastest;
    /// choices are read from and written to `cache` (no file when `None`).
    Measure {
        /// The cache file, usually [`Tuning::default_cache_file`].
        cache: Option<PathBuf>,
    },
    /// This variant wherever it applies, the direct kernels elsewhere.
    Force(ConvAlgorithm),
}

impl Tuning {
    /// Reads [`TUNE_ENV`]: `off` (or `0`) for [`Tuning::Fixed`], `on` (or `1`) for
    /// [`Tuning::Measure`] with the default cache file, `direct`, `winograd`, `gemm`,
    /// `implicit` or `implicit-f16` to force one; `default` when unset.
    ///
    /// ```
    /// use repopt_tensor::{tuning::Tuning, Gpu, GpuOptions};
    /// // Measure unless REPOPT_TUNE says otherwise.
    /// let tuning = Tuning::from_env(Tuning::Measure { cache: None })?;
    /// let gpu = Gpu::new(GpuOptions { tuning, ..Default::default() })?;
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn from_env(default: Tuning) -> Result<Tuning> {
        let Ok(value) = std::env::var(TUNE_ENV) else {
            return Ok(default);
        };
        match value.as_str() {
            "off" | "0" => Ok(Tuning::Fixed),
            "on" | "1" => Ok(Tuning::Measure { cache: None }),
            other => ConvAlgorithm::parse(other)
                .map(Tuning::Force)
                .ok_or_else(|| {
                    Error::invalid(
                        TUNE_ENV,
                        format!(
                            "'{other}': expected off, on, direct, winograd, gemm, implicit or \
                             implicit-f16"
                        ),
                    )
                }),
        }
    }

    /// The cache file for `adapter`: `<dir>/tune-<adapter>-<driver>.txt` in
    /// [`CACHE_DIR_ENV`], else `$XDG_CACHE_HOME/repopt`, else `~/.cache/repopt`
    /// (`%LOCALAPPDATA%\repopt` on Windows); `None` when none of them is set.
    ///
    /// ```no_run
    /// use repopt_tensor::{tuning::Tuning, Gpu};
    /// let gpu = Gpu::from_env()?;
    /// if let Some(file) = Tuning::default_cache_file(gpu.adapter()) {
    ///     println!("choices for {} are kept in {}", gpu.adapter().name, file.display());
    /// }
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn default_cache_file(adapter: &AdapterSummary) -> Option<PathBuf> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = env(CACHE_DIR_ENV)
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("repopt")))
            .or_else(|| env("HOME").map(|d| d.join(".cache").join("repopt")))
            .or_else(|| env("LOCALAPPDATA").map(|d| d.join("repopt")))?;
        let slug: String = format!(
            "{}-{}-{}",
            adapter.name, adapter.driver, adapter.driver_info
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
        Some(dir.join(format!("tune-{slug}.txt")))
    }
}

/// The choices of one device: its mode, what has been chosen, and where it is kept.
pub(crate) struct Tuner {
    mode: Tuning,
    file: Option<PathBuf>,
    choices: Mutex<BTreeMap<String, ConvAlgorithm>>,
}

/// Timed samples per variant after warming up, in interleaved rounds; the fastest counts (the
/// least disturbed by other work on a shared machine).
const TIMED_RUNS: usize = 3;

/// Shortest sample: a variant that runs faster is launched several times back to back
/// before the device is waited for, so that the wait's own cost does not decide between
/// small kernels and the cost of each launch does count.
const SAMPLE_SECONDS: f64 = 0.02;

/// Most launches in one sample.
const MAX_REPEATS: usize = 64;

impl Tuner {
    /// A tuner in `mode`; measuring without a cache file of its own uses `default_file`.
    pub(crate) fn new(mode: Tuning, default_file: Option<PathBuf>) -> Tuner {
        let file = match &mode {
            Tuning::Measure { cache: Some(f) } => Some(f.clone()),
            Tuning::Measure { cache: None } => default_file,
            _ => None,
        };
        let choices = file.as_deref().map(read_choices).unwrap_or_default();
        Tuner {
            mode,
            file,
            choices: Mutex::new(choices),
        }
    }

    pub(crate) fn mode(&self) -> &Tuning {
        &self.mode
    }

    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(crate) fn choices(&self) -> Vec<(String, ConvAlgorithm)> {
        let map = self.choices.lock().expect("tuner lock");
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The variant for the shape `key` names among `candidates` (the first is the fixed
    /// rule's choice). Measuring calls `run` for each candidate and times it with `sync`
    /// (which must wait for the device) around it. The key is only built when measuring, so
    /// fixed and forced choices cost an op nothing.
    pub(crate) fn choose(
        &self,
        key: impl FnOnce() -> String,
        candidates: &[ConvAlgorithm],
        mut run: impl FnMut(ConvAlgorithm) -> Result<()>,
        sync: impl Fn() -> Result<()>,
    ) -> Result<ConvAlgorithm> {
        match &self.mode {
            Tuning::Fixed => return Ok(candidates[0]),
            Tuning::Force(a) => {
                return Ok(if candidates.contains(a) {
                    *a
                } else {
                    candidates[0]
                });
            }
            Tuning::Measure { .. } => {}
        }
        let key = key();
        if let Some(a) = self.choices.lock().expect("tuner lock").get(&key)
            && candidates.contains(a)
        {
            return Ok(*a);
        }
        // The first run compiles a variant's kernels; the second says how long one takes.
        let mut repeats = Vec::with_capacity(candidates.len());
        for &a in candidates {
            run(a)?;
            sync()?;
            let start = Instant::now();
            run(a)?;
            sync()?;
            let once = start.elapsed().as_secs_f64();
            repeats.push(((SAMPLE_SECONDS / once.max(1e-9)).ceil() as usize).clamp(1, MAX_REPEATS));
        }
        // Then rounds that time every variant once each, so that a shared host slowing down
        // or speeding up part-way weighs on all of them alike rather than on whichever was
        // being timed at that moment.
        let mut fastest = vec![f64::INFINITY; candidates.len()];
        for _ in 0..TIMED_RUNS {
            for (i, &a) in candidates.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..repeats[i] {
                    run(a)?;
                }
                sync()?;
                fastest[i] = fastest[i].min(start.elapsed().as_secs_f64() / repeats[i] as f64);
            }
        }
        let mut best = (f64::INFINITY, candidates[0]);
        for (&t, &a) in fastest.iter().zip(candidates) {
            if t < best.0 {
                best = (t, a);
            }
        }
        let mut map = self.choices.lock().expect("tuner lock");
        // Devices opened with `Gpu::open_another` share this tuner: where two measured the
        // same shape at once, the first choice stands for both, so that every run on this
        // machine (and a resumed one) makes the same choice.
        if let Some(&a) = map.get(&key)
            && candidates.contains(&a)
        {
            return Ok(a);
        }
        map.insert(key, best.1);
        if let Some(file) = &self.file {
            // A cache that cannot be written only costs a re-measurement next time.
            let _ = write_choices(file, &map);
        }
        Ok(best.1)
    }
}

const HEADER: &str = "# repopt kernel choices: <shape key> <variant>";

fn read_choices(file: &Path) -> BTreeMap<String, ConvAlgorithm> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.split_once(' ')?;
            Some((key.to_string(), ConvAlgorithm::parse(value.trim())?))
        })
        .collect()
}

/// Writes the whole map to a temporary file beside `file` and renames it over `file`, so a
/// reader never sees half a file.
fn write_choices(file: &Path, map: &BTreeMap<String, ConvAlgorithm>) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = format!("{HEADER}\n");
    for (k, v) in map {
        text.push_str(&format!("{k} {}\n", v.name()));
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_survive_a_round_trip_and_bad_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("repopt-tune-{}", std::process::id()));
        let file = dir.join("tune-test.txt");
        let mut map = BTreeMap::new();
        map.insert("conv3.forward.a".to_string(), ConvAlgorithm::Winograd);
        map.insert("conv3.input.b".to_string(), ConvAlgorithm::Direct);
        write_choices(&file, &map).unwrap();
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("garbage\nconv3.forward.c fastest\n");
        std::fs::write(&file, text).unwrap();
        assert_eq!(read_choices(&file), map);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_choices(&file).is_empty());
    }

    #[test]
    fn fixed_and_forced_modes_never_measure() {
        let never = |_| -> Result<()> { panic!("measured") };
        let both = [ConvAlgorithm::Direct, ConvAlgorithm::Winograd];
        let fixed = Tuner::new(Tuning::Fixed, None);
        assert_eq!(
            fixed
                .choose(|| "k".into(), &both, never, || Ok(()))
                .unwrap(),
            ConvAlgorithm::Direct
        );
        let forced = Tuner::new(Tuning::Force(ConvAlgorithm::Winograd), None);
        assert_eq!(
            forced
                .choose(|| "k".into(), &both, never, || Ok(()))
                .unwrap(),
            ConvAlgorithm::Winograd
        );
        let direct_only = [ConvAlgorithm::Direct];
        assert_eq!(
            forced
                .choose(|| "k".into(), &direct_only, never, || Ok(()))
                .unwrap(),
            ConvAlgorithm::Direct
        );
    }

    #[test]
    fn measuring_keeps_the_faster_variant_and_writes_it_down() {
        let dir = std::env::temp_dir().join(format!("repopt-tune-m-{}", std::process::id()));
        let file = dir.join("choices.txt");
        let tuner = Tuner::new(
            Tuning::Measure {
                cache: Some(file.clone()),
            },
            None,
        );
        let both = [ConvAlgorithm::Direct, ConvAlgorithm::Winograd];
        // Winograd "runs" ten times longer here, so the direct variant must win.
        let slow_winograd = |a| -> Result<()> {
            if a == ConvAlgorithm::Winograd {
                std::thread::sleep(std::time::Duration::from_millis(20));
            } else {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(())
        };
        assert_eq!(
            tuner
                .choose(|| "shape".into(), &both, slow_winograd, || Ok(()))
                .unwrap(),
            ConvAlgorithm::Direct
        );
        // The second time comes from memory, and a new tuner reads it from the file.
        let never = |_| -> Result<()> { panic!("measured twice") };
        assert_eq!(
            tuner
                .choose(|| "shape".into(), &both, never, || Ok(()))
                .unwrap(),
            ConvAlgorithm::Direct
        );
        let again = Tuner::new(Tuning::Measure { cache: Some(file) }, None);
        assert_eq!(
            again
                .choose(|| "shape".into(), &both, never, || Ok(()))
                .unwrap(),
            ConvAlgorithm::Direct
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn measuring_times_the_variants_in_interleaved_rounds() {
        let tuner = Tuner::new(Tuning::Measure { cache: None }, None);
        let three = [
            ConvAlgorithm::Direct,
            ConvAlgorithm::Winograd,
            ConvAlgorithm::Gemm,
        ];
        let calls = std::cell::RefCell::new(Vec::new());
        // Each run takes longer than a sample, so every timed sample is a single run.
        let run = |a| -> Result<()> {
            calls.borrow_mut().push(a);
            std::thread::sleep(std::time::Duration::from_millis(25));
            Ok(())
        };
        tuner
            .choose(|| "interleaved".into(), &three, run, || Ok(()))
            .unwrap();
        let calls = calls.into_inner();
        // Two untimed runs per variant, one after the other, then the rounds.
        let mut want: Vec<ConvAlgorithm> = three.iter().flat_map(|&a| [a, a]).collect();
        for _ in 0..TIMED_RUNS {
            want.extend(three);
        }
        assert_eq!(calls, want);
    }
}
