//! The ops GhostNet adds to the engine, against the f64 CPU reference in both kernel families
//! and by finite differences: depthwise convolution, the hard sigmoid and dropout.

use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{
    assert_close, data, f64s, gpu, gradcheck_on, kernel_families, launches_on_this_thread,
};
use repopt_tensor::{Error, Tensor};

/// (input [N, C, H, W], k, stride, padding): batch 1, odd sizes, stride 2 with odd input,
/// channel counts that are not multiples of the workgroup, 1x1 inputs, k = 5 with padding 2
/// and stride 2, padding beyond "same", and an image large enough to split the weight
/// gradient into several partial sums.
const DW_SHAPES: &[([usize; 4], usize, usize, usize)] = &[
    ([1, 3, 7, 5], 3, 2, 1),
    ([2, 17, 9, 9], 3, 1, 1),
    ([1, 4, 9, 11], 5, 2, 2),
    ([2, 65, 8, 8], 5, 1, 2),
    ([3, 5, 1, 1], 3, 1, 1),
    ([1, 2, 1, 1], 5, 2, 2),
    ([2, 3, 6, 1], 3, 2, 1),
    ([1, 7, 13, 7], 7, 2, 3),
    ([2, 3, 5, 5], 1, 1, 0),
    ([2, 4, 6, 7], 3, 1, 0),
    ([1, 3, 5, 6], 3, 3, 2),
    ([1, 2, 2, 3], 5, 2, 2),
    ([4, 3, 40, 37], 3, 1, 1),
    ([2, 5, 31, 33], 5, 2, 2),
];

fn cfg(stride: usize, padding: usize) -> Conv2dConfig {
    Conv2dConfig { stride, padding }
}

#[test]
fn depthwise_reference_is_a_dense_convolution_with_block_diagonal_weights() {
    for (i, &(xs, k, stride, pad)) in DW_SHAPES.iter().take(12).enumerate() {
        let c = xs[1];
        let x = f64s(&data(xs.iter().product(), 1 + i as u64));
        let w = f64s(&data(c * k * k, 2 + i as u64));
        let mut dense = vec![0.0; c * c * k * k];
        for ch in 0..c {
            let tap = ch * k * k;
            dense[(ch * c + ch) * k * k..][..k * k].copy_from_slice(&w[tap..tap + k * k]);
        }
        let (y, ys) = cpu::depthwise_conv2d(&x, xs, &w, k, stride, pad);
        let (want, shape) = cpu::conv2d(&x, xs, &dense, [c, c, k, k], stride, pad);
        assert_eq!(ys, shape);
        let dy = f64s(&data(y.len(), 3 + i as u64));
        let (dx, dw) = cpu::depthwise_conv2d_backward(&x, xs, &w, k, &dy, stride, pad);
        let (want_dx, dense_dw) =
            cpu::conv2d_backward(&x, xs, &dense, [c, c, k, k], &dy, stride, pad);
        let want_dw: Vec<f64> = (0..c)
            .flat_map(|ch| dense_dw[(ch * c + ch) * k * k..][..k * k].to_vec())
            .collect();
        for (what, got, want) in [("y", y, want), ("dx", dx, want_dx), ("dw", dw, want_dw)] {
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-12, "{what} {xs:?} k {k} s {stride}: {worst}");
        }
    }
}

#[test]
fn depthwise_forward_matches_reference() {
    for (family, gpu) in kernel_families() {
        for (i, &(xs, k, stride, pad)) in DW_SHAPES.iter().enumerate() {
            let ws = [xs[1], 1, k, k];
            let xd = data(xs.iter().product(), 10 + i as u64);
            let wd = data(ws.iter().product(), 20 + i as u64);
            let x = Tensor::from_slice(&gpu, &xd, &xs).unwrap();
            let w = Tensor::from_slice(&gpu, &wd, &ws).unwrap();
            let y = ops::depthwise_conv2d(&x, &w, cfg(stride, pad)).unwrap();
            let (want, shape) = cpu::depthwise_conv2d(&f64s(&xd), xs, &f64s(&wd), k, stride, pad);
            assert_eq!(y.shape(), &shape);
            let what = format!("{family} depthwise fwd {xs:?} k {k} s {stride} p {pad}");
            assert_close(&what, &y.to_vec().unwrap(), &want, 1e-5, 1e-5);
            let again = ops::depthwise_conv2d_forward(&x, &w, cfg(stride, pad)).unwrap();
            assert_eq!(again.to_vec().unwrap(), y.to_vec().unwrap(), "{what}");
        }
    }
}

#[test]
fn depthwise_backward_matches_reference() {
    for (family, gpu) in kernel_families() {
        for (i, &(xs, k, stride, pad)) in DW_SHAPES.iter().enumerate() {
            let ws = [xs[1], 1, k, k];
            let xd = data(xs.iter().product(), 30 + i as u64);
            let wd = data(ws.iter().product(), 40 + i as u64);
            let x = Tensor::parameter(&gpu, &xd, &xs).unwrap();
            let w = Tensor::parameter(&gpu, &wd, &ws).unwrap();
            let y = ops::depthwise_conv2d(&x, &w, cfg(stride, pad)).unwrap();
            let dyd = data(y.numel(), 50 + i as u64);
            let dy = Tensor::from_slice(&gpu, &dyd, y.shape()).unwrap();
            y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
            let (dx, dw) = cpu::depthwise_conv2d_backward(
                &f64s(&xd),
                xs,
                &f64s(&wd),
                k,
                &f64s(&dyd),
                stride,
                pad,
            );
            let what = format!("{family} {xs:?} k {k} s {stride} p {pad}");
            let got_dx = x.grad().unwrap().to_vec().unwrap();
            let got_dw = w.grad().unwrap().to_vec().unwrap();
            assert_close(&format!("depthwise dx {what}"), &got_dx, &dx, 1e-5, 1e-5);
            assert_close(&format!("depthwise dw {what}"), &got_dw, &dw, 2e-4, 1e-4);
            // The launchers alone compute the same.
            let (h, wdt) = (xs[2], xs[3]);
            let dx2 =
                ops::depthwise_conv2d_backward_input(&dy, &w, (h, wdt), cfg(stride, pad)).unwrap();
            let dw2 = ops::depthwise_conv2d_backward_weight(&x, &dy, k, cfg(stride, pad)).unwrap();
            assert_eq!(dx2.shape(), &xs);
            assert_eq!(dw2.shape(), &ws);
            assert_eq!(dx2.to_vec().unwrap(), got_dx, "{what}");
            assert_eq!(dw2.to_vec().unwrap(), got_dw, "{what}");
        }
    }
}

#[test]
fn depthwise_gradients_match_finite_differences() {
    for (family, gpu) in kernel_families() {
        for &(xs, k, stride) in &[
            ([1usize, 3, 5, 5], 3usize, 2usize),
            ([2, 2, 7, 5], 5, 2),
            ([1, 17, 3, 4], 3, 1),
            ([2, 3, 1, 1], 3, 1),
        ] {
            let ws = vec![xs[1], 1, k, k];
            gradcheck_on(
                &gpu,
                &format!("{family} depthwise_conv2d {xs:?} k{k} s{stride}"),
                &[
                    (data(xs.iter().product(), 5), xs.to_vec()),
                    (data(ws.iter().product(), 6), ws),
                ],
                |t| ops::depthwise_conv2d(&t[0], &t[1], Conv2dConfig::same(k, stride)),
                6,
                1e-2,
                2e-3,
            );
        }
    }
}

#[test]
fn depthwise_geometry_errors_are_shape_errors() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 4, 6, 6]).unwrap();
    let same = Conv2dConfig::same(3, 1);
    for (ws, c, wanted) in [
        (vec![3, 1, 3, 3], same, "C = 4"),
        (vec![4, 4, 3, 3], same, "[C, 1, k, k]"),
        (vec![4, 1, 3, 1], same, "square"),
        (vec![4, 1, 4, 4], same, "odd"),
        (vec![4, 1, 0, 0], cfg(1, 0), "odd"),
        (vec![4, 1, 3, 3], cfg(0, 1), "stride"),
        (vec![4, 1, 9, 9], cfg(1, 1), "smaller than the kernel"),
        (vec![4, 9], same, "4 dimensions"),
    ] {
        let w = Tensor::zeros(&gpu, &ws).unwrap();
        match ops::depthwise_conv2d(&x, &w, c) {
            Err(Error::Shape { message, .. }) => {
                assert!(message.contains(wanted), "{ws:?}: {message}")
            }
            other => panic!("{ws:?} {c:?}: expected a shape error, got {other:?}"),
        }
    }
    let w = Tensor::zeros(&gpu, &[4, 1, 3, 3]).unwrap();
    let dy = Tensor::zeros(&gpu, &[2, 4, 5, 5]).unwrap();
    let err = ops::depthwise_conv2d_backward_input(&dy, &w, (6, 6), same).unwrap_err();
    assert!(err.to_string().contains("output gradient"), "{err}");
    let err = ops::depthwise_conv2d_backward_weight(&x, &dy, 3, same).unwrap_err();
    assert!(err.to_string().contains("output gradient"), "{err}");
    let err = ops::depthwise_conv2d_backward_weight(&x, &dy, 2, same).unwrap_err();
    assert!(err.to_string().contains("odd"), "{err}");
}

/// Inputs over [-5, 5] with the kinks and their f32 neighbours among them.
fn hard_sigmoid_inputs(len: usize, seed: u64) -> Vec<f32> {
    let below3 = f32::from_bits(3.0f32.to_bits() - 1);
    let above3 = f32::from_bits(3.0f32.to_bits() + 1);
    let kinks = [-3.0, 3.0, below3, above3, -below3, -above3, 0.0];
    data(len, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 5 == 0 {
                kinks[(i / 5) % kinks.len()]
            } else {
                5.0 * v
            }
        })
        .collect()
}

#[test]
fn hard_sigmoid_matches_reference() {
    for (family, gpu) in kernel_families() {
        for (i, len) in [1usize, 7, 255, 257, 1000].into_iter().enumerate() {
            let xd = hard_sigmoid_inputs(len, 100 + i as u64);
            let x = Tensor::parameter(&gpu, &xd, &[len]).unwrap();
            let y = ops::hard_sigmoid(&x).unwrap();
            let what = format!("{family} hard_sigmoid [{len}]");
            let want = cpu::hard_sigmoid(&f64s(&xd));
            assert_close(&what, &y.to_vec().unwrap(), &want, 1e-7, 1e-6);
            let dyd = data(len, 200 + i as u64);
            let dy = Tensor::from_slice(&gpu, &dyd, &[len]).unwrap();
            y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
            let got = x.grad().unwrap().to_vec().unwrap();
            // Exactly PyTorch's dy * (1/6 in f32), and exactly 0 at and beyond the kinks.
            let exact: Vec<f32> = xd
                .iter()
                .zip(&dyd)
                .map(|(&v, &g)| {
                    if v > -3.0 && v < 3.0 {
                        g * (1.0 / 6.0)
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_eq!(got, exact, "{what} backward");
            let want = cpu::hard_sigmoid_backward(&f64s(&xd), &f64s(&dyd));
            assert_close(&format!("{what} backward"), &got, &want, 1e-7, 1e-6);
        }
    }
}

#[test]
fn hard_sigmoid_gradient_at_and_next_to_the_kinks() {
    let gpu = gpu();
    let below3 = f32::from_bits(3.0f32.to_bits() - 1);
    let xd = [-3.0, 3.0, -below3, below3, -3.5, 3.5];
    let x = Tensor::parameter(&gpu, &xd, &[6]).unwrap();
    let y = x.hard_sigmoid().unwrap();
    // Just below 3 the output has already rounded to 1, yet the gradient is 1/6.
    assert_eq!(y.to_vec().unwrap()[3], 1.0);
    y.sum().unwrap().backward().unwrap();
    let s = 1.0f32 / 6.0;
    assert_eq!(
        x.grad().unwrap().to_vec().unwrap(),
        vec![0.0, 0.0, s, s, 0.0, 0.0]
    );
    let dy = Tensor::from_slice(&gpu, &[6.0; 6], &[6]).unwrap();
    let dx = ops::hard_sigmoid_backward(&dy, &x.detach()).unwrap();
    assert_eq!(
        dx.to_vec().unwrap(),
        vec![0.0, 0.0, 6.0 * s, 6.0 * s, 0.0, 0.0]
    );
    let short = Tensor::zeros(&gpu, &[5]).unwrap();
    assert!(matches!(
        ops::hard_sigmoid_backward(&short, &x),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn hard_sigmoid_gradient_matches_finite_differences() {
    for (family, gpu) in kernel_families() {
        // Away from the kinks, by more than the step.
        let xd: Vec<f32> = data(60, 7)
            .iter()
            .map(|v| 5.0 * v)
            .map(|v| {
                if (v.abs() - 3.0).abs() < 0.1 {
                    v * 0.9
                } else {
                    v
                }
            })
            .collect();
        gradcheck_on(
            &gpu,
            &format!("{family} hard_sigmoid"),
            &[(xd, vec![3, 20])],
            |t| ops::hard_sigmoid(&t[0]),
            8,
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn threefry_reference_matches_the_random123_known_answers() {
    // Random123's kat_vectors: threefry2x32 with 20 rounds, (counter, key) -> output.
    for (counter, key, want) in [
        ([0, 0], [0, 0], [0x6b20_0159, 0x99ba_4efe]),
        (
            [u32::MAX, u32::MAX],
            [u32::MAX, u32::MAX],
            [0x1cb9_96fc, 0xbb00_2be7],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3],
            [0x1319_8a2e, 0x0370_7344],
            [0xc492_3a9c, 0x483d_f7a0],
        ),
    ] {
        assert_eq!(
            cpu::threefry2x32(counter, key),
            want,
            "{counter:x?} {key:x?}"
        );
    }
}

#[test]
fn dropout_matches_reference_mask_exactly() {
    for (family, gpu) in kernel_families() {
        for (i, (len, p, seed)) in [
            (1usize, 0.5f32, 0u64),
            (257, 0.1, 1),
            (1000, 0.5, 0xdead_beef_0000_0001),
            (3 * 5 * 7 * 11, 0.9, u64::MAX),
        ]
        .into_iter()
        .enumerate()
        {
            let xd = data(len, 300 + i as u64);
            let x = Tensor::parameter(&gpu, &xd, &[len]).unwrap();
            let y = ops::dropout(&x, p, seed, true).unwrap();
            let scale = (1.0 / (1.0 - p as f64)) as f32;
            let mask = cpu::dropout_mask(len, p as f64, seed);
            let want: Vec<f32> = xd
                .iter()
                .zip(&mask)
                .map(|(&v, &keep)| if keep { v * scale } else { 0.0 })
                .collect();
            let what = format!("{family} dropout [{len}] p {p} seed {seed:x}");
            let got = y.to_vec().unwrap();
            assert_eq!(got, want, "{what}");
            // Kept values are x / (1 - p) up to the rounding of the scale and the product.
            let exact: Vec<f64> = xd
                .iter()
                .zip(&mask)
                .map(|(&v, &keep)| {
                    if keep {
                        v as f64 / (1.0 - p as f64)
                    } else {
                        0.0
                    }
                })
                .collect();
            assert_close(&what, &got, &exact, 0.0, 2e-7);
            // Backward: the same mask, scaled, times dy; from autograd and the launcher.
            let dyd = data(len, 400 + i as u64);
            let dy = Tensor::from_slice(&gpu, &dyd, &[len]).unwrap();
            y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
            let want: Vec<f32> = dyd
                .iter()
                .zip(&mask)
                .map(|(&g, &keep)| if keep { g * scale } else { 0.0 })
                .collect();
            assert_eq!(x.grad().unwrap().to_vec().unwrap(), want, "{what} dx");
            let dx = ops::dropout_backward(&dy, p, seed).unwrap();
            assert_eq!(dx.to_vec().unwrap(), want, "{what} launcher dx");
            let y2 = ops::dropout_forward(&x.detach(), p, seed).unwrap();
            assert_eq!(y2.to_vec().unwrap(), got, "{what} launcher");
        }
    }
}

#[test]
fn dropout_masks_depend_on_the_seed_alone() {
    let gpu = gpu();
    let n = 4096;
    let x = Tensor::full(&gpu, &[n], 1.0).unwrap();
    let mask = |seed: u64| -> Vec<bool> {
        let v = ops::dropout(&x, 0.5, seed, true).unwrap().to_vec().unwrap();
        v.iter().map(|&e| e != 0.0).collect()
    };
    let a = mask(7);
    assert_eq!(a, mask(7), "the same seed gives the same mask");
    for other in [8, 7 + (1 << 32), 7 ^ (1 << 63)] {
        let b = mask(other);
        let differ = a.iter().zip(&b).filter(|(p, q)| p != q).count();
        // Independent masks at p = 0.5 differ in half the places.
        assert!(
            (1800..2300).contains(&differ),
            "seeds 7 and {other:#x}: {differ} of {n} differ"
        );
    }
}

#[test]
fn dropout_keeps_one_minus_p_of_the_elements() {
    // A correct mask keeps Binomial(n, 1 - p) elements; the bound is 6 standard deviations,
    // sqrt(p (1 - p) / n) <= 0.0016 for n = 10^5, which a fair generator misses with
    // probability about 2e-9 per check.
    let gpu = gpu();
    let n = 100_000;
    let x = Tensor::full(&gpu, &[100, 1000], 1.0).unwrap();
    for (p, seed) in [(0.1f32, 11u64), (0.3, 12), (0.5, 13), (0.9, 14)] {
        let v = ops::dropout(&x, p, seed, true).unwrap().to_vec().unwrap();
        let kept = v.iter().filter(|&&e| e != 0.0).count() as f64 / n as f64;
        let q = 1.0 - p as f64;
        let bound = 6.0 * (q * (1.0 - q) / n as f64).sqrt();
        assert!(
            (kept - q).abs() <= bound,
            "p {p}: kept {kept}, expected {q} +- {bound}"
        );
        // The same on the first and second half: no drift along the index.
        let half = v[..n / 2].iter().filter(|&&e| e != 0.0).count() as f64 / (n / 2) as f64;
        assert!(
            (half - q).abs() <= bound * 2f64.sqrt(),
            "p {p}: first half {half}"
        );
    }
}

#[test]
fn dropout_is_the_identity_in_evaluation_and_at_zero() {
    let gpu = gpu();
    let xd = data(30, 500);
    for (p, training) in [(0.5, false), (0.0, true), (0.0, false)] {
        let x = Tensor::parameter(&gpu, &xd, &[5, 6]).unwrap();
        let before = launches_on_this_thread();
        let y = ops::dropout(&x, p, 3, training).unwrap();
        assert_eq!(
            launches_on_this_thread(),
            before,
            "p {p} training {training}: no kernel"
        );
        assert!(y.shares_storage(&x));
        assert_eq!(y.to_vec().unwrap(), xd);
        let dy = data(30, 501);
        let tdy = Tensor::from_slice(&gpu, &dy, &[5, 6]).unwrap();
        y.mul(&tdy).unwrap().sum().unwrap().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec().unwrap(), dy);
    }
}

#[test]
fn dropout_refuses_probabilities_outside_zero_to_one() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4]).unwrap();
    for p in [1.0, -0.25, 2.0, f32::NAN] {
        for training in [true, false] {
            match ops::dropout(&x, p, 0, training) {
                Err(Error::Invalid { message, .. }) => {
                    assert!(message.contains("[0, 1)"), "{message}")
                }
                other => panic!("p {p} training {training}: {other:?}"),
            }
        }
        assert!(ops::dropout_forward(&x, p, 0).is_err());
        assert!(ops::dropout_backward(&x, p, 0).is_err());
    }
}

#[test]
fn dropout_gradient_matches_finite_differences() {
    for (family, gpu) in kernel_families() {
        gradcheck_on(
            &gpu,
            &format!("{family} dropout"),
            &[(data(2 * 3 * 4 * 5, 600), vec![2, 3, 4, 5])],
            |t| ops::dropout(&t[0], 0.4, 99, true),
            8,
            1e-2,
            1e-3,
        );
    }
}
