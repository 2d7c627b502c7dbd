//! The RepOptimizer's hyper-parameters: per-block channel-wise scales s (after the 3x3
//! conv), t (after the 1x1 conv) and u (the identity branch, where it exists), as searched
//! by a Hyper-Search model or published by the paper's authors.
//!
//! On disk they are named as in the reference implementation
//! (`stage1.1.scale_conv.weight`, `stage1.1.scale_1x1.weight`,
//! `stage1.1.scale_identity.weight`), in the authors' PyTorch `.pth` files or in
//! safetensors files this project writes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::HostTensor;
use crate::block::BlockKind;
use crate::checkpoint;
use crate::config::{BlockSpec, Mode, VggConfig};
use crate::error::{ModelError, Result};
use crate::network::RepOptVgg;

/// Scales of one block.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockScales {
    /// Block name (`stage0`, `stage1.0`, ...).
    pub block: String,
    /// s: after the 3x3 convolution, one per output channel.
    pub conv: Vec<f32>,
    /// t: after the 1x1 convolution.
    pub one: Vec<f32>,
    /// u: the identity branch, for blocks whose input and output shapes match.
    pub identity: Option<Vec<f32>>,
}

/// Mean scales of a block, the data of the paper's Fig. 7.
#[derive(Clone, Debug, Serialize)]
pub struct BlockSummary {
    /// Block name.
    pub block: String,
    /// Mean of s.
    pub s: f32,
    /// Mean of t.
    pub t: f32,
    /// Mean of u (None without an identity branch).
    pub u: Option<f32>,
}

/// Scales for every block of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct Scales {
    /// Blocks in network order.
    pub blocks: Vec<BlockScales>,
}

fn mean(v: &[f32]) -> f32 {
    v.iter().map(|&x| x as f64).sum::<f64>() as f32 / v.len().max(1) as f32
}

fn key(block: &str, kind: &str) -> String {
    format!("{block}.scale_{kind}.weight")
}

impl Scales {
    /// Picks the scales of every block of `config` out of named tensors (other names are
    /// ignored, so a whole Hyper-Search checkpoint works too). A missing key, a wrong
    /// length or a non-finite value is an error naming the key; when a name occurs more
    /// than once, the last tensor counts.
    pub fn from_named(tensors: &[HostTensor], config: &VggConfig, origin: &str) -> Result<Self> {
        let err = |message: String| ModelError::Scales {
            origin: origin.to_string(),
            message,
        };
        let named: HashMap<&str, &[f32]> = tensors
            .iter()
            .map(|t| (t.name.as_str(), t.data.as_slice()))
            .collect();
        let take = |spec: &BlockSpec, kind: &str| -> Result<Vec<f32>> {
            let k = key(&spec.name, kind);
            let v = named.get(k.as_str()).ok_or_else(|| {
                err(format!(
                    "missing '{k}' (config {} has block {} with {} output channels)",
                    config.name, spec.name, spec.out_channels
                ))
            })?;
            if v.len() != spec.out_channels {
                return Err(err(format!(
                    "'{k}' has {} values, block {} has {} output channels (scales for another config?)",
                    v.len(),
                    spec.name,
                    spec.out_channels
                )));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(err(format!("'{k}' holds a non-finite value at index {i}")));
            }
            Ok(v.to_vec())
        };
        let specs = config.blocks();
        let mut blocks = Vec::with_capacity(specs.len());
        for spec in &specs {
            blocks.push(BlockScales {
                block: spec.name.clone(),
                conv: take(spec, "conv")?,
                one: take(spec, "1x1")?,
                identity: if spec.has_identity() {
                    Some(take(spec, "identity")?)
                } else {
                    if named.contains_key(key(&spec.name, "identity").as_str()) {
                        return Err(err(format!(
                            "'{}' exists but block {} has no identity branch (stride {}, {} -> {} channels)",
                            key(&spec.name, "identity"),
                            spec.name,
                            spec.stride,
                            spec.in_channels,
                            spec.out_channels
                        )));
                    }
                    None
                },
            });
        }
        let known: std::collections::HashSet<String> = specs
            .iter()
            .flat_map(|s| ["conv", "1x1", "identity"].map(|k| key(&s.name, k)))
            .collect();
        if let Some(extra) = named
            .keys()
            .filter(|k| k.contains(".scale_") && !known.contains(**k))
            .min()
        {
            return Err(err(format!(
                "'{extra}' belongs to no block of config {} (scales for a deeper model?)",
                config.name
            )));
        }
        Ok(Scales { blocks })
    }

    /// Reads scales for `config` from an authors' `.pth` file or a safetensors file.
    ///
    /// ```no_run
    /// use repopt_models::{Scales, VggConfig};
    /// let b1 = VggConfig::preset("B1")?;
    /// let scales = Scales::load("RepOpt-VGG-B1-scales.pth".as_ref(), &b1)?;
    /// assert_eq!(scales.blocks.len(), 28);
    /// # Ok::<(), repopt_models::ModelError>(())
    /// ```
    pub fn load(path: &Path, config: &VggConfig) -> Result<Self> {
        Self::from_named(&read_named(path)?, config, &path.display().to_string())
    }

    /// Writes the scales as a safetensors file (atomically).
    pub fn save(&self, path: &Path, config: &VggConfig) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert(checkpoint::keys::FORMAT.into(), "repopt-scales".into());
        meta.insert(
            checkpoint::keys::CONFIG.into(),
            serde_json::to_string(config).unwrap_or_default(),
        );
        checkpoint::save_tensors(path, &self.to_host(), &meta)
    }

    /// The scales as named host tensors (reference names).
    pub fn to_host(&self) -> Vec<HostTensor> {
        let mut out = Vec::new();
        for b in &self.blocks {
            let mut push = |kind: &str, v: &Vec<f32>| {
                out.push(HostTensor {
                    name: key(&b.block, kind),
                    shape: vec![v.len()],
                    data: v.clone(),
                })
            };
            push("conv", &b.conv);
            push("1x1", &b.one);
            if let Some(u) = &b.identity {
                push("identity", u);
            }
        }
        out
    }

    /// The scales a CSLA or Hyper-Search model holds now (after Hyper-Search: the result).
    pub fn from_model(model: &RepOptVgg) -> Result<Self> {
        let mut blocks = Vec::new();
        for b in model.blocks() {
            match &b.kind {
                BlockKind::Csla {
                    scale_conv,
                    scale_1x1,
                    scale_identity,
                    ..
                } => blocks.push(BlockScales {
                    block: b.spec.name.clone(),
                    conv: scale_conv.to_vec()?,
                    one: scale_1x1.to_vec()?,
                    identity: scale_identity.as_ref().map(|u| u.to_vec()).transpose()?,
                }),
                _ => {
                    return Err(ModelError::WrongMode {
                        op: "Scales::from_model",
                        expected: "csla or hs",
                        got: model.mode(),
                    });
                }
            }
        }
        Ok(Scales { blocks })
    }

    /// Writes these scales into a CSLA or Hyper-Search model's scale tensors.
    pub fn write_into(&self, model: &RepOptVgg) -> Result<()> {
        if !matches!(model.mode(), Mode::Csla | Mode::Hs)
            || model.blocks().len() != self.blocks.len()
        {
            return Err(ModelError::WrongMode {
                op: "Scales::write_into",
                expected: "csla or hs (same config)",
                got: model.mode(),
            });
        }
        for (b, s) in model.blocks().iter().zip(&self.blocks) {
            if let BlockKind::Csla {
                scale_conv,
                scale_1x1,
                scale_identity,
                ..
            } = &b.kind
            {
                scale_conv.write(&s.conv)?;
                scale_1x1.write(&s.one)?;
                if let (Some(t), Some(u)) = (scale_identity, &s.identity) {
                    t.write(u)?;
                }
            }
        }
        Ok(())
    }

    fn build(config: &VggConfig, f: impl Fn(&BlockSpec) -> (f32, f32, f32)) -> Self {
        let blocks = config
            .blocks()
            .iter()
            .map(|spec| {
                let (s, t, u) = f(spec);
                let c = spec.out_channels;
                BlockScales {
                    block: spec.name.clone(),
                    conv: vec![s; c],
                    one: vec![t; c],
                    identity: spec.has_identity().then(|| vec![u; c]),
                }
            })
            .collect();
        Scales { blocks }
    }

    /// The Hyper-Search model's initial scales (ablation "HS-initial"): s = t = sqrt(2/l)
    /// (1 for the first block of a stage), u = 1.
    pub fn hs_initial(config: &VggConfig) -> Self {
        Self::build(config, |spec| {
            let s = spec.hs_initial_scale();
            (s, s, 1.0)
        })
    }

    /// All scales 1 (ablation "all ones").
    pub fn ones(config: &VggConfig) -> Self {
        Self::build(config, |_| (1.0, 1.0, 1.0))
    }

    /// Every vector replaced by its mean (ablation "channel-averaged").
    pub fn channel_averaged(&self) -> Self {
        let avg = |v: &Vec<f32>| vec![mean(v); v.len()];
        Scales {
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockScales {
                    block: b.block.clone(),
                    conv: avg(&b.conv),
                    one: avg(&b.one),
                    identity: b.identity.as_ref().map(avg),
                })
                .collect(),
        }
    }

    /// Mean s, t, u per block.
    pub fn summary(&self) -> Vec<BlockSummary> {
        self.blocks
            .iter()
            .map(|b| BlockSummary {
                block: b.block.clone(),
                s: mean(&b.conv),
                t: mean(&b.one),
                u: b.identity.as_deref().map(mean),
            })
            .collect()
    }
}

/// Every float tensor of a `.pth` or safetensors file, in file order, with its shape (the
/// format is recognised by its first bytes, not its extension).
pub fn read_named(path: &Path) -> Result<Vec<HostTensor>> {
    let bytes = crate::regular_file::read(path, u64::MAX).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if bytes.starts_with(b"PK") {
        Ok(crate::pth::read_pth_bytes(
            &bytes,
            &path.display().to_string(),
        )?)
    } else {
        Ok(checkpoint::parse_tensors(&bytes, path)?.tensors)
    }
}
