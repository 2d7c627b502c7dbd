//! The examples, run with small sizes: a custom network trained on the engine alone learns
//! its task, and `classify` agrees with the model's own forward pass on a run directory and
//! on a deploy model, and names the file it cannot read.
//!
//! Needs a GPU adapter (a software one will do): a missing one fails these tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use repopt::models::any::NetConfig;
use repopt::models::checkpoint::save_model;
use repopt::models::reparam::to_deploy;
use repopt::models::{Mode, RepOptVgg};
use repopt::tensor::{Gpu, Tensor, no_grad};
use repopt::train::config::{ArchConfig, DatasetKind, TrainConfig};
use repopt::train::data::{CIFAR10_CLASSES, Normalize};
use repopt::train::trainer::{files, run_metadata};

// `main` is each example's entry point; the tests call `run`.
#[allow(dead_code)]
#[path = "../examples/custom_net.rs"]
mod custom_net;

#[allow(dead_code)]
#[path = "../examples/declare_block.rs"]
mod declare_block;

#[allow(dead_code)]
#[path = "../examples/classify.rs"]
mod classify;

fn gpu() -> Gpu {
    Gpu::from_env().expect("these tests need a GPU adapter (install mesa-vulkan-drivers)")
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

#[test]
fn custom_net_learns_the_stripe_orientation() {
    let out = custom_net::run(&gpu(), 256, 4, 0).unwrap();
    assert_eq!(out.losses.len(), 4 * 256 / 32);
    let (first, last) = (
        mean(&out.losses[..4]),
        mean(&out.losses[out.losses.len() - 4..]),
    );
    assert!(last < 0.5 * first, "loss did not fall: {:?}", out.losses);
    // Chance is 25%.
    assert!(
        out.train_accuracy > 0.9,
        "training accuracy {}",
        out.train_accuracy
    );
    assert!(
        out.fresh_accuracy > 0.85,
        "accuracy on fresh images {}",
        out.fresh_accuracy
    );
}

/// A CIFAR-10 run at the dataset's own 32x32: a small RepVGG-mode model with non-trivial
/// batch-norm statistics, saved as the trainer saves a run.
fn write_run(gpu: &Gpu, dir: &Path) -> (RepOptVgg, TrainConfig) {
    let cfg = TrainConfig {
        dataset: DatasetKind::Cifar10,
        arch: ArchConfig {
            num_blocks: Some([1, 1, 1, 1]),
            widths: Some([0.25; 4]),
            ..ArchConfig::default()
        },
        mode: Mode::Repvgg,
        out: dir.to_path_buf(),
        ..TrainConfig::default()
    };
    let NetConfig::Vgg(config) = cfg.arch.build(3, 10).unwrap() else {
        panic!("a VGG preset");
    };
    let model = RepOptVgg::new(gpu, config, cfg.mode, 3).unwrap();
    // Training-mode passes move the running statistics away from their initial values, so
    // that evaluation-mode batch norms (and their folding into the deploy model) matter.
    let noise: Vec<f32> = (0..8 * 3 * 32 * 32)
        .map(|i| ((i * 7919) % 997) as f32 / 300.0 - 1.0)
        .collect();
    let x = Tensor::from_slice(gpu, &noise, &[8, 3, 32, 32]).unwrap();
    for _ in 0..3 {
        no_grad(|| model.forward(&x, true)).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(files::CONFIG),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    save_model(&dir.join(files::MODEL), &model, &BTreeMap::new()).unwrap();
    (model, cfg)
}

/// A 32x32 RGB image whose colours depend on `seed`.
fn picture(seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(32, 32, |x, y| {
        let v = |k: u32| ((x * (3 + k + seed) + y * (5 + 2 * k) + 40 * seed * k) % 256) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
}

/// The model's class probabilities for `img`, normalised by hand with CIFAR-10's statistics.
fn reference(model: &RepOptVgg, img: &image::RgbImage) -> Vec<f32> {
    let n = Normalize::cifar10();
    let mut x = vec![0.0f32; 3 * 32 * 32];
    for (p, px) in img.pixels().enumerate() {
        for c in 0..3 {
            x[c * 32 * 32 + p] = (px.0[c] as f32 / 255.0 - n.mean[c]) / n.std[c];
        }
    }
    let gpu = model.linear().0.gpu();
    let logits = no_grad(|| -> repopt::models::Result<Vec<f32>> {
        let x = Tensor::from_slice(gpu, &x, &[1, 3, 32, 32])?;
        Ok(model.forward(&x, false)?.to_vec()?)
    })
    .unwrap();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|z| (z - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

#[test]
fn classify_agrees_with_the_forward_pass_on_a_run_and_a_deploy_model() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let (model, cfg) = write_run(&gpu, &run);
    // The deploy model lies outside the run directory: its settings come from its metadata,
    // which `repopt convert` writes.
    let deploy = tmp.path().join("deploy.safetensors");
    save_model(&deploy, &to_deploy(&model).unwrap(), &run_metadata(&cfg)).unwrap();

    let images: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("img{i}.png")))
        .collect();
    let pictures: Vec<_> = (0..3).map(picture).collect();
    for (path, pic) in images.iter().zip(&pictures) {
        pic.save(path).unwrap();
    }
    let expected: Vec<Vec<f32>> = pictures.iter().map(|p| reference(&model, p)).collect();
    for source in [&run, &deploy] {
        let results = classify::run(&gpu, source, &images, classify::TOP).unwrap();
        assert_eq!(results.len(), images.len());
        for (top, want) in results.iter().zip(&expected) {
            assert_eq!(top.len(), 5);
            let best = (0..10)
                .max_by(|&a, &b| want[a].total_cmp(&want[b]))
                .unwrap();
            assert_eq!(
                top[0].class,
                best,
                "{}: {top:?} vs {want:?}",
                source.display()
            );
            assert_eq!(top[0].name, CIFAR10_CLASSES[best]);
            for p in top {
                assert!(
                    (p.probability - want[p.class]).abs() < 1e-3,
                    "{p:?} vs {want:?}"
                );
            }
            assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
        }
    }
}

#[test]
fn classify_names_the_file_it_cannot_read() {
    let gpu = gpu();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(&gpu, &run);
    let good = tmp.path().join("good.png");
    picture(0).save(&good).unwrap();
    let missing = tmp.path().join("missing.png");
    let err = classify::run(&gpu, &run, &[good.clone(), missing], 5).unwrap_err();
    assert!(format!("{err:#}").contains("missing.png"), "{err:#}");
    let text = tmp.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let err = classify::run(&gpu, &run, &[text], 5).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("notes.png") && msg.contains("unreadable image"),
        "{msg}"
    );
    let err = classify::run(&gpu, &tmp.path().join("no-run"), &[good], 5).unwrap_err();
    assert!(format!("{err:#}").contains("no-run"), "{err:#}");
}

#[test]
fn declare_block_derives_the_grad_mult_and_proves_it() {
    let (m, report) = declare_block::run(&gpu(), 4, 50).unwrap();
    // Corners: the 3x3 only (1.2^2); the middle row adds the 1x3's 0.7^2, the middle column
    // the 3x1's 0.4^2, the centre all three.
    let (s, t, v) = (1.44f32, 0.49f32, 0.16f32);
    assert_eq!(m[..9], [s, s + v, s, s + t, s + t + v, s + t, s, s + v, s]);
    assert!(report.max_gap < 1e-4 && report.moved > 0.05, "{report:?}");
}
