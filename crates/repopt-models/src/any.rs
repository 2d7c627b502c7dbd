//! One face over every network family (RepOpt-VGG and GhostNet): what a trainer, an
//! evaluator or a command line needs, whichever family a run trains.
//!
//! ```no_run
//! use repopt_models::any::{NetConfig, Network};
//! use repopt_models::Mode;
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! for name in ["A0", "ghostnet-0.5x"] {
//!     let config = NetConfig::preset(name)?.with_data(3, 10);
//!     let net = Network::new(&gpu, &config, Mode::Target, 0)?;
//!     println!("{}: {} parameters", net.name(), net.parameter_count());
//! }
//! # Ok::<(), repopt_models::ModelError>(())
//! ```

use std::path::Path;

use repopt_tensor::optim::ParamSpec;
use repopt_tensor::{Gpu, Tensor};
use serde::{Deserialize, Serialize};

use crate::ghostnet::{self, GhostConfig, GhostScales, RepOptGhostNet};
use crate::layers::Named;
use crate::quant::qat::QatConfig;
use crate::repoptimizer::{self, RepOptimizerConfig};
use crate::role::Param;
use crate::{HostTensor, Mode, RepOptVgg, Result, Scales, VggConfig};

/// A network's configuration, of either family. Serialised as the family's own config, so
/// files written before GhostNet existed read unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetConfig {
    /// RepOpt-VGG / RepVGG.
    Vgg(VggConfig),
    /// RepOpt-GhostNet / RepGhostNet.
    Ghost(GhostConfig),
}

impl NetConfig {
    /// A preset of either family: `A0` ... `L2`, `ghostnet-0.5x` ... `ghostnet-2.0x`.
    pub fn preset(name: &str) -> Result<Self> {
        if GhostConfig::is_ghostnet(name) {
            Ok(NetConfig::Ghost(GhostConfig::preset(name)?))
        } else {
            Ok(NetConfig::Vgg(VggConfig::preset(name)?))
        }
    }

    /// Every preset name.
    pub fn preset_names() -> Vec<String> {
        let mut names: Vec<String> = VggConfig::preset_names()
            .into_iter()
            .map(String::from)
            .collect();
        names.extend(GhostConfig::preset_names());
        names
    }

    /// The same network for images of `in_channels` channels and `classes` classes.
    pub fn with_data(mut self, in_channels: usize, classes: usize) -> Self {
        match &mut self {
            NetConfig::Vgg(c) => {
                c.in_channels = in_channels;
                c.num_classes = classes;
            }
            NetConfig::Ghost(c) => {
                c.in_channels = in_channels;
                c.num_classes = classes;
            }
        }
        self
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        match self {
            NetConfig::Vgg(c) => &c.name,
            NetConfig::Ghost(c) => &c.name,
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        match self {
            NetConfig::Vgg(c) => c.in_channels,
            NetConfig::Ghost(c) => c.in_channels,
        }
    }

    /// Classes.
    pub fn num_classes(&self) -> usize {
        match self {
            NetConfig::Vgg(c) => c.num_classes,
            NetConfig::Ghost(c) => c.num_classes,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        match self {
            NetConfig::Vgg(c) => c.validate(),
            NetConfig::Ghost(c) => c.validate(),
        }
    }
}

/// What a model file holds of a network: its state, configuration and mode.
pub trait SavedModel {
    /// Parameters and buffers with their state-dict names.
    fn state(&self) -> Vec<Named>;
    /// The configuration.
    fn net_config(&self) -> NetConfig;
    /// The mode.
    fn mode(&self) -> Mode;
    /// The observer settings when the model trains with fake quantization.
    fn qat_config(&self) -> Option<QatConfig> {
        None
    }
}

impl SavedModel for RepOptVgg {
    fn state(&self) -> Vec<Named> {
        RepOptVgg::state(self)
    }
    fn net_config(&self) -> NetConfig {
        NetConfig::Vgg(self.config().clone())
    }
    fn mode(&self) -> Mode {
        RepOptVgg::mode(self)
    }
    fn qat_config(&self) -> Option<QatConfig> {
        self.qat().map(|q| q.config().clone())
    }
}

impl SavedModel for RepOptGhostNet {
    fn state(&self) -> Vec<Named> {
        RepOptGhostNet::state(self)
    }
    fn net_config(&self) -> NetConfig {
        NetConfig::Ghost(self.config().clone())
    }
    fn mode(&self) -> Mode {
        RepOptGhostNet::mode(self)
    }
}

impl SavedModel for Network {
    fn state(&self) -> Vec<Named> {
        Network::state(self)
    }
    fn net_config(&self) -> NetConfig {
        self.config()
    }
    fn mode(&self) -> Mode {
        Network::mode(self)
    }
    fn qat_config(&self) -> Option<QatConfig> {
        match self {
            Network::Vgg(n) => n.qat_config(),
            Network::Ghost(_) => None,
        }
    }
}

/// A network of either family.
#[derive(Debug)]
pub enum Network {
    /// RepOpt-VGG / RepVGG.
    Vgg(RepOptVgg),
    /// RepOpt-GhostNet / RepGhostNet.
    Ghost(RepOptGhostNet),
}

macro_rules! each {
    ($self:expr, $n:ident => $e:expr) => {
        match $self {
            Network::Vgg($n) => $e,
            Network::Ghost($n) => $e,
        }
    };
}

impl Network {
    /// A freshly initialised network; `seed` fixes every initial weight.
    pub fn new(gpu: &Gpu, config: &NetConfig, mode: Mode, seed: u64) -> Result<Self> {
        Ok(match config {
            NetConfig::Vgg(c) => Network::Vgg(RepOptVgg::new(gpu, c.clone(), mode, seed)?),
            NetConfig::Ghost(c) => Network::Ghost(RepOptGhostNet::new(gpu, c.clone(), mode, seed)?),
        })
    }

    /// The configuration.
    pub fn config(&self) -> NetConfig {
        match self {
            Network::Vgg(n) => NetConfig::Vgg(n.config().clone()),
            Network::Ghost(n) => NetConfig::Ghost(n.config().clone()),
        }
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        match self {
            Network::Vgg(n) => &n.config().name,
            Network::Ghost(n) => &n.config().name,
        }
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        each!(self, n => n.config().in_channels)
    }

    /// Classes.
    pub fn num_classes(&self) -> usize {
        each!(self, n => n.config().num_classes)
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        each!(self, n => n.mode())
    }

    /// The device the network lives on.
    pub fn gpu(&self) -> Gpu {
        match self {
            Network::Vgg(n) => n.linear().0.gpu().clone(),
            Network::Ghost(n) => n.gpu().clone(),
        }
    }

    /// Logits for images (see the families' `forward`).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        each!(self, n => n.forward(x, training))
    }

    /// Logits at training step `step`: the same as [`Network::forward`] for networks
    /// without randomness, the dropout mask of that step for GhostNet (so a resumed run
    /// draws the masks an uninterrupted one would), and for a VGG in quantization-aware
    /// training the step that decides whether its observers still move.
    pub fn forward_at(&self, x: &Tensor, training: bool, step: u64) -> Result<Tensor> {
        match self {
            Network::Vgg(n) => n.forward_at(x, training, step),
            Network::Ghost(n) => n.forward_at(x, training, step),
        }
    }

    /// Trainable tensors with names and roles.
    pub fn param_roles(&self) -> Vec<Param> {
        each!(self, n => n.param_roles())
    }

    /// Trainable tensors with names.
    pub fn parameters(&self) -> Vec<Named> {
        each!(self, n => n.parameters())
    }

    /// Parameters and buffers.
    pub fn state(&self) -> Vec<Named> {
        each!(self, n => n.state())
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        each!(self, n => n.parameter_count())
    }

    /// Optimizer groups without Grad Mults, weight decay by role.
    pub fn param_specs(&self, weight_decay: f32) -> Vec<ParamSpec> {
        self.param_roles()
            .into_iter()
            .map(|p| p.spec(weight_decay))
            .collect()
    }

    /// Overwrites the state from named host tensors (every tensor must fit exactly).
    pub fn load_state(&self, tensors: &[HostTensor], origin: &str) -> Result<()> {
        crate::network::load_named_state(&self.state(), tensors, origin, self.mode())
    }

    /// The deploy form with the same eval outputs.
    pub fn to_deploy(&self) -> Result<Network> {
        Ok(match self {
            Network::Vgg(n) => Network::Vgg(crate::reparam::to_deploy(n)?),
            Network::Ghost(n) => Network::Ghost(n.to_deploy()?),
        })
    }
}

impl From<RepOptVgg> for Network {
    fn from(n: RepOptVgg) -> Self {
        Network::Vgg(n)
    }
}

impl From<RepOptGhostNet> for Network {
    fn from(n: RepOptGhostNet) -> Self {
        Network::Ghost(n)
    }
}

/// A RepOptimizer's scales for either family.
#[derive(Clone, Debug, PartialEq)]
pub enum NetScales {
    /// Per RepOpt-VGG block: s, t, u.
    Vgg(Scales),
    /// Per ghost module: t, u.
    Ghost(GhostScales),
}

/// A scale file's mean values of one block or module (the data of the paper's Fig. 7),
/// serialised flat: `{"block": "stage1.0", "s": 1.2, "t": 0.4}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScaleMeans {
    /// The block or module.
    pub block: String,
    /// Mean of each kind of scale it has, by kind (`s`, `t`, `u`).
    #[serde(flatten)]
    pub means: std::collections::BTreeMap<&'static str, f32>,
}

impl NetScales {
    /// Reads scales for `config` from an authors' `.pth` or a safetensors file.
    pub fn load(path: &Path, config: &NetConfig) -> Result<Self> {
        Ok(match config {
            NetConfig::Vgg(c) => NetScales::Vgg(Scales::load(path, c)?),
            NetConfig::Ghost(c) => NetScales::Ghost(GhostScales::load(path, c)?),
        })
    }

    /// Picks the scales of `config` out of named tensors.
    pub fn from_named(tensors: &[HostTensor], config: &NetConfig, origin: &str) -> Result<Self> {
        Ok(match config {
            NetConfig::Vgg(c) => NetScales::Vgg(Scales::from_named(tensors, c, origin)?),
            NetConfig::Ghost(c) => NetScales::Ghost(GhostScales::from_named(tensors, c, origin)?),
        })
    }

    /// All ones.
    pub fn ones(config: &NetConfig) -> Self {
        match config {
            NetConfig::Vgg(c) => NetScales::Vgg(Scales::ones(c)),
            NetConfig::Ghost(c) => NetScales::Ghost(GhostScales::ones(c)),
        }
    }

    /// The Hyper-Search model's initial values.
    pub fn hs_initial(config: &NetConfig) -> Self {
        match config {
            NetConfig::Vgg(c) => NetScales::Vgg(Scales::hs_initial(c)),
            NetConfig::Ghost(c) => NetScales::Ghost(GhostScales::hs_initial(c)),
        }
    }

    /// Channel means in place of per-channel values.
    pub fn channel_averaged(&self) -> Self {
        match self {
            NetScales::Vgg(s) => NetScales::Vgg(s.channel_averaged()),
            NetScales::Ghost(s) => NetScales::Ghost(s.channel_averaged()),
        }
    }

    /// The current scales of a `csla` or `hs` network.
    pub fn from_model(net: &Network) -> Result<Self> {
        Ok(match net {
            Network::Vgg(n) => NetScales::Vgg(Scales::from_model(n)?),
            Network::Ghost(n) => NetScales::Ghost(GhostScales::from_model(n)?),
        })
    }

    /// Writes them to a safetensors file.
    pub fn save(&self, path: &Path, config: &NetConfig) -> Result<()> {
        match (self, config) {
            (NetScales::Vgg(s), NetConfig::Vgg(c)) => s.save(path, c),
            (NetScales::Ghost(s), NetConfig::Ghost(c)) => s.save(path, c),
            _ => Err(crate::ModelError::Config(format!(
                "scales of one family cannot be saved for {}",
                config.name()
            ))),
        }
    }

    /// Each kind of scale with what it scales, for legends.
    pub fn kinds(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            NetScales::Vgg(_) => &[("s", "3x3 (s)"), ("t", "1x1 (t)"), ("u", "identity (u)")],
            NetScales::Ghost(_) => &[("t", "depthwise (t)"), ("u", "identity (u)")],
        }
    }

    /// Mean values per block or module.
    pub fn summary(&self) -> Vec<ScaleMeans> {
        match self {
            NetScales::Vgg(s) => s
                .summary()
                .into_iter()
                .map(|b| {
                    let mut means = std::collections::BTreeMap::from([("s", b.s), ("t", b.t)]);
                    if let Some(u) = b.u {
                        means.insert("u", u);
                    }
                    ScaleMeans {
                        block: b.block,
                        means,
                    }
                })
                .collect(),
            NetScales::Ghost(s) => s
                .summary()
                .into_iter()
                .map(|m| ScaleMeans {
                    block: m.module,
                    means: std::collections::BTreeMap::from([("t", m.t), ("u", m.u)]),
                })
                .collect(),
        }
    }
}

/// Prepares a target-mode network for a RepOptimizer (re-initialisation and Grad Mults).
pub fn prepare(
    net: &Network,
    scales: &NetScales,
    config: &RepOptimizerConfig,
    weight_decay: f32,
    seed: u64,
) -> Result<Vec<ParamSpec>> {
    match (net, scales) {
        (Network::Vgg(n), NetScales::Vgg(s)) => {
            repoptimizer::prepare(n, s, config, weight_decay, seed)
        }
        (Network::Ghost(n), NetScales::Ghost(s)) => {
            ghostnet::prepare(n, s, config, weight_decay, seed)
        }
        _ => Err(crate::ModelError::Scales {
            origin: "RepOptimizer".into(),
            message: format!(
                "these scales are for another family of network than {}",
                net.name()
            ),
        }),
    }
}
