//! Quantization-aware training through the command line and the library, on runs trained
//! here on a slice of Fashion-MNIST: the report, what `quantize` makes of a QAT run,
//! bit-identical resume, and bad input (`tests/export.rs` checks a QAT run's ONNX export in
//! an independent runtime).

mod common;

use std::path::Path;

use common::{repopt, stderr, stdout, train_tiny};
use repopt::models::checkpoint::load_tensors;
use repopt::tensor::Gpu;
use repopt::train::qat::{QatOptions, qat_config, qat_run_config};
use repopt::train::run_dir::Start;
use repopt::train::trainer::{Silent, files, train};

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn qat_reports_fp32_ptq_and_int8_and_quantize_evaluates_its_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("repvgg");
    train_tiny(&run, "repvgg");
    let qat = dir.path().join("repvgg-qat");
    let r = json(&repopt(&[
        "qat",
        run.to_str().unwrap(),
        "--out",
        qat.to_str().unwrap(),
        "--calib-images",
        "64",
        "--freeze-observers",
        "0.5",
        "--json",
    ]));
    assert_eq!(r["source_mode"], "repvgg");
    // The source's FP32 deploy form scores what the run scored: conversion is exact.
    let source = read_json(&run.join("summary.json"));
    assert_eq!(r["fp32"]["top1"], source["final_eval"]["top1"]);
    for key in ["ptq", "qat_fp32", "qat_int8"] {
        let top1 = r[key]["top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top1), "{key}: {r}");
    }
    let ranges = r["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 6, "stage 0, four blocks, the classifier");
    assert!(ranges.iter().all(|v| v.as_f64().is_some_and(|v| v > 0.0)));
    // A QAT run is a run: model, checkpoint, metrics, summary, and the report.
    for f in [
        "model.safetensors",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "summary.json",
        "qat.json",
    ] {
        assert!(qat.join(f).is_file(), "{f} missing");
    }
    assert_eq!(read_json(&qat.join("qat.json"))["qat_int8"], r["qat_int8"]);

    // `quantize` evaluates the trained ranges first, as `qat` did.
    let q = json(&repopt(&[
        "quantize",
        qat.to_str().unwrap(),
        "--calibrator",
        "max",
        "--calib-images",
        "64",
        "--json",
    ]));
    let rows = q["rows"].as_array().unwrap();
    assert_eq!(rows[0]["calibrator"], "qat");
    assert_eq!(rows[0]["eval"]["top1"], r["qat_int8"]["top1"]);
    assert_eq!(rows[1]["calibrator"], "max");
    assert_eq!(q["fp32"]["top1"], r["qat_fp32"]["top1"]);

    // Conversion has nothing to do: the deploy path for a QAT run is the INT8 export.
    let out = dir.path().join("converted.safetensors");
    let o = repopt(&[
        "convert",
        qat.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("export"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn an_interrupted_qat_run_resumes_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("target");
    train_tiny(&run, "target");
    let gpu = Gpu::from_env().unwrap();
    let opts = |out: &str| QatOptions {
        epochs: 2,
        calib_images: 64,
        freeze_observers: Some(0.5),
        ..QatOptions::new(dir.path().join(out))
    };
    let whole = qat_config(&gpu, &run, &opts("whole")).unwrap();
    qat_run_config(&gpu, &whole, &Start::New, &mut Silent).unwrap();

    // 16 steps per epoch: stop inside the first epoch, before the observers freeze at 16.
    let parted = qat_config(&gpu, &run, &opts("parted")).unwrap();
    let first = train(
        &gpu,
        &repopt::train::TrainConfig {
            stop_after_steps: Some(5),
            ..parted.clone()
        },
        &Start::New,
        &mut Silent,
    )
    .unwrap();
    assert!(first.stopped_early);
    let r = qat_run_config(&gpu, &parted, &Start::Resume(None), &mut Silent).unwrap();
    assert_eq!(r.run.steps, 32);

    let a = load_tensors(&whole.out.join(files::MODEL)).unwrap();
    let b = load_tensors(&parted.out.join(files::MODEL)).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    assert!(a.tensors.iter().any(|t| t.name.ends_with(".act_max")));
    for (x, y) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(x.name, y.name);
        assert!(x.data == y.data, "{} differs after the resume", x.name);
    }
}

#[test]
fn qat_refuses_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let o = repopt(&["qat", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing-here"), "{}", stderr(&o));

    let run = dir.path().join("plain");
    train_tiny(&run, "target");
    for (flag, value, says) in [
        ("--calibrator", "median", "calibrator"),
        ("--freeze-observers", "1.5", "freeze-observers"),
        ("--averaging", "0", "averaging"),
        ("--lr", "0", "lr"),
    ] {
        let o = repopt(&["qat", run.to_str().unwrap(), flag, value]);
        assert!(!o.status.success(), "{flag} {value} accepted");
        assert!(stderr(&o).contains(says), "{flag} {value}: {}", stderr(&o));
    }
    // `train` takes no deploy model without the QAT settings.
    let o = repopt(&[
        "train",
        "--mode",
        "deploy",
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("repopt qat"), "{}", stderr(&o));
}
