//! Fused optimizer kernels against the f64 reference update rules.

use repopt_tensor::Tensor;
use repopt_tensor::optim::{
    AdamW, AdamWConfig, GradMult, Optimizer, ParamSpec, Sgd, SgdConfig, UpdateKernels,
    clip_grad_norm,
};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{assert_close, data, f64s, gpu, launches_on_this_thread};

/// Runs `steps` updates with fresh gradients each step and compares with the reference.
fn check_sgd(len: usize, mult: bool, config: SgdConfig, kernels: UpdateKernels) {
    let gpu = gpu();
    let w0 = data(len, 1);
    let m = data(len, 2).iter().map(|v| 1.0 + v).collect::<Vec<_>>();
    let w = Tensor::parameter(&gpu, &w0, &[len]).unwrap();
    let spec = ParamSpec {
        tensor: w.clone(),
        weight_decay: 0.05,
        grad_mult: mult.then(|| GradMult::Dense(Tensor::from_slice(&gpu, &m, &[len]).unwrap())),
    };
    let mut opt = Sgd::new(vec![spec], config).unwrap().with_kernels(kernels);
    let mut rw = f64s(&w0);
    let mut buf = None;
    for step in 0..4 {
        let g = data(len, 10 + step);
        w.set_grad(Some(Tensor::from_slice(&gpu, &g, &[len]).unwrap()))
            .unwrap();
        let lr = 0.1 / (step + 1) as f32;
        opt.step(lr).unwrap();
        cpu::sgd_step(
            &mut rw,
            &f64s(&g),
            mult.then_some(f64s(&m)).as_deref(),
            &mut buf,
            lr as f64,
            config.momentum as f64,
            config.dampening as f64,
            0.05,
            config.nesterov,
        );
        assert_close(
            &format!("sgd {len} mult {mult} {config:?} {kernels:?} step {step}"),
            &w.to_vec().unwrap(),
            &rw,
            1e-6,
            1e-5,
        );
    }
    assert_eq!(opt.steps(), 4);
}

#[test]
fn fused_sgd_matches_reference() {
    for len in [1, 3, 1001, 4096] {
        for mult in [false, true] {
            check_sgd(len, mult, SgdConfig::default(), UpdateKernels::Fused);
        }
    }
    let plain = SgdConfig {
        momentum: 0.8,
        dampening: 0.1,
        nesterov: false,
    };
    check_sgd(77, true, plain, UpdateKernels::Fused);
}

#[test]
fn unfused_sgd_matches_reference() {
    for len in [5, 1001] {
        check_sgd(len, true, SgdConfig::default(), UpdateKernels::Unfused);
    }
    check_sgd(
        33,
        false,
        SgdConfig {
            momentum: 0.5,
            dampening: 0.2,
            nesterov: false,
        },
        UpdateKernels::Unfused,
    );
}

#[test]
fn adamw_matches_reference() {
    let gpu = gpu();
    for (len, mult) in [(1usize, false), (1003, true), (64, true)] {
        let w0 = data(len, 3);
        let m = data(len, 4).iter().map(|v| 1.0 + v).collect::<Vec<_>>();
        let w = Tensor::parameter(&gpu, &w0, &[len]).unwrap();
        let spec = ParamSpec {
            tensor: w.clone(),
            weight_decay: 0.05,
            grad_mult: mult.then(|| GradMult::Dense(Tensor::from_slice(&gpu, &m, &[len]).unwrap())),
        };
        let c = AdamWConfig::default();
        let mut opt = AdamW::new(vec![spec], c).unwrap();
        let (mut rw, mut rm, mut rv) = (f64s(&w0), vec![0.0; len], vec![0.0; len]);
        for t in 1..=4 {
            let g = data(len, 20 + t as u64);
            w.set_grad(Some(Tensor::from_slice(&gpu, &g, &[len]).unwrap()))
                .unwrap();
            opt.step(1e-2).unwrap();
            cpu::adamw_step(
                &mut rw,
                &f64s(&g),
                mult.then_some(f64s(&m)).as_deref(),
                &mut rm,
                &mut rv,
                t,
                1e-2,
                0.9,
                0.999,
                1e-8,
                0.05,
            );
            assert_close(
                &format!("adamw {len} step {t}"),
                &w.to_vec().unwrap(),
                &rw,
                1e-6,
                1e-5,
            );
        }
    }
}

#[test]
fn parameters_without_gradients_are_left_alone() {
    let gpu = gpu();
    let a = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let b = Tensor::parameter(&gpu, &[3.0], &[1]).unwrap();
    let mut opt = Sgd::new(
        vec![
            ParamSpec::new(a.clone(), 0.1),
            ParamSpec::new(b.clone(), 0.1),
        ],
        SgdConfig::default(),
    )
    .unwrap();
    a.set_grad(Some(Tensor::from_slice(&gpu, &[1.0, 1.0], &[2]).unwrap()))
        .unwrap();
    opt.step(0.1).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![3.0]);
    assert_eq!(
        opt.state().len(),
        1,
        "no momentum buffer for a parameter never updated"
    );
}

#[test]
fn optimizer_state_round_trips() {
    let gpu = gpu();
    let make = || Tensor::parameter(&gpu, &[0.5, -0.5, 1.0], &[3]).unwrap();
    let (w1, w2) = (make(), make());
    let mut a = Sgd::new(vec![ParamSpec::new(w1.clone(), 0.01)], SgdConfig::default()).unwrap();
    let g = Tensor::from_slice(&gpu, &[0.1, 0.2, 0.3], &[3]).unwrap();
    w1.set_grad(Some(g.clone())).unwrap();
    a.step(0.1).unwrap();
    let saved: Vec<(String, Vec<f32>)> = a
        .state()
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec().unwrap()))
        .collect();
    let mut b = Sgd::new(vec![ParamSpec::new(w2.clone(), 0.01)], SgdConfig::default()).unwrap();
    w2.copy_from(&w1).unwrap();
    b.load_state(&saved, a.steps()).unwrap();
    for (opt, w) in [(&mut a, &w1), (&mut b, &w2)] {
        w.set_grad(Some(g.clone())).unwrap();
        opt.step(0.1).unwrap();
    }
    assert_eq!(w1.to_vec().unwrap(), w2.to_vec().unwrap());
    assert!(b.load_state(&[("bogus".into(), vec![0.0])], 0).is_err());
}

#[test]
fn grad_mult_shape_must_match_the_parameter() {
    let gpu = gpu();
    let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let m = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3]).unwrap();
    let err = Sgd::new(
        vec![ParamSpec {
            tensor: w,
            weight_decay: 0.0,
            grad_mult: Some(GradMult::Dense(m)),
        }],
        SgdConfig::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("grad mult"), "{err}");
}

#[test]
fn clip_grad_norm_scales_to_the_limit_only_when_above_it() {
    let gpu = gpu();
    let a = Tensor::parameter(&gpu, &[0.0, 0.0], &[2]).unwrap();
    let b = Tensor::parameter(&gpu, &[0.0], &[1]).unwrap();
    let specs = vec![
        ParamSpec::new(a.clone(), 0.0),
        ParamSpec::new(b.clone(), 0.0),
    ];
    a.set_grad(Some(Tensor::from_slice(&gpu, &[3.0, 0.0], &[2]).unwrap()))
        .unwrap();
    b.set_grad(Some(Tensor::from_slice(&gpu, &[4.0], &[1]).unwrap()))
        .unwrap();
    let norm = clip_grad_norm(&specs, 1.0)
        .unwrap()
        .unwrap()
        .item()
        .unwrap();
    assert!((norm - 5.0).abs() < 1e-5);
    assert_close(
        "clipped a",
        &a.grad().unwrap().to_vec().unwrap(),
        &[0.6, 0.0],
        1e-5,
        0.0,
    );
    assert_close(
        "clipped b",
        &b.grad().unwrap().to_vec().unwrap(),
        &[0.8],
        1e-5,
        0.0,
    );
    clip_grad_norm(&specs, 10.0).unwrap();
    assert_close(
        "unclipped a",
        &a.grad().unwrap().to_vec().unwrap(),
        &[0.6, 0.0],
        1e-5,
        0.0,
    );
}

/// The RepOptimizer's Grad Mult computed from per-channel factors equals the formula, and
/// updates with it equal updates with the same multiplier stored densely.
#[test]
fn structured_grad_mults_match_dense_ones() {
    let gpu = gpu();
    // Rows of 36, 27 and 153 elements, and of 9 and 18, where four consecutive elements can
    // lie in two output channels.
    for (co, ci, identity) in [
        (4usize, 4usize, true),
        (5, 3, false),
        (17, 17, true),
        (7, 1, true),
        (3, 2, false),
    ] {
        let shape = [co, ci, 3, 3];
        let len = co * ci * 9;
        let f: Vec<f32> = data(2 * co, 70).iter().map(|v| 1.0 + v).collect();
        let factors = Tensor::from_slice(&gpu, &f, &[2 * co]).unwrap();
        let structured = GradMult::Conv3x3 { factors, identity };
        let dense = structured.to_dense(&shape).unwrap().to_vec().unwrap();
        for c in 0..co {
            for d in 0..ci {
                for t in 0..9 {
                    let mut want = f[c];
                    if t == 4 {
                        want += f[co + c];
                        if identity && c == d {
                            want += 1.0;
                        }
                    }
                    assert_eq!(dense[(c * ci + d) * 9 + t], want, "M[{c},{d},{t}]");
                }
            }
        }
        let dense_mult = GradMult::Dense(Tensor::from_slice(&gpu, &dense, &shape).unwrap());
        for adam in [false, true] {
            let run = |mult: GradMult| -> Vec<f32> {
                let w = Tensor::parameter(&gpu, &data(len, 71), &shape).unwrap();
                let spec = ParamSpec {
                    tensor: w.clone(),
                    weight_decay: 0.01,
                    grad_mult: Some(mult),
                };
                let mut opt: Box<dyn Optimizer> = if adam {
                    Box::new(AdamW::new(vec![spec], AdamWConfig::default()).unwrap())
                } else {
                    Box::new(Sgd::new(vec![spec], SgdConfig::default()).unwrap())
                };
                for step in 0..3 {
                    w.set_grad(Some(
                        Tensor::from_slice(&gpu, &data(len, 80 + step), &shape).unwrap(),
                    ))
                    .unwrap();
                    opt.step(0.05).unwrap();
                }
                w.to_vec().unwrap()
            };
            let a = run(structured.clone());
            let b = run(dense_mult.clone());
            assert_close(
                &format!("structured vs dense (adam {adam}) {shape:?}"),
                &a,
                &f64s(&b),
                1e-6,
                1e-6,
            );
        }
    }
}

/// Steps `specs` three times with batched kernels and with one kernel per tensor (fresh
/// gradients each step; tensor 3 gets none before step 1, so its first step comes later)
/// and checks identical bits throughout and `dispatches` launches in the last step.
fn batched_matches_one_kernel_each(build: &dyn Fn() -> Vec<ParamSpec>, dispatches: u64) {
    let gpu = gpu();
    let (a, b) = (build(), build());
    let mut batched = Sgd::new(a.clone(), SgdConfig::default()).unwrap();
    let mut single = Sgd::new(b.clone(), SgdConfig::default())
        .unwrap()
        .with_kernels(UpdateKernels::FusedPerTensor);
    for step in 0..3u64 {
        for (i, (pa, pb)) in a.iter().zip(&b).enumerate() {
            let shape = pa.tensor.shape().to_vec();
            let len = pa.tensor.numel();
            let g = (i != 3 || step > 0).then(|| {
                Tensor::from_slice(&gpu, &data(len, 1000 * step + i as u64), &shape).unwrap()
            });
            pa.tensor.set_grad(g.clone()).unwrap();
            pb.tensor.set_grad(g).unwrap();
        }
        let before = launches_on_this_thread();
        batched.step(0.05).unwrap();
        let launched = launches_on_this_thread() - before;
        single.step(0.05).unwrap();
        if step == 2 {
            assert_eq!(launched, dispatches);
        }
        for (i, (pa, pb)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                pa.tensor.to_vec().unwrap(),
                pb.tensor.to_vec().unwrap(),
                "tensor {i} after step {step}"
            );
        }
    }
    let state =
        |o: &Sgd| -> Vec<Vec<f32>> { o.state().iter().map(|(_, t)| t.to_vec().unwrap()).collect() };
    assert_eq!(state(&batched), state(&single));
}

#[test]
fn tensors_without_grad_mults_eight_to_a_dispatch_match_one_kernel_each() {
    let gpu = gpu();
    // 19 small tensors of awkward sizes and decays, a large one (its workgroups far
    // outnumber the others'), and one with a dense Grad Mult.
    let mut shapes: Vec<usize> = (0..19).map(|i| 1 + 37 * i % 300).collect();
    shapes.push(70_001);
    shapes.push(50);
    let build = || -> Vec<ParamSpec> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let w = Tensor::parameter(&gpu, &data(len, 100 + i as u64), &[len]).unwrap();
                let grad_mult = (i == 20).then(|| {
                    GradMult::Dense(Tensor::from_slice(&gpu, &data(len, 7), &[len]).unwrap())
                });
                ParamSpec {
                    tensor: w,
                    weight_decay: 0.01 * (i % 3) as f32,
                    grad_mult,
                }
            })
            .collect()
    };
    // 20 tensors without a Grad Mult: 8 + 8 + 4; the dense Grad Mult on its own.
    batched_matches_one_kernel_each(&build, 4);
}

#[test]
fn structured_grad_mults_seven_to_a_dispatch_match_one_kernel_each() {
    let gpu = gpu();
    // 3x3 kernels of awkward shapes (3 input channels: rows of 27; 1 input channel: rows of
    // 9, so a vec4 of elements can span two output channels, and sizes not a multiple of 4;
    // 1 output channel; rows not a multiple of 256 and one channel spanning several
    // workgroups), with and without the identity branch, mixed with tensors without a Grad
    // Mult.
    let shapes: Vec<Vec<usize>> = (0..16)
        .map(|i| vec![1 + 7 * i % 20, [3, 5, 16, 33][i % 4], 3, 3])
        .chain([vec![48, 48, 3, 3], vec![2, 300, 3, 3], vec![16], vec![5, 2]])
        .chain([vec![7, 1, 3, 3], vec![1, 1, 3, 3], vec![3, 2, 3, 3]])
        .collect();
    let build = || -> Vec<ParamSpec> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let len: usize = shape.iter().product();
                let w = Tensor::parameter(&gpu, &data(len, 200 + i as u64), shape).unwrap();
                let grad_mult = (shape.len() == 4).then(|| {
                    let f: Vec<f32> = data(2 * shape[0], 300 + i as u64)
                        .iter()
                        .map(|v| 1.0 + v)
                        .collect();
                    GradMult::Conv3x3 {
                        factors: Tensor::from_slice(&gpu, &f, &[2 * shape[0]]).unwrap(),
                        identity: i % 3 != 1,
                    }
                });
                ParamSpec {
                    tensor: w,
                    weight_decay: 1e-4 * (i % 4) as f32,
                    grad_mult,
                }
            })
            .collect()
    };
    // 21 structured: 7 + 7 + 7; the two without a Grad Mult in one.
    batched_matches_one_kernel_each(&build, 4);
}
