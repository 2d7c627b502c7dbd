//! Run directories: what a run keeps in its directory, and when a run may start, continue
//! or replace another one there. The rule is stated here once; the trainer, Hyper-Search,
//! the pipeline and the command line all go through it.
//!
//! # What a run directory holds
//!
//! | file | contents | written |
//! |---|---|---|
//! | `config.json` | the run's settings | once the start is checked and the data has loaded |
//! | `metrics.jsonl` | one JSON line per logged step and evaluation | as training goes (append-only) |
//! | `checkpoint.safetensors` | model, optimizer, position and the results so far | after each epoch, and when `stop_after_steps` ends a process |
//! | `model.safetensors` | the model alone (for `eval` and `convert`) | with each checkpoint |
//! | `summary.json` | the run's outcome | when a process finishes, whether it trained or not |
//! | `scales.safetensors`, `scales.jsonl`, `scales.svg`, `curves.svg` | Hyper-Search's output | after a search run |
//! | `.lock` | the process id of the process using the directory (or that last used it) | when a process opens it |
//!
//! # What repopt guarantees
//!
//! * **Whole files.** Every file but the append-only `metrics.jsonl` is written to
//!   `.NAME.tmp-PID` and renamed over the old one, so a kill leaves the old or the new
//!   version, never a mix. Temporary files a kill leaves behind are removed by the next
//!   process that opens the directory.
//! * **One process per directory.** A process holds an exclusive lock on `.lock` while it
//!   uses the directory; a second one is refused with the holder's process id. The
//!   operating system releases the lock when the holder ends, crash included. (On a file
//!   system that offers no locks at all, the directory is used unlocked.)
//! * **A new run needs an empty directory.** One holding anything besides `.lock` is
//!   refused ([`Start::New`]), naming what is there. [`Start::Overwrite`] (`--overwrite`)
//!   replaces a run: it removes the files listed above and nothing else, refuses a
//!   directory that holds other files, and does so only after the new run's settings are
//!   checked and its data has loaded, so a run that fails to start leaves the old one as
//!   it was.
//! * **A resume continues the same run.** [`Start::Resume`] continues from a checkpoint.
//!   Every setting that decides the model, the optimizer, the data, the order of the data or
//!   the learning-rate schedule must equal the run's; `epochs` among them, since the cosine
//!   schedule is planned over the whole run. Only [`ADJUSTABLE`] settings may change. A
//!   resume that differs is refused, naming each flag, before anything is written.
//! * **Results survive resumes and kills.** Each checkpoint carries the best top-1, the last
//!   evaluation, and the training time and images so far, so the summary of a resumed run
//!   covers the whole run. Resuming a finished run trains nothing and writes its summary
//!   again from the checkpoint: a summary lost to a kill comes back, identical.
//! * **Time boxes belong to one process.** `stop_after_steps` counts steps from the start of
//!   the run, is not carried into a resume, and a process it stops at the end of an epoch
//!   has evaluated that epoch first.
//!
//! ```no_run
//! use repopt_train::run_dir::{RunDir, Start};
//! use repopt_train::trainer::{train, Silent};
//! use repopt_train::TrainConfig;
//!
//! let gpu = repopt_tensor::Gpu::from_env()?;
//! let cfg = TrainConfig { epochs: 1, out: "runs/short".into(), ..Default::default() };
//! // A first run; a second `Start::New` into the same directory would be refused.
//! train(&gpu, &cfg, &Start::New, &mut Silent)?;
//! // Continue it (here: nothing is left to train, so only the summary is written again).
//! train(&gpu, &cfg, &Start::Resume(None), &mut Silent)?;
//! // Another process holding the directory would make this fail, naming that process.
//! let dir = RunDir::open("runs/short".as_ref())?;
//! println!("{:?}", dir.contents()?);
//! # Ok::<(), repopt_train::TrainError>(())
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::search::{CURVES_PLOT, SCALES_FILE, SCALES_PLOT, SCALES_SUMMARY};
use crate::state::Saved;

mod lock;
mod settings;

use lock::{is_orphan, lock};
use settings::same_file;
pub use settings::{ADJUSTABLE, Conflict, conflicts, describe, recorded_settings};

/// File names inside a run directory.
pub mod files {
    /// Full training state (model, optimizer, position, results so far) for `--resume`.
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    /// The model alone, for `repopt eval` and `repopt convert`.
    pub const MODEL: &str = "model.safetensors";
    /// The resolved configuration of the run.
    pub const CONFIG: &str = "config.json";
    /// Per-step and per-epoch metrics.
    pub const METRICS: &str = "metrics.jsonl";
    /// The run's outcome.
    pub const SUMMARY: &str = "summary.json";
    /// Locked by the process using the directory; holds its process id.
    pub const LOCK: &str = ".lock";
}

/// The files a run owns: what [`Start::Overwrite`] removes.
pub const RUN_FILES: &[&str] = &[
    files::CONFIG,
    files::METRICS,
    files::CHECKPOINT,
    files::MODEL,
    files::SUMMARY,
    SCALES_FILE,
    SCALES_SUMMARY,
    SCALES_PLOT,
    CURVES_PLOT,
];

/// How a run begins in its directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// A new run; the directory must be missing or empty.
    #[default]
    New,
    /// A new run replacing the run in the directory.
    Overwrite,
    /// Continue from a checkpoint: the one given, or the directory's own.
    Resume(Option<PathBuf>),
}

/// A directory held by this process: locked against other processes until dropped, and
/// cleared of temporary files that a killed process left.
///
/// ```no_run
/// use repopt_train::run_dir::RunDir;
/// let dir = RunDir::open("runs/train".as_ref())?;
/// assert!(RunDir::open("runs/train".as_ref()).is_err(), "held until `dir` is dropped");
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    // Held for its lock, which the operating system ties to this open file.
    _lock: File,
}

impl RunDir {
    /// Creates `path` if needed, locks it and removes orphaned temporary files. Fails,
    /// naming the holder's process id, when another process (or another `RunDir` of this
    /// process) holds it.
    pub fn open(path: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(path).map_err(|e| TrainError::io(path, e))?;
        let lock = lock(path)?;
        let dir = RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        };
        dir.remove_orphans()?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the directory holds besides its lock, sorted by name.
    pub fn contents(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .entries()?
            .into_iter()
            .filter(|n| n != files::LOCK)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes `value` as pretty JSON to `name` in the directory, whole.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let text =
            serde_json::to_string_pretty(value).map_err(|e| TrainError::Config(e.to_string()))?;
        repopt_models::checkpoint::write_atomic(&self.path.join(name), text.as_bytes())?;
        Ok(())
    }

    /// Checks that the run `cfg` may begin here as `start` says, before anything is
    /// written; for a resume, reads the checkpoint it continues from.
    pub(crate) fn check_start(&self, cfg: &TrainConfig, start: &Start) -> Result<Option<Saved>> {
        match start {
            Start::New => self.check_new(false).map(|_| None),
            Start::Overwrite => self.check_new(true).map(|_| None),
            Start::Resume(given) => self.check_resume(cfg, given.as_deref()).map(Some),
        }
    }

    /// Makes the directory the run's, once its start is checked and its data loaded: the
    /// files of a run it replaces go, its settings are recorded.
    pub(crate) fn begin(&self, cfg: &TrainConfig, start: &Start) -> Result<()> {
        if *start == Start::Overwrite {
            self.clear_run()?;
        }
        self.write_json(files::CONFIG, cfg)
    }

    fn check_resume(&self, cfg: &TrainConfig, given: Option<&Path>) -> Result<Saved> {
        let own = self.path.join(files::CHECKPOINT);
        let path = given.map_or_else(|| own.clone(), Path::to_path_buf);
        let refuse = |message: String| TrainError::Resume {
            path: path.display().to_string(),
            message,
        };
        if !path.is_file() {
            let config = self.path.join(files::CONFIG);
            return Err(refuse(if given.is_none() && config.is_file() {
                format!(
                    "the run in {} stopped before its first checkpoint, so there is nothing to continue: start it again with --overwrite",
                    self.path.display()
                )
            } else {
                "no such checkpoint".into()
            }));
        }
        let saved = Saved::load(&path, &self.path.join(files::METRICS))?;
        let diff = conflicts(&saved.cfg, cfg);
        let is_own = given.is_none() || same_file(&path, &own);
        if !diff.is_empty() {
            let record = if is_own {
                self.path.join(files::CONFIG).display().to_string()
            } else {
                "the checkpoint".into()
            };
            return Err(refuse(format!(
                "{} differ from the run's settings (recorded in {record}). They decide the model, the optimizer, the data or the schedule, so they are fixed for a run: drop them to continue it, or start a new run with another --out (or --overwrite to replace this one)",
                describe(&diff)
            )));
        }
        if !is_own {
            // A checkpoint from elsewhere may seed this directory, not mix into another run.
            let here = TrainConfig::from_file(&self.path.join(files::CONFIG)).ok();
            let other = match here {
                Some(h) => !conflicts(&h, &saved.cfg).is_empty(),
                None => !self.contents()?.is_empty(),
            };
            if other {
                return Err(self.refused(format!(
                    "holds another run than the one {} belongs to: resume into an empty --out",
                    path.display()
                )));
            }
        }
        Ok(saved)
    }

    /// Refuses a new run into a directory that holds anything; with `overwrite`, refuses
    /// only files that are not a run's own (those are removed later, by [`Self::clear_run`]).
    pub(crate) fn check_new(&self, overwrite: bool) -> Result<()> {
        let held = self.contents()?;
        if held.is_empty() {
            return Ok(());
        }
        if !overwrite {
            const CHOICES: &str =
                "continue it with --resume, replace it with --overwrite, or choose another --out";
            let (what, next) = if held.iter().any(|n| n == files::CONFIG) {
                ("holds a run", CHOICES)
            } else if held.iter().all(|n| RUN_FILES.contains(&n.as_str())) {
                ("holds files of a run", CHOICES)
            } else {
                (
                    "is not empty",
                    "a new run needs an empty directory: choose another --out",
                )
            };
            return Err(self.refused(format!("{what} ({}): {next}", listing(&held))));
        }
        let foreign: Vec<String> = held
            .into_iter()
            .filter(|n| !RUN_FILES.contains(&n.as_str()))
            .collect();
        if !foreign.is_empty() {
            return Err(self.refused(format!(
                "--overwrite removes only a run's own files, and this directory also holds {}: move them or choose another --out",
                listing(&foreign)
            )));
        }
        Ok(())
    }

    /// Removes the files of the run the directory holds.
    pub(crate) fn clear_run(&self) -> Result<()> {
        for name in RUN_FILES {
            let path = self.path.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TrainError::io(&path, e)),
            }
        }
        Ok(())
    }

    pub(crate) fn refused(&self, message: String) -> TrainError {
        TrainError::RunDir {
            dir: self.path.display().to_string(),
            message,
        }
    }

    fn entries(&self) -> Result<Vec<String>> {
        let read = std::fs::read_dir(&self.path).map_err(|e| TrainError::io(&self.path, e))?;
        let mut names = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| TrainError::io(&self.path, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn remove_orphans(&self) -> Result<()> {
        for name in self.entries()? {
            if is_orphan(&name) {
                let path = self.path.join(&name);
                if path.is_file() {
                    std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
                }
            }
        }
        Ok(())
    }
}

/// Whether `path` is missing or holds nothing but a lock and temporary files, as a new run
/// needs (checked without taking the lock, so only advice until the run holds it).
pub(crate) fn is_vacant(path: &Path) -> bool {
    std::fs::read_dir(path).map_or(true, |entries| {
        entries.flatten().all(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name == files::LOCK || is_orphan(&name)
        })
    })
}

fn listing(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_runs_need_an_empty_directory_and_overwrite_touches_only_run_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::open(tmp.path()).unwrap();
        dir.check_new(false).unwrap();
        std::fs::write(tmp.path().join(files::CONFIG), "{}").unwrap();
        let err = dir.check_new(false).unwrap_err().to_string();
        assert!(
            err.contains("--overwrite") && err.contains("config.json"),
            "{err}"
        );
        dir.check_new(true).unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let err = dir.check_new(true).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        dir.clear_run().unwrap();
        assert_eq!(dir.contents().unwrap(), ["notes.txt"]);
    }
}
