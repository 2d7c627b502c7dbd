//! CPU reference implementations in f64 of every kernel, for tests.
//!
//! Plain loops that follow the definitions (and PyTorch's semantics) with no cleverness, so
//! that a disagreement with a GPU kernel points at the kernel.

mod quant;

pub use quant::{abs_max_per_channel, fake_quant, fake_quant_per_channel, histogram, min_max};

/// `y[n, co, oh, ow] = sum w[co, ci, kh, kw] x[n, ci, oh*s+kh-p, ow*s+kw-p]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    stride: usize,
    pad: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, ci, h, wd] = xs;
    let [co, _, k, _] = ws;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for o in 0..co {
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = 0.0;
                    for c in 0..ci {
                        for kh in 0..k {
                            for kw in 0..k {
                                let ih = (i * stride + kh) as isize - pad as isize;
                                let iw = (j * stride + kw) as isize - pad as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                s += w[((o * ci + c) * k + kh) * k + kw]
                                    * x[((b * ci + c) * h + ih as usize) * wd + iw as usize];
                            }
                        }
                    }
                    y[((b * co + o) * oh + i) * ow + j] = s;
                }
            }
        }
    }
    (y, [n, co, oh, ow])
}

/// Gradients of [`conv2d`] with respect to its input and weight, given `dy`.
pub fn conv2d_backward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    dy: &[f64],
    stride: usize,
    pad: usize,
) -> (Vec<f64>, Vec<f64>) {
    let [n, ci, h, wd] = xs;
    let [co, _, k, _] = ws;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for b in 0..n {
        for o in 0..co {
            for i in 0..oh {
                for j in 0..ow {
                    let g = dy[((b * co + o) * oh + i) * ow + j];
                    for c in 0..ci {
                        for kh in 0..k {
                            for kw in 0..k {
                                let ih = (i * stride + kh) as isize - pad as isize;
                                let iw = (j * stride + kw) as isize - pad as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * ci + c) * h + ih as usize) * wd + iw as usize;
                                let wi = ((o * ci + c) * k + kh) * k + kw;
                                dx[xi] += w[wi] * g;
                                dw[wi] += x[xi] * g;
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

/// Depthwise convolution, `w` `[C, 1, k, k]`:
/// `y[n, c, oh, ow] = sum w[c, 0, kh, kw] x[n, c, oh*s+kh-p, ow*s+kw-p]`.
pub fn depthwise_conv2d(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    k: usize,
    stride: usize,
    pad: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let mut y = vec![0.0; n * c * oh * ow];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = 0.0;
                    for kh in 0..k {
                        for kw in 0..k {
                            let ih = (i * stride + kh) as isize - pad as isize;
                            let iw = (j * stride + kw) as isize - pad as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                continue;
                            }
                            s += w[(ch * k + kh) * k + kw]
                                * x[((b * c + ch) * h + ih as usize) * wd + iw as usize];
                        }
                    }
                    y[((b * c + ch) * oh + i) * ow + j] = s;
                }
            }
        }
    }
    (y, [n, c, oh, ow])
}

/// Gradients of [`depthwise_conv2d`] with respect to its input and weight, given `dy`.
pub fn depthwise_conv2d_backward(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    k: usize,
    dy: &[f64],
    stride: usize,
    pad: usize,
) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, wd] = xs;
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (wd + 2 * pad - k) / stride + 1;
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let g = dy[((b * c + ch) * oh + i) * ow + j];
                    for kh in 0..k {
                        for kw in 0..k {
                            let ih = (i * stride + kh) as isize - pad as isize;
                            let iw = (j * stride + kw) as isize - pad as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wd as isize {
                                continue;
                            }
                            let xi = ((b * c + ch) * h + ih as usize) * wd + iw as usize;
                            let wi = (ch * k + kh) * k + kw;
                            dx[xi] += w[wi] * g;
                            dw[wi] += x[xi] * g;
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

/// `relu6(x + 3) / 6`, as `torch.nn.functional.hardsigmoid`.
pub fn hard_sigmoid(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| (v + 3.0).clamp(0.0, 6.0) / 6.0).collect()
}

/// Gradient of [`hard_sigmoid`] as PyTorch computes it: `dy / 6` strictly inside (-3, 3),
/// 0 elsewhere, the kinks included.
pub fn hard_sigmoid_backward(x: &[f64], dy: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(v, g)| if *v > -3.0 && *v < 3.0 { g / 6.0 } else { 0.0 })
        .collect()
}

/// Threefry-2x32 with 20 rounds (Salmon et al., SC 2011; Random123's `threefry2x32`) of
/// `counter` under `key`.
pub fn threefry2x32(counter: [u32; 2], key: [u32; 2]) -> [u32; 2] {
    const ROTATIONS: [u32; 8] = [13, 15, 26, 6, 17, 29, 16, 24];
    let ks = [key[0], key[1], 0x1BD1_1BDA ^ key[0] ^ key[1]];
    let mut x = [
        counter[0].wrapping_add(ks[0]),
        counter[1].wrapping_add(ks[1]),
    ];
    for round in 0..20 {
        x[0] = x[0].wrapping_add(x[1]);
        x[1] = x[1].rotate_left(ROTATIONS[round % 8]) ^ x[0];
        if round % 4 == 3 {
            let s = round / 4 + 1;
            x[0] = x[0].wrapping_add(ks[s % 3]);
            x[1] = x[1].wrapping_add(ks[(s + 1) % 3]).wrapping_add(s as u32);
        }
    }
    x
}

/// The dropout mask `ops::dropout` draws for `n` elements: element `i` is kept unless
/// `u = bits / 2^32 < p`, where `bits` is the first word of [`threefry2x32`] of the counter
/// `(i, 0)` under the key `(low, high)` 32 bits of `seed`.
pub fn dropout_mask(n: usize, p: f64, seed: u64) -> Vec<bool> {
    let key = [seed as u32, (seed >> 32) as u32];
    (0..n)
        .map(|i| {
            let bits = threefry2x32([i as u32, 0], key)[0];
            bits as f64 / 4_294_967_296.0 >= p
        })
        .collect()
}

/// Batch norm in training mode over `[N, C, HW]`: returns the output, the batch mean, the
/// biased batch variance, and the running statistics after one update.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    momentum: f64,
    eps: f64,
    relu: bool,
) -> BatchNormOutput {
    let m = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals = (0..n).flat_map(|b| (0..hw).map(move |i| (b * c + ch) * hw + i));
        mean[ch] = vals.clone().map(|i| x[i]).sum::<f64>() / m;
        var[ch] = vals.map(|i| (x[i] - mean[ch]).powi(2)).sum::<f64>() / m;
    }
    let y = normalize(x, n, c, hw, &mean, &var, gamma, beta, eps, relu);
    let rm = (0..c)
        .map(|ch| (1.0 - momentum) * running_mean[ch] + momentum * mean[ch])
        .collect();
    let rv = (0..c)
        .map(|ch| (1.0 - momentum) * running_var[ch] + momentum * var[ch] * m / (m - 1.0))
        .collect();
    BatchNormOutput {
        y,
        mean,
        var,
        running_mean: rm,
        running_var: rv,
    }
}

/// What [`batch_norm_train`] computes.
#[derive(Clone, Debug)]
pub struct BatchNormOutput {
    /// Normalised output.
    pub y: Vec<f64>,
    /// Batch mean per channel.
    pub mean: Vec<f64>,
    /// Biased batch variance per channel.
    pub var: Vec<f64>,
    /// Running mean after the update.
    pub running_mean: Vec<f64>,
    /// Running (unbiased) variance after the update.
    pub running_var: Vec<f64>,
}

/// `gamma (x - mean) / sqrt(var + eps) + beta`, optionally followed by ReLU.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    mean: &[f64],
    var: &[f64],
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    relu: bool,
) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..hw {
                let j = (b * c + ch) * hw + i;
                let v = gamma[ch] * (x[j] - mean[ch]) / (var[ch] + eps).sqrt() + beta[ch];
                y[j] = if relu { v.max(0.0) } else { v };
            }
        }
    }
    y
}

/// Gradients of training-mode batch norm (+ optional ReLU) for input, gamma and beta.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_backward(
    x: &[f64],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    relu: bool,
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let m = (n * hw) as f64;
    let mut dx = vec![0.0; x.len()];
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|b| (0..hw).map(move |i| (b * c + ch) * hw + i))
            .collect();
        let mean = idx.iter().map(|&i| x[i]).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (x[i] - mean).powi(2)).sum::<f64>() / m;
        let inv = 1.0 / (var + eps).sqrt();
        let g: Vec<f64> = idx
            .iter()
            .map(|&i| {
                let xhat = (x[i] - mean) * inv;
                let pre = gamma[ch] * xhat + beta[ch];
                if relu && pre <= 0.0 { 0.0 } else { dy[i] }
            })
            .collect();
        let sum_g: f64 = g.iter().sum();
        let sum_gx: f64 = idx
            .iter()
            .zip(&g)
            .map(|(&i, gi)| gi * (x[i] - mean) * inv)
            .sum();
        dgamma[ch] = sum_gx;
        dbeta[ch] = sum_g;
        for (&i, gi) in idx.iter().zip(&g) {
            let xhat = (x[i] - mean) * inv;
            dx[i] = gamma[ch] * inv * (gi - sum_g / m - xhat * sum_gx / m);
        }
    }
    (dx, dgamma, dbeta)
}

/// Mean over the last `hw` values of each `(n, c)` plane.
pub fn global_avg_pool(x: &[f64], planes: usize, hw: usize) -> Vec<f64> {
    (0..planes)
        .map(|p| x[p * hw..(p + 1) * hw].iter().sum::<f64>() / hw as f64)
        .collect()
}

/// `x w^T + b` for `x` `[n, k]`, `w` `[o, k]`.
pub fn linear(x: &[f64], n: usize, k: usize, w: &[f64], o: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for i in 0..n {
        for j in 0..o {
            y[i * o + j] = b[j] + (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum::<f64>();
        }
    }
    y
}

/// `a b` for `a` `[m, k]`, `b` `[k, n]`.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for t in 0..k {
            let av = a[i * k + t];
            for j in 0..n {
                c[i * n + j] += av * b[t * n + j];
            }
        }
    }
    c
}

/// Mean label-smoothed cross-entropy and its gradient with respect to the logits.
pub fn cross_entropy(logits: &[f64], labels: &[u32], k: usize, smoothing: f64) -> (f64, Vec<f64>) {
    let n = labels.len();
    let mut loss = 0.0;
    let mut grad = vec![0.0; n * k];
    for i in 0..n {
        let row = &logits[i * k..(i + 1) * k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        for j in 0..k {
            let target = if j == labels[i] as usize {
                1.0 - smoothing
            } else {
                0.0
            } + smoothing / k as f64;
            loss += -target * (row[j] - lse);
            grad[i * k + j] = ((row[j] - lse).exp() - target) / n as f64;
        }
    }
    (loss / n as f64, grad)
}

/// One `torch.optim.SGD` step with a Grad Mult applied before weight decay; `buf` is None
/// before the first step.
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    w: &mut [f64],
    g: &[f64],
    mult: Option<&[f64]>,
    buf: &mut Option<Vec<f64>>,
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
) {
    let d: Vec<f64> = (0..w.len())
        .map(|i| g[i] * mult.map_or(1.0, |m| m[i]) + weight_decay * w[i])
        .collect();
    let b = match buf.take() {
        None => d.clone(),
        Some(b) => b
            .iter()
            .zip(&d)
            .map(|(b, d)| momentum * b + (1.0 - dampening) * d)
            .collect(),
    };
    for i in 0..w.len() {
        let step = if nesterov {
            d[i] + momentum * b[i]
        } else {
            b[i]
        };
        w[i] -= lr * step;
    }
    *buf = Some(b);
}

/// One `torch.optim.AdamW` step (step count `t` starting at 1) with a Grad Mult.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    w: &mut [f64],
    g: &[f64],
    mult: Option<&[f64]>,
    m: &mut [f64],
    v: &mut [f64],
    t: i32,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
) {
    let bc1 = 1.0 - beta1.powi(t);
    let bc2 = 1.0 - beta2.powi(t);
    for i in 0..w.len() {
        let gi = g[i] * mult.map_or(1.0, |mm| mm[i]);
        w[i] *= 1.0 - lr * weight_decay;
        m[i] = beta1 * m[i] + (1.0 - beta1) * gi;
        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi;
        w[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
    }
}
