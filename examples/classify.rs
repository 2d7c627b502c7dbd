//! Classifies image files with a trained model and prints the five most likely classes of
//! each, with their probabilities.
//!
//! ```text
//! cargo run --release --example classify -- MODEL IMAGE...
//! ```
//!
//! `MODEL` is a run directory written by `repopt train --out DIR` (or its model file or
//! checkpoint), or a deploy model written by `repopt convert`. Each image (JPEG or PNG, any
//! size) is prepared exactly as the run's evaluation prepared its test images: converted to
//! the dataset's channels and stored size, resized to the run's resolution and normalised
//! with the dataset's statistics. Fashion-MNIST models expect its style of picture: a light
//! garment on a black background.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use repopt::tensor::Gpu;
use repopt::train::inference::{Classifier, Prediction};

/// Classes printed per image.
pub const TOP: usize = 5;

/// Loads `model`, classifies every file in `images` and prints the `top` classes of each;
/// returns them too. Fails, naming the file, on the first model or image that cannot be
/// read, before any image is classified.
pub fn run(
    gpu: &Gpu,
    model: &Path,
    images: &[PathBuf],
    top: usize,
) -> anyhow::Result<Vec<Vec<Prediction>>> {
    let classifier = Classifier::load(gpu, model)?;
    let m = classifier.model().config();
    let [c, h, w] = classifier.preprocess().input_shape();
    println!(
        "{} ({} {}, {} classes), inputs {c}x{h}x{w}",
        model.display(),
        m.name(),
        classifier.model().mode(),
        m.num_classes()
    );
    let results = classifier.classify_files(images, top)?;
    for (path, predictions) in images.iter().zip(&results) {
        println!("{}", path.display());
        for p in predictions {
            println!("  {:6.2}%  {} ({})", 100.0 * p.probability, p.name, p.class);
        }
    }
    Ok(results)
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((model, images)) = args.split_first().filter(|(_, images)| !images.is_empty()) else {
        eprintln!(
            "usage: classify MODEL IMAGE... (MODEL: a run directory, model file or deploy model)"
        );
        return ExitCode::from(2);
    };
    let result = Gpu::from_env()
        .map_err(anyhow::Error::from)
        .and_then(|gpu| run(&gpu, model, images, TOP));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        // Every error here names its file (and carries its cause in its own text).
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
