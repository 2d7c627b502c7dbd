//! The matrix products (`linear`, `matmul`) against the f64 CPU reference on awkward shapes in
//! every kernel family and form, and finite-difference checks of their gradients.

use repopt_tensor::Tensor;
use repopt_tensor::ops;
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{assert_close, data, f64s, gradcheck, kernel_families};

#[test]
fn linear_and_matmul_match_reference_and_finite_differences() {
    for (family, gpu) in kernel_families() {
        let _ = family;
        for (i, (n, k, o)) in [
            (1usize, 1usize, 1usize),
            (3, 17, 10),
            (33, 64, 257),
            (5, 300, 3),
            // Widths the four-columns-per-invocation kernel takes (partial and exact).
            (7, 33, 200),
            (4, 9, 256),
        ]
        .into_iter()
        .enumerate()
        {
            let (xd, wd, bd) = (data(n * k, 500 + i as u64), data(o * k, 501), data(o, 502));
            let x = Tensor::from_slice(&gpu, &xd, &[n, k]).unwrap();
            let w = Tensor::from_slice(&gpu, &wd, &[o, k]).unwrap();
            let b = Tensor::from_slice(&gpu, &bd, &[o]).unwrap();
            let want = cpu::linear(&f64s(&xd), n, k, &f64s(&wd), o, &f64s(&bd));
            assert_close(
                "linear",
                &ops::linear(&x, &w, &b).unwrap().to_vec().unwrap(),
                &want,
                1e-4,
                1e-4,
            );
            let bm = data(k * o, 503);
            let tb = Tensor::from_slice(&gpu, &bm, &[k, o]).unwrap();
            let want = cpu::matmul(&f64s(&xd), &f64s(&bm), n, k, o);
            assert_close(
                "matmul",
                &ops::matmul(&x, &tb).unwrap().to_vec().unwrap(),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
    gradcheck(
        "linear",
        &[
            (data(3 * 5, 510), vec![3, 5]),
            (data(4 * 5, 511), vec![4, 5]),
            (data(4, 512), vec![4]),
        ],
        |t| ops::linear(&t[0], &t[1], &t[2]),
        5,
        1e-2,
        1e-3,
    );
    gradcheck(
        "matmul",
        &[
            (data(3 * 7, 513), vec![3, 7]),
            (data(7 * 5, 514), vec![7, 5]),
        ],
        |t| ops::matmul(&t[0], &t[1]),
        5,
        1e-2,
        1e-3,
    );
}

/// The subgroup family reads an invocation's columns of B in one vec2 or vec4 load where
/// they are adjacent and aligned, element by element elsewhere: each shape here runs the
/// form named, and matches the reference.
#[test]
fn matmul_reads_b_in_vectors_exactly_where_aligned() {
    use repopt_tensor::{AdapterSelector, Gpu, GpuOptions};
    let gpu = Gpu::new(GpuOptions {
        adapter: AdapterSelector::from_env(),
        ..Default::default()
    })
    .unwrap();
    gpu.set_profiling(true);
    let vec = "matmul_subgroup_vec.wgsl";
    let scalar = "matmul_subgroup.wgsl";
    // (m, k, n, transposed B, the form expected); batched products are checked in
    // `ops/linear.rs`.
    for (i, &(m, k, n, transposed, want)) in [
        (3usize, 17usize, 10usize, false, (vec, "matmul")),
        (1, 1, 2, false, (vec, "matmul")),
        (7, 33, 200, false, (vec, "matmul_wide")),
        (17, 5, 252, false, (vec, "matmul_wide")),
        (6, 5, 260, false, (vec, "matmul")),
        // n odd or not a multiple of 4, or B's columns strided: element by element.
        (33, 64, 257, false, (scalar, "matmul")),
        (5, 9, 510, false, (scalar, "matmul_wide")),
        (5, 8, 12, true, (scalar, "matmul")),
        (9, 7, 256, true, (scalar, "matmul_wide")),
    ]
    .iter()
    .enumerate()
    {
        let ad = data(m * k, 900 + i as u64);
        let bd = data(k * n, 950 + i as u64);
        let a = Tensor::from_slice(&gpu, &ad, &[m, k]).unwrap();
        let before = gpu.kernel_profile();
        let (got, want_c) = if transposed {
            // B given as [n, k] and read transposed, as `linear` reads its weight.
            let bt = Tensor::from_slice(&gpu, &bd, &[n, k]).unwrap();
            let bias = Tensor::zeros(&gpu, &[n]).unwrap();
            let got = ops::linear(&a, &bt, &bias).unwrap().to_vec().unwrap();
            let zeros = vec![0.0; n];
            (got, cpu::linear(&f64s(&ad), m, k, &f64s(&bd), n, &zeros))
        } else {
            let b = Tensor::from_slice(&gpu, &bd, &[k, n]).unwrap();
            let got = ops::matmul(&a, &b).unwrap().to_vec().unwrap();
            (got, cpu::matmul(&f64s(&ad), &f64s(&bd), m, k, n))
        };
        let what = format!("matmul {m}x{k}x{n} transposed {transposed}");
        assert_close(&what, &got, &want_c, 1e-4, 1e-4);
        if !gpu.uses_subgroup_kernels() {
            continue;
        }
        let calls = |name: &str| {
            let count = |p: &[repopt_tensor::KernelTime]| {
                p.iter()
                    .filter(|t| t.kernel == name)
                    .map(|t| t.calls)
                    .sum::<u64>()
            };
            count(&gpu.kernel_profile()) - count(&before)
        };
        let name = format!("{}::{}", want.0, want.1);
        assert_eq!(
            calls(&name),
            1,
            "{what}: expected {name}: {:?}",
            gpu.kernel_profile()
        );
    }
}
