//! Everything a training run is configured with: dataset, model, optimizer, schedule and
//! run settings. Serialisable so a run's resolved configuration is saved beside its
//! outputs, and so it can be given as a TOML or JSON file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use repopt_models::any::NetConfig;
use repopt_models::ghostnet::GhostConfig;
use repopt_models::repoptimizer::IdentityInit;
use repopt_models::{Mode, VggConfig};
use serde::{Deserialize, Serialize};

use crate::data::Preset;
use crate::error::{Result, TrainError};

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used on the command line and in files.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = TrainError;
            fn from_str(s: &str) -> Result<Self> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.name().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| TrainError::Config(format!(
                        "unknown {} '{s}' (expected one of: {})",
                        stringify!($name),
                        $name::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                    )))
            }
        }
    };
}

named_enum!(
    /// Which dataset to read.
    DatasetKind {
        /// Fashion-MNIST IDX files (Debian's dataset-fashion-mnist by default).
        FashionMnist = "fashion-mnist",
        /// CIFAR-10 binary batches.
        Cifar10 = "cifar10",
        /// CIFAR-100 binary files.
        Cifar100 = "cifar100",
        /// Class sub-folders of JPEG/PNG images (with train/ and val/ splits).
        Folder = "folder",
    }
);

named_enum!(
    /// Which optimizer trains the model.
    OptimizerKind {
        /// SGD with momentum and nesterov.
        Sgd = "sgd",
        /// AdamW.
        AdamW = "adamw",
        /// A RepOptimizer on SGD (Grad Mults with squared scales; target mode only).
        RepoptSgd = "repopt-sgd",
        /// A RepOptimizer on AdamW (scales to the power 1; target mode only).
        RepoptAdamW = "repopt-adamw",
    }
);

named_enum!(
    /// Where a RepOptimizer's scales come from (the alternatives are the paper's ablations).
    ScalesSource {
        /// The file given with `scales` (searched, or the authors').
        File = "file",
        /// All ones.
        Ones = "ones",
        /// The Hyper-Search model's initial values.
        HsInitial = "hs-initial",
        /// The file's scales averaged over channels.
        ChannelAveraged = "channel-averaged",
    }
);

impl OptimizerKind {
    /// Whether this is a RepOptimizer.
    pub fn is_repopt(self) -> bool {
        matches!(self, OptimizerKind::RepoptSgd | OptimizerKind::RepoptAdamW)
    }
}

/// The architecture, as a preset plus optional overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchConfig {
    /// A0, A1, B0, B1, B2, L1, L2 (RepOpt-VGG), or ghostnet-0.5x ... ghostnet-2.0x.
    pub preset: String,
    /// Blocks per stage.
    pub num_blocks: Option<[usize; 4]>,
    /// Width multipliers per stage.
    pub widths: Option<[f32; 4]>,
    /// Strides of stage 0 to 4.
    pub strides: Option<[usize; 5]>,
    /// Squeeze-excitation after each ReLU.
    pub se: bool,
}

impl Default for ArchConfig {
    fn default() -> Self {
        ArchConfig {
            preset: "A0".into(),
            num_blocks: None,
            widths: None,
            strides: None,
            se: false,
        }
    }
}

impl ArchConfig {
    /// The model configuration for images of `in_channels` channels and `classes` classes.
    pub fn build(&self, in_channels: usize, classes: usize) -> Result<NetConfig> {
        if GhostConfig::is_ghostnet(&self.preset) {
            let overrides = [
                ("num_blocks", self.num_blocks.is_some()),
                ("widths", self.widths.is_some()),
                ("strides", self.strides.is_some()),
                ("se", self.se),
            ];
            if let Some((name, _)) = overrides.iter().find(|o| o.1) {
                return Err(TrainError::Config(format!(
                    "arch.{name} applies to RepOpt-VGG presets, not to {} (a GhostNet follows its official table; its squeeze-excitation is built in)",
                    self.preset
                )));
            }
            let c = NetConfig::preset(&self.preset)?.with_data(in_channels, classes);
            c.validate()?;
            return Ok(c);
        }
        let mut c = VggConfig::preset(&self.preset)?;
        let custom = self.num_blocks.is_some() || self.widths.is_some() || self.strides.is_some();
        if let Some(b) = self.num_blocks {
            c.num_blocks = b;
        }
        if let Some(w) = self.widths {
            c.width_multipliers = w;
        }
        if let Some(s) = self.strides {
            c.strides = s;
        }
        if custom {
            c.name = format!("{}-custom", c.name);
        }
        c.use_se = self.se;
        c.in_channels = in_channels;
        c.num_classes = classes;
        c.validate()?;
        Ok(NetConfig::Vgg(c))
    }
}

/// A training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset to train and evaluate on.
    pub dataset: DatasetKind,
    /// Where the dataset lives (each dataset has a default).
    pub data_dir: Option<PathBuf>,
    /// Square input resolution images are resized to (None: the dataset's own).
    pub resolution: Option<usize>,
    /// Train on this many training images (a fixed random subset), all when None.
    pub train_limit: Option<usize>,
    /// Evaluate on this many test images (a fixed random subset), all when None.
    pub test_limit: Option<usize>,
    /// Augmentation: `train` (crop + flip + RandAugment), `search` (crop + flip) or `eval`.
    pub augment: Preset,
    /// Loader worker threads (0: one per core).
    pub workers: usize,
    /// Architecture.
    pub arch: ArchConfig,
    /// Block mode: target, repvgg, csla or hs.
    pub mode: Mode,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Scale file for a RepOptimizer.
    pub scales: Option<PathBuf>,
    /// Where the RepOptimizer's scales come from.
    pub scales_source: ScalesSource,
    /// RepOptimizer: apply the Rule of Initialization.
    pub reinit: bool,
    /// RepOptimizer: apply the Grad Mults.
    pub grad_mult: bool,
    /// RepOptimizer: identity term of the re-initialisation.
    pub identity_init: IdentityInit,
    /// Learning rate for a batch of `lr_batch` images (scaled linearly to `batch_size`).
    pub lr: f64,
    /// Batch size `lr` is given for.
    pub lr_batch: usize,
    /// Linear warm-up, in epochs.
    pub warmup_epochs: u64,
    /// Weight decay (conv and linear weights and identity scales only).
    pub weight_decay: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Label smoothing of the training loss.
    pub label_smoothing: f32,
    /// Clip the gradient norm to this value (refused with a RepOptimizer).
    pub clip_grad: Option<f32>,
    /// Epochs.
    pub epochs: u64,
    /// Training batch size: the global batch of a step, over every rank of a distributed run
    /// (each of N ranks trains on `batch_size / N` images).
    pub batch_size: usize,
    /// Gradient accumulation: each step's batch is trained as this many equal micro-batches
    /// whose gradients are averaged before the update. Batch norm statistics then cover a
    /// micro-batch, as they cover one rank's share in a distributed run.
    pub accumulate: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// Seed of initialisation, data order and augmentation.
    pub seed: u64,
    /// Run directory (checkpoints, metrics, config, plots).
    pub out: PathBuf,
    /// Log the training loss every this many steps.
    pub log_every: u64,
    /// Stop (with a checkpoint) after this many steps in total; for time-boxed runs.
    pub stop_after_steps: Option<u64>,
    /// Quantization-aware training of a trained run's deploy form (mode `deploy`).
    pub qat: Option<QatSettings>,
}

/// Where quantization-aware training starts and how it observes activations
/// ([`crate::qat`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QatSettings {
    /// The trained run (directory, model file or checkpoint) whose deploy form is
    /// fine-tuned.
    pub from: PathBuf,
    /// The calibrator that sets the starting activation ranges (`max`, `entropy`, ...).
    pub calibrator: String,
    /// Training images that calibrate the starting ranges.
    pub calib_images: usize,
    /// Layers kept in float: names (`stage0`, `linear`), or `first` / `last`.
    pub keep_float: Vec<String>,
    /// Weight of each batch in the moving-average ranges.
    pub averaging: f32,
    /// The ranges stop moving after this fraction of the training steps (None: never).
    pub freeze_observers: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            dataset: DatasetKind::FashionMnist,
            data_dir: None,
            resolution: None,
            train_limit: None,
            test_limit: None,
            augment: Preset::Train,
            workers: 0,
            arch: ArchConfig::default(),
            mode: Mode::Target,
            optimizer: OptimizerKind::Sgd,
            scales: None,
            scales_source: ScalesSource::File,
            reinit: true,
            grad_mult: true,
            identity_init: IdentityInit::Searched,
            lr: 0.1,
            lr_batch: 256,
            warmup_epochs: 5,
            weight_decay: 4e-5,
            momentum: 0.9,
            nesterov: true,
            label_smoothing: 0.1,
            clip_grad: None,
            epochs: 120,
            batch_size: 256,
            accumulate: 1,
            eval_batch_size: 256,
            seed: 0,
            out: PathBuf::from("runs/train"),
            log_every: 10,
            stop_after_steps: None,
            qat: None,
        }
    }
}

impl TrainConfig {
    /// Reads a TOML or JSON configuration file (by extension; TOML otherwise). Keys left out
    /// keep their defaults; unknown keys, and values outside their domains
    /// ([`TrainConfig::check_domains`]), are errors naming the file and the key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config_text(path)?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed: std::result::Result<Self, String> = if is_json {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            toml::from_str(&text).map_err(|e| e.to_string())
        };
        // Each value on its own only: flags may still complete the file (say, its scales).
        parsed
            .and_then(|c| c.check_domains().map(|()| c))
            .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
    }

    /// The configuration a run saved beside its files: `config.json` in `path` when it is a
    /// directory, else in the folder holding the file `path`; `None` when there is none.
    ///
    /// ```
    /// use repopt_train::{TrainConfig, trainer::files};
    /// let run = tempfile::tempdir()?;
    /// assert!(TrainConfig::of_run(run.path())?.is_none());
    /// std::fs::write(run.path().join(files::CONFIG), r#"{"epochs": 3}"#)?;
    /// let saved = TrainConfig::of_run(&run.path().join(files::MODEL))?;
    /// assert_eq!(saved.unwrap().epochs, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn of_run(path: &Path) -> Result<Option<Self>> {
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new(""))
        };
        let saved = dir.join(crate::trainer::files::CONFIG);
        if saved.is_file() {
            Ok(Some(TrainConfig::from_file(&saved)?))
        } else {
            Ok(None)
        }
    }

    /// Reads a TOML or JSON configuration file as [`Self::from_file`] does, except that keys
    /// left out keep `base`'s values rather than the defaults (so a file can adjust a run).
    ///
    /// ```no_run
    /// use repopt_train::TrainConfig;
    /// let run = TrainConfig { epochs: 30, ..Default::default() };
    /// let adjusted = TrainConfig::from_file_over("workers.toml".as_ref(), &run)?;
    /// assert_eq!(adjusted.epochs, 30);
    /// # Ok::<(), repopt_train::TrainError>(())
    /// ```
    pub fn from_file_over(path: &Path, base: &TrainConfig) -> Result<Self> {
        let text = read_config_text(path)?;
        let bad = |e: &dyn fmt::Display| TrainError::Config(format!("{}: {e}", path.display()));
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let keys: serde_json::Value = if is_json {
            serde_json::from_str(&text).map_err(|e| bad(&e))?
        } else {
            let table: toml::Table = toml::from_str(&text).map_err(|e| bad(&e))?;
            serde_json::to_value(table).map_err(|e| bad(&e))?
        };
        let mut merged = serde_json::to_value(base).map_err(|e| bad(&e))?;
        overlay(&mut merged, keys);
        serde_json::from_value(merged).map_err(|e| bad(&e))
    }

    /// Checks every value against its domain, then settings that cannot work together.
    pub fn validate(&self) -> Result<()> {
        self.check_domains().map_err(TrainError::Config)?;
        let bad = |m: String| Err(TrainError::Config(m));
        if self.accumulate == 0 || !self.batch_size.is_multiple_of(self.accumulate) {
            return bad(format!(
                "--accumulate {} must divide the batch size {} into equal micro-batches",
                self.accumulate, self.batch_size
            ));
        }
        if self.optimizer.is_repopt() {
            if self.mode != Mode::Target {
                return bad(format!(
                    "a RepOptimizer ({}) trains the plain target model; use --mode target (got {})",
                    self.optimizer, self.mode
                ));
            }
            if self.clip_grad.is_some() {
                return bad("gradient clipping breaks the RepOptimizer's equivalence with the CSLA model; drop --clip-grad or use a plain optimizer".into());
            }
            if matches!(
                self.scales_source,
                ScalesSource::File | ScalesSource::ChannelAveraged
            ) && self.scales.is_none()
            {
                return bad(format!(
                    "{} needs --scales FILE (from `repopt search`, or the authors' .pth), or --scales-source ones|hs-initial",
                    self.optimizer
                ));
            }
        }
        match (&self.qat, self.mode) {
            (None, Mode::Deploy) => {
                return bad(
                    "deploy models are for inference; train target, repvgg, csla or hs and convert (or fine-tune one with `repopt qat`)"
                        .into(),
                );
            }
            (Some(_), mode) if mode != Mode::Deploy => {
                return bad(format!(
                    "quantization-aware training fine-tunes the deploy form; got mode {mode}"
                ));
            }
            (Some(q), _) => {
                if self.optimizer.is_repopt() {
                    return bad("quantization-aware training fine-tunes with a plain optimizer (sgd or adamw)".into());
                }
                if let Some(f) = q.freeze_observers
                    && !(0.0..=1.0).contains(&f)
                {
                    return bad(format!(
                        "--freeze-observers is a fraction of the training steps in [0, 1], got {f}"
                    ));
                }
                if q.calib_images == 0 {
                    return bad(
                        "--calib-images must be at least 1: calibration needs images".into(),
                    );
                }
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// The dataset directory: the configured one or the dataset's default.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| match self.dataset {
            DatasetKind::FashionMnist => PathBuf::from(crate::data::FASHION_MNIST_DIR),
            DatasetKind::Cifar10 => PathBuf::from("data/cifar-10-batches-bin"),
            DatasetKind::Cifar100 => PathBuf::from("data/cifar-100-binary"),
            DatasetKind::Folder => PathBuf::from("data/images"),
        })
    }
}

/// Sets the keys of `top` in `base`, table by table.
fn overlay(base: &mut serde_json::Value, top: serde_json::Value) {
    match (base, top) {
        (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Longest configuration file read: far beyond any real one, so that a wrong path (a device,
/// a huge file) is refused rather than read without end.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A configuration file's text: a regular file of at most [`MAX_CONFIG_BYTES`], UTF-8.
fn read_config_text(path: &Path) -> Result<String> {
    let bytes = repopt_models::regular_file::read(path, MAX_CONFIG_BYTES)
        .map_err(|e| TrainError::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|_| TrainError::Config(format!("{}: not UTF-8 text", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_with_defaults_and_reject_unknown_keys() {
        let t: TrainConfig = toml::from_str("epochs = 3\noptimizer = \"repopt-sgd\"\n[arch]\npreset = \"B1\"\nnum_blocks = [1, 1, 1, 1]\n").unwrap();
        assert_eq!(t.epochs, 3);
        assert_eq!(t.optimizer, OptimizerKind::RepoptSgd);
        assert_eq!(t.arch.num_blocks, Some([1, 1, 1, 1]));
        assert_eq!(t.batch_size, 256);
        assert!(toml::from_str::<TrainConfig>("epoch = 3").is_err());
        let j: TrainConfig =
            serde_json::from_str(r#"{"mode": "repvgg", "dataset": "cifar10"}"#).unwrap();
        assert_eq!((j.mode, j.dataset), (Mode::Repvgg, DatasetKind::Cifar10));
    }

    #[test]
    fn a_file_over_a_config_changes_only_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let base = TrainConfig {
            epochs: 7,
            arch: ArchConfig {
                preset: "B1".into(),
                se: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let toml_file = dir.path().join("a.toml");
        std::fs::write(&toml_file, "workers = 3\n[arch]\nse = false\n").unwrap();
        let c = TrainConfig::from_file_over(&toml_file, &base).unwrap();
        assert_eq!((c.workers, c.epochs, c.arch.se), (3, 7, false));
        assert_eq!(c.arch.preset, "B1");
        let json_file = dir.path().join("a.json");
        std::fs::write(&json_file, r#"{"lr": 0.5}"#).unwrap();
        let c = TrainConfig::from_file_over(&json_file, &base).unwrap();
        assert_eq!((c.lr, c.epochs), (0.5, 7));
        std::fs::write(&json_file, r#"{"epoch": 3}"#).unwrap();
        let err = TrainConfig::from_file_over(&json_file, &base).unwrap_err();
        assert!(err.to_string().contains("a.json"), "{err}");
    }

    #[test]
    fn repoptimizers_refuse_clipping_and_other_modes() {
        let base = TrainConfig {
            optimizer: OptimizerKind::RepoptSgd,
            scales_source: ScalesSource::Ones,
            ..Default::default()
        };
        assert!(base.validate().is_ok());
        let clipped = TrainConfig {
            clip_grad: Some(5.0),
            ..base.clone()
        };
        assert!(
            clipped
                .validate()
                .unwrap_err()
                .to_string()
                .contains("clipping")
        );
        let repvgg = TrainConfig {
            mode: Mode::Repvgg,
            ..base.clone()
        };
        assert!(
            repvgg
                .validate()
                .unwrap_err()
                .to_string()
                .contains("target")
        );
        let no_file = TrainConfig {
            scales_source: ScalesSource::File,
            ..base
        };
        assert!(
            no_file
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--scales")
        );
        assert!("repopt-sgd".parse::<OptimizerKind>().is_ok());
        assert!(
            "rmsprop"
                .parse::<OptimizerKind>()
                .unwrap_err()
                .to_string()
                .contains("repopt-adamw")
        );
    }
}
