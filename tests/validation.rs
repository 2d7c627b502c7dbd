//! Every numeric input of the `repopt` binary is checked against its domain before any work
//! starts, and sizes that cannot fit are refused before anything is allocated.

mod common;

use common::{repopt, stderr};
use std::path::Path;
use std::process::Output;

use repopt::models::{Mode, RepOptVgg, Scales, VggConfig, checkpoint};

/// Asserts `args` fail with a message holding `expected`, without a panic or an abort.
fn refused(args: &[&str], expected: &str) -> String {
    check_refusal(args, &repopt(args), expected)
}

fn check_refusal(args: &[&str], o: &Output, expected: &str) -> String {
    let err = stderr(o);
    assert!(
        o.status.code().is_some(),
        "{args:?} was killed by a signal: {err}"
    );
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        err.contains(expected),
        "{args:?}: expected '{expected}' in: {err}"
    );
    err
}

/// `args`, plus flags that make a run the parser wrongly let through stop within seconds.
fn fail_fast<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = args.to_vec();
    match args[0] {
        "train" | "search" | "pipeline" if !args.contains(&"--data-dir") => {
            out.extend(["--data-dir", "/nonexistent"])
        }
        "bench" => out.push("--quick"),
        _ => {}
    }
    out
}

#[test]
fn out_of_range_flags_are_refused_at_parse_time_naming_the_flag_and_the_range() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["train", "--momentum", "1.5"],
            "--momentum must be in [0, 1), got 1.5",
        ),
        (
            &["train", "--weight-decay=-1"],
            "--weight-decay must be in [0, 1], got -1",
        ),
        (
            &["train", "--clip-grad", "0"],
            "--clip-grad must be in (0, inf), got 0",
        ),
        (
            &["train", "--lr", "nan"],
            "--lr must be in (0, inf), got NaN",
        ),
        (&["train", "--lr", "0"], "--lr must be in (0, inf), got 0"),
        (
            &["train", "--lr-batch", "0"],
            "--lr-batch must be in [1, 1048576], got 0",
        ),
        (
            &["train", "--label-smoothing", "1"],
            "--label-smoothing must be in [0, 1), got 1",
        ),
        (
            &["train", "--widths", "inf,1,1,1"],
            "--widths must be in (0, 16], got inf",
        ),
        (
            &["train", "--widths", "1,0,1,1"],
            "--widths must be in (0, 16], got 0",
        ),
        (
            &["train", "--num-blocks", "100000000,1,1,1"],
            "--num-blocks must be in [1, 128], got 100000000",
        ),
        (
            &["train", "--strides", "1,1,3,2,2"],
            "--strides must be in [1, 2], got 3",
        ),
        (
            &["train", "--resolution", "100000"],
            "--resolution must be in [1, 4096], got 100000",
        ),
        (
            &["train", "--resolution", "0"],
            "--resolution must be in [1, 4096], got 0",
        ),
        (
            &["train", "--batch-size", "0"],
            "--batch-size must be in [1, 65536], got 0",
        ),
        (
            &["train", "--eval-batch-size", "1000000"],
            "--eval-batch-size must be in [1, 65536], got 1000000",
        ),
        (
            &["train", "--workers", "100000"],
            "--workers must be in [0, 1024], got 100000",
        ),
        (
            &["train", "--epochs", "0"],
            "--epochs must be in [1, 100000], got 0",
        ),
        (
            &["train", "--warmup-epochs", "1000000"],
            "--warmup-epochs must be in [0, 100000], got 1000000",
        ),
        (
            &["train", "--stop-after-steps", "0"],
            "--stop-after-steps must be in [1, inf), got 0",
        ),
        (
            &["train", "--log-every", "0"],
            "--log-every must be in [1, inf), got 0",
        ),
        (
            &["train", "--train-limit", "0"],
            "--train-limit must be in [1, inf), got 0",
        ),
        (
            &["train", "--test-limit", "0"],
            "--test-limit must be in [1, inf), got 0",
        ),
        (
            &["train", "--epochs", "many"],
            "--epochs must be a number in [1, 100000], got 'many'",
        ),
        (&["train", "--out", ""], "--out must be a non-empty path"),
        (
            &["train", "--data-dir", ""],
            "--data-dir must be a non-empty path",
        ),
        (
            &["train", "--scales", ""],
            "--scales must be a non-empty path",
        ),
        (
            &["train", "--config-file", ""],
            "--config-file must be a non-empty path",
        ),
        (
            &["train", "--config", ""],
            "--config must be a non-empty name",
        ),
        (
            &["train", "--adapter", ""],
            "--adapter (or REPOPT_ADAPTER) must be a non-empty name",
        ),
        (
            &["search", "--momentum=-0.1"],
            "--momentum must be in [0, 1), got -0.1",
        ),
        (
            &["search", "--epochs", "0"],
            "--epochs must be in [1, 100000], got 0",
        ),
        (
            &["pipeline", "--search-epochs", "0"],
            "--search-epochs must be in [1, 100000], got 0",
        ),
        (
            &["pipeline", "--search-train-limit", "0"],
            "--search-train-limit must be in [1, inf), got 0",
        ),
        (
            &["pipeline", "--search-data-dir", ""],
            "--search-data-dir must be a non-empty path",
        ),
        (&["pipeline", "--lr=-1"], "--lr must be in (0, inf), got -1"),
        (
            &["eval", "runs/x", "--eval-batch-size", "0"],
            "--eval-batch-size must be in [1, 65536], got 0",
        ),
        (
            &["eval", "runs/x", "--workers=-1"],
            "--workers must be a number in [0, 1024], got '-1'",
        ),
        (&["eval", ""], "CHECKPOINT must be a non-empty path"),
        (
            &[
                "convert",
                "runs/x",
                "-o",
                "d.safetensors",
                "--check-batch",
                "1000000000",
            ],
            "--check-batch must be in [1, 4096], got 1000000000",
        ),
        (
            &[
                "convert",
                "runs/x",
                "-o",
                "d.safetensors",
                "--resolution",
                "0",
            ],
            "--resolution must be in [1, 4096], got 0",
        ),
        (
            &["convert", "runs/x", "-o", ""],
            "--output must be a non-empty path",
        ),
        (
            &["convert", "", "-o", "d.safetensors"],
            "CHECKPOINT must be a non-empty path",
        ),
        (
            &["bench", "maxbatch", "--memory-limit", "0"],
            "--memory-limit must be in [1048576, 1099511627776], got 0",
        ),
        (
            &["bench", "maxbatch", "--cap", "0"],
            "--cap must be in [1, 65536], got 0",
        ),
        (
            &["bench", "maxbatch", "--res", "100000"],
            "--res must be in [1, 4096], got 100000",
        ),
        (
            &["bench", "kernels", "--batch", "0"],
            "--batch must be in [1, 65536], got 0",
        ),
        (
            &["bench", "kernels", "--matmul", "0"],
            "--matmul must be in [1, 16384], got 0",
        ),
        (
            &["bench", "kernels", "--res", "0"],
            "--res must be in [1, 4096], got 0",
        ),
        (
            &["bench", "update", "--params", "0"],
            "--params must be in [1, 268435456], got 0",
        ),
        (
            &["bench", "train", "--batch", "0"],
            "--batch must be in [1, 65536], got 0",
        ),
        (
            &["bench", "memory", "--res", "100000"],
            "--res must be in [1, 4096], got 100000",
        ),
        (
            &["bench", "memory", "--config", ""],
            "--config must be a non-empty name",
        ),
        (
            &["model", "info", "--widths", "inf,1,1,1"],
            "--widths must be in (0, 16], got inf",
        ),
        (
            &["model", "info", "--num-blocks", "0,1,1,1"],
            "--num-blocks must be in [1, 128], got 0",
        ),
        (
            &["model", "info", "--strides", "0,2,2,2,2"],
            "--strides must be in [1, 2], got 0",
        ),
        (
            &["model", "info", "--resolution", "100000"],
            "--resolution must be in [1, 4096], got 100000",
        ),
        (
            &["model", "info", "--classes", "0"],
            "--classes must be in [1, 1048576], got 0",
        ),
        (
            &["model", "info", "--in-channels", "0"],
            "--in-channels must be in [1, 1024], got 0",
        ),
        (&["scales", "inspect", ""], "FILE must be a non-empty path"),
        (
            &["scales", "convert", "s.pth", "-o", ""],
            "--output must be a non-empty path",
        ),
        (
            &["scales", "convert", "", "-o", "s.safetensors"],
            "INPUT must be a non-empty path",
        ),
    ];
    for (args, expected) in cases {
        let args = fail_fast(args);
        let o = repopt(&args);
        check_refusal(&args, &o, expected);
        // Parse errors exit with 2, before any adapter is opened or file read.
        assert_eq!(o.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn config_files_get_the_same_checks_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A missing data directory, so that a file the checks let through fails fast anyway.
    let cases = [
        (
            "momentum.toml",
            "data_dir = \"/nonexistent\"\nmomentum = 1.5\n",
            "momentum must be in [0, 1), got 1.5",
        ),
        (
            "widths.toml",
            "data_dir = \"/nonexistent\"\n[arch]\nwidths = [inf, 1.0, 1.0, 1.0]\n",
            "arch.widths must be in (0, 16], got inf",
        ),
        (
            "blocks.json",
            r#"{"data_dir": "/nonexistent", "arch": {"num_blocks": [1, 1, 1000, 1]}}"#,
            "arch.num_blocks must be in [1, 128], got 1000",
        ),
        (
            "out.toml",
            "data_dir = \"/nonexistent\"\nout = \"\"\n",
            "out must be a non-empty path",
        ),
        (
            "resolution.toml",
            "data_dir = \"/nonexistent\"\nresolution = 100000\n",
            "resolution must be in [1, 4096], got 100000",
        ),
        (
            "smoothing.json",
            r#"{"data_dir": "/nonexistent", "label_smoothing": -0.5}"#,
            "label_smoothing must be in [0, 1), got -0.5",
        ),
    ];
    for (name, text, expected) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let err = refused(
            &["train", "--config-file", file.to_str().unwrap()],
            expected,
        );
        assert!(err.contains(name), "the message names the file: {err}");
    }
}

/// A four-block model file small enough for a software adapter.
fn tiny_model(dir: &Path) -> std::path::PathBuf {
    let gpu = repopt::tensor::Gpu::from_env().expect("a GPU adapter (a software one will do)");
    let config = VggConfig {
        num_blocks: [1, 1, 1, 1],
        width_multipliers: [0.25; 4],
        num_classes: 10,
        ..VggConfig::preset("A0").unwrap()
    };
    let model = RepOptVgg::new(&gpu, config, Mode::Repvgg, 0).unwrap();
    let path = dir.join("model.safetensors");
    checkpoint::save_model(&path, &model, &Default::default()).unwrap();
    path
}

#[test]
fn sizes_that_cannot_fit_are_refused_with_the_size_and_the_limit() {
    // Within every flag's range, but 128 blocks of 8192 channels are no buildable model.
    let err = refused(
        &[
            "model",
            "info",
            "--widths",
            "16,16,16,16",
            "--num-blocks",
            "128,128,128,128",
        ],
        "bytes",
    );
    assert!(err.contains("limit of 17179869184 bytes"), "{err}");

    // 824 GB of random images for the equivalence check.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = dir.path().join("deploy.safetensors");
    let err = refused(
        &[
            "convert",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--check-batch",
            "4096",
            "--resolution",
            "4096",
        ],
        "824633720832 bytes",
    );
    assert!(err.contains("--check-batch"), "{err}");
    assert!(!out.exists());

    // A training batch of 1024 images of 4096 x 4096: 64 GiB on the host.
    let err = refused(
        &[
            "train",
            "--resolution",
            "4096",
            "--batch-size",
            "1024",
            "--num-blocks",
            "1,1,1,1",
            "--widths",
            "0.25,0.25,0.25,0.25",
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ],
        "68719476736 bytes",
    );
    assert!(err.contains("limit of 4294967296 bytes"), "{err}");
}

#[test]
fn absurd_scales_are_refused_before_training_naming_the_block_and_the_value() {
    let dir = tempfile::tempdir().unwrap();
    // The model `repopt train` builds for Fashion-MNIST with these flags.
    let config = VggConfig {
        name: "A0-custom".into(),
        num_blocks: [1, 1, 1, 1],
        width_multipliers: [0.25; 4],
        in_channels: 1,
        num_classes: 10,
        ..VggConfig::preset("A0").unwrap()
    };
    let mut scales = Scales::ones(&config);
    for b in &mut scales.blocks {
        b.conv.fill(1e30);
        b.one.fill(1e30);
    }
    let file = dir.path().join("scales.safetensors");
    scales.save(&file, &config).unwrap();
    let out = dir.path().join("run");
    let err = refused(
        &[
            "train",
            "--optimizer",
            "repopt-sgd",
            "--scales",
            file.to_str().unwrap(),
            "--num-blocks",
            "1,1,1,1",
            "--widths",
            "0.25,0.25,0.25,0.25",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--train-limit",
            "64",
            "--test-limit",
            "32",
            "--batch-size",
            "32",
            "--out",
            out.to_str().unwrap(),
        ],
        "stage0",
    );
    assert!(err.contains("1e30"), "{err}");
    assert!(
        !out.join("model.safetensors").exists(),
        "no model is written from refused scales"
    );
}
