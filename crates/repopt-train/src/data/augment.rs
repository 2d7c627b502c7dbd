//! Basic geometric transforms on `u8` CHW images: resize, padded random
//! crop, horizontal flip.
//!
//! They work on raw bytes rather than `f32` so that augmentation costs one
//! byte per pixel of memory traffic; conversion to `f32` happens once, in
//! [`Normalize`](super::Normalize).

use rand::{Rng, RngExt};

/// Sampling used by [`resize`].
///
/// # Example
///
/// ```
/// use repopt_train::data::Interpolation;
/// assert_eq!(Interpolation::default(), Interpolation::Bilinear);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Nearest neighbour (PyTorch's `nearest`: source = floor(dst * in / out)).
    Nearest,
    /// Bilinear with half-pixel centres (PyTorch's `align_corners=False`),
    /// without antialiasing.
    #[default]
    Bilinear,
}

/// Resizes a `c x h x w` image to `c x out_h x out_w`.
///
/// Returns a copy when the size is unchanged. Bilinear resizing does not
/// antialias, which is right for the small upscales it is meant for (e.g.
/// 28x28 Fashion-MNIST to 32x32).
///
/// # Panics
///
/// If `img.len() != c * h * w`, or if the input is empty while the output is
/// not.
///
/// # Example
///
/// ```
/// use repopt_train::data::{Interpolation, resize};
///
/// let img = [0u8, 100, 200, 255]; // 1 x 2 x 2
/// let big = resize(&img, 1, 2, 2, 4, 4, Interpolation::Nearest);
/// assert_eq!(&big[..4], &[0, 0, 100, 100]);
/// assert_eq!(resize(&img, 1, 2, 2, 2, 2, Interpolation::Bilinear), img);
/// ```
pub fn resize(
    img: &[u8],
    c: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    interpolation: Interpolation,
) -> Vec<u8> {
    assert_eq!(img.len(), c * h * w, "image length must be c * h * w");
    if (h, w) == (out_h, out_w) {
        return img.to_vec();
    }
    let mut out = vec![0u8; c * out_h * out_w];
    if out.is_empty() {
        return out;
    }
    assert!(h > 0 && w > 0, "cannot resize an empty image");
    match interpolation {
        Interpolation::Nearest => {
            let xs: Vec<usize> = (0..out_w).map(|x| (x * w / out_w).min(w - 1)).collect();
            for ch in 0..c {
                let src = &img[ch * h * w..(ch + 1) * h * w];
                let dst = &mut out[ch * out_h * out_w..(ch + 1) * out_h * out_w];
                for y in 0..out_h {
                    let sy = (y * h / out_h).min(h - 1);
                    let row = &src[sy * w..(sy + 1) * w];
                    for (x, &sx) in xs.iter().enumerate() {
                        dst[y * out_w + x] = row[sx];
                    }
                }
            }
        }
        Interpolation::Bilinear => {
            let taps = |out_len: usize, in_len: usize| -> Vec<(usize, usize, f32)> {
                let scale = in_len as f32 / out_len as f32;
                (0..out_len)
                    .map(|o| {
                        let s = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                        let i0 = (s.floor() as usize).min(in_len - 1);
                        let i1 = (i0 + 1).min(in_len - 1);
                        (i0, i1, s - i0 as f32)
                    })
                    .collect()
            };
            let xt = taps(out_w, w);
            let yt = taps(out_h, h);
            for ch in 0..c {
                let src = &img[ch * h * w..(ch + 1) * h * w];
                let dst = &mut out[ch * out_h * out_w..(ch + 1) * out_h * out_w];
                for (y, &(y0, y1, fy)) in yt.iter().enumerate() {
                    for (x, &(x0, x1, fx)) in xt.iter().enumerate() {
                        let p = |yy: usize, xx: usize| f32::from(src[yy * w + xx]);
                        let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                        let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                        let v = top + (bottom - top) * fy;
                        dst[y * out_w + x] = v.round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }
    out
}

/// Crops a `c x h x w` window at offset `(top, left)` from the image padded
/// with `pad` zero pixels on every side; `top` and `left` range over
/// `0..=2 * pad`, and `(pad, pad)` gives the image back.
///
/// # Panics
///
/// If `img.len() != c * h * w`.
///
/// # Example
///
/// ```
/// use repopt_train::data::pad_crop;
///
/// let img = [1u8, 2, 3, 4]; // 1 x 2 x 2
/// assert_eq!(pad_crop(&img, 1, 2, 2, 1, 1, 1), img);
/// assert_eq!(pad_crop(&img, 1, 2, 2, 1, 0, 0), [0, 0, 0, 1]);
/// ```
pub fn pad_crop(
    img: &[u8],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    top: usize,
    left: usize,
) -> Vec<u8> {
    assert_eq!(img.len(), c * h * w, "image length must be c * h * w");
    let dy = top as isize - pad as isize;
    let dx = left as isize - pad as isize;
    let mut out = vec![0u8; img.len()];
    // Columns that land inside the source are the same for every row.
    let x_lo = (-dx).clamp(0, w as isize) as usize;
    let x_hi = (w as isize - dx).clamp(0, w as isize) as usize;
    if x_lo >= x_hi {
        return out;
    }
    for ch in 0..c {
        let plane = ch * h * w;
        for y in 0..h {
            let sy = y as isize + dy;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            let src_row = plane + sy as usize * w;
            let sx_lo = (x_lo as isize + dx) as usize;
            out[plane + y * w + x_lo..plane + y * w + x_hi]
                .copy_from_slice(&img[src_row + sx_lo..src_row + sx_lo + (x_hi - x_lo)]);
        }
    }
    out
}

/// torchvision's `RandomCrop(size, padding=pad)` for an output the size of
/// the input: pads with zeros, then crops at a uniformly random offset
/// (top drawn first, then left).
///
/// # Panics
///
/// If `img.len() != c * h * w`.
///
/// # Example
///
/// ```
/// use rand::SeedableRng;
/// use repopt_train::data::{AugRng, pad_random_crop};
///
/// let img: Vec<u8> = (0..3 * 8 * 8).map(|i| i as u8).collect();
/// let mut rng = AugRng::seed_from_u64(0);
/// let out = pad_random_crop(&img, 3, 8, 8, 2, &mut rng);
/// assert_eq!(out.len(), img.len());
/// assert_eq!(pad_random_crop(&img, 3, 8, 8, 0, &mut rng), img);
/// ```
pub fn pad_random_crop<R: Rng + ?Sized>(
    img: &[u8],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    rng: &mut R,
) -> Vec<u8> {
    let top = rng.random_range(0..=2 * pad);
    let left = rng.random_range(0..=2 * pad);
    pad_crop(img, c, h, w, pad, top, left)
}

/// Mirrors a `c x h x w` image left to right, in place.
///
/// # Panics
///
/// If `img.len() != c * h * w`.
///
/// # Example
///
/// ```
/// use repopt_train::data::hflip;
///
/// let mut img = [1u8, 2, 3, 4, 5, 6]; // 1 x 2 x 3
/// hflip(&mut img, 1, 2, 3);
/// assert_eq!(img, [3, 2, 1, 6, 5, 4]);
/// ```
pub fn hflip(img: &mut [u8], c: usize, h: usize, w: usize) {
    assert_eq!(img.len(), c * h * w, "image length must be c * h * w");
    if w == 0 {
        return;
    }
    for row in img.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Mirrors the image left to right with probability 0.5, in place; returns
/// whether it did.
///
/// # Panics
///
/// If `img.len() != c * h * w`.
///
/// # Example
///
/// ```
/// use rand::SeedableRng;
/// use repopt_train::data::{AugRng, random_hflip};
///
/// let mut img = [1u8, 2];
/// let flipped = random_hflip(&mut img, 1, 1, 2, &mut AugRng::seed_from_u64(3));
/// assert_eq!(img, if flipped { [2, 1] } else { [1, 2] });
/// ```
pub fn random_hflip<R: Rng + ?Sized>(
    img: &mut [u8],
    c: usize,
    h: usize,
    w: usize,
    rng: &mut R,
) -> bool {
    let flip = rng.random_bool(0.5);
    if flip {
        hflip(img, c, h, w);
    }
    flip
}
