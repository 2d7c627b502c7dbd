//! The implicit product on f16 operands (`implicit-f16`) against the f64 reference computed
//! on the same operands rounded to f16, on awkward shapes in every direction, and its
//! gradients by finite differences on operands f16 holds exactly.

use repopt_tensor::ops::{self, Conv2dConfig, Direction};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{assert_close, data, gpu, gradcheck_on};
use repopt_tensor::tuning::{ConvAlgorithm, Tuning};
use repopt_tensor::{AdapterSelector, Gpu, GpuOptions, Tensor};

/// (input [N, Ci, H, W], Co, k, stride): batch 1, odd sizes, stride 2 and 3 with odd input,
/// channels not multiples of 4 and pixels not multiples of the 64-wide tiles, a parity class
/// with no pixels, and a weight gradient long enough to be split.
const SHAPES: &[([usize; 4], usize, usize, usize)] = &[
    ([1, 3, 7, 5], 5, 3, 2),
    ([2, 17, 9, 9], 19, 3, 1),
    ([3, 4, 6, 6], 33, 1, 2),
    ([1, 1, 1, 1], 3, 3, 1),
    ([1, 4, 9, 11], 5, 5, 2),
    ([2, 5, 1, 6], 4, 3, 2),
    ([2, 3, 8, 7], 4, 3, 3),
    ([5, 48, 8, 8], 48, 3, 1),
    ([8, 16, 16, 16], 24, 3, 1),
];

fn has_f16(gpu: &Gpu) -> bool {
    gpu.features()
        .contains(repopt_tensor::wgpu::Features::SHADER_F16)
}

fn to_f16(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f64()).collect()
}

fn exact(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn every_direction_matches_the_reference_on_rounded_operands() {
    let gpu = gpu();
    if !has_f16(&gpu) {
        let x = Tensor::zeros(&gpu, &[1, 3, 8, 8]).unwrap();
        let w = Tensor::zeros(&gpu, &[4, 3, 3, 3]).unwrap();
        let cfg = Conv2dConfig::same(3, 1);
        let err = ops::conv2d_with(
            ConvAlgorithm::ImplicitF16,
            Direction::Forward,
            (&x, &w),
            (8, 8),
            3,
            cfg,
        )
        .unwrap_err();
        assert!(err.to_string().contains("SHADER_F16"), "{err}");
        return;
    }
    // How far rounding the operands moves the exact result, over all shapes: the f16 path
    // must show it (it rounds) while matching the rounded reference far more closely.
    let mut moved = 0.0f64;
    for (i, &(xs, co, k, stride)) in SHAPES.iter().enumerate() {
        let ws = [co, xs[1], k, k];
        let pad = (k - 1) / 2;
        let cfg = Conv2dConfig {
            stride,
            padding: pad,
        };
        let oh = (xs[2] + 2 * pad - k) / stride + 1;
        let ow = (xs[3] + 2 * pad - k) / stride + 1;
        let dys = [xs[0], co, oh, ow];
        let xd = data(xs.iter().product(), 100 + i as u64);
        let wd = data(ws.iter().product(), 200 + i as u64);
        let dyd = data(dys.iter().product(), 300 + i as u64);
        let x = Tensor::from_slice(&gpu, &xd, &xs).unwrap();
        let w = Tensor::from_slice(&gpu, &wd, &ws).unwrap();
        let dy = Tensor::from_slice(&gpu, &dyd, &dys).unwrap();
        let (want_y, _) = cpu::conv2d(&to_f16(&xd), xs, &to_f16(&wd), ws, stride, pad);
        let (want_dx, want_dw) = cpu::conv2d_backward(
            &to_f16(&xd),
            xs,
            &to_f16(&wd),
            ws,
            &to_f16(&dyd),
            stride,
            pad,
        );
        let (exact_y, _) = cpu::conv2d(&exact(&xd), xs, &exact(&wd), ws, stride, pad);
        for (direction, operands, want, label) in [
            (Direction::Forward, (&x, &w), &want_y, "forward"),
            (
                Direction::BackwardInput,
                (&dy, &w),
                &want_dx,
                "input gradient",
            ),
            (
                Direction::BackwardWeight,
                (&x, &dy),
                &want_dw,
                "weight gradient",
            ),
        ] {
            let got = ops::conv2d_with(
                ConvAlgorithm::ImplicitF16,
                direction,
                operands,
                (xs[2], xs[3]),
                k,
                cfg,
            )
            .unwrap()
            .to_vec()
            .unwrap();
            let what = format!("implicit-f16 {label} {xs:?} co {co} k {k} s {stride}");
            assert_close(&what, &got, want, 1e-4, 1e-4);
            if direction == Direction::Forward {
                for (&g, &e) in got.iter().zip(&exact_y) {
                    moved = moved.max((g as f64 - e).abs());
                }
            }
        }
    }
    assert!(
        moved > 1e-3,
        "the results equal the f32 operands' ({moved}): the operands were not rounded"
    );
}

#[test]
fn gradients_match_finite_differences() {
    let f16 = Gpu::new(GpuOptions {
        adapter: AdapterSelector::from_env(),
        tuning: Tuning::Force(ConvAlgorithm::ImplicitF16),
        ..Default::default()
    })
    .unwrap();
    if !has_f16(&f16) {
        return;
    }
    // Multiples of 2^-10 below 1, and a step of 2^-6: every perturbed operand is exact in
    // f16, so the differences see the same function the kernels compute.
    let grid = |len: usize, seed: u64| -> Vec<f32> {
        data(len, seed)
            .into_iter()
            .map(|v| (v * 1000.0).round() / 1024.0)
            .collect()
    };
    for &(xs, co, k, stride) in &[
        ([1usize, 3, 5, 5], 4usize, 3usize, 2usize),
        ([2, 5, 4, 3], 3, 1, 1),
        ([1, 2, 6, 6], 17, 3, 1),
        ([2, 3, 7, 5], 4, 3, 3),
    ] {
        let ws = vec![co, xs[1], k, k];
        gradcheck_on(
            &f16,
            &format!("implicit-f16 conv2d {xs:?} k{k} s{stride}"),
            &[
                (grid(xs.iter().product(), 5), xs.to_vec()),
                (grid(ws.iter().product(), 6), ws),
            ],
            |t| ops::conv2d(&t[0], &t[1], Conv2dConfig::same(k, stride)),
            6,
            1.0 / 64.0,
            2e-3,
        );
    }
}
