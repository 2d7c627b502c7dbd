//! Matrix products: [`matmul`] and the fully connected layer [`linear`], each with its
//! `*_forward` / `*_backward` launchers. Transposed operands are read through strides, never
//! copied.

use super::reduce::channel_reduce;
use super::{as_u32, expect_rank};
use crate::error::{Error, Result};
use crate::kernels::matmul::{self as k, MatmulParams};
use crate::tensor::{DType, Tensor};

/// How an operand's elements are laid out: element (i, j) is at `i * row + j * col`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    row: usize,
    col: usize,
}

impl Layout {
    /// Row-major storage of an `[rows, cols]` matrix.
    pub(crate) fn row_major(cols: usize) -> Self {
        Layout { row: cols, col: 1 }
    }

    /// The transpose of a row-major `[cols, rows]` matrix.
    pub(crate) fn transposed(rows_of_stored: usize) -> Self {
        Layout {
            row: 1,
            col: rows_of_stored,
        }
    }
}

/// `C[m, n] = A[m, k] B[k, n] (+ bias[n])` with the given operand layouts (no autograd).
pub(crate) fn matmul_raw(
    (a, la): (&Tensor, Layout),
    (b, lb): (&Tensor, Layout),
    [m, n, k]: [usize; 3],
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let c = Tensor::empty(a.gpu(), &[m, n], DType::F32)?;
    let p = MatmulParams {
        has_bias: bias.is_some() as u32,
        sam: la.row as u32,
        sak: la.col as u32,
        sbk: lb.row as u32,
        sbn: lb.col as u32,
        ..sizes([m, n, k], 1)?
    };
    launch_matmul(&p, [a, b, bias.unwrap_or(a), &c], 1)?;
    Ok(c)
}

/// `batch` products `C[z] = A[z] B[z]`, `A[z]` `[m, k]` and `B[z]` `[k, n]` laid out as `la`
/// and `lb` say, `C[z]` `[m, n]` row-major, stored one after another in `a`, `b` and `c` (no
/// autograd).
pub(crate) fn matmul_batched_into(
    (a, la): (&Tensor, Layout),
    (b, lb): (&Tensor, Layout),
    c: &Tensor,
    [m, n, k]: [usize; 3],
    batch: usize,
) -> Result<()> {
    for (t, what, len) in [(a, "A", m * k), (b, "B", k * n), (c, "C", m * n)] {
        if t.numel() < batch * len {
            return Err(Error::shape(
                "matmul",
                format!(
                    "{what} holds {} elements, {batch} matrices need {}",
                    t.numel(),
                    batch * len
                ),
            ));
        }
    }
    let p = MatmulParams {
        sam: la.row as u32,
        sak: la.col as u32,
        sbk: lb.row as u32,
        sbn: lb.col as u32,
        batch_a: (m * k) as u32,
        batch_b: (k * n) as u32,
        batch_c: (m * n) as u32,
        ..sizes([m, n, k], batch)?
    };
    launch_matmul(&p, [a, b, a, c], batch)
}

/// Parameters holding the sizes, checked to fit the kernels' 32-bit indices.
fn sizes([m, n, k]: [usize; 3], batch: usize) -> Result<MatmulParams> {
    for (what, v) in [
        ("rows", m),
        ("columns", n),
        ("inner size", k),
        ("elements", batch * m * n),
        ("elements of A", batch * m * k),
        ("elements of B", batch * k * n),
    ] {
        as_u32("matmul", what, v)?;
    }
    Ok(MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        ..Default::default()
    })
}

/// The block of C one workgroup of the family's matmul kernel computes: (rows, columns).
fn matmul_block(gpu: &crate::Gpu) -> (usize, usize) {
    if gpu.uses_subgroup_kernels() {
        (16, 128)
    } else {
        (4, 256)
    }
}

/// The share of its workgroups' columns a product `n` columns wide keeps busy.
fn column_use(n: usize, columns: usize) -> f64 {
    n as f64 / n.next_multiple_of(columns) as f64
}

/// How much faster the subgroup family's four-column form runs than its two-column form at
/// equal busy columns: 1.25 at 1024 x 1024 x 1024 on lavapipe, and 1.1-1.3 at the
/// convolutions' products (128 by 1280-1728 over 1280).
const WIDE_GAIN: f64 = 1.25;

/// The kernel form the launcher uses for a product `n` columns wide on this family: whether
/// it is the four-column form, and the columns one workgroup spans.
fn column_form(gpu: &crate::Gpu, n: usize) -> (bool, usize) {
    let columns = matmul_block(gpu).1;
    let wide = gpu.uses_subgroup_kernels() && column_use(n, 2 * columns) >= column_use(n, columns);
    (wide, if wide { 2 * columns } else { columns })
}

/// The expected throughput of a product `n` columns wide, relative to the two-column form
/// with every column busy.
fn column_rate(gpu: &crate::Gpu, n: usize) -> f64 {
    let (wide, columns) = column_form(gpu, n);
    column_use(n, columns) * if wide { WIDE_GAIN } else { 1.0 }
}

/// Whether a product of `rows` by `columns` runs faster computed transposed: its workgroups
/// span many more columns than rows, so a narrow product (few tiles or pixels late in a
/// network) would leave most of each block idle, or only the transposed product is wide
/// enough for the four-column form.
pub(crate) fn transposed_keeps_more_busy(gpu: &crate::Gpu, rows: usize, columns: usize) -> bool {
    column_rate(gpu, rows) > column_rate(gpu, columns)
}

/// Launches the family's matmul kernel over `batch` products: buffers (a, b, bias, c).
fn launch_matmul(p: &MatmulParams, buffers: [&Tensor; 4], batch: usize) -> Result<()> {
    let gpu = buffers[0].gpu();
    let subgroups = gpu.uses_subgroup_kernels();
    let (m, n) = (p.m as usize, p.n as usize);
    let rows_per_group = matmul_block(gpu).0;
    let (wide, columns_per_group) = column_form(gpu, n);
    // An invocation's columns of B adjacent, and each pair (quad) of them aligned.
    let aligned = |to: u32| p.sbn == 1 && [p.n, p.sbk, p.batch_b].iter().all(|v| v % to == 0);
    let kernel = if !subgroups {
        &k::MATMUL
    } else if wide {
        // As many columns busy with twice as many per invocation: more FMAs per load.
        if aligned(4) {
            &k::MATMUL_SUBGROUP_QUADS
        } else {
            &k::MATMUL_SUBGROUP_WIDE
        }
    } else if aligned(2) {
        &k::MATMUL_SUBGROUP_PAIRS
    } else {
        &k::MATMUL_SUBGROUP
    };
    let row_blocks = m.div_ceil(rows_per_group);
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if row_blocks > max || batch > max {
        return Err(Error::shape(
            "matmul",
            format!("{m} rows in {batch} products exceed what one dispatch covers"),
        ));
    }
    gpu.launch(
        kernel,
        p,
        &buffers.map(|t| t.buffer()),
        [
            n.div_ceil(columns_per_group) as u32,
            row_blocks as u32,
            batch as u32,
        ],
    )
}

/// `a [M, K] x b [K, N]` (no autograd).
pub fn matmul_forward(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let n = b.shape()[1];
    matmul_raw(
        (a, Layout::row_major(k)),
        (b, Layout::row_major(n)),
        [m, n, k],
        None,
    )
}

/// Gradients of `a b`: `dA = dy b^T` and `dB = a^T dy`, each only where `needs` says so.
pub fn matmul_backward(
    dy: &Tensor,
    a: &Tensor,
    b: &Tensor,
    needs: [bool; 2],
) -> Result<[Option<Tensor>; 2]> {
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let n = b.shape()[1];
    let da = needs[0]
        .then(|| {
            matmul_raw(
                (dy, Layout::row_major(n)),
                (b, Layout::transposed(n)),
                [m, k, n],
                None,
            )
        })
        .transpose()?;
    let db = needs[1]
        .then(|| {
            matmul_raw(
                (a, Layout::transposed(k)),
                (dy, Layout::row_major(n)),
                [k, n, m],
                None,
            )
        })
        .transpose()?;
    Ok([da, db])
}

/// `x [N, in] weight^T + bias` for `weight [out, in]` (no autograd).
pub fn linear_forward(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (batch, inputs) = (x.shape()[0], x.shape()[1]);
    let outputs = weight.shape()[0];
    matmul_raw(
        (x, Layout::row_major(inputs)),
        (weight, Layout::transposed(inputs)),
        [batch, outputs, inputs],
        Some(bias),
    )
}

/// Gradients of [`linear`]: `dx = dy W`, `dW = dy^T x`, `db` = column sums of `dy`, each only
/// where `needs` says so.
pub fn linear_backward(
    dy: &Tensor,
    x: &Tensor,
    weight: &Tensor,
    needs: [bool; 3],
) -> Result<[Option<Tensor>; 3]> {
    let (batch, inputs) = (x.shape()[0], x.shape()[1]);
    let outputs = weight.shape()[0];
    let dx = needs[0]
        .then(|| {
            matmul_raw(
                (dy, Layout::row_major(outputs)),
                (weight, Layout::row_major(inputs)),
                [batch, inputs, outputs],
                None,
            )
        })
        .transpose()?;
    let dw = needs[1]
        .then(|| {
            matmul_raw(
                (dy, Layout::transposed(outputs)),
                (x, Layout::row_major(inputs)),
                [outputs, inputs, batch],
                None,
            )
        })
        .transpose()?;
    let db = needs[2]
        .then(|| channel_reduce(dy, None, batch, outputs, 1))
        .transpose()?;
    Ok([dx, dw, db])
}

/// Matrix product of `a` `[M, K]` and `b` `[K, N]`.
///
/// ```no_run
/// use repopt_tensor::{ops::matmul, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
/// let b = Tensor::from_slice(&gpu, &[1.0, 0.0, 0.0, 1.0], &[2, 2])?;
/// assert_eq!(matmul(&a, &b)?.to_vec()?, vec![1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    expect_rank("matmul", "left operand", a, 2)?;
    expect_rank("matmul", "right operand", b, 2)?;
    a.same_gpu("matmul", b)?;
    let k = a.shape()[1];
    let k2 = b.shape()[0];
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("inner sizes differ: {:?} x {:?}", a.shape(), b.shape()),
        ));
    }
    let out = matmul_forward(a, b)?;
    let (ad, bd) = (a.detach(), b.detach());
    let needs = [a.requires_grad(), b.requires_grad()];
    Ok(Tensor::from_op(out, &[a, b], "matmul", move |g| {
        Ok(matmul_backward(g, &ad, &bd, needs)?.to_vec())
    }))
}

/// Fully connected layer: `x` `[N, in]`, `weight` `[out, in]`, `bias` `[out]` -> `x weight^T + bias`.
///
/// ```no_run
/// use repopt_tensor::{ops::linear, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let x = Tensor::from_slice(&gpu, &[1.0, 2.0], &[1, 2])?;
/// let w = Tensor::parameter(&gpu, &[1.0, 1.0, 0.0, 1.0, 2.0, 0.0], &[3, 2])?;
/// let b = Tensor::parameter(&gpu, &[0.5, 0.0, 0.0], &[3])?;
/// assert_eq!(linear(&x, &w, &b)?.to_vec()?, vec![3.5, 2.0, 2.0]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    expect_rank("linear", "input", x, 2)?;
    expect_rank("linear", "weight", weight, 2)?;
    expect_rank("linear", "bias", bias, 1)?;
    x.same_gpu("linear", weight)?;
    x.same_gpu("linear", bias)?;
    let inputs = x.shape()[1];
    let outputs = weight.shape()[0];
    if weight.shape()[1] != inputs || bias.numel() != outputs {
        return Err(Error::shape(
            "linear",
            format!(
                "input {:?}, weight {:?} and bias {:?} do not fit together (weight must be [out, {inputs}], bias [out])",
                x.shape(),
                weight.shape(),
                bias.shape()
            ),
        ));
    }
    let out = linear_forward(x, weight, bias)?;
    let (xd, wd) = (x.detach(), weight.detach());
    let needs = [
        x.requires_grad(),
        weight.requires_grad(),
        bias.requires_grad(),
    ];
    Ok(Tensor::from_op(
        out,
        &[x, weight, bias],
        "linear",
        move |g| Ok(linear_backward(g, &xd, &wd, needs)?.to_vec()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gpu;

    /// Batched products (the Winograd convolution's) read B in vectors where it is aligned,
    /// and both forms give the f64 product.
    #[test]
    fn batched_products_read_b_in_vectors_where_aligned() {
        let gpu = Gpu::from_env().unwrap();
        gpu.set_profiling(true);
        let (m, k, batch) = (5, 3, 3);
        for (n, kernel) in [
            (256usize, "matmul_subgroup_vec.wgsl::matmul_wide"),
            (258, "matmul_subgroup_vec.wgsl::matmul"),
            (257, "matmul_subgroup.wgsl::matmul"),
        ] {
            let value = |i: usize, seed: usize| ((i * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0;
            let ad: Vec<f32> = (0..batch * m * k).map(|i| value(i, 1)).collect();
            let bd: Vec<f32> = (0..batch * k * n).map(|i| value(i, 2)).collect();
            let a = Tensor::from_slice(&gpu, &ad, &[batch * m * k]).unwrap();
            let b = Tensor::from_slice(&gpu, &bd, &[batch * k * n]).unwrap();
            let c = Tensor::empty(&gpu, &[batch * m * n], DType::F32).unwrap();
            let calls = |g: &Gpu| {
                g.kernel_profile()
                    .iter()
                    .filter(|t| t.kernel == kernel)
                    .map(|t| t.calls)
                    .sum::<u64>()
            };
            let before = calls(&gpu);
            let layouts = (Layout::row_major(k), Layout::row_major(n));
            matmul_batched_into((&a, layouts.0), (&b, layouts.1), &c, [m, n, k], batch).unwrap();
            let got = c.to_vec().unwrap();
            for z in 0..batch {
                for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                    let want: f64 = (0..k)
                        .map(|t| ad[(z * m + i) * k + t] as f64 * bd[(z * k + t) * n + j] as f64)
                        .sum();
                    let g = got[(z * m + i) * n + j] as f64;
                    assert!((g - want).abs() <= 1e-5 + 1e-5 * want.abs(), "n {n} z {z}");
                }
            }
            if gpu.uses_subgroup_kernels() {
                assert_eq!(calls(&gpu) - before, 1, "n {n}: {kernel}");
            }
        }
    }
}
