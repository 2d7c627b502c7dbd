//! RandAugment (Cubuk et al., 2020) as implemented by torchvision's
//! `transforms.RandAugment`, in pure Rust on `u8` CHW images.
//!
//! Following torchvision rather than inventing our own keeps the numbers of
//! the RepOptimizers paper reproducible: same op list, same magnitude
//! tables, same 0..=30 magnitude scale, same defaults (2 ops, magnitude 9),
//! geometric ops with nearest sampling and a fill of 0 (black). Pixel
//! arithmetic rounds to nearest where torchvision truncates, so values can
//! differ by one grey level.

use rand::{Rng, RngExt};

/// One RandAugment operation.
///
/// # Example
///
/// ```
/// use repopt_train::data::AugmentOp;
///
/// let img = vec![10u8, 200, 30, 40]; // 1 x 2 x 2
/// assert_eq!(AugmentOp::Identity.apply(&img, 1, 2, 2, 0.0), img);
/// assert_eq!(AugmentOp::Solarize.apply(&img, 1, 2, 2, 128.0), vec![10, 55, 30, 40]);
/// assert_eq!(AugmentOp::ALL.len(), 14);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AugmentOp {
    /// Leaves the image unchanged.
    Identity,
    /// Shears along x: magnitude is the shear factor (source x = x + m * y,
    /// about the top-left corner).
    ShearX,
    /// Shears along y: source y = y + m * x.
    ShearY,
    /// Shifts right by `m` pixels (truncated towards zero).
    TranslateX,
    /// Shifts down by `m` pixels (truncated towards zero).
    TranslateY,
    /// Rotates counter-clockwise by `m` degrees about the image centre.
    Rotate,
    /// Scales pixel values by `1 + m`.
    Brightness,
    /// Blends with the grayscale image by factor `1 + m` (saturation);
    /// identity for images that do not have 3 channels.
    Color,
    /// Blends with the mean grey level by factor `1 + m`.
    Contrast,
    /// Blends with a 3x3-smoothed image by factor `1 + m` (edges kept).
    Sharpness,
    /// Keeps the top `m` bits of every value (`m` in 0..=8).
    Posterize,
    /// Inverts values `>= m`.
    Solarize,
    /// Stretches each channel to the full 0..=255 range.
    AutoContrast,
    /// Histogram-equalises each channel (PIL's algorithm).
    Equalize,
}

impl AugmentOp {
    /// All operations, in torchvision's order (a uniformly random index into
    /// this list picks the op).
    pub const ALL: [AugmentOp; 14] = [
        AugmentOp::Identity,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateX,
        AugmentOp::TranslateY,
        AugmentOp::Rotate,
        AugmentOp::Brightness,
        AugmentOp::Color,
        AugmentOp::Contrast,
        AugmentOp::Sharpness,
        AugmentOp::Posterize,
        AugmentOp::Solarize,
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
    ];

    /// torchvision's name of the op.
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(repopt_train::data::AugmentOp::ShearX.name(), "ShearX");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            AugmentOp::Identity => "Identity",
            AugmentOp::ShearX => "ShearX",
            AugmentOp::ShearY => "ShearY",
            AugmentOp::TranslateX => "TranslateX",
            AugmentOp::TranslateY => "TranslateY",
            AugmentOp::Rotate => "Rotate",
            AugmentOp::Brightness => "Brightness",
            AugmentOp::Color => "Color",
            AugmentOp::Contrast => "Contrast",
            AugmentOp::Sharpness => "Sharpness",
            AugmentOp::Posterize => "Posterize",
            AugmentOp::Solarize => "Solarize",
            AugmentOp::AutoContrast => "AutoContrast",
            AugmentOp::Equalize => "Equalize",
        }
    }

    /// Whether RandAugment negates the magnitude with probability 0.5.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::AugmentOp;
    /// assert!(AugmentOp::Rotate.is_signed());
    /// assert!(!AugmentOp::Posterize.is_signed());
    /// ```
    pub fn is_signed(self) -> bool {
        matches!(
            self,
            AugmentOp::ShearX
                | AugmentOp::ShearY
                | AugmentOp::TranslateX
                | AugmentOp::TranslateY
                | AugmentOp::Rotate
                | AugmentOp::Brightness
                | AugmentOp::Color
                | AugmentOp::Contrast
                | AugmentOp::Sharpness
        )
    }

    /// Applies the op with the given (signed) magnitude, in the op's own unit
    /// (see the variants), to a `c x h x w` image.
    ///
    /// # Panics
    ///
    /// If `img.len() != c * h * w`.
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::AugmentOp;
    ///
    /// let img = vec![0u8, 50, 100, 150]; // 1 x 2 x 2
    /// assert_eq!(AugmentOp::Brightness.apply(&img, 1, 2, 2, 0.5), vec![0, 75, 150, 225]);
    /// assert_eq!(AugmentOp::TranslateX.apply(&img, 1, 2, 2, 1.0), vec![0, 0, 0, 100]);
    /// ```
    pub fn apply(self, img: &[u8], c: usize, h: usize, w: usize, magnitude: f32) -> Vec<u8> {
        assert_eq!(img.len(), c * h * w, "image length must be c * h * w");
        if img.is_empty() {
            return Vec::new();
        }
        match self {
            AugmentOp::Identity => img.to_vec(),
            AugmentOp::ShearX => warp(img, h, w, |x, y| (x + magnitude * y, y)),
            AugmentOp::ShearY => warp(img, h, w, |x, y| (x, y + magnitude * x)),
            AugmentOp::TranslateX => translate(img, c, h, w, magnitude.trunc() as i64, 0),
            AugmentOp::TranslateY => translate(img, c, h, w, 0, magnitude.trunc() as i64),
            AugmentOp::Rotate => rotate(img, h, w, magnitude),
            AugmentOp::Brightness => img
                .iter()
                .map(|&v| to_u8(f32::from(v) * (1.0 + magnitude)))
                .collect(),
            AugmentOp::Color => {
                if c != 3 {
                    return img.to_vec();
                }
                let gray = grayscale(img, h * w);
                let factor = 1.0 + magnitude;
                img.chunks_exact(h * w)
                    .flat_map(|plane| {
                        plane
                            .iter()
                            .zip(&gray)
                            .map(move |(&v, &g)| blend(v, f32::from(g), factor))
                    })
                    .collect()
            }
            AugmentOp::Contrast => {
                let mean = if c == 3 {
                    let gray = grayscale(img, h * w);
                    gray.iter().map(|&g| f64::from(g)).sum::<f64>() / gray.len() as f64
                } else {
                    img.iter().map(|&v| f64::from(v)).sum::<f64>() / img.len() as f64
                } as f32;
                img.iter()
                    .map(|&v| blend(v, mean, 1.0 + magnitude))
                    .collect()
            }
            AugmentOp::Sharpness => sharpness(img, c, h, w, 1.0 + magnitude),
            AugmentOp::Posterize => {
                let bits = magnitude.round().clamp(0.0, 8.0) as u32;
                let mask = (0xffu32 << (8 - bits)) as u8;
                img.iter().map(|&v| v & mask).collect()
            }
            AugmentOp::Solarize => img
                .iter()
                .map(|&v| {
                    if f32::from(v) >= magnitude {
                        255 - v
                    } else {
                        v
                    }
                })
                .collect(),
            AugmentOp::AutoContrast => per_plane(img, h * w, autocontrast_plane),
            AugmentOp::Equalize => per_plane(img, h * w, equalize_plane),
        }
    }
}

/// RandAugment: applies `num_ops` ops, each drawn uniformly (with
/// replacement) from [`AugmentOp::ALL`], at a fixed `magnitude` on a scale of
/// `0..num_magnitude_bins` (torchvision's scale: `0..=30` with the default 31
/// bins, so the default magnitude 9 is 30% of each op's maximum; timm's
/// `m9` on its 0..=10 scale is stronger). Signed ops flip the sign of the
/// magnitude with probability 0.5.
///
/// Maximum magnitudes (at the top bin): shear 0.3, translate 150/331 of the
/// image size, rotate 30 degrees, brightness/color/contrast/sharpness
/// factor 1 +- 0.9, posterize 4 bits, solarize threshold 0.
///
/// # Example
///
/// ```
/// use rand::SeedableRng;
/// use repopt_train::data::{AugRng, RandAugment};
///
/// let ra = RandAugment::default();
/// assert_eq!((ra.num_ops, ra.magnitude, ra.num_magnitude_bins), (2, 9, 31));
/// let img: Vec<u8> = (0..3 * 8 * 8).map(|i| (i * 7) as u8).collect();
/// let a = ra.apply(&img, 3, 8, 8, &mut AugRng::seed_from_u64(1));
/// let b = ra.apply(&img, 3, 8, 8, &mut AugRng::seed_from_u64(1));
/// assert_eq!(a, b);
/// assert_eq!(a.len(), img.len());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RandAugment {
    /// Ops applied per image.
    pub num_ops: usize,
    /// Magnitude bin, `0..num_magnitude_bins` (larger values are clamped).
    pub magnitude: usize,
    /// Number of magnitude bins; the scale is `0..=num_magnitude_bins - 1`.
    pub num_magnitude_bins: usize,
}

impl Default for RandAugment {
    fn default() -> Self {
        RandAugment {
            num_ops: 2,
            magnitude: 9,
            num_magnitude_bins: 31,
        }
    }
}

impl RandAugment {
    /// `num_ops` ops at `magnitude` on the default 0..=30 scale.
    ///
    /// # Example
    ///
    /// ```
    /// let ra = repopt_train::data::RandAugment::new(1, 15);
    /// assert_eq!(ra.num_magnitude_bins, 31);
    /// ```
    pub fn new(num_ops: usize, magnitude: usize) -> Self {
        RandAugment {
            num_ops,
            magnitude,
            ..RandAugment::default()
        }
    }

    /// The magnitude as a fraction of the maximum, in `0.0..=1.0`.
    fn level(&self) -> f32 {
        if self.num_magnitude_bins < 2 {
            return 0.0;
        }
        let top = self.num_magnitude_bins - 1;
        self.magnitude.min(top) as f32 / top as f32
    }

    /// The unsigned magnitude of `op` for an `h x w` image, in the op's
    /// unit (torchvision's `_augmentation_space` table).
    ///
    /// # Example
    ///
    /// ```
    /// use repopt_train::data::{AugmentOp, RandAugment};
    ///
    /// let ra = RandAugment::default();
    /// assert!((ra.op_magnitude(AugmentOp::Rotate, 32, 32) - 9.0).abs() < 1e-5);
    /// assert_eq!(ra.op_magnitude(AugmentOp::Posterize, 32, 32), 7.0);
    /// ```
    pub fn op_magnitude(&self, op: AugmentOp, h: usize, w: usize) -> f32 {
        let l = self.level();
        match op {
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => 0.0,
            AugmentOp::ShearX | AugmentOp::ShearY => 0.3 * l,
            AugmentOp::TranslateX => 150.0 / 331.0 * w as f32 * l,
            AugmentOp::TranslateY => 150.0 / 331.0 * h as f32 * l,
            AugmentOp::Rotate => 30.0 * l,
            AugmentOp::Brightness
            | AugmentOp::Color
            | AugmentOp::Contrast
            | AugmentOp::Sharpness => 0.9 * l,
            AugmentOp::Posterize => 8.0 - (4.0 * l).round_ties_even(),
            AugmentOp::Solarize => 255.0 * (1.0 - l),
        }
    }

    /// Applies `num_ops` random ops to a `c x h x w` image.
    ///
    /// Draw order per op: op index, then (for signed ops) the sign.
    ///
    /// # Panics
    ///
    /// If `img.len() != c * h * w`.
    ///
    /// # Example
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use repopt_train::data::{AugRng, RandAugment};
    ///
    /// let img = vec![128u8; 28 * 28];
    /// let out = RandAugment::default().apply(&img, 1, 28, 28, &mut AugRng::seed_from_u64(0));
    /// assert_eq!(out.len(), 28 * 28);
    /// ```
    pub fn apply<R: Rng + ?Sized>(
        &self,
        img: &[u8],
        c: usize,
        h: usize,
        w: usize,
        rng: &mut R,
    ) -> Vec<u8> {
        let mut out = img.to_vec();
        for _ in 0..self.num_ops {
            let op = AugmentOp::ALL[rng.random_range(0..AugmentOp::ALL.len())];
            let mut magnitude = self.op_magnitude(op, h, w);
            if op.is_signed() && rng.random_bool(0.5) {
                magnitude = -magnitude;
            }
            out = op.apply(&out, c, h, w, magnitude);
        }
        out
    }
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn blend(v: u8, other: f32, factor: f32) -> u8 {
    to_u8(factor * f32::from(v) + (1.0 - factor) * other)
}

/// ITU-R 601-2 luma as used by torchvision's `rgb_to_grayscale`.
fn grayscale(img: &[u8], plane: usize) -> Vec<u8> {
    let (r, rest) = img.split_at(plane);
    let (g, b) = rest.split_at(plane);
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((&r, &g), &b)| {
            to_u8(0.2989 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b))
        })
        .collect()
}

fn per_plane(img: &[u8], plane: usize, f: fn(&[u8], &mut [u8])) -> Vec<u8> {
    let mut out = vec![0u8; img.len()];
    for (src, dst) in img.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
        f(src, dst);
    }
    out
}

fn autocontrast_plane(src: &[u8], dst: &mut [u8]) {
    let lo = src.iter().copied().min().unwrap_or(0);
    let hi = src.iter().copied().max().unwrap_or(0);
    if hi == lo {
        dst.copy_from_slice(src);
        return;
    }
    let scale = 255.0 / f32::from(hi - lo);
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = to_u8(f32::from(s - lo) * scale);
    }
}

/// torchvision's `_scale_channel` (itself PIL's `ImageOps.equalize`): the
/// step ignores the count of the brightest level so that an image with one
/// dominant level is left alone.
fn equalize_plane(src: &[u8], dst: &mut [u8]) {
    let mut hist = [0u64; 256];
    for &v in src {
        hist[usize::from(v)] += 1;
    }
    let nonzero: Vec<u64> = hist.iter().copied().filter(|&n| n != 0).collect();
    let step = nonzero[..nonzero.len().saturating_sub(1)]
        .iter()
        .sum::<u64>()
        / 255;
    if step == 0 {
        dst.copy_from_slice(src);
        return;
    }
    let mut lut = [0u8; 256];
    let mut cum = 0u64;
    for (level, &n) in hist.iter().enumerate() {
        // lut is the cumulative count *before* this level, shifted by one.
        lut[level] = ((cum + step / 2) / step).min(255) as u8;
        cum += n;
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = lut[usize::from(s)];
    }
}

/// Inverse-maps every output pixel centre through `map` (continuous
/// coordinates, pixel `(x, y)` covering `[x, x + 1) x [y, y + 1)`) and takes
/// the nearest source pixel, 0 outside.
fn warp(img: &[u8], h: usize, w: usize, map: impl Fn(f32, f32) -> (f32, f32)) -> Vec<u8> {
    let plane = h * w;
    let mut src_index: Vec<Option<usize>> = Vec::with_capacity(plane);
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = map(x as f32 + 0.5, y as f32 + 0.5);
            let (sx, sy) = (sx.floor(), sy.floor());
            let inside = sx >= 0.0 && sy >= 0.0 && sx < w as f32 && sy < h as f32;
            src_index.push(inside.then(|| sy as usize * w + sx as usize));
        }
    }
    let mut out = vec![0u8; img.len()];
    for (src, dst) in img.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
        for (d, s) in dst.iter_mut().zip(&src_index) {
            if let Some(s) = s {
                *d = src[*s];
            }
        }
    }
    out
}

fn rotate(img: &[u8], h: usize, w: usize, degrees: f32) -> Vec<u8> {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    // Counter-clockwise on screen (y down) means the source of an output
    // point is found by rotating it clockwise.
    warp(img, h, w, |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        (cx + cos * dx - sin * dy, cy + sin * dx + cos * dy)
    })
}

fn translate(img: &[u8], c: usize, h: usize, w: usize, tx: i64, ty: i64) -> Vec<u8> {
    let mut out = vec![0u8; img.len()];
    let plane = h * w;
    for ch in 0..c {
        for y in 0..h {
            let sy = y as i64 - ty;
            if sy < 0 || sy >= h as i64 {
                continue;
            }
            for x in 0..w {
                let sx = x as i64 - tx;
                if sx >= 0 && sx < w as i64 {
                    out[ch * plane + y * w + x] = img[ch * plane + sy as usize * w + sx as usize];
                }
            }
        }
    }
    out
}

fn sharpness(img: &[u8], c: usize, h: usize, w: usize, factor: f32) -> Vec<u8> {
    if h <= 2 || w <= 2 {
        return img.to_vec();
    }
    let plane = h * w;
    let mut out = img.to_vec();
    for ch in 0..c {
        let src = &img[ch * plane..(ch + 1) * plane];
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let mut sum = 4 * u32::from(src[y * w + x]);
                for yy in y - 1..=y + 1 {
                    for xx in x - 1..=x + 1 {
                        sum += u32::from(src[yy * w + xx]);
                    }
                }
                let smooth = (sum as f32 / 13.0).round();
                dst[y * w + x] = blend(src[y * w + x], smooth, factor);
            }
        }
    }
    out
}
