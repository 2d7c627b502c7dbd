//! Augmentation presets and the per-sample transform they describe.
//!
//! The preset names follow the RepOptimizers reference code: Hyper-Search
//! on CIFAR uses only crop + flip, final training adds RandAugment, and
//! evaluation only normalises.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use super::{
    DataError, Interpolation, Normalize, RandAugment, pad_random_crop, random_hflip, resize,
};

/// Which augmentations a split gets.
///
/// # Example
///
/// ```
/// use repopt_train::data::Preset;
///
/// assert_eq!("train".parse::<Preset>().unwrap(), Preset::Train);
/// assert_eq!(Preset::Search.to_string(), "search");
/// let err = "bogus".parse::<Preset>().unwrap_err();
/// assert!(err.to_string().contains("expected one of search"));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Padded random crop + horizontal flip (Hyper-Search).
    Search,
    /// Padded random crop + horizontal flip + RandAugment (training).
    Train,
    /// No augmentation, normalisation only (evaluation).
    #[default]
    Eval,
}

impl Preset {
    /// Whether the preset crops and flips.
    ///
    /// # Example
    ///
    /// ```
    /// assert!(repopt_train::data::Preset::Search.crops_and_flips());
    /// ```
    pub fn crops_and_flips(self) -> bool {
        matches!(self, Preset::Search | Preset::Train)
    }

    /// Whether the preset applies RandAugment.
    ///
    /// # Example
    ///
    /// ```
    /// assert!(!repopt_train::data::Preset::Search.rand_augments());
    /// ```
    pub fn rand_augments(self) -> bool {
        matches!(self, Preset::Train)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Search => "search",
            Preset::Train => "train",
            Preset::Eval => "eval",
        })
    }
}

impl FromStr for Preset {
    type Err = DataError;

    /// Accepts `search` (also `hs`, `hyper-search`), `train` (also
    /// `randaugment`) and `eval` (also `none`, `test`, `val`), in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "search" | "hs" | "hyper-search" | "hypersearch" => Ok(Preset::Search),
            "train" | "randaugment" | "randaug" => Ok(Preset::Train),
            "eval" | "none" | "test" | "val" => Ok(Preset::Eval),
            _ => Err(DataError::UnknownPreset {
                name: s.to_string(),
            }),
        }
    }
}

/// Everything done to one sample between the dataset and the batch, in this
/// order:
///
/// 1. resize to `resize` (height, width) if set, so that e.g. 28x28 data
///    feeds a 32x32 model and the crop padding is in model pixels;
/// 2. padded random crop (`pad` zero pixels) and horizontal flip, if the
///    preset [crops and flips](Preset::crops_and_flips);
/// 3. RandAugment, if the preset [uses it](Preset::rand_augments);
/// 4. normalisation to `f32`.
///
/// Random draws happen in that order from the one generator given.
///
/// # Example
///
/// ```
/// use rand::SeedableRng;
/// use repopt_train::data::{AugRng, Normalize, Preset, Transform};
///
/// let t = Transform { resize: Some((32, 32)), ..Transform::new(Preset::Train, Normalize::fashion_mnist()) };
/// assert_eq!(t.output_size(28, 28), (32, 32));
/// let img = vec![0u8; 28 * 28];
/// let mut out = vec![0.0f32; 32 * 32];
/// t.apply(&img, 1, 28, 28, &mut AugRng::seed_from_u64(0), &mut out);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Which augmentations run.
    pub preset: Preset,
    /// Target `(height, width)` applied first; `None` keeps the size.
    pub resize: Option<(usize, usize)>,
    /// Sampling for `resize`.
    pub interpolation: Interpolation,
    /// Zero padding of the random crop (4 in the reference CIFAR recipes).
    pub pad: usize,
    /// RandAugment settings for [`Preset::Train`].
    pub rand_augment: RandAugment,
    /// Conversion to `f32`.
    pub normalize: Normalize,
}

impl Transform {
    /// A transform with no resize, bilinear interpolation, `pad` 4 and the
    /// default RandAugment.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::{Normalize, Preset, Transform};
    /// assert_eq!(Transform::new(Preset::Eval, Normalize::cifar10()).pad, 4);
    /// ```
    pub fn new(preset: Preset, normalize: Normalize) -> Self {
        Transform {
            preset,
            resize: None,
            interpolation: Interpolation::Bilinear,
            pad: 4,
            rand_augment: RandAugment::default(),
            normalize,
        }
    }

    /// The `(height, width)` of the output for an `h x w` input.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::{Normalize, Preset, Transform};
    /// assert_eq!(Transform::new(Preset::Eval, Normalize::unit()).output_size(28, 28), (28, 28));
    /// ```
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        self.resize.unwrap_or((h, w))
    }

    /// Steps 1 to 3: the augmented `u8` image, `c x out_h x out_w` with the
    /// size of [`output_size`](Self::output_size).
    ///
    /// # Panics
    ///
    /// If `img.len() != c * h * w`.
    ///
    /// # Example
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use repopt_train::data::{AugRng, Normalize, Preset, Transform};
    ///
    /// let t = Transform::new(Preset::Eval, Normalize::unit());
    /// let img = vec![7u8; 3 * 4 * 4];
    /// assert_eq!(t.augment(&img, 3, 4, 4, &mut AugRng::seed_from_u64(0)), img);
    /// ```
    pub fn augment<R: Rng + ?Sized>(
        &self,
        img: &[u8],
        c: usize,
        h: usize,
        w: usize,
        rng: &mut R,
    ) -> Vec<u8> {
        let (oh, ow) = self.output_size(h, w);
        let mut out = resize(img, c, h, w, oh, ow, self.interpolation);
        if self.preset.crops_and_flips() {
            out = pad_random_crop(&out, c, oh, ow, self.pad, rng);
            random_hflip(&mut out, c, oh, ow, rng);
        }
        if self.preset.rand_augments() {
            out = self.rand_augment.apply(&out, c, oh, ow, rng);
        }
        out
    }

    /// All four steps, writing `c x out_h x out_w` floats into `out`.
    ///
    /// # Panics
    ///
    /// If `img` or `out` has the wrong length, or `normalize` does not fit
    /// `c` channels.
    ///
    /// # Example
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use repopt_train::data::{AugRng, Normalize, Preset, Transform};
    ///
    /// let t = Transform::new(Preset::Eval, Normalize::unit());
    /// let mut out = [0.0f32; 1];
    /// t.apply(&[255], 1, 1, 1, &mut AugRng::seed_from_u64(0), &mut out);
    /// assert_eq!(out, [1.0]);
    /// ```
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: &[u8],
        c: usize,
        h: usize,
        w: usize,
        rng: &mut R,
        out: &mut [f32],
    ) {
        let (oh, ow) = self.output_size(h, w);
        let augmented = self.augment(img, c, h, w, rng);
        self.normalize.apply(&augmented, c, oh, ow, out);
    }
}
