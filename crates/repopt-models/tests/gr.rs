//! Gradient Re-parameterization derived from declarations: CSLA = GR for every declared
//! block (RepOpt-VGG's, the ghost module, an ACNet block, a 5x5 + 3x3 + identity block),
//! with either rule switched off as the control, and the hand-written RepOpt-VGG path
//! giving the same Grad Mult as its declaration.

mod common;

use common::gpu;
use repopt_models::gr::layer::{Form, GrLayer};
use repopt_models::gr::verify::{VerifyConfig, verify};
use repopt_models::gr::{Branch, CslaBlock};
use repopt_models::repoptimizer::UpdateRule;
use repopt_tensor::Tensor;
use repopt_tensor::optim::GradMult;

fn spread(n: usize, lo: f32, hi: f32, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2654435761) ^ seed.wrapping_mul(40503);
            lo + (hi - lo) * ((h % 1000) as f32 / 999.0)
        })
        .collect()
}

fn blocks() -> Vec<(&'static str, CslaBlock)> {
    let c = 6;
    vec![
        (
            "repopt-vgg (identity)",
            CslaBlock::repopt_vgg(
                c,
                c,
                1,
                spread(c, 0.5, 1.5, 1),
                spread(c, 0.2, 1.0, 2),
                true,
            ),
        ),
        (
            "repopt-vgg (stride 2)",
            CslaBlock::repopt_vgg(
                4,
                c,
                2,
                spread(c, 0.5, 1.5, 3),
                spread(c, 0.2, 1.0, 4),
                false,
            ),
        ),
        ("ghost", CslaBlock::ghost(c, 3, spread(c, 0.3, 2.0, 5))),
        (
            "acnet",
            CslaBlock::acnet(
                5,
                c,
                1,
                spread(c, 0.5, 1.5, 6),
                spread(c, 0.2, 1.2, 7),
                spread(c, 0.2, 1.2, 8),
            ),
        ),
        (
            "5x5 + 3x3 + identity",
            CslaBlock::dense(
                c,
                c,
                5,
                1,
                vec![
                    Branch::conv("5x5", 5, 5, spread(c, 0.5, 1.0, 9)),
                    Branch::conv("3x3", 3, 3, spread(c, 0.5, 1.5, 10)),
                    Branch::identity("identity", vec![1.0; c]),
                ],
            ),
        ),
    ]
}

/// fp32 tolerance for 100 steps: the two forms round differently at every step.
const TOLERANCE: f64 = 1e-4;

#[test]
fn csla_equals_gr_for_every_declared_block() {
    let gpu = gpu();
    for (name, block) in blocks() {
        let on = verify(&gpu, &block, &VerifyConfig::default()).unwrap();
        assert!(on.moved > 0.05, "{name}: the kernel barely moved ({on:?})");
        assert!(
            on.max_gap < TOLERANCE,
            "{name}: CSLA and GR drifted apart: {on:?}"
        );
        let no_mult = verify(
            &gpu,
            &block,
            &VerifyConfig {
                grad_mult: false,
                ..Default::default()
            },
        )
        .unwrap();
        let no_init = verify(
            &gpu,
            &block,
            &VerifyConfig {
                reinit: false,
                ..Default::default()
            },
        )
        .unwrap();
        eprintln!(
            "{name}: gap {:.1e} (max {:.1e}), without Grad Mult {:.1e}, without re-init {:.1e}",
            on.gap, on.max_gap, no_mult.gap, no_init.gap
        );
        // Either rule off must be far outside the tolerance, or the check proves nothing.
        assert!(
            no_mult.gap > 100.0 * TOLERANCE,
            "{name}: without Grad Mult {no_mult:?}"
        );
        assert!(
            no_init.gap > 100.0 * TOLERANCE,
            "{name}: without re-init {no_init:?}"
        );
    }
}

#[test]
fn hand_written_repopt_vgg_grad_mult_equals_its_declaration_on_the_device() {
    // The update kernel computes RepOpt-VGG's multiplier from 2 * co factors; the dense
    // form of that structured multiplier must be the declaration's, bit for bit.
    let gpu = gpu();
    for (ci, co, identity) in [(5, 7, false), (9, 9, true)] {
        let (s, t) = (spread(co, -1.5, 2.5, 11), spread(co, -0.7, 1.9, 12));
        let block = CslaBlock::repopt_vgg(
            ci,
            co,
            if identity { 1 } else { 2 },
            s.clone(),
            t.clone(),
            identity,
        );
        let p = UpdateRule::Sgd.power();
        let factors: Vec<f32> = s.iter().chain(&t).map(|v| v.powi(p)).collect();
        let structured = GradMult::Conv3x3 {
            factors: Tensor::from_slice(&gpu, &factors, &[2 * co]).unwrap(),
            identity,
        };
        let dense = structured
            .to_dense(&[co, ci, 3, 3])
            .unwrap()
            .to_vec()
            .unwrap();
        let declared = block.grad_mult(UpdateRule::Sgd);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dense), bits(&declared), "{ci} -> {co}");
    }
}

#[test]
fn hyper_search_form_trains_the_convolutions_scales() {
    let gpu = gpu();
    let block = CslaBlock::ghost(4, 3, vec![0.5; 4]);
    let hs = GrLayer::new(&gpu, &block, Form::HyperSearch, 3).unwrap();
    let names: Vec<String> = hs.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["cheap.kernel", "cheap.scale", "fusion.kernel"]);
    let x = Tensor::from_slice(&gpu, &spread(2 * 4 * 5 * 5, -1.0, 1.0, 13), &[2, 4, 5, 5]).unwrap();
    let loss = hs
        .forward(&x)
        .unwrap()
        .mul(&hs.forward(&x).unwrap())
        .unwrap();
    loss.sum().unwrap().backward().unwrap();
    for (name, t) in hs.parameters() {
        let g = t.grad().unwrap().to_vec().unwrap();
        assert!(g.iter().any(|v| *v != 0.0), "{name} got no gradient");
    }
    let csla = GrLayer::new(&gpu, &block, Form::Csla, 3).unwrap();
    assert_eq!(
        csla.parameters().len(),
        2,
        "t is a constant in the CSLA form"
    );
}

#[test]
fn target_form_starts_as_the_equivalent_kernel_and_matches_the_csla_output() {
    let gpu = gpu();
    for (name, block) in blocks() {
        let csla = GrLayer::new(&gpu, &block, Form::Csla, 21).unwrap();
        let target = GrLayer::new(&gpu, &block, Form::Target, 21).unwrap();
        assert_eq!(
            csla.equivalent_kernel().unwrap(),
            target.equivalent_kernel().unwrap(),
            "{name}"
        );
        let ci = block.target.in_channels();
        let x = Tensor::from_slice(&gpu, &spread(2 * ci * 7 * 9, -1.0, 1.0, 22), &[2, ci, 7, 9])
            .unwrap();
        let a = csla.forward(&x).unwrap().to_vec().unwrap();
        let b = target.forward(&x).unwrap().to_vec().unwrap();
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-4, "{name}: outputs differ by {worst}");
    }
}
