//! RepGhostNet / RepOpt-GhostNet: sizes against the reference implementation's figures,
//! the authors' released scales, the deploy conversion and the modes' relations.

mod common;

use common::{gpu, shared_data};
use repopt_models::Mode;
use repopt_models::ghostnet::module::Cheap;
use repopt_models::ghostnet::{GhostConfig, GhostScales, RepOptGhostNet, prepare};
use repopt_models::repoptimizer::{RepOptimizerConfig, UpdateRule};
use repopt_models::role::ParamKind;
use repopt_tensor::optim::GradMult;
use repopt_tensor::{NoGradGuard, Tensor};

fn small(classes: usize) -> GhostConfig {
    GhostConfig {
        num_classes: classes,
        ..GhostConfig::preset("ghostnet-0.5x").unwrap()
    }
}

fn images(gpu: &repopt_tensor::Gpu, n: usize, res: usize, seed: u64) -> Tensor {
    Tensor::from_slice(
        gpu,
        &common::data(n * 3 * res * res, seed),
        &[n, 3, res, res],
    )
    .unwrap()
}

/// The RepGhost paper's Table (ImageNet, 1000 classes) gives the deployed parameter counts
/// to 0.1 M; the deploy form here must round to the same figures.
#[test]
fn parameter_counts_match_the_reference_figures() {
    let gpu = gpu();
    for (name, millions) in [
        ("ghostnet-0.5x", 2.3),
        ("ghostnet-1.0x", 4.1),
        ("ghostnet-1.5x", 6.6),
        ("ghostnet-2.0x", 9.8),
    ] {
        let cfg = GhostConfig::preset(name).unwrap();
        let model = RepOptGhostNet::new(&gpu, cfg, Mode::Target, 0).unwrap();
        // Target and deploy differ only by each module's final BN and cheap bias.
        let deploy = model.to_deploy().unwrap();
        let count = deploy.parameter_count() as f64 / 1e6;
        eprintln!(
            "{name}: target {} deploy {}",
            model.parameter_count(),
            deploy.parameter_count()
        );
        assert!(
            (count - millions).abs() < 0.05 + 1e-9,
            "{name}: {count:.3} M, the reference says {millions} M"
        );
    }
}

#[test]
fn modes_have_the_reference_state_dict_names() {
    let gpu = gpu();
    let names = |mode| -> Vec<String> {
        RepOptGhostNet::new(&gpu, small(10), mode, 0)
            .unwrap()
            .state()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    let hs = names(Mode::Hs);
    for key in [
        "conv_stem.weight",
        "bn1.running_var",
        "blocks.0.0.ghost1.primary_conv.0.weight",
        "blocks.0.0.ghost1.cheap_operation.0.weight",
        "blocks.0.0.ghost1.cheap_operation.1.weight",
        "blocks.0.0.ghost1.fusion_scale.weight",
        "blocks.0.0.ghost1.final_bn.weight",
        "blocks.1.0.conv_dw.weight",
        "blocks.1.0.shortcut.2.weight",
        "blocks.3.0.se.conv_reduce.bias",
        "blocks.9.0.conv.weight",
        "blocks.9.0.bn1.running_mean",
        "conv_head.bias",
        "classifier.weight",
    ] {
        assert!(hs.contains(&key.to_string()), "hs model lacks {key}");
    }
    let rep = names(Mode::Repvgg);
    assert!(rep.contains(&"blocks.0.0.ghost1.fusion_bn.running_mean".to_string()));
    assert!(rep.contains(&"blocks.0.0.ghost1.cheap_operation.1.weight".to_string()));
    assert!(!rep.iter().any(|n| n.contains("final_bn")));
    let target = names(Mode::Target);
    assert!(
        !target
            .iter()
            .any(|n| n.contains("fusion") || n.contains("cheap_operation.1"))
    );
    // A CSLA model keeps t as a constant in its state, not among its parameters.
    let csla = RepOptGhostNet::new(&gpu, small(10), Mode::Csla, 0).unwrap();
    let t = "blocks.0.0.ghost1.cheap_operation.1.weight";
    assert!(csla.state().iter().any(|(n, _)| n == t));
    assert!(!csla.parameters().iter().any(|(n, _)| n == t));
}

#[test]
fn official_scales_build_a_repoptimizer_whose_grad_mults_match_the_file() {
    let Some(dir) =
        shared_data("official_scales_build_a_repoptimizer_whose_grad_mults_match_the_file")
    else {
        return;
    };
    let file = dir.join("official-scales/RepOptGhostNet_0_5x_scales.pth");
    let gpu = gpu();
    let cfg = small(10);
    let scales = GhostScales::load(&file, &cfg).unwrap();
    assert_eq!(scales.modules.len(), 32);
    // Some modules of the file barely moved from their Hyper-Search initial t (equal across
    // channels to 1e-3): those must be exactly this model's initial values, which checks the
    // module order and the per-stage numbering against the authors' run.
    let initial = GhostScales::hs_initial(&cfg);
    let mut untouched = 0;
    for (m, init) in scales.modules.iter().zip(&initial.modules) {
        assert_eq!(m.module, init.module);
        if m.t.iter().all(|v| (v - m.t[0]).abs() < 1e-3) {
            assert!(
                (m.t[0] - init.t[0]).abs() < 1e-3,
                "{}: {} vs {}",
                m.module,
                m.t[0],
                init.t[0]
            );
            untouched += 1;
        }
    }
    assert!(untouched >= 4, "{untouched} untouched modules");

    let model = RepOptGhostNet::new(&gpu, cfg.clone(), Mode::Target, 0).unwrap();
    let specs = prepare(&model, &scales, &RepOptimizerConfig::default(), 4e-5, 0).unwrap();
    let kernels: Vec<_> = model
        .param_roles()
        .into_iter()
        .filter(|p| p.role.kind == ParamKind::TargetKernel)
        .collect();
    assert_eq!(kernels.len(), 32);
    let mut with_mult = 0;
    for spec in &specs {
        let Some(GradMult::Dense(m)) = &spec.grad_mult else {
            continue;
        };
        let i = kernels
            .iter()
            .position(|k| k.tensor.shares_storage(&spec.tensor))
            .expect("a Grad Mult sits on a target kernel");
        let m = m.to_vec().unwrap();
        assert!(m.iter().all(|v| v.is_finite()));
        // Per module: mean over the kernel of t^2 everywhere + 1 at the centre.
        let t = &scales.modules[i].t;
        let want = t.iter().map(|v| (v * v) as f64 + 1.0 / 9.0).sum::<f64>() / t.len() as f64;
        let got = m.iter().map(|&v| v as f64).sum::<f64>() / m.len() as f64;
        assert!(
            (got - want).abs() < 1e-5 * want.max(1.0),
            "{}: {got} vs {want}",
            scales.modules[i].module
        );
        with_mult += 1;
    }
    assert_eq!(with_mult, 32);

    // Scales for another width are refused with the key named.
    let wide = GhostConfig::preset("ghostnet-1.0x").unwrap();
    let e = GhostScales::load(&file, &wide).unwrap_err().to_string();
    assert!(
        e.contains("blocks.0.0.ghost1.cheap_operation.1.weight") && e.contains("another width"),
        "{e}"
    );
}

#[test]
fn hs_model_starts_at_the_initial_scales_and_csla_takes_written_ones() {
    let gpu = gpu();
    let cfg = small(10);
    let hs = RepOptGhostNet::new(&gpu, cfg.clone(), Mode::Hs, 0).unwrap();
    assert_eq!(
        GhostScales::from_model(&hs).unwrap(),
        GhostScales::hs_initial(&cfg)
    );
    let mut scales = GhostScales::hs_initial(&cfg);
    scales.modules[3].t[1] = 1.75;
    let csla = RepOptGhostNet::new(&gpu, cfg, Mode::Csla, 0).unwrap();
    scales.write_into(&csla).unwrap();
    assert_eq!(GhostScales::from_model(&csla).unwrap(), scales);
}

#[test]
fn rep_and_target_convert_to_deploy_with_equal_outputs() {
    let gpu = gpu();
    for mode in [Mode::Repvgg, Mode::Target] {
        let model = RepOptGhostNet::new(&gpu, small(7), mode, 3).unwrap();
        {
            // Non-trivial BN: random affine parameters and moved running statistics.
            let _g = NoGradGuard::new();
            for (i, (name, t)) in model.parameters().iter().enumerate() {
                if name.ends_with("bn.weight")
                    || name.contains("bn1.")
                    || name.contains("_bn.")
                    || name.contains("cheap_operation.1.")
                {
                    let v: Vec<f32> = common::data(t.numel(), 100 + i as u64)
                        .iter()
                        .map(|x| 1.0 + 0.5 * x)
                        .collect();
                    t.write(&v).unwrap();
                }
            }
            for s in 0..3 {
                model.forward(&images(&gpu, 4, 32, 40 + s), true).unwrap();
            }
        }
        let deploy = model.to_deploy().unwrap();
        assert_eq!(deploy.mode(), Mode::Deploy);
        assert!(
            deploy
                .modules()
                .iter()
                .all(|m| matches!(m.cheap, Cheap::Deploy { .. }))
        );
        let x = images(&gpu, 3, 33, 50);
        let a = model.forward(&x, false).unwrap().to_vec().unwrap();
        let b = deploy.forward(&x, false).unwrap().to_vec().unwrap();
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{mode}: deploy differs by {worst} (scale {scale})"
        );
    }
    let hs = RepOptGhostNet::new(&gpu, small(7), Mode::Hs, 0).unwrap();
    assert!(
        hs.to_deploy()
            .unwrap_err()
            .to_string()
            .contains("repvgg or target")
    );
}

#[test]
fn dropout_is_seeded_by_step_and_off_in_eval() {
    let gpu = gpu();
    let model = RepOptGhostNet::new(&gpu, small(5), Mode::Target, 1).unwrap();
    let x = images(&gpu, 2, 32, 60);
    let at = |step| model.forward_at(&x, true, step).unwrap().to_vec().unwrap();
    assert_eq!(at(7), at(7));
    assert_ne!(at(7), at(8));
    let e1 = model.forward(&x, false).unwrap().to_vec().unwrap();
    let e2 = model.forward(&x, false).unwrap().to_vec().unwrap();
    assert_eq!(e1, e2);
}

#[test]
fn update_rule_sets_the_power() {
    let gpu = gpu();
    let cfg = small(3);
    let mut scales = GhostScales::hs_initial(&cfg);
    for m in &mut scales.modules {
        m.t.fill(2.0);
    }
    let model = RepOptGhostNet::new(&gpu, cfg, Mode::Target, 0).unwrap();
    let config = RepOptimizerConfig {
        rule: UpdateRule::AdamW,
        reinit: false,
        ..Default::default()
    };
    let specs = prepare(&model, &scales, &config, 0.0, 0).unwrap();
    let m = specs
        .iter()
        .find_map(|s| match &s.grad_mult {
            Some(GradMult::Dense(m)) => Some(m.to_vec().unwrap()),
            _ => None,
        })
        .unwrap();
    assert_eq!(&m[..9], &[2.0, 2.0, 2.0, 2.0, 3.0, 2.0, 2.0, 2.0, 2.0]);
    // A model in another mode is refused.
    let rep = RepOptGhostNet::new(&gpu, small(3), Mode::Repvgg, 0).unwrap();
    let e = prepare(&rep, &scales, &RepOptimizerConfig::default(), 0.0, 0).unwrap_err();
    assert!(e.to_string().contains("target"), "{e}");
}
