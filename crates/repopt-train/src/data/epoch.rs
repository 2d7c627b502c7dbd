//! One epoch's batches: what building any batch needs, the worker threads that build them
//! ahead of the training loop, and the iterator that hands them over in order.

use std::iter::FusedIterator;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{Batch, Dataset, Transform, sample_rng};

/// Everything needed to build any batch of one epoch.
#[derive(Debug)]
pub(super) struct EpochJob {
    pub(super) dataset: Arc<Dataset>,
    pub(super) transform: Arc<Transform>,
    pub(super) order: Vec<usize>,
    pub(super) batch_size: usize,
    pub(super) seed: u64,
    pub(super) epoch: u64,
    pub(super) out: [usize; 3],
}

impl EpochJob {
    /// Builds batch `b`, or gives up (`None`) as soon as `stop` is set.
    fn batch(&self, b: usize, stop: &AtomicBool) -> Option<Batch> {
        let lo = b * self.batch_size;
        let hi = (lo + self.batch_size).min(self.order.len());
        let indices = self.order[lo..hi].to_vec();
        let [c, oh, ow] = self.out;
        let size = c * oh * ow;
        let ds = &self.dataset;
        let mut images = vec![0.0f32; indices.len() * size];
        for (slot, &i) in images.chunks_exact_mut(size).zip(&indices) {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            let mut rng = sample_rng(self.seed, self.epoch, i);
            self.transform
                .apply(ds.image(i), c, ds.height, ds.width, &mut rng, slot);
        }
        Some(Batch {
            labels: indices.iter().map(|&i| ds.labels[i]).collect(),
            shape: [indices.len(), c, oh, ow],
            images,
            indices,
        })
    }
}

fn worker(
    job: &EpochJob,
    first: usize,
    end: usize,
    step: usize,
    stop: &AtomicBool,
    tx: &SyncSender<Batch>,
) {
    for b in (first..end).step_by(step) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(batch) = job.batch(b, stop) else {
            return;
        };
        // A send error means the iterator was dropped: nothing left to do.
        if tx.send(batch).is_err() {
            return;
        }
    }
}

#[derive(Debug)]
enum Mode {
    Inline,
    Workers {
        receivers: Vec<Receiver<Batch>>,
        handles: Vec<Option<JoinHandle<()>>>,
        stop: Arc<AtomicBool>,
    },
}

/// The batches of one epoch, in order. Dropping it early stops and joins
/// its worker threads.
///
/// # Example
///
/// ```
/// # use std::sync::Arc;
/// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
/// # let ds = Dataset { name: "t".into(), images: vec![0; 5 * 4], labels: vec![0; 5],
/// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
/// let cfg = LoaderConfig { batch_size: 2, workers: 2, normalize: Normalize::unit(), ..Default::default() };
/// let loader = Loader::new(Arc::new(ds), cfg);
/// let mut it = loader.epoch(0);
/// assert_eq!(it.len(), 3);
/// let first = it.next().unwrap();
/// assert_eq!(it.position(), 1);
/// drop(it); // workers stop here
/// assert_eq!(first.indices, vec![0, 1]);
/// ```
#[derive(Debug)]
pub struct EpochIter {
    job: Arc<EpochJob>,
    start: usize,
    next: usize,
    end: usize,
    mode: Mode,
}

impl EpochIter {
    /// Iterates batches `range` of `job`, built inline (`workers == 0`) or by `workers`
    /// threads holding about `prefetch` batches ready between them.
    pub(super) fn spawn(
        job: Arc<EpochJob>,
        range: std::ops::Range<usize>,
        workers: usize,
        prefetch: usize,
    ) -> EpochIter {
        let (start, total) = (range.start, range.end);
        let mode = if workers == 0 {
            Mode::Inline
        } else {
            let capacity = prefetch.div_ceil(workers).max(1);
            let stop = Arc::new(AtomicBool::new(false));
            let mut receivers = Vec::with_capacity(workers);
            let mut handles = Vec::with_capacity(workers);
            for k in 0..workers {
                let (tx, rx) = sync_channel(capacity);
                let job = Arc::clone(&job);
                let stop = Arc::clone(&stop);
                let handle = std::thread::Builder::new()
                    .name(format!("repopt-loader-{k}"))
                    .spawn(move || worker(&job, start + k, total, workers, &stop, &tx))
                    .unwrap_or_else(|e| panic!("cannot spawn loader worker thread: {e}"));
                receivers.push(rx);
                handles.push(Some(handle));
            }
            Mode::Workers {
                receivers,
                handles,
                stop,
            }
        };
        EpochIter {
            job,
            start,
            next: start,
            end: total,
            mode,
        }
    }
    /// The epoch being iterated.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 4], labels: vec![0],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// # let loader = Loader::new(Arc::new(ds), LoaderConfig { normalize: Normalize::unit(), ..Default::default() });
    /// assert_eq!(loader.epoch(7).epoch(), 7);
    /// ```
    pub fn epoch(&self) -> u64 {
        self.job.epoch
    }

    /// The index within the epoch of the batch the next call to `next`
    /// returns: the `skip_batches` to pass to [`Loader::epoch_from`](crate::data::Loader::epoch_from) when
    /// resuming after the batches consumed so far.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use repopt_train::data::{Dataset, Loader, LoaderConfig, Normalize};
    /// # let ds = Dataset { name: "t".into(), images: vec![0; 3 * 4], labels: vec![0; 3],
    /// #     channels: 1, height: 2, width: 2, classes: 1, class_names: vec!["a".into()] };
    /// # let cfg = LoaderConfig { batch_size: 1, normalize: Normalize::unit(), ..Default::default() };
    /// # let loader = Loader::new(Arc::new(ds), cfg);
    /// let it = loader.epoch_from(0, 2);
    /// assert_eq!(it.position(), 2);
    /// ```
    pub fn position(&self) -> usize {
        self.next
    }

    fn shutdown(&mut self) {
        if let Mode::Workers {
            receivers,
            handles,
            stop,
        } = &mut self.mode
        {
            stop.store(true, Ordering::Relaxed);
            // Dropping the receivers wakes workers blocked on a full channel.
            receivers.clear();
            for handle in handles.iter_mut().filter_map(Option::take) {
                // A worker's panic was already reported by the panic hook;
                // re-raising it from a destructor could abort the process.
                let _ = handle.join();
            }
        }
    }
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        let batch = match &mut self.mode {
            Mode::Inline => self.job.batch(b, &AtomicBool::new(false)),
            Mode::Workers {
                receivers, handles, ..
            } => {
                let k = (b - self.start) % receivers.len();
                match receivers[k].recv() {
                    Ok(batch) => Some(batch),
                    Err(_) => {
                        // The worker hung up without sending: it panicked.
                        if let Some(Err(payload)) = handles[k].take().map(JoinHandle::join) {
                            std::panic::resume_unwind(payload);
                        }
                        None
                    }
                }
            }
        };
        match batch {
            Some(batch) => {
                self.next += 1;
                Some(batch)
            }
            None => {
                self.next = self.end;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochIter {}

impl FusedIterator for EpochIter {}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shutdown();
    }
}
