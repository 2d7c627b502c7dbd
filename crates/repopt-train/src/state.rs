//! Training state in checkpoints: where a run stands and what it has achieved so far, saved
//! with the model and the optimizer so that a resume continues the run bit for bit and
//! reports on all of it.

use std::path::{Path, PathBuf};

use repopt_models::HostTensor;
use repopt_models::any::Network;
use repopt_models::checkpoint::{self, TensorFile};
use repopt_tensor::optim::Optimizer;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::evaluate::EvalResult;
use crate::metrics::{Metric, read_metrics};
use crate::run_dir::files;

/// Prefix of the optimizer's tensors in a checkpoint.
pub(crate) const OPTIMIZER_PREFIX: &str = "optimizer/";

mod keys {
    pub const POSITION: &str = "position";
    pub const OPTIMIZER_STEPS: &str = "optimizer_steps";
    pub const TRAIN_CONFIG: &str = "train_config";
    pub const RECORD: &str = "record";
    pub const WORLD_SIZE: &str = "world_size";
}

/// Where a run stands; saved in checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Epoch being trained (0-based).
    pub epoch: u64,
    /// Batches of that epoch already trained.
    pub batch: u64,
    /// Optimizer steps taken in total.
    pub step: u64,
}

/// What a run has achieved up to a checkpoint: what its summary reports.
///
/// ```
/// use repopt_train::state::Record;
/// let r = Record { train_seconds: 2.0, images: 500, ..Default::default() };
/// assert_eq!(r.images_per_s(), 250.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Best top-1 over the evaluations so far.
    pub best_top1: f64,
    /// The last evaluation.
    pub final_eval: Option<EvalResult>,
    /// Seconds spent training (evaluation excluded), over every process of the run.
    pub train_seconds: f64,
    /// Training images seen, over every process of the run.
    pub images: u64,
}

impl Record {
    /// Training throughput over the run.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.train_seconds.max(1e-9)
    }

    /// Adds an evaluation.
    pub fn evaluated(&mut self, result: EvalResult) {
        self.best_top1 = self.best_top1.max(result.top1);
        self.final_eval = Some(result);
    }

    /// The evaluations a run logged up to `step`, for checkpoints written before they
    /// carried a record (their training time is not known and counts from the resume).
    fn from_metrics(path: &Path, step: u64) -> Record {
        let mut record = Record::default();
        for m in read_metrics(path).unwrap_or_default() {
            if let Metric::Eval {
                step: s,
                loss,
                top1,
                top5,
                ..
            } = m
                && s <= step
            {
                record.evaluated(EvalResult {
                    loss,
                    top1,
                    top5,
                    images: 0,
                });
            }
        }
        record
    }
}

/// Saves the full training state (and the model alone beside it), each file whole.
pub(crate) fn save(
    out: &Path,
    cfg: &TrainConfig,
    model: &Network,
    opt: &dyn Optimizer,
    pos: Position,
    record: &Record,
    world_size: usize,
) -> Result<()> {
    // Before anything is written, so that a good checkpoint is never replaced by a bad one.
    crate::guard::check_weights(model, pos, &out.join(files::CHECKPOINT))?;
    let mut tensors = checkpoint::model_tensors(model)?;
    let mut meta = checkpoint::model_metadata(model);
    checkpoint::save_tensors(&out.join(files::MODEL), &tensors, &meta)?;
    for (name, t) in opt.state() {
        tensors.push(HostTensor {
            name: format!("{OPTIMIZER_PREFIX}{name}"),
            shape: t.shape().to_vec(),
            data: t.to_vec()?,
        });
    }
    meta.insert(keys::POSITION.into(), json(&pos));
    meta.insert(keys::OPTIMIZER_STEPS.into(), opt.steps().to_string());
    meta.insert(keys::TRAIN_CONFIG.into(), json(cfg));
    meta.insert(keys::RECORD.into(), json(record));
    meta.insert(keys::WORLD_SIZE.into(), world_size.to_string());
    checkpoint::save_tensors(&out.join(files::CHECKPOINT), &tensors, &meta)?;
    Ok(())
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A checkpoint read back: the settings it was trained with, where it stands, what it has
/// achieved, and the tensors to restore.
pub(crate) struct Saved {
    pub path: PathBuf,
    pub cfg: TrainConfig,
    pub pos: Position,
    pub record: Record,
    /// Ranks of the run that wrote it (1 for checkpoints from before distributed runs).
    pub world_size: usize,
    steps: u64,
    file: TensorFile,
}

impl Saved {
    /// Reads a checkpoint written by the trainer; `metrics` is the run's log, read only for
    /// checkpoints that carry no record.
    pub fn load(path: &Path, metrics: &Path) -> Result<Saved> {
        let resume_err = |message: &str| TrainError::Resume {
            path: path.display().to_string(),
            message: message.into(),
        };
        let file = checkpoint::load_tensors(path)?;
        let get = |key: &str| file.metadata.get(key);
        let cfg: TrainConfig = get(keys::TRAIN_CONFIG)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| resume_err("no training configuration in its metadata (is it a model file rather than a checkpoint?)"))?;
        let pos: Position = get(keys::POSITION)
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| resume_err("no position in its metadata"))?;
        let steps: u64 = get(keys::OPTIMIZER_STEPS)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| resume_err("no optimizer step count in its metadata"))?;
        let record = get(keys::RECORD)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_else(|| Record::from_metrics(metrics, pos.step));
        let world_size = get(keys::WORLD_SIZE)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        Ok(Saved {
            world_size,
            path: path.to_path_buf(),
            cfg,
            pos,
            record,
            steps,
            file,
        })
    }

    /// Loads the model's and the optimizer's state.
    pub fn restore(self, model: &Network, opt: &mut dyn Optimizer) -> Result<()> {
        let mut model_part = Vec::new();
        let mut opt_part = Vec::new();
        for t in self.file.tensors {
            match t.name.strip_prefix(OPTIMIZER_PREFIX) {
                Some(name) => opt_part.push((name.to_string(), t.data)),
                None => model_part.push(t),
            }
        }
        model.load_state(&model_part, &self.path.display().to_string())?;
        opt.load_state(&opt_part, self.steps)?;
        Ok(())
    }
}
