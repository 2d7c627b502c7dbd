//! Parameter counts, state-dict names, structural re-parameterization and checkpoints.

mod common;

use std::collections::BTreeMap;

use common::{build, data, gpu, max_abs, max_abs_diff, randomize_bn, small_config};
use repopt_models::checkpoint::{load_model, save_model};
use repopt_models::info::model_info;
use repopt_models::reparam::to_deploy;
use repopt_models::{Mode, VggConfig};
use repopt_tensor::{Tensor, no_grad};

fn millions(n: usize) -> f64 {
    (n as f64 / 1e5).round() / 10.0
}

#[test]
fn parameter_counts_match_the_paper() {
    for (name, want) in [
        ("A0", 8.3),
        ("B1", 51.8),
        ("B2", 80.3),
        ("L1", 76.0),
        ("L2", 118.1),
    ] {
        let config = VggConfig::preset(name).unwrap();
        let target = model_info(&config, Mode::Target, 224).unwrap().params;
        assert_eq!(millions(target), want, "{name} target parameters");
        let deployed = model_info(&config, Mode::Deploy, 224).unwrap().params;
        assert_eq!(
            millions(deployed),
            millions(target),
            "{name}: deployed RepVGG vs target"
        );
    }
    let b1 = model_info(&VggConfig::preset("B1").unwrap(), Mode::Target, 224).unwrap();
    // 11.82 G multiply-accumulates of convolutions and classifier: the RepVGG paper lists
    // B1 at 11.8 G, this paper's Table 1 at 11.9 G.
    assert!(
        (b1.flops as f64 / 1e9 - 11.9).abs() <= 0.1,
        "B1 multiply-accumulates {}",
        b1.flops
    );
    assert_eq!(b1.stages.last().unwrap().height, 7);
}

#[test]
fn built_models_have_the_counted_parameters_and_reference_names() {
    let config = VggConfig {
        use_se: true,
        ..small_config(10)
    };
    for mode in Mode::ALL {
        let model = build(&config, mode, 1);
        assert_eq!(
            model.parameter_count(),
            model_info(&config, mode, 32).unwrap().params,
            "{mode}"
        );
        let names: Vec<String> = model.state().into_iter().map(|(n, _)| n).collect();
        let expect: &[&str] = match mode {
            Mode::Target => &[
                "stage0.conv.weight",
                "stage1.1.bn.running_var",
                "stage1.0.post_se.down.weight",
            ],
            Mode::Repvgg => &[
                "stage1.0.rbr_dense.conv.weight",
                "stage1.1.rbr_identity.running_mean",
                "stage2.0.rbr_1x1.bn.bias",
            ],
            Mode::Csla | Mode::Hs => &[
                "stage1.1.scale_identity.weight",
                "stage0.scale_conv.weight",
                "stage2.0.conv_1x1.weight",
            ],
            Mode::Deploy => &["stage4.0.rbr_reparam.bias"],
        };
        for e in expect {
            assert!(names.iter().any(|n| n == e), "{mode}: no {e} in {names:?}");
        }
        assert!(names.contains(&"linear.weight".to_string()));
        assert!(
            !names
                .iter()
                .any(|n| n.starts_with("stage2.0.scale_identity")),
            "no identity on a stride-2 block"
        );
    }
    // CSLA's s and t are constants: state, not parameters.
    let csla = build(&config, Mode::Csla, 1);
    assert!(
        !csla
            .parameters()
            .iter()
            .any(|(n, _)| n.contains("scale_conv"))
    );
    assert!(csla.state().iter().any(|(n, _)| n.contains("scale_conv")));
}

#[test]
fn every_mode_converts_to_a_plain_model_with_the_same_outputs() {
    let gpu = gpu();
    let config = small_config(7);
    let input = [3, 3, 10, 10];
    let x = Tensor::from_slice(&gpu, &data(input.iter().product(), 99), &input).unwrap();
    for mode in [Mode::Target, Mode::Repvgg, Mode::Csla, Mode::Hs] {
        let model = build(&config, mode, 5);
        randomize_bn(&model, &gpu, 11, input);
        if matches!(mode, Mode::Csla | Mode::Hs) {
            // Non-trivial scales, so the conversion has to use them.
            for (i, (name, t)) in model.state().iter().enumerate() {
                if name.contains("scale_") {
                    let v: Vec<f32> = data(t.numel(), 40 + i as u64)
                        .iter()
                        .map(|x| 0.8 + 0.5 * x)
                        .collect();
                    t.write(&v).unwrap();
                }
            }
        }
        let deployed = to_deploy(&model).unwrap();
        assert_eq!(deployed.mode(), Mode::Deploy);
        let (want, got) = no_grad(|| {
            (
                model.forward(&x, false).unwrap().to_vec().unwrap(),
                deployed.forward(&x, false).unwrap().to_vec().unwrap(),
            )
        });
        let err = max_abs_diff(&want, &got);
        assert!(
            err <= 1e-4 * (1.0 + max_abs(&want)),
            "{mode}: deployed output differs by {err}"
        );
        assert!(
            max_abs(&want) > 1e-3,
            "{mode}: the outputs are not trivially zero"
        );
    }
}

#[test]
fn checkpoints_round_trip_and_reject_mismatches() {
    let gpu = gpu();
    let dir = std::env::temp_dir().join(format!("repopt-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = small_config(5);
    let model = build(&config, Mode::Repvgg, 3);
    randomize_bn(&model, &gpu, 4, [2, 3, 8, 8]);
    let path = dir.join("model.safetensors");
    save_model(&path, &model, &BTreeMap::new()).unwrap();
    let loaded = load_model(&gpu, &path).unwrap();
    assert_eq!(loaded.mode(), Mode::Repvgg);
    assert_eq!(
        loaded.config(),
        repopt_models::any::NetConfig::Vgg(model.config().clone())
    );
    for ((n1, a), (n2, b)) in model.state().iter().zip(loaded.state().iter()) {
        assert_eq!(n1, n2);
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{n1}");
    }
    // A model of another mode refuses the file, naming a tensor.
    let other = build(&config, Mode::Target, 3);
    let file = repopt_models::checkpoint::load_tensors(&path).unwrap();
    let err = other
        .load_state(&file.tensors, "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("missing tensor"),
        "{err}"
    );
    // A corrupt file is an error naming the file, not a panic.
    let bad = dir.join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let err = load_model(&gpu, &bad).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
