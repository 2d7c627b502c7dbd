//! Matrix products: [`matmul`] and the fully connected layer [`linear`].

use bytemuck::{Pod, Zeroable};

use super::elementwise::channel_reduce;
use super::{as_u32, expect_rank};
use crate::error::{Error, Result};
use crate::launch::shaders::{MATMUL, MATMUL_SUBGROUP};
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    sam: u32,
    sak: u32,
    sbk: u32,
    sbn: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

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
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_raw(
    a: &Tensor,
    la: Layout,
    b: &Tensor,
    lb: Layout,
    m: usize,
    n: usize,
    k: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let subgroups = a.gpu().uses_subgroup_kernels();
    let row_blocks = if subgroups {
        m.div_ceil(16)
    } else {
        m.div_ceil(4)
    };
    if row_blocks > a.gpu().limits().max_compute_workgroups_per_dimension as usize {
        return Err(Error::shape(
            "matmul",
            format!("{m} rows exceed what one dispatch covers"),
        ));
    }
    for (what, v) in [
        ("rows", m),
        ("columns", n),
        ("inner size", k),
        ("elements", m * n),
    ] {
        as_u32("matmul", what, v)?;
    }
    let p = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        has_bias: bias.is_some() as u32,
        sam: la.row as u32,
        sak: la.col as u32,
        sbk: lb.row as u32,
        sbn: lb.col as u32,
        accumulate: 0,
        _pad: [0; 3],
    };
    let c = Tensor::empty(a.gpu(), &[m, n], DType::F32)?;
    let gpu = a.gpu();
    let (shader, columns_per_group) = if subgroups {
        (&MATMUL_SUBGROUP, 128)
    } else {
        (&MATMUL, 256)
    };
    gpu.launch(
        shader,
        "matmul",
        bytemuck::bytes_of(&p),
        &[
            a.buffer(),
            b.buffer(),
            bias.unwrap_or(a).buffer(),
            c.buffer(),
        ],
        [n.div_ceil(columns_per_group) as u32, row_blocks as u32, 1],
    );
    Ok(c)
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
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let (k2, n) = (b.shape()[0], b.shape()[1]);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("inner sizes differ: {:?} x {:?}", a.shape(), b.shape()),
        ));
    }
    let out = matmul_raw(
        a,
        Layout::row_major(k),
        b,
        Layout::row_major(n),
        m,
        n,
        k,
        None,
    )?;
    let (ad, bd) = (a.detach(), b.detach());
    let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
    Ok(Tensor::from_op(out, &[a, b], "matmul", move |g| {
        Ok(vec![
            // dA = G B^T
            if need_a {
                Some(matmul_raw(
                    g,
                    Layout::row_major(n),
                    &bd,
                    Layout::transposed(n),
                    m,
                    k,
                    n,
                    None,
                )?)
            } else {
                None
            },
            // dB = A^T G
            if need_b {
                Some(matmul_raw(
                    &ad,
                    Layout::transposed(k),
                    g,
                    Layout::row_major(n),
                    k,
                    n,
                    m,
                    None,
                )?)
            } else {
                None
            },
        ])
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
    let (batch, inputs) = (x.shape()[0], x.shape()[1]);
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
    let out = matmul_raw(
        x,
        Layout::row_major(inputs),
        weight,
        Layout::transposed(inputs),
        batch,
        outputs,
        inputs,
        Some(bias),
    )?;
    let (xd, wd) = (x.detach(), weight.detach());
    let (need_x, need_w, need_b) = (
        x.requires_grad(),
        weight.requires_grad(),
        bias.requires_grad(),
    );
    Ok(Tensor::from_op(
        out,
        &[x, weight, bias],
        "linear",
        move |g| {
            Ok(vec![
                // dx = G W
                if need_x {
                    Some(matmul_raw(
                        g,
                        Layout::row_major(outputs),
                        &wd,
                        Layout::row_major(inputs),
                        batch,
                        inputs,
                        outputs,
                        None,
                    )?)
                } else {
                    None
                },
                // dW = G^T x
                if need_w {
                    Some(matmul_raw(
                        g,
                        Layout::transposed(outputs),
                        &xd,
                        Layout::row_major(inputs),
                        outputs,
                        inputs,
                        batch,
                        None,
                    )?)
                } else {
                    None
                },
                // db = column sums of G
                if need_b {
                    Some(channel_reduce(g, None, batch, outputs, 1)?)
                } else {
                    None
                },
            ])
        },
    ))
}
