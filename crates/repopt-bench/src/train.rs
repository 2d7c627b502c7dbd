//! Whole training steps (forward, loss, backward, optimizer) per model mode, and the largest
//! batch whose step fits a memory limit: the paper's Table 2 comparison of RepOpt-VGG and
//! RepVGG, measured on this engine, and the same comparison of RepOpt-GhostNet and
//! RepGhostNet.

use repopt_models::Mode;
use repopt_models::any::{NetConfig, NetScales, Network, prepare};
use repopt_models::repoptimizer::RepOptimizerConfig;
use repopt_tensor::optim::{Optimizer, Sgd, SgdConfig};
use repopt_tensor::{Error, Gpu, GpuOptions, Result, Tensor, ops};
use serde::Serialize;

use crate::timing::{TimingBudget, time_gpu};

/// One training-step measurement.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// Block mode (target is RepOpt-VGG or RepOpt-GhostNet trained with its RepOptimizer).
    pub mode: String,
    /// Architecture.
    pub config: String,
    /// Batch size.
    pub batch: usize,
    /// Square input resolution.
    pub res: usize,
    /// Training images per second.
    pub images_per_s: f64,
    /// Median milliseconds per step.
    pub ms_per_step: f64,
    /// The engine's peak live device bytes during a step (parameters, gradients, optimizer
    /// state and activations included).
    pub peak_bytes: u64,
    /// What one steady step costs the host, counted (not timed) after warm-up.
    pub host: StepHostCost,
}

/// The host-side work of one steady training step: deterministic counts (and the host time
/// spent recording), the figures that decide speed on a GPU where a step takes milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StepHostCost {
    /// Kernel dispatches.
    pub dispatches: u64,
    /// Command buffers submitted.
    pub submissions: u64,
    /// Bind groups created (target: 0).
    pub bind_groups_created: u64,
    /// Device buffers created (target: 0).
    pub buffers_created: u64,
    /// Pipelines created (target: 0).
    pub pipelines_created: u64,
    /// Bytes uploaded (target: the batch's images and labels).
    pub bytes_uploaded: u64,
    /// Bytes read back (target: 0 in an unlogged step).
    pub bytes_read_back: u64,
    /// Host milliseconds spent recording launches and uploads, submissions excluded.
    pub encode_ms: f64,
    /// Host milliseconds spent in queue submissions.
    pub submit_ms: f64,
}

impl From<repopt_tensor::HostCounters> for StepHostCost {
    fn from(c: repopt_tensor::HostCounters) -> Self {
        StepHostCost {
            dispatches: c.dispatches,
            submissions: c.submissions,
            bind_groups_created: c.bind_groups_created,
            buffers_created: c.buffers_created,
            pipelines_created: c.pipelines_created,
            bytes_uploaded: c.bytes_uploaded,
            bytes_read_back: c.bytes_read_back,
            encode_ms: c.encode_seconds * 1e3,
            submit_ms: c.submit_seconds * 1e3,
        }
    }
}

/// A model, its optimizer and a synthetic batch in host memory, ready to step.
struct Rig {
    gpu: Gpu,
    model: Network,
    opt: Box<dyn Optimizer>,
    images: Vec<f32>,
    labels: Vec<u32>,
    shape: [usize; 4],
    /// Steps taken, so each step draws its own dropout masks as a training run does.
    steps: u64,
}

fn rig(
    gpu: &Gpu,
    config: &NetConfig,
    mode: Mode,
    batch: usize,
    res: usize,
) -> std::result::Result<Rig, repopt_models::ModelError> {
    let model = Network::new(gpu, config, mode, 0)?;
    // Target mode trains with the RepOptimizer (Grad Mults from HS-initial scales: the
    // values do not change the cost); the other modes with plain SGD.
    let specs = if mode == Mode::Target {
        prepare(
            &model,
            &NetScales::hs_initial(config),
            &RepOptimizerConfig::default(),
            4e-5,
            0,
        )?
    } else {
        model.param_specs(4e-5)
    };
    let opt: Box<dyn Optimizer> = Box::new(Sgd::new(specs, SgdConfig::default())?);
    let shape = [batch, config.in_channels(), res, res];
    // A plan runs nothing, so its input needs no data (and sizes too large for this host
    // can still be planned); a real input is refused before its data is built when the
    // device could not hold it.
    let data: Vec<f32> = if gpu.is_plan_only() {
        Vec::new()
    } else {
        let n = Tensor::check_size(gpu, &shape)? as usize / 4;
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let labels: Vec<u32> = (0..batch)
        .map(|i| (i % config.num_classes()) as u32)
        .collect();
    Ok(Rig {
        gpu: gpu.clone(),
        model,
        opt,
        images: data,
        labels,
        shape,
        steps: 0,
    })
}

/// One step as the trainer runs it: the batch is uploaded from host memory (planned steps
/// have no data, and allocate the same bytes), and nothing is read back.
fn step(r: &mut Rig) -> Result<()> {
    let x = if r.images.is_empty() {
        Tensor::zeros(&r.gpu, &r.shape)?
    } else {
        Tensor::from_slice(&r.gpu, &r.images, &r.shape)?
    };
    let y = Tensor::from_u32(&r.gpu, &r.labels, &[r.shape[0]])?;
    let logits = r
        .model
        .forward_at(&x, true, r.steps)
        .map_err(model_to_engine)?;
    r.steps += 1;
    let loss = ops::cross_entropy(&logits, &y, 0.1)?;
    loss.backward()?;
    r.opt.step(1e-3)?;
    r.opt.zero_grad();
    Ok(())
}

pub(crate) fn model_to_engine(e: repopt_models::ModelError) -> Error {
    match e {
        repopt_models::ModelError::Engine(e) => e,
        other => Error::Invalid {
            op: "bench",
            message: other.to_string(),
        },
    }
}

/// Runs one training step of `config` in each mode, so that a device that measures its
/// kernel choices (`Tuning::Measure`) makes them for every shape the steps use.
pub fn tune_steps(
    gpu: &Gpu,
    config: &NetConfig,
    modes: &[Mode],
    batch: usize,
    res: usize,
) -> Result<()> {
    for &mode in modes {
        let mut r = rig(gpu, config, mode, batch, res).map_err(model_to_engine)?;
        step(&mut r)?;
        gpu.synchronize()?;
    }
    Ok(())
}

/// One steady training step of `config` in `mode`, kernel by kernel (see
/// [`Gpu::set_profiling`]): where the step's time goes.
pub fn profile_step(
    gpu: &Gpu,
    config: &NetConfig,
    mode: Mode,
    batch: usize,
    res: usize,
) -> Result<Vec<repopt_tensor::KernelTime>> {
    let mut r = rig(gpu, config, mode, batch, res).map_err(model_to_engine)?;
    // The first steps allocate state and make the kernel choices.
    step(&mut r)?;
    step(&mut r)?;
    gpu.synchronize()?;
    gpu.set_profiling(true);
    let done = step(&mut r).and_then(|()| gpu.synchronize());
    let report = gpu.kernel_profile();
    gpu.set_profiling(false);
    done.map(|()| report)
}

/// Times one training step of `config` in each mode.
pub fn train_steps(
    gpu: &Gpu,
    config: &NetConfig,
    modes: &[Mode],
    batch: usize,
    res: usize,
    budget: TimingBudget,
) -> Result<Vec<StepResult>> {
    let mut out = Vec::new();
    for &mode in modes {
        let mut r = rig(gpu, config, mode, batch, res).map_err(model_to_engine)?;
        step(&mut r)?;
        gpu.synchronize()?;
        gpu.reset_peak_memory();
        step(&mut r)?;
        gpu.synchronize()?;
        let peak_bytes = gpu.memory().peak_live_bytes;
        let t = time_gpu(gpu, budget, || step(&mut r))?;
        // Counted after the timed steps, when the pool and the caches are in their steady
        // state (the first steps also allocate the optimizer's state).
        let before = gpu.counters();
        step(&mut r)?;
        gpu.synchronize()?;
        let host = gpu.counters().since(&before).into();
        out.push(StepResult {
            mode: mode.name().into(),
            config: config.name().into(),
            batch,
            res,
            images_per_s: batch as f64 / t.median_s,
            ms_per_step: t.median_s * 1e3,
            peak_bytes,
            host,
        });
    }
    Ok(out)
}

/// The largest batch (`{"mode", "max_batch"}`).
#[derive(Clone, Debug, Serialize)]
pub struct MaxBatchResult {
    /// Block mode.
    pub mode: String,
    /// Architecture.
    pub config: String,
    /// Square input resolution.
    pub res: usize,
    /// The engine's memory limit in bytes.
    pub memory_limit: u64,
    /// Largest batch whose training step fits (0 if not even two images do).
    pub max_batch: usize,
}

/// Whether a training step at `batch` fits `limit` bytes on a fresh device.
fn fits(
    options: &GpuOptions,
    config: &NetConfig,
    mode: Mode,
    batch: usize,
    res: usize,
) -> Result<bool> {
    let gpu = Gpu::new(options.clone())?;
    let attempt = (|| -> Result<()> {
        let mut r = rig(&gpu, config, mode, batch, res).map_err(model_to_engine)?;
        step(&mut r)?;
        gpu.synchronize()
    })();
    match attempt {
        Ok(()) => Ok(true),
        Err(Error::OutOfMemory { .. }) | Err(Error::TensorTooLarge { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Finds, by doubling then bisection, the largest batch whose training step keeps the
/// engine's live allocations within `memory_limit` bytes (the paper's MaxBS, made
/// independent of the device's own memory size). Steps are planned, not run (see
/// `GpuOptions::plan_only`): the allocations and their accounting are those of a real
/// step, the arithmetic is skipped.
pub fn max_batch(
    adapter: &repopt_tensor::AdapterSelector,
    config: &NetConfig,
    mode: Mode,
    res: usize,
    memory_limit: u64,
    cap: usize,
) -> Result<MaxBatchResult> {
    let options = GpuOptions {
        adapter: adapter.clone(),
        memory_limit: Some(memory_limit),
        plan_only: true,
        ..Default::default()
    };
    // Batch norm needs two values per channel, and the last stage can be 1x1: start at 2.
    let (mut lo, mut hi) = (0usize, 2usize);
    while hi <= cap && fits(&options, config, mode, hi, res)? {
        lo = hi;
        hi *= 2;
    }
    let mut hi = hi.min(cap + 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(&options, config, mode, mid, res)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(MaxBatchResult {
        mode: mode.name().into(),
        config: config.name().into(),
        res,
        memory_limit,
        max_batch: lo,
    })
}

/// Peak bytes of one training step (`{"mode", "config", "batch", "res", "peak_bytes"}`).
#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    /// Block mode.
    pub mode: String,
    /// Architecture.
    pub config: String,
    /// Batch.
    pub batch: usize,
    /// Square input resolution.
    pub res: usize,
    /// The engine's peak live bytes during the step (after a first step, so optimizer state
    /// is included).
    pub peak_bytes: u64,
}

/// The peak bytes of a training step per mode, planned on a plan-only device (exact
/// accounting, no arithmetic), so settings far too slow to run here can be measured.
pub fn planned_peak(
    adapter: &repopt_tensor::AdapterSelector,
    config: &NetConfig,
    modes: &[Mode],
    batch: usize,
    res: usize,
) -> Result<Vec<MemoryResult>> {
    let mut out = Vec::new();
    for &mode in modes {
        let gpu = Gpu::new(GpuOptions {
            adapter: adapter.clone(),
            plan_only: true,
            ..Default::default()
        })?;
        let mut r = rig(&gpu, config, mode, batch, res).map_err(model_to_engine)?;
        step(&mut r)?;
        gpu.reset_peak_memory();
        step(&mut r)?;
        out.push(MemoryResult {
            mode: mode.name().into(),
            config: config.name().into(),
            batch,
            res,
            peak_bytes: gpu.memory().peak_live_bytes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmarked RepOpt-GhostNet step is the RepOptimizer's, not plain SGD's: its
    /// depthwise cheap operations carry Grad Mults, which RepGhostNet's have none of.
    #[test]
    fn ghostnet_target_steps_with_grad_mults() {
        let gpu = Gpu::new(GpuOptions {
            plan_only: true,
            ..Default::default()
        })
        .unwrap();
        let config = NetConfig::preset("ghostnet-0.5x").unwrap().with_data(3, 10);
        let mults = |mode| {
            let r = rig(&gpu, &config, mode, 2, 32).unwrap();
            r.opt
                .params()
                .iter()
                .filter(|p| p.grad_mult.is_some())
                .count()
        };
        assert!(mults(Mode::Target) > 0);
        assert_eq!(mults(Mode::Repvgg), 0);
    }
}
