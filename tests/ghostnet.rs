//! RepOpt-GhostNet and RepGhostNet through the command line: training on Fashion-MNIST
//! slices with the authors' scales, conversion, the pipeline's `--model`, the equivalence
//! check of declared blocks, and bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{repopt, stderr, stdout};

fn official_ghost_scales(test: &str) -> Option<PathBuf> {
    common::official_scales(test).map(|d| d.join("RepOptGhostNet_0_5x_scales.pth"))
}

/// The training losses a run logged, in order.
fn train_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["kind"] == "train")
        .map(|m| m["loss"].as_f64().unwrap())
        .collect()
}

/// Three epochs of 640 images, logged every 5 steps, with no warm-up.
fn short_run<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--model",
        "ghostnet-0.5x",
        "--train-limit",
        "640",
        "--test-limit",
        "200",
        "--epochs",
        "3",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "32",
        "--log-every",
        "5",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

fn assert_loss_falls(run: &Path, what: &str) {
    let losses = train_losses(run);
    assert!(losses.len() >= 6, "{what}: {losses:?}");
    let first = losses[..2].iter().sum::<f64>() / 2.0;
    let last = losses[losses.len() - 2..].iter().sum::<f64>() / 2.0;
    assert!(
        last < first - 0.05,
        "{what}: loss {first:.3} -> {last:.3} ({losses:?})"
    );
}

#[test]
fn repopt_ghostnet_trains_with_the_authors_scales_and_repghostnet_converts() {
    let Some(scales) = official_ghost_scales("repopt_ghostnet_trains_with_the_authors_scales")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let o = repopt(&short_run(
        target.to_str().unwrap(),
        &[
            "--mode",
            "target",
            "--optimizer",
            "repopt-sgd",
            "--scales",
            scales.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_loss_falls(&target, "RepOpt-GhostNet");

    let rep = dir.path().join("rep");
    let o = repopt(&short_run(rep.to_str().unwrap(), &["--mode", "repvgg"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_loss_falls(&rep, "RepGhostNet");

    // The structural baseline converts to the plain form and scores what the run scored.
    let deploy = dir.path().join("deploy.safetensors");
    let o = repopt(&[
        "convert",
        rep.to_str().unwrap(),
        "-o",
        deploy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ghostnet-0.5x repvgg -> deploy"),
        "{}",
        stdout(&o)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rep.join("summary.json")).unwrap()).unwrap();
    let o = repopt(&["eval", deploy.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        eval["top1"], summary["final_eval"]["top1"],
        "{eval} vs {summary}"
    );
}

#[test]
fn scales_inspect_reads_the_ghostnet_file_per_module() {
    let Some(scales) = official_ghost_scales("scales_inspect_reads_the_ghostnet_file_per_module")
    else {
        return;
    };
    let o = repopt(&[
        "scales",
        "inspect",
        scales.to_str().unwrap(),
        "--model",
        "ghostnet-0.5x",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 32);
    assert_eq!(rows[0]["block"], "blocks.0.0.ghost1");
    let t = rows[0]["t"].as_f64().unwrap();
    assert!((t - 2.6035).abs() < 1e-3, "{}", rows[0]);

    // The file does not fit another width, and says which key.
    let o = repopt(&[
        "scales",
        "inspect",
        scales.to_str().unwrap(),
        "--model",
        "ghostnet-1.0x",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("blocks.0.0.ghost1.cheap_operation.1.weight"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pipeline_takes_a_ghostnet_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pipeline");
    let o = repopt(&[
        "pipeline",
        "--model",
        "ghostnet-0.5x",
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
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    for row in ["RepOpt-GhostNet", "plain GhostNet", "RepGhostNet"] {
        assert!(table.contains(row), "{table}");
    }
    let searched = std::fs::read_to_string(out.join("search/scales.jsonl")).unwrap();
    assert_eq!(searched.lines().count(), 32, "one line per ghost module");
}

#[test]
fn gr_verify_proves_the_declared_blocks() {
    let o = repopt(&["gr", "verify", "--steps", "30", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let blocks: Vec<&str> = rows.iter().map(|r| r["block"].as_str().unwrap()).collect();
    assert_eq!(blocks, ["vgg", "ghost", "acnet", "wide"]);
    for r in &rows {
        assert_eq!(r["equivalent"], true, "{r}");
        let gap = r["max_gap"].as_f64().unwrap();
        assert!(gap < 1e-4, "{r}");
        assert!(
            r["gap_without_grad_mult"].as_f64().unwrap() > 100.0 * gap.max(1e-6),
            "{r}"
        );
        assert!(
            r["gap_without_reinit"].as_f64().unwrap() > 100.0 * gap.max(1e-6),
            "{r}"
        );
    }
}

#[test]
fn ghostnet_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let o = repopt(&["train", "--model", "ghostnet-0.7x", "--out", out]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ghostnet-0.7x") && stderr(&o).contains("ghostnet-0.5x"),
        "{}",
        stderr(&o)
    );

    let o = repopt(&[
        "train",
        "--model",
        "ghostnet-0.5x",
        "--num-blocks",
        "1,1,1,1",
        "--out",
        out,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("num_blocks"), "{}", stderr(&o));

    if let Some(dir) = official_ghost_scales("ghostnet_bad_input_is_a_clear_error") {
        let vgg = dir.with_file_name("RepOpt-VGG-B1-scales.pth");
        let o = repopt(&[
            "train",
            "--model",
            "ghostnet-0.5x",
            "--optimizer",
            "repopt-sgd",
            "--scales",
            vgg.to_str().unwrap(),
            "--out",
            out,
        ]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("RepOpt-VGG-B1-scales.pth") && err.contains("missing"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
