//! A contender's seeds, trained several at once, each on its own device of the adapter.
//!
//! A software adapter (lavapipe) runs one device's dispatches one after another, each split
//! over the cores and joined before the next, so a small model's step leaves cores idle:
//! the quick pipeline's RepVGG step ran at 536-695 images/s alone and at 822-851 in all
//! with two of it going at once, 798-842 with three (`repopt bench train --config quick
//! --batch 64 --res 28`, three interleaved rounds on a 2-core host). Every run stays what it
//! would be alone, bit for bit: it depends only on its own settings and the kernel choices,
//! which the devices share.

use std::sync::{Mutex, mpsc};

use repopt_tensor::Gpu;

use crate::config::TrainConfig;
use crate::error::Result;
use crate::quantize::{QuantReport, QuantizeOptions, quantize_run};
use crate::run_dir::Start;
use crate::trainer::{Observer, RunSummary, train};

/// One seed's run: already finished, or to be trained from `start`.
pub(super) struct SeedRun {
    pub cfg: TrainConfig,
    pub label: String,
    pub work: Work,
}

pub(super) enum Work {
    /// Finished earlier with the same settings (reported as reused).
    Done(Box<RunSummary>),
    /// To train, reporting to its observer.
    Train(Start, Box<dyn Observer + Send>),
}

/// What one seed gave: its run and, when asked for, its INT8 quantization.
pub(super) struct SeedOutcome {
    pub summary: RunSummary,
    pub quantized: Option<QuantReport>,
}

/// The devices runs go on: the caller's first, more opened on its adapter as needed.
pub(super) struct Devices {
    open: Vec<Gpu>,
}

impl Devices {
    pub fn new(gpu: &Gpu) -> Devices {
        Devices {
            open: vec![gpu.clone()],
        }
    }

    fn first(&mut self, n: usize) -> Result<&[Gpu]> {
        while self.open.len() < n {
            let another = self.open[0].open_another()?;
            self.open.push(another);
        }
        Ok(&self.open[..n])
    }
}

/// Trains (where needed) and quantizes (with `quantize`) every run of `runs`, `jobs` at a
/// time, calling `done` with each trained run's label and summary as it finishes. The
/// outcomes come back in the order of `runs`; the first error in that order is returned
/// once every run has stopped (each one trained to the end is saved and reused next time).
/// With one job everything runs on the calling thread, as a distributed run's collectives
/// require.
pub(super) fn run_seeds(
    devices: &mut Devices,
    runs: Vec<SeedRun>,
    jobs: usize,
    quantize: Option<&QuantizeOptions>,
    done: &mut dyn FnMut(&str, &RunSummary),
) -> Result<Vec<SeedOutcome>> {
    let jobs = jobs.clamp(1, runs.len().max(1));
    if jobs == 1 {
        let gpu = &devices.first(1)?[0];
        return runs
            .into_iter()
            .map(|r| {
                let label = r.label.clone();
                one(gpu, r, quantize, &mut |s| done(&label, s))
            })
            .collect();
    }
    let gpus = devices.first(jobs)?;
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let mut outcomes: Vec<Option<Result<SeedOutcome>>> = (0..runs.len()).map(|_| None).collect();
    let queue = Mutex::new(runs.into_iter().enumerate());
    let (finished, trained) = mpsc::channel::<(usize, RunSummary)>();
    std::thread::scope(|scope| {
        let workers: Vec<_> = gpus
            .iter()
            .map(|gpu| {
                let (queue, finished) = (&queue, finished.clone());
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let next = queue.lock().expect("seed queue").next();
                        let Some((i, run)) = next else { break };
                        let outcome = one(gpu, run, quantize, &mut |s| {
                            // The receiver outlives the workers; a send cannot fail.
                            let _ = finished.send((i, s.clone()));
                        });
                        mine.push((i, outcome));
                    }
                    mine
                })
            })
            .collect();
        drop(finished);
        for (i, s) in trained {
            done(&labels[i], &s);
        }
        for w in workers {
            for (i, outcome) in w.join().expect("a seed's worker panicked") {
                outcomes[i] = Some(outcome);
            }
        }
    });
    outcomes
        .into_iter()
        .map(|o| o.expect("every run was taken"))
        .collect()
}

/// One run on `gpu`: trained unless done, then quantized if asked.
fn one(
    gpu: &Gpu,
    run: SeedRun,
    quantize: Option<&QuantizeOptions>,
    trained: &mut dyn FnMut(&RunSummary),
) -> Result<SeedOutcome> {
    let summary = match run.work {
        Work::Done(s) => *s,
        Work::Train(start, mut observer) => {
            let s = train(gpu, &run.cfg, &start, observer.as_mut())?;
            trained(&s);
            s
        }
    };
    let quantized = match quantize {
        Some(opts) => Some(quantize_run(gpu, &run.cfg.out, opts)?),
        None => None,
    };
    Ok(SeedOutcome { summary, quantized })
}
