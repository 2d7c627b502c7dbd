//! What a model costs, computed from its config alone (no device needed).

use serde::Serialize;

use crate::config::{Mode, VggConfig};
use crate::error::Result;

/// Output shape of one stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageShape {
    /// `stage0` ... `stage4`.
    pub stage: String,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// Parameters, multiply-accumulates and shapes of a network at a resolution.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// Config name.
    pub config: String,
    /// Mode.
    pub mode: String,
    /// Input resolution (square).
    pub resolution: usize,
    /// Trainable values.
    pub params: usize,
    /// Multiply-accumulates of the convolutions and the classifier for one image.
    pub flops: u64,
    /// Output shape after each stage.
    pub stages: Vec<StageShape>,
}

fn se_params(c: usize) -> usize {
    let h = (c / 4).max(1);
    h * c + h + c * h + c
}

/// Counts parameters and multiply-accumulates of `config` built in `mode` for square
/// `resolution` inputs.
///
/// ```
/// use repopt_models::{info::model_info, Mode, VggConfig};
/// let info = model_info(&VggConfig::preset("B1").unwrap(), Mode::Target, 224).unwrap();
/// assert_eq!((info.params as f64 / 1e5).round() / 10.0, 51.8);
/// ```
pub fn model_info(config: &VggConfig, mode: Mode, resolution: usize) -> Result<ModelInfo> {
    config.validate()?;
    let mut params = 0usize;
    let mut macs = 0u64;
    let (mut h, mut w) = (resolution, resolution);
    let mut stages: Vec<StageShape> = Vec::new();
    for spec in config.blocks() {
        let (ci, co) = (spec.in_channels, spec.out_channels);
        h = (h + 2 - 3) / spec.stride + 1;
        w = (w + 2 - 3) / spec.stride + 1;
        let pixels = (h * w) as u64;
        let k3 = co * ci * 9;
        let k1 = co * ci;
        let id = spec.has_identity();
        params += match mode {
            Mode::Target => k3 + 2 * co,
            Mode::Repvgg => k3 + 2 * co + k1 + 2 * co + if id { 2 * co } else { 0 },
            Mode::Csla => k3 + k1 + 2 * co + if id { co } else { 0 },
            Mode::Hs => k3 + k1 + 2 * co + 2 * co + if id { co } else { 0 },
            Mode::Deploy => k3 + co,
        };
        macs += k3 as u64 * pixels;
        if matches!(mode, Mode::Repvgg | Mode::Csla | Mode::Hs) {
            macs += k1 as u64 * pixels;
        }
        if config.use_se {
            params += se_params(co);
            macs += 2 * (co * (co / 4).max(1)) as u64;
        }
        let stage = spec.name.split('.').next().unwrap_or("stage").to_string();
        match stages.last_mut() {
            Some(last) if last.stage == stage => {
                last.channels = co;
                last.height = h;
                last.width = w;
            }
            _ => stages.push(StageShape {
                stage,
                channels: co,
                height: h,
                width: w,
            }),
        }
    }
    let features = config.stage_channels()[4];
    params += features * config.num_classes + config.num_classes;
    macs += (features * config.num_classes) as u64;
    Ok(ModelInfo {
        config: config.name.clone(),
        mode: mode.name().into(),
        resolution,
        params,
        flops: macs,
        stages,
    })
}
