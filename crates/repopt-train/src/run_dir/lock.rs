//! The lock that keeps one process per run directory, and the temporary files a killed
//! process leaves.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use super::files;
use crate::error::{Result, TrainError};

/// Whether `name` is a temporary file of `write_atomic` (`.NAME.tmp-PID`). Only a process
/// holding the directory writes there, so any such file found by the next holder is the
/// remains of a process that did not finish.
pub(super) fn is_orphan(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".tmp-").is_some_and(|(stem, pid)| {
            stem.len() > 1 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Locks `dir` for as long as the returned file stays open, writing this process's id in
/// the lock file; refuses, naming the holder, when the lock is taken.
pub(super) fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(files::LOCK);
    // Not truncated on open: until the lock is ours, the file holds the holder's id.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| TrainError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {
            let id = format!("{}\n", std::process::id());
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(id.as_bytes()))
                .and_then(|_| file.flush())
                .map_err(|e| TrainError::io(&path, e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            // Where locks are mandatory the holder's file cannot be read: say less then.
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(id) => format!("process {id}"),
                Err(_) => "another process".into(),
            };
            Err(TrainError::InUse {
                dir: dir.display().to_string(),
                holder,
                lock: path.display().to_string(),
            })
        }
        // A file system without locks should not keep anyone from training.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            Ok(file)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_dir::RunDir;

    #[test]
    fn a_directory_is_held_by_one_open_at_a_time_and_names_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run");
        let first = RunDir::open(&path).unwrap();
        // flock(2) locks belong to the open file, so a second open in the same process is
        // refused just as another process would be.
        let err = RunDir::open(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains(&path.display().to_string()), "{err}");
        drop(first);
        RunDir::open(&path).expect("released when the holder is dropped");
    }

    #[test]
    fn orphans_of_atomic_writes_are_recognised_and_nothing_else() {
        for name in [".config.json.tmp-12", ".checkpoint.safetensors.tmp-99999"] {
            assert!(is_orphan(name), "{name}");
        }
        for name in [
            "config.json",
            ".lock",
            ".tmp-12",
            ".notes.tmp-x1",
            "a.tmp-12",
        ] {
            assert!(!is_orphan(name), "{name}");
        }
    }
}
