//! Running the `repopt` binary from the tests, as a user runs it.

#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `repopt ARGS` to completion.
pub fn repopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repopt"))
        .args(args)
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
