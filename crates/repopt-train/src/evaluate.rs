//! Evaluation: top-1, top-5 and mean loss over a loader, in evaluation mode.

use repopt_models::any::Network;
use repopt_tensor::{Tensor, no_grad};
use serde::{Deserialize, Serialize};

use crate::data::Loader;
use crate::dist::World;
use crate::error::{Result, TrainError};

/// Accuracy and loss on a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean cross-entropy (no label smoothing).
    pub loss: f64,
    /// Top-1 accuracy, percent.
    pub top1: f64,
    /// Top-5 accuracy, percent (top-k with k = classes when there are fewer than 5).
    pub top5: f64,
    /// Images evaluated.
    pub images: usize,
}

/// Accumulates predictions batch by batch.
#[derive(Default)]
pub struct Tally {
    loss: f64,
    top1: usize,
    top5: usize,
    images: usize,
}

impl Tally {
    /// Adds a batch of logits `[n, classes]` (row-major) and labels.
    ///
    /// # Errors
    ///
    /// A label that is not below `classes` (a test set with classes the model does not
    /// have); the rows before it are counted.
    pub fn add(&mut self, logits: &[f32], labels: &[u32], classes: usize) -> Result<()> {
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            let l = label as usize;
            if l >= classes {
                return Err(TrainError::Config(format!(
                    "label {label} is out of range for a model with {classes} classes"
                )));
            }
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&z| (z as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            self.loss += lse - row[l] as f64;
            let better = row.iter().filter(|&&z| z > row[l]).count();
            self.top1 += (better == 0) as usize;
            self.top5 += (better < 5) as usize;
            self.images += 1;
        }
        Ok(())
    }

    /// The result so far.
    pub fn result(&self) -> EvalResult {
        let n = self.images.max(1) as f64;
        EvalResult {
            loss: self.loss / n,
            top1: 100.0 * self.top1 as f64 / n,
            top5: 100.0 * self.top5 as f64 / n,
            images: self.images,
        }
    }
}

/// Evaluates `model` (evaluation-mode batch norms) on every batch of `loader`'s epoch 0.
///
/// # Errors
///
/// A test set with no images, or with more classes than the model has, is refused before
/// any work is done; engine errors as they come.
pub fn evaluate(model: &Network, loader: &Loader) -> Result<EvalResult> {
    evaluate_with(&model.gpu(), model.num_classes(), loader, &|x| {
        Ok(model.forward(x, false)?)
    })
}

/// [`evaluate`] for any function from images to logits of `classes` classes (a quantized
/// model, a wrapped one), with the same checks.
pub fn evaluate_with(
    gpu: &repopt_tensor::Gpu,
    classes: usize,
    loader: &Loader,
    forward: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<EvalResult> {
    Ok(tally_with(gpu, classes, loader, forward)?.result())
}

/// [`evaluate`] in a distributed run: each rank evaluates the shard of the test set its
/// `loader` holds ([`crate::data::Shard`]) and the counts are summed over the ranks, so every
/// rank returns the result over the whole set.
pub fn evaluate_across(world: &World, model: &Network, loader: &Loader) -> Result<EvalResult> {
    let forward = |x: &Tensor| Ok(model.forward(x, false)?);
    let tally = world.agree(tally_with(
        &model.gpu(),
        model.num_classes(),
        loader,
        &forward,
    ))?;
    let mut sums = [
        tally.loss,
        tally.top1 as f64,
        tally.top5 as f64,
        tally.images as f64,
    ];
    world.all_reduce_sum_f64(&mut sums);
    Ok(Tally {
        loss: sums[0],
        top1: sums[1] as usize,
        top5: sums[2] as usize,
        images: sums[3] as usize,
    }
    .result())
}

fn tally_with(
    gpu: &repopt_tensor::Gpu,
    classes: usize,
    loader: &Loader,
    forward: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tally> {
    let data = loader.dataset();
    if data.is_empty() {
        return Err(TrainError::Config(format!(
            "the test set '{}' has no images to evaluate on",
            data.name
        )));
    }
    if data.classes > classes {
        return Err(TrainError::Config(format!(
            "the test set '{}' has {} classes but the model has {classes}; evaluate on the \
             dataset the model was trained on",
            data.name, data.classes
        )));
    }
    let mut tally = Tally::default();
    for batch in loader.epoch(0) {
        let logits = no_grad(|| -> Result<Vec<f32>> {
            let x = Tensor::from_slice(gpu, &batch.images, &batch.shape)?;
            Ok(forward(&x)?.to_vec()?)
        })?;
        tally.add(&logits, &batch.labels, classes)?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn tally_counts_top1_top5_and_loss() {
        let mut t = Tally::default();
        // Label 0 is the arg-max; label 2 ranks third; label 6 ranks last of 7.
        t.add(&[3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], &[0], 7)
            .unwrap();
        t.add(&[3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[2], 7)
            .unwrap();
        t.add(&[6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0], &[6], 7)
            .unwrap();
        let r = t.result();
        assert_eq!(r.images, 3);
        assert!((r.top1 - 100.0 / 3.0).abs() < 1e-9);
        assert!((r.top5 - 200.0 / 3.0).abs() < 1e-9);
        assert!(r.loss > 0.0);
    }

    #[test]
    fn tally_refuses_labels_beyond_the_classes() {
        let mut t = Tally::default();
        t.add(&[0.0, 1.0, 2.0], &[1], 3).unwrap();
        let err = t
            .add(&[0.0, 1.0, 2.0, 2.0, 1.0, 0.0], &[0, 3], 3)
            .unwrap_err();
        assert!(err.to_string().contains("label 3"), "{err}");
        assert_eq!(t.result().images, 2);
    }
}
