//! A terminal progress bar for training runs (loss, learning rate, images/s), and plain
//! lines for evaluations, both on stderr so stdout stays machine-readable.

use indicatif::{ProgressBar, ProgressStyle};

use crate::evaluate::EvalResult;
use crate::trainer::Observer;

/// Draws one bar per run.
pub struct ProgressReporter {
    bar: Option<ProgressBar>,
    label: String,
}

impl ProgressReporter {
    /// A reporter whose bar is prefixed with `label`.
    pub fn new(label: impl Into<String>) -> Self {
        ProgressReporter {
            bar: None,
            label: label.into(),
        }
    }
}

impl Observer for ProgressReporter {
    fn start(&mut self, _name: &str, total: u64, first: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(self.label.clone());
        bar.set_position(first);
        self.bar = Some(bar);
    }

    fn step(&mut self, _step: u64, epoch: u64, loss: f64, lr: f64, ips: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "epoch {epoch} loss {loss:.4} lr {lr:.4} {ips:.0} img/s"
            ));
        }
    }

    fn tick(&mut self, step: u64) {
        if let Some(b) = &self.bar {
            b.set_position(step);
        }
    }

    fn eval(&mut self, epoch: u64, r: &EvalResult) {
        let line = format!(
            "{} epoch {epoch}: test top-1 {:.2}% top-5 {:.2}% loss {:.4} ({} images)",
            self.label, r.top1, r.top5, r.loss, r.images
        );
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
