//! Running the `repopt` binary from the tests, as a user runs it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `repopt ARGS` to completion, with kernel choices that depend only on the shape
/// (`REPOPT_TUNE=off`), so that runs compare exactly whatever other tests measured.
pub fn repopt(args: &[&str]) -> Output {
    repopt_with(args, &[("REPOPT_TUNE", "off")])
}

/// Runs `repopt ARGS` to completion with the environment variables `env` set.
pub fn repopt_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repopt"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the repopt binary runs")
}

/// What the command printed on stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the command printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The authors' scale files (`<shared data>/official-scales`), or None (printed as skipped)
/// unless `REPOPT_REQUIRE_SHARED_DATA` makes their absence a failure.
pub fn official_scales(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("REPOPT_SHARED_DATA").unwrap_or_else(|_| "../shared/data".into()),
    )
    .join("official-scales");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("REPOPT_REQUIRE_SHARED_DATA").is_some() {
        panic!(
            "{test}: {} is missing (set REPOPT_SHARED_DATA)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: {} not found (set REPOPT_SHARED_DATA to the data directory)",
        dir.display()
    );
    None
}

/// Trains a tiny RepOpt-VGG (one block per stage, width 0.25) in `mode` with SGD for one
/// epoch of 512 Fashion-MNIST images into `out`, evaluating on 300 test images.
pub fn train_tiny(out: &Path, mode: &str) {
    let o = repopt(&[
        "train",
        "--mode",
        mode,
        "--optimizer",
        "sgd",
        "--num-blocks",
        "1,1,1,1",
        "--widths",
        "0.25,0.25,0.25,0.25",
        "--train-limit",
        "512",
        "--test-limit",
        "300",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}
