//! The block sums that run in one pass: RepVGG's `max(bn_0(x_0) + bn_1(x_1) [+ bn_2(x_2)], 0)`
//! and the CSLA / Hyper-Search block's `x_0 s_0 + x_1 s_1 [+ x_2 s_2]` (channel scales).
//! Each against the f64 CPU reference (outputs, running statistics, every gradient) on
//! awkward shapes in both kernel families, by finite differences, its dispatch count, and its
//! refusals; the RepVGG sum in evaluation mode too.

use repopt_tensor::ops::{self, BatchNormStats, BnBranch};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{assert_close, data, f64s, gpu, gradcheck, kernel_families};
use repopt_tensor::{Gpu, Tensor};

/// Batch 1, one pixel per plane, planes whose length is and is not a multiple of 4 (the
/// four-at-a-time kernel and the scalar one), a vec4 walk crossing planes, and channels of
/// several 1024-unit pieces ending in a partial one.
const SHAPES: &[[usize; 4]] = &[
    [1, 3, 5, 7],
    [3, 5, 1, 1],
    [4, 17, 3, 3],
    [70, 2, 2, 2],
    [1, 7, 4, 4],
    [3, 2, 19, 21],
    [5, 3, 36, 28],
];

/// One branch's operands and data.
struct Branch {
    xd: Vec<f32>,
    gd: Vec<f32>,
    bd: Vec<f32>,
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    stats: BatchNormStats,
}

impl Branch {
    fn new(gpu: &Gpu, s: [usize; 4], seed: u64) -> Branch {
        let c = s[1];
        // Offsets per branch so that the sum's sign varies and the mask matters.
        let xd: Vec<f32> = data(s.iter().product(), seed)
            .iter()
            .map(|v| 0.5 + 3.0 * v)
            .collect();
        let gd: Vec<f32> = data(c, seed + 1).iter().map(|v| 0.8 + v).collect();
        let bd = data(c, seed + 2);
        Branch {
            x: Tensor::parameter(gpu, &xd, &s).unwrap(),
            gamma: Tensor::parameter(gpu, &gd, &[c]).unwrap(),
            beta: Tensor::parameter(gpu, &bd, &[c]).unwrap(),
            stats: BatchNormStats::new(gpu, c).unwrap(),
            xd,
            gd,
            bd,
        }
    }

    fn view(&self) -> BnBranch<'_> {
        BnBranch {
            x: &self.x,
            gamma: &self.gamma,
            beta: &self.beta,
            stats: &self.stats,
        }
    }
}

#[test]
fn branch_sum_matches_reference_with_its_gradients_and_running_stats() {
    for (family, gpu) in kernel_families() {
        for (i, &s) in SHAPES.iter().enumerate() {
            for count in [2, 3] {
                let [n, c, h, w] = s;
                let hw = h * w;
                let branches: Vec<Branch> = (0..count)
                    .map(|b| Branch::new(&gpu, s, 300 + 10 * i as u64 + 3 * b as u64))
                    .collect();
                let views: Vec<BnBranch> = branches.iter().map(Branch::view).collect();
                let y = ops::batch_norm2d_sum_relu(&views, true).unwrap();
                let dyd = data(y.numel(), 400 + i as u64);
                let dy = Tensor::from_slice(&gpu, &dyd, &s).unwrap();
                y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();

                let zeros = vec![0.0; c];
                let ones = vec![1.0; c];
                let outs: Vec<cpu::BatchNormOutput> = branches
                    .iter()
                    .map(|b| {
                        let (x, g, be) = (f64s(&b.xd), f64s(&b.gd), f64s(&b.bd));
                        cpu::batch_norm_train(
                            &x, n, c, hw, &g, &be, &zeros, &ones, 0.1, 1e-5, false,
                        )
                    })
                    .collect();
                let pre: Vec<f64> = (0..y.numel())
                    .map(|j| outs.iter().map(|o| o.y[j]).sum())
                    .collect();
                let want: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
                let what = format!("{family} {s:?} {count} branches");
                assert_close(
                    &format!("{what} y"),
                    &y.to_vec().unwrap(),
                    &want,
                    1e-5,
                    1e-5,
                );
                let masked: Vec<f64> = dyd
                    .iter()
                    .zip(&pre)
                    .map(|(&g, &p)| if p > 0.0 { g as f64 } else { 0.0 })
                    .collect();
                for (k, (b, o)) in branches.iter().zip(&outs).enumerate() {
                    let (x, g, be) = (f64s(&b.xd), f64s(&b.gd), f64s(&b.bd));
                    let (dx, dg, db) =
                        cpu::batch_norm_train_backward(&x, n, c, hw, &g, &be, 1e-5, false, &masked);
                    let got = |t: &Tensor| t.grad().unwrap().to_vec().unwrap();
                    assert_close(&format!("{what} dx{k}"), &got(&b.x), &dx, 2e-4, 2e-3);
                    assert_close(
                        &format!("{what} dgamma{k}"),
                        &got(&b.gamma),
                        &dg,
                        2e-4,
                        2e-4,
                    );
                    assert_close(&format!("{what} dbeta{k}"), &got(&b.beta), &db, 2e-4, 2e-4);
                    let stats = &b.stats;
                    let (rm, rv) = (&stats.running_mean, &stats.running_var);
                    let rm = rm.to_vec().unwrap();
                    let rv = rv.to_vec().unwrap();
                    assert_close(&format!("{what} mean{k}"), &rm, &o.running_mean, 1e-5, 1e-5);
                    assert_close(&format!("{what} var{k}"), &rv, &o.running_var, 1e-5, 1e-4);
                }
            }
        }
    }
}

#[test]
fn branch_sum_in_evaluation_uses_the_running_stats_and_leaves_them_alone() {
    for (family, gpu) in kernel_families() {
        let s = [2, 5, 3, 4];
        let [n, c, h, w] = s;
        let branches: Vec<Branch> = (0..3).map(|b| Branch::new(&gpu, s, 500 + b)).collect();
        let mut running = Vec::new();
        for (k, b) in branches.iter().enumerate() {
            let rm = data(c, 510 + k as u64);
            let rv: Vec<f32> = data(c, 520 + k as u64).iter().map(|v| 1.2 + v).collect();
            b.stats.running_mean.write(&rm).unwrap();
            b.stats.running_var.write(&rv).unwrap();
            running.push((rm, rv));
        }
        let views: Vec<BnBranch> = branches.iter().map(Branch::view).collect();
        let y = ops::batch_norm2d_sum_relu(&views, false).unwrap();
        let mut pre = vec![0.0; y.numel()];
        for (b, (rm, rv)) in branches.iter().zip(&running) {
            let (x, g, be) = (f64s(&b.xd), f64s(&b.gd), f64s(&b.bd));
            let one = cpu::normalize(&x, n, c, h * w, &f64s(rm), &f64s(rv), &g, &be, 1e-5, false);
            pre.iter_mut().zip(one).for_each(|(p, v)| *p += v);
        }
        let want: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
        assert_close(
            &format!("{family} eval"),
            &y.to_vec().unwrap(),
            &want,
            1e-5,
            1e-5,
        );
        for (b, (rm, rv)) in branches.iter().zip(&running) {
            assert_eq!(&b.stats.running_mean.to_vec().unwrap(), rm);
            assert_eq!(&b.stats.running_var.to_vec().unwrap(), rv);
        }
    }
}

#[test]
fn branch_sum_gradients_match_finite_differences() {
    let gpu = gpu();
    // Planes of 6 (scalar kernel) and of 4 (vec4 kernel); two and three branches.
    for (s, count) in [([2usize, 3, 2, 3], 3), ([2, 2, 2, 2], 2), ([3, 2, 2, 2], 3)] {
        let c = s[1];
        let stats: Vec<BatchNormStats> = (0..count)
            .map(|_| BatchNormStats::new(&gpu, c).unwrap())
            .collect();
        let mut inputs = Vec::new();
        for k in 0..count as u64 {
            inputs.push((data(s.iter().product(), 600 + k), s.to_vec()));
            let g: Vec<f32> = data(c, 610 + k).iter().map(|v| 1.0 + 0.5 * v).collect();
            inputs.push((g, vec![c]));
            inputs.push((data(c, 620 + k), vec![c]));
        }
        gradcheck(
            &format!("batch_norm2d_sum_relu {s:?} {count} branches"),
            &inputs,
            |t| {
                let views: Vec<BnBranch> = (0..count)
                    .map(|k| BnBranch {
                        x: &t[3 * k],
                        gamma: &t[3 * k + 1],
                        beta: &t[3 * k + 2],
                        stats: &stats[k],
                    })
                    .collect();
                ops::batch_norm2d_sum_relu(&views, true)
            },
            6,
            1e-2,
            1e-2,
        );
    }
}

#[test]
fn each_sum_is_one_pass() {
    // A device of its own: the other tests' dispatches would count on the shared one.
    let gpu = Gpu::from_env().unwrap();
    let s = [4, 6, 5, 5];
    let branches: Vec<Branch> = (0..3).map(|b| Branch::new(&gpu, s, 700 + b)).collect();
    let views: Vec<BnBranch> = branches.iter().map(Branch::view).collect();
    let scales: Vec<Tensor> = (0..3)
        .map(|k| Tensor::from_slice(&gpu, &data(6, 710 + k), &[6]).unwrap())
        .collect();
    for count in [2, 3] {
        let before = gpu.counters().dispatches;
        let y = ops::batch_norm2d_sum_relu(&views[..count], true).unwrap();
        // One statistics dispatch per branch and one pass; apart, each branch's apply, the
        // sums and the ReLU are 2 * count more.
        assert_eq!(gpu.counters().dispatches - before, count as u64 + 1);
        drop(y);
        let pairs: Vec<(&Tensor, &Tensor)> = branches
            .iter()
            .map(|b| &b.x)
            .zip(&scales)
            .take(count)
            .collect();
        let before = gpu.counters().dispatches;
        let y = Tensor::scaled_sum(&pairs).unwrap();
        assert_eq!(gpu.counters().dispatches - before, 1);
        drop(y);
    }
}

#[test]
fn branch_sum_refuses_bad_branches_by_name() {
    let gpu = gpu();
    let a = Branch::new(&gpu, [2, 3, 4, 4], 800);
    let b = Branch::new(&gpu, [2, 3, 4, 4], 801);
    let odd = Branch::new(&gpu, [2, 3, 4, 5], 802);
    let err = |v: &[BnBranch]| {
        ops::batch_norm2d_sum_relu(v, true)
            .expect_err("refused")
            .to_string()
    };
    let msg = err(&[a.view()]);
    assert!(msg.contains("two or three branches, got 1"), "{msg}");
    let msg = err(&[a.view(), b.view(), a.view(), b.view()]);
    assert!(msg.contains("got 4"), "{msg}");
    let msg = err(&[a.view(), odd.view()]);
    assert!(msg.contains("branch 1 has shape [2, 3, 4, 5]"), "{msg}");
    let short = Tensor::zeros(&gpu, &[2]).unwrap();
    let bad = BnBranch {
        gamma: &short,
        ..b.view()
    };
    let msg = err(&[a.view(), bad]);
    assert!(msg.contains("weight must have shape [3]"), "{msg}");
}

#[test]
fn scaled_sum_matches_reference_with_its_gradients() {
    for (family, gpu) in kernel_families() {
        for (i, &s) in SHAPES.iter().enumerate() {
            for count in [2, 3] {
                let c = s[1];
                let hw = s[2] * s[3];
                let len: usize = s.iter().product();
                let xd: Vec<Vec<f32>> = (0..count)
                    .map(|k| data(len, 900 + 7 * i as u64 + k))
                    .collect();
                let sd: Vec<Vec<f32>> = (0..count)
                    .map(|k| data(c, 950 + 7 * i as u64 + k))
                    .collect();
                let xs: Vec<Tensor> = xd
                    .iter()
                    .map(|d| Tensor::parameter(&gpu, d, &s).unwrap())
                    .collect();
                let ss: Vec<Tensor> = sd
                    .iter()
                    .map(|d| Tensor::parameter(&gpu, d, &[c]).unwrap())
                    .collect();
                let branches: Vec<(&Tensor, &Tensor)> = xs.iter().zip(&ss).collect();
                let y = Tensor::scaled_sum(&branches).unwrap();
                let dyd = data(len, 990 + i as u64);
                let dy = Tensor::from_slice(&gpu, &dyd, &s).unwrap();
                y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
                let ch = |j: usize| (j / hw) % c;
                let want: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..count as usize)
                            .map(|k| xd[k][j] as f64 * sd[k][ch(j)] as f64)
                            .sum()
                    })
                    .collect();
                let what = format!("{family} {s:?} {count} branches");
                assert_close(
                    &format!("{what} y"),
                    &y.to_vec().unwrap(),
                    &want,
                    1e-5,
                    1e-5,
                );
                for k in 0..count as usize {
                    let dx: Vec<f64> = (0..len)
                        .map(|j| dyd[j] as f64 * sd[k][ch(j)] as f64)
                        .collect();
                    let mut ds = vec![0.0; c];
                    for j in 0..len {
                        ds[ch(j)] += dyd[j] as f64 * xd[k][j] as f64;
                    }
                    let got = |t: &Tensor| t.grad().unwrap().to_vec().unwrap();
                    assert_close(&format!("{what} dx{k}"), &got(&xs[k]), &dx, 1e-5, 1e-5);
                    assert_close(&format!("{what} ds{k}"), &got(&ss[k]), &ds, 1e-4, 1e-4);
                }
            }
        }
    }
}

#[test]
fn scaled_sum_gradients_match_finite_differences() {
    for (s, count) in [([2usize, 3, 2, 3], 3), ([2, 2, 2, 2], 2), ([1, 2, 2, 2], 3)] {
        let c = s[1];
        let mut inputs = Vec::new();
        for k in 0..count as u64 {
            inputs.push((data(s.iter().product(), 1000 + k), s.to_vec()));
            inputs.push((data(c, 1010 + k), vec![c]));
        }
        gradcheck(
            &format!("scaled_sum {s:?} {count} branches"),
            &inputs,
            |t| {
                let branches: Vec<(&Tensor, &Tensor)> =
                    (0..count).map(|k| (&t[2 * k], &t[2 * k + 1])).collect();
                Tensor::scaled_sum(&branches)
            },
            6,
            1e-2,
            1e-2,
        );
    }
}

#[test]
fn scaled_sum_refuses_bad_branches_by_name() {
    let gpu = gpu();
    let x = Tensor::from_slice(&gpu, &data(2 * 3 * 16, 1100), &[2, 3, 4, 4]).unwrap();
    let odd = Tensor::from_slice(&gpu, &data(2 * 3 * 20, 1101), &[2, 3, 4, 5]).unwrap();
    let s = Tensor::full(&gpu, &[3], 0.5).unwrap();
    let short = Tensor::full(&gpu, &[2], 0.5).unwrap();
    let err = |v: &[(&Tensor, &Tensor)]| Tensor::scaled_sum(v).expect_err("refused").to_string();
    let msg = err(&[(&x, &s)]);
    assert!(msg.contains("two or three branches, got 1"), "{msg}");
    let msg = err(&[(&x, &s), (&odd, &s)]);
    assert!(msg.contains("branch 1 has shape [2, 3, 4, 5]"), "{msg}");
    let msg = err(&[(&x, &s), (&x, &short)]);
    assert!(msg.contains("scale must be [3]"), "{msg}");
}
