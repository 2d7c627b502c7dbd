//! The whole suite with its default sizes: what `repopt bench all` and `cargo bench` run.

use repopt_models::any::NetConfig;
use repopt_models::{Mode, VggConfig};
use repopt_tensor::{AdapterSelector, Gpu, Result};
use serde::Serialize;

use crate::kernels::{self, KernelResult, PeakResult};
use crate::report::{self, Target};
use crate::timing::TimingBudget;
use crate::train::{self, MaxBatchResult, MemoryResult, StepResult};
use crate::update::{self, UpdateResult};

/// Every figure of one suite run, measured on one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteResults {
    /// The adapter's FMA peak.
    pub peak: PeakResult,
    /// Convolutions, batch norm and matmul.
    pub kernels: Vec<KernelResult>,
    /// Optimizer-step variants.
    pub updates: Vec<UpdateResult>,
    /// Training steps per config and mode.
    pub steps: Vec<StepResult>,
    /// Largest batches under the memory limit.
    pub max_batches: Vec<MaxBatchResult>,
    /// Peak bytes of steps too large to run here, planned with exact accounting.
    pub planned: Vec<MemoryResult>,
    /// The targets these figures allow checking.
    pub targets: Vec<Target>,
}

/// Sizes of a suite run.
#[derive(Clone, Debug)]
pub struct SuiteSizes {
    /// Networks whose stage shapes, training steps are measured.
    pub configs: Vec<String>,
    /// Resolution of the kernel cases.
    pub kernel_res: usize,
    /// Resolution of the training steps and the max-batch search.
    pub step_res: usize,
    /// Batch of kernels and training steps.
    pub batch: usize,
    /// Side of the square matmul.
    pub matmul: usize,
    /// Parameter elements of the update benchmark.
    pub update_params: usize,
    /// Memory limit for the max-batch search, bytes.
    pub memory_limit: u64,
    /// Resolution of the planned (not run) memory comparison, as in the paper's Table 2.
    pub planned_res: usize,
}

impl Default for SuiteSizes {
    fn default() -> Self {
        SuiteSizes {
            configs: vec!["A0".into(), "B1".into()],
            kernel_res: 64,
            step_res: 32,
            batch: 32,
            matmul: 1024,
            update_params: 1 << 23,
            memory_limit: 1 << 30,
            planned_res: 224,
        }
    }
}

/// A RepOpt-VGG preset with ImageNet's 1000 classes, as the paper's benchmarks use (the
/// suite's kernel cases are RepOpt-VGG stage shapes).
pub fn imagenet_config(name: &str) -> Result<VggConfig> {
    let preset = VggConfig::preset(name).map_err(train::model_to_engine)?;
    Ok(VggConfig {
        num_classes: 1000,
        ..preset
    })
}

/// Runs every benchmark; `selector` picks the adapter for the plan-only max-batch search.
///
/// ```no_run
/// use repopt_bench::suite::{run_suite, SuiteSizes};
/// use repopt_bench::timing::TimingBudget;
/// use repopt_tensor::{AdapterSelector, Gpu};
///
/// let gpu = Gpu::from_env()?;
/// let results = run_suite(&gpu, &AdapterSelector::default(), &SuiteSizes::default(), TimingBudget::quick())?;
/// println!("{}", repopt_bench::report::targets_table(&results.targets));
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn run_suite(
    gpu: &Gpu,
    selector: &AdapterSelector,
    sizes: &SuiteSizes,
    budget: TimingBudget,
) -> Result<SuiteResults> {
    let peak = kernels::peak(gpu, budget)?;
    let mut cases = Vec::new();
    for name in &sizes.configs {
        cases.extend(kernels::stage_cases(
            &imagenet_config(name)?,
            sizes.kernel_res,
            sizes.batch,
        ));
    }
    let mut kernel_results = kernels::conv(gpu, &cases, budget)?;
    if let Some(c) = cases.first() {
        kernel_results.extend(kernels::batch_norm(gpu, sizes.batch, c.co, c.hw, budget)?);
    }
    kernel_results.push(kernels::matmul(gpu, sizes.matmul, budget)?);
    let updates = update::update(gpu, sizes.update_params, budget)?;
    let mut steps = Vec::new();
    for name in &sizes.configs {
        steps.extend(train::train_steps(
            gpu,
            &NetConfig::Vgg(imagenet_config(name)?),
            &[Mode::Target, Mode::Repvgg, Mode::Hs],
            sizes.batch,
            sizes.step_res,
            budget,
        )?);
    }
    let largest = NetConfig::Vgg(imagenet_config(
        sizes.configs.last().map_or("B1", |s| s.as_str()),
    )?);
    let max_batches = [Mode::Target, Mode::Repvgg]
        .iter()
        .map(|&m| {
            train::max_batch(
                selector,
                &largest,
                m,
                sizes.step_res,
                sizes.memory_limit,
                4096,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let planned = train::planned_peak(
        selector,
        &largest,
        &[Mode::Target, Mode::Repvgg],
        sizes.batch,
        sizes.planned_res,
    )?;
    let mut targets = report::targets(Some(&peak), &kernel_results, &updates, &steps, &max_batches);
    targets.extend(report::memory_targets(&planned));
    Ok(SuiteResults {
        peak,
        kernels: kernel_results,
        updates,
        steps,
        max_batches,
        planned,
        targets,
    })
}

impl SuiteResults {
    /// All tables, then the targets.
    pub fn tables(&self) -> String {
        format!(
            "FMA peak: {:.1} GFLOP/s\n\n{}\n{}\n{}\n{}\n{}\n{}",
            self.peak.gflops,
            report::kernels_table(&self.kernels),
            report::updates_table(&self.updates),
            report::steps_table(&self.steps),
            report::max_batch_table(&self.max_batches),
            report::memory_table(&self.planned),
            report::targets_table(&self.targets)
        )
    }

    /// One JSON object per line, in the order of [`SuiteResults::tables`].
    pub fn json_lines(&self) -> String {
        let mut lines = vec![serde_json::to_string(&self.peak)];
        lines.extend(self.kernels.iter().map(serde_json::to_string));
        lines.extend(self.updates.iter().map(serde_json::to_string));
        lines.extend(self.steps.iter().map(serde_json::to_string));
        lines.extend(self.max_batches.iter().map(serde_json::to_string));
        lines.extend(self.planned.iter().map(serde_json::to_string));
        lines.extend(self.targets.iter().map(serde_json::to_string));
        lines
            .into_iter()
            .map(|l| l.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
