//! ONNX export of deploy-form RepOpt-VGG models, in FP32 and as INT8 QDQ graphs.
//!
//! The graph is the deploy network as it runs on the engine. Input `images` is
//! `[N, C, H, W]` float32 with symbolic `N`, `H` and `W`, so one file serves every batch
//! size and image size; output `logits` is `[N, classes]`. Each block is a `Conv` (3x3,
//! pads 1, the block's stride, bias) and a `Relu`, followed when the model has
//! squeeze-excitation by `GlobalAveragePool`, `Conv` 1x1 + bias, `Relu`, `Conv` 1x1 + bias,
//! `Sigmoid` and `Mul`; then `GlobalAveragePool`, `Flatten` and `Gemm` (`transB = 1`).
//! Opset 13. Initializers carry the model's state-dict names (`stage1.0.rbr_reparam.weight`,
//! `stage1.0.post_se.down.bias`, `linear.weight`, ...).
//!
//! The INT8 form is the explicit-quantization (QDQ) graph TensorRT, ONNX Runtime and
//! OpenVINO compile to integer kernels: `QuantizeLinear` -> `DequantizeLinear` with a
//! per-tensor scale before the data input of every Conv and Gemm ("layers", numbered in
//! network order as [`quant_layers`] lists them), and int8 weights with per-output-channel
//! scales feeding the layer through `DequantizeLinear` (axis 0). Biases stay float, as
//! those runtimes fold them into the integer kernel's int32 accumulator themselves. The
//! int8 weights keep the state-dict name (`stage0.rbr_reparam.weight`), next to
//! `stage0.rbr_reparam.weight_scale` and `.weight_zero_point`; the input quantizer of the
//! same layer is `stage0.rbr_reparam.input_scale` and `.input_zero_point`.

mod graph;
mod quant;

use repopt_tensor::Tensor;

use crate::any::Network;
use crate::error::{ModelError, Result};
use crate::{Mode, RepOptVgg};
use graph::{Attr, Dim, Graph};
pub use quant::{ActivationQuant, quantize_weight, weight_scales};

/// What a quantizable layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// A block's 3x3 convolution.
    Conv3x3,
    /// The first 1x1 convolution of a squeeze-excitation gate (channels -> hidden).
    SeDown,
    /// The second one (hidden -> channels).
    SeUp,
    /// The classifier (`Gemm`).
    Linear,
}

/// One Conv or Gemm of the exported graph, as the INT8 export quantizes it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLayer {
    /// Position in network order: the index into `activations` and `keep_float` of
    /// [`export_int8`].
    pub index: usize,
    /// State-dict prefix of its tensors: `stage0.rbr_reparam`, `stage1.0.post_se.down`,
    /// `linear`.
    pub name: String,
    /// What it is.
    pub kind: LayerKind,
    /// The per-output-channel weight scales the INT8 graph stores ([`weight_scales`] of
    /// its weight).
    pub weight_scales: Vec<f32>,
}

/// A layer's tensors.
struct Layer<'a> {
    name: String,
    kind: LayerKind,
    weight: &'a Tensor,
    bias: &'a Tensor,
    stride: usize,
}

/// A block's layers: its convolution and the two of its gate.
struct BlockLayers<'a> {
    name: &'a str,
    conv: Layer<'a>,
    se: Option<(Layer<'a>, Layer<'a>)>,
}

fn deploy_layers(model: &RepOptVgg) -> Result<(Vec<BlockLayers<'_>>, Layer<'_>)> {
    if model.mode() != Mode::Deploy {
        return Err(ModelError::WrongMode {
            op: "ONNX export",
            expected: "deploy (convert it with reparam::to_deploy first)",
            got: model.mode(),
        });
    }
    let mut blocks = Vec::with_capacity(model.blocks().len());
    for block in model.blocks() {
        let crate::block::BlockKind::Deploy { weight, bias } = &block.kind else {
            return Err(ModelError::Export(format!(
                "block {} is not in deploy form",
                block.spec.name
            )));
        };
        let name = block.spec.name.as_str();
        let layer = |suffix: &str, kind, weight, bias, stride| Layer {
            name: format!("{name}.{suffix}"),
            kind,
            weight,
            bias,
            stride,
        };
        blocks.push(BlockLayers {
            name,
            conv: layer(
                "rbr_reparam",
                LayerKind::Conv3x3,
                weight,
                bias,
                block.spec.stride,
            ),
            se: block.se.as_ref().map(|se| {
                (
                    layer(
                        "post_se.down",
                        LayerKind::SeDown,
                        &se.down_weight,
                        &se.down_bias,
                        1,
                    ),
                    layer("post_se.up", LayerKind::SeUp, &se.up_weight, &se.up_bias, 1),
                )
            }),
        });
    }
    let (weight, bias) = model.linear();
    let linear = Layer {
        name: "linear".into(),
        kind: LayerKind::Linear,
        weight,
        bias,
        stride: 1,
    };
    Ok((blocks, linear))
}

fn in_order<'l, 'a>(blocks: &'l [BlockLayers<'a>], linear: &'l Layer<'a>) -> Vec<&'l Layer<'a>> {
    let mut out = Vec::new();
    for b in blocks {
        out.push(&b.conv);
        if let Some((down, up)) = &b.se {
            out.extend([down, up]);
        }
    }
    out.push(linear);
    out
}

/// The Conv and Gemm layers of a deploy model in network order, with the weight scales
/// the INT8 export uses, so a fake-quantized engine model can match the exported graph.
///
/// ```no_run
/// use repopt_models::{onnx, reparam::to_deploy, Mode, RepOptVgg, VggConfig};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let config = VggConfig { num_blocks: [1, 1, 1, 1], width_multipliers: [0.25; 4], num_classes: 10, ..VggConfig::preset("A0")? };
/// let model = to_deploy(&RepOptVgg::new(&gpu, config, Mode::Target, 0)?)?;
/// let layers = onnx::quant_layers(&model)?;
/// assert_eq!(layers.len(), model.blocks().len() + 1);
/// assert_eq!(layers[0].name, "stage0.rbr_reparam");
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
pub fn quant_layers(model: &RepOptVgg) -> Result<Vec<QuantLayer>> {
    let (blocks, linear) = deploy_layers(model)?;
    in_order(&blocks, &linear)
        .into_iter()
        .enumerate()
        .map(|(index, l)| {
            Ok(QuantLayer {
                index,
                name: l.name.clone(),
                kind: l.kind,
                weight_scales: weight_scales(&l.weight.to_vec()?, l.weight.shape()[0]),
            })
        })
        .collect()
}

/// The quantization of an INT8 export.
#[derive(Clone, Copy)]
struct Int8<'a> {
    activations: &'a [ActivationQuant],
    keep_float: &'a [usize],
}

/// Writes the graph, one layer at a time.
struct Emitter<'a> {
    graph: Graph,
    int8: Option<Int8<'a>>,
    next_layer: usize,
}

impl Emitter<'_> {
    /// Conv or Gemm `layer` on `input`, its output named `out`.
    fn layer(&mut self, layer: &Layer, input: &str, out: &str) -> Result<String> {
        let index = self.next_layer;
        self.next_layer += 1;
        let quant = self
            .int8
            .filter(|q| !q.keep_float.contains(&index))
            .map(|q| q.activations[index]);
        let shape = layer.weight.shape();
        let weight = layer.weight.to_vec()?;
        let weight_name = format!("{}.weight", layer.name);
        let (x, w) = match quant {
            None => (
                input.to_string(),
                self.graph.f32s(&weight_name, shape, &weight)?,
            ),
            Some(a) => (
                self.qdq(input, &layer.name, a)?,
                self.int8_weight(&weight_name, shape, &weight)?,
            ),
        };
        let b = self.graph.f32s(
            &format!("{}.bias", layer.name),
            layer.bias.shape(),
            &layer.bias.to_vec()?,
        )?;
        let inputs = [x.as_str(), w.as_str(), b.as_str()];
        Ok(match layer.kind {
            LayerKind::Linear => {
                self.graph
                    .node("Gemm", out, &inputs, vec![("transB", Attr::Int(1))])
            }
            _ => {
                let k = shape[2] as i64;
                let pad = k / 2;
                let s = layer.stride as i64;
                self.graph.node(
                    "Conv",
                    out,
                    &inputs,
                    vec![
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("pads", Attr::Ints(vec![pad; 4])),
                        ("strides", Attr::Ints(vec![s, s])),
                        ("dilations", Attr::Ints(vec![1, 1])),
                        ("group", Attr::Int(1)),
                    ],
                )
            }
        })
    }

    /// `QuantizeLinear` -> `DequantizeLinear` of `input` with a per-tensor quantizer.
    fn qdq(&mut self, input: &str, layer: &str, a: ActivationQuant) -> Result<String> {
        let g = &mut self.graph;
        let scale = g.f32s(&format!("{layer}.input_scale"), &[], &[a.scale])?;
        let zp_name = format!("{layer}.input_zero_point");
        // The zero point's type is the quantized type: uint8 for asymmetric, int8 otherwise.
        let zero_point = if a.unsigned {
            g.u8s(&zp_name, &[], &[a.zero_point as u8])
        } else {
            g.i8s(&zp_name, &[], &[a.zero_point as i8])
        };
        let q = g.node(
            "QuantizeLinear",
            &format!("{layer}.input_quantized"),
            &[input, &scale, &zero_point],
            vec![],
        );
        Ok(g.node(
            "DequantizeLinear",
            &format!("{layer}.input_dequantized"),
            &[&q, &scale, &zero_point],
            vec![],
        ))
    }

    /// Int8 weights with per-output-channel scales, dequantized along axis 0.
    fn int8_weight(&mut self, name: &str, shape: &[usize], weight: &[f32]) -> Result<String> {
        graph::check_finite(name, weight)?;
        let co = shape[0];
        let scales = weight_scales(weight, co);
        let q = self
            .graph
            .i8s(name, shape, &quant::quantize_weights(weight, &scales));
        let scale = self.graph.f32s(&format!("{name}_scale"), &[co], &scales)?;
        let zero_point = self
            .graph
            .i8s(&format!("{name}_zero_point"), &[co], &vec![0; co]);
        Ok(self.graph.node(
            "DequantizeLinear",
            &format!("{name}_dequantized"),
            &[&q, &scale, &zero_point],
            vec![("axis", Attr::Int(0))],
        ))
    }
}

fn export(model: &RepOptVgg, int8: Option<Int8>) -> Result<Vec<u8>> {
    let (blocks, linear) = deploy_layers(model)?;
    let count = in_order(&blocks, &linear).len();
    if let Some(q) = int8 {
        check_int8(q, &in_order(&blocks, &linear))?;
    }
    let config = model.config();
    let mut e = Emitter {
        graph: Graph::default(),
        int8,
        next_layer: 0,
    };
    let g = |e: &mut Emitter, op: &str, name: &str, inputs: &[&str]| {
        e.graph.node(op, name, inputs, vec![])
    };
    let mut x = e.graph.input(
        "images",
        &[
            Dim::Named("N"),
            Dim::Fixed(config.in_channels),
            Dim::Named("H"),
            Dim::Named("W"),
        ],
    );
    for b in &blocks {
        let n = b.name;
        let y = e.layer(&b.conv, &x, &format!("{n}.conv"))?;
        let y = g(&mut e, "Relu", &format!("{n}.relu"), &[&y]);
        x = match &b.se {
            None => y,
            Some((down, up)) => {
                let p = g(
                    &mut e,
                    "GlobalAveragePool",
                    &format!("{n}.post_se.pool"),
                    &[&y],
                );
                let h = e.layer(down, &p, &format!("{n}.post_se.down"))?;
                let h = g(&mut e, "Relu", &format!("{n}.post_se.relu"), &[&h]);
                let h = e.layer(up, &h, &format!("{n}.post_se.up"))?;
                let gate = g(&mut e, "Sigmoid", &format!("{n}.post_se.sigmoid"), &[&h]);
                g(&mut e, "Mul", &format!("{n}.post_se.mul"), &[&y, &gate])
            }
        };
    }
    let pooled = g(&mut e, "GlobalAveragePool", "pool", &[&x]);
    let flat = e.graph.node(
        "Flatten",
        "flatten",
        &[&pooled],
        vec![("axis", Attr::Int(1))],
    );
    let logits = e.layer(&linear, &flat, "logits")?;
    debug_assert_eq!(e.next_layer, count);
    e.graph
        .output(&logits, &[Dim::Named("N"), Dim::Fixed(config.num_classes)]);
    let doc = match int8 {
        None => format!("{} deploy model, float32", config.name),
        Some(q) => format!(
            "{} deploy model, INT8 QDQ (per-tensor activations, per-channel int8 weights); \
             float layers: {:?}",
            config.name, q.keep_float
        ),
    };
    let meta = vec![(
        "repopt.config".to_string(),
        serde_json::to_string(config).unwrap_or_default(),
    )];
    e.graph.finish(&config.name, doc, meta)
}

fn check_int8(q: Int8, layers: &[&Layer]) -> Result<()> {
    if q.activations.len() != layers.len() {
        return Err(ModelError::Export(format!(
            "{} activation quantizers given, the model has {} Conv/Gemm layers (one each, \
             in network order: {} ... {})",
            q.activations.len(),
            layers.len(),
            layers[0].name,
            layers[layers.len() - 1].name
        )));
    }
    if let Some(&bad) = q.keep_float.iter().find(|&&i| i >= layers.len()) {
        return Err(ModelError::Export(format!(
            "keep_float names layer {bad}, the model has layers 0 to {}",
            layers.len() - 1
        )));
    }
    for (i, (a, l)) in q.activations.iter().zip(layers).enumerate() {
        if !q.keep_float.contains(&i) {
            a.check(&format!("layer {i} ({})", l.name))?;
        }
    }
    Ok(())
}

/// The FP32 ONNX model (serialized `ModelProto`) of a deploy model; see the
/// [module documentation](self) for the graph. Other modes are refused: convert them with
/// [`reparam::to_deploy`](crate::reparam::to_deploy) first.
///
/// ```no_run
/// use repopt_models::{onnx, reparam::to_deploy, Mode, RepOptVgg, VggConfig};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let config = VggConfig { num_blocks: [1, 1, 1, 1], width_multipliers: [0.25; 4], num_classes: 10, ..VggConfig::preset("A0")? };
/// let trained = RepOptVgg::new(&gpu, config, Mode::Target, 0)?;
/// std::fs::write("model.onnx", onnx::export_fp32(&to_deploy(&trained)?)?).unwrap();
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
pub fn export_fp32(model: &RepOptVgg) -> Result<Vec<u8>> {
    export(model, None)
}

/// The INT8 QDQ ONNX model of a deploy model.
///
/// `activations` holds one quantizer per Conv/Gemm layer, in the order of [`quant_layers`]
/// (each block's convolution, then its gate's two when it has one, then the classifier).
/// Layers whose index is in `keep_float` stay float32 (weights and input, as
/// [`export_fp32`] writes them; their `activations` entry is not used), e.g. `&[0, last]`
/// to keep the first and last layers in float. Weights of the other layers are int8 with
/// the scales [`quant_layers`] reports, quantized by [`quantize_weight`].
///
/// ```no_run
/// use repopt_models::onnx::{self, ActivationQuant};
/// use repopt_models::{reparam::to_deploy, Mode, RepOptVgg, VggConfig};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let config = VggConfig { num_blocks: [1, 1, 1, 1], width_multipliers: [0.25; 4], num_classes: 10, ..VggConfig::preset("A0")? };
/// let model = to_deploy(&RepOptVgg::new(&gpu, config, Mode::Target, 0)?)?;
/// let layers = onnx::quant_layers(&model)?;
/// // Calibrated maxima of each layer's input, e.g. from a few batches of training images.
/// let activations = vec![ActivationQuant::symmetric(4.0); layers.len()];
/// let bytes = onnx::export_int8(&model, &activations, &[0, layers.len() - 1])?;
/// std::fs::write("model-int8.onnx", bytes).unwrap();
/// # Ok::<(), repopt_models::ModelError>(())
/// ```
pub fn export_int8(
    model: &RepOptVgg,
    activations: &[ActivationQuant],
    keep_float: &[usize],
) -> Result<Vec<u8>> {
    export(
        model,
        Some(Int8 {
            activations,
            keep_float,
        }),
    )
}

fn vgg(net: &Network) -> Result<&RepOptVgg> {
    match net {
        Network::Vgg(n) => Ok(n),
        Network::Ghost(n) => Err(ModelError::Export(format!(
            "GhostNet models ({}, {} mode) are not supported yet; RepOpt-VGG deploy models are",
            n.config().name,
            n.mode()
        ))),
    }
}

/// [`export_fp32`] for a network of either family (RepOpt-VGG only, for now).
pub fn export_network_fp32(net: &Network) -> Result<Vec<u8>> {
    export_fp32(vgg(net)?)
}

/// [`export_int8`] for a network of either family (RepOpt-VGG only, for now).
pub fn export_network_int8(
    net: &Network,
    activations: &[ActivationQuant],
    keep_float: &[usize],
) -> Result<Vec<u8>> {
    export_int8(vgg(net)?, activations, keep_float)
}
