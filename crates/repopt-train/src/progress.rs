//! Progress of training runs, on stderr so stdout stays machine-readable: a progress bar
//! when stderr is a terminal, and plain lines otherwise (a log file, a pipe, a batch job),
//! where a bar would show nothing at all:
//!
//! ```text
//! train: 1170 steps, from step 0
//! train: step 120/1170 (10%) epoch 0 loss 1.2345 lr 0.1000 850 img/s ETA 0:12:34
//! train epoch 0: test top-1 85.20% top-5 99.10% loss 0.4321 (10000 images)
//! train: finished at step 1170/1170 after 0:13:02
//! ```
//!
//! A step line is written when [`LINE_INTERVAL`] has passed since the last one or the run
//! has gone through another tenth of its steps, whichever comes first, and at the last
//! step: a long run logs twice a minute, a short one still shows its progress. The ETA
//! extrapolates the pace of this process, evaluations included.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::evaluate::EvalResult;
use crate::trainer::Observer;

/// Longest gap between two step lines when stderr is not a terminal.
pub const LINE_INTERVAL: Duration = Duration::from_secs(30);

/// Reports one run: as a bar on a terminal, as lines elsewhere.
///
/// ```
/// use std::time::Duration;
/// use repopt_train::progress::ProgressReporter;
/// use repopt_train::trainer::Observer;
/// let mut lines = ProgressReporter::lines("train", Box::new(std::io::stdout()), Duration::ZERO);
/// lines.start("runs/train", 100, 0);
/// lines.step(10, 0, 2.3, 0.1, 500.0); // train: step 10/100 (10%) epoch 0 loss 2.3000 ...
/// lines.finish();
/// ```
pub struct ProgressReporter {
    label: String,
    output: Output,
}

enum Output {
    /// The bar, once started, drawn alone or among the bars of runs going on beside it.
    Bar(Option<ProgressBar>, Option<MultiProgress>),
    Lines(Lines),
}

struct Lines {
    out: Box<dyn Write + Send>,
    every: Duration,
    total: u64,
    first: u64,
    step: u64,
    started: Instant,
    last_line: Instant,
    last_tenth: u64,
}

impl ProgressReporter {
    /// A reporter labelled `label`: a bar when stderr is a terminal, lines on stderr at
    /// most [`LINE_INTERVAL`] apart otherwise.
    pub fn new(label: impl Into<String>) -> Self {
        Self::on_terminal(label, None)
    }

    /// Like [`ProgressReporter::new`], for one of several runs going on at once: on a
    /// terminal its bar is drawn among theirs (one line each) rather than over them.
    ///
    /// ```
    /// use repopt_train::progress::{ProgressGroup, ProgressReporter};
    /// let group = ProgressGroup::default();
    /// let (a, b) = (ProgressReporter::among("seed 0", &group), ProgressReporter::among("seed 1", &group));
    /// # let _ = (a, b);
    /// ```
    pub fn among(label: impl Into<String>, group: &ProgressGroup) -> Self {
        Self::on_terminal(label, Some(group.0.clone()))
    }

    fn on_terminal(label: impl Into<String>, group: Option<MultiProgress>) -> Self {
        if std::io::stderr().is_terminal() {
            ProgressReporter {
                label: label.into(),
                output: Output::Bar(None, group),
            }
        } else {
            Self::lines(label, Box::new(std::io::stderr()), LINE_INTERVAL)
        }
    }

    /// A reporter writing lines to `out`, at most `every` apart.
    pub fn lines(label: impl Into<String>, out: Box<dyn Write + Send>, every: Duration) -> Self {
        let now = Instant::now();
        ProgressReporter {
            label: label.into(),
            output: Output::Lines(Lines {
                out,
                every,
                total: 0,
                first: 0,
                step: 0,
                started: now,
                last_line: now,
                last_tenth: 0,
            }),
        }
    }
}

/// The bars of runs going on at once, drawn one line each on a terminal (see
/// [`ProgressReporter::among`]).
#[derive(Clone, Default)]
pub struct ProgressGroup(MultiProgress);

/// `h:mm:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Lines {
    fn write(&mut self, line: &str) {
        // Progress is advice: a closed stderr must not stop the run.
        let _ = writeln!(self.out, "{line}").and_then(|_| self.out.flush());
    }

    fn eta(&self) -> String {
        let done = self.step.saturating_sub(self.first);
        if done == 0 {
            return "?".into();
        }
        let per_step = self.started.elapsed().as_secs_f64() / done as f64;
        let left = self.total.saturating_sub(self.step) as f64 * per_step;
        clock(Duration::from_secs_f64(left.min(1e9)))
    }
}

impl Observer for ProgressReporter {
    fn start(&mut self, _name: &str, total: u64, first: u64) {
        match &mut self.output {
            Output::Bar(bar, group) => {
                let b = ProgressBar::new(total);
                let b = match group {
                    Some(g) => g.add(b),
                    None => b,
                };
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(self.label.clone());
                b.set_position(first);
                *bar = Some(b);
            }
            Output::Lines(l) => {
                let now = Instant::now();
                (l.total, l.first, l.step) = (total, first, first);
                (l.started, l.last_line) = (now, now);
                l.last_tenth = (first * 10).checked_div(total).unwrap_or(0);
                l.write(&format!("{}: {total} steps, from step {first}", self.label));
            }
        }
    }

    fn step(&mut self, step: u64, epoch: u64, loss: f64, lr: f64, ips: f64) {
        match &mut self.output {
            Output::Bar(bar, _) => {
                if let Some(b) = bar {
                    b.set_message(format!(
                        "epoch {epoch} loss {loss:.4} lr {lr:.4} {ips:.0} img/s"
                    ));
                }
            }
            Output::Lines(l) => {
                l.step = step;
                let tenth = (step * 10).checked_div(l.total).unwrap_or(0);
                let due =
                    l.last_line.elapsed() >= l.every || tenth > l.last_tenth || step >= l.total;
                if due {
                    let percent = (step * 100).checked_div(l.total).unwrap_or(100);
                    let line = format!(
                        "{}: step {step}/{} ({percent}%) epoch {epoch} loss {loss:.4} lr {lr:.4} {ips:.0} img/s ETA {}",
                        self.label,
                        l.total,
                        l.eta()
                    );
                    l.write(&line);
                    l.last_line = Instant::now();
                    l.last_tenth = tenth;
                }
            }
        }
    }

    fn tick(&mut self, step: u64) {
        if let Output::Bar(Some(b), _) = &self.output {
            b.set_position(step);
        }
    }

    fn eval(&mut self, epoch: u64, r: &EvalResult) {
        let line = format!(
            "{} epoch {epoch}: test top-1 {:.2}% top-5 {:.2}% loss {:.4} ({} images)",
            self.label, r.top1, r.top5, r.loss, r.images
        );
        match &mut self.output {
            Output::Bar(Some(b), _) => b.println(line),
            Output::Bar(None, _) => eprintln!("{line}"),
            Output::Lines(l) => l.write(&line),
        }
    }

    fn finish(&mut self) {
        match &mut self.output {
            Output::Bar(bar, _) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
            Output::Lines(l) => {
                let line = format!(
                    "{}: finished at step {}/{} after {}",
                    self.label,
                    l.step,
                    l.total,
                    clock(l.started.elapsed())
                );
                l.write(&line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    #[test]
    fn lines_come_each_tenth_of_the_run_and_at_its_end() {
        let out = Shared::default();
        let mut r = ProgressReporter::lines("search", Box::new(out.clone()), Duration::MAX);
        r.start("runs/search", 200, 0);
        for step in (5..=200).step_by(5) {
            r.step(step, step / 100, 1.5, 0.05, 640.4);
        }
        r.eval(
            1,
            &EvalResult {
                loss: 0.5,
                top1: 81.25,
                top5: 99.0,
                images: 64,
            },
        );
        r.finish();
        let lines = out.lines();
        assert_eq!(lines[0], "search: 200 steps, from step 0");
        let steps: Vec<&String> = lines.iter().filter(|l| l.contains(": step ")).collect();
        assert_eq!(steps.len(), 10, "{lines:#?}");
        let (head, eta) = steps[0].split_once(" ETA ").unwrap();
        assert_eq!(
            head,
            "search: step 20/200 (10%) epoch 0 loss 1.5000 lr 0.0500 640 img/s"
        );
        let parts: Vec<&str> = eta.split(':').collect();
        assert!(parts.len() == 3 && parts[1].len() == 2, "{eta}");
        assert!(steps[9].starts_with("search: step 200/200 (100%) epoch 2 "));
        assert_eq!(
            lines[lines.len() - 2],
            "search epoch 1: test top-1 81.25% top-5 99.00% loss 0.5000 (64 images)"
        );
        assert!(lines[lines.len() - 1].starts_with("search: finished at step 200/200 after 0:00:"));
    }

    #[test]
    fn a_resumed_run_counts_from_its_checkpoint_and_a_short_interval_logs_every_step() {
        let out = Shared::default();
        let mut r = ProgressReporter::lines("train", Box::new(out.clone()), Duration::ZERO);
        r.start("runs/train", 1000, 600);
        r.step(601, 6, 1.0, 0.1, 100.0);
        r.step(602, 6, 1.0, 0.1, 100.0);
        let lines = out.lines();
        assert_eq!(lines[0], "train: 1000 steps, from step 600");
        assert!(
            lines[1].starts_with("train: step 601/1000 (60%) "),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("train: step 602/1000 (60%) "),
            "{lines:?}"
        );
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 62)), "3:01:02");
    }
}
