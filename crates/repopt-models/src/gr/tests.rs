//! The derivations of declared blocks against the hand-written RepOpt-VGG rules and the
//! ghost module's published rule.

use super::*;
use crate::repoptimizer;
use crate::scales::BlockScales;

fn values(n: usize, seed: u32) -> Vec<f32> {
    // Varied, signed, not round: bit-identity must not hinge on easy numbers.
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 337.0 - 1.3)
        .collect()
}

#[test]
fn repopt_vgg_declaration_gives_the_hand_written_grad_mult_bit_for_bit() {
    for (ci, co, identity) in [(3, 5, false), (6, 6, true), (1, 1, true), (4, 2, false)] {
        let (s, t, u) = (values(co, 1), values(co, 2), values(co, 3));
        let stride = if identity { 1 } else { 2 };
        let block = CslaBlock::repopt_vgg(ci, co, stride, s.clone(), t.clone(), identity);
        block.validate().unwrap();
        let scales = BlockScales {
            block: "b".into(),
            conv: s,
            one: t,
            identity: identity.then_some(u.clone()),
        };
        for rule in [UpdateRule::Sgd, UpdateRule::AdamW] {
            let general = block.grad_mult(rule);
            let hand = repoptimizer::grad_mult(co, ci, &scales, rule.power());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&general), bits(&hand), "{ci}->{co} {rule:?}");
        }
        // The equivalent kernel too, with u as the identity branch's value.
        let (w3, w1) = (values(co * ci * 9, 4), values(co * ci, 5));
        let mut kernels = vec![w3.clone(), w1.clone()];
        if identity {
            kernels.push(u.clone());
        }
        let general = block.equivalent_kernel(&kernels).unwrap();
        let hand = repoptimizer::equivalent_kernel(
            co,
            ci,
            &w3,
            &w1,
            &scales,
            identity.then_some(u.as_slice()),
        );
        assert_eq!(general, hand);
    }
}

#[test]
fn ghost_declaration_gives_the_published_rule() {
    // RepOpt-GhostNet: M = t^p everywhere + 1 at each channel's centre tap; re-init
    // W' = t * W + u * I.
    let (c, k) = (5, 3);
    let t = values(c, 7);
    let block = CslaBlock::ghost(c, k, t.clone());
    block.validate().unwrap();
    assert_eq!(block.kernel_shape(), [c, 1, 3, 3]);
    for rule in [UpdateRule::Sgd, UpdateRule::AdamW] {
        let m = block.grad_mult(rule);
        for ch in 0..c {
            for tap in 0..9 {
                let want = t[ch].powi(rule.power()) + if tap == 4 { 1.0 } else { 0.0 };
                assert_eq!(m[ch * 9 + tap], want, "channel {ch} tap {tap}");
            }
        }
    }
    let (w, u) = (values(c * 9, 8), values(c, 9));
    let k = block.equivalent_kernel(&[w.clone(), u.clone()]).unwrap();
    for ch in 0..c {
        for tap in 0..9 {
            let want = t[ch] * w[ch * 9 + tap] + if tap == 4 { u[ch] } else { 0.0 };
            assert_eq!(k[ch * 9 + tap], want);
        }
    }
}

#[test]
fn acnet_declaration_covers_the_cross() {
    let (ci, co) = (2, 3);
    let (s, t, v) = (values(co, 11), values(co, 12), values(co, 13));
    let block = CslaBlock::acnet(ci, co, 2, s.clone(), t.clone(), v.clone());
    block.validate().unwrap();
    let m = block.grad_mult(UpdateRule::Sgd);
    for c in 0..co {
        for d in 0..ci {
            for tap in 0..9 {
                let (h, w) = (tap / 3, tap % 3);
                let mut want = s[c] * s[c];
                if h == 1 {
                    want += t[c] * t[c];
                }
                if w == 1 {
                    want += v[c] * v[c];
                }
                assert_eq!(m[(c * ci + d) * 9 + tap], want, "c {c} d {d} tap {tap}");
            }
        }
    }
    // 1x3 kernels land on the middle row, 3x1 on the middle column.
    assert_eq!(block.embedding(1)[..3], [3, 4, 5]);
    assert_eq!(block.embedding(2)[..3], [1, 4, 7]);
}

#[test]
fn smaller_square_branch_sits_centred() {
    // A 5x5 + 3x3 + identity block: the 3x3 covers the inner 3x3 of the 5x5 window.
    let c = 2;
    let block = CslaBlock::dense(
        c,
        c,
        5,
        1,
        vec![
            Branch::conv("5x5", 5, 5, vec![1.0; c]),
            Branch::conv("3x3", 3, 3, vec![2.0; c]),
            Branch::identity("identity", vec![1.0; c]),
        ],
    );
    block.validate().unwrap();
    let m = block.grad_mult(UpdateRule::Sgd);
    assert_eq!(m[0], 1.0);
    assert_eq!(m[6], 5.0); // row 1, column 1: inside the 3x3
    assert_eq!(m[12], 1.0 + 4.0 + 1.0); // centre of channel 0 -> 0: identity too
    assert_eq!(m[25 + 12], 5.0); // centre of 0 -> 1: no identity
}

#[test]
fn bad_declarations_are_clear_errors() {
    let cases: Vec<(CslaBlock, &str)> = vec![
        (
            CslaBlock::dense(2, 2, 4, 1, vec![Branch::conv("a", 3, 3, vec![1.0; 2])]),
            "window must be odd",
        ),
        (
            CslaBlock::dense(2, 2, 3, 1, vec![Branch::conv("wide", 1, 5, vec![1.0; 2])]),
            "branch 'wide'",
        ),
        (
            CslaBlock::dense(2, 3, 3, 1, vec![Branch::identity("id", vec![1.0; 3])]),
            "identity needs",
        ),
        (
            CslaBlock::dense(2, 2, 3, 2, vec![Branch::identity("id", vec![1.0; 2])]),
            "stride 1",
        ),
        (
            CslaBlock::dense(2, 2, 3, 1, vec![Branch::conv("a", 3, 3, vec![1.0; 3])]),
            "3 scales for 2 output channels",
        ),
        (
            CslaBlock::dense(2, 2, 3, 1, vec![Branch::conv("a", 3, 3, vec![1.0, 1e6])]),
            "channel 1",
        ),
        (
            CslaBlock::dense(
                2,
                2,
                3,
                1,
                vec![Branch::conv("a", 3, 3, vec![1.0, f32::NAN])],
            ),
            "channel 1",
        ),
        (CslaBlock::dense(2, 2, 3, 1, vec![]), "at least one branch"),
        (
            CslaBlock::dense(2, 2, 3, 0, vec![Branch::conv("a", 3, 3, vec![1.0; 2])]),
            "stride",
        ),
    ];
    for (block, want) in cases {
        let e = block.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
    let block = CslaBlock::ghost(2, 3, vec![1.0; 2]);
    let e = block
        .equivalent_kernel(&[vec![0.0; 18]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 branch kernels for 2 branches"), "{e}");
    let e = block
        .equivalent_kernel(&[vec![0.0; 17], vec![1.0; 2]])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("branch 'cheap'") && e.contains("18 values"),
        "{e}"
    );
}

#[test]
fn channel_averaging_keeps_each_branch_mean() {
    let block = CslaBlock::acnet(
        1,
        4,
        1,
        vec![1.0, 2.0, 3.0, 6.0],
        vec![0.0; 4],
        vec![2.0; 4],
    );
    let avg = block.channel_averaged();
    assert_eq!(avg.branches[0].scale, vec![3.0; 4]);
    assert_eq!(avg.branches[2].scale, vec![2.0; 4]);
}
