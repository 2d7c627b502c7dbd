//! ONNX export checked by an independent runtime (tract): FP32 graphs against the engine,
//! INT8 QDQ graphs against a host fake-quantization reference, and the export's errors.

mod common;
mod onnx_support;

use common::{data, gpu, randomize_bn};
use onnx_protobuf::{Message, ModelProto};
use onnx_support::{Act, HostNet, Probe, channel_scales, forward};
use repopt_models::any::{NetConfig, Network};
use repopt_models::block::BlockKind;
use repopt_models::onnx::{self, ActivationQuant, LayerKind};
use repopt_models::reparam::to_deploy;
use repopt_models::{Mode, ModelError, RepOptVgg, VggConfig};
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, TValue, Tensor, tvec};

/// FP32 tolerance, relative to the largest logit: both sides compute in f32 with different
/// summation orders, which differ by about 1e-7 here; 1e-4 leaves three orders of magnitude.
const FP32_TOL: f64 = 1e-4;

/// INT8 tolerance against the f64 fake-quantization reference, relative to the largest
/// logit. The reference quantizes exactly as the graph does, so only f32 rounding
/// separates them, unless a value lies within rounding of a quantization boundary and
/// lands one step away (tract multiplies by the reciprocal scale); none does for these
/// inputs, where the two agree to about 2e-7. The tolerance stays well below what either
/// quantization alone does to the logits (1.7e-4 and more), so the comparison sees both.
const INT8_TOL: f64 = 1e-5;

fn config(in_channels: usize, use_se: bool) -> VggConfig {
    VggConfig {
        name: "onnx-test".into(),
        num_blocks: [1, 1, 1, 1],
        width_multipliers: [0.25; 4],
        strides: [1, 2, 1, 2, 2],
        in_channels,
        num_classes: 10,
        use_se,
    }
}

/// A deploy model converted from a RepVGG model with non-trivial batch norms, so that
/// every block has a fused kernel and bias.
fn deploy_model(config: &VggConfig, seed: u64) -> RepOptVgg {
    let model = RepOptVgg::new(&gpu(), config.clone(), Mode::Repvgg, seed).unwrap();
    randomize_bn(&model, &gpu(), seed + 100, [2, config.in_channels, 28, 28]);
    to_deploy(&model).unwrap()
}

/// Images of varied brightness and contrast: `[n, c, size, size]`.
fn images(n: usize, c: usize, size: usize, seed: u64) -> (Vec<f32>, [usize; 4]) {
    let per = c * size * size;
    let raw = data(n * per, seed);
    let x = raw
        .chunks(per)
        .enumerate()
        .flat_map(|(i, img)| {
            let (gain, offset) = (0.6 + 0.7 * i as f32, 0.3 - 0.25 * i as f32);
            img.iter().map(move |v| gain * v + offset)
        })
        .collect();
    (x, [n, c, size, size])
}

fn batches(c: usize) -> Vec<(Vec<f32>, [usize; 4])> {
    vec![images(2, c, 28, 11), images(1, c, 33, 12)]
}

fn engine_logits(model: &RepOptVgg, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let _g = repopt_tensor::NoGradGuard::new();
    let x = repopt_tensor::Tensor::from_slice(&gpu(), x, &shape).unwrap();
    model.forward(&x, false).unwrap().to_vec().unwrap()
}

fn tract_logits(bytes: &[u8], x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimizes the model")
        .into_runnable()
        .expect("tract plans the model");
    let input = Tensor::from_shape(&shape, x).unwrap();
    let out = plan
        .run(tvec!(TValue::from(input)))
        .expect("tract runs the model");
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(view.shape(), &[shape[0], 10]);
    view.iter().copied().collect()
}

fn host_act(x: &[f32], s: [usize; 4]) -> Act {
    Act {
        data: x.iter().map(|&v| f64::from(v)).collect(),
        n: s[0],
        c: s[1],
        h: s[2],
        w: s[3],
    }
}

/// Max |a - b| over the largest |b|.
fn rel_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs()));
    diff / scale
}

fn top1<T: Copy + Into<f64>>(logits: &[T], classes: usize) -> Vec<(usize, f64)> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut v: Vec<(usize, f64)> = row.iter().map(|&x| x.into()).enumerate().collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            (v[0].0, v[0].1 - v[1].1)
        })
        .collect()
}

fn parse(bytes: &[u8]) -> ModelProto {
    ModelProto::parse_from_bytes(bytes).expect("the export is a valid ModelProto")
}

fn count(model: &ModelProto, op: &str) -> usize {
    model.graph.node.iter().filter(|n| n.op_type == op).count()
}

fn fp32_matches_engine(in_channels: usize, use_se: bool, seed: u64) {
    let config = config(in_channels, use_se);
    let model = deploy_model(&config, seed);
    let bytes = onnx::export_fp32(&model).unwrap();
    let proto = parse(&bytes);
    assert_eq!(proto.opset_import[0].version, 13);
    let blocks = model.blocks().len();
    assert_eq!(count(&proto, "Conv"), blocks * if use_se { 3 } else { 1 });
    assert_eq!(count(&proto, "Gemm"), 1);
    assert_eq!(count(&proto, "QuantizeLinear"), 0);
    let names: Vec<&str> = proto
        .graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let state: Vec<String> = model.state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), state.len(), "one initializer per state tensor");
    for name in &state {
        assert!(names.contains(&name.as_str()), "initializer {name} missing");
    }

    let host = HostNet::of(&model);
    for (x, shape) in batches(in_channels) {
        let engine = engine_logits(&model, &x, shape);
        let tract = tract_logits(&bytes, &x, shape);
        let layers = onnx::quant_layers(&model).unwrap().len();
        let reference = forward(&host, host_act(&x, shape), &mut Probe::new(&[], layers));
        let engine_vs_ref = rel_diff(&engine, &reference);
        let tract_vs_engine = rel_diff(
            &tract,
            &engine.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        );
        println!(
            "{shape:?}: tract vs engine {tract_vs_engine:.2e}, engine vs f64 {engine_vs_ref:.2e}"
        );
        assert!(
            tract_vs_engine <= FP32_TOL,
            "{shape:?}: {tract_vs_engine:e}"
        );
        assert!(engine_vs_ref <= FP32_TOL, "{shape:?}: {engine_vs_ref:e}");
    }
}

#[test]
fn fp32_export_runs_in_tract_like_the_engine() {
    fp32_matches_engine(3, false, 1);
}

#[test]
fn fp32_export_with_squeeze_excitation_runs_in_tract_like_the_engine() {
    fp32_matches_engine(1, true, 2);
}

/// Max calibration on the float activations of `data`: one quantizer per layer.
fn calibrate(
    host: &HostNet,
    data: &[(Vec<f32>, [usize; 4])],
    layers: usize,
    unsigned: bool,
) -> Vec<ActivationQuant> {
    let mut calib = Probe::new(&[], layers);
    for (x, s) in data {
        forward(host, host_act(x, *s), &mut calib);
    }
    calib
        .ranges
        .iter()
        .map(|&(lo, hi)| {
            if unsigned {
                ActivationQuant::asymmetric(lo as f32, hi as f32)
            } else {
                ActivationQuant::symmetric(lo.abs().max(hi.abs()) as f32)
            }
        })
        .collect()
}

/// Exports INT8 with max-calibrated quantizers (symmetric int8 or asymmetric uint8) and
/// compares tract's logits with the host reference fake-quantized the same way.
fn int8_matches_reference(in_channels: usize, use_se: bool, unsigned: bool, keep_first_last: bool) {
    let config = config(in_channels, use_se);
    let model = deploy_model(&config, 3 + use_se as u64);
    let layers = onnx::quant_layers(&model).unwrap();
    let n = layers.len();
    let keep: Vec<usize> = if keep_first_last {
        vec![0, n - 1]
    } else {
        vec![]
    };

    let host = HostNet::of(&model);
    let data = batches(in_channels);
    let activations = calibrate(&host, &data, n, unsigned);
    let quant: Vec<Option<ActivationQuant>> = (0..n)
        .map(|i| (!keep.contains(&i)).then_some(activations[i]))
        .collect();

    // The scales the exporter reports are the ones computed here from the weights.
    let mut hq = host.clone();
    for (l, reported) in hq.layers_mut().into_iter().zip(&layers) {
        assert_eq!(
            channel_scales(l),
            reported.weight_scales,
            "{}",
            reported.name
        );
    }
    assert_eq!(layers[0].kind, LayerKind::Conv3x3);
    assert_eq!(layers[n - 1].kind, LayerKind::Linear);
    let fake = host.weights_fake_quantized(&keep);

    let bytes = onnx::export_int8(&model, &activations, &keep).unwrap();
    let proto = parse(&bytes);
    let quantized = n - keep.len();
    assert_eq!(count(&proto, "QuantizeLinear"), quantized);
    assert_eq!(count(&proto, "DequantizeLinear"), 2 * quantized);

    for (x, shape) in &data {
        let tract = tract_logits(&bytes, x, *shape);
        let reference = forward(&fake, host_act(x, *shape), &mut Probe::new(&quant, n));
        let float_ref = forward(&host, host_act(x, *shape), &mut Probe::new(&[], n));
        let diff = rel_diff(&tract, &reference);
        let quant_effect = rel_diff(&tract, &float_ref);
        println!(
            "{shape:?}: int8 tract vs fake-quant reference {diff:.2e}, vs float {quant_effect:.2e}"
        );
        assert!(diff <= INT8_TOL, "{shape:?}: {diff:e}");
        // Both quantizations are in the graph and visible at this tolerance: leaving out
        // either one in the reference moves it well away from the graph.
        let weights_only = forward(&fake, host_act(x, *shape), &mut Probe::new(&[], n));
        let acts_only = forward(&host, host_act(x, *shape), &mut Probe::new(&quant, n));
        for (what, r) in [
            ("weights only", &weights_only),
            ("activations only", &acts_only),
        ] {
            let d = rel_diff(&tract, r);
            assert!(d > 5.0 * INT8_TOL, "{shape:?}: {what} {d:e}");
        }
        assert!(quant_effect < 0.05, "{shape:?}: {quant_effect:e}");
        let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let (got, want) = (top1(&tract, 10), top1(&reference, 10));
        for (g, w) in got.iter().zip(&want) {
            // A runner-up within the tolerance could legitimately swap places.
            if w.1 > 2.0 * INT8_TOL * scale {
                assert_eq!(g.0, w.0, "{shape:?}: top-1 (margin {})", w.1);
            }
        }
    }
}

#[test]
fn int8_symmetric_export_runs_in_tract_like_the_fake_quantized_reference() {
    int8_matches_reference(3, false, false, false);
}

#[test]
fn int8_asymmetric_export_with_squeeze_excitation_and_float_ends_matches_the_reference() {
    int8_matches_reference(1, true, true, true);
}

#[test]
fn int8_inputs_saturate_to_minus_128_as_onnx_specifies() {
    let model = deploy_model(&config(3, false), 5);
    let host = HostNet::of(&model);
    let n = onnx::quant_layers(&model).unwrap().len();
    let data = batches(3);
    let mut activations = calibrate(&host, &data, n, false);
    // A first-layer range a third of the calibrated one: many pixels saturate.
    activations[0].scale /= 3.0;
    let quant: Vec<Option<ActivationQuant>> = activations.iter().copied().map(Some).collect();
    let fake = host.weights_fake_quantized(&[]);
    let bytes = onnx::export_int8(&model, &activations, &[]).unwrap();
    let (x, shape) = &data[0];
    let tract = tract_logits(&bytes, x, *shape);
    let onnx_range = forward(&fake, host_act(x, *shape), &mut Probe::new(&quant, n));
    let mut narrow = Probe::new(&quant, n);
    narrow.narrow = true;
    let narrow_range = forward(&fake, host_act(x, *shape), &mut narrow);
    assert!(rel_diff(&tract, &onnx_range) <= INT8_TOL);
    // Where inputs fall below -127.5 steps, a [-127, 127] quantizer gives other logits.
    assert!(rel_diff(&tract, &narrow_range) > 5.0 * INT8_TOL);
}

#[test]
fn int8_graph_stores_int8_weights_with_per_channel_scales() {
    let model = deploy_model(&config(3, true), 7);
    let layers = onnx::quant_layers(&model).unwrap();
    let acts = vec![ActivationQuant::symmetric(3.0); layers.len()];
    let proto = parse(&onnx::export_int8(&model, &acts, &[]).unwrap());
    let init = |name: &str| {
        proto
            .graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
    };
    for l in &layers {
        let w = init(&format!("{}.weight", l.name));
        assert_eq!(w.data_type, 3, "{}: int8", l.name);
        let s = init(&format!("{}.weight_scale", l.name));
        assert_eq!(s.dims, vec![l.weight_scales.len() as i64]);
        let stored: Vec<f32> = s
            .raw_data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(stored, l.weight_scales);
        assert_eq!(init(&format!("{}.bias", l.name)).data_type, 1, "float bias");
        // Every channel uses its full range: its largest weight is +-127.
        let per = w.raw_data.len() / l.weight_scales.len();
        for c in w.raw_data.chunks(per) {
            assert_eq!(c.iter().map(|&b| (b as i8).unsigned_abs()).max(), Some(127));
        }
    }
    let dq_axes: Vec<i64> = proto
        .graph
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear" && n.name.ends_with(".weight_dequantized"))
        .map(|n| n.attribute.iter().find(|a| a.name == "axis").unwrap().i)
        .collect();
    assert_eq!(dq_axes, vec![0; layers.len()]);
    let input = &proto.graph.input[0];
    let onnx_protobuf::type_proto::Value::TensorType(t) = input.type_.value.as_ref().unwrap()
    else {
        panic!("input is not a tensor")
    };
    let dims: Vec<String> = t
        .shape
        .dim
        .iter()
        .map(|d| format!("{:?}", d.value.as_ref().unwrap()))
        .collect();
    assert_eq!(
        dims,
        [
            "DimParam(\"N\")",
            "DimValue(3)",
            "DimParam(\"H\")",
            "DimParam(\"W\")"
        ]
    );
}

fn export_error(r: repopt_models::Result<Vec<u8>>) -> String {
    match r {
        Ok(_) => panic!("the export should have failed"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn exports_refuse_what_they_cannot_write() {
    let config = config(3, false);
    let trained = RepOptVgg::new(&gpu(), config.clone(), Mode::Target, 0).unwrap();
    let e = export_error(onnx::export_fp32(&trained));
    assert!(e.contains("deploy") && e.contains("target"), "{e}");
    assert!(matches!(
        onnx::export_int8(&trained, &[], &[]),
        Err(ModelError::WrongMode { .. })
    ));
    assert!(onnx::quant_layers(&trained).is_err());

    let model = to_deploy(&trained).unwrap();
    let n = onnx::quant_layers(&model).unwrap().len();
    let good = ActivationQuant::symmetric(1.0);
    let e = export_error(onnx::export_int8(&model, &vec![good; n - 1], &[]));
    assert!(
        e.contains(&format!("{} activation quantizers given", n - 1)),
        "{e}"
    );
    assert!(e.contains(&format!("has {n} Conv/Gemm layers")), "{e}");

    for bad in [0.0, -0.5, f32::NAN, f32::INFINITY, 1e-40] {
        let mut acts = vec![good; n];
        acts[2].scale = bad;
        let e = export_error(onnx::export_int8(&model, &acts, &[]));
        assert!(e.contains("layer 2 (stage2.0.rbr_reparam)"), "{bad}: {e}");
        assert!(e.contains("finite and positive"), "{bad}: {e}");
        // A layer kept in float does not use its quantizer.
        assert!(onnx::export_int8(&model, &acts, &[2]).is_ok());
    }
    for (zero_point, unsigned) in [(128, false), (-129, false), (-1, true), (256, true)] {
        let mut acts = vec![good; n];
        acts[n - 1] = ActivationQuant {
            scale: 0.1,
            zero_point,
            unsigned,
        };
        let e = export_error(onnx::export_int8(&model, &acts, &[]));
        assert!(e.contains("zero point of layer"), "{zero_point}: {e}");
    }
    let e = export_error(onnx::export_int8(&model, &vec![good; n], &[n]));
    assert!(e.contains(&format!("keep_float names layer {n}")), "{e}");

    // Weights that are not finite have no int8 or float32 file form worth writing.
    let BlockKind::Deploy { weight, .. } = &model.blocks()[1].kind else {
        unreachable!()
    };
    let mut w = weight.to_vec().unwrap();
    w[5] = f32::NAN;
    weight.write(&w).unwrap();
    let e = export_error(onnx::export_fp32(&model));
    assert!(
        e.contains("stage1.0.rbr_reparam.weight") && e.contains("index 5"),
        "{e}"
    );
    let e = export_error(onnx::export_int8(&model, &vec![good; n], &[]));
    assert!(e.contains("stage1.0.rbr_reparam.weight"), "{e}");
}

#[test]
fn networks_export_vgg_and_refuse_ghostnet() {
    let vgg = Network::from(deploy_model(&config(3, false), 9));
    let bytes = onnx::export_network_fp32(&vgg).unwrap();
    assert_eq!(count(&parse(&bytes), "Conv"), 5);
    let n = match &vgg {
        Network::Vgg(m) => onnx::quant_layers(m).unwrap().len(),
        Network::Ghost(_) => unreachable!(),
    };
    let acts = vec![ActivationQuant::symmetric(2.0); n];
    assert!(onnx::export_network_int8(&vgg, &acts, &[]).is_ok());

    let ghost_config = NetConfig::preset("ghostnet-0.5x").unwrap().with_data(3, 10);
    let ghost = Network::new(&gpu(), &ghost_config, Mode::Deploy, 0).unwrap();
    for e in [
        export_error(onnx::export_network_fp32(&ghost)),
        export_error(onnx::export_network_int8(&ghost, &acts, &[])),
    ] {
        assert!(
            e.contains("GhostNet") && e.contains("not supported yet"),
            "{e}"
        );
    }
}
