//! A host reference of deploy RepOpt-VGG in f64, with optional fake quantization in ONNX's
//! QDQ semantics, written from the graph's definition rather than from the exporter.

#![allow(dead_code)]

use repopt_models::RepOptVgg;
use repopt_models::block::BlockKind;
use repopt_models::onnx::ActivationQuant;
use repopt_tensor::Tensor;

/// One Conv/Gemm: weight `[co, ci, k, k]` (k = 1 for SE and the classifier), bias, stride.
#[derive(Clone)]
pub struct Layer {
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub co: usize,
    pub ci: usize,
    pub k: usize,
    pub stride: usize,
}

/// The network on the host.
#[derive(Clone)]
pub struct HostNet {
    pub blocks: Vec<(Layer, Option<(Layer, Layer)>)>,
    pub linear: Layer,
}

fn host(t: &Tensor) -> Vec<f64> {
    t.to_vec().unwrap().into_iter().map(f64::from).collect()
}

fn layer(w: &Tensor, b: &Tensor, stride: usize) -> Layer {
    let s = w.shape();
    Layer {
        w: host(w),
        b: host(b),
        co: s[0],
        ci: s[1],
        k: s.get(2).copied().unwrap_or(1),
        stride,
    }
}

/// Per-output-channel `max |w| / 127` in f32, as the INT8 graph stores it; 1 for a zero
/// channel.
pub fn channel_scales(l: &Layer) -> Vec<f32> {
    l.w.chunks(l.w.len() / l.co)
        .map(|c| {
            let m = c.iter().fold(0.0f32, |m, v| m.max((*v as f32).abs()));
            if m == 0.0 { 1.0 } else { m / 127.0 }
        })
        .collect()
}

impl HostNet {
    pub fn of(model: &RepOptVgg) -> Self {
        let blocks = model
            .blocks()
            .iter()
            .map(|b| {
                let BlockKind::Deploy { weight, bias } = &b.kind else {
                    panic!("not a deploy model")
                };
                let se = b.se.as_ref().map(|se| {
                    (
                        layer(&se.down_weight, &se.down_bias, 1),
                        layer(&se.up_weight, &se.up_bias, 1),
                    )
                });
                (layer(weight, bias, b.spec.stride), se)
            })
            .collect();
        let (w, b) = model.linear();
        HostNet {
            blocks,
            linear: layer(w, b, 1),
        }
    }

    /// The layers in network order.
    pub fn layers_mut(&mut self) -> Vec<&mut Layer> {
        let mut out = Vec::new();
        for (conv, se) in &mut self.blocks {
            out.push(conv);
            if let Some((d, u)) = se {
                out.push(d);
                out.push(u);
            }
        }
        out.push(&mut self.linear);
        out
    }

    /// The same network with every weight replaced by its int8 value times its channel's
    /// scale, except the layers in `keep_float`.
    pub fn weights_fake_quantized(&self, keep_float: &[usize]) -> Self {
        let mut q = self.clone();
        for (i, l) in q.layers_mut().into_iter().enumerate() {
            if keep_float.contains(&i) {
                continue;
            }
            let scales = channel_scales(l);
            let per = l.w.len() / l.co;
            for (j, w) in l.w.iter_mut().enumerate() {
                let s = scales[j / per];
                let v = (*w as f32 / s).round_ties_even().clamp(-127.0, 127.0);
                *w = f64::from(v) * f64::from(s);
            }
        }
        q
    }
}

/// `DequantizeLinear(QuantizeLinear(x))`: round half to even, saturate to the type's range
/// (int8 to `[-127, 127]` instead when `narrow`, as symmetric fake quantizers do).
pub fn fake_quant(x: &mut [f64], a: &ActivationQuant, narrow: bool) {
    let (lo, hi) = if a.unsigned {
        (0.0, 255.0)
    } else if narrow {
        (-127.0, 127.0)
    } else {
        (-128.0, 127.0)
    };
    let (s, z) = (f64::from(a.scale), f64::from(a.zero_point));
    for v in x {
        let q = ((*v / s).round_ties_even() + z).clamp(lo, hi);
        *v = (q - z) * s;
    }
}

/// A batch of NCHW activations.
#[derive(Clone)]
pub struct Act {
    pub data: Vec<f64>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

fn conv(x: &Act, l: &Layer) -> Act {
    let (k, s, p) = (l.k, l.stride, l.k / 2);
    let ho = (x.h + 2 * p - k) / s + 1;
    let wo = (x.w + 2 * p - k) / s + 1;
    let mut out = vec![0.0; x.n * l.co * ho * wo];
    for b in 0..x.n {
        for o in 0..l.co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = l.b[o];
                    for i in 0..l.ci {
                        for ky in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= x.h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix < 0 || ix >= x.w as isize {
                                    continue;
                                }
                                let xv =
                                    x.data[((b * x.c + i) * x.h + iy as usize) * x.w + ix as usize];
                                acc += xv * l.w[((o * l.ci + i) * k + ky) * k + kx];
                            }
                        }
                    }
                    out[((b * l.co + o) * ho + oy) * wo + ox] = acc;
                }
            }
        }
    }
    Act {
        data: out,
        n: x.n,
        c: l.co,
        h: ho,
        w: wo,
    }
}

fn pool(x: &Act) -> Act {
    let hw = x.h * x.w;
    Act {
        data: x
            .data
            .chunks(hw)
            .map(|p| p.iter().sum::<f64>() / hw as f64)
            .collect(),
        n: x.n,
        c: x.c,
        h: 1,
        w: 1,
    }
}

fn relu(x: &mut Act) {
    x.data.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// What happens at each Conv/Gemm input: record its range, then fake-quantize it.
pub struct Probe<'a> {
    /// Per layer: a quantizer, or none for float.
    pub quant: &'a [Option<ActivationQuant>],
    /// Per layer: (min, max) seen so far.
    pub ranges: Vec<(f64, f64)>,
    /// Saturate int8 to `[-127, 127]` rather than ONNX's `[-128, 127]`.
    pub narrow: bool,
}

impl<'a> Probe<'a> {
    pub fn new(quant: &'a [Option<ActivationQuant>], layers: usize) -> Self {
        Probe {
            quant,
            ranges: vec![(f64::INFINITY, f64::NEG_INFINITY); layers],
            narrow: false,
        }
    }

    fn input(&mut self, layer: usize, x: &mut Act) {
        let r = &mut self.ranges[layer];
        for &v in &x.data {
            r.0 = r.0.min(v);
            r.1 = r.1.max(v);
        }
        if let Some(Some(a)) = self.quant.get(layer) {
            fake_quant(&mut x.data, a, self.narrow);
        }
    }
}

/// Logits `[n, classes]` of `net` on `x`, fake-quantizing each layer's input as `probe` says.
pub fn forward(net: &HostNet, x: Act, probe: &mut Probe) -> Vec<f64> {
    let mut x = x;
    let mut i = 0;
    let mut next = |probe: &mut Probe, x: &mut Act| {
        probe.input(i, x);
        i += 1;
    };
    for (l, se) in &net.blocks {
        next(probe, &mut x);
        let mut y = conv(&x, l);
        relu(&mut y);
        if let Some((down, up)) = se {
            let mut p = pool(&y);
            next(probe, &mut p);
            let mut h = conv(&p, down);
            relu(&mut h);
            next(probe, &mut h);
            let g = conv(&h, up);
            let hw = y.h * y.w;
            for (plane, gate) in y.data.chunks_mut(hw).zip(&g.data) {
                let s = 1.0 / (1.0 + (-gate).exp());
                plane.iter_mut().for_each(|v| *v *= s);
            }
        }
        x = y;
    }
    let mut p = pool(&x);
    next(probe, &mut p);
    conv(&p, &net.linear).data
}
