//! Quantization-aware training of deploy models: float layers change nothing, the
//! quantized forward matches deployment, observers average and freeze as configured,
//! checkpoints keep the ranges, and training through the quantizers lowers the loss.

mod common;

use common::{build, data, gpu, max_abs, max_abs_diff, randomize_bn, small_config};
use repopt_models::any::Network;
use repopt_models::checkpoint::{load_model, save_model};
use repopt_models::quant::network::{QuantVgg, layer_names};
use repopt_models::quant::qat::QatConfig;
use repopt_models::reparam::to_deploy;
use repopt_models::{Mode, ModelError, RepOptVgg};
use repopt_tensor::optim::{Optimizer, Sgd, SgdConfig};
use repopt_tensor::{NoGradGuard, Tensor, ops};

const INPUT: [usize; 4] = [3, 3, 9, 9];

/// A deploy model with non-trivial weights, twice (independent copies of equal values).
fn deploy_pair(seed: u64) -> (RepOptVgg, RepOptVgg) {
    let target = build(&small_config(5), Mode::Target, seed);
    randomize_bn(&target, &gpu(), seed, INPUT);
    (to_deploy(&target).unwrap(), to_deploy(&target).unwrap())
}

fn input(seed: u64) -> Tensor {
    Tensor::from_slice(&gpu(), &data(INPUT.iter().product(), seed), &INPUT).unwrap()
}

/// Each layer's `max |x|` on `x` in the float model.
fn float_ranges(model: &RepOptVgg, x: &Tensor) -> Vec<Option<f32>> {
    let _g = NoGradGuard::new();
    let mut out = Vec::new();
    let mut h = x.clone();
    for b in model.blocks() {
        out.push(Some(ops::abs_max(&h).unwrap()));
        h = b.forward(&h, false).unwrap();
    }
    out.push(Some(
        ops::abs_max(&ops::global_avg_pool(&h).unwrap()).unwrap(),
    ));
    out
}

#[test]
fn float_layers_train_exactly_as_the_deploy_model() {
    let (plain, mut qat) = deploy_pair(1);
    let n = layer_names(&qat).len();
    qat.attach_qat(QatConfig::default(), &vec![None; n])
        .unwrap();
    let x = input(2);
    let (a, b) = (
        plain.forward(&x, true).unwrap(),
        qat.forward_at(&x, true, 0).unwrap(),
    );
    assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    a.sum().unwrap().backward().unwrap();
    b.sum().unwrap().backward().unwrap();
    for ((name, p), (_, q)) in plain.parameters().iter().zip(qat.parameters()) {
        let (gp, gq) = (p.grad().unwrap(), q.grad().unwrap());
        assert_eq!(gp.to_vec().unwrap(), gq.to_vec().unwrap(), "{name}");
    }
}

#[test]
fn quantized_forward_matches_deployment_quantization() {
    let (plain, mut qat) = deploy_pair(3);
    let x = input(4);
    let ranges = float_ranges(&plain, &x);
    qat.attach_qat(QatConfig::default(), &ranges).unwrap();
    let acts = qat.qat().unwrap().act_quants().unwrap();
    let deployed = QuantVgg::new(&plain, acts).unwrap().forward(&x).unwrap();
    let trained = qat.forward_at(&x, false, 0).unwrap();
    let (d, t) = (deployed.to_vec().unwrap(), trained.to_vec().unwrap());
    // The training path computes the activation step as `range * (1/127)` on the device,
    // deployment as `range / 127` on the host: they may differ in the last bit, which can
    // move a value sitting on a rounding boundary by one step.
    let rel = max_abs_diff(&d, &t) / max_abs(&d);
    assert!(rel < 1e-2, "relative gap {rel}");
    // Quantization must have changed something, or the comparison proves nothing.
    let float = plain.forward(&x, false).unwrap().to_vec().unwrap();
    assert!(max_abs_diff(&float, &d) > 0.0);
}

#[test]
fn observers_average_then_freeze_at_the_configured_step() {
    let (_, mut qat) = deploy_pair(5);
    let n = layer_names(&qat).len();
    let config = QatConfig {
        averaging: 0.25,
        freeze_at_step: Some(3),
    };
    qat.attach_qat(config, &vec![Some(2.0); n]).unwrap();
    let x = input(6);
    let m = ops::abs_max(&x).unwrap();
    let first = |q: &RepOptVgg| q.qat().unwrap().ranges().unwrap()[0].unwrap();
    qat.forward_at(&x, true, 0).unwrap();
    let moved = first(&qat);
    assert!(
        (moved - (0.75 * 2.0 + 0.25 * m)).abs() < 1e-6,
        "{moved} vs m = {m}"
    );
    qat.forward_at(&x, false, 1).unwrap();
    assert_eq!(first(&qat), moved, "evaluation must not move the observers");
    qat.forward_at(&x, true, 3).unwrap();
    assert_eq!(first(&qat), moved, "frozen from step 3");
}

#[test]
fn checkpoints_keep_the_ranges_and_the_float_layers() {
    let (_, mut qat) = deploy_pair(7);
    let x = input(8);
    let mut ranges = float_ranges(&qat, &x);
    ranges[0] = None;
    let config = QatConfig {
        averaging: 0.05,
        freeze_at_step: Some(10),
    };
    qat.attach_qat(config.clone(), &ranges).unwrap();
    qat.forward_at(&x, true, 0).unwrap();
    let dir = std::env::temp_dir().join(format!("repopt-qat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("qat.safetensors");
    save_model(&path, &qat, &Default::default()).unwrap();
    let Network::Vgg(loaded) = load_model(&gpu(), &path).unwrap() else {
        panic!("a VGG was saved");
    };
    std::fs::remove_dir_all(&dir).ok();
    let (a, b) = (
        qat.qat().unwrap(),
        loaded.qat().expect("QAT state restored"),
    );
    assert_eq!(a.config(), &config);
    assert_eq!(b.config(), &config);
    assert_eq!(a.ranges().unwrap(), b.ranges().unwrap());
    assert!(!b.quantized()[0]);
    assert_eq!(
        qat.forward_at(&x, false, 0).unwrap().to_vec().unwrap(),
        loaded.forward_at(&x, false, 0).unwrap().to_vec().unwrap()
    );
}

#[test]
fn training_through_the_quantizers_lowers_the_loss() {
    let (_, mut qat) = deploy_pair(9);
    let x = input(10);
    let ranges = float_ranges(&qat, &x);
    qat.attach_qat(QatConfig::default(), &ranges).unwrap();
    let labels = Tensor::from_u32(&gpu(), &[0, 3, 4], &[3]).unwrap();
    let mut opt = Sgd::new(qat.param_specs(0.0), SgdConfig::default()).unwrap();
    let mut losses = Vec::new();
    for step in 0..8 {
        let loss =
            ops::cross_entropy(&qat.forward_at(&x, true, step).unwrap(), &labels, 0.0).unwrap();
        loss.backward().unwrap();
        for (name, p) in qat.parameters() {
            let g = p.grad().unwrap().to_vec().unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{name}");
        }
        opt.step(0.15).unwrap();
        opt.zero_grad();
        losses.push(loss.item().unwrap());
    }
    assert!(
        losses[7] < 0.8 * losses[0],
        "loss should fall on a fixed batch: {losses:?}"
    );
}

#[test]
fn bad_attachments_are_refused() {
    let target = build(&small_config(5), Mode::Target, 0);
    let n = layer_names(&target).len();
    let mut t = target.clone();
    let err = t.attach_qat(QatConfig::default(), &vec![None; n]);
    assert!(matches!(err, Err(ModelError::WrongMode { .. })), "{err:?}");
    let (_, mut d) = deploy_pair(0);
    let err = d.attach_qat(QatConfig::default(), &[None]).unwrap_err();
    assert!(err.to_string().contains("1 starting ranges"), "{err}");
    let mut ranges = vec![Some(1.0); n];
    ranges[1] = Some(0.0);
    let err = d.attach_qat(QatConfig::default(), &ranges).unwrap_err();
    assert!(err.to_string().contains("must be positive"), "{err}");
    let bad = QatConfig {
        averaging: 0.0,
        ..Default::default()
    };
    let err = d.attach_qat(bad, &vec![Some(1.0); n]).unwrap_err();
    assert!(err.to_string().contains("averaging"), "{err}");
    assert!(
        d.qat().is_none(),
        "a refused attachment leaves the model as it was"
    );
}
