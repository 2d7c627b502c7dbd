//! ONNX export checked by an independent runtime (tract) on real Fashion-MNIST test images:
//! FP32 logits equal the engine's to fp32 tolerance, INT8 logits the engine's fake-quantized
//! ones within the tolerance stated below, with top-1 agreement of at least 99%.

mod common;

use std::path::Path;

use common::{repopt, stderr, stdout, train_tiny};
use repopt::models::quant::calibrate::Calibrator;
use repopt::models::quant::network::{ActQuant, ActScheme, QuantVgg};
use repopt::tensor::{Gpu, Tensor, no_grad};
use repopt::train::data::Split;
use repopt::train::quantize::{Calibration, eval_loader};
use tract_onnx::prelude::{Framework, InferenceModelExt, IntoRunnable, TValue, tvec};

fn tract_logits(onnx: &Path, x: &[f32], shape: &[usize]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_path(onnx)
        .expect("tract reads the file")
        .into_optimized()
        .expect("tract optimizes it")
        .into_runnable()
        .expect("tract plans it");
    let input = tract_onnx::prelude::Tensor::from_shape(shape, x).unwrap();
    let out = plan.run(tvec!(TValue::from(input))).expect("tract runs it");
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

/// Runs the FP32 and INT8 graphs in tract over the run's first 300 test images and checks
/// them against the engine's deploy model and its fake quantization with `acts`.
fn check_against_engine(
    gpu: &Gpu,
    c: &Calibration,
    acts: Vec<Option<ActQuant>>,
    fp32: &Path,
    int8: &Path,
) {
    let quant = QuantVgg::new(&c.deploy, acts).unwrap();
    let test = eval_loader(&c.cfg, Split::Test, Some(300)).unwrap();
    let (mut images, mut agree, mut worst_fp32, mut worst_int8) = (0, 0, 0.0f32, 0.0f32);
    for batch in test.epoch(0) {
        let n = batch.labels.len();
        let (engine, engine_q) = no_grad(|| -> repopt::models::Result<(Vec<f32>, Vec<f32>)> {
            let x = Tensor::from_slice(gpu, &batch.images, &batch.shape)?;
            Ok((
                c.deploy.forward(&x, false)?.to_vec()?,
                quant.forward(&x)?.to_vec()?,
            ))
        })
        .unwrap();
        let scale = engine.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let t32 = tract_logits(fp32, &batch.images, &batch.shape);
        let t8 = tract_logits(int8, &batch.images, &batch.shape);
        for (a, b) in engine.iter().zip(&t32) {
            worst_fp32 = worst_fp32.max((a - b).abs() / scale);
        }
        for (a, b) in engine_q.iter().zip(&t8) {
            worst_int8 = worst_int8.max((a - b).abs() / scale);
        }
        let k = engine.len() / n;
        for i in 0..n {
            if argmax(&engine_q[i * k..(i + 1) * k]) == argmax(&t8[i * k..(i + 1) * k]) {
                agree += 1;
            }
        }
        images += n;
    }
    assert_eq!(images, 300);
    assert!(
        worst_fp32 < 1e-4,
        "FP32: tract differs from the engine by {worst_fp32} of the logit scale"
    );
    // The engine multiplies by a rounded reciprocal of each scale and ONNX divides, so a value
    // on a rounding boundary may land one level apart: a few thousandths of the scale.
    assert!(
        worst_int8 < 2e-2,
        "INT8: tract differs from the engine by {worst_int8} of the logit scale"
    );
    assert!(
        agree as f64 >= 0.99 * images as f64,
        "INT8 top-1 agreement {agree}/{images}"
    );
    eprintln!(
        "FP32 gap {worst_fp32:.1e}, INT8 gap {worst_int8:.1e}, top-1 agreement {agree}/{images}"
    );
}

fn export(run: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["export", run.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend(extra);
    let o = repopt(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn exported_models_run_in_tract_like_the_engine_on_test_images() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, "repvgg");
    let (fp32, int8) = (dir.path().join("fp32.onnx"), dir.path().join("int8.onnx"));
    assert!(export(&run, &fp32, &[]).contains("FP32"));
    let int8_args = ["--int8", "--calibrator", "max", "--calib-images", "128"];
    export(&run, &int8, &int8_args);

    // The engine's side: the same deploy model and the same (deterministic) calibration.
    let gpu = Gpu::from_env().unwrap();
    let c = Calibration::of_run(&gpu, &run, 128, &[]).unwrap();
    let acts = c
        .activations(Calibrator::Max, ActScheme::Symmetric)
        .unwrap();
    check_against_engine(&gpu, &c, acts, &fp32, &int8);
}

#[test]
fn a_qat_run_exports_its_trained_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, "target");
    let qat = dir.path().join("run-qat");
    let o = repopt(&["qat", run.to_str().unwrap(), "--calib-images", "64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (fp32, int8) = (dir.path().join("fp32.onnx"), dir.path().join("int8.onnx"));
    export(&qat, &fp32, &[]);
    let said = export(&qat, &int8, &["--int8", "--calib-images", "32"]);
    assert!(said.contains("quantization-aware training"), "{said}");

    let gpu = Gpu::from_env().unwrap();
    let c = Calibration::of_run(&gpu, &qat, 32, &[]).unwrap();
    let trained = c.trained.clone().expect("a QAT run holds its ranges");
    // The trained ranges are not what calibrating the fine-tuned model would choose.
    let max = c
        .activations(Calibrator::Max, ActScheme::Symmetric)
        .unwrap();
    assert_ne!(trained, max);
    check_against_engine(&gpu, &c, trained, &fp32, &int8);
}

#[test]
fn export_refuses_what_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let o = repopt(&[
        "export",
        dir.path().join("none").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("none"), "{}", stderr(&o));
    let o = repopt(&[
        "export",
        "x",
        "-o",
        out.to_str().unwrap(),
        "--calibrator",
        "mse",
    ]);
    assert!(
        !o.status.success(),
        "--calibrator without --int8 is refused"
    );
    assert!(!out.exists());
}
