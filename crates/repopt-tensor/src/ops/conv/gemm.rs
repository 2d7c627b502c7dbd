//! Convolution as matrix products, any kernel size, stride and padding: the input's patches
//! gathered into columns (`shaders/conv_gemm.wgsl`), one matrix product on the matmul
//! kernel, and the layout moved back. It pays where the direct kernels have little to
//! share between invocations: few output pixels and many channels (the last stages of a
//! network, stride-2 transitions). One of the variants `tune` chooses between.

use super::ConvShape;
use super::winograd::Direction;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::conv_gemm::{self as k, GemmConvParams};
use crate::kernels::{Kernel, Params};
use crate::ops::linear::{Layout, matmul_batched_into, transposed_keeps_more_busy};
use crate::ops::{as_u32, groups};
use crate::tensor::{DType, Tensor};

/// Taps (rows of the columns matrix) and output pixels (its columns).
fn sizes(s: &ConvShape) -> (usize, usize) {
    (s.ci * s.k * s.k, s.n * s.oh * s.ow)
}

/// Whether the columns matrix fits one binding and 32-bit indices.
pub(crate) fn applies(gpu: &Gpu, s: &ConvShape) -> bool {
    let (taps, pixels) = sizes(s);
    let largest = (taps * pixels).max(s.co * pixels).max(s.co * taps);
    u32::try_from(largest).is_ok()
        && largest as u64 * 4 <= gpu.limits().max_storage_buffer_binding_size
}

fn launch<P: Params>(
    kernel: &Kernel<P>,
    params: &P,
    (from, to): (&Tensor, &Tensor),
    items: usize,
) -> Result<()> {
    let gpu = from.gpu();
    gpu.launch(
        kernel,
        params,
        &[from.buffer(), to.buffer()],
        gpu.grid(groups(items, 64)),
    )
}

/// Runs one direction on its two operands: `(x, w)` for the forward, `(dy, w)` for the
/// input gradient, `(x, dy)` for the weight gradient; the caller has checked [`applies`].
pub(crate) fn run(a: &Tensor, b: &Tensor, s: &ConvShape, direction: Direction) -> Result<Tensor> {
    let gpu = a.gpu();
    let (taps, pixels) = sizes(s);
    as_u32("conv2d (matrix products)", "columns", taps * pixels)?;
    let params = GemmConvParams {
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
        pixel_major: 0,
    };
    let im2col = |x: &Tensor| -> Result<Tensor> {
        let cols = Tensor::empty(gpu, &[taps, pixels], DType::F32)?;
        launch(&k::IM2COL, &params, (x, &cols), taps * pixels)?;
        Ok(cols)
    };
    match direction {
        Direction::Forward => {
            let (x, w) = (a, b);
            let cols = im2col(x)?;
            let product = Tensor::empty(gpu, &[s.co, pixels], DType::F32)?;
            let pixel_major = transposed_keeps_more_busy(gpu, s.co, pixels);
            if pixel_major {
                let (cl, wl) = (Layout::transposed(pixels), Layout::transposed(taps));
                matmul_batched_into((&cols, cl), (w, wl), &product, [pixels, s.co, taps], 1)?;
            } else {
                let (wl, cl) = (Layout::row_major(taps), Layout::row_major(pixels));
                matmul_batched_into((w, wl), (&cols, cl), &product, [s.co, pixels, taps], 1)?;
            }
            drop(cols);
            let y = Tensor::empty(gpu, &s.output_shape(), DType::F32)?;
            let params = GemmConvParams {
                pixel_major: pixel_major as u32,
                ..params
            };
            launch(&k::TO_NCHW, &params, (&product, &y), y.numel())?;
            Ok(y)
        }
        Direction::BackwardInput => {
            let (dy, w) = (a, b);
            // dy is moved to [Co][P] either way; the pixel-major product reads it transposed,
            // so the rows a subgroup loads lie next to each other rather than Co apart
            // (measured the same or slightly faster than moving it to [P][Co]).
            let dyp = Tensor::empty(gpu, &[s.co, pixels], DType::F32)?;
            launch(&k::FROM_NCHW, &params, (dy, &dyp), dy.numel())?;
            let pixel_major = transposed_keeps_more_busy(gpu, taps, pixels);
            let params = GemmConvParams {
                pixel_major: pixel_major as u32,
                ..params
            };
            let dcols = Tensor::empty(gpu, &[taps, pixels], DType::F32)?;
            if pixel_major {
                // dcols^T [P][K] = dy^T [P][Co] x W [Co][K].
                let (dl, wl) = (Layout::transposed(pixels), Layout::row_major(taps));
                matmul_batched_into((&dyp, dl), (w, wl), &dcols, [pixels, taps, s.co], 1)?;
            } else {
                // dcols [K][P] = W^T [K][Co] x dy [Co][P].
                let (wl, dl) = (Layout::transposed(taps), Layout::row_major(pixels));
                matmul_batched_into((w, wl), (&dyp, dl), &dcols, [taps, pixels, s.co], 1)?;
            }
            drop(dyp);
            let dx = Tensor::empty(gpu, &[s.n, s.ci, s.h, s.w], DType::F32)?;
            launch(&k::COL2IM, &params, (&dcols, &dx), dx.numel())?;
            Ok(dx)
        }
        Direction::BackwardWeight => {
            let (x, dy) = (a, b);
            let cols = im2col(x)?;
            let dyp = Tensor::empty(gpu, &[s.co, pixels], DType::F32)?;
            launch(&k::FROM_NCHW, &params, (dy, &dyp), dy.numel())?;
            // dw [Co][K] = dy [Co][P] x cols^T [P][K].
            let dw = Tensor::empty(gpu, &[s.co, s.ci, s.k, s.k], DType::F32)?;
            let (dl, cl) = (Layout::row_major(pixels), Layout::transposed(pixels));
            matmul_batched_into((&dyp, dl), (&cols, cl), &dw, [s.co, taps, pixels], 1)?;
            Ok(dw)
        }
    }
}
