//! The trainer end to end on a small slice of the real Fashion-MNIST: Hyper-Search, then
//! RepOptimizer training with the searched scales; resume; divergence.
//!
//! Needs the dataset (`.ci/setup` installs it) and a GPU adapter (a software one will do):
//! a missing one fails these tests rather than skipping them.

use std::path::{Path, PathBuf};

use repopt_models::{Mode, Scales, checkpoint};
use repopt_tensor::Gpu;
use repopt_train::config::{ArchConfig, OptimizerKind, TrainConfig};
use repopt_train::data::Preset;
use repopt_train::run_dir::Start;
use repopt_train::search::{hyper_search, search_config};
use repopt_train::trainer::{Silent, files, load_trained_model, train};
use repopt_train::{TrainError, evaluate};

fn gpu() -> Gpu {
    Gpu::from_env().expect("these tests need a GPU adapter (install mesa-vulkan-drivers)")
}

/// A four-block RepOpt-VGG small enough for a software adapter, on 28x28 Fashion-MNIST.
fn small_run(out: &Path) -> TrainConfig {
    TrainConfig {
        arch: ArchConfig {
            preset: "A0".into(),
            num_blocks: Some([1, 1, 1, 1]),
            widths: Some([0.25, 0.25, 0.25, 0.25]),
            strides: Some([1, 2, 2, 2, 2]),
            se: false,
        },
        train_limit: Some(256),
        test_limit: Some(128),
        augment: Preset::Search,
        epochs: 2,
        warmup_epochs: 0,
        batch_size: 32,
        eval_batch_size: 64,
        lr: 0.05,
        lr_batch: 32,
        log_every: 2,
        workers: 2,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

fn train_losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join(files::METRICS)).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn assert_loss_falls(run: &Path) {
    let losses = train_losses(run);
    assert!(losses.len() >= 6, "too few logged losses: {losses:?}");
    let (first, last) = (mean(&losses[..2]), mean(&losses[losses.len() - 2..]));
    assert!(
        last < first - 0.1,
        "loss did not fall in {}: {losses:?}",
        run.display()
    );
}

#[test]
fn search_then_repoptimizer_training_learns_and_writes_reloadable_files() {
    let gpu = gpu();
    let dir = tempfile::tempdir().unwrap();

    let search_cfg = search_config(small_run(&dir.path().join("search")));
    let searched = hyper_search(&gpu, &search_cfg, &Start::New, &mut Silent).unwrap();
    assert_loss_falls(&search_cfg.out);
    assert!(searched.scales_path.exists());
    assert_eq!(
        searched.summary.len(),
        4 + 1,
        "stage 0 plus one block per stage"
    );
    for b in &searched.summary {
        assert!(
            b.means["s"].is_finite() && b.means["t"].is_finite(),
            "{b:?}"
        );
    }
    for name in ["scales.jsonl", "scales.svg", "curves.svg"] {
        assert!(search_cfg.out.join(name).exists(), "search wrote no {name}");
    }

    let cfg = TrainConfig {
        mode: Mode::Target,
        optimizer: OptimizerKind::RepoptSgd,
        scales: Some(searched.scales_path.clone()),
        ..small_run(&dir.path().join("repopt"))
    };
    let summary = train(&gpu, &cfg, &Start::New, &mut Silent).unwrap();
    assert_loss_falls(&cfg.out);
    assert_eq!(summary.epochs, 2);
    let final_eval = summary.final_eval.expect("evaluated after each epoch");
    assert!(
        final_eval.top1 > 30.0,
        "ten classes, two small epochs: top-1 {:.1}% is no better than guessing",
        final_eval.top1
    );

    for name in [
        files::CHECKPOINT,
        files::MODEL,
        files::CONFIG,
        files::METRICS,
        files::SUMMARY,
    ] {
        assert!(cfg.out.join(name).exists(), "training wrote no {name}");
    }
    let written: TrainConfig =
        serde_json::from_str(&std::fs::read_to_string(cfg.out.join(files::CONFIG)).unwrap())
            .unwrap();
    assert_eq!(
        written, cfg,
        "the resolved config is written next to the outputs"
    );

    // The saved model reproduces the reported accuracy on the same test images.
    let model = load_trained_model(&gpu, &cfg.out.join(files::MODEL)).unwrap();
    assert_eq!(model.mode(), Mode::Target);
    let splits = repopt_train::datasets::load_split(&cfg).unwrap();
    let loader = repopt_train::data::Loader::try_new(
        splits.test,
        repopt_train::data::LoaderConfig::for_preset(Preset::Eval, 64, splits.normalize),
    )
    .unwrap();
    let again = evaluate::evaluate(&model, &loader).unwrap();
    assert!(
        (again.top1 - final_eval.top1).abs() < 1e-9,
        "reloaded model: {} vs {}",
        again.top1,
        final_eval.top1
    );

    // The searched scales load against the model's configuration by name.
    let repopt_models::any::NetConfig::Vgg(config) = model.config() else {
        panic!("a VGG run");
    };
    let reloaded = Scales::load(&searched.scales_path, &config).unwrap();
    assert_eq!(reloaded.blocks.len(), 5);
}

fn model_bits(run: &Path) -> Vec<(String, Vec<u32>)> {
    let file = checkpoint::load_tensors(&run.join(files::MODEL)).unwrap();
    let mut out: Vec<(String, Vec<u32>)> = file
        .tensors
        .into_iter()
        .map(|t| (t.name, t.data.iter().map(|v| v.to_bits()).collect()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn interrupted_and_resumed_run_ends_bit_identical() {
    let gpu = gpu();
    let dir = tempfile::tempdir().unwrap();
    // RepVGG blocks carry BN running statistics, RandAugment draws from the data RNG and
    // nesterov SGD has momentum buffers: all of it must survive the interruption.
    let base = |out: PathBuf| TrainConfig {
        mode: Mode::Repvgg,
        augment: Preset::Train,
        train_limit: Some(96),
        test_limit: Some(64),
        ..small_run(&out)
    };

    let whole = base(dir.path().join("whole"));
    train(&gpu, &whole, &Start::New, &mut Silent).unwrap();

    // Three steps per epoch: stop in the middle of the second epoch.
    let parted = TrainConfig {
        stop_after_steps: Some(4),
        ..base(dir.path().join("parted"))
    };
    let first = train(&gpu, &parted, &Start::New, &mut Silent).unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.steps, 4);
    let rest = TrainConfig {
        stop_after_steps: None,
        ..parted.clone()
    };
    let resumed = train(&gpu, &rest, &Start::Resume(None), &mut Silent).unwrap();
    assert_eq!(resumed.steps, 6);
    assert!(!resumed.stopped_early);

    let (a, b) = (model_bits(&whole.out), model_bits(&parted.out));
    assert_eq!(a.len(), b.len());
    for ((name_a, bits_a), (name_b, bits_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(bits_a == bits_b, "{name_a} differs after resuming");
    }

    assert_eq!(
        train_losses(&whole.out),
        train_losses(&parted.out),
        "the resumed run's log continues where the interrupted one stopped"
    );

    // Resuming with different settings is refused, naming them.
    let changed = TrainConfig {
        lr: 0.5,
        ..rest.clone()
    };
    let err = train(
        &gpu,
        &changed,
        &Start::Resume(Some(parted.out.join(files::CHECKPOINT))),
        &mut Silent,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
    assert!(err.to_string().contains("--lr 0.5"), "{err}");
}

#[test]
fn divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint() {
    let gpu = gpu();
    let dir = tempfile::tempdir().unwrap();

    // A learning rate no network survives, from the first step: there is no checkpoint yet.
    let wild = TrainConfig {
        lr: 1e30,
        train_limit: Some(128),
        log_every: 1,
        ..small_run(&dir.path().join("wild"))
    };
    let err = train(&gpu, &wild, &Start::New, &mut Silent).unwrap_err();
    match &err {
        TrainError::Diverged { checkpoint, .. } => assert!(checkpoint.contains("none yet")),
        other => panic!("expected a divergence error, got: {other}"),
    }

    // A run that diverges after its first epoch: its checkpoint, with weights that
    // overflow on the next step, stands for the state a divergence grows from.
    let good = TrainConfig {
        train_limit: Some(64),
        log_every: 1,
        stop_after_steps: Some(2),
        ..small_run(&dir.path().join("run"))
    };
    train(&gpu, &good, &Start::New, &mut Silent).unwrap();
    let checkpoint = good.out.join(files::CHECKPOINT);
    let mut file = checkpoint::load_tensors(&checkpoint).unwrap();
    for t in file
        .tensors
        .iter_mut()
        .filter(|t| !t.name.starts_with("optimizer/"))
    {
        t.data.iter_mut().for_each(|v| *v *= 1e30);
    }
    checkpoint::save_tensors(&checkpoint, &file.tensors, &file.metadata).unwrap();
    let before = std::fs::read(&checkpoint).unwrap();

    let rest = TrainConfig {
        stop_after_steps: None,
        ..good.clone()
    };
    let err = train(&gpu, &rest, &Start::Resume(None), &mut Silent).unwrap_err();
    match &err {
        TrainError::Diverged {
            checkpoint: named, ..
        } => assert_eq!(Path::new(named), checkpoint),
        other => panic!("expected a divergence error, got: {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("checkpoint"), "{message}");
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        before,
        "the last good checkpoint must be left as it was"
    );
    load_trained_model(&gpu, &checkpoint).unwrap();
}

#[test]
fn weights_that_diverge_between_logged_losses_stop_the_run_before_a_checkpoint() {
    let gpu = gpu();
    let dir = tempfile::tempdir().unwrap();
    // One step per epoch: the only logged loss is computed before the update that blows the
    // weights up, so only a look at the weights themselves can see it, and it must come
    // before the epoch's checkpoint is written. (That an existing good checkpoint survives
    // a divergence is checked by the test above.)
    let wild = TrainConfig {
        epochs: 1,
        lr: 1e30,
        train_limit: Some(32),
        ..small_run(dir.path())
    };
    let err = train(&gpu, &wild, &Start::New, &mut Silent).unwrap_err();
    match &err {
        TrainError::Diverged { step, .. } => assert_eq!(*step, 1),
        other => panic!("expected a divergence error, got: {other}"),
    }
    assert!(err.to_string().contains("weights"), "{err}");
    for file in [files::CHECKPOINT, files::MODEL] {
        assert!(
            !dir.path().join(file).exists(),
            "{file} must not be written with non-finite weights"
        );
    }
}
