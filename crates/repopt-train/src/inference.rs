//! Classifying image files with a trained model: the model and its run's settings loaded
//! together, every image preprocessed exactly as the run's evaluation preprocessed its test
//! images, and the most likely classes with their probabilities.

use std::path::Path;

use rand::SeedableRng;
use repopt_models::any::Network;
use repopt_tensor::{Gpu, Tensor, no_grad};

use crate::config::{DatasetKind, TrainConfig};
use crate::data::{
    self, AugRng, CIFAR10_CLASSES, CIFAR100_CLASSES, DataError, FASHION_MNIST_CLASSES, Normalize,
    Preset, Split, Transform,
};
use crate::error::{Result, TrainError};
use crate::trainer::load_model_with_settings;

/// Images per forward pass in [`Classifier::classify_files`], so that memory stays bounded
/// however many files are given.
const FILES_PER_BATCH: usize = 32;

/// How a run's evaluation turns an image into a model input.
///
/// An image file is first brought to the form its dataset stores images in (channels and
/// size, as [`data::read_image`] does for image folders), then given the evaluation
/// [`Transform`]: the resize to the run's resolution and the dataset's normalisation. An
/// image stored in a dataset therefore becomes, written to a PNG file and read back, the
/// very input the evaluation fed the model.
///
/// ```
/// use repopt_train::{config::TrainConfig, inference::Preprocess};
/// let fashion = Preprocess::for_run(&TrainConfig { resolution: Some(32), ..Default::default() });
/// assert_eq!((fashion.channels, fashion.stored), (1, (28, 28)));
/// assert_eq!(fashion.input_shape(), [1, 32, 32]);
/// let input = fashion.pixels(&vec![255; 28 * 28]);
/// assert_eq!(input.len(), 32 * 32);
/// assert!((input[0] - (1.0 - 0.2860) / 0.3530).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Channels of the dataset's images (1: grayscale, 3: RGB).
    pub channels: usize,
    /// `(height, width)` of the dataset's stored images.
    pub stored: (usize, usize),
    /// The evaluation transform (no augmentation).
    pub transform: Transform,
}

impl Preprocess {
    /// The preprocessing of `cfg`'s evaluation: its dataset's channels, stored size and
    /// normalisation, and its resolution.
    pub fn for_run(cfg: &TrainConfig) -> Self {
        let (channels, stored) = match cfg.dataset {
            DatasetKind::FashionMnist => (1, (28, 28)),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => (3, (32, 32)),
            DatasetKind::Folder => {
                let r = cfg.resolution.unwrap_or(224);
                (3, (r, r))
            }
        };
        let normalize = Normalize::for_dataset(&dataset_name(cfg), channels);
        Preprocess {
            channels,
            stored,
            transform: Transform {
                resize: cfg.resolution.map(|r| (r, r)),
                ..Transform::new(Preset::Eval, normalize)
            },
        }
    }

    /// `[C, H, W]` of one model input.
    pub fn input_shape(&self) -> [usize; 3] {
        let (h, w) = self.transform.output_size(self.stored.0, self.stored.1);
        [self.channels, h, w]
    }

    /// The model input for an image in stored form (`channels x stored` bytes, CHW).
    ///
    /// # Panics
    ///
    /// If `pixels` is not `channels * stored.0 * stored.1` bytes long.
    pub fn pixels(&self, pixels: &[u8]) -> Vec<f32> {
        let [c, h, w] = self.input_shape();
        let mut out = vec![0.0; c * h * w];
        // The evaluation preset draws no random number; the generator only fills the slot.
        let mut rng = AugRng::seed_from_u64(0);
        let (sh, sw) = self.stored;
        self.transform.apply(pixels, c, sh, sw, &mut rng, &mut out);
        out
    }

    /// The model input for an image file (JPEG or PNG, any size; converted to the dataset's
    /// channels and stored size first).
    ///
    /// # Errors
    ///
    /// [`DataError::Io`] or [`DataError::Image`], naming the file.
    pub fn file(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        Ok(self.pixels(&data::read_image(path, self.channels, self.stored)?))
    }
}

/// The name the dataset loaders give `cfg`'s dataset, which selects its normalisation.
fn dataset_name(cfg: &TrainConfig) -> String {
    match cfg.dataset {
        DatasetKind::Folder => cfg
            .data_dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image-folder".to_string()),
        kind => kind.name().to_string(),
    }
}

/// One class and its probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Class index (the label the model was trained with).
    pub class: usize,
    /// Class name (`class N` when the run's dataset does not name its classes here).
    pub name: String,
    /// Softmax probability.
    pub probability: f32,
}

/// A trained model ready to classify image files as its run's evaluation would.
///
/// ```
/// use repopt_models::{Mode, RepOptVgg, VggConfig};
/// use repopt_train::{config::TrainConfig, inference::Classifier};
///
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let config = VggConfig {
///     num_blocks: [1, 1, 1, 1],
///     width_multipliers: [0.25; 4],
///     in_channels: 1,
///     num_classes: 10,
///     ..VggConfig::preset("A0")?
/// };
/// let model = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
/// let classifier = Classifier::new(model, &TrainConfig::default())?;
/// let image = vec![0.0; 28 * 28];
/// let top = classifier.classify(&image, 3)?;
/// assert_eq!(top[0].len(), 3);
/// assert!(top[0][0].probability >= top[0][1].probability);
/// assert_eq!(classifier.class_names()[0], "T-shirt/top");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Classifier {
    model: Network,
    preprocess: Preprocess,
    class_names: Vec<String>,
}

impl Classifier {
    /// Loads a model from a run directory, a model file, a training checkpoint or a deploy
    /// model written by `repopt convert`, with its run's settings: those in the file's
    /// metadata (checkpoints and converted models carry them), else the run's `config.json`
    /// beside it, else the defaults of `repopt train` (Fashion-MNIST at 28x28), as
    /// `repopt eval` assumes.
    ///
    /// # Errors
    ///
    /// Unreadable or invalid files (named), and settings whose images do not have the
    /// channels the model takes.
    pub fn load(gpu: &Gpu, path: &Path) -> Result<Self> {
        let (model, cfg) = load_model_with_settings(gpu, path)?;
        Classifier::new(model, &cfg).map_err(|e| match e {
            TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// A classifier for `model` trained as `cfg` describes.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] when `cfg`'s dataset has images with other channels than the
    /// model takes.
    pub fn new(model: impl Into<Network>, cfg: &TrainConfig) -> Result<Self> {
        let model = model.into();
        let preprocess = Preprocess::for_run(cfg);
        let wanted = model.in_channels();
        if preprocess.channels != wanted {
            return Err(TrainError::Config(format!(
                "the model takes {wanted}-channel images, but its run's dataset ({}) has {}-channel images",
                cfg.dataset, preprocess.channels
            )));
        }
        let class_names = class_names(cfg, model.num_classes());
        Ok(Classifier {
            model,
            preprocess,
            class_names,
        })
    }

    /// The model.
    pub fn model(&self) -> &Network {
        &self.model
    }

    /// How images become model inputs.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Class names by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The `top` most likely classes of each preprocessed image in `inputs` (whole images of
    /// [`Preprocess::input_shape`], back to back), most likely first.
    ///
    /// # Errors
    ///
    /// [`TrainError::Config`] when `inputs` does not hold whole images, and engine failures.
    pub fn classify(&self, inputs: &[f32], top: usize) -> Result<Vec<Vec<Prediction>>> {
        let shape = self.preprocess.input_shape();
        let size: usize = shape.iter().product();
        if !inputs.len().is_multiple_of(size) {
            return Err(TrainError::Config(format!(
                "{} values are not whole {shape:?} images",
                inputs.len()
            )));
        }
        let n = inputs.len() / size;
        if n == 0 {
            return Ok(Vec::new());
        }
        let gpu = &self.model.gpu();
        let logits = no_grad(|| -> Result<Vec<f32>> {
            let x = Tensor::from_slice(gpu, inputs, &[n, shape[0], shape[1], shape[2]])?;
            Ok(self.model.forward(&x, false)?.to_vec()?)
        })?;
        let classes = self.model.num_classes();
        Ok(logits
            .chunks_exact(classes)
            .map(|row| self.ranked(row, top))
            .collect())
    }

    /// The `top` most likely classes of each image file, in the order given.
    ///
    /// # Errors
    ///
    /// The first file that cannot be read or decoded ([`DataError`], naming it), before
    /// anything runs on the device; engine failures.
    pub fn classify_files<P: AsRef<Path>>(
        &self,
        paths: &[P],
        top: usize,
    ) -> Result<Vec<Vec<Prediction>>> {
        let inputs = paths
            .iter()
            .map(|p| self.preprocess.file(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(paths.len());
        for chunk in inputs.chunks(FILES_PER_BATCH) {
            out.extend(self.classify(&chunk.concat(), top)?);
        }
        Ok(out)
    }

    /// Softmax of one row of logits, as the `top` most likely classes.
    fn ranked(&self, logits: &[f32], top: usize) -> Vec<Prediction> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let exp: Vec<f64> = logits.iter().map(|&z| (z as f64 - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // Stable, so equal probabilities keep label order.
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]));
        order
            .into_iter()
            .take(top)
            .map(|class| Prediction {
                class,
                name: self.class_names[class].clone(),
                probability: (exp[class] / total) as f32,
            })
            .collect()
    }
}

/// The dataset's class names when they are known here and match the model's class count;
/// `class N` otherwise (an image folder that is not at hand, another class count).
fn class_names(cfg: &TrainConfig, classes: usize) -> Vec<String> {
    let known: Option<Vec<String>> = match cfg.dataset {
        DatasetKind::FashionMnist => Some(FASHION_MNIST_CLASSES.map(String::from).to_vec()),
        DatasetKind::Cifar10 => Some(CIFAR10_CLASSES.map(String::from).to_vec()),
        DatasetKind::Cifar100 => Some(CIFAR100_CLASSES.map(String::from).to_vec()),
        DatasetKind::Folder => data::image_folder_classes(&cfg.data_dir(), Some(Split::Train)).ok(),
    };
    match known {
        Some(names) if names.len() == classes => names,
        _ => (0..classes).map(|i| format!("class {i}")).collect(),
    }
}
