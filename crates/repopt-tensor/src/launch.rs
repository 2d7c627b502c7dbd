//! From a Rust call to a WGSL kernel: the pipeline cache, and the batch of recorded
//! dispatches that is submitted without waiting.
//!
//! Every kernel binds its parameters as a uniform block at binding 0 and its buffers at
//! bindings 1, 2, ... as its [`Kernel`] declares them. Parameters of all dispatches in a
//! batch live in one uniform arena, written once when the batch is submitted, so recording a
//! dispatch costs no queue operation and the host never waits except to read a value back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::kernels::{Kernel, KernelInfo, Params, Shader};

type PipelineKey = (&'static str, &'static str);

/// A compiled kernel and the layout its bind groups are made for.
pub(crate) struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Compiled modules and pipelines, each built once per device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
}

fn checks_forced() -> bool {
    std::env::var("REPOPT_SHADER_CHECKS").is_ok_and(|v| v != "0")
}

/// Kernel developers can point `REPOPT_SHADER_DIR` at a copy of `shaders/` to try kernel
/// changes without rebuilding; files missing there fall back to the embedded source.
fn source_of(shader: &Shader, subgroups: bool) -> String {
    if let Some(dir) = std::env::var_os("REPOPT_SHADER_DIR")
        && let Ok(text) = std::fs::read_to_string(std::path::Path::new(&dir).join(shader.name))
    {
        return shader.full_source(subgroups, &text);
    }
    shader.full_source(subgroups, shader.source)
}

impl PipelineCache {
    fn module(
        &self,
        device: &wgpu::Device,
        shader: &Shader,
        subgroups: bool,
    ) -> Arc<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().expect("module cache lock");
        modules
            .entry(shader.name)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(source_of(shader, subgroups).into()),
                };
                let module = if shader.trusted && !checks_forced() {
                    // SAFETY: kernels marked trusted clamp or prove every index against the
                    // shapes in their uniform block; the kernel tests cover the edge shapes.
                    unsafe {
                        device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks::unchecked(),
                        )
                    }
                } else {
                    device.create_shader_module(desc)
                };
                Arc::new(module)
            })
            .clone()
    }

    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        shader: &Shader,
        entry: &'static str,
        subgroups: bool,
    ) -> Arc<Pipeline> {
        if let Some(p) = self
            .pipelines
            .lock()
            .expect("pipeline cache lock")
            .get(&(shader.name, entry))
        {
            return p.clone();
        }
        let module = self.module(device, shader, subgroups);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                // Kernels initialise the workgroup memory they read.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let p = Arc::new(Pipeline { pipeline, layout });
        self.pipelines
            .lock()
            .expect("pipeline cache lock")
            .insert((shader.name, entry), p.clone());
        p
    }
}

const ARENA_SLOTS: u64 = 256;
const MAX_PARAMS: usize = 256;

/// Recorded work not yet submitted.
pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    arena: wgpu::Buffer,
    params: Vec<u8>,
    slot: u64,
    align: u64,
    /// Dispatches recorded since the device was opened.
    pub(crate) dispatches: u64,
}

impl Batch {
    pub(crate) fn new(device: &wgpu::Device, align: u64) -> Self {
        let slot = align.max(MAX_PARAMS as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: slot * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Batch {
            encoder: None,
            arena,
            params: Vec::new(),
            slot: 0,
            align: slot,
            dispatches: 0,
        }
    }

    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    fn submit(&mut self, queue: &wgpu::Queue) {
        if let Some(encoder) = self.encoder.take() {
            if !self.params.is_empty() {
                queue.write_buffer(&self.arena, 0, &self.params);
            }
            queue.submit([encoder.finish()]);
        }
        self.params.clear();
        self.slot = 0;
    }
}

/// A device's queue seen as a recorder of work: compiled kernels, the open batch, and the
/// operations that add to it. Every [`Gpu`](crate::Gpu) owns one.
pub(crate) struct Recorder {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    /// Use the subgroup kernel family.
    pub(crate) subgroup_kernels: bool,
    /// Record nothing, read back zeros (memory planning).
    pub(crate) plan_only: bool,
    max_per_dim: u32,
    pipelines: PipelineCache,
    batch: Mutex<Batch>,
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
        subgroup_kernels: bool,
        plan_only: bool,
    ) -> Self {
        let batch = Batch::new(&device, limits.min_uniform_buffer_offset_alignment as u64);
        Recorder {
            device,
            queue,
            subgroup_kernels,
            plan_only,
            max_per_dim: limits.max_compute_workgroups_per_dimension,
            pipelines: PipelineCache::default(),
            batch: Mutex::new(batch),
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
        let inner = self;
        if inner.plan_only {
            inner.batch.lock().expect("batch lock").dispatches += 1;
            return Ok(());
        }
        if info.shader.needs_subgroups && !inner.subgroup_kernels {
            return Err(Error::Launch {
                kernel: info.to_string(),
                message: "needs subgroup operations, which this device does not use".into(),
            });
        }
        let pipeline = inner.pipelines.get(
            &inner.device,
            info.shader,
            info.entry,
            inner.subgroup_kernels,
        );
        let mut batch = inner.batch.lock().expect("batch lock");
        if batch.slot == ARENA_SLOTS {
            batch.submit(&inner.queue);
        }
        let offset = batch.slot * batch.align;
        let mut padded = [0u8; MAX_PARAMS];
        padded[..params.len()].copy_from_slice(params);
        let size = params.len().max(16).next_multiple_of(16);
        batch.params.resize(offset as usize, 0);
        batch.params.extend_from_slice(&padded[..size]);
        batch.slot += 1;
        batch.dispatches += 1;
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &batch.arena,
                offset,
                size: wgpu::BufferSize::new(size as u64),
            }),
        });
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.layout,
            entries: &entries,
        });
        let encoder = batch.encoder(&inner.device);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        Ok(())
    }

    /// Workgroup grid for `groups` linear workgroups.
    pub(crate) fn grid(&self, groups: u32) -> [u32; 3] {
        grid(groups, self.max_per_dim)
    }

    /// Records a copy of host data into `dst` (ordered with the recorded dispatches).
    pub(crate) fn upload(&self, dst: &wgpu::Buffer, data: &[u8]) {
        if data.is_empty() || self.plan_only {
            return;
        }
        let inner = self;
        let staging = inner
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("upload"),
                contents: data,
                usage: wgpu::BufferUsages::COPY_SRC,
            });
        let mut batch = inner.batch.lock().expect("batch lock");
        let len = (data.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        batch
            .encoder(&inner.device)
            .copy_buffer_to_buffer(&staging, 0, dst, 0, len);
    }

    /// Records a device-side copy of `bytes` from `src` to `dst`.
    pub(crate) fn copy(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        let inner = self;
        if inner.plan_only {
            return;
        }
        let mut batch = inner.batch.lock().expect("batch lock");
        let len = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        batch
            .encoder(&inner.device)
            .copy_buffer_to_buffer(src, 0, dst, 0, len);
    }

    /// Records a fill of `dst` with zeros.
    pub(crate) fn zero(&self, dst: &wgpu::Buffer) {
        let inner = self;
        if inner.plan_only {
            return;
        }
        let mut batch = inner.batch.lock().expect("batch lock");
        batch.encoder(&inner.device).clear_buffer(dst, 0, None);
    }

    /// Submits everything recorded, waits for it, and returns the first `bytes` of `src`.
    pub(crate) fn download(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let inner = self;
        if inner.plan_only {
            return Ok(vec![0; bytes as usize]);
        }
        let len = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut batch = inner.batch.lock().expect("batch lock");
            batch
                .encoder(&inner.device)
                .copy_buffer_to_buffer(src, 0, &staging, 0, len);
            batch.submit(&inner.queue);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Readback(e.to_string()))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// Dispatches recorded since the device was opened.
    pub(crate) fn dispatch_count(&self) -> u64 {
        self.batch.lock().expect("batch lock").dispatches
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
