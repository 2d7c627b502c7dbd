//! RepOpt-GhostNet's hyper-parameters: per ghost module, t (the constant scale after the
//! depthwise cheap operation, `cheap_operation.1.weight`) and u (the trainable identity
//! scale, `fusion_scale.weight`), and the RepOptimizer built from them through the ghost
//! module's declaration ([`CslaBlock::ghost`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use repopt_tensor::Tensor;
use repopt_tensor::optim::{GradMult, ParamSpec};
use serde::Serialize;

use super::config::GhostConfig;
use super::module::{CHEAP_KERNEL, Cheap, hs_initial_t};
use super::network::RepOptGhostNet;
use crate::HostTensor;
use crate::checkpoint;
use crate::config::Mode;
use crate::error::{ModelError, Result};
use crate::gr::CslaBlock;
use crate::repoptimizer::{IdentityInit, RepOptimizerConfig};
use crate::role::ParamKind;

/// Scales of one ghost module.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleScales {
    /// State-dict prefix (`blocks.0.0.ghost1`).
    pub module: String,
    /// t, after the depthwise convolution.
    pub t: Vec<f32>,
    /// u, the identity branch.
    pub u: Vec<f32>,
}

/// Mean scales of a module.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleSummary {
    /// Module name.
    pub module: String,
    /// Mean of t.
    pub t: f32,
    /// Mean of u.
    pub u: f32,
}

/// Scales of every ghost module of a GhostNet, in network order.
#[derive(Clone, Debug, PartialEq)]
pub struct GhostScales {
    /// The modules.
    pub modules: Vec<ModuleScales>,
}

fn t_key(module: &str) -> String {
    format!("{module}.cheap_operation.1.weight")
}

fn u_key(module: &str) -> String {
    format!("{module}.fusion_scale.weight")
}

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// (name, channels, position for the Hyper-Search initialisation) of every module.
fn modules(config: &GhostConfig) -> Vec<(String, usize, usize)> {
    config
        .bottlenecks()
        .iter()
        .flat_map(|b| {
            let n = b.index_in_stage;
            [
                (format!("{}.ghost1", b.name), b.mid, 2 * n - 1),
                (format!("{}.ghost2", b.name), b.out, 2 * n),
            ]
        })
        .collect()
}

impl GhostScales {
    /// Picks every module's t and u out of named tensors (others are ignored, so a whole
    /// Hyper-Search checkpoint works too). A missing key, a wrong length, a non-finite
    /// value or a scale key of no module is an error naming the key.
    pub fn from_named(tensors: &[HostTensor], config: &GhostConfig, origin: &str) -> Result<Self> {
        let err = |message: String| ModelError::Scales {
            origin: origin.to_string(),
            message,
        };
        let named: HashMap<&str, &[f32]> = tensors
            .iter()
            .map(|t| (t.name.as_str(), t.data.as_slice()))
            .collect();
        let take = |k: String, channels: usize| -> Result<Vec<f32>> {
            let v = named.get(k.as_str()).ok_or_else(|| {
                err(format!(
                    "missing '{k}' ({} has this module with {channels} channels)",
                    config.name
                ))
            })?;
            if v.len() != channels {
                return Err(err(format!(
                    "'{k}' has {} values, the module of {} has {channels} channels (scales for another width?)",
                    v.len(),
                    config.name
                )));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(err(format!("'{k}' holds a non-finite value at index {i}")));
            }
            Ok(v.to_vec())
        };
        let all = modules(config);
        let mut out = Vec::with_capacity(all.len());
        for (name, c, _) in &all {
            out.push(ModuleScales {
                module: name.clone(),
                t: take(t_key(name), *c)?,
                u: take(u_key(name), *c)?,
            });
        }
        let known: std::collections::HashSet<String> = all
            .iter()
            .flat_map(|(n, _, _)| [t_key(n), u_key(n)])
            .collect();
        if let Some(extra) = named
            .keys()
            .filter(|k| {
                (k.ends_with(".fusion_scale.weight") || k.ends_with(".cheap_operation.1.weight"))
                    && !known.contains(**k)
            })
            .min()
        {
            return Err(err(format!(
                "'{extra}' belongs to no ghost module of {} (scales for a different GhostNet?)",
                config.name
            )));
        }
        Ok(GhostScales { modules: out })
    }

    /// Reads scales from an authors' `.pth` file or a safetensors file.
    pub fn load(path: &Path, config: &GhostConfig) -> Result<Self> {
        let named = crate::scales::read_named(path)?;
        Self::from_named(&named, config, &path.display().to_string())
    }

    /// The scales as named tensors, with the reference's names.
    pub fn to_host(&self) -> Vec<HostTensor> {
        self.modules
            .iter()
            .flat_map(|m| {
                [(t_key(&m.module), &m.t), (u_key(&m.module), &m.u)].map(|(name, v)| HostTensor {
                    name,
                    shape: vec![v.len()],
                    data: v.clone(),
                })
            })
            .collect()
    }

    /// Writes them to a safetensors file (replaced whole).
    pub fn save(&self, path: &Path, config: &GhostConfig) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert(checkpoint::keys::FORMAT.into(), "repopt-scales".into());
        meta.insert(
            checkpoint::keys::CONFIG.into(),
            serde_json::to_string(config).unwrap_or_default(),
        );
        checkpoint::save_tensors(path, &self.to_host(), &meta)
    }

    /// The Hyper-Search model's initial values: t = `sqrt(2 / (n + 1))`, u = 1.
    pub fn hs_initial(config: &GhostConfig) -> Self {
        GhostScales {
            modules: modules(config)
                .into_iter()
                .map(|(module, c, n)| ModuleScales {
                    module,
                    t: vec![hs_initial_t(n); c],
                    u: vec![1.0; c],
                })
                .collect(),
        }
    }

    /// All ones (an ablation).
    pub fn ones(config: &GhostConfig) -> Self {
        let mut s = Self::hs_initial(config);
        for m in &mut s.modules {
            m.t.fill(1.0);
        }
        s
    }

    /// Each module's t and u replaced by their channel means (an ablation).
    pub fn channel_averaged(&self) -> Self {
        let mut s = self.clone();
        for m in &mut s.modules {
            let (t, u) = (mean(&m.t), mean(&m.u));
            m.t.fill(t);
            m.u.fill(u);
        }
        s
    }

    /// Mean t and u per module.
    pub fn summary(&self) -> Vec<ModuleSummary> {
        self.modules
            .iter()
            .map(|m| ModuleSummary {
                module: m.module.clone(),
                t: mean(&m.t),
                u: mean(&m.u),
            })
            .collect()
    }

    /// The current scales of a `csla` or `hs` model (what a search produces).
    pub fn from_model(model: &RepOptGhostNet) -> Result<Self> {
        let mut out = Vec::new();
        for m in model.modules() {
            let Cheap::Csla { layer, .. } = &m.cheap else {
                return Err(ModelError::WrongMode {
                    op: "reading GhostNet scales",
                    expected: "csla or hs",
                    got: model.mode(),
                });
            };
            out.push(ModuleScales {
                module: m.name.clone(),
                t: layer.branches[0].scale.to_vec()?,
                u: layer.branches[1].kernel.to_vec()?,
            });
        }
        Ok(GhostScales { modules: out })
    }

    /// Writes t (constants) and u (initial values) into a `csla` or `hs` model.
    pub fn write_into(&self, model: &RepOptGhostNet) -> Result<()> {
        self.check(model)?;
        for (m, s) in model.modules().into_iter().zip(&self.modules) {
            let Cheap::Csla { layer, .. } = &m.cheap else {
                return Err(ModelError::WrongMode {
                    op: "writing GhostNet scales",
                    expected: "csla or hs",
                    got: model.mode(),
                });
            };
            layer.branches[0].scale.write(&s.t)?;
            layer.branches[1].kernel.write(&s.u)?;
        }
        Ok(())
    }

    fn check(&self, model: &RepOptGhostNet) -> Result<()> {
        let mods = model.modules();
        let bad = |message: String| ModelError::Scales {
            origin: "RepOptimizer".into(),
            message,
        };
        if mods.len() != self.modules.len() {
            return Err(bad(format!(
                "{} modules of scales for a model of {} ghost modules",
                self.modules.len(),
                mods.len()
            )));
        }
        for (m, s) in mods.iter().zip(&self.modules) {
            if m.name != s.module || s.t.len() != m.channels() || s.u.len() != m.channels() {
                return Err(bad(format!(
                    "scales of module '{}' do not fit model module '{}' ({} channels)",
                    s.module,
                    m.name,
                    m.channels()
                )));
            }
        }
        Ok(())
    }

    /// The declared block of module `i`.
    pub fn block(&self, i: usize) -> CslaBlock {
        let m = &self.modules[i];
        CslaBlock::ghost(m.t.len(), CHEAP_KERNEL, m.t.clone())
    }
}

/// Prepares a target-mode GhostNet for a RepOptimizer, as [`crate::repoptimizer::prepare`]
/// does for RepOpt-VGG: each ghost module's depthwise kernel is re-initialised to
/// `t * W + u0 * I` (W its current kernel; u0 the searched u, or 1) and gets the Grad Mult
/// `t^p + 1 (centre)`, both derived from the module's declaration.
pub fn prepare(
    model: &RepOptGhostNet,
    scales: &GhostScales,
    config: &RepOptimizerConfig,
    weight_decay: f32,
    _seed: u64,
) -> Result<Vec<ParamSpec>> {
    if model.mode() != Mode::Target {
        return Err(ModelError::WrongMode {
            op: "RepOptimizer",
            expected: "target",
            got: model.mode(),
        });
    }
    scales.check(model)?;
    // Every declaration is checked before the first kernel is rewritten.
    let blocks: Vec<CslaBlock> = (0..scales.modules.len()).map(|i| scales.block(i)).collect();
    for (b, m) in blocks.iter().zip(&scales.modules) {
        b.validate_for(config.rule)
            .map_err(|e| ModelError::Scales {
                origin: "RepOptimizer".into(),
                message: format!("module {}: {e}", m.module),
            })?;
        if let Some(i) = m.u.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Scales {
                origin: "RepOptimizer".into(),
                message: format!(
                    "u of module {} holds a non-finite value at index {i}",
                    m.module
                ),
            });
        }
    }
    let _guard = repopt_tensor::NoGradGuard::new();
    let mut specs = Vec::new();
    for param in model.param_roles() {
        let index = match param.role.block {
            Some(i) if param.role.kind == ParamKind::TargetKernel => Some(i),
            _ => None,
        };
        let kernel = param.tensor.clone();
        let mut spec = param.spec(weight_decay);
        let Some(i) = index else {
            specs.push(spec);
            continue;
        };
        let block = &blocks[i];
        if config.reinit {
            let u0 = match config.identity_init {
                IdentityInit::Searched => scales.modules[i].u.clone(),
                IdentityInit::One => vec![1.0; scales.modules[i].u.len()],
            };
            let w = block.equivalent_kernel(&[kernel.to_vec()?, u0])?;
            kernel.write(&w)?;
        }
        if config.grad_mult {
            let m = block.grad_mult(config.rule);
            spec.grad_mult = Some(GradMult::Dense(Tensor::from_slice(
                kernel.gpu(),
                &m,
                kernel.shape(),
            )?));
        }
        specs.push(spec);
    }
    Ok(specs)
}
