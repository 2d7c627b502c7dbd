//! Which settings make a run: those a resume must keep, and where a resume finds them.

use std::path::Path;

use serde::Serialize;

use super::files;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::state::Saved;

/// Settings a resume may change: they decide how the work is done or reported, not what
/// is computed (the loader yields the same batches with any number of workers).
pub const ADJUSTABLE: &[&str] = &[
    "workers",
    "eval_batch_size",
    "log_every",
    "stop_after_steps",
    "out",
];

/// The settings of the run a resume continues: those in `dir`'s `config.json` when the
/// checkpoint is the directory's own, otherwise those saved in the checkpoint given.
///
/// ```no_run
/// use repopt_train::run_dir::recorded_settings;
/// let run = recorded_settings("runs/train".as_ref(), None)?;
/// println!("{} epochs", run.epochs);
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn recorded_settings(dir: &Path, checkpoint: Option<&Path>) -> Result<TrainConfig> {
    let config = dir.join(files::CONFIG);
    let own = dir.join(files::CHECKPOINT);
    match checkpoint {
        Some(c) if !same_file(c, &own) => Ok(Saved::load(c, &dir.join(files::METRICS))?.cfg),
        _ if config.is_file() => TrainConfig::from_file(&config),
        _ => Err(TrainError::Resume {
            path: own.display().to_string(),
            message: format!(
                "there is no run to continue in {} (it has no {})",
                dir.display(),
                files::CONFIG
            ),
        }),
    }
}

/// A setting that differs between a run and a resume of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The key in `config.json`.
    pub setting: &'static str,
    /// The command-line flag(s) that set it.
    pub flag: &'static str,
    /// The run's value.
    pub run: String,
    /// The value asked for now.
    pub now: String,
}

/// The settings of `now` that differ from those the run was started with, `run`, among
/// those a resume may not change (all but [`ADJUSTABLE`]).
///
/// ```
/// use repopt_train::run_dir::conflicts;
/// use repopt_train::TrainConfig;
/// let run = TrainConfig::default();
/// let faster = TrainConfig { workers: 8, log_every: 50, ..run.clone() };
/// assert!(conflicts(&run, &faster).is_empty());
/// let other = TrainConfig { lr: 0.5, ..run.clone() };
/// assert_eq!(conflicts(&run, &other)[0].flag, "--lr");
/// ```
pub fn conflicts(run: &TrainConfig, now: &TrainConfig) -> Vec<Conflict> {
    // Spelled out without `..` so that a new setting cannot be added without deciding here
    // whether a resume may change it.
    let TrainConfig {
        dataset,
        data_dir: _,
        resolution,
        train_limit,
        test_limit,
        augment,
        workers: _,
        arch,
        mode,
        optimizer,
        scales,
        scales_source,
        reinit,
        grad_mult,
        identity_init,
        lr,
        lr_batch,
        warmup_epochs,
        weight_decay,
        momentum,
        nesterov,
        label_smoothing,
        clip_grad,
        epochs,
        batch_size,
        accumulate,
        eval_batch_size: _,
        seed,
        out: _,
        log_every: _,
        stop_after_steps: _,
        qat,
    } = run;
    let mut out = Vec::new();
    let mut check = |setting: &'static str, flag: &'static str, a: String, b: String| {
        if a != b {
            out.push(Conflict {
                setting,
                flag,
                run: a,
                now: b,
            });
        }
    };
    macro_rules! same {
        ($($field:ident => $flag:literal),* $(,)?) => {
            $( check(stringify!($field), $flag, json($field), json(&now.$field)); )*
        };
    }
    same!(
        dataset => "--dataset",
        resolution => "--resolution",
        train_limit => "--train-limit",
        test_limit => "--test-limit",
        augment => "--augment",
        arch => "--config/--num-blocks/--widths/--strides/--se",
        mode => "--mode",
        optimizer => "--optimizer",
        scales_source => "--scales-source",
        reinit => "--no-reinit",
        grad_mult => "--no-grad-mult",
        identity_init => "--identity-init",
        lr => "--lr",
        lr_batch => "--lr-batch",
        warmup_epochs => "--warmup-epochs",
        accumulate => "--accumulate",
        weight_decay => "--weight-decay",
        momentum => "--momentum",
        nesterov => "--no-nesterov",
        label_smoothing => "--label-smoothing",
        clip_grad => "--clip-grad",
        epochs => "--epochs",
        batch_size => "--batch-size",
        seed => "--seed",
        qat => "the quantization-aware training settings",
    );
    // Paths name the same files however they are spelled.
    check(
        "data_dir",
        "--data-dir",
        resolved(&run.data_dir()),
        resolved(&now.data_dir()),
    );
    check(
        "scales",
        "--scales",
        scales.as_deref().map(resolved).unwrap_or_default(),
        now.scales.as_deref().map(resolved).unwrap_or_default(),
    );
    out
}

pub(super) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn resolved(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Describes conflicts for an error message: `--lr 0.5 (the run has 0.05), ...`.
pub fn describe(conflicts: &[Conflict]) -> String {
    conflicts
        .iter()
        .map(|c| format!("{} {} (the run has {})", c.flag, c.now, c.run))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compact JSON of a setting's value, for comparing and showing every setting alike.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_may_change_only_how_the_work_is_done() {
        let run = TrainConfig::default();
        let now = TrainConfig {
            workers: 3,
            eval_batch_size: 17,
            log_every: 1,
            stop_after_steps: Some(5),
            out: "elsewhere".into(),
            data_dir: Some(run.data_dir()),
            ..run.clone()
        };
        assert_eq!(conflicts(&run, &now), []);
        let now = TrainConfig {
            epochs: 7,
            nesterov: false,
            data_dir: Some("/nowhere".into()),
            ..run.clone()
        };
        let flags: Vec<&str> = conflicts(&run, &now).iter().map(|c| c.flag).collect();
        assert_eq!(flags, ["--no-nesterov", "--epochs", "--data-dir"]);
        assert!(describe(&conflicts(&run, &now)).contains("--epochs 7 (the run has 120)"));
    }
}
