//! What `repopt` promises about a run directory, checked through the binary: records kept
//! across resumes and kills, new runs refused over old ones, one process per directory,
//! resumes that take their settings from the run, and progress outside a terminal.

mod common;

use common::{repopt, stderr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A run of seconds on a software adapter: 128 images, batches of 32, two epochs (8 steps),
/// four narrow blocks, settings that all differ from the defaults.
const TINY: [&str; 16] = [
    "--train-limit",
    "128",
    "--test-limit",
    "64",
    "--epochs",
    "2",
    "--warmup-epochs",
    "0",
    "--batch-size",
    "32",
    "--num-blocks",
    "1,1,1,1",
    "--widths",
    "0.25,0.25,0.25,0.25",
    "--log-every",
    "1",
];

fn train(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    repopt(&[&["train"], &TINY[..], &["--out", out], extra].concat())
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
    assert!(!stderr(o).contains("panicked"), "{}", stderr(o));
}

fn refused(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected a refusal; stderr: {}",
        stderr(o)
    );
    let err = stderr(o);
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The evaluation lines of a run's metrics.
fn evals(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect()
}

/// What a summary says about the run's results (the timing fields aside).
fn outcome(summary: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "epochs": summary["epochs"],
        "steps": summary["steps"],
        "final_eval": summary["final_eval"],
        "best_top1": summary["best_top1"],
        "stopped_early": summary["stopped_early"],
    })
}

#[test]
fn resuming_a_finished_run_trains_nothing_and_keeps_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, &[]));
    let summary = read(&run.join("summary.json"));
    let metrics = read(&run.join("metrics.jsonl"));
    let checkpoint = read(&run.join("checkpoint.safetensors"));

    ok(&train(&run, &["--resume"]));
    assert_eq!(
        outcome(&json(&run.join("summary.json"))),
        outcome(&serde_json::from_slice(&summary).unwrap()),
        "a resume of a finished run keeps its results"
    );
    assert_eq!(
        read(&run.join("metrics.jsonl")),
        metrics,
        "nothing was trained"
    );
    assert_eq!(read(&run.join("checkpoint.safetensors")), checkpoint);
}

#[test]
fn a_summary_lost_to_a_kill_is_regenerated_by_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, &[]));
    let before = json(&run.join("summary.json"));
    // A kill after the last checkpoint and before the summary leaves exactly this.
    std::fs::remove_file(run.join("summary.json")).unwrap();

    let fresh = refused(&train(&run, &[]));
    assert!(fresh.contains("--resume"), "{fresh}");
    ok(&train(&run, &["--resume"]));
    let after = json(&run.join("summary.json"));
    assert_eq!(outcome(&after), outcome(&before));
    assert_eq!(after["train_seconds"], before["train_seconds"]);
    assert_eq!(after["images_per_s"], before["images_per_s"]);
}

#[test]
fn a_resumed_run_reports_the_results_of_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // Four steps per epoch: stop in the middle of the second epoch, after one evaluation.
    ok(&train(&run, &["--stop-after-steps", "6"]));
    let first = evals(&run);
    assert_eq!(first.len(), 1);

    // A second time box that ends before the next evaluation.
    ok(&train(&run, &["--resume", "--stop-after-steps", "7"]));
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["steps"], 7);
    assert_eq!(summary["stopped_early"], true);
    assert_eq!(summary["best_top1"], first[0]["top1"]);
    assert_eq!(summary["final_eval"]["top1"], first[0]["top1"]);

    ok(&train(&run, &["--resume"]));
    let summary = json(&run.join("summary.json"));
    let all = evals(&run);
    assert_eq!(all.len(), 2);
    let best = all
        .iter()
        .map(|e| e["top1"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(summary["best_top1"].as_f64().unwrap(), best);
    assert_eq!(summary["final_eval"]["top1"], all[1]["top1"]);
    assert_eq!(summary["stopped_early"], false);
}

#[test]
fn a_run_stopped_at_the_end_of_an_epoch_has_evaluated_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, &["--stop-after-steps", "4"]));
    assert_eq!(evals(&run).len(), 1, "epoch 0 ended at step 4");
    ok(&train(&run, &["--resume"]));
    assert_eq!(evals(&run).len(), 2);
}

#[test]
fn a_refused_resume_changes_nothing_and_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, &["--stop-after-steps", "6"]));
    let files = ["config.json", "metrics.jsonl", "checkpoint.safetensors"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| read(&run.join(f))).collect();

    let err = refused(&train(&run, &["--resume", "--lr", "0.5"]));
    assert!(err.contains("--lr"), "{err}");
    assert!(err.contains("config.json"), "names the run's record: {err}");
    for (f, bytes) in files.iter().zip(&before) {
        assert_eq!(&read(&run.join(f)), bytes, "{f} changed");
    }
}

#[test]
fn resume_takes_the_runs_settings_and_reports_only_flags_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    ok(&train(&run, &["--stop-after-steps", "3"]));

    // Only the flags passed are compared: --seed differs, the rest is the run's own.
    let err = refused(&repopt(&[
        "train", "--out", run_arg, "--resume", "--seed", "7", "--epochs", "2",
    ]));
    assert!(err.contains("--seed"), "{err}");
    for quiet in ["--epochs", "--train-limit", "--batch-size", "--num-blocks"] {
        assert!(
            !err.contains(quiet),
            "{quiet} was not passed differently: {err}"
        );
    }

    // Settings that do not change the run may differ.
    ok(&repopt(&[
        "train",
        "--out",
        run_arg,
        "--resume",
        "--workers",
        "1",
    ]));
    let summary = json(&run.join("summary.json"));
    assert_eq!(summary["steps"], 8);
    assert_eq!(json(&run.join("config.json"))["workers"], 1);
}

#[test]
fn search_resumes_with_only_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("search");
    let run_arg = run.to_str().unwrap();
    let start = [
        &["search"],
        &TINY[..],
        &["--out", run_arg, "--stop-after-steps", "2"],
    ]
    .concat();
    ok(&repopt(&start));
    ok(&repopt(&["search", "--out", run_arg, "--resume"]));
    assert_eq!(json(&run.join("summary.json"))["steps"], 8);
    assert!(run.join("scales.safetensors").is_file());
}

#[cfg(unix)]
#[test]
fn resume_compares_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(
        &run,
        &[
            "--data-dir",
            "/usr/share/datasets/fashion-mnist",
            "--stop-after-steps",
            "3",
        ],
    ));
    // The same files under another directory are another dataset as far as a run knows.
    let other = dir.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir("/usr/share/datasets/fashion-mnist").unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), other.join(entry.file_name())).unwrap();
    }
    let err = refused(&train(
        &run,
        &["--resume", "--data-dir", other.to_str().unwrap()],
    ));
    assert!(err.contains("--data-dir"), "{err}");
}

#[test]
fn a_new_run_over_an_old_one_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, &[]));
    let metrics = read(&run.join("metrics.jsonl"));

    let err = refused(&train(&run, &["--seed", "3"]));
    assert!(
        err.contains("--overwrite") && err.contains("--resume"),
        "{err}"
    );
    assert!(err.contains(run.to_str().unwrap()), "{err}");
    assert_eq!(
        read(&run.join("metrics.jsonl")),
        metrics,
        "the old run is intact"
    );

    ok(&train(&run, &["--seed", "3", "--overwrite"]));
    assert_eq!(json(&run.join("config.json"))["seed"], 3);
    assert_eq!(json(&run.join("summary.json"))["steps"], 8);
    assert_eq!(
        evals(&run).len(),
        2,
        "the old run's metrics were replaced, not appended to"
    );
}

#[test]
fn a_run_that_cannot_load_its_data_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-data");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.to_str().unwrap();

    let fresh = dir.path().join("fresh");
    refused(&train(&fresh, &["--data-dir", empty]));
    assert!(!fresh.join("config.json").exists());
    assert!(!fresh.join("metrics.jsonl").exists());

    // Replacing a run fails the same way before the old run is touched.
    let run = dir.path().join("run");
    ok(&train(&run, &[]));
    let config = read(&run.join("config.json"));
    let summary = read(&run.join("summary.json"));
    refused(&train(&run, &["--data-dir", empty, "--overwrite"]));
    assert_eq!(read(&run.join("config.json")), config);
    assert_eq!(read(&run.join("summary.json")), summary);
    assert!(run.join("checkpoint.safetensors").is_file());
}

#[test]
fn files_left_half_written_by_a_kill_are_removed_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&train(&run, &["--stop-after-steps", "3"]));
    let orphans = [
        ".checkpoint.safetensors.tmp-999999",
        ".summary.json.tmp-4242",
    ];
    for name in orphans {
        std::fs::write(run.join(name), b"half").unwrap();
    }
    ok(&train(&run, &["--resume"]));
    for name in orphans {
        assert!(!run.join(name).exists(), "{name} was left behind");
    }
}

#[test]
fn a_second_process_on_the_same_directory_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = run.to_str().unwrap();
    // Long enough (128 steps) that the second process starts while the first trains.
    let args = [
        &[
            "train",
            "--out",
            out,
            "--train-limit",
            "4096",
            "--epochs",
            "1",
        ][..],
        &TINY[2..4],
        &TINY[6..14],
    ]
    .concat();
    let mut first = Command::new(env!("CARGO_BIN_EXE_repopt"))
        .args(&args)
        .env("REPOPT_TUNE", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let holder = first.id().to_string();
    let holds = || {
        std::fs::read_to_string(run.join(".lock")).is_ok_and(|t| t.trim() == holder)
            || run.join("metrics.jsonl").exists()
    };
    while !holds() {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before training"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = repopt(&args);
    let first_done = first.wait_with_output().unwrap();
    ok(&first_done);
    let err = refused(&second);
    assert!(err.contains(&holder), "names the holder: {err}");
    assert!(err.contains(out), "{err}");

    let steps: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "one writer: {steps:?}"
    );
    assert_eq!(json(&run.join("summary.json"))["steps"], 128);
}

#[test]
fn progress_outside_a_terminal_is_plain_lines_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let o = train(&dir.path().join("run"), &[]);
    ok(&o);
    let err = stderr(&o);
    let steps: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("train: step "))
        .collect();
    assert!(!steps.is_empty(), "no progress lines: {err}");
    for line in &steps {
        for part in ["/8 (", "%) ", "epoch ", "loss ", "lr ", " img/s", "ETA "] {
            assert!(line.contains(part), "'{part}' missing in: {line}");
        }
    }
    assert!(
        steps.last().unwrap().starts_with("train: step 8/8 (100%)"),
        "{err}"
    );
    assert!(
        err.contains("train epoch 1: test top-1"),
        "evaluations are reported: {err}"
    );
}

#[test]
fn the_pipeline_refuses_to_replace_runs_with_other_settings_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pipeline");
    let base: Vec<&str> = vec![
        "pipeline",
        "--seeds",
        "0",
        "--train-limit",
        "64",
        "--test-limit",
        "32",
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
        "--out",
        out.to_str().unwrap(),
    ];
    // A time-boxed pipeline is continued by the next invocation.
    ok(&repopt(&[&base[..], &["--stop-after-steps", "1"]].concat()));
    let again = repopt(&base);
    ok(&again);
    assert!(!stderr(&again).contains("reused"), "{}", stderr(&again));
    assert_eq!(json(&out.join("search/summary.json"))["steps"], 2);

    let changed = [&base[..], &["--lr", "0.3"]].concat();
    let err = refused(&repopt(&changed));
    assert!(err.contains("--overwrite"), "{err}");
    ok(&repopt(&[&changed[..], &["--overwrite"]].concat()));
    assert_eq!(json(&out.join("search/config.json"))["lr"], 0.3);
}
