//! Each setting of a [`TrainConfig`] checked against its domain (see
//! [`repopt_models::domain`]), naming the key as a configuration file spells it. The command
//! line checks its flags with the same domains while parsing; these checks catch what a file
//! or a program sets.

use std::path::Path;

use repopt_models::domain::{self, Bounded, Domain, non_empty};

use crate::config::{ArchConfig, TrainConfig};

fn path(name: &str, p: &Path) -> Result<(), String> {
    non_empty(name, "path", &p.to_string_lossy())
}

fn optional<T: Bounded>(d: Domain<T>, name: &str, v: Option<T>) -> Result<(), String> {
    v.map_or(Ok(()), |v| d.check(name, v).map(drop))
}

impl ArchConfig {
    /// Checks each value against its domain, naming it `arch.<key>`.
    ///
    /// ```
    /// use repopt_train::config::ArchConfig;
    /// let wide = ArchConfig { widths: Some([1.0, 1.0, 1.0, 1e30]), ..Default::default() };
    /// assert_eq!(wide.check_domains().unwrap_err(), "arch.widths must be in (0, 16], got 1e30");
    /// ```
    pub fn check_domains(&self) -> Result<(), String> {
        non_empty("arch.preset", "name", &self.preset)?;
        if let Some(b) = &self.num_blocks {
            domain::NUM_BLOCKS.check_all("arch.num_blocks", b)?;
        }
        if let Some(w) = &self.widths {
            domain::WIDTH.check_all("arch.widths", w)?;
        }
        if let Some(s) = &self.strides {
            domain::STRIDE.check_all("arch.strides", s)?;
        }
        Ok(())
    }
}

impl TrainConfig {
    /// Checks each value against its domain on its own (combinations are
    /// [`TrainConfig::validate`]'s), naming the key.
    ///
    /// ```
    /// use repopt_train::TrainConfig;
    /// let cfg = TrainConfig { momentum: 1.5, ..Default::default() };
    /// assert_eq!(cfg.check_domains().unwrap_err(), "momentum must be in [0, 1), got 1.5");
    /// ```
    pub fn check_domains(&self) -> Result<(), String> {
        use domain::*;
        if let Some(d) = &self.data_dir {
            path("data_dir", d)?;
        }
        if let Some(s) = &self.scales {
            path("scales", s)?;
        }
        path("out", &self.out)?;
        optional(RESOLUTION, "resolution", self.resolution)?;
        optional(IMAGE_LIMIT, "train_limit", self.train_limit)?;
        optional(IMAGE_LIMIT, "test_limit", self.test_limit)?;
        WORKERS.check("workers", self.workers)?;
        self.arch.check_domains()?;
        LR.check("lr", self.lr)?;
        LR_BATCH.check("lr_batch", self.lr_batch)?;
        WARMUP_EPOCHS.check("warmup_epochs", self.warmup_epochs)?;
        WEIGHT_DECAY.check("weight_decay", self.weight_decay)?;
        MOMENTUM.check("momentum", self.momentum)?;
        LABEL_SMOOTHING.check("label_smoothing", self.label_smoothing)?;
        optional(CLIP_GRAD, "clip_grad", self.clip_grad)?;
        EPOCHS.check("epochs", self.epochs)?;
        BATCH.check("batch_size", self.batch_size)?;
        BATCH.check("eval_batch_size", self.eval_batch_size)?;
        STEPS.check("log_every", self.log_every)?;
        optional(STEPS, "stop_after_steps", self.stop_after_steps)?;
        // The optimizers take the rate as f32: a rate that overflows it once scaled to the
        // batch would send every weight to infinity on the first step.
        let scaled = self.lr * self.batch_size as f64 / self.lr_batch as f64;
        if !(scaled as f32).is_finite() {
            return Err(must_be(
                "the learning rate scaled to the batch (lr x batch_size / lr_batch)",
                format_args!("at most {:e}", f32::MAX),
                scaled.show(),
            ));
        }
        Ok(())
    }
}
