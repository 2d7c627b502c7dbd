//! The optimizer a run's settings ask for, with the model prepared for a RepOptimizer.

use repopt_models::any::{NetScales, Network, prepare};
use repopt_models::repoptimizer::{RepOptimizerConfig, UpdateRule};
use repopt_tensor::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};

use crate::config::{OptimizerKind, ScalesSource, TrainConfig};
use crate::error::{Result, TrainError};

/// Builds the optimizer a config asks for, preparing the model for a RepOptimizer.
pub(crate) fn build_optimizer(
    cfg: &TrainConfig,
    model: &Network,
) -> Result<(Box<dyn Optimizer>, Option<NetScales>)> {
    let sgd = SgdConfig {
        momentum: cfg.momentum,
        dampening: 0.0,
        nesterov: cfg.nesterov,
    };
    let mconf = &model.config();
    let scales = if cfg.optimizer.is_repopt() {
        let from_file = || -> Result<NetScales> {
            let path = cfg.scales.as_ref().ok_or_else(|| {
                TrainError::Config(format!("{} needs --scales FILE", cfg.optimizer))
            })?;
            Ok(NetScales::load(path, mconf)?)
        };
        Some(match cfg.scales_source {
            ScalesSource::File => from_file()?,
            ScalesSource::ChannelAveraged => from_file()?.channel_averaged(),
            ScalesSource::Ones => NetScales::ones(mconf),
            ScalesSource::HsInitial => NetScales::hs_initial(mconf),
        })
    } else {
        None
    };
    let specs = match &scales {
        Some(s) => {
            let rule = RepOptimizerConfig {
                rule: if cfg.optimizer == OptimizerKind::RepoptSgd {
                    UpdateRule::Sgd
                } else {
                    UpdateRule::AdamW
                },
                reinit: cfg.reinit,
                grad_mult: cfg.grad_mult,
                identity_init: cfg.identity_init,
            };
            prepare(model, s, &rule, cfg.weight_decay, cfg.seed)?
        }
        None => model.param_specs(cfg.weight_decay),
    };
    let opt: Box<dyn Optimizer> = match cfg.optimizer {
        OptimizerKind::Sgd | OptimizerKind::RepoptSgd => Box::new(Sgd::new(specs, sgd)?),
        OptimizerKind::AdamW | OptimizerKind::RepoptAdamW => {
            Box::new(AdamW::new(specs, AdamWConfig::default())?)
        }
    };
    Ok((opt, scales))
}
