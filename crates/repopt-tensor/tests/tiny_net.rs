//! A tiny conv net (2 x conv-BN-ReLU, global pool, linear) trained for 50 SGD steps on fixed
//! synthetic data follows the f64 CPU reference's loss trajectory.

use repopt_tensor::Tensor;
use repopt_tensor::ops::{self, BatchNormStats, Conv2dConfig};
use repopt_tensor::optim::{Optimizer, ParamSpec, Sgd, SgdConfig};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{data, f64s, gpu};

const N: usize = 8;
const C0: usize = 3;
const C1: usize = 8;
const C2: usize = 12;
const HW: usize = 8;
const CLASSES: usize = 4;
const STEPS: usize = 50;
const LR: f64 = 0.05;
const WD: f64 = 1e-3;
const SMOOTH: f64 = 0.1;

struct Init {
    w1: Vec<f32>,
    w2: Vec<f32>,
    fc_w: Vec<f32>,
    fc_b: Vec<f32>,
}

fn init() -> Init {
    let scale = |v: Vec<f32>, s: f32| v.into_iter().map(|x| x * s).collect();
    Init {
        w1: scale(data(C1 * C0 * 9, 1), 0.5),
        w2: scale(data(C2 * C1 * 9, 2), 0.3),
        fc_w: scale(data(CLASSES * C2, 3), 0.5),
        fc_b: vec![0.0; CLASSES],
    }
}

fn batch() -> (Vec<f32>, Vec<u32>) {
    let x = data(N * C0 * HW * HW, 4);
    let labels = (0..N).map(|i| (i % CLASSES) as u32).collect();
    (x, labels)
}

fn gpu_losses(init: &Init) -> Vec<f64> {
    let gpu = gpu();
    let (xd, labels) = batch();
    let x = Tensor::from_slice(&gpu, &xd, &[N, C0, HW, HW]).unwrap();
    let y = Tensor::from_u32(&gpu, &labels, &[N]).unwrap();
    let p = |d: &[f32], s: &[usize]| Tensor::parameter(&gpu, d, s).unwrap();
    let w1 = p(&init.w1, &[C1, C0, 3, 3]);
    let w2 = p(&init.w2, &[C2, C1, 3, 3]);
    let (g1, b1) = (p(&[1.0; C1], &[C1]), p(&[0.0; C1], &[C1]));
    let (g2, b2) = (p(&[1.0; C2], &[C2]), p(&[0.0; C2], &[C2]));
    let fc_w = p(&init.fc_w, &[CLASSES, C2]);
    let fc_b = p(&init.fc_b, &[CLASSES]);
    let s1 = BatchNormStats::new(&gpu, C1).unwrap();
    let s2 = BatchNormStats::new(&gpu, C2).unwrap();
    let wd = WD as f32;
    let specs = vec![
        ParamSpec::new(w1.clone(), wd),
        ParamSpec::new(w2.clone(), wd),
        ParamSpec::new(g1.clone(), 0.0),
        ParamSpec::new(b1.clone(), 0.0),
        ParamSpec::new(g2.clone(), 0.0),
        ParamSpec::new(b2.clone(), 0.0),
        ParamSpec::new(fc_w.clone(), wd),
        ParamSpec::new(fc_b.clone(), 0.0),
    ];
    let mut opt = Sgd::new(specs, SgdConfig::default()).unwrap();
    let mut losses = Vec::new();
    for _ in 0..STEPS {
        let h = ops::conv2d(&x, &w1, Conv2dConfig::same(3, 1)).unwrap();
        let h = ops::batch_norm2d(&h, &g1, &b1, &s1, true, true).unwrap();
        let h = ops::conv2d(&h, &w2, Conv2dConfig::same(3, 2)).unwrap();
        let h = ops::batch_norm2d(&h, &g2, &b2, &s2, true, true).unwrap();
        let f = ops::global_avg_pool(&h).unwrap();
        let logits = ops::linear(&f, &fc_w, &fc_b).unwrap();
        let loss = ops::cross_entropy(&logits, &y, SMOOTH as f32).unwrap();
        loss.backward().unwrap();
        opt.step(LR as f32).unwrap();
        opt.zero_grad();
        losses.push(loss.item().unwrap() as f64);
    }
    losses
}

fn cpu_losses(init: &Init) -> Vec<f64> {
    let (xd, labels) = batch();
    let x = f64s(&xd);
    let mut params = [
        f64s(&init.w1),
        f64s(&init.w2),
        vec![1.0; C1],
        vec![0.0; C1],
        vec![1.0; C2],
        vec![0.0; C2],
        f64s(&init.fc_w),
        f64s(&init.fc_b),
    ];
    let decay = [WD, WD, 0.0, 0.0, 0.0, 0.0, WD, 0.0];
    let mut bufs: Vec<Option<Vec<f64>>> = vec![None; params.len()];
    let mut losses = Vec::new();
    let (s1, s2) = ([C1, C0, 3, 3], [C2, C1, 3, 3]);
    for _ in 0..STEPS {
        let [w1, w2, g1, b1, g2, b2, fw, fb] = &params;
        let (a1, sh1) = cpu::conv2d(&x, [N, C0, HW, HW], w1, s1, 1, 1);
        let hw1 = sh1[2] * sh1[3];
        let z = vec![0.0; C1];
        let h1 = cpu::batch_norm_train(&a1, N, C1, hw1, g1, b1, &z, &z, 0.1, 1e-5, true).y;
        let (a2, sh2) = cpu::conv2d(&h1, sh1, w2, s2, 2, 1);
        let hw2 = sh2[2] * sh2[3];
        let z = vec![0.0; C2];
        let h2 = cpu::batch_norm_train(&a2, N, C2, hw2, g2, b2, &z, &z, 0.1, 1e-5, true).y;
        let f = cpu::global_avg_pool(&h2, N * C2, hw2);
        let logits = cpu::linear(&f, N, C2, fw, CLASSES, fb);
        let (loss, dlogits) = cpu::cross_entropy(&logits, &labels, CLASSES, SMOOTH);
        losses.push(loss);
        // Backward.
        let dfw = cpu::matmul(&transpose(&dlogits, N, CLASSES), &f, CLASSES, N, C2);
        let dfb: Vec<f64> = (0..CLASSES)
            .map(|j| (0..N).map(|i| dlogits[i * CLASSES + j]).sum())
            .collect();
        let df = cpu::matmul(&dlogits, fw, N, CLASSES, C2);
        let dh2: Vec<f64> = (0..N * C2 * hw2)
            .map(|i| df[i / hw2] / hw2 as f64)
            .collect();
        let (da2, dg2, db2) =
            cpu::batch_norm_train_backward(&a2, N, C2, hw2, g2, b2, 1e-5, true, &dh2);
        let (dh1, dw2) = cpu::conv2d_backward(&h1, sh1, w2, s2, &da2, 2, 1);
        let (da1, dg1, db1) =
            cpu::batch_norm_train_backward(&a1, N, C1, hw1, g1, b1, 1e-5, true, &dh1);
        let (_, dw1) = cpu::conv2d_backward(&x, [N, C0, HW, HW], w1, s1, &da1, 1, 1);
        let grads = [dw1, dw2, dg1, db1, dg2, db2, dfw, dfb];
        for i in 0..params.len() {
            cpu::sgd_step(
                &mut params[i],
                &grads[i],
                None,
                &mut bufs[i],
                LR,
                0.9,
                0.0,
                decay[i],
                true,
            );
        }
    }
    losses
}

fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols * rows)
        .map(|i| a[(i % rows) * cols + i / rows])
        .collect()
}

#[test]
fn tiny_conv_net_follows_the_reference_loss_trajectory() {
    let init = init();
    let want = cpu_losses(&init);
    let got = gpu_losses(&init);
    for (step, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-3 * (1.0 + w.abs()),
            "step {step}: GPU loss {g}, reference {w}\nGPU: {got:?}\nreference: {want:?}"
        );
    }
    assert!(
        want[STEPS - 1] < 0.5 * want[0],
        "the reference itself learns: {want:?}"
    );
}
