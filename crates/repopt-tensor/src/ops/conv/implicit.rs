//! Convolution as an implicit matrix product on workgroup tiles (`shaders/conv_implicit.wgsl`),
//! any kernel size, stride and padding, every direction in one kernel: the GPU-shaped variant.
//! Each workgroup computes 64 x 64 outputs from double-buffered tiles in workgroup memory
//! (4 x 4 per invocation), the operands gathered from the tensors as they are loaded, so it
//! moves no columns matrix through memory as `gemm` does and shares each loaded value between
//! 64 FMAs. A strided input gradient runs as one product per parity class of input pixels,
//! each gathering only the taps that reach its pixels. It is written for GPUs' memory
//! hierarchy (shared memory, register tiles, many resident workgroups); on CPU adapters it
//! measured 3 to 16 times slower than the best of the other algorithms, so the tuner
//! measures it only elsewhere (`tune.rs`), and forcing it runs it anywhere. Its f16 form
//! (`shaders/conv_implicit_f16.wgsl`, the same body) first rounds both operands to f16 in
//! one pass and then gathers half the bytes; it runs only when forced (`implicit-f16`).

use super::ConvShape;
use super::winograd::Direction;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::conv_implicit::{self as k, ImplicitGemmParams};
use crate::ops::{as_u32, groups};
use crate::tensor::{DType, Tensor};

/// Outputs per workgroup along each side of the tile.
const TILE: usize = 64;
/// K walked per barrier.
const SLICE: usize = 16;
/// Workgroup memory the kernel declares: two buffers of A and of B, 16 x 64 floats each.
const SHARED_BYTES: u32 = 4 * 2 * 2 * (SLICE * TILE) as u32;
/// The weight gradient splits K (every output pixel of the batch) until its few output
/// tiles make at least this many workgroups, so a GPU's many cores all get work...
const TARGET_GROUPS: usize = 128;
/// ...but never into pieces shorter than this, where the sum of the splits would cost more
/// than it spreads.
const MIN_SPLIT: usize = 1024;

/// The product `C[gm][gn] = A[gm][gk] B[gk][gn]` one direction computes; for the input
/// gradient, the largest of its products, one per parity class of input pixels (the class
/// of even rows and columns, and the taps of a class starting at offset 0).
fn product(s: &ConvShape, direction: Direction) -> [usize; 3] {
    let taps = s.k * s.k;
    let st = s.cfg.stride;
    match direction {
        Direction::Forward => [s.co, s.n * s.oh * s.ow, s.ci * taps],
        Direction::BackwardInput => [
            s.ci,
            s.n * s.h.div_ceil(st) * s.w.div_ceil(st),
            s.co * s.k.div_ceil(st).pow(2),
        ],
        Direction::BackwardWeight => [s.co, s.ci * taps, s.n * s.oh * s.ow],
    }
}

/// Grid z: splits of K for the weight gradient, parity classes for the input gradient.
fn depth(s: &ConvShape, direction: Direction) -> usize {
    match direction {
        Direction::BackwardInput => s.cfg.stride * s.cfg.stride,
        _ => splits(s, direction).0,
    }
}

/// Splits of K for the weight gradient (1 elsewhere), and the K each covers (a multiple of
/// the slice).
fn splits(s: &ConvShape, direction: Direction) -> (usize, usize) {
    let [gm, gn, gk] = product(s, direction);
    let tiles = gm.div_ceil(TILE) * gn.div_ceil(TILE);
    let wanted = match direction {
        Direction::BackwardWeight => TARGET_GROUPS.div_ceil(tiles).min(gk / MIN_SPLIT).max(1),
        _ => 1,
    };
    let per = gk.div_ceil(wanted).div_ceil(SLICE) * SLICE;
    (gk.div_ceil(per), per)
}

/// Whether the adapter runs workgroups of 256 with 16 KiB of workgroup memory, and every
/// index of this shape fits 32 bits and the grid.
pub(crate) fn applies(gpu: &Gpu, s: &ConvShape) -> bool {
    let l = gpu.limits();
    let fits_adapter = l.max_compute_invocations_per_workgroup >= 256
        && l.max_compute_workgroup_size_x >= 256
        && l.max_compute_workgroup_storage_size >= SHARED_BYTES;
    let largest = [
        s.n * s.ci * s.h * s.w,
        s.n * s.co * s.oh * s.ow,
        s.co * s.ci * s.k * s.k * splits(s, Direction::BackwardWeight).0,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let grid_fits = [
        Direction::Forward,
        Direction::BackwardInput,
        Direction::BackwardWeight,
    ]
    .into_iter()
    .all(|d| {
        let [gm, gn, _] = product(s, d);
        let largest = gm.div_ceil(TILE).max(gn.div_ceil(TILE)).max(depth(s, d));
        largest <= l.max_compute_workgroups_per_dimension as usize
    });
    fits_adapter
        && grid_fits
        && u32::try_from(largest).is_ok()
        && largest as u64 * 4 <= l.max_storage_buffer_binding_size
}

/// Runs one direction on its two operands: `(x, w)` for the forward, `(dy, w)` for the
/// input gradient, `(x, dy)` for the weight gradient; with `half`, on the operands rounded to
/// f16 (the caller has checked [`applies`], and `SHADER_F16` for `half`).
pub(crate) fn run(
    a: &Tensor,
    b: &Tensor,
    s: &ConvShape,
    direction: Direction,
    half: bool,
) -> Result<Tensor> {
    let gpu = a.gpu();
    let [gm, gn, gk] = product(s, direction);
    let (split_count, per) = splits(s, direction);
    let what = "conv2d (implicit matrix product)";
    let params = ImplicitGemmParams {
        n: s.n as u32,
        ci: s.ci as u32,
        h: s.h as u32,
        w: s.w as u32,
        co: s.co as u32,
        oh: s.oh as u32,
        ow: s.ow as u32,
        k: s.k as u32,
        stride: s.cfg.stride as u32,
        pad: s.cfg.padding as u32,
        direction: match direction {
            Direction::Forward => 0,
            Direction::BackwardInput => 1,
            Direction::BackwardWeight => 2,
        },
        gm: as_u32(what, "rows", gm)?,
        gn: as_u32(what, "columns", gn)?,
        gk: as_u32(what, "inner size", gk)?,
        k_per_split: as_u32(what, "split", per)?,
        splits: split_count as u32,
        split_stride: as_u32(what, "partial products", gm * gn)?,
    };
    // The kernel's A is the second operand (the weights, or dy for the weight gradient),
    // its B the first.
    let out_shape = match direction {
        Direction::Forward => s.output_shape().to_vec(),
        Direction::BackwardInput => vec![s.n, s.ci, s.h, s.w],
        Direction::BackwardWeight => vec![s.co, s.ci, s.k, s.k],
    };
    let out = Tensor::empty(gpu, &out_shape, DType::F32)?;
    let partial = match split_count {
        1 => None,
        _ => Some(Tensor::empty(gpu, &[split_count, gm * gn], DType::F32)?),
    };
    let grid = [
        gn.div_ceil(TILE) as u32,
        gm.div_ceil(TILE) as u32,
        depth(s, direction) as u32,
    ];
    let target = partial.as_ref().unwrap_or(&out);
    if half {
        // The kernel's operands (A, B) = (b, a), each as f16 pairs packed in u32 words.
        let pairs = |t: &Tensor| t.numel().div_ceil(2);
        let a_half = Tensor::empty(gpu, &[pairs(b)], DType::U32)?;
        let b_half = Tensor::empty(gpu, &[pairs(a)], DType::U32)?;
        gpu.launch(
            &k::TO_HALF,
            &params,
            &[b.buffer(), a.buffer(), a_half.buffer(), b_half.buffer()],
            gpu.grid(groups(pairs(a).max(pairs(b)), 64)),
        )?;
        gpu.launch(
            &k::IMPLICIT_GEMM_F16,
            &params,
            &[a_half.buffer(), b_half.buffer(), target.buffer()],
            grid,
        )?;
    } else {
        gpu.launch(
            &k::IMPLICIT_GEMM,
            &params,
            &[b.buffer(), a.buffer(), target.buffer()],
            grid,
        )?;
    }
    if let Some(partial) = partial {
        gpu.launch(
            &k::SUM_SPLITS,
            &params,
            &[partial.buffer(), out.buffer()],
            gpu.grid(groups(gm * gn, 64)),
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Conv2dConfig;

    #[test]
    fn only_the_weight_gradient_splits_and_splits_cover_k() {
        let s =
            ConvShape::new(&[32, 64, 16, 16], &[64, 64, 3, 3], Conv2dConfig::same(3, 1)).unwrap();
        assert_eq!(splits(&s, Direction::Forward), (1, 576));
        let (count, per) = splits(&s, Direction::BackwardWeight);
        // 1 x 9 tiles want 15 splits of the 8192 pixels; 8 keep each at least 1024 long.
        assert_eq!((count, per), (8, 1024));
        let tiny = ConvShape::new(&[1, 3, 5, 5], &[4, 3, 3, 3], Conv2dConfig::same(3, 2)).unwrap();
        assert_eq!(splits(&tiny, Direction::BackwardWeight), (1, 16));
        let odd = ConvShape::new(&[7, 5, 33, 35], &[3, 5, 3, 3], Conv2dConfig::same(3, 1)).unwrap();
        let (count, per) = splits(&odd, Direction::BackwardWeight);
        let gk = 7 * 33 * 35;
        assert!(count > 1 && per % SLICE == 0);
        assert!((count - 1) * per < gk && gk <= count * per);
    }
}
