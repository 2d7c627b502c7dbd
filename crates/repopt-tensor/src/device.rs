//! The [`Gpu`] handle every tensor lives on: one opened adapter, its queue, and the engine's
//! caches (compiled kernels, the buffer pool, the batch of recorded work).

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::adapter::{
    AdapterSelector, AdapterSummary, AdapterSummary as Summary, choose, enumerate, instance,
};
use crate::error::{Error, Result};
use crate::kernels::{Kernel, Params};
use crate::launch::profile::KernelTime;
use crate::launch::{HostCounters, Recorder};
use crate::pool::{BufferPool, MemoryStats};
use crate::tuning::{ConvAlgorithm, Tuner, Tuning};

/// How to open a [`Gpu`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Which adapter; [`AdapterSelector::Auto`] consults nothing but the adapters' types.
    pub adapter: AdapterSelector,
    /// Refuse allocations that would take live device memory above this many bytes.
    pub memory_limit: Option<u64>,
    /// Use the plain kernels even where subgroup kernels could run (also set by
    /// `REPOPT_SUBGROUPS=0`); tests use it to check both families.
    pub disable_subgroup_kernels: bool,
    /// Memory planning only: tensors are accounted at their full size but backed by
    /// placeholder buffers, kernels are not run and read-backs return zeros. Peak byte
    /// counts equal those of a real run (they depend only on the order of allocations and
    /// frees), at no compute cost: what `repopt bench maxbatch` uses. This adapter's
    /// per-binding size limit is not applied, so plans hold for larger devices too.
    pub plan_only: bool,
    /// How kernel variants are chosen (direct or Winograd convolution); fixed by default,
    /// so results depend only on the shape and kernel family.
    pub tuning: Tuning,
}

pub(crate) struct GpuInner {
    pub(crate) summary: AdapterSummary,
    pub(crate) limits: wgpu::Limits,
    pub(crate) features: wgpu::Features,
    pub(crate) recorder: Recorder,
    pub(crate) pool: Mutex<BufferPool>,
    pub(crate) tuner: Arc<Tuner>,
    /// What it was opened with, for [`Gpu::open_another`].
    options: GpuOptions,
}

/// A device (one adapter, one queue) plus the engine's caches: compiled kernels, a buffer
/// pool with byte accounting, and the batch of recorded but not yet submitted dispatches.
///
/// Cloning is cheap (a reference count); all clones share the same device.
///
/// ```no_run
/// use repopt_tensor::{Gpu, GpuOptions};
/// let gpu = Gpu::new(GpuOptions::default())?;
/// println!("running on {}", gpu.adapter());
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpu({})", self.inner.summary.name)
    }
}

impl PartialEq for Gpu {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Gpu {
    /// Opens the adapter `options.adapter` selects, with the adapter's real limits.
    pub fn new(options: GpuOptions) -> Result<Gpu> {
        Gpu::open(options, None)
    }

    /// Opens a second device on this one's adapter, with the same options and sharing its
    /// kernel choices (measured ones included), but with its own queue, kernels, buffer pool
    /// and memory accounting. Independent work on two devices can overlap where one device
    /// leaves the adapter idle: a software adapter runs one device's dispatches one after
    /// another, each split over the cores and joined, so a small model's step leaves cores
    /// waiting that a second device's work can use.
    ///
    /// ```no_run
    /// use repopt_tensor::{Gpu, GpuOptions};
    /// let gpu = Gpu::new(GpuOptions::default())?;
    /// let second = gpu.open_another()?;
    /// assert_ne!(gpu, second);
    /// assert_eq!(gpu.adapter().index, second.adapter().index);
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn open_another(&self) -> Result<Gpu> {
        let options = GpuOptions {
            adapter: AdapterSelector::Index(self.inner.summary.index),
            ..self.inner.options.clone()
        };
        Gpu::open(options, Some(self.inner.tuner.clone()))
    }

    fn open(options: GpuOptions, tuner: Option<Arc<Tuner>>) -> Result<Gpu> {
        let instance = instance();
        let adapters = enumerate(&instance);
        let summaries: Vec<_> = adapters
            .iter()
            .enumerate()
            .map(|(i, a)| Summary::of(i, a))
            .collect();
        let index = choose(&summaries, &options.adapter)?;
        let adapter = &adapters[index];
        let summary = summaries[index].clone();
        let limits = adapter.limits();
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        let desc = wgpu::DeviceDescriptor {
            label: Some("repopt"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::DeviceRequest {
                adapter: summary.name.clone(),
                message: e.to_string(),
            }
        })?;
        let mut pool = BufferPool::default();
        pool.limit = options.memory_limit;
        pool.placeholders = options.plan_only;
        let env_off = std::env::var("REPOPT_SUBGROUPS").is_ok_and(|v| v == "0");
        let subgroup_kernels = summary.supports_subgroup_kernels()
            && features.contains(wgpu::Features::SUBGROUP)
            && !options.disable_subgroup_kernels
            && !env_off;
        let trims = Arc::new(AtomicU64::new(0));
        pool.trims = trims.clone();
        let recorder = Recorder::new(
            device,
            queue,
            &limits,
            (
                subgroup_kernels,
                features.contains(wgpu::Features::SHADER_F16),
                options.plan_only,
            ),
            trims,
        );
        // Plans launch nothing, so there is nothing to measure: they use the fixed choices.
        let tuner = tuner.unwrap_or_else(|| {
            let tuning = if options.plan_only {
                Tuning::Fixed
            } else {
                options.tuning.clone()
            };
            Arc::new(Tuner::new(tuning, Tuning::default_cache_file(&summary)))
        });
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                tuner,
                summary,
                limits,
                features,
                recorder,
                pool: Mutex::new(pool),
                options,
            }),
        })
    }

    /// Opens the adapter named by `REPOPT_ADAPTER` (or the preferred one when unset), with
    /// the tuning `REPOPT_TUNE` asks for (fixed choices when unset).
    pub fn from_env() -> Result<Gpu> {
        Gpu::new(GpuOptions {
            adapter: AdapterSelector::from_env(),
            tuning: Tuning::from_env(Tuning::Fixed)?,
            ..GpuOptions::default()
        })
    }

    /// What this device is.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.summary
    }

    /// The limits the device was opened with (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The optional features the device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// Whether this device only plans memory (see [`GpuOptions::plan_only`]).
    pub fn is_plan_only(&self) -> bool {
        self.inner.recorder.plan_only
    }

    /// Whether convolutions and matrix products run the subgroup kernels (see
    /// `shaders/conv_subgroup.wgsl`) rather than the plain ones.
    pub fn uses_subgroup_kernels(&self) -> bool {
        self.inner.recorder.subgroup_kernels
    }

    /// The raw wgpu device, for embedding applications that add their own kernels.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.recorder.device
    }

    /// The raw wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.recorder.queue
    }

    /// Current and peak bytes held by tensors, and bytes parked in the pool for reuse.
    pub fn memory(&self) -> MemoryStats {
        self.inner.pool.lock().expect("pool lock").stats()
    }

    /// Restarts peak tracking from the current live bytes.
    pub fn reset_peak_memory(&self) {
        self.inner.pool.lock().expect("pool lock").reset_peak();
    }

    /// Limits live tensor bytes; allocations beyond it fail with [`Error::OutOfMemory`].
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        self.inner.pool.lock().expect("pool lock").limit = limit;
    }

    /// Frees the buffers parked in the pool (live tensors are untouched).
    pub fn trim_pool(&self) {
        self.inner.pool.lock().expect("pool lock").trim();
    }

    /// How this device chooses kernel variants.
    pub fn tuning(&self) -> &Tuning {
        self.inner.tuner.mode()
    }

    /// Where measured choices are cached, when they are.
    pub fn tuning_file(&self) -> Option<&std::path::Path> {
        self.inner.tuner.file()
    }

    /// The variants chosen so far (read from the cache or measured), by shape key.
    pub fn tuned_choices(&self) -> Vec<(String, ConvAlgorithm)> {
        self.inner.tuner.choices()
    }

    /// Submits every recorded dispatch without waiting for it to finish.
    pub fn flush(&self) {
        self.inner.recorder.flush();
    }

    /// Submits every recorded dispatch and blocks until the device has run them all.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.recorder.flush();
        self.inner
            .recorder
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Readback(e.to_string()))
    }
}

/// Recording work: thin doors to the device's recorder (`launch.rs`), so ops need only a `Gpu`.
impl Gpu {
    /// Records one dispatch of `kernel`, checked against its declaration.
    pub(crate) fn launch<P: Params>(
        &self,
        kernel: &Kernel<P>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        self.inner
            .recorder
            .launch(kernel, params, buffers, workgroups)
    }

    /// Workgroup grid for `groups` linear workgroups.
    pub(crate) fn grid(&self, groups: u32) -> [u32; 3] {
        self.inner.recorder.grid(groups)
    }

    /// Records a copy of host data into `dst`.
    pub(crate) fn upload(&self, dst: &wgpu::Buffer, data: &[u8]) {
        self.inner.recorder.upload(dst, data)
    }

    /// Records a device-side copy of `bytes` from `src` to `dst`.
    pub(crate) fn copy(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        self.inner.recorder.copy(src, dst, bytes)
    }

    /// Records a device-side copy of a byte range (offsets and length multiples of 4).
    pub(crate) fn copy_range(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) {
        self.inner
            .recorder
            .copy_range(src, src_offset, dst, dst_offset, bytes)
    }

    /// Records a fill of `dst` with zeros.
    pub(crate) fn zero(&self, dst: &wgpu::Buffer) {
        self.inner.recorder.zero(dst)
    }

    /// Submits everything, waits, and returns the first `bytes` of `src`.
    pub(crate) fn download(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        self.inner.recorder.download(src, bytes)
    }

    /// Dispatches recorded since the device was opened (a cheap progress/cost counter).
    pub fn dispatch_count(&self) -> u64 {
        self.inner.recorder.counters().dispatches
    }

    /// Turns per-kernel profiling on or off (see [`KernelTime`]); both start the totals
    /// again. While on, every launch waits for the device, so steps run slower.
    ///
    /// ```no_run
    /// use repopt_tensor::{Gpu, Tensor};
    /// let gpu = Gpu::from_env()?;
    /// let x = Tensor::from_slice(&gpu, &[1.0, -1.0], &[2])?;
    /// gpu.set_profiling(true);
    /// let _ = x.relu()?;
    /// for k in gpu.kernel_profile() {
    ///     println!("{}: {} calls, {:.3} ms", k.kernel, k.calls, k.seconds * 1e3);
    /// }
    /// gpu.set_profiling(false);
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn set_profiling(&self, on: bool) {
        self.inner.recorder.flush();
        self.inner.recorder.profile.set(on);
    }

    /// Each kernel's launches and time since profiling was turned on, slowest first.
    pub fn kernel_profile(&self) -> Vec<KernelTime> {
        self.inner.recorder.profile.report()
    }

    /// Host-side work since the device was opened: dispatches, submissions, objects created,
    /// bytes moved. Take two snapshots and subtract with [`HostCounters::since`].
    pub fn counters(&self) -> HostCounters {
        let mut c = self.inner.recorder.counters();
        c.buffers_created += self
            .inner
            .pool
            .lock()
            .expect("pool lock")
            .stats()
            .buffers_created;
        c
    }
}
