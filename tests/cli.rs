//! The `repopt` binary as a user runs it.

mod common;

use common::{official_scales, repopt, repopt_with, stderr, stdout};

#[test]
fn devices_lists_an_adapter_with_its_limits() {
    let o = repopt(&["devices", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let adapters: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!adapters.is_empty(), "no adapter listed");
    for a in &adapters {
        assert!(a["name"].as_str().is_some_and(|n| !n.is_empty()), "{a}");
        assert!(a["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    }
    let text = repopt(&["devices"]);
    assert!(stdout(&text).contains("max storage binding"));
}

#[test]
fn model_info_counts_b1_parameters() {
    let o = repopt(&[
        "model",
        "info",
        "--config",
        "B1",
        "--mode",
        "target",
        "--classes",
        "1000",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let params = info["params"].as_u64().unwrap();
    assert_eq!(
        (params as f64 / 1e5).round(),
        518.0,
        "B1 has 51.8M parameters"
    );
    assert!(info["flops"].as_u64().unwrap() > 1_000_000_000);
}

#[test]
fn scales_inspect_prints_every_b1_block() {
    let Some(dir) = official_scales("scales_inspect_prints_every_b1_block") else {
        return;
    };
    let file = dir.join("RepOpt-VGG-B1-scales.pth");
    let o = repopt(&[
        "scales",
        "inspect",
        file.to_str().unwrap(),
        "--config",
        "B1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let blocks: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(blocks.len(), 28);
    assert_eq!(blocks[0]["block"], "stage0");
    assert_eq!(blocks[2]["block"], "stage1.1");
    assert!(
        blocks[2]["u"].as_f64().is_some(),
        "stage1.1 has an identity branch"
    );
    assert!(
        blocks[1]["u"].is_null(),
        "stage1.0 has stride 2, so no identity"
    );
    let table = repopt(&[
        "scales",
        "inspect",
        file.to_str().unwrap(),
        "--config",
        "B1",
    ]);
    assert!(table.status.success());
    assert!(stdout(&table).lines().count() >= 28);
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "epochs = \"many\"\n").unwrap();
    let o = repopt(&["train", "--config-file", config.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("run.toml") && err.contains("epochs"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let missing = dir.path().join("nothing-here.pth");
    let o = repopt(&["scales", "inspect", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing-here.pth"), "{}", stderr(&o));

    let run = dir.path().join("run");
    let o = repopt(&[
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(
        !run.join("config.json").exists(),
        "a run that found no data records no settings"
    );

    // Micro-batches must split the batch evenly (and so, over MPI, must the ranks).
    let o = repopt(&[
        "train",
        "--batch-size",
        "16",
        "--accumulate",
        "3",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("--accumulate 3") && err.contains("16"),
        "{err}"
    );
    assert!(!run.join("config.json").exists(), "{err}");
}

/// The main job shrunk to seconds: one seed, one epoch, 128 images, four blocks.
const TINY_PIPELINE: [&str; 19] = [
    "pipeline",
    "--seeds",
    "0",
    "--train-limit",
    "128",
    "--test-limit",
    "64",
    "--epochs",
    "1",
    "--search-epochs",
    "1",
    "--warmup-epochs",
    "0",
    "--batch-size",
    "32",
    "--num-blocks",
    "1,1,1,1",
    "--widths",
    "0.25,0.25,0.25,0.25",
];

#[test]
fn pipeline_runs_the_main_job_end_to_end_on_a_slice_of_fashion_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pipeline");
    let out_arg = out.to_str().unwrap();
    let args = [&TINY_PIPELINE[..], &["--out", out_arg]].concat();
    let o = repopt(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rows = results["rows"].as_array().unwrap();
    let optimizers: Vec<&str> = rows
        .iter()
        .map(|r| r["optimizer"].as_str().unwrap())
        .collect();
    assert_eq!(optimizers, ["repopt-sgd", "sgd", "sgd"]);
    for r in rows {
        let top1 = r["top1_mean"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top1), "{r}");
        // Every run is quantized after training: max and the best calibrator, per seed.
        let int8 = r["ptq"]["max_top1"].as_array().unwrap();
        assert_eq!(int8.len(), 1, "{r}");
        assert!(r["ptq"]["best_mean"].as_f64().unwrap() >= r["ptq"]["max_mean"].as_f64().unwrap());
    }
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        table.contains("RepOpt-VGG") && table.contains("RepVGG") && table.contains("INT8 max"),
        "{table}"
    );
    for file in [
        "search/scales.safetensors",
        "search/scales.svg",
        "curves.svg",
    ] {
        assert!(out.join(file).exists(), "the pipeline wrote no {file}");
    }

    // A second invocation reuses the finished runs instead of training again.
    let again = repopt(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("reused"), "{}", stderr(&again));
}

/// Seeds trained at once, each on its own device, give the same runs bit for bit as seeds
/// trained one after another.
#[test]
fn pipeline_seeds_trained_at_once_match_seeds_trained_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let run = |jobs: &str| {
        let out = dir.path().join(format!("jobs{jobs}"));
        let mut args = [
            &TINY_PIPELINE[..],
            &["--jobs", jobs, "--no-ptq", "--out", out.to_str().unwrap()],
        ]
        .concat();
        assert_eq!(args[1..3], ["--seeds", "0"]);
        args[2] = "0,1";
        let o = repopt(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let (together, in_turn) = (run("2"), run("1"));
    let report = |out: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
    };
    assert_eq!(report(&together)["jobs"], 2);
    assert_eq!(report(&in_turn)["jobs"], 1);
    let table = std::fs::read_to_string(together.join("results.md")).unwrap();
    assert!(table.contains("trained 2 at a time"), "{table}");
    for key in ["repopt", "target", "repvgg"] {
        for seed in [0, 1] {
            let model = format!("{key}-seed{seed}/model.safetensors");
            // The tensors' bytes, after the header (whose metadata names the run's paths).
            let tensors = |out: &std::path::Path| {
                let bytes = std::fs::read(out.join(&model)).unwrap();
                let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                bytes[8 + header..].to_vec()
            };
            let (a, b) = (tensors(&together), tensors(&in_turn));
            assert!(
                !a.is_empty() && a == b,
                "{model} differs between --jobs 2 and --jobs 1"
            );
        }
    }
    let seeds = |out: &std::path::Path| report(out)["rows"].clone();
    let (a, b) = (seeds(&together), seeds(&in_turn));
    for (ra, rb) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert_eq!(ra["top1"], rb["top1"]);
    }
}

#[test]
fn scales_inspect_lists_the_tensors_of_a_ghostnet_file() {
    let Some(dir) = official_scales("scales_inspect_lists_the_tensors_of_a_ghostnet_file") else {
        return;
    };
    let file = dir.join("RepOptGhostNet_0_5x_scales.pth");
    // Without --config the file's family and width are found from its keys.
    let inferred = repopt(&["scales", "inspect", file.to_str().unwrap()]);
    assert!(inferred.status.success(), "{}", stderr(&inferred));
    assert!(
        stdout(&inferred).contains("32 blocks of ghostnet-0.5x scales"),
        "{}",
        stdout(&inferred)
    );

    let o = repopt(&[
        "scales",
        "inspect",
        file.to_str().unwrap(),
        "--tensors",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tensors: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tensors.len(), 64);
    let fusion = tensors
        .iter()
        .find(|t| t["name"] == "blocks.0.0.ghost1.fusion_scale.weight")
        .expect("the first fusion scale is listed");
    assert_eq!(fusion["len"], 4);
    let (min, mean, max) = (
        fusion["min"].as_f64().unwrap(),
        fusion["mean"].as_f64().unwrap(),
        fusion["max"].as_f64().unwrap(),
    );
    assert!(min <= mean && mean <= max, "{fusion}");
}

/// A deploy model copied away from its run is evaluated as its run was trained (dataset,
/// resolution), from the settings `convert` embeds, and scores what the run scores.
#[test]
fn eval_of_a_deploy_model_away_from_its_run_uses_the_runs_settings() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let o = repopt(&[
        "train",
        "--mode",
        "repvgg",
        "--resolution",
        "20",
        "--train-limit",
        "64",
        "--test-limit",
        "64",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "32",
        "--num-blocks",
        "1,1,1,1",
        "--widths",
        "0.25,0.25,0.25,0.25",
        "--out",
        run_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deploy = dir.path().join("elsewhere").join("deploy.safetensors");
    std::fs::create_dir_all(deploy.parent().unwrap()).unwrap();
    let deploy_s = deploy.to_str().unwrap();
    let o = repopt(&["convert", run_s, "-o", deploy_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval = |path: &str| {
        let o = repopt(&["eval", path, "--test-limit", "64", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        (r["top1"].as_f64().unwrap(), r["loss"].as_f64().unwrap())
    };
    let (run_top1, run_loss) = eval(run_s);
    let (top1, loss) = eval(deploy_s);
    assert_eq!(top1, run_top1);
    assert!(
        (loss - run_loss).abs() <= 1e-4 * run_loss.abs().max(1.0),
        "deploy loss {loss}, run loss {run_loss}"
    );
}

#[test]
fn tune_measures_each_shape_once_and_keeps_the_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let dir = cache.to_str().unwrap();
    let args = [
        "tune",
        "--config",
        "A0",
        "--modes",
        "target",
        "--batch-size",
        "2",
        "--res",
        "32",
    ];
    let env = [("REPOPT_TUNE", "on"), ("REPOPT_CACHE_DIR", dir)];
    let first = repopt_with(&args, &env);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = stdout(&first);
    // A0 at 32x32 has eight 3x3 shapes (three at stride 1, five at stride 2), each with a
    // forward and two gradients, but the image needs no gradient: 23.
    assert!(
        out.contains("23 shapes measured now, 0 known before"),
        "{out}"
    );
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(files.len(), 1, "one cache file per adapter");
    let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    let choices: Vec<_> = text.lines().filter(|l| l.starts_with("conv3x3")).collect();
    assert_eq!(choices.len(), 23, "{text}");
    assert!(choices.iter().all(|l| {
        let stride_1 = l.starts_with("conv3x3s1p1.");
        l.ends_with(" direct") || l.ends_with(" gemm") || (stride_1 && l.ends_with(" winograd"))
    }));
    let again = repopt_with(&args, &env);
    assert!(stdout(&again).contains("0 shapes measured now, 23 known before"));
    let off = repopt_with(&args, &[("REPOPT_TUNE", "off"), ("REPOPT_CACHE_DIR", dir)]);
    assert!(!off.status.success());
    assert!(stderr(&off).contains("REPOPT_TUNE=off turns measuring off"));
    let bad = repopt_with(&args, &[("REPOPT_TUNE", "fastest")]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("REPOPT_TUNE") && stderr(&bad).contains("expected off, on"),
        "{}",
        stderr(&bad)
    );
}
