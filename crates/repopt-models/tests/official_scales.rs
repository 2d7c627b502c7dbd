//! The authors' released Hyper-Search scales, read from their PyTorch files and used to
//! build RepOptimizers.

mod common;

use common::{gpu, shared_data};
use repopt_models::repoptimizer::{RepOptimizerConfig, grad_mult, prepare};
use repopt_models::scales::{Scales, read_named};
use repopt_models::{Mode, RepOptVgg, VggConfig};

#[test]
fn official_scales_fit_their_configs() {
    let Some(dir) = shared_data("official_scales_fit_their_configs") else {
        return;
    };
    let dir = dir.join("official-scales");
    for (config, file, identity_blocks) in [
        ("B1", "RepOpt-VGG-B1-scales.pth", 23),
        ("B2", "RepOpt-VGG-B2-scales.pth", 23),
        ("L1", "RepOpt-VGG-L1-scales.pth", 43),
        ("L2", "RepOpt-VGG-L2-scales.pth", 43),
    ] {
        let cfg = VggConfig::preset(config).unwrap();
        let scales = Scales::load(&dir.join(file), &cfg).unwrap();
        assert_eq!(scales.blocks.len(), cfg.blocks().len(), "{file}");
        assert_eq!(
            scales
                .blocks
                .iter()
                .filter(|b| b.identity.is_some())
                .count(),
            identity_blocks,
            "{file}"
        );
        let summary = scales.summary();
        assert!(
            summary.iter().all(|b| b.s.is_finite() && b.t.is_finite()),
            "{file}"
        );
        // Searched scales are not the initial ones: the search moved them.
        assert_ne!(scales, Scales::hs_initial(&cfg), "{file}");
    }
}

#[test]
fn scales_for_another_config_are_refused_with_the_key_named() {
    let Some(dir) = shared_data("scales_for_another_config_are_refused_with_the_key_named") else {
        return;
    };
    let b1 = dir.join("official-scales/RepOpt-VGG-B1-scales.pth");
    // B2 is wider (its 64-channel stem matches B1's; stage 1 does not).
    let err = Scales::load(&b1, &VggConfig::preset("B2").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'stage1.0.scale_conv.weight' has 128 values") && err.contains("160"),
        "{err}"
    );
    // L1 is deeper: a block's scales are missing.
    let err = Scales::load(&b1, &VggConfig::preset("L1").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing 'stage1.4.scale_conv.weight'"),
        "{err}"
    );
    // A0 is shallower than B1's file: extra keys belong to no block.
    let a0 = VggConfig {
        width_multipliers: [2.0, 2.0, 2.0, 4.0],
        ..VggConfig::preset("A0").unwrap()
    };
    let err = Scales::load(&b1, &a0).unwrap_err().to_string();
    assert!(err.contains("belongs to no block"), "{err}");
    // The GhostNet file is read (it is a valid checkpoint) but holds no VGG scales.
    let ghost = read_named(&dir.join("official-scales/RepOptGhostNet_0_5x_scales.pth")).unwrap();
    assert_eq!(ghost.len(), 64);
    assert!(
        Scales::load(
            &dir.join("official-scales/RepOptGhostNet_0_5x_scales.pth"),
            &VggConfig::preset("B1").unwrap()
        )
        .is_err()
    );
}

#[test]
fn official_b1_scales_build_a_repoptimizer() {
    let Some(dir) = shared_data("official_b1_scales_build_a_repoptimizer") else {
        return;
    };
    let config = VggConfig {
        num_classes: 10,
        ..VggConfig::preset("B1").unwrap()
    };
    let scales = Scales::load(
        &dir.join("official-scales/RepOpt-VGG-B1-scales.pth"),
        &config,
    )
    .unwrap();
    let model = RepOptVgg::new(&gpu(), config, Mode::Target, 0).unwrap();
    let specs = prepare(&model, &scales, &RepOptimizerConfig::default(), 4e-5, 1).unwrap();
    let with_mult: Vec<_> = specs.iter().filter(|s| s.grad_mult.is_some()).collect();
    assert_eq!(with_mult.len(), 28, "one Grad Mult per 3x3 kernel");
    // The stage1.1 Grad Mult on the device equals the formula on the file's values.
    let block = &scales.blocks[2];
    assert_eq!(block.block, "stage1.1");
    let (co, ci) = (128, 128);
    let want = grad_mult(co, ci, block, 2);
    let got = with_mult[2]
        .grad_mult
        .as_ref()
        .unwrap()
        .to_dense(&[co, ci, 3, 3])
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(got, want);
    let s0 = block.conv[0] * block.conv[0];
    let t0 = block.one[0] * block.one[0];
    assert_eq!(want[0], s0);
    assert_eq!(want[4], s0 + t0 + 1.0, "diagonal centre: s^2 + t^2 + 1");
    assert_eq!(want[9 + 4], s0 + t0, "off-diagonal centre: s^2 + t^2");
}
