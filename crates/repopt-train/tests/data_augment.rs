//! Augmentation and normalisation on u8 CHW images.

use rand::SeedableRng;
use repopt_train::data::{
    AugRng, AugmentOp, Interpolation, Normalize, Preset, RandAugment, Transform, hflip, pad_crop,
    pad_random_crop, random_hflip, resize,
};

fn ramp(c: usize, h: usize, w: usize) -> Vec<u8> {
    (0..c * h * w).map(|i| (i * 37 % 251) as u8).collect()
}

#[test]
fn crop_with_pad_zero_is_identity() {
    let img = ramp(3, 5, 7);
    let mut rng = AugRng::seed_from_u64(1);
    for _ in 0..10 {
        assert_eq!(pad_random_crop(&img, 3, 5, 7, 0, &mut rng), img);
    }
}

#[test]
fn crop_shifts_with_zero_fill() {
    let (c, h, w) = (2, 4, 5);
    let img = ramp(c, h, w);
    let pad = 2;
    for top in 0..=2 * pad {
        for left in 0..=2 * pad {
            let out = pad_crop(&img, c, h, w, pad, top, left);
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let sy = y as isize + top as isize - pad as isize;
                        let sx = x as isize + left as isize - pad as isize;
                        let want = if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                            img[ch * h * w + sy as usize * w + sx as usize]
                        } else {
                            0
                        };
                        assert_eq!(out[ch * h * w + y * w + x], want);
                    }
                }
            }
        }
    }
    // Offsets beyond the image leave only padding.
    assert!(pad_crop(&img, c, h, w, 9, 0, 0).iter().all(|&v| v == 0));
    // Random crops are deterministic for a seed and always the right size.
    let a = pad_random_crop(&img, c, h, w, 4, &mut AugRng::seed_from_u64(5));
    let b = pad_random_crop(&img, c, h, w, 4, &mut AugRng::seed_from_u64(5));
    assert_eq!(a, b);
    assert_eq!(a.len(), img.len());
}

#[test]
fn flip_twice_is_identity() {
    let img = ramp(3, 4, 6);
    let mut x = img.clone();
    hflip(&mut x, 3, 4, 6);
    assert_ne!(x, img);
    assert_eq!(x[0], img[5]);
    hflip(&mut x, 3, 4, 6);
    assert_eq!(x, img);

    let mut rng = AugRng::seed_from_u64(0);
    let mut flips = 0;
    for _ in 0..1000 {
        let mut y = img.clone();
        if random_hflip(&mut y, 3, 4, 6, &mut rng) {
            flips += 1;
            hflip(&mut y, 3, 4, 6);
        }
        assert_eq!(y, img);
    }
    assert!((400..600).contains(&flips), "p = 0.5, got {flips}/1000");
}

#[test]
fn resize_nearest_and_bilinear() {
    let img = ramp(2, 3, 3);
    assert_eq!(resize(&img, 2, 3, 3, 3, 3, Interpolation::Bilinear), img);
    let up = resize(&img, 2, 3, 3, 6, 6, Interpolation::Nearest);
    assert_eq!(up.len(), 2 * 36);
    assert_eq!(up[6 * 6 + 2 * 6 + 3], img[9 + 3 + 1]);
    let flat = vec![77u8; 28 * 28];
    let big = resize(&flat, 1, 28, 28, 32, 32, Interpolation::Bilinear);
    assert!(big.iter().all(|&v| v == 77));
    // A horizontal gradient stays monotonic and spans the same range.
    let grad: Vec<u8> = (0..4 * 8).map(|i| ((i % 8) * 30) as u8).collect();
    let g = resize(&grad, 1, 4, 8, 4, 16, Interpolation::Bilinear);
    let row = &g[..16];
    assert!(row.windows(2).all(|p| p[0] <= p[1]), "{row:?}");
    assert_eq!((row[0], row[15]), (0, 210));
}

#[test]
fn every_op_keeps_size_and_is_identity_at_zero() {
    for (c, h, w) in [(1, 28, 28), (3, 32, 32), (3, 5, 9)] {
        let img = ramp(c, h, w);
        for op in AugmentOp::ALL {
            let neutral = match op {
                AugmentOp::Posterize => 8.0,
                AugmentOp::Solarize => 256.0,
                _ => 0.0,
            };
            let out = op.apply(&img, c, h, w, neutral);
            assert_eq!(out.len(), img.len(), "{}", op.name());
            if !matches!(op, AugmentOp::AutoContrast | AugmentOp::Equalize) {
                assert_eq!(out, img, "{} at magnitude {neutral}", op.name());
            }
            let strong = op.apply(&img, c, h, w, 0.7 * neutral.max(1.0) + 0.3);
            assert_eq!(strong.len(), img.len());
        }
    }
}

#[test]
fn op_semantics() {
    // AutoContrast stretches to 0..=255.
    let img = vec![100u8, 104, 200];
    assert_eq!(
        AugmentOp::AutoContrast.apply(&img, 1, 1, 3, 0.0),
        vec![0, 10, 255]
    );
    // Posterize to 2 bits.
    assert_eq!(
        AugmentOp::Posterize.apply(&[0b1011_0111], 1, 1, 1, 2.0),
        vec![0b1000_0000]
    );
    // Rotation by 90 degrees of a 3x3 image moves the centre of an edge.
    let mut img = vec![0u8; 9];
    img[1] = 255; // top middle
    let rot = AugmentOp::Rotate.apply(&img, 1, 3, 3, 90.0);
    assert_eq!(rot[3], 255, "counter-clockwise: top goes to left, {rot:?}");
    let rot = AugmentOp::Rotate.apply(&img, 1, 3, 3, -90.0);
    assert_eq!(rot[5], 255, "clockwise: top goes to right, {rot:?}");
    // Color on grayscale is the identity; on RGB with factor 0 it is gray.
    let gray = ramp(1, 4, 4);
    assert_eq!(AugmentOp::Color.apply(&gray, 1, 4, 4, -0.9), gray);
    let rgb = [255u8, 0, 0];
    let out = AugmentOp::Color.apply(&rgb, 3, 1, 1, -1.0);
    assert!(out.iter().all(|&v| v == out[0]));
    // Contrast factor 0 gives the mean everywhere.
    let out = AugmentOp::Contrast.apply(&[0, 100, 200], 1, 1, 3, -1.0);
    assert_eq!(out, vec![100, 100, 100]);
    // Equalize spreads a two-level image to the extremes...
    let mut img = vec![10u8; 600];
    img[300..].fill(20);
    let eq = AugmentOp::Equalize.apply(&img, 1, 20, 30, 0.0);
    assert!(eq[..300].iter().all(|&v| v == 0));
    assert!(eq[300..].iter().all(|&v| v == 255));
    // ...but leaves it alone when there are too few pixels (PIL's rule).
    let eq = AugmentOp::Equalize.apply(&img[296..304], 1, 2, 4, 0.0);
    assert_eq!(eq, &img[296..304]);
    // ShearX on a single row does nothing (source x = x + m * 0.5 near 0).
    let img = ramp(1, 1, 6);
    assert_eq!(AugmentOp::ShearX.apply(&img, 1, 1, 6, 0.3), img);
    // TranslateY down by 1.
    assert_eq!(
        AugmentOp::TranslateY.apply(&[1, 2, 3, 4], 1, 2, 2, 1.9),
        vec![0, 0, 1, 2]
    );
}

#[test]
fn randaugment_is_deterministic_and_sized() {
    let ra = RandAugment::default();
    assert_eq!(
        (ra.num_ops, ra.magnitude, ra.num_magnitude_bins),
        (2, 9, 31)
    );
    for (c, h, w) in [(1, 28, 28), (3, 32, 32)] {
        let img = ramp(c, h, w);
        let mut differs = 0;
        for seed in 0..50 {
            let a = ra.apply(&img, c, h, w, &mut AugRng::seed_from_u64(seed));
            let b = ra.apply(&img, c, h, w, &mut AugRng::seed_from_u64(seed));
            assert_eq!(a.len(), img.len());
            assert_eq!(a, b, "seed {seed}");
            if a != img {
                differs += 1;
            }
        }
        assert!(differs > 30, "RandAugment changed only {differs}/50 images");
    }
    // Zero ops is the identity.
    let img = ramp(3, 8, 8);
    let none = RandAugment::new(0, 9);
    assert_eq!(
        none.apply(&img, 3, 8, 8, &mut AugRng::seed_from_u64(0)),
        img
    );
    // Magnitude tables at the top bin.
    let top = RandAugment::new(2, 30);
    assert!((top.op_magnitude(AugmentOp::ShearX, 32, 32) - 0.3).abs() < 1e-6);
    assert!((top.op_magnitude(AugmentOp::TranslateX, 32, 331) - 150.0).abs() < 1e-3);
    assert_eq!(top.op_magnitude(AugmentOp::Posterize, 32, 32), 4.0);
    assert_eq!(top.op_magnitude(AugmentOp::Solarize, 32, 32), 0.0);
    assert_eq!(
        RandAugment::new(2, 99).op_magnitude(AugmentOp::Rotate, 8, 8),
        30.0
    );
}

#[test]
fn normalisation_values() {
    let n = Normalize::cifar10();
    let img = [0u8, 255, 128, 0, 255, 51];
    let mut out = [0.0f32; 6];
    n.apply(&img, 3, 1, 2, &mut out);
    let want = [
        (0.0 - 0.4914) / 0.2470,
        (1.0 - 0.4914) / 0.2470,
        (128.0 / 255.0 - 0.4822) / 0.2435,
        (0.0 - 0.4822) / 0.2435,
        (1.0 - 0.4465) / 0.2616,
        (0.2 - 0.4465) / 0.2616,
    ];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-5, "{o} vs {w}");
    }
    let mut one = [0.0f32];
    Normalize::fashion_mnist().apply(&[255], 1, 1, 1, &mut one);
    assert!((one[0] - (1.0 - 0.2860) / 0.3530).abs() < 1e-6);
    assert_eq!(Normalize::cifar100().std, vec![0.2673, 0.2564, 0.2762]);
    assert_eq!(Normalize::imagenet().mean, vec![0.485, 0.456, 0.406]);
    // One value broadcasts over channels.
    let mut out = [0.0f32; 3];
    Normalize::new(vec![0.5], vec![0.5]).apply(&[0, 255, 0], 3, 1, 1, &mut out);
    assert_eq!(out, [-1.0, 1.0, -1.0]);
    assert!(!Normalize::new(vec![0.5], vec![0.0]).fits(1));
}

#[test]
fn presets_parse_and_compose() {
    assert_eq!("Search".parse::<Preset>().unwrap(), Preset::Search);
    assert_eq!(" EVAL ".parse::<Preset>().unwrap(), Preset::Eval);
    let e = "crop".parse::<Preset>().unwrap_err().to_string();
    assert!(
        e.contains("'crop'") && e.contains("search") && e.contains("train") && e.contains("eval"),
        "{e}"
    );

    let img = ramp(1, 28, 28);
    let eval = Transform {
        resize: Some((32, 32)),
        ..Transform::new(Preset::Eval, Normalize::unit())
    };
    let mut rng = AugRng::seed_from_u64(0);
    // Eval only resizes.
    assert_eq!(
        eval.augment(&img, 1, 28, 28, &mut rng),
        resize(&img, 1, 28, 28, 32, 32, Interpolation::Bilinear)
    );
    // Search = crop + flip: the pixel multiset of a crop with pad 0 is unchanged.
    let search = Transform {
        pad: 0,
        ..Transform::new(Preset::Search, Normalize::unit())
    };
    let mut out = search.augment(&img, 1, 28, 28, &mut rng);
    let mut sorted = img.clone();
    out.sort();
    sorted.sort();
    assert_eq!(out, sorted);
    // Train is deterministic per seed and changes images.
    let train = Transform::new(Preset::Train, Normalize::unit());
    let a = train.augment(&img, 1, 28, 28, &mut AugRng::seed_from_u64(3));
    let b = train.augment(&img, 1, 28, 28, &mut AugRng::seed_from_u64(3));
    assert_eq!(a, b);
    let mut f = vec![0.0f32; 28 * 28];
    train.apply(&img, 1, 28, 28, &mut AugRng::seed_from_u64(3), &mut f);
    assert!(f.iter().zip(&a).all(|(&x, &y)| x == f32::from(y) / 255.0));
}
