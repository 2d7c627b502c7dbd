//! The calibration statistics against the f64 CPU reference in both kernel families: exact
//! histogram counts (NaN, infinities, values outside the range, magnitudes, bin edges,
//! accumulation across calls) and exact extremes, per tensor and per channel.

use repopt_tensor::ops;
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{data, f64s, gpu, kernel_families};
use repopt_tensor::{Error, Gpu, Tensor};

/// Values over three times `[-1, 1)`, every 97th NaN, every 89th infinite, every 83rd on a
/// multiple of 1/64 (an edge of power-of-two bins).
fn histogram_inputs(len: usize, seed: u64) -> Vec<f32> {
    data(len, seed)
        .iter()
        .enumerate()
        .map(|(i, &v)| match i {
            _ if i % 97 == 0 => f32::NAN,
            _ if i % 89 == 0 => f32::INFINITY.copysign(v),
            _ if i % 83 == 0 => (v * 192.0).round() / 64.0,
            _ => 3.0 * v,
        })
        .collect()
}

const RANGES: &[(f32, f32, usize, bool)] = &[
    (-2.0, 2.0, 2048, false),
    (0.0, 2.5, 2048, true),
    (-1.0, 3.0, 7, false),
    (0.0, 1e-3, 100, true),
    (-0.5, 0.25, 1, false),
    (0.1, 0.7, 33, true),
];

#[test]
fn histogram_counts_match_reference_exactly() {
    for (family, gpu) in kernel_families() {
        for (i, len) in [1usize, 255, 257, 100_000].into_iter().enumerate() {
            let xd = histogram_inputs(len, 40 + i as u64);
            let x = Tensor::from_slice(&gpu, &xd, &[len]).unwrap();
            let counted = xd.iter().filter(|v| !v.is_nan()).count() as u64;
            for &(lo, hi, bins, abs) in RANGES {
                let what = format!("{family} [{len}] [{lo}, {hi}] {bins} bins abs {abs}");
                let counts = ops::histogram(&x, lo, hi, bins, abs).unwrap();
                assert_eq!(counts.shape(), &[bins]);
                let got: Vec<u64> = counts
                    .to_vec_u32()
                    .unwrap()
                    .into_iter()
                    .map(u64::from)
                    .collect();
                let want = cpu::histogram(&f64s(&xd), lo as f64, hi as f64, bins, abs);
                assert_eq!(got, want, "{what}");
                assert_eq!(
                    got.iter().sum::<u64>(),
                    counted,
                    "{what}: NaN alone is left out"
                );
            }
        }
    }
}

#[test]
fn histogram_bins_are_half_open_with_hi_in_the_last() {
    let gpu = gpu();
    let below = f32::from_bits(8.0f32.to_bits() - 1);
    let xd = [
        -0.0, -1e-40, 0.0, 1.0, 2.0, 6.999, 7.0, below, 8.0, 9.0, -9.0,
    ];
    let x = Tensor::from_slice(&gpu, &xd, &[xd.len()]).unwrap();
    let counts = ops::histogram(&x, 0.0, 8.0, 8, false).unwrap();
    assert_eq!(counts.to_vec_u32().unwrap(), vec![4, 1, 1, 0, 0, 0, 1, 4]);
    let counts = ops::histogram(&x, 0.0, 8.0, 8, true).unwrap();
    assert_eq!(counts.to_vec_u32().unwrap(), vec![3, 1, 1, 0, 0, 0, 1, 5]);
}

#[test]
fn reference_bins_agree_with_exact_arithmetic_away_from_the_edges() {
    let (lo, hi, bins) = (-1.5f64, 2.0f64, 2048usize);
    let width = (hi - lo) / bins as f64;
    for &v in &f64s(&data(20_000, 77)) {
        let v = 2.0 * v;
        let exact = ((v - lo) / width).floor().clamp(0.0, (bins - 1) as f64) as usize;
        let edge = ((v - lo) / width - ((v - lo) / width).round()).abs() < 1e-4;
        let got = cpu::histogram(&[v], lo, hi, bins, false);
        assert!(edge || got[exact] == 1, "{v}: bin {exact} of {got:?}");
    }
}

/// Two batches counted into one tensor on `gpu`, read back once; with `counted`, the
/// device's host counters (other tests share the test devices) show that one read of the
/// counts was all that came back.
fn accumulate_two_batches(what: &str, gpu: &Gpu, counted: bool) {
    let (a, b) = (histogram_inputs(30_001, 5), histogram_inputs(777, 6));
    let xa = Tensor::from_slice(gpu, &a, &[30_001]).unwrap();
    let xb = Tensor::from_slice(gpu, &b, &[7, 111]).unwrap();
    gpu.synchronize().unwrap();
    let before = gpu.counters();
    let counts = Tensor::from_u32(gpu, &[0; 2048], &[2048]).unwrap();
    ops::histogram_into(&xa, -2.0, 2.0, true, &counts).unwrap();
    ops::histogram_into(&xb, -2.0, 2.0, true, &counts).unwrap();
    let got = counts.to_vec_u32().unwrap();
    if counted {
        let host = gpu.counters().since(&before);
        assert_eq!(
            (host.read_backs, host.bytes_read_back),
            (1, 2048 * 4),
            "{what}"
        );
        assert_eq!(host.dispatches, 2, "{what}");
    }
    let (ra, rb) = (
        cpu::histogram(&f64s(&a), -2.0, 2.0, 2048, true),
        cpu::histogram(&f64s(&b), -2.0, 2.0, 2048, true),
    );
    let want: Vec<u32> = ra.iter().zip(&rb).map(|(p, q)| (p + q) as u32).collect();
    assert_eq!(got, want, "{what}");
}

#[test]
fn histogram_into_accumulates_with_one_read_back_at_the_end() {
    for (family, gpu) in kernel_families() {
        accumulate_two_batches(family, &gpu, false);
    }
    let own = Gpu::from_env().unwrap();
    accumulate_two_batches("a device of its own", &own, true);
}

#[test]
fn histogram_errors_are_clear() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[10]).unwrap();
    for (lo, hi, bins, wanted) in [
        (0.0, 1.0, 0, "bins must be in 1..=2^24"),
        (0.0, 1.0, (1 << 24) + 1, "bins must be in 1..=2^24"),
        (1.0, 1.0, 4, "lo < hi"),
        (2.0, 1.0, 4, "lo < hi"),
        (f32::NAN, 1.0, 4, "finite"),
        (0.0, f32::INFINITY, 4, "finite"),
        (0.0, 1e-38, 1 << 24, "too narrow or too wide"),
        (-3e38, 3e38, 1, "too narrow or too wide"),
    ] {
        match ops::histogram(&x, lo, hi, bins, false) {
            Err(Error::Invalid { message, .. }) => {
                assert!(message.contains(wanted), "[{lo}, {hi}] {bins}: {message}")
            }
            other => panic!("[{lo}, {hi}] {bins}: {other:?}"),
        }
    }
    let floats = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = ops::histogram_into(&x, 0.0, 1.0, false, &floats).unwrap_err();
    assert!(err.to_string().contains("U32"), "{err}");
    let square = Tensor::from_u32(&gpu, &[0; 4], &[2, 2]).unwrap();
    let err = ops::histogram_into(&x, 0.0, 1.0, false, &square).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let counts = Tensor::from_u32(&gpu, &[0; 4], &[4]).unwrap();
    let err = ops::histogram_into(&x, 1.0, 0.0, false, &counts).unwrap_err();
    assert!(err.to_string().contains("lo < hi"), "{err}");
}

/// Values over three times `[-1, 1)`, every 97th NaN (from the 50th on).
fn finite_inputs(len: usize, seed: u64) -> Vec<f32> {
    data(len, seed)
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 97 == 50 { f32::NAN } else { 3.0 * v })
        .collect()
}

#[test]
fn min_max_and_abs_max_match_reference() {
    for (family, gpu) in kernel_families() {
        // Around one run of 1024, and enough for three passes.
        for (i, len) in [1usize, 2, 1023, 1024, 1025, 100_000, 1_100_000]
            .into_iter()
            .enumerate()
        {
            let xd = finite_inputs(len, 60 + i as u64);
            let x = Tensor::from_slice(&gpu, &xd, &[len]).unwrap();
            let what = format!("{family} [{len}]");
            let Some((lo, hi)) = cpu::min_max(&f64s(&xd)) else {
                assert!(ops::min_max(&x).is_err(), "{what}");
                continue;
            };
            assert_eq!(ops::min_max(&x).unwrap(), (lo as f32, hi as f32), "{what}");
            let abs = lo.abs().max(hi.abs()) as f32;
            assert_eq!(ops::abs_max(&x).unwrap(), abs, "{what}");
        }
        let x = Tensor::from_slice(&gpu, &[1.0, f32::NEG_INFINITY, 2.0], &[3]).unwrap();
        assert_eq!(ops::min_max(&x).unwrap(), (f32::NEG_INFINITY, 2.0));
        assert_eq!(ops::abs_max(&x).unwrap(), f32::INFINITY);
    }
}

#[test]
fn min_max_into_folds_batches_on_the_device() {
    let gpu = gpu();
    let acc = Tensor::from_slice(&gpu, &[f32::INFINITY, f32::NEG_INFINITY], &[2]).unwrap();
    let nan = Tensor::from_slice(&gpu, &[f32::NAN; 3], &[3]).unwrap();
    ops::min_max_into(&nan, &acc).unwrap();
    assert_eq!(
        acc.to_vec().unwrap(),
        vec![f32::INFINITY, f32::NEG_INFINITY]
    );
    let batches = [finite_inputs(5000, 1), finite_inputs(3, 2), vec![-7.5, 0.0]];
    let mut all = Vec::new();
    for b in batches {
        ops::min_max_into(&Tensor::from_slice(&gpu, &b, &[b.len()]).unwrap(), &acc).unwrap();
        all.extend(b);
    }
    let (lo, hi) = cpu::min_max(&f64s(&all)).unwrap();
    assert_eq!(acc.to_vec().unwrap(), vec![lo as f32, hi as f32]);
    let wrong = Tensor::zeros(&gpu, &[3]).unwrap();
    let err = ops::min_max_into(&nan, &wrong).unwrap_err();
    assert!(err.to_string().contains("[2]"), "{err}");
}

#[test]
fn extremes_of_nothing_are_errors() {
    let gpu = gpu();
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    let nan = Tensor::from_slice(&gpu, &[f32::NAN; 300], &[3, 100]).unwrap();
    for x in [&empty, &nan] {
        let err = ops::min_max(x).unwrap_err().to_string();
        assert!(err.contains("empty or all NaN"), "{err}");
        assert!(ops::abs_max(x).is_err());
    }
}

#[test]
fn abs_max_per_channel_matches_reference() {
    for (family, gpu) in kernel_families() {
        for (i, shape) in [
            &[7][..],
            &[3, 2000],
            &[64, 3, 3, 3],
            &[2, 1_100_000],
            &[5, 0],
        ]
        .into_iter()
        .enumerate()
        {
            let n: usize = shape.iter().product();
            let mut wd = finite_inputs(n, 80 + i as u64);
            // One channel of NaN alone.
            if shape.len() > 1 && n > 0 {
                let inner = n / shape[0];
                wd[inner..2 * inner].fill(f32::NAN);
            }
            let w = if n == 0 {
                Tensor::zeros(&gpu, shape).unwrap()
            } else {
                Tensor::from_slice(&gpu, &wd, shape).unwrap()
            };
            let got = ops::abs_max_per_channel(&w).unwrap();
            assert_eq!(got.shape(), &shape[..1]);
            let want = cpu::abs_max_per_channel(&f64s(&wd), shape[0]);
            assert_eq!(
                got.to_vec().unwrap(),
                want.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                "{family} {shape:?}"
            );
        }
    }
}
