//! Fake quantization against the f64 CPU reference in both kernel families: exact outputs
//! (ties and clipping bounds included) and exact straight-through gradients. The statistics
//! that calibrate it are tested in `quant_stats.rs`.
//!
//! The gradients are not checked by finite differences: the straight-through estimator is
//! not the derivative of fake quantization (which is 0 between grid points and undefined on
//! the rounding edges) but a chosen replacement, `dy` inside the grid's range and 0 where
//! the value was clipped. The tests check exactly that, element by element.

use repopt_tensor::ops::{self, ActQuant};
use repopt_tensor::testing::reference as cpu;
use repopt_tensor::testing::{data, f64s, gpu, kernel_families};
use repopt_tensor::{Error, Tensor};

/// Rounds the reference's f64 outputs once to f32, as the kernel's last product does.
fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// `dy` where the mask passes, 0 elsewhere: the straight-through gradient.
fn masked(dy: &[f32], mask: &[bool]) -> Vec<f32> {
    dy.iter()
        .zip(mask)
        .map(|(&g, &m)| if m { g } else { 0.0 })
        .collect()
}

/// `len` values in steps of `s` around the index range `[lo, hi]`: a quarter exactly on
/// the bounds, half a step beyond or inside them, at ties near 0 or far outside; a quarter
/// on ties (an index plus one half) across the range; the rest spread over 1.3 times it.
fn grid_inputs(len: usize, seed: u64, s: f32, (lo, hi): (f32, f32)) -> Vec<f32> {
    let special = [
        lo,
        hi,
        lo - 0.5,
        hi + 0.5,
        lo + 0.5,
        hi - 0.5,
        lo - 0.49,
        hi + 0.49,
        lo - 3.0,
        hi + 3.0,
        0.5,
        -0.5,
        1.5,
        -1.5,
        0.0,
    ];
    let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
    data(len, seed)
        .iter()
        .enumerate()
        .map(|(i, &v)| match i % 4 {
            0 => special[(i / 4) % special.len()] * s,
            1 => ((mid + v * half).floor() + 0.5) * s,
            _ => (mid + 1.3 * v * half) * s,
        })
        .collect()
}

// Multiples of 4 and not, and more than one workgroup of four values per invocation.
const SIZES: &[&[usize]] = &[
    &[1],
    &[7],
    &[255],
    &[257],
    &[3, 5, 7],
    &[2, 1, 33, 17],
    &[2, 3, 4, 4],
    &[4, 257],
];

#[test]
fn fake_quant_per_tensor_matches_reference_exactly() {
    let grids = [
        ActQuant::symmetric_int8(0.1).unwrap(),
        ActQuant::symmetric_int8(0.25).unwrap(),
        ActQuant::asymmetric_uint8(0.05, 128).unwrap(),
        ActQuant::asymmetric_uint8(1.0 / 64.0, 3).unwrap(),
        ActQuant::new(0.3, -5, -20, 7).unwrap(),
    ];
    for (family, gpu) in kernel_families() {
        for (g, q) in grids.iter().enumerate() {
            let bounds = (
                (q.qmin() - q.zero_point()) as f32,
                (q.qmax() - q.zero_point()) as f32,
            );
            for (i, &shape) in SIZES.iter().enumerate() {
                let n: usize = shape.iter().product();
                let seed = (10 * g + i) as u64;
                let xd = grid_inputs(n, seed, q.scale(), bounds);
                let x = Tensor::parameter(&gpu, &xd, shape).unwrap();
                let y =
                    ops::fake_quant_per_tensor(&x, q.scale(), q.zero_point(), q.qmin(), q.qmax())
                        .unwrap();
                let what = format!("{family} {q:?} {shape:?}");
                let (want, mask) = cpu::fake_quant(
                    &f64s(&xd),
                    q.scale() as f64,
                    q.zero_point(),
                    q.qmin(),
                    q.qmax(),
                );
                assert_eq!(y.shape(), shape);
                assert_eq!(y.to_vec().unwrap(), to_f32(&want), "{what}");
                assert!(mask.iter().any(|m| !m) || n < 16, "{what}: nothing clipped");

                let dyd = data(n, 100 + seed);
                let dy = Tensor::from_slice(&gpu, &dyd, shape).unwrap();
                y.mul(&dy).unwrap().sum().unwrap().backward().unwrap();
                let want = masked(&dyd, &mask);
                assert_eq!(x.grad().unwrap().to_vec().unwrap(), want, "{what} dx");
                // The launchers alone, and the named grid, compute the same.
                let dx = ops::fake_quant_per_tensor_backward(&dy, &x.detach(), *q).unwrap();
                assert_eq!(dx.to_vec().unwrap(), want, "{what} launcher dx");
                let y2 = q.fake_quant(&x.detach()).unwrap().to_vec().unwrap();
                assert_eq!(y2, y.to_vec().unwrap(), "{what} ActQuant::fake_quant");
            }
        }
    }
}

#[test]
fn ties_round_to_even_and_the_bounds_are_inside() {
    // Step 0.25: every input below is exact in steps, so each tie is a true tie.
    let xd = [
        0.125, 0.375, 0.625, -0.125, -0.375, 31.625, 31.75, 31.8, 31.875, -31.875, -31.75,
    ];
    let steps = [
        0.0, 2.0, 2.0, 0.0, -2.0, 126.0, 127.0, 127.0, 127.0, -127.0, -127.0,
    ];
    let inside = [
        true, true, true, true, true, true, true, true, false, false, true,
    ];
    for (family, gpu) in kernel_families() {
        let x = Tensor::parameter(&gpu, &xd, &[xd.len()]).unwrap();
        let y = ops::fake_quant_per_tensor(&x, 0.25, 0, -127, 127).unwrap();
        let want: Vec<f32> = steps.iter().map(|s| s * 0.25).collect();
        assert_eq!(y.to_vec().unwrap(), want, "{family}");
        y.sum().unwrap().backward().unwrap();
        let ones = [1.0; 11];
        assert_eq!(
            x.grad().unwrap().to_vec().unwrap(),
            masked(&ones, &inside),
            "{family}"
        );
        // The per-channel op on one channel is the same grid.
        let s = Tensor::from_slice(&gpu, &[0.25], &[1]).unwrap();
        let w = Tensor::from_slice(&gpu, &xd, &[1, xd.len()]).unwrap();
        let yc = ops::fake_quant_per_channel(&w, &s)
            .unwrap()
            .to_vec()
            .unwrap();
        assert_eq!(yc, want, "{family} per channel");
    }
}

#[test]
fn nan_stays_nan_and_infinities_clip() {
    for (family, gpu) in kernel_families() {
        let xd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0];
        let x = Tensor::parameter(&gpu, &xd, &[4]).unwrap();
        let y = ops::fake_quant_per_tensor(&x, 0.5, 10, 0, 255).unwrap();
        let v = y.to_vec().unwrap();
        assert!(v[0].is_nan(), "{family}: {v:?}");
        assert_eq!(&v[1..], &[122.5, -5.0, 1.0], "{family}");
        y.backward_with(&Tensor::full(&gpu, &[4], 2.0).unwrap())
            .unwrap();
        let g = x.grad().unwrap().to_vec().unwrap();
        assert_eq!(g, vec![0.0, 0.0, 0.0, 2.0], "{family}");
    }
}

/// One scale per channel, cycling through very different magnitudes and every kind of
/// unusable scale: zero, negative, infinite, NaN and subnormal.
const SCALES: &[f32] = &[
    0.01,
    0.5,
    100.0,
    0.0,
    1.0 / 64.0,
    1e-4,
    -1.0,
    f32::INFINITY,
    f32::NAN,
    1e-40,
    3e-3,
];

#[test]
fn fake_quant_per_channel_matches_reference_exactly() {
    let shapes: &[&[usize]] = &[
        &[7],
        &[1, 300],
        &[5, 3, 3, 3],
        &[257, 1],
        &[11, 1000],
        &[13, 2, 3, 5],
    ];
    for (family, gpu) in kernel_families() {
        for (i, &shape) in shapes.iter().enumerate() {
            let c = shape[0];
            let inner: usize = shape[1..].iter().product();
            let sd: Vec<f32> = (0..c).map(|j| SCALES[(i + j) % SCALES.len()]).collect();
            let wd: Vec<f32> = sd
                .iter()
                .enumerate()
                .flat_map(|(j, &s)| {
                    let seed = (100 * i + j) as u64;
                    if s.is_finite() && s >= f32::MIN_POSITIVE {
                        grid_inputs(inner, seed, s, (-127.0, 127.0))
                    } else {
                        data(inner, seed).iter().map(|v| 5.0 * v).collect()
                    }
                })
                .collect();
            let w = Tensor::parameter(&gpu, &wd, shape).unwrap();
            let scales = Tensor::parameter(&gpu, &sd, &[c]).unwrap();
            let y = ops::fake_quant_per_channel(&w, &scales).unwrap();
            let what = format!("{family} {shape:?}");
            let (want, mask) = cpu::fake_quant_per_channel(&f64s(&wd), &f64s(&sd));
            let got = y.to_vec().unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "{what}: not finite");
            assert_eq!(got, to_f32(&want), "{what}");

            let dyd = data(wd.len(), 7 + i as u64);
            let dy = Tensor::from_slice(&gpu, &dyd, shape).unwrap();
            y.backward_with(&dy).unwrap();
            let want = masked(&dyd, &mask);
            assert_eq!(w.grad().unwrap().to_vec().unwrap(), want, "{what} dw");
            assert!(
                scales.grad().is_none(),
                "{what}: scales are constants of the grid"
            );
            let dw = ops::fake_quant_per_channel_backward(&dy, &w.detach(), &scales).unwrap();
            assert_eq!(dw.to_vec().unwrap(), want, "{what} launcher dw");
            let y2 = ops::fake_quant_per_channel_forward(&w, &scales).unwrap();
            assert_eq!(y2.to_vec().unwrap(), got, "{what} launcher");
        }
    }
}

#[test]
fn channels_without_a_usable_scale_are_zero_and_pass_their_gradient() {
    let gpu = gpu();
    let sd = [0.0, -1.0, f32::INFINITY, f32::NAN, 1e-40, 0.5];
    let wd: Vec<f32> = data(6 * 3, 9).iter().map(|v| 4.0 * v + 1.0).collect();
    let w = Tensor::parameter(&gpu, &wd, &[6, 3]).unwrap();
    let scales = Tensor::from_slice(&gpu, &sd, &[6]).unwrap();
    let y = ops::fake_quant_per_channel(&w, &scales).unwrap();
    let v = y.to_vec().unwrap();
    assert_eq!(&v[..15], &[0.0; 15]);
    assert!(
        v[15..]
            .iter()
            .zip(&wd[15..])
            .all(|(q, w)| (q - w).abs() <= 0.25)
    );
    y.sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![1.0; 18]);
}

#[test]
fn fake_quant_errors_are_clear() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    for (scale, zp, qmin, qmax, wanted) in [
        (0.0, 0, -127, 127, "positive, finite, normal"),
        (-0.1, 0, -127, 127, "positive, finite, normal"),
        (f32::NAN, 0, -127, 127, "positive, finite, normal"),
        (f32::INFINITY, 0, -127, 127, "positive, finite, normal"),
        (0.1, 0, 127, -127, "qmin must be below qmax"),
        (0.1, 0, 5, 5, "qmin must be below qmax"),
        (0.1, 300, 0, 255, "zero point 300 lies outside"),
        (0.1, 0, i32::MIN, 0, "2^24"),
    ] {
        match ops::fake_quant_per_tensor(&x, scale, zp, qmin, qmax) {
            Err(Error::Invalid { message, .. }) => {
                assert!(
                    message.contains(wanted),
                    "{scale} {zp} {qmin} {qmax}: {message}"
                )
            }
            other => panic!("{scale} {zp} {qmin} {qmax}: {other:?}"),
        }
    }
    let w = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    for (shape, wanted) in [(vec![5], "shape [4]"), (vec![4, 1], "shape [4]")] {
        let s = Tensor::zeros(&gpu, &shape).unwrap();
        match ops::fake_quant_per_channel(&w, &s) {
            Err(Error::Shape { message, .. }) => assert!(message.contains(wanted), "{message}"),
            other => panic!("{shape:?}: {other:?}"),
        }
    }
    let scalar = Tensor::from_slice(&gpu, &[1.0], &[]).unwrap();
    let s = Tensor::zeros(&gpu, &[1]).unwrap();
    let err = ops::fake_quant_per_channel(&scalar, &s).unwrap_err();
    assert!(err.to_string().contains("first dimension"), "{err}");
    let labels = Tensor::from_u32(&gpu, &[1, 2, 3, 4], &[4]).unwrap();
    let s = Tensor::zeros(&gpu, &[4]).unwrap();
    assert!(ops::fake_quant_per_channel(&labels, &s).is_err());
    let dy = Tensor::zeros(&gpu, &[4, 2]).unwrap();
    let err = ops::fake_quant_per_channel_backward(&dy, &w, &s).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}
