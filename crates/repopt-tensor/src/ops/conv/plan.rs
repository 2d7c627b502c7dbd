//! Which kernels run one convolution, on which grids: every choice between kernel families
//! and variants is made here, from the shape and the device, and nowhere else, so that a
//! tuner can replace it. The kernels themselves are in `shaders/conv.wgsl` (plain) and
//! `shaders/conv_subgroup.wgsl`; `super` runs whatever plan it is given.

use super::{ConvShape, TC};
use crate::device::Gpu;
use crate::kernels::Kernel;
use crate::kernels::conv::{self as k, ConvParams};
use crate::ops::groups;

/// A kernel family: one set of kernels covering every direction of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// Packed weights, 16 channels per invocation; any kernel size; every adapter.
    Plain,
    /// Loads shared across subgroups of 8 with `subgroupBroadcast`, two pixels per
    /// invocation; 1x1 and 3x3 only.
    Subgroup,
}

/// One recorded dispatch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dispatch {
    pub kernel: &'static Kernel<ConvParams>,
    pub params: ConvParams,
    pub grid: [u32; 3],
}

/// Everything one direction of one convolution launches, in order: optionally pack the
/// second operand (the weights) into `packed_len` floats, then the main dispatches (several
/// when each covers one parity class of pixels) into an output that is zeroed first if
/// `zero_output`, then optionally sum `splits` partial results into the final output.
#[derive(Clone, Debug)]
pub(crate) struct ConvPlan {
    pub pack: Option<(Dispatch, usize)>,
    pub main: Vec<Dispatch>,
    pub zero_output: bool,
    pub splits: usize,
    pub sum_splits: Option<Dispatch>,
}

impl ConvPlan {
    fn new(main: Vec<Dispatch>) -> Self {
        ConvPlan {
            pack: None,
            main,
            zero_output: false,
            splits: 1,
            sum_splits: None,
        }
    }
}

/// Which family runs this shape: subgroup kernels cover 1x1 and 3x3 at strides 1 and 2, what
/// the models use; other shapes run on the plain family on every adapter.
pub(crate) fn family(gpu: &Gpu, s: &ConvShape) -> Family {
    // The 3x3 kernels share each row's inputs between a pair of pixels `stride` apart, which
    // they know for strides 1 and 2 only.
    let covered = s.k == 1 || (s.k == 3 && s.cfg.stride <= 2);
    if gpu.uses_subgroup_kernels() && covered {
        Family::Subgroup
    } else {
        Family::Plain
    }
}

/// Grid over pixel pairs (the subgroup kernels give each invocation two adjacent pixels).
fn pair_grid(gpu: &Gpu, n: usize, rows: usize, cols: usize, channel_blocks: usize) -> [u32; 3] {
    let mut grid = gpu.grid(groups(n * rows * cols.div_ceil(2), 64));
    grid[2] = channel_blocks as u32;
    grid
}

/// The plain family: pack the weights with `packer` so that the `channels` this direction
/// produces are contiguous per `(other channel, tap)` row (`rows` of them, padded to a
/// multiple of 16), then run `kernel` over `pixels` pixels and blocks of 16 channels.
fn plain(
    gpu: &Gpu,
    s: &ConvShape,
    (packer, kernel): (&'static Kernel<ConvParams>, &'static Kernel<ConvParams>),
    channels: usize,
    rows: usize,
    pixels: usize,
) -> ConvPlan {
    let cpad = channels.next_multiple_of(TC);
    let params = s.params(cpad);
    let len = rows * cpad;
    let pack = Dispatch {
        kernel: packer,
        params,
        grid: gpu.grid(groups(len, 256)),
    };
    let mut grid = gpu.grid(groups(pixels, 64));
    grid[2] = (cpad / TC) as u32;
    ConvPlan {
        pack: Some((pack, len)),
        ..ConvPlan::new(vec![Dispatch {
            kernel,
            params,
            grid,
        }])
    }
}

/// `y = conv(x, w)`: bindings (x, w or packed w, y).
pub(crate) fn forward(gpu: &Gpu, s: &ConvShape) -> ConvPlan {
    if family(gpu, s) == Family::Subgroup {
        let kernel = if s.k == 3 {
            &k::CONV3_FORWARD
        } else {
            &k::CONV1_FORWARD
        };
        let grid = pair_grid(gpu, s.n, s.oh, s.ow, s.co.div_ceil(TC));
        return ConvPlan::new(vec![Dispatch {
            kernel,
            params: s.params(0),
            grid,
        }]);
    }
    let kernels = (&k::PACK_FORWARD, &k::FORWARD);
    plain(gpu, s, kernels, s.co, s.ci * s.k * s.k, s.n * s.oh * s.ow)
}

/// `dx = conv_transpose(dy, w)`: bindings (dy, w or packed w, dx).
pub(crate) fn backward_input(gpu: &Gpu, s: &ConvShape) -> ConvPlan {
    let subgroups = family(gpu, s) == Family::Subgroup;
    if subgroups && s.k == 3 && s.cfg.stride == 2 {
        // One dispatch per parity class of input pixels; each covers its own pixels. (One
        // dispatch for all four, the class taken from the workgroup's index rather than the
        // parameters, measured 1.4 to 3 times slower on lavapipe.)
        let mut main = Vec::new();
        for phase in 0..4u32 {
            let (ph, pw) = ((phase / 2) as usize, (phase % 2) as usize);
            let rows = (s.h + 1 - ph) / 2;
            let cols = (s.w + 1 - pw) / 2;
            if rows == 0 || cols == 0 {
                continue;
            }
            let mut params = s.params(0);
            params.phase = phase;
            main.push(Dispatch {
                kernel: &k::CONV3_BACKWARD_INPUT_S2,
                params,
                grid: pair_grid(gpu, s.n, rows, cols, s.ci.div_ceil(TC)),
            });
        }
        return ConvPlan::new(main);
    }
    // 1x1 without padding runs over the output grid; with a stride, the input pixels no
    // output pixel reads from keep the zeros they start with.
    let unpadded_1x1 = s.k == 1 && s.cfg.padding == 0;
    if subgroups && (unpadded_1x1 || (s.k == 3 && s.cfg.stride == 1)) {
        let (kernel, grid) = if s.k == 1 {
            (
                &k::CONV1_BACKWARD_INPUT,
                pair_grid(gpu, s.n, s.oh, s.ow, s.ci.div_ceil(TC)),
            )
        } else {
            (
                &k::CONV3_BACKWARD_INPUT,
                pair_grid(gpu, s.n, s.h, s.w, s.ci.div_ceil(TC)),
            )
        };
        return ConvPlan {
            zero_output: s.k == 1 && s.cfg.stride > 1,
            ..ConvPlan::new(vec![Dispatch {
                kernel,
                params: s.params(0),
                grid,
            }])
        };
    }
    let kernels = (&k::PACK_INPUT, &k::BACKWARD_INPUT);
    plain(gpu, s, kernels, s.ci, s.co * s.k * s.k, s.n * s.h * s.w)
}

/// The weight-gradient kernel and its grid's x and y (z holds the splits).
fn weight_grad_layout(s: &ConvShape, family: Family) -> (&'static Kernel<ConvParams>, [u32; 2]) {
    match family {
        Family::Subgroup => {
            let (kernel, rows) = if s.k == 3 {
                (&k::CONV3_BACKWARD_WEIGHT, s.ci * 3)
            } else {
                (&k::CONV1_BACKWARD_WEIGHT, s.ci)
            };
            (kernel, [groups(rows, 64), s.co.div_ceil(8) as u32])
        }
        Family::Plain => (
            &k::BACKWARD_WEIGHT,
            [groups(s.ci * s.k * s.k, 64), s.co.div_ceil(TC) as u32],
        ),
    }
}

/// Workgroups that keep the adapter busy: 512 for a GPU; 16 per host core for a CPU adapter
/// (lavapipe runs a thread per core), where more only add partial sums to write and add up.
/// On 2 cores the direct weight gradients of small layers (12 to 48 channels, batch 64,
/// 28x28 to 4x4 images) measured 1.15-1.5x faster with 32 than with 512, and A0's and B1's
/// stage shapes the same or faster.
pub(crate) fn busy_workgroups(gpu: &Gpu) -> usize {
    if gpu.adapter().is_software() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        16 * cores
    } else {
        512
    }
}

/// How many partial sums the weight gradient uses: enough workgroups to keep the adapter
/// busy (`busy`) when the weight is small, one when it is large. Returns `(splits, rows per
/// split)`.
pub(crate) fn weight_grad_splits(s: &ConvShape, family: Family, busy: usize) -> (usize, usize) {
    let [gx, gy] = weight_grad_layout(s, family).1;
    let base = (gx * gy) as usize;
    let rows = s.n * s.oh;
    let wanted = busy.div_ceil(base).clamp(1, 64).min(rows);
    let rows_per_split = rows.div_ceil(wanted);
    (rows.div_ceil(rows_per_split), rows_per_split)
}

/// `dw = sum over pixels of dy x^T`: bindings (x, dy, dw or its partial sums).
pub(crate) fn backward_weight(gpu: &Gpu, s: &ConvShape) -> ConvPlan {
    let family = family(gpu, s);
    let (kernel, [gx, gy]) = weight_grad_layout(s, family);
    let (splits, rows_per_split) = weight_grad_splits(s, family, busy_workgroups(gpu));
    let mut params = s.params(0);
    params.splits = splits as u32;
    params.rows_per_split = rows_per_split as u32;
    let len = s.co * s.ci * s.k * s.k;
    ConvPlan {
        splits,
        sum_splits: (splits > 1).then(|| Dispatch {
            kernel: &k::SUM_SPLITS,
            params,
            grid: gpu.grid(groups(len, 256)),
        }),
        ..ConvPlan::new(vec![Dispatch {
            kernel,
            params,
            grid: [gx, gy, splits as u32],
        }])
    }
}
