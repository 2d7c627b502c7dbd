//! INT8 post-training quantization and kernel statistics through the command line, on runs
//! trained here on a slice of Fashion-MNIST.

mod common;

use common::{repopt, stderr, stdout, train_tiny};

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap()
}

#[test]
fn quantize_compares_every_calibrator_with_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("repvgg");
    train_tiny(&run, "repvgg");
    let r = json(&repopt(&[
        "quantize",
        run.to_str().unwrap(),
        "--calib-images",
        "64",
        "--json",
    ]));
    assert_eq!(r["mode"], "repvgg");
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        4 + 1 + 1,
        "stage 0, four blocks, the classifier"
    );
    let rows = r["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["calibrator"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "max",
            "percentile-99.9",
            "percentile-99.99",
            "percentile-99.999",
            "entropy",
            "mse"
        ]
    );
    // The FP32 deploy model scores what the run scored: conversion is exact.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(r["fp32"]["top1"], summary["final_eval"]["top1"]);
    let fp32 = r["fp32"]["top1"].as_f64().unwrap();
    for row in rows {
        let top1 = row["eval"]["top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top1), "{row}");
        for t in row["thresholds"].as_array().unwrap() {
            let t = t.as_f64().unwrap();
            assert!(t.is_finite() && t > 0.0, "{row}");
        }
    }
    // Max calibration keeps every value in range: a small model loses little.
    let max = rows[0]["eval"]["top1"].as_f64().unwrap();
    assert!((max - fp32).abs() < 5.0, "INT8 max {max} vs FP32 {fp32}");

    // Keeping every layer in float reproduces FP32 exactly.
    let all: Vec<String> = layers
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let keep = all.join(",");
    let f = json(&repopt(&[
        "quantize",
        run.to_str().unwrap(),
        "--calibrator",
        "max",
        "--calib-images",
        "32",
        "--keep-float",
        &keep,
        "--json",
    ]));
    assert_eq!(f["rows"][0]["eval"]["top1"], r["fp32"]["top1"]);
    assert_eq!(f["rows"][0]["eval"]["loss"], r["fp32"]["loss"]);
}

#[test]
fn quantize_refuses_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    let o = repopt(&["quantize", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-run"), "{}", stderr(&o));

    let run = dir.path().join("target");
    train_tiny(&run, "target");
    let o = repopt(&["quantize", run.to_str().unwrap(), "--calibrator", "kl"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("'kl'") && stderr(&o).contains("entropy"),
        "{}",
        stderr(&o)
    );

    let o = repopt(&["quantize", run.to_str().unwrap(), "--keep-float", "stage9"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("stage9") && stderr(&o).contains("stage0"),
        "{}",
        stderr(&o)
    );

    let o = repopt(&["quantize", run.to_str().unwrap(), "--calib-images", "0"]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));

    // A run another process holds (still training) is not quantized.
    let held = repopt::train::run_dir::RunDir::open(&run).unwrap();
    let o = repopt(&["quantize", run.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    drop(held);
}

#[test]
fn stats_reports_table_11_stages_and_draws_the_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let (rep, target) = (dir.path().join("rep"), dir.path().join("target"));
    train_tiny(&rep, "repvgg");
    train_tiny(&target, "target");
    let o = repopt(&["stats", rep.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5 * 3, "three stages of five blocks");
    let stages: Vec<&str> = lines[..3]
        .iter()
        .map(|l| l["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["before BN fusion", "after BN fusion", "deploy"]);
    for l in &lines {
        let s = &l["stats"];
        for key in [
            "std",
            "std_centre",
            "std_surround",
            "max_over_std",
            "kurtosis",
            "sqnr_db",
        ] {
            assert!(s[key].as_f64().unwrap().is_finite(), "{l}");
        }
    }
    let svg = dir.path().join("kernels.svg");
    let o = repopt(&[
        "stats",
        target.to_str().unwrap(),
        "--compare",
        rep.to_str().unwrap(),
        "--layer",
        "stage2.0",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("target (target)") && drawn.contains("rep (repvgg)"));
    let o = repopt(&[
        "stats",
        rep.to_str().unwrap(),
        "--layer",
        "stage7",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("stage7") && stderr(&o).contains("stage0"),
        "{}",
        stderr(&o)
    );
}
