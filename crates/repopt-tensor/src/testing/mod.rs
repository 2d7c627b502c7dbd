//! Test support shared by every crate's tests (feature `testing`): the device and each kernel
//! family it can run, deterministic data, tolerant comparisons against the f64
//! [`reference`](mod@reference), finite-difference gradient checks, and, for the file
//! readers' tests, the [`alloc`] tracker that bounds what they allocate and the byte
//! [`damage`] they must survive.
//!
//! Kernel tests run one body per kernel family, as candle runs one body per device:
//!
//! ```
//! use repopt_tensor::testing::{assert_close, data, f64s, kernel_families};
//! use repopt_tensor::Tensor;
//! for (family, gpu) in kernel_families() {
//!     let x = data(37, 1);
//!     let y = Tensor::from_slice(&gpu, &x, &[37])?.relu()?.to_vec()?;
//!     let want: Vec<f64> = f64s(&x).iter().map(|v| v.max(0.0)).collect();
//!     assert_close(&format!("relu ({family})"), &y, &want, 0.0, 0.0);
//! }
//! # Ok::<(), repopt_tensor::Error>(())
//! ```
//!
//! These helpers panic with a message on failure, as test assertions do.

pub mod alloc;
pub mod damage;
pub mod reference;

use crate::{Gpu, Result, Tensor, no_grad};

/// The device every test runs on. Fails loudly (never skips) when no adapter exists.
pub fn gpu() -> Gpu {
    use std::sync::OnceLock;
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::from_env().unwrap_or_else(|e| {
            panic!("these tests need a GPU adapter (software Vulkan is enough): {e}")
        })
    })
    .clone()
}

/// Kernel launches this thread has recorded so far, on any device. Tests count what a piece
/// of code launches with this rather than with [`Gpu::dispatch_count`], which also counts
/// the launches of tests running on other threads on the same device.
///
/// ```no_run
/// use repopt_tensor::{Tensor, testing};
/// let gpu = testing::gpu();
/// let x = Tensor::from_slice(&gpu, &[1.0, -2.0], &[2]).unwrap();
/// let before = testing::launches_on_this_thread();
/// let _y = x.relu().unwrap();
/// assert_eq!(testing::launches_on_this_thread() - before, 1);
/// ```
pub fn launches_on_this_thread() -> u64 {
    crate::launch::launched_on_this_thread()
}

/// Every kernel family this machine can run: the default device (subgroup kernels where the
/// adapter has them) and, when that differs, one forced onto the plain kernels.
pub fn kernel_families() -> Vec<(&'static str, Gpu)> {
    use std::sync::OnceLock;
    static PLAIN: OnceLock<Gpu> = OnceLock::new();
    let default = gpu();
    if !default.uses_subgroup_kernels() {
        return vec![("plain", default)];
    }
    let plain = PLAIN
        .get_or_init(|| {
            Gpu::new(crate::GpuOptions {
                adapter: crate::AdapterSelector::from_env(),
                disable_subgroup_kernels: true,
                ..Default::default()
            })
            .expect("a second device on the same adapter")
        })
        .clone();
    vec![("subgroup", default), ("plain", plain)]
}

/// Every way this machine computes a convolution: each kernel family of
/// [`kernel_families`] with the direct kernels, and each again with Winograd forced (where
/// it applies, stride-1 3x3) and with matrix products forced, and once with the implicit
/// product forced, so one test body checks every variant.
pub fn conv_variants() -> Vec<(String, Gpu)> {
    use crate::tuning::{ConvAlgorithm, Tuning};
    use std::sync::OnceLock;
    static FORCED: OnceLock<Vec<(String, Gpu)>> = OnceLock::new();
    let forced = FORCED.get_or_init(|| {
        let mut out = Vec::new();
        for algorithm in [ConvAlgorithm::Winograd, ConvAlgorithm::Gemm] {
            for (family, gpu) in kernel_families() {
                let forced = Gpu::new(crate::GpuOptions {
                    adapter: crate::AdapterSelector::from_env(),
                    disable_subgroup_kernels: !gpu.uses_subgroup_kernels(),
                    tuning: Tuning::Force(algorithm),
                    ..Default::default()
                })
                .expect("another device on the same adapter");
                out.push((format!("{family}+{}", algorithm.name()), forced));
            }
        }
        // The implicit product uses no subgroup operations: one family covers it.
        let implicit = Gpu::new(crate::GpuOptions {
            adapter: crate::AdapterSelector::from_env(),
            tuning: Tuning::Force(ConvAlgorithm::Implicit),
            ..Default::default()
        })
        .expect("another device on the same adapter");
        out.push(("implicit".to_string(), implicit));
        out
    });
    kernel_families()
        .into_iter()
        .map(|(family, gpu)| (family.to_string(), gpu))
        .chain(forced.iter().cloned())
        .collect()
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), different per `seed`.
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Asserts `got` matches `want` element-wise within `atol + rtol * |want|`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let excess = err - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
        assert!(g.is_finite(), "{what}: element {i} is {g}");
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i} is {} but the reference says {} (atol {atol}, rtol {rtol})",
            got[i], want[i]
        );
    }
}

/// Finite-difference check of the gradients autograd computes for `f` at `inputs`.
///
/// The scalar checked is `sum(f(inputs) * r)` for a fixed random `r`, so every output
/// element contributes. For each input, `checks` elements are perturbed by `+-h` and the
/// central difference is compared to the gradient.
pub fn gradcheck(
    name: &str,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    checks: usize,
    h: f32,
    tol: f64,
) {
    gradcheck_on(&gpu(), name, inputs, f, checks, h, tol)
}

/// [`gradcheck`] on a given device.
pub fn gradcheck_on(
    gpu: &Gpu,
    name: &str,
    inputs: &[(Vec<f32>, Vec<usize>)],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    checks: usize,
    h: f32,
    tol: f64,
) {
    let gpu = gpu.clone();
    let params: Vec<Tensor> = inputs
        .iter()
        .map(|(d, s)| Tensor::parameter(&gpu, d, s).unwrap())
        .collect();
    let out = f(&params).unwrap();
    let r = Tensor::from_slice(&gpu, &data(out.numel(), 777), out.shape()).unwrap();
    let loss = out.mul(&r).unwrap().sum().unwrap();
    loss.backward().unwrap();
    let eval = |vals: &[Vec<f32>]| -> f64 {
        no_grad(|| {
            let ts: Vec<Tensor> = vals
                .iter()
                .zip(inputs)
                .map(|(d, (_, s))| Tensor::from_slice(&gpu, d, s).unwrap())
                .collect();
            f(&ts)
                .unwrap()
                .mul(&r)
                .unwrap()
                .sum()
                .unwrap()
                .item()
                .unwrap() as f64
        })
    };
    for (which, (d, _)) in inputs.iter().enumerate() {
        let grad = match params[which].grad() {
            Some(g) => g.to_vec().unwrap(),
            None => panic!("{name}: input {which} got no gradient"),
        };
        let picks = data(checks, 31 + which as u64);
        for (t, p) in picks.iter().enumerate() {
            let i = (((p + 1.0) / 2.0) * d.len() as f32) as usize % d.len();
            let i = if t == 0 {
                0
            } else if t == 1 {
                d.len() - 1
            } else {
                i
            };
            let mut plus: Vec<Vec<f32>> = inputs.iter().map(|(d, _)| d.clone()).collect();
            let mut minus = plus.clone();
            plus[which][i] += h;
            minus[which][i] -= h;
            let fd = (eval(&plus) - eval(&minus)) / (2.0 * h as f64);
            let g = grad[i] as f64;
            assert!(
                (fd - g).abs() <= tol * (1.0 + g.abs().max(fd.abs())),
                "{name}: d/d input{which}[{i}]: autograd {g}, finite difference {fd}"
            );
        }
    }
}
