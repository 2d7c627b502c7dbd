//! From a Rust call to a WGSL kernel: the recorder every device owns.
//!
//! Every kernel binds its parameters as a uniform block at binding 0 and its buffers at
//! bindings 1, 2, ... as its [`Kernel`] declares them. Recording a dispatch touches no queue
//! and, once a training step has run once, creates nothing: parameters go into a uniform
//! arena slot (a dynamic offset), host data into an upload arena, and pipelines and bind
//! groups come from caches. The batch is submitted when it is full or when the host reads a
//! value back, which is the only time the host waits. [`HostCounters`] counts all of it.

mod batch;
mod pipelines;
pub(crate) mod profile;
mod transfer;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use self::batch::{ARENA_SLOTS, Batch, MAX_PARAMS};
use self::pipelines::{BindGroupCache, PipelineCache};
use crate::error::{Error, Result};
use crate::kernels::{Kernel, KernelInfo, Params};

thread_local! {
    /// Launches this thread recorded, on any device. A device's own count also holds what
    /// other threads launched on it meanwhile (tests share one device across threads), so
    /// what one piece of code launches is counted here.
    static LAUNCHED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Kernel launches this thread has recorded so far, on any device (planned ones included).
#[cfg(feature = "testing")]
pub(crate) fn launched_on_this_thread() -> u64 {
    LAUNCHED_HERE.with(std::cell::Cell::get)
}

/// What the host has done on a device since it was opened: deterministic counts of the
/// work that costs host time per step, for benchmarks and for tests that a steady training
/// step creates nothing.
///
/// ```
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let before = gpu.counters();
/// let x = Tensor::from_slice(&gpu, &[1.0, -2.0, 3.0], &[3])?;
/// let y = x.relu()?.to_vec()?;
/// let step = gpu.counters().since(&before);
/// assert_eq!(y, vec![1.0, 0.0, 3.0]);
/// assert_eq!((step.dispatches, step.read_backs, step.bytes_uploaded), (1, 1, 12));
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostCounters {
    /// Kernel dispatches recorded.
    pub dispatches: u64,
    /// Command buffers submitted.
    pub submissions: u64,
    /// Bind groups created (each launch reuses one for the same buffers when it can).
    pub bind_groups_created: u64,
    /// Compute pipelines created (once per kernel per device).
    pub pipelines_created: u64,
    /// Device buffers created: tensors the pool could not serve from parked buffers, and
    /// the recorder's own arenas and read-back buffer.
    pub buffers_created: u64,
    /// Host bytes uploaded to the device.
    pub bytes_uploaded: u64,
    /// Bytes read back to the host.
    pub bytes_read_back: u64,
    /// Read-backs (each one waits for the device).
    pub read_backs: u64,
    /// Host seconds spent recording launches and uploads, submissions excluded.
    pub encode_seconds: f64,
    /// Host seconds spent in queue submissions (a driver may wait there for earlier work).
    pub submit_seconds: f64,
}

impl HostCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &HostCounters) -> HostCounters {
        HostCounters {
            dispatches: self.dispatches - earlier.dispatches,
            submissions: self.submissions - earlier.submissions,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            pipelines_created: self.pipelines_created - earlier.pipelines_created,
            buffers_created: self.buffers_created - earlier.buffers_created,
            bytes_uploaded: self.bytes_uploaded - earlier.bytes_uploaded,
            bytes_read_back: self.bytes_read_back - earlier.bytes_read_back,
            read_backs: self.read_backs - earlier.read_backs,
            encode_seconds: self.encode_seconds - earlier.encode_seconds,
            submit_seconds: self.submit_seconds - earlier.submit_seconds,
        }
    }
}

/// A device's queue seen as a recorder of work: compiled kernels, the open batch, and the
/// operations that add to it. Every [`Gpu`](crate::Gpu) owns one.
pub(crate) struct Recorder {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    /// Use the subgroup kernel family.
    pub(crate) subgroup_kernels: bool,
    /// The device was opened with `SHADER_F16`.
    shader_f16: bool,
    /// Record nothing, read back zeros (memory planning).
    pub(crate) plan_only: bool,
    max_per_dim: u32,
    pipelines: PipelineCache,
    bind_groups: Mutex<BindGroupCache>,
    batch: Mutex<Batch>,
    readback: Mutex<Option<wgpu::Buffer>>,
    /// How often the buffer pool has let its parked buffers go; cached bind groups that
    /// might hold them are dropped when it changes.
    pool_trims: Arc<AtomicU64>,
    pub(crate) profile: profile::Profile,
}

/// Splits `groups` workgroups over x and y so neither exceeds the per-dimension limit;
/// kernels recover the linear index as `wg.x + wg.y * num_workgroups.x`.
pub(crate) fn grid(groups: u32, max_per_dim: u32) -> [u32; 3] {
    let groups = groups.max(1);
    if groups <= max_per_dim {
        [groups, 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim);
        [groups.div_ceil(y), y, 1]
    }
}

/// Checks the buffers of a launch against the kernel's declaration: one per binding, each
/// usable as storage, and no writable binding aliasing another (wgpu would panic on both).
fn check_buffers(kernel: &KernelInfo, buffers: &[&wgpu::Buffer]) -> Result<()> {
    let err = |message: String| Error::Launch {
        kernel: kernel.to_string(),
        message,
    };
    let declared = kernel.bindings;
    if buffers.len() != declared.len() {
        let missing_or_extra = if buffers.len() < declared.len() {
            let b = &declared[buffers.len()];
            format!("binding {} ({}) has no buffer", buffers.len() + 1, b.name)
        } else {
            format!("binding {} has no declaration", declared.len() + 1)
        };
        return Err(err(format!(
            "{} buffers given for {} bindings: {missing_or_extra}",
            buffers.len(),
            declared.len()
        )));
    }
    for (i, (buffer, binding)) in buffers.iter().zip(declared).enumerate() {
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(err(format!(
                "binding {} ({}) is not a storage buffer",
                i + 1,
                binding.name
            )));
        }
        if binding.writable
            && let Some(j) = (0..buffers.len()).find(|&j| j != i && buffers[j] == *buffer)
        {
            return Err(err(format!(
                "binding {} ({}) is written but is the same buffer as binding {} ({})",
                i + 1,
                binding.name,
                j + 1,
                declared[j].name
            )));
        }
    }
    Ok(())
}

impl Recorder {
    pub(crate) fn new(
        device: wgpu::Device,
        queue: wgpu::Queue,
        limits: &wgpu::Limits,
        (subgroup_kernels, shader_f16, plan_only): (bool, bool, bool),
        pool_trims: Arc<AtomicU64>,
    ) -> Self {
        let batch = Batch::new(&device, limits.min_uniform_buffer_offset_alignment as u64);
        Recorder {
            device,
            queue,
            subgroup_kernels,
            shader_f16,
            plan_only,
            max_per_dim: limits.max_compute_workgroups_per_dimension,
            pipelines: PipelineCache::default(),
            bind_groups: Mutex::new(BindGroupCache::default()),
            batch: Mutex::new(batch),
            readback: Mutex::new(None),
            pool_trims,
            profile: profile::Profile::default(),
        }
    }

    /// Submits the open batch without waiting.
    pub(crate) fn flush(&self) {
        self.batch.lock().expect("batch lock").submit(&self.queue);
    }

    /// Records one dispatch of `kernel` with `params` at binding 0 and `buffers` at 1, 2, ...
    /// in the order the kernel declares them.
    pub(crate) fn launch<P: Params>(
        &self,
        kernel: &Kernel<P>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let clock = Instant::now();
        let info = &kernel.info;
        let params = bytemuck::bytes_of(params);
        if params.len() > MAX_PARAMS {
            return Err(Error::Launch {
                kernel: info.to_string(),
                message: format!(
                    "parameter block of {} bytes exceeds {MAX_PARAMS}",
                    params.len()
                ),
            });
        }
        check_buffers(info, buffers)?;
        if self.plan_only {
            self.batch.lock().expect("batch lock").counters.dispatches += 1;
            LAUNCHED_HERE.with(|n| n.set(n.get() + 1));
            return Ok(());
        }
        if info.shader.needs_subgroups && !self.subgroup_kernels {
            return Err(Error::Launch {
                kernel: info.to_string(),
                message: "needs subgroup operations, which this device does not use".into(),
            });
        }
        if info.shader.needs_f16 && !self.shader_f16 {
            return Err(Error::Launch {
                kernel: info.to_string(),
                message: "needs f16 in shaders (SHADER_F16), which this adapter lacks".into(),
            });
        }
        let (pipeline, new_pipeline) =
            self.pipelines
                .get(&self.device, info, self.subgroup_kernels);
        let mut batch = self.batch.lock().expect("batch lock");
        let submitted = batch.counters.submit_seconds;
        if batch.slot == ARENA_SLOTS {
            batch.submit(&self.queue);
        }
        let (bind_group, new_group) = self.bind_groups.lock().expect("bind group lock").get(
            &self.device,
            &pipeline,
            info,
            (&batch.arena, MAX_PARAMS as u64),
            buffers,
            self.pool_trims.load(Ordering::Relaxed),
        );
        let offset = batch.push_params(params);
        let encoder = batch.encoder(&self.device);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, &bind_group, &[offset as u32]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        let c = &mut batch.counters;
        c.dispatches += 1;
        LAUNCHED_HERE.with(|n| n.set(n.get() + 1));
        c.pipelines_created += new_pipeline as u64;
        c.bind_groups_created += new_group as u64;
        c.encode_seconds += clock.elapsed().as_secs_f64() - (c.submit_seconds - submitted);
        drop(batch);
        if self.profile.enabled() {
            self.flush();
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Readback(e.to_string()))?;
            self.profile.record(info, clock.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Workgroup grid for `groups` linear workgroups.
    pub(crate) fn grid(&self, groups: u32) -> [u32; 3] {
        grid(groups, self.max_per_dim)
    }

    /// Everything counted since the device was opened (the pool's creations not included).
    pub(crate) fn counters(&self) -> HostCounters {
        self.batch.lock().expect("batch lock").counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_respects_the_per_dimension_limit() {
        assert_eq!(grid(10, 65535), [10, 1, 1]);
        let g = grid(200_000, 65535);
        assert!(g[0] <= 65535 && g[0] * g[1] >= 200_000);
        assert_eq!(grid(0, 65535), [1, 1, 1]);
    }

    /// A launch whose buffers do not fit the declaration is an error naming the kernel and
    /// the binding, recorded nothing, and leaves the device usable.
    #[test]
    fn wrong_buffers_are_errors_naming_kernel_and_binding() {
        use crate::kernels::conv::{ConvParams, FORWARD};
        use crate::{Gpu, Tensor};
        let gpu = Gpu::from_env().expect("a GPU adapter (software Vulkan is enough)");
        let x = Tensor::zeros(&gpu, &[4]).unwrap();
        let w = Tensor::zeros(&gpu, &[4]).unwrap();
        let p = ConvParams::default();
        let before = gpu.dispatch_count();

        let err = gpu
            .launch(&FORWARD, &p, &[x.buffer()], [1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("conv.wgsl::conv_forward"), "{err}");
        assert!(err.contains("binding 2 (wpack) has no buffer"), "{err}");

        let err = gpu
            .launch(
                &FORWARD,
                &p,
                &[x.buffer(), w.buffer(), x.buffer()],
                [1, 1, 1],
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("binding 3 (y) is written but is the same buffer as binding 1 (x)"),
            "{err}"
        );

        let four = [x.buffer(), w.buffer(), x.buffer(), w.buffer()];
        let err = gpu
            .launch(&FORWARD, &p, &four, [1, 1, 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("binding 4 has no declaration"), "{err}");
        assert_eq!(gpu.dispatch_count(), before);
        gpu.synchronize().unwrap();
    }
}
