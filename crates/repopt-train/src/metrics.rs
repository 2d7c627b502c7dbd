//! Metrics as JSON lines: one object per logged step or evaluation, appended to
//! `metrics.jsonl` in the run directory and easy to plot or parse.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Metric {
    /// Training progress.
    Train {
        /// Epoch (0-based).
        epoch: u64,
        /// Global iteration (1-based, after this step).
        step: u64,
        /// Mean training loss since the previous line.
        loss: f64,
        /// Learning rate of the last step.
        lr: f64,
        /// Training images per second since the previous line.
        images_per_s: f64,
    },
    /// Evaluation on the test split.
    Eval {
        /// Epoch evaluated after (0-based).
        epoch: u64,
        /// Global iteration.
        step: u64,
        /// Mean loss (no label smoothing).
        loss: f64,
        /// Top-1 accuracy in percent.
        top1: f64,
        /// Top-5 accuracy in percent.
        top5: f64,
    },
}

/// Writes metrics to a file, flushing each line so a crash loses nothing already logged.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Starts `dir/metrics.jsonl` afresh for a new run.
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        Ok(MetricsLog {
            path,
            out: BufWriter::new(file),
        })
    }

    /// Continues `dir/metrics.jsonl` for a run resumed at `step`: lines logged after that
    /// step (by the interrupted process, past its last checkpoint) are dropped, since the
    /// resumed run logs those steps again. The kept lines replace the file whole, so a kill
    /// meanwhile loses nothing.
    pub fn resume(dir: &Path, step: u64) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let mut kept = String::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines().filter(|l| {
                    serde_json::from_str::<Metric>(l).is_ok_and(|m| match m {
                        Metric::Train { step: s, .. } | Metric::Eval { step: s, .. } => s <= step,
                    })
                }) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TrainError::io(&path, e)),
        }
        repopt_models::checkpoint::write_atomic(&path, kept.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(MetricsLog {
            path,
            out: BufWriter::new(file),
        })
    }

    /// Writes one line.
    pub fn write(&mut self, m: &Metric) -> Result<()> {
        let line = serde_json::to_string(m).map_err(|e| TrainError::Config(e.to_string()))?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads every metric of a `metrics.jsonl` (lines that do not parse are reported).
pub fn read_metrics(path: &Path) -> Result<Vec<Metric>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| TrainError::Config(format!("{}: line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}
