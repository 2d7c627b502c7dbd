//! Architecture settings: the named configs (A0 ... L2), custom ones, and the block mode.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain;
use crate::error::ModelError;

/// How each block is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// RepOpt-VGG's trained and deployed form: `ReLU(BN(conv3x3(x)))`.
    Target,
    /// RepVGG's training-time block: `ReLU(BN(conv3x3 x) + BN(conv1x1 x) [+ BN(x)])`.
    Repvgg,
    /// The imaginary CSLA block: `ReLU(BN(s*conv3x3 x + t*conv1x1 x [+ u*x]))`, s and t
    /// constant, u trainable.
    Csla,
    /// The Hyper-Search model: the CSLA block with s, t and u all trainable.
    Hs,
    /// The inference form every mode converts to: `ReLU(conv3x3 x + bias)`.
    Deploy,
}

impl Mode {
    /// Every mode, for help texts.
    pub const ALL: [Mode; 5] = [
        Mode::Target,
        Mode::Repvgg,
        Mode::Csla,
        Mode::Hs,
        Mode::Deploy,
    ];

    /// The lowercase name used on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Target => "target",
            Mode::Repvgg => "repvgg",
            Mode::Csla => "csla",
            Mode::Hs => "hs",
            Mode::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unknown mode '{s}' (expected target, repvgg, csla, hs or deploy)"
                ))
            })
    }
}

/// A RepVGG-style network: a stem block, four stages, global pooling and a linear classifier.
///
/// ```
/// use repopt_models::VggConfig;
/// let b1 = VggConfig::preset("B1").unwrap();
/// assert_eq!(b1.stage_channels(), [64, 128, 256, 512, 2048]);
/// let tiny = VggConfig { num_blocks: [1, 1, 1, 1], width_multipliers: [0.25; 4], num_classes: 10, ..VggConfig::preset("A0").unwrap() };
/// assert_eq!(tiny.stage_channels(), [16, 16, 32, 64, 128]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VggConfig {
    /// Preset name this config came from, or "custom".
    pub name: String,
    /// Blocks in stages 1 to 4.
    pub num_blocks: [usize; 4],
    /// Width multipliers of stages 1 to 4 (stage 0 uses the first, capped at 64 channels).
    pub width_multipliers: [f32; 4],
    /// Stride of the first block of stage 0 to 4.
    pub strides: [usize; 5],
    /// Channels of the input images.
    pub in_channels: usize,
    /// Classes of the classifier.
    pub num_classes: usize,
    /// A squeeze-excitation block after each ReLU.
    pub use_se: bool,
}

const PRESETS: &[(&str, [usize; 4], [f32; 4])] = &[
    ("A0", [2, 4, 14, 1], [0.75, 0.75, 0.75, 2.5]),
    ("A1", [2, 4, 14, 1], [1.0, 1.0, 1.0, 2.5]),
    ("B0", [4, 6, 16, 1], [1.0, 1.0, 1.0, 2.5]),
    ("B1", [4, 6, 16, 1], [2.0, 2.0, 2.0, 4.0]),
    ("B2", [4, 6, 16, 1], [2.5, 2.5, 2.5, 5.0]),
    ("L1", [8, 14, 24, 1], [2.0, 2.0, 2.0, 4.0]),
    ("L2", [8, 14, 24, 1], [2.5, 2.5, 2.5, 5.0]),
];

impl VggConfig {
    /// Names of the presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.0).collect()
    }

    /// A named config (case-insensitive) with ImageNet's 3 input channels and 1000 classes.
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        let (n, blocks, widths) = PRESETS
            .iter()
            .find(|p| p.0.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "unknown config '{name}' (expected one of {})",
                    Self::preset_names().join(", ")
                ))
            })?;
        Ok(VggConfig {
            name: n.to_string(),
            num_blocks: *blocks,
            width_multipliers: *widths,
            strides: [2; 5],
            in_channels: 3,
            num_classes: 1000,
            use_se: false,
        })
    }

    /// Output channels of stage 0 to 4.
    pub fn stage_channels(&self) -> [usize; 5] {
        let w = self.width_multipliers;
        let c = |base: f32, m: f32| (base * m) as usize;
        [
            c(64.0, w[0]).min(64),
            c(64.0, w[0]),
            c(128.0, w[1]),
            c(256.0, w[2]),
            c(512.0, w[3]),
        ]
    }

    /// Checks the config can be built: every value within its [`domain`], and every
    /// parameter tensor and the model as a whole within [`domain::MAX_TENSOR_BYTES`] and
    /// [`domain::MAX_MODEL_BYTES`], computed before anything is allocated.
    ///
    /// ```
    /// use repopt_models::VggConfig;
    /// let wide = VggConfig { width_multipliers: [f32::INFINITY; 4], ..VggConfig::preset("A0").unwrap() };
    /// assert!(wide.validate().unwrap_err().to_string().contains("width_multipliers must be in (0, 16], got inf"));
    /// ```
    pub fn validate(&self) -> Result<(), ModelError> {
        let config = |r: Result<(), String>| r.map_err(ModelError::Config);
        config(domain::NUM_BLOCKS.check_all("num_blocks", &self.num_blocks))?;
        config(domain::WIDTH.check_all("width_multipliers", &self.width_multipliers))?;
        config(domain::STRIDE.check_all("strides", &self.strides))?;
        config(
            domain::IN_CHANNELS
                .check("in_channels", self.in_channels)
                .map(drop),
        )?;
        config(
            domain::CLASSES
                .check("num_classes", self.num_classes)
                .map(drop),
        )?;
        if self.stage_channels().contains(&0) {
            return config(Err(format!(
                "width multipliers {:?} leave a stage with no channels",
                self.width_multipliers
            )));
        }
        config(self.check_sizes())
    }

    /// Bytes of every parameter tensor, and of all together, in the form that has the most
    /// (RepVGG's: a 1x1 kernel and up to three batch norms beside every 3x3 kernel).
    fn check_sizes(&self) -> Result<(), String> {
        let mut tensors: Vec<(String, Vec<usize>)> = Vec::new();
        for b in self.blocks() {
            let (co, ci) = (b.out_channels, b.in_channels);
            tensors.push((
                format!("the 3x3 kernel of block {}", b.name),
                vec![co, ci, 3, 3],
            ));
            tensors.push((format!("the 1x1 kernel of block {}", b.name), vec![co, ci]));
            tensors.push((format!("the batch norms of block {}", b.name), vec![12, co]));
            if self.use_se {
                let hidden = (co / 4).max(1);
                tensors.push((
                    format!("the squeeze-excitation of block {}", b.name),
                    vec![2, co, hidden + 1],
                ));
            }
        }
        let features = self.stage_channels()[4];
        tensors.push((
            "the classifier".into(),
            vec![self.num_classes, features + 1],
        ));
        let mut total = Some(0u64);
        for (what, dims) in &tensors {
            let bytes = domain::within(what, domain::f32_bytes(dims), domain::MAX_TENSOR_BYTES)?;
            total = total.and_then(|t| t.checked_add(bytes));
        }
        domain::within(
            &format!("{} (all parameters)", self.name),
            total,
            domain::MAX_MODEL_BYTES,
        )
        .map(drop)
    }

    /// Every block in order: (name, in channels, out channels, stride).
    /// Names follow the reference implementation: `stage0`, then `stage{1..4}.{index}`.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let ch = self.stage_channels();
        let mut out = vec![BlockSpec {
            name: "stage0".into(),
            in_channels: self.in_channels,
            out_channels: ch[0],
            stride: self.strides[0],
            depth: 0,
            index: 0,
        }];
        let mut in_c = ch[0];
        for stage in 0..4 {
            for i in 0..self.num_blocks[stage] {
                out.push(BlockSpec {
                    name: format!("stage{}.{}", stage + 1, i),
                    in_channels: in_c,
                    out_channels: ch[stage + 1],
                    stride: if i == 0 { self.strides[stage + 1] } else { 1 },
                    depth: i,
                    index: out.len(),
                });
                in_c = ch[stage + 1];
            }
        }
        out
    }
}

/// One block of a [`VggConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// `stage0` or `stage{s}.{i}`.
    pub name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Stride of its convolutions.
    pub stride: usize,
    /// Index within its stage (0 for stage 0 and the first block of every stage).
    pub depth: usize,
    /// Position in the network, counting from 0 for `stage0`.
    pub index: usize,
}

impl BlockSpec {
    /// Whether the block has an identity branch (input and output shapes match).
    pub fn has_identity(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }

    /// The Hyper-Search initial value of the scales after the 3x3 and 1x1 convolutions:
    /// 1 for the first block of a stage, `sqrt(2 / l)` for the block at depth `l >= 1`.
    pub fn hs_initial_scale(&self) -> f32 {
        if self.depth == 0 {
            1.0
        } else {
            (2.0 / self.depth as f32).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_the_paper() {
        let b1 = VggConfig::preset("b1").unwrap();
        assert_eq!(b1.stage_channels(), [64, 128, 256, 512, 2048]);
        assert_eq!(b1.blocks().len(), 1 + 4 + 6 + 16 + 1);
        let a0 = VggConfig::preset("A0").unwrap();
        assert_eq!(a0.stage_channels(), [48, 48, 96, 192, 1280]);
        assert!(
            VggConfig::preset("Z9")
                .unwrap_err()
                .to_string()
                .contains("A0")
        );
    }

    #[test]
    fn identity_branches_and_hs_scales() {
        let blocks = VggConfig::preset("B1").unwrap().blocks();
        assert!(!blocks[0].has_identity());
        assert!(!blocks[1].has_identity() && blocks[2].has_identity());
        assert_eq!(blocks[1].hs_initial_scale(), 1.0);
        assert_eq!(blocks[3].hs_initial_scale(), 1.0);
        assert!((blocks[4].hs_initial_scale() - (2.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert_eq!(
            blocks.iter().filter(|b| b.has_identity()).count(),
            3 + 5 + 15
        );
    }

    #[test]
    fn modes_parse() {
        assert_eq!("RepVGG".parse::<Mode>().unwrap(), Mode::Repvgg);
        assert!("plain".parse::<Mode>().is_err());
    }
}
