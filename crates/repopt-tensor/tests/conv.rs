//! The convolution kernels of every family and variant (direct, Winograd, matrix products, the
//! implicit product) against the f64 CPU reference on awkward shapes, finite-difference checks
//! of their gradients, and which of them the tuner measures.

use repopt_tensor::Tensor;
use repopt_tensor::ops::{self, Conv2dConfig};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{
    assert_close, conv_variants, data, f64s, gradcheck_on, launches_on_this_thread,
};

/// (input [N, Ci, H, W], Co, k, stride): batch 1, odd sizes, stride 2 with odd input,
/// channel counts that are not multiples of 16 and pixel counts not multiples of 64.
const CONV_SHAPES: &[([usize; 4], usize, usize, usize)] = &[
    ([1, 3, 7, 5], 5, 3, 2),
    ([2, 17, 9, 9], 19, 3, 1),
    ([3, 4, 6, 6], 33, 1, 2),
    ([1, 17, 7, 9], 18, 1, 2),
    ([2, 3, 5, 1], 5, 1, 2),
    // Kernel sizes the subgroup family has no kernel for run on the plain kernels.
    ([2, 3, 9, 8], 6, 5, 1),
    ([1, 4, 9, 11], 5, 5, 2),
    ([2, 20, 11, 13], 7, 1, 1),
    ([1, 1, 1, 1], 3, 3, 1),
    ([2, 16, 5, 5], 16, 3, 2),
    ([5, 48, 8, 8], 48, 3, 1),
    ([4, 3, 15, 15], 64, 3, 2),
    // Winograd: partial tiles at the bottom and right, more tiles than one matmul block.
    ([1, 5, 2, 7], 3, 3, 1),
    ([3, 6, 17, 15], 20, 3, 1),
    // Winograd with fewer tiles than channels: the products run with tiles as rows.
    ([4, 24, 3, 4], 40, 3, 1),
    // Stride 2 where a parity class of input pixels is empty.
    ([2, 5, 1, 6], 4, 3, 2),
    ([1, 9, 2, 1], 17, 3, 2),
    // Stride 3: nine parity classes, some with a single tap per side.
    ([2, 3, 8, 7], 4, 3, 3),
    ([1, 2, 10, 9], 3, 5, 3),
    ([2, 4, 7, 8], 3, 1, 3),
];

#[test]
fn conv2d_forward_matches_reference() {
    for (family, gpu) in conv_variants() {
        for (i, &(xs, co, k, stride)) in CONV_SHAPES.iter().enumerate() {
            let ws = [co, xs[1], k, k];
            let pad = (k - 1) / 2;
            let xd = data(xs.iter().product(), 10 + i as u64);
            let wd = data(ws.iter().product(), 20 + i as u64);
            let x = Tensor::from_slice(&gpu, &xd, &xs).unwrap();
            let w = Tensor::from_slice(&gpu, &wd, &ws).unwrap();
            let y = ops::conv2d(
                &x,
                &w,
                Conv2dConfig {
                    stride,
                    padding: pad,
                },
            )
            .unwrap();
            let (want, shape) = cpu::conv2d(&f64s(&xd), xs, &f64s(&wd), ws, stride, pad);
            assert_eq!(y.shape(), &shape);
            assert_close(
                &format!("{family} conv fwd {xs:?} co {co} k {k} s {stride}"),
                &y.to_vec().unwrap(),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn conv2d_backward_matches_reference() {
    for (family, gpu) in conv_variants() {
        for (i, &(xs, co, k, stride)) in CONV_SHAPES.iter().enumerate() {
            let ws = [co, xs[1], k, k];
            let pad = (k - 1) / 2;
            let xd = data(xs.iter().product(), 30 + i as u64);
            let wd = data(ws.iter().product(), 40 + i as u64);
            let x = Tensor::parameter(&gpu, &xd, &xs).unwrap();
            let w = Tensor::parameter(&gpu, &wd, &ws).unwrap();
            let y = ops::conv2d(
                &x,
                &w,
                Conv2dConfig {
                    stride,
                    padding: pad,
                },
            )
            .unwrap();
            let dyd = data(y.numel(), 50 + i as u64);
            let dy = Tensor::from_slice(&gpu, &dyd, y.shape()).unwrap();
            y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
            let (dx, dw) =
                cpu::conv2d_backward(&f64s(&xd), xs, &f64s(&wd), ws, &f64s(&dyd), stride, pad);
            let what = format!("{family} {xs:?} co {co} k {k} s {stride}");
            assert_close(
                &format!("conv dx {what}"),
                &x.grad().unwrap().to_vec().unwrap(),
                &dx,
                1e-4,
                1e-4,
            );
            assert_close(
                &format!("conv dw {what}"),
                &w.grad().unwrap().to_vec().unwrap(),
                &dw,
                2e-4,
                1e-4,
            );
        }
    }
}

#[test]
fn conv2d_weight_gradient_with_many_partial_sums() {
    // Few weights, many pixels: the weight gradient is split into partial sums (by the
    // implicit product too once K, the 6138 pixels of stride 1, passes two splits' minimum).
    for (family, gpu) in conv_variants() {
        for stride in [2, 1] {
            let (xs, ws) = ([6, 3, 33, 31], [8, 3, 3, 3]);
            let xd = data(xs.iter().product(), 1);
            let wd = data(ws.iter().product(), 2);
            let x = Tensor::from_slice(&gpu, &xd, &xs).unwrap();
            let w = Tensor::parameter(&gpu, &wd, &ws).unwrap();
            let y = ops::conv2d(&x, &w, Conv2dConfig::same(3, stride)).unwrap();
            let dyd = data(y.numel(), 3);
            let dy = Tensor::from_slice(&gpu, &dyd, y.shape()).unwrap();
            y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
            let (_, dw) =
                cpu::conv2d_backward(&f64s(&xd), xs, &f64s(&wd), ws, &f64s(&dyd), stride, 1);
            assert!(x.grad().is_none(), "a constant input gets no gradient");
            assert_close(
                &format!("{family} conv dw split, stride {stride}"),
                &w.grad().unwrap().to_vec().unwrap(),
                &dw,
                1e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    for (family, gpu) in conv_variants() {
        for &(xs, co, k, stride) in &[
            ([1usize, 3, 5, 5], 4usize, 3usize, 2usize),
            ([2, 5, 4, 3], 3, 1, 1),
            ([1, 2, 6, 6], 17, 3, 1),
            ([2, 3, 5, 7], 4, 3, 1),
        ] {
            let ws = vec![co, xs[1], k, k];
            gradcheck_on(
                &gpu,
                &format!("{family} conv2d {xs:?} k{k} s{stride}"),
                &[
                    (data(xs.iter().product(), 5), xs.to_vec()),
                    (data(ws.iter().product(), 6), ws),
                ],
                |t| ops::conv2d(&t[0], &t[1], Conv2dConfig::same(k, stride)),
                6,
                1e-2,
                2e-3,
            );
        }
    }
}

#[test]
fn forced_variants_run_where_they_apply_and_only_there() {
    // A stride-1 3x3 forward by Winograd is four dispatches (weight and input transforms,
    // the 16 products, the output transform), by matrix products three (columns, product,
    // layout), by the implicit product one; Winograd has no stride-2 form, so stride 2 keeps
    // the direct kernel there.
    for (variant, gpu) in conv_variants() {
        let x = Tensor::from_slice(&gpu, &data(2 * 5 * 7 * 6, 1), &[2, 5, 7, 6]).unwrap();
        let w = Tensor::from_slice(&gpu, &data(3 * 5 * 9, 2), &[3, 5, 3, 3]).unwrap();
        for stride in [1, 2] {
            // The plain family's direct kernels pack the weights first.
            let direct = if variant.starts_with("plain") { 2 } else { 1 };
            let want = match variant.split_once('+').map(|(_, a)| a) {
                Some("winograd") if stride == 1 => 4,
                Some("gemm") => 3,
                // One kernel, no split of K in the forward.
                _ if variant == "implicit" => 1,
                _ => direct,
            };
            let before = launches_on_this_thread();
            let y = ops::conv2d(&x, &w, Conv2dConfig::same(3, stride)).unwrap();
            let launched = launches_on_this_thread() - before;
            assert_eq!(launched, want, "{variant} stride {stride}");
            assert_eq!(y.shape(), &[2, 3, 7usize.div_ceil(stride), 6 / stride]);
        }
    }
}

#[test]
fn conv2d_with_gives_every_direction_by_every_algorithm() {
    use repopt_tensor::ops::Direction;
    use repopt_tensor::tuning::ConvAlgorithm;
    for (family, gpu) in conv_variants() {
        for (stride, algorithms) in [
            (
                1,
                &[
                    ConvAlgorithm::Direct,
                    ConvAlgorithm::Winograd,
                    ConvAlgorithm::Gemm,
                    ConvAlgorithm::Implicit,
                ][..],
            ),
            (
                2,
                &[
                    ConvAlgorithm::Direct,
                    ConvAlgorithm::Gemm,
                    ConvAlgorithm::Implicit,
                ][..],
            ),
        ] {
            let (xs, ws) = ([2usize, 7, 9, 5], [6usize, 7, 3, 3]);
            let (oh, ow) = (9usize.div_ceil(stride), 5usize.div_ceil(stride));
            let xd = data(xs.iter().product(), 61);
            let wd = data(ws.iter().product(), 62);
            let dyd = data(2 * 6 * oh * ow, 63);
            let x = Tensor::from_slice(&gpu, &xd, &xs).unwrap();
            let w = Tensor::from_slice(&gpu, &wd, &ws).unwrap();
            let dy = Tensor::from_slice(&gpu, &dyd, &[2, 6, oh, ow]).unwrap();
            let cfg = Conv2dConfig::same(3, stride);
            let (want_y, _) = cpu::conv2d(&f64s(&xd), xs, &f64s(&wd), ws, stride, 1);
            let (want_dx, want_dw) =
                cpu::conv2d_backward(&f64s(&xd), xs, &f64s(&wd), ws, &f64s(&dyd), stride, 1);
            for &algorithm in algorithms {
                for (direction, operands, want) in [
                    (Direction::Forward, (&x, &w), &want_y),
                    (Direction::BackwardInput, (&dy, &w), &want_dx),
                    (Direction::BackwardWeight, (&x, &dy), &want_dw),
                ] {
                    let got =
                        ops::conv2d_with(algorithm, direction, operands, (9, 5), 3, cfg).unwrap();
                    assert_close(
                        &format!("{family} {algorithm:?} {direction:?} stride {stride}"),
                        &got.to_vec().unwrap(),
                        want,
                        2e-4,
                        1e-4,
                    );
                }
            }
        }
        // Stride 2 has no Winograd form: a clear error, not a wrong answer.
        let x = Tensor::zeros(&gpu, &[1, 2, 5, 5]).unwrap();
        let w = Tensor::zeros(&gpu, &[3, 2, 3, 3]).unwrap();
        let err = ops::conv2d_with(
            ConvAlgorithm::Winograd,
            Direction::Forward,
            (&x, &w),
            (5, 5),
            3,
            Conv2dConfig::same(3, 2),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("stride 1 and padding 1 only"), "{err}");
    }
}

/// A device that measures kernel choices on first use, caching them in a fresh temporary
/// file named after `name` (returned, for the caller to remove).
fn measuring_gpu(name: &str) -> (repopt_tensor::Gpu, std::path::PathBuf) {
    use repopt_tensor::tuning::Tuning;
    use repopt_tensor::{AdapterSelector, Gpu, GpuOptions};
    let file = std::env::temp_dir().join(format!("repopt-tune-{name}-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let gpu = Gpu::new(GpuOptions {
        adapter: AdapterSelector::from_env(),
        tuning: Tuning::Measure {
            cache: Some(file.clone()),
        },
        ..Default::default()
    })
    .unwrap();
    (gpu, file)
}

#[test]
fn measuring_skips_the_implicit_product_on_cpu_adapters_only() {
    use repopt_tensor::tuning::{ConvAlgorithm, Tuning};
    use repopt_tensor::{AdapterSelector, Gpu, GpuOptions};
    let (gpu, file) = measuring_gpu("cpu");
    // The profile names every kernel launched, the tuner's trial runs included.
    gpu.set_profiling(true);
    let x = Tensor::from_slice(&gpu, &data(2 * 8 * 6 * 6, 1), &[2, 8, 6, 6]).unwrap();
    let w = Tensor::parameter(&gpu, &data(8 * 8 * 9, 2), &[8, 8, 3, 3]).unwrap();
    let y = ops::conv2d(&x, &w, Conv2dConfig::same(3, 1)).unwrap();
    y.sum().unwrap().backward().unwrap();
    let choices = gpu.tuned_choices();
    // The forward and the weight gradient (the input needs none) were measured once each.
    assert_eq!(choices.len(), 2, "{choices:?}");
    let launched: Vec<String> = gpu.kernel_profile().into_iter().map(|k| k.kernel).collect();
    let ran = |shader: &str| launched.iter().any(|k| k.starts_with(shader));
    assert!(
        ran("winograd.wgsl") && ran("conv_gemm.wgsl"),
        "{launched:?}"
    );
    let cpu = gpu.adapter().device_type == wgpu::DeviceType::Cpu;
    assert_eq!(ran("conv_implicit.wgsl"), !cpu, "{launched:?}");
    // f16 operands change the results: measuring never runs them.
    assert!(!ran("conv_implicit_f16.wgsl"), "{launched:?}");
    assert!(
        choices
            .iter()
            .all(|(_, a)| !cpu || *a != ConvAlgorithm::Implicit)
    );
    // Forcing it still runs it, measured or not.
    let forced = Gpu::new(GpuOptions {
        adapter: AdapterSelector::from_env(),
        tuning: Tuning::Force(ConvAlgorithm::Implicit),
        ..Default::default()
    })
    .unwrap();
    let x = Tensor::from_slice(&forced, &data(2 * 8 * 6 * 6, 1), &[2, 8, 6, 6]).unwrap();
    let w = Tensor::from_slice(&forced, &data(8 * 8 * 9, 2), &[8, 8, 3, 3]).unwrap();
    let before = launches_on_this_thread();
    ops::conv2d(&x, &w, Conv2dConfig::same(3, 1)).unwrap();
    assert_eq!(launches_on_this_thread() - before, 1);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_second_device_shares_the_kernel_choices_and_gives_the_same_results() {
    use repopt_tensor::Gpu;
    let (gpu, file) = measuring_gpu("two");
    let step = |g: &Gpu| {
        let x = Tensor::parameter(g, &data(2 * 8 * 6 * 6, 1), &[2, 8, 6, 6]).unwrap();
        let w = Tensor::parameter(g, &data(8 * 8 * 9, 2), &[8, 8, 3, 3]).unwrap();
        let before = launches_on_this_thread();
        let y = ops::conv2d(&x, &w, Conv2dConfig::same(3, 1)).unwrap();
        y.sum().unwrap().backward().unwrap();
        let launched = launches_on_this_thread() - before;
        let grads = (x.grad().unwrap(), w.grad().unwrap());
        (
            y.to_vec().unwrap(),
            grads.0.to_vec().unwrap(),
            grads.1.to_vec().unwrap(),
            launched,
        )
    };
    step(&gpu); // measures the shape's directions
    let measured = gpu.tuned_choices();
    assert!(!measured.is_empty());
    let again = step(&gpu);

    let second = gpu.open_another().unwrap();
    assert_ne!(gpu, second, "a device of its own");
    assert_eq!(second.adapter().index, gpu.adapter().index);
    assert_eq!(second.tuned_choices(), measured, "the choices are shared");
    let live = gpu.memory().live_bytes;
    let other = step(&second);
    // Nothing measured again: the same launches and the same bits as the first device's
    // second step, and the second device's tensors counted on its own pool.
    assert_eq!(second.tuned_choices(), measured);
    assert_eq!(other, again);
    assert_eq!(gpu.memory().live_bytes, live);
    assert!(second.memory().peak_live_bytes > 0);
    let _ = std::fs::remove_file(&file);
}
