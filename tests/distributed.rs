//! Data-parallel training over MPI ranks (feature `mpi`), run as users run it: under
//! `mpirun --oversubscribe -np 2`, every rank on the software adapter. Each test compares a
//! distributed run with the one-process run it must equal.

#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::stderr;
use repopt::models::checkpoint::load_tensors;

/// `mpirun -np N PROGRAM ARGS`, allowed to run as root (CI containers) and to place more
/// ranks than cores.
fn mpirun(np: usize, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string(), program])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Fail rather than wait for a network interface where a container has none.
        .env("OMPI_MCA_btl", "self,vader,tcp")
        // Kernel choices that depend only on the shape, so runs compare exactly.
        .env("REPOPT_TUNE", "off");
    c
}

fn output(mut c: Command) -> Output {
    c.output()
        .expect("mpirun runs (is Open MPI installed? see .ci/setup)")
}

fn repopt_bin() -> &'static str {
    env!("CARGO_BIN_EXE_repopt")
}

/// A tiny RepOpt-VGG on 256 Fashion-MNIST images, in order and without augmentation, so that
/// runs differ only in how the work is split. Flags in `extra` override the defaults.
fn tiny(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--mode",
        "target",
        "--num-blocks",
        "1,1,1,1",
        "--widths",
        "0.25,0.25,0.25,0.25",
        "--train-limit",
        "256",
        "--test-limit",
        "100",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "16",
        "--augment",
        "eval",
        "--label-smoothing",
        "0",
        "--workers",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A flag given in `extra` replaces the default's value (clap refuses a flag twice).
    for pair in extra.windows(2).filter(|p| p[0].starts_with("--")) {
        if let Some(i) = a.iter().position(|x| x == pair[0])
            && !pair[1].starts_with("--")
        {
            a.drain(i..i + 2);
        }
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The largest difference between two runs' trained parameters, relative to the largest
/// parameter. Batch norm running statistics are left out: they are rank 0's in a distributed
/// run (as DDP broadcasts them) and every micro-batch's in an accumulated one.
fn parameter_difference(a: &Path, b: &Path) -> f64 {
    let fa = load_tensors(&a.join("model.safetensors")).unwrap();
    let fb = load_tensors(&b.join("model.safetensors")).unwrap();
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    let mut compared = 0;
    for (ta, tb) in fa.tensors.iter().zip(&fb.tensors) {
        assert_eq!(ta.name, tb.name);
        if ta.name.contains("running_") {
            continue;
        }
        compared += 1;
        for (x, y) in ta.data.iter().zip(&tb.data) {
            diff = diff.max((x - y).abs() as f64);
            scale = scale.max(x.abs() as f64);
        }
    }
    assert!(compared >= 10, "only {compared} parameter tensors compared");
    diff / scale.max(1e-12)
}

/// 2 ranks x 8 images with batch norm per rank train exactly what one process trains on the
/// same 16-image batches as 2 micro-batches of 8 (the statistics of each half, the mean of the
/// two gradients): what per-rank batch norm changes is only which images a statistic covers.
fn ranks_equal_accumulation(optimizer: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    let extra = [optimizer, &["--stop-after-steps", "8"]].concat();
    let o = output(mpirun(2, repopt_bin(), &as_strs(&tiny(&two, &extra))));
    assert!(o.status.success(), "{}", stderr(&o));
    let extra = [&extra[..], &["--accumulate", "2"]].concat();
    let o = common::repopt(&as_strs(&tiny(&one, &extra)));
    assert!(o.status.success(), "{}", stderr(&o));
    let d = parameter_difference(&two, &one);
    assert!(d < 1e-5, "parameters differ by {d:e} (relative)");
    // The losses the two runs logged agree too (the distributed one is the mean over ranks).
    let losses = |p: &Path| -> Vec<f64> {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64())
            .collect()
    };
    let (a, b) = (losses(&two), losses(&one));
    assert!(!a.is_empty() && a.len() == b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * y.abs().max(1.0), "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_over_two_ranks_equals_one_process_with_batch_norm_per_rank() {
    ranks_equal_accumulation(&["--optimizer", "sgd"]);
}

#[test]
fn the_repoptimizer_with_grad_mults_over_two_ranks_equals_one_process() {
    ranks_equal_accumulation(&["--optimizer", "repopt-sgd", "--scales-source", "hs-initial"]);
}

/// Without batch norm, 2 ranks x B/2 equal 1 process x B: the model trained by
/// `ddp_without_batch_norm_on_each_rank` below, which this test runs under mpirun.
#[test]
fn two_ranks_of_half_batches_equal_one_process_without_batch_norm() {
    let exe = std::env::current_exe().unwrap();
    let o = output(mpirun(
        2,
        exe.to_str().unwrap(),
        &[
            "--exact",
            "ddp_without_batch_norm_on_each_rank",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    // Both ranks ran the test (a filter that matched nothing would also succeed).
    assert_eq!(out.matches("1 passed").count(), 2, "{out}");
    assert!(out.contains("max relative difference"), "{out}");
}

#[test]
#[ignore = "runs on every rank under mpirun, started by the test above"]
fn ddp_without_batch_norm_on_each_rank() {
    use repopt::models::Mode;
    use repopt::models::any::Network;
    use repopt::tensor::optim::{Optimizer, Sgd, SgdConfig};
    use repopt::tensor::{Gpu, Tensor, ops};
    use repopt::train::config::ArchConfig;
    use repopt::train::dist::{self, ddp};

    let _session = dist::mpi::Session::start().unwrap();
    let world = dist::world();
    assert_eq!(world.size(), 2);
    let gpu = Gpu::from_env().unwrap();
    let mconf = ArchConfig {
        num_blocks: Some([1, 1, 1, 1]),
        widths: Some([0.25; 4]),
        ..Default::default()
    }
    .build(1, 10)
    .unwrap();
    // The plain deploy form: conv3x3 + bias + ReLU, no batch norm.
    let (steps, global, side) = (4usize, 6usize, 13usize);
    let pixels = side * side;
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let images: Vec<f32> = (0..steps * global * pixels).map(|_| next() - 0.5).collect();
    let labels: Vec<u32> = (0..steps * global)
        .map(|_| (next() * 10.0) as u32 % 10)
        .collect();
    let sgd = SgdConfig {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
    let train = |rank: Option<usize>| -> Network {
        // Rank 1 starts from other weights: the broadcast must make them rank 0's.
        let seed = if rank == Some(1) { 7 } else { 0 };
        let model = Network::new(&gpu, &mconf, Mode::Deploy, seed).unwrap();
        let mut opt = Sgd::new(model.param_specs(1e-3), sgd).unwrap();
        let share = if rank.is_some() { global / 2 } else { global };
        if rank.is_some() {
            let state: Vec<Tensor> = model.state().into_iter().map(|(_, t)| t).collect();
            ddp::broadcast_tensors(world, &state).unwrap();
        }
        // Buckets of 4 KiB: several per step, as a large model has.
        let mut avg = ddp::GradAverager::new(opt.params(), 4096).unwrap();
        assert!(avg.buckets() > 3);
        for s in 0..steps {
            let first = s * global + rank.unwrap_or(0) * share;
            let x = Tensor::from_slice(
                &gpu,
                &images[first * pixels..(first + share) * pixels],
                &[share, 1, side, side],
            )
            .unwrap();
            let y = Tensor::from_u32(&gpu, &labels[first..first + share], &[share]).unwrap();
            let loss = ops::cross_entropy(&model.forward(&x, true).unwrap(), &y, 0.0).unwrap();
            loss.backward().unwrap();
            if rank.is_some() {
                avg.average(world, opt.params()).unwrap();
            }
            opt.step(0.05).unwrap();
            opt.zero_grad();
        }
        model
    };
    let ddp_model = train(Some(world.rank()));
    let single = train(None);
    let (mut diff, mut scale) = (0.0f32, 0.0f32);
    for ((name, a), (_, b)) in ddp_model.state().iter().zip(single.state().iter()) {
        let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        for (x, y) in a.iter().zip(&b) {
            diff = diff.max((x - y).abs());
            scale = scale.max(y.abs());
        }
        assert_eq!(a.len(), b.len(), "{name}");
    }
    let rel = diff / scale;
    println!("rank {}: max relative difference {rel:e}", world.rank());
    assert!(rel < 1e-5, "rank {}: {rel:e}", world.rank());
    assert!(scale > 0.0);
}

#[test]
fn a_two_rank_run_resumes_from_its_checkpoint_and_only_over_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    let opt = ["--optimizer", "sgd", "--epochs", "2"];
    let o = output(mpirun(2, repopt_bin(), &as_strs(&tiny(&whole, &opt))));
    assert!(o.status.success(), "{}", stderr(&o));
    // Stopped inside the first epoch, then continued.
    let first = [&opt[..], &["--stop-after-steps", "5"]].concat();
    let o = output(mpirun(2, repopt_bin(), &as_strs(&tiny(&parts, &first))));
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = load_tensors(&parts.join("checkpoint.safetensors"))
        .unwrap()
        .metadata;
    assert_eq!(meta.get("world_size").map(String::as_str), Some("2"));
    // One process may not continue it: its shards and batch norm statistics would differ.
    let out = parts.to_str().unwrap();
    let o = common::repopt(&["train", "--out", out, "--resume"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("2 rank(s)"),
        "the refusal names the world size: {}",
        stderr(&o)
    );
    let o = output(mpirun(
        2,
        repopt_bin(),
        &["train", "--out", out, "--resume"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let d = parameter_difference(&whole, &parts);
    assert_eq!(d, 0.0, "a resumed run continues bit for bit");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(parts.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["epochs"], 2);
    assert!(
        summary["final_eval"]["images"].as_u64() == Some(100),
        "{summary}"
    );
}

#[test]
fn a_killed_rank_stops_the_others_and_leaves_the_last_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed");
    let args = tiny(&out, &["--optimizer", "sgd", "--epochs", "500"]);
    // Rank 1 is killed (SIGKILL: no chance to clean up) a second after rank 0 wrote its first
    // checkpoint, mid-epoch.
    let script = r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
        (i=0; while [ ! -f "$CKPT" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; sleep 1; kill -9 $$) &
    fi; exec "$0" "$@""#;
    let mut all = vec!["-c", script, repopt_bin()];
    all.extend(as_strs(&args));
    let mut cmd = mpirun(2, "sh", &all);
    let ckpt = out.join("checkpoint.safetensors");
    cmd.env("CKPT", &ckpt);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let clock = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let limit = Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if clock.elapsed() > limit {
            child.kill().ok();
            panic!("the surviving rank still runs {limit:?} after the other was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a killed rank must fail the run");
    assert!(ckpt.is_file(), "a checkpoint from before the kill");
    let o = common::repopt(&["eval", ckpt.to_str().unwrap(), "--test-limit", "100"]);
    assert!(o.status.success(), "the checkpoint loads: {}", stderr(&o));
}

#[test]
fn ranks_started_with_different_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mismatch");
    let args = tiny(&out, &["--optimizer", "sgd"]);
    let script =
        r#"if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then exec "$0" "$@" --seed 1; fi; exec "$0" "$@""#;
    let mut all = vec!["-c", script, repopt_bin()];
    all.extend(as_strs(&args));
    let o = output(mpirun(2, "sh", &all));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("other settings than rank 0"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}

#[test]
fn a_batch_that_does_not_split_over_the_ranks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let args = tiny(&dir.path().join("odd"), &["--batch-size", "15"]);
    let o = output(mpirun(2, repopt_bin(), &as_strs(&args)));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not split over 2 rank(s)"),
        "{}",
        stderr(&o)
    );
}
