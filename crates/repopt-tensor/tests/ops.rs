//! Every op's forward and backward kernels except the convolution's (in `conv.rs`) and the
//! matrix products' (in `matmul.rs`) against the f64 CPU reference on awkward shapes, and
//! finite-difference checks of every backward.

use repopt_tensor::Tensor;
use repopt_tensor::ops::{self, BatchNormStats};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{
    assert_close, data, f64s, gpu, gradcheck, gradcheck_on, kernel_families,
};

/// Batch 1, odd sizes, one pixel per plane, more values per channel than a workgroup's 64
/// invocations (with planes shorter and longer than 64, so their walk crosses planes), and
/// channels of several 1024-unit pieces ending in a partial one; planes whose length is a
/// multiple of 4 (the four-at-a-time kernels) and planes whose length is not.
const BN_SHAPES: &[[usize; 4]] = &[
    [1, 3, 5, 7],
    [70, 2, 1, 3],
    [4, 17, 3, 3],
    [3, 5, 1, 1],
    [2, 64, 9, 9],
    [1, 2, 33, 17],
    [3, 2, 19, 21],
    [1, 7, 4, 4],
    [70, 2, 2, 2],
    [5, 3, 36, 28],
];

#[test]
fn batch_norm_training_forward_and_running_stats_match_reference() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        for (i, &s) in BN_SHAPES.iter().enumerate() {
            for relu in [false, true] {
                let [n, c, h, w] = s;
                // An offset mean and a spread well away from 1 exercise both statistics.
                let xd: Vec<f32> = data(n * c * h * w, 60 + i as u64)
                    .iter()
                    .map(|v| 3.0 + 2.5 * v)
                    .collect();
                let gd = data(c, 61);
                let bd = data(c, 62);
                let rm0 = data(c, 63);
                let rv0: Vec<f32> = data(c, 64).iter().map(|v| 1.5 + v).collect();
                let x = Tensor::from_slice(&gpu, &xd, &s).unwrap();
                let gamma = Tensor::parameter(&gpu, &gd, &[c]).unwrap();
                let beta = Tensor::parameter(&gpu, &bd, &[c]).unwrap();
                let stats = BatchNormStats {
                    running_mean: Tensor::from_slice(&gpu, &rm0, &[c]).unwrap(),
                    running_var: Tensor::from_slice(&gpu, &rv0, &[c]).unwrap(),
                    momentum: 0.1,
                    eps: 1e-5,
                };
                let y = ops::batch_norm2d(&x, &gamma, &beta, &stats, true, relu).unwrap();
                let want = cpu::batch_norm_train(
                    &f64s(&xd),
                    n,
                    c,
                    h * w,
                    &f64s(&gd),
                    &f64s(&bd),
                    &f64s(&rm0),
                    &f64s(&rv0),
                    0.1,
                    1e-5,
                    relu,
                );
                let what = format!("bn {s:?} relu {relu}");
                assert_close(
                    &format!("{what} y"),
                    &y.to_vec().unwrap(),
                    &want.y,
                    2e-4,
                    2e-4,
                );
                assert_close(
                    &format!("{what} running mean"),
                    &stats.running_mean.to_vec().unwrap(),
                    &want.running_mean,
                    1e-5,
                    1e-5,
                );
                assert_close(
                    &format!("{what} running var"),
                    &stats.running_var.to_vec().unwrap(),
                    &want.running_var,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn batch_norm_eval_uses_running_stats_and_leaves_them_alone() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        let [n, c, h, w] = [2, 5, 3, 4];
        let xd = data(n * c * h * w, 70);
        let (gd, bd) = (data(c, 71), data(c, 72));
        let rm = data(c, 73);
        let rv: Vec<f32> = data(c, 74).iter().map(|v| 1.2 + v).collect();
        let stats = BatchNormStats {
            running_mean: Tensor::from_slice(&gpu, &rm, &[c]).unwrap(),
            running_var: Tensor::from_slice(&gpu, &rv, &[c]).unwrap(),
            momentum: 0.1,
            eps: 1e-5,
        };
        let x = Tensor::from_slice(&gpu, &xd, &[n, c, h, w]).unwrap();
        let gamma = Tensor::from_slice(&gpu, &gd, &[c]).unwrap();
        let beta = Tensor::from_slice(&gpu, &bd, &[c]).unwrap();
        for relu in [false, true] {
            let y = ops::batch_norm2d(&x, &gamma, &beta, &stats, false, relu).unwrap();
            let want = cpu::normalize(
                &f64s(&xd),
                n,
                c,
                h * w,
                &f64s(&rm),
                &f64s(&rv),
                &f64s(&gd),
                &f64s(&bd),
                1e-5,
                relu,
            );
            assert_close("bn eval", &y.to_vec().unwrap(), &want, 1e-5, 1e-5);
        }
        assert_eq!(stats.running_mean.to_vec().unwrap(), rm);
        assert_eq!(stats.running_var.to_vec().unwrap(), rv);
    }
}

#[test]
fn batch_norm_backward_matches_reference() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        for (i, &s) in BN_SHAPES.iter().enumerate() {
            for relu in [false, true] {
                let [n, c, h, w] = s;
                let xd: Vec<f32> = data(n * c * h * w, 80 + i as u64)
                    .iter()
                    .map(|v| 1.0 + 2.0 * v)
                    .collect();
                let (gd, bd) = (data(c, 81), data(c, 82));
                let x = Tensor::parameter(&gpu, &xd, &s).unwrap();
                let gamma = Tensor::parameter(&gpu, &gd, &[c]).unwrap();
                let beta = Tensor::parameter(&gpu, &bd, &[c]).unwrap();
                let stats = BatchNormStats::new(&gpu, c).unwrap();
                let y = ops::batch_norm2d(&x, &gamma, &beta, &stats, true, relu).unwrap();
                let dyd = data(y.numel(), 83);
                let dy = Tensor::from_slice(&gpu, &dyd, &s).unwrap();
                y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
                let (dx, dg, db) = cpu::batch_norm_train_backward(
                    &f64s(&xd),
                    n,
                    c,
                    h * w,
                    &f64s(&gd),
                    &f64s(&bd),
                    1e-5,
                    relu,
                    &f64s(&dyd),
                );
                let what = format!("bn backward {s:?} relu {relu}");
                assert_close(
                    &format!("{what} dx"),
                    &x.grad().unwrap().to_vec().unwrap(),
                    &dx,
                    2e-4,
                    2e-3,
                );
                assert_close(
                    &format!("{what} dgamma"),
                    &gamma.grad().unwrap().to_vec().unwrap(),
                    &dg,
                    2e-4,
                    2e-4,
                );
                assert_close(
                    &format!("{what} dbeta"),
                    &beta.grad().unwrap().to_vec().unwrap(),
                    &db,
                    2e-4,
                    2e-4,
                );
            }
        }
    }
}

#[test]
fn batch_norm_gradients_match_finite_differences() {
    let gpu = gpu();
    for (s, relu) in [
        ([2usize, 3, 2, 3], false),
        ([3, 2, 3, 1], true),
        ([2, 3, 2, 2], true),
    ] {
        let c = s[1];
        let stats = BatchNormStats::new(&gpu, c).unwrap();
        gradcheck(
            &format!("batch_norm2d {s:?} relu {relu}"),
            &[
                (data(s.iter().product(), 90), s.to_vec()),
                (data(c, 91).iter().map(|v| 1.0 + 0.5 * v).collect(), vec![c]),
                (data(c, 92), vec![c]),
            ],
            |t| ops::batch_norm2d(&t[0], &t[1], &t[2], &stats, true, relu),
            6,
            1e-2,
            1e-2,
        );
    }
}

#[test]
fn elementwise_ops_match_reference_and_finite_differences() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        for (i, len) in [1usize, 255, 257, 1000, 4099].into_iter().enumerate() {
            let (a, b) = (data(len, 100 + i as u64), data(len, 200 + i as u64));
            let ta = Tensor::from_slice(&gpu, &a, &[len]).unwrap();
            let tb = Tensor::from_slice(&gpu, &b, &[len]).unwrap();
            let add: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (x + y) as f64).collect();
            assert_close(
                "add",
                &ta.add(&tb).unwrap().to_vec().unwrap(),
                &add,
                1e-6,
                0.0,
            );
            let mul: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .collect();
            assert_close(
                "mul",
                &ta.mul(&tb).unwrap().to_vec().unwrap(),
                &mul,
                1e-6,
                1e-6,
            );
            let relu: Vec<f64> = a.iter().map(|x| x.max(0.0) as f64).collect();
            assert_close(
                "relu",
                &ta.relu().unwrap().to_vec().unwrap(),
                &relu,
                0.0,
                0.0,
            );
            let sig: Vec<f64> = a
                .iter()
                .map(|&x| 1.0 / (1.0 + (-(x as f64)).exp()))
                .collect();
            assert_close(
                "sigmoid",
                &ta.sigmoid().unwrap().to_vec().unwrap(),
                &sig,
                1e-6,
                1e-5,
            );
            let sum: f64 = a.iter().map(|&x| x as f64).sum();
            assert_close(
                "sum",
                &ta.sum().unwrap().to_vec().unwrap(),
                &[sum],
                1e-4,
                1e-5,
            );
            assert_close(
                "mean",
                &ta.mean().unwrap().to_vec().unwrap(),
                &[sum / len as f64],
                1e-5,
                1e-5,
            );
        }
        // ReLU's kink is avoided by keeping inputs away from 0.
        let away: Vec<f32> = data(40, 7)
            .iter()
            .map(|v| if v.abs() < 0.1 { v + 0.3 } else { *v })
            .collect();
        gradcheck("relu", &[(away, vec![40])], |t| t[0].relu(), 6, 1e-2, 1e-3);
        gradcheck_on(
            &gpu,
            "sigmoid",
            &[(data(30, 8), vec![30])],
            |t| t[0].sigmoid(),
            6,
            1e-2,
            1e-3,
        );
        gradcheck_on(
            &gpu,
            "add",
            &[(data(30, 9), vec![30]), (data(30, 10), vec![30])],
            |t| t[0].add(&t[1]),
            4,
            1e-2,
            1e-3,
        );
        gradcheck_on(
            &gpu,
            "mul",
            &[(data(30, 11), vec![30]), (data(30, 12), vec![30])],
            |t| t[0].mul(&t[1]),
            4,
            1e-2,
            1e-3,
        );
        gradcheck_on(
            &gpu,
            "add_scaled",
            &[(data(9, 13), vec![9]), (data(9, 14), vec![9])],
            |t| t[0].add_scaled(0.5, &t[1], -2.0),
            4,
            1e-2,
            1e-3,
        );
        gradcheck_on(
            &gpu,
            "mean",
            &[(data(300, 15), vec![300])],
            |t| t[0].mean(),
            4,
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn channel_scales_match_reference_and_finite_differences() {
    let gpu = gpu();
    // Planes whose length is a multiple of 4 (the four-at-a-time kernels, one case over
    // several workgroups) and planes whose length is not.
    for (i, s) in [
        [1usize, 3, 5, 7],
        [2, 17, 3, 3],
        [4, 5, 1, 1],
        [3, 5, 4, 4],
        [5, 3, 36, 28],
    ]
    .into_iter()
    .enumerate()
    {
        let [n, c, h, w] = s;
        let (xd, sd) = (data(n * c * h * w, 300 + i as u64), data(c, 301 + i as u64));
        let x = Tensor::from_slice(&gpu, &xd, &s).unwrap();
        let scale = Tensor::from_slice(&gpu, &sd, &[c]).unwrap();
        let want: Vec<f64> = (0..xd.len())
            .map(|j| xd[j] as f64 * sd[(j / (h * w)) % c] as f64)
            .collect();
        assert_close(
            "scale_channels",
            &x.scale_channels(&scale).unwrap().to_vec().unwrap(),
            &want,
            1e-6,
            1e-6,
        );
        let want: Vec<f64> = (0..xd.len())
            .map(|j| xd[j] as f64 + sd[(j / (h * w)) % c] as f64)
            .collect();
        assert_close(
            "add_channels",
            &x.add_channels(&scale).unwrap().to_vec().unwrap(),
            &want,
            1e-6,
            1e-6,
        );
        let gate = data(n * c, 302);
        let tg = Tensor::from_slice(&gpu, &gate, &[n, c]).unwrap();
        let want: Vec<f64> = (0..xd.len())
            .map(|j| xd[j] as f64 * gate[j / (h * w)] as f64)
            .collect();
        assert_close(
            "scale_planes",
            &x.scale_planes(&tg).unwrap().to_vec().unwrap(),
            &want,
            1e-6,
            1e-6,
        );
    }
    gradcheck(
        "scale_channels (trainable)",
        &[
            (data(2 * 3 * 4 * 5, 310), vec![2, 3, 4, 5]),
            (data(3, 311), vec![3]),
        ],
        |t| t[0].scale_channels(&t[1]),
        5,
        1e-2,
        1e-3,
    );
    gradcheck(
        "add_channels",
        &[
            (data(2 * 3 * 2 * 3, 314), vec![2, 3, 2, 3]),
            (data(3, 315), vec![3]),
        ],
        |t| t[0].add_channels(&t[1]),
        5,
        1e-2,
        1e-3,
    );
    gradcheck(
        "scale_planes",
        &[
            (data(2 * 3 * 2 * 2, 312), vec![2, 3, 2, 2]),
            (data(6, 313), vec![2, 3]),
        ],
        |t| t[0].scale_planes(&t[1]),
        5,
        1e-2,
        1e-3,
    );
    // A constant scale passes gradients to the input but takes none itself.
    let x = Tensor::parameter(&gpu, &data(12, 1), &[1, 3, 2, 2]).unwrap();
    let s = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    x.scale_channels(&s)
        .unwrap()
        .sum()
        .unwrap()
        .backward()
        .unwrap();
    assert!(s.grad().is_none() && !s.requires_grad());
    let g = x.grad().unwrap().to_vec().unwrap();
    assert_eq!(
        g,
        vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]
    );
}

#[test]
fn global_avg_pool_matches_reference_and_finite_differences() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        for (i, s) in [[1usize, 1, 1, 1], [3, 5, 7, 7], [2, 300, 2, 3]]
            .into_iter()
            .enumerate()
        {
            let xd = data(s.iter().product(), 400 + i as u64);
            let x = Tensor::from_slice(&gpu, &xd, &s).unwrap();
            let y = ops::global_avg_pool(&x).unwrap();
            assert_eq!(y.shape(), &[s[0], s[1]]);
            let want = cpu::global_avg_pool(&f64s(&xd), s[0] * s[1], s[2] * s[3]);
            assert_close("avgpool", &y.to_vec().unwrap(), &want, 1e-6, 1e-5);
        }
        gradcheck_on(
            &gpu,
            "global_avg_pool",
            &[(data(2 * 3 * 3 * 3, 410), vec![2, 3, 3, 3])],
            |t| ops::global_avg_pool(&t[0]),
            6,
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn cross_entropy_matches_reference_and_finite_differences() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        for (i, (n, k, eps)) in [
            (1usize, 2usize, 0.0f32),
            (7, 10, 0.1),
            (65, 100, 0.2),
            (3, 1000, 0.1),
        ]
        .into_iter()
        .enumerate()
        {
            let zd: Vec<f32> = data(n * k, 600 + i as u64)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let labels: Vec<u32> = (0..n).map(|j| ((j * 7 + 3) % k) as u32).collect();
            let z = Tensor::parameter(&gpu, &zd, &[n, k]).unwrap();
            let y = Tensor::from_u32(&gpu, &labels, &[n]).unwrap();
            let loss = ops::cross_entropy(&z, &y, eps).unwrap();
            let (want, grad) = cpu::cross_entropy(&f64s(&zd), &labels, k, eps as f64);
            assert_close(
                "cross entropy",
                &loss.to_vec().unwrap(),
                &[want],
                1e-5,
                1e-5,
            );
            loss.backward().unwrap();
            assert_close(
                "cross entropy grad",
                &z.grad().unwrap().to_vec().unwrap(),
                &grad,
                1e-6,
                1e-4,
            );
        }
        let labels = Tensor::from_u32(&gpu, &[2, 0, 1], &[3]).unwrap();
        gradcheck_on(
            &gpu,
            "cross_entropy",
            &[(data(3 * 4, 610), vec![3, 4])],
            |t| ops::cross_entropy(&t[0], &labels, 0.1),
            6,
            1e-2,
            1e-3,
        );
    }
}

#[test]
fn reshape_passes_gradients_through() {
    gradcheck(
        "reshape",
        &[(data(12, 700), vec![3, 4])],
        |t| t[0].reshape(&[2, 6])?.relu(),
        4,
        1e-3,
        1e-3,
    );
}
