//! The divergence guard's second half. The training loop reads the mean loss at each logged
//! step, which cannot see an update that blows the weights up after the last logged loss
//! was computed; so before anything is checkpointed the weights themselves are checked, with
//! one sum of squares computed on the device and read back once.

use std::path::Path;

use repopt_models::any::Network;
use repopt_tensor::{NoGradGuard, Tensor};

use crate::error::{Result, TrainError};
use crate::trainer::Position;

/// What a divergence error says of the last good checkpoint at `path`.
pub(crate) fn last_good(path: &Path) -> String {
    if path.exists() {
        path.display().to_string()
    } else {
        "none yet: the failure came before the first epoch ended".into()
    }
}

/// The sum of squares of every tensor of `model`'s state (parameters and running
/// statistics), summed on the device: NaN or infinite when any value is, and also when the
/// weights have grown past about 1.8e19, where their squares overflow f32.
///
/// ```no_run
/// use repopt_models::{Mode, RepOptVgg, VggConfig};
/// let gpu = repopt_tensor::Gpu::from_env()?;
/// let model = RepOptVgg::new(&gpu, VggConfig::preset("A0")?, Mode::Target, 0)?;
/// assert!(repopt_train::guard::state_sum_of_squares(&model.into())?.is_finite());
/// # Ok::<(), repopt_train::TrainError>(())
/// ```
pub fn state_sum_of_squares(model: &Network) -> Result<f64> {
    let _no_grad = NoGradGuard::new();
    let mut total: Option<Tensor> = None;
    for (_, t) in model.state() {
        let sq = t.mul(&t)?.sum()?;
        total = Some(match total {
            None => sq,
            Some(s) => s.add(&sq)?,
        });
    }
    Ok(total.map(|t| t.item()).transpose()?.unwrap_or(0.0) as f64)
}

/// Refuses to checkpoint a model whose weights are no longer finite at `pos`, with the
/// divergence error naming the step and the last good checkpoint at `checkpoint`.
pub(crate) fn check_weights(model: &Network, pos: Position, checkpoint: &Path) -> Result<()> {
    let value = state_sum_of_squares(model)?;
    if value.is_finite() {
        return Ok(());
    }
    // At an epoch's end the position already points at the next epoch's first batch.
    let epoch = if pos.batch == 0 {
        pos.epoch.saturating_sub(1)
    } else {
        pos.epoch
    };
    Err(TrainError::Diverged {
        step: pos.step,
        epoch,
        quantity: "sum of squares of the weights",
        value,
        checkpoint: last_good(checkpoint),
    })
}
