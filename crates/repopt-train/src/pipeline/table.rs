//! The pipeline's outcome: one row per model over seeds, and the comparison as Markdown.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::report::markdown_table;
use crate::run_dir::RunDir;

/// A row of the comparison: one contender over all seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// Label.
    pub model: String,
    /// Block mode during training.
    pub mode: String,
    /// Optimizer.
    pub optimizer: String,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Final top-1 per seed.
    pub top1: Vec<f64>,
    /// Mean top-1.
    pub top1_mean: f64,
    /// Sample standard deviation of top-1 (0 for one seed).
    pub top1_std: f64,
    /// Mean final top-5.
    pub top5_mean: f64,
    /// Mean training throughput.
    pub images_per_s: f64,
    /// Mean training time in seconds.
    pub train_seconds: f64,
    /// Trainable parameters during training.
    pub params: usize,
    /// INT8 post-training quantization of each seed's run (RepOpt-VGG family only).
    #[serde(default)]
    pub ptq: Option<PtqResult>,
}

/// A row's INT8 post-training quantization, per seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PtqResult {
    /// Top-1 with max calibration.
    pub max_top1: Vec<f64>,
    /// Top-1 with the calibrator that scored best on the test split (an oracle choice: it
    /// shows what the best of the calibrators reaches, not what one would pick blind).
    pub best_top1: Vec<f64>,
    /// Which calibrator that was.
    pub best_calibrator: Vec<String>,
    /// Mean of `max_top1`.
    pub max_mean: f64,
    /// Mean of `best_top1`.
    pub best_mean: f64,
    /// Top-1 in INT8 after quantization-aware training (empty without it).
    #[serde(default)]
    pub qat_top1: Vec<f64>,
    /// Mean of `qat_top1`.
    #[serde(default)]
    pub qat_mean: Option<f64>,
}

/// The pipeline's outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Dataset.
    pub dataset: String,
    /// Architecture name (`-custom` when the preset's blocks, widths or strides were changed).
    pub model: String,
    /// The architecture in full.
    pub architecture: Option<repopt_models::any::NetConfig>,
    /// Rows.
    pub rows: Vec<Row>,
    /// The scale file the RepOptimizer used.
    pub scales: PathBuf,
    /// Seconds the whole pipeline took.
    pub seconds: f64,
    /// How many of a model's seeds trained at once (their images/s and seconds are each
    /// run's while they shared the adapter).
    #[serde(default = "one_job")]
    pub jobs: usize,
}

fn one_job() -> usize {
    1
}

pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The comparison as a Markdown table.
pub fn results_markdown(report: &Report) -> String {
    let with_ptq = report
        .rows
        .iter()
        .any(|r| r.ptq.as_ref().is_some_and(|q| !q.max_top1.is_empty()));
    let with_qat = report
        .rows
        .iter()
        .any(|r| r.ptq.as_ref().is_some_and(|q| q.qat_mean.is_some()));
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.model.clone(),
                format!("{:.2} ± {:.2}", r.top1_mean, r.top1_std),
                format!("{:.2}", r.top5_mean),
            ];
            if with_ptq {
                match &r.ptq {
                    Some(q) => {
                        row.push(format!("{:.2}", q.max_mean));
                        row.push(format!(
                            "{:.2} ({})",
                            q.best_mean,
                            q.best_calibrator.join(", ")
                        ));
                    }
                    None => row.extend(["-".to_string(), "-".to_string()]),
                }
            }
            if with_qat {
                row.push(match r.ptq.as_ref().and_then(|q| q.qat_mean) {
                    Some(m) => format!("{m:.2}"),
                    None => "-".into(),
                });
            }
            row.extend([
                format!("{:.0}", r.images_per_s),
                format!("{:.0}", r.train_seconds),
                format!("{:.3} M", r.params as f64 / 1e6),
            ]);
            row
        })
        .collect();
    let seeds = report.rows.first().map_or(0, |r| r.seeds.len());
    let mut header = vec!["model", "top-1 (%)", "top-5 (%)"];
    if with_ptq {
        header.extend(["INT8 max (%)", "INT8 best (%)"]);
    }
    if with_qat {
        header.push("INT8 QAT (%)");
    }
    header.extend(["train images/s", "train s", "train-time params"]);
    format!(
        "{}\nTop-1 is the mean ± sample standard deviation over {seeds} seed(s) on the {} test split.\n",
        markdown_table(&header, &rows),
        report.dataset
    ) + &if report.jobs > 1 {
        format!(
            "Each model's seeds trained {} at a time, each on its own device of the adapter: train images/s and seconds are per run while they shared it.\n",
            report.jobs
        )
    } else {
        String::new()
    } + if with_ptq {
        "INT8: post-training quantization of the deploy form (weights per channel, activations per tensor, symmetric), calibrated on 512 training images; max calibration, and the best of six calibrators on the test split (named per seed).\n"
    } else {
        ""
    } + if with_qat {
        "INT8 QAT: the deploy form fine-tuned with fake quantization (ranges from max calibration, then moving averages), evaluated as deployed.\n"
    } else {
        ""
    }
}

pub(crate) fn write_report(root: &RunDir, report: &Report) -> Result<()> {
    repopt_models::checkpoint::write_atomic(
        &root.path().join("results.md"),
        results_markdown(report).as_bytes(),
    )?;
    root.write_json("results.json", report)
}

#[cfg(test)]
mod tests {
    use super::mean_std;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }
}
