//! GhostNet's configuration: the official table of bottlenecks (RepGhostNet's, which
//! RepOpt-GhostNet shares), width multipliers, and the channel rounding that goes with them.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// One bottleneck row of the official table: depthwise kernel, expansion (hidden) width,
/// output width, squeeze-excitation ratio, stride; widths before the multiplier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    /// Depthwise kernel size of the strided convolution and the shortcut.
    pub kernel: usize,
    /// Hidden channels before the width multiplier.
    pub expansion: usize,
    /// Output channels before the width multiplier.
    pub out: usize,
    /// Squeeze-excitation ratio (0: none).
    pub se_ratio: f32,
    /// Stride.
    pub stride: usize,
}

const fn row(kernel: usize, expansion: usize, out: usize, se: bool, stride: usize) -> Row {
    Row {
        kernel,
        expansion,
        out,
        se_ratio: if se { 0.25 } else { 0.0 },
        stride,
    }
}

/// The official table, one inner list per `blocks.{i}` sequence of the reference model.
pub const TABLE: &[&[Row]] = &[
    &[row(3, 8, 16, false, 1)],
    &[row(3, 24, 24, false, 2)],
    &[row(3, 36, 24, false, 1)],
    &[row(5, 36, 40, true, 2)],
    &[row(5, 60, 40, true, 1)],
    &[row(3, 120, 80, false, 2)],
    &[
        row(3, 100, 80, false, 1),
        row(3, 120, 80, false, 1),
        row(3, 120, 80, false, 1),
        row(3, 240, 112, true, 1),
        row(3, 336, 112, true, 1),
    ],
    &[row(5, 336, 160, true, 2)],
    &[
        row(5, 480, 160, false, 1),
        row(5, 480, 160, true, 1),
        row(5, 480, 160, false, 1),
        row(5, 480, 160, true, 1),
    ],
];

/// The widths the authors publish models for.
pub const WIDTHS: &[(&str, f64)] = &[
    ("0.5x", 0.5),
    ("0.58x", 0.58),
    ("0.8x", 0.8),
    ("1.0x", 1.0),
    ("1.11x", 1.11),
    ("1.3x", 1.3),
    ("1.5x", 1.5),
    ("2.0x", 2.0),
];

/// Channels of the head's 1x1 convolution, independent of the width.
pub const HEAD_CHANNELS: usize = 1280;

/// Rounds `v` to a multiple of `divisor` (at least `divisor`) without losing more than
/// 10%, as the TensorFlow MobileNet code every GhostNet follows does.
///
/// ```
/// use repopt_models::ghostnet::config::make_divisible;
/// assert_eq!(make_divisible(8.0, 4), 8);
/// assert_eq!(make_divisible(4.2, 4), 4);
/// assert_eq!(make_divisible(4.64, 4), 8); // 4 would lose more than 10%
/// assert_eq!(make_divisible(13.92, 4), 16); // 12 would lose more than 10%
/// ```
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = d.max(((v + d / 2.0) / d).floor() * d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// A GhostNet: width multiplier, classes, input channels and the classifier's dropout.
///
/// ```
/// use repopt_models::ghostnet::GhostConfig;
/// let c = GhostConfig::preset("ghostnet-0.5x")?;
/// assert_eq!(c.width, 0.5);
/// assert_eq!(c.bottlenecks().len(), 16);
/// assert_eq!(c.bottlenecks()[0].out, 8);
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GhostConfig {
    /// Preset name (`ghostnet-0.5x`, ...).
    pub name: String,
    /// Width multiplier (f64: channel rounding is done in double precision, as the
    /// reference does, and a boundary case must round the same way).
    pub width: f64,
    /// Channels of the input images.
    pub in_channels: usize,
    /// Classes of the classifier.
    pub num_classes: usize,
    /// Dropout before the classifier while training (0.2 in the reference).
    pub dropout: f32,
    /// Squeeze-excitation where the table has it.
    pub use_se: bool,
}

/// One bottleneck with its channels resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Bottleneck {
    /// `blocks.{i}.{j}` in the reference's names.
    pub name: String,
    /// Input channels.
    pub input: usize,
    /// Hidden channels (the first ghost module's output).
    pub mid: usize,
    /// Output channels.
    pub out: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Channels of the squeeze-excitation's hidden layer, if it has one.
    pub se_hidden: Option<usize>,
    /// Position of the bottleneck in its run of equal-shaped ones, from 1; the
    /// Hyper-Search initialisation of its two ghost modules follows it.
    pub index_in_stage: usize,
}

impl Bottleneck {
    /// Whether the shortcut is the identity (same shape in and out).
    pub fn identity_shortcut(&self) -> bool {
        self.input == self.out && self.stride == 1
    }
}

impl GhostConfig {
    /// Preset names: `ghostnet-0.5x` to `ghostnet-2.0x`.
    pub fn preset_names() -> Vec<String> {
        WIDTHS.iter().map(|w| format!("ghostnet-{}", w.0)).collect()
    }

    /// Whether `name` names a GhostNet (a preset or not).
    pub fn is_ghostnet(name: &str) -> bool {
        name.trim().to_ascii_lowercase().starts_with("ghostnet")
    }

    /// A preset with ImageNet's 3 input channels and 1000 classes.
    pub fn preset(name: &str) -> Result<Self> {
        let wanted = name.trim().to_ascii_lowercase();
        let (label, width) = WIDTHS
            .iter()
            .find(|w| format!("ghostnet-{}", w.0) == wanted)
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unknown GhostNet '{name}' (expected one of {})",
                    GhostConfig::preset_names().join(", ")
                ))
            })?;
        Ok(GhostConfig {
            name: format!("ghostnet-{label}"),
            width: *width,
            in_channels: 3,
            num_classes: 1000,
            dropout: 0.2,
            use_se: true,
        })
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ModelError::Config(format!("{}: {m}", self.name)));
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 8.0) {
            return err(format!("width {} is outside (0, 8]", self.width));
        }
        if self.in_channels == 0 || self.num_classes == 0 {
            return err("needs at least one input channel and one class".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Channels of the stem.
    pub fn stem_channels(&self) -> usize {
        make_divisible(16.0 * self.width, 4)
    }

    /// Every bottleneck in order.
    pub fn bottlenecks(&self) -> Vec<Bottleneck> {
        let mut input = self.stem_channels();
        let mut index = 0;
        let mut out = Vec::new();
        for (i, stage) in TABLE.iter().enumerate() {
            for (j, r) in stage.iter().enumerate() {
                let o = make_divisible(r.out as f64 * self.width, 4);
                let mid = make_divisible(r.expansion as f64 * self.width, 4);
                // A run of equal-shaped bottlenecks continues across the table's lists.
                index = if r.stride == 1 && input == o {
                    index + 1
                } else {
                    1
                };
                let se = self.use_se && r.se_ratio > 0.0;
                out.push(Bottleneck {
                    name: format!("blocks.{i}.{j}"),
                    input,
                    mid,
                    out: o,
                    kernel: r.kernel,
                    stride: r.stride,
                    se_hidden: se.then(|| make_divisible(mid as f64 * r.se_ratio as f64, 4)),
                    index_in_stage: index,
                });
                input = o;
            }
        }
        out
    }

    /// Channels of the last 1x1 convolution before pooling (`blocks.{n}.0`).
    pub fn last_channels(&self) -> usize {
        let last = TABLE.last().and_then(|s| s.last()).expect("table");
        make_divisible(last.expansion as f64 * self.width * 2.0, 4)
    }

    /// The index of the last 1x1 convolution's sequence (`blocks.9`).
    pub fn last_block_index(&self) -> usize {
        TABLE.len()
    }
}
