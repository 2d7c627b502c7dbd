//! Shared helpers for the model tests.

#![allow(dead_code)]

use std::path::PathBuf;

use repopt_models::{Mode, RepOptVgg, VggConfig};
pub use repopt_tensor::testing::{data, gpu};
use repopt_tensor::{Gpu, NoGradGuard, Tensor};

/// A small config with every kind of block: stride-2 and stride-1 first blocks, identity
/// blocks, channel changes without stride.
pub fn small_config(classes: usize) -> VggConfig {
    VggConfig {
        name: "test".into(),
        num_blocks: [2, 2, 1, 1],
        width_multipliers: [0.125, 0.125, 0.125, 0.125],
        strides: [1, 1, 2, 1, 2],
        in_channels: 3,
        num_classes: classes,
        use_se: false,
    }
}

/// Makes batch-norm statistics and affine parameters non-trivial: random gamma/beta, then a
/// few training-mode forwards on random data to move the running statistics.
pub fn randomize_bn(model: &RepOptVgg, gpu: &Gpu, seed: u64, input: [usize; 4]) {
    let _g = NoGradGuard::new();
    for (i, (name, t)) in model.parameters().iter().enumerate() {
        if name.contains("bn.") || name.contains("rbr_identity.") {
            let v: Vec<f32> = data(t.numel(), seed + i as u64)
                .iter()
                .map(|x| {
                    if name.ends_with("weight") {
                        1.0 + 0.5 * x
                    } else {
                        0.3 * x
                    }
                })
                .collect();
            t.write(&v).unwrap();
        }
    }
    for k in 0..3 {
        let x: Vec<f32> = data(input.iter().product(), seed * 7 + k)
            .iter()
            .map(|v| 1.5 * v + 0.2)
            .collect();
        let x = Tensor::from_slice(gpu, &x, &input).unwrap();
        model.forward(&x, true).unwrap();
    }
}

/// Where the shared test data lives: `REPOPT_SHARED_DATA`, else `../shared/data` beside the
/// repository. None (after printing why) when it is missing and not required; a panic when
/// `REPOPT_REQUIRE_SHARED_DATA=1`.
pub fn shared_data(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("REPOPT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"))
        });
    if dir.is_dir() {
        return Some(dir);
    }
    let reason = format!(
        "{what} needs the shared test data, not found at {}",
        dir.display()
    );
    if std::env::var("REPOPT_REQUIRE_SHARED_DATA").is_ok_and(|v| v == "1") {
        panic!("{reason} (REPOPT_REQUIRE_SHARED_DATA=1)");
    }
    eprintln!("SKIPPED: {reason} (set REPOPT_SHARED_DATA to its directory)");
    None
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

pub fn build(config: &VggConfig, mode: Mode, seed: u64) -> RepOptVgg {
    RepOptVgg::new(&gpu(), config.clone(), mode, seed).unwrap()
}
