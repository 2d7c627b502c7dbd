//! Parameter roles agree with the reference state-dict names in every mode, and the
//! RepOptimizer attaches its Grad Mults by role.

mod common;

use common::{build, small_config};
use repopt_models::repoptimizer::{RepOptimizerConfig, prepare};
use repopt_models::role::{ParamKind, ScaleKind};
use repopt_models::{Mode, Scales, VggConfig};
use repopt_tensor::optim::GradMult;

/// The reference implementation's weight-decay grouping, by state-dict name.
fn reference_decays(name: &str) -> bool {
    let no_decay = name.ends_with(".bias")
        || name.contains(".bn.")
        || name.contains("rbr_identity.")
        || name.ends_with("scale_conv.weight")
        || name.ends_with("scale_1x1.weight");
    !no_decay
}

/// The kind a parameter of `mode` has, judged by the end of its name.
fn kind_by_name(mode: Mode, name: &str) -> ParamKind {
    let table: &[(&str, ParamKind)] = &[
        (".post_se.down.weight", ParamKind::SeWeight),
        (".post_se.up.weight", ParamKind::SeWeight),
        (".post_se.down.bias", ParamKind::SeBias),
        (".post_se.up.bias", ParamKind::SeBias),
        (".bn.weight", ParamKind::BnWeight),
        (".bn.bias", ParamKind::BnBias),
        (".rbr_identity.weight", ParamKind::BnWeight),
        (".rbr_identity.bias", ParamKind::BnBias),
        (".rbr_dense.conv.weight", ParamKind::Kernel3x3),
        (".rbr_1x1.conv.weight", ParamKind::Kernel1x1),
        (".conv_1x1.weight", ParamKind::Kernel1x1),
        (".scale_conv.weight", ParamKind::Scale(ScaleKind::Conv)),
        (".scale_1x1.weight", ParamKind::Scale(ScaleKind::OneByOne)),
        (
            ".scale_identity.weight",
            ParamKind::Scale(ScaleKind::Identity),
        ),
        (".rbr_reparam.weight", ParamKind::Kernel3x3),
        (".rbr_reparam.bias", ParamKind::ConvBias),
    ];
    if name == "linear.weight" {
        return ParamKind::LinearWeight;
    }
    if name == "linear.bias" {
        return ParamKind::LinearBias;
    }
    if let Some((_, kind)) = table.iter().find(|(suffix, _)| name.ends_with(suffix)) {
        return *kind;
    }
    assert!(name.ends_with(".conv.weight"), "unexpected name {name}");
    if mode == Mode::Target {
        ParamKind::TargetKernel
    } else {
        ParamKind::Kernel3x3
    }
}

fn configs() -> [VggConfig; 2] {
    [
        small_config(10),
        VggConfig {
            use_se: true,
            ..small_config(10)
        },
    ]
}

#[test]
fn roles_agree_with_names_in_every_mode() {
    for config in configs() {
        let specs = config.blocks();
        for mode in [
            Mode::Target,
            Mode::Repvgg,
            Mode::Csla,
            Mode::Hs,
            Mode::Deploy,
        ] {
            let model = build(&config, mode, 1);
            let params = model.param_roles();
            let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
            assert_eq!(
                params.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
                names,
                "{mode}: roles list the parameters in their order"
            );
            let weight_decay = model.param_specs(0.5);
            assert_eq!(weight_decay.len(), params.len(), "{mode}");
            for (p, spec) in params.iter().zip(&weight_decay) {
                let at = format!("{mode} (se: {}): {}", config.use_se, p.name);
                let block = specs
                    .iter()
                    .position(|s| p.name.starts_with(&format!("{}.", s.name)));
                assert_eq!(p.role.block, block, "{at}");
                assert_eq!(p.role.kind, kind_by_name(mode, &p.name), "{at}");
                assert_eq!(p.role.decays(), reference_decays(&p.name), "{at}");
                let want = if reference_decays(&p.name) { 0.5 } else { 0.0 };
                assert_eq!(spec.weight_decay, want, "{at}");
                assert!(spec.tensor.shares_storage(&p.tensor), "{at}");
            }
            let kernels: Vec<Option<usize>> = params
                .iter()
                .filter(|p| p.role.kind == ParamKind::TargetKernel)
                .map(|p| p.role.block)
                .collect();
            if mode == Mode::Target {
                let every_block: Vec<Option<usize>> = (0..specs.len()).map(Some).collect();
                assert_eq!(
                    kernels, every_block,
                    "one target kernel per block, in order"
                );
            } else {
                assert!(kernels.is_empty(), "{mode} has no target kernels");
            }
        }
    }
}

#[test]
fn prepare_attaches_one_grad_mult_per_block_by_role() {
    for config in configs() {
        let model = build(&config, Mode::Target, 2);
        let blocks = model.blocks().len();
        let params = model.param_roles();
        let specs = prepare(
            &model,
            &Scales::hs_initial(&config),
            &RepOptimizerConfig::default(),
            0.5,
            3,
        )
        .unwrap();
        assert_eq!(specs.len(), params.len());
        let mut seen = Vec::new();
        for (spec, p) in specs.iter().zip(&params) {
            assert!(spec.tensor.shares_storage(&p.tensor), "{}", p.name);
            assert_eq!(
                spec.weight_decay,
                if p.role.decays() { 0.5 } else { 0.0 },
                "{}",
                p.name
            );
            match &spec.grad_mult {
                Some(GradMult::Conv3x3 { identity, .. }) => {
                    let i = p.role.block.expect("a block's parameter");
                    assert!(p.role.is_target_kernel_of(i), "{}", p.name);
                    assert_eq!(
                        *identity,
                        model.blocks()[i].spec.has_identity(),
                        "{}",
                        p.name
                    );
                    assert!(
                        spec.tensor
                            .shares_storage(model.blocks()[i].target_kernel().unwrap()),
                        "{}",
                        p.name
                    );
                    seen.push(i);
                }
                Some(GradMult::Dense(_)) => panic!("{}: a dense Grad Mult", p.name),
                None => assert_ne!(p.role.kind, ParamKind::TargetKernel, "{}", p.name),
            }
        }
        assert_eq!(
            seen,
            (0..blocks).collect::<Vec<_>>(),
            "exactly one per block"
        );
        // Without the Rule of Iteration nothing gets a Grad Mult.
        let plain = RepOptimizerConfig {
            grad_mult: false,
            ..RepOptimizerConfig::default()
        };
        let specs = prepare(&model, &Scales::hs_initial(&config), &plain, 0.5, 3).unwrap();
        assert!(specs.iter().all(|s| s.grad_mult.is_none()));
    }
}
