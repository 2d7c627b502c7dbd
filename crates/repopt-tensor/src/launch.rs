//! From a Rust call to a WGSL kernel: embedded shaders, the pipeline cache, and the batch of
//! recorded dispatches that is submitted without waiting.
//!
//! Every kernel binds its parameters as a uniform block at binding 0 and its buffers at
//! bindings 1, 2, ... in the order the caller lists them. Parameters of all dispatches in a
//! batch live in one uniform arena, written once when the batch is submitted, so recording a
//! dispatch costs no queue operation and the host never waits except to read a value back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::device::{Gpu, GpuInner};
use crate::error::{Error, Result};

/// One WGSL source file from `shaders/`, embedded in the binary.
#[derive(Debug)]
pub struct Shader {
    /// File stem, used as the cache key.
    pub name: &'static str,
    /// WGSL text.
    pub source: &'static str,
    /// Whether the kernels keep every index in range themselves (clamped or proven by shape),
    /// so wgpu's per-access bounds checks can be left out.
    pub trusted: bool,
    /// Whether the file uses subgroup operations (compiled only where they run).
    pub needs_subgroups: bool,
}

macro_rules! shader {
    ($ident:ident, $file:literal, $trusted:expr) => {
        shader!($ident, $file, $trusted, false);
    };
    ($ident:ident, $file:literal, $trusted:expr, $subgroups:expr) => {
        #[doc = concat!("`shaders/", $file, "`")]
        pub const $ident: Shader = Shader {
            name: $file,
            source: include_str!(concat!("../../../shaders/", $file)),
            trusted: $trusted,
            needs_subgroups: $subgroups,
        };
    };
}

/// Invocation ids for devices without subgroup kernels (`shaders/prelude_plain.wgsl`).
pub const PRELUDE_PLAIN: &str = include_str!("../../../shaders/prelude_plain.wgsl");
/// Invocation ids built from subgroup builtins (`shaders/prelude_subgroup.wgsl`).
pub const PRELUDE_SUBGROUP: &str = include_str!("../../../shaders/prelude_subgroup.wgsl");
/// Index helpers every kernel file may use (`shaders/common.wgsl`).
pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// The full text a kernel file compiles as: a prelude, the shared helpers, the file.
pub fn full_source(subgroups: bool, body: &str) -> String {
    let prelude = if subgroups {
        PRELUDE_SUBGROUP
    } else {
        PRELUDE_PLAIN
    };
    format!("{prelude}{COMMON}{body}")
}

/// The engine's kernels.
pub mod shaders {
    use super::Shader;
    shader!(ELEMENTWISE, "elementwise.wgsl", false);
    shader!(CONV, "conv.wgsl", true);
    shader!(CONV_SUBGROUP, "conv_subgroup.wgsl", true, true);
    shader!(MATMUL, "matmul.wgsl", true);
    shader!(MATMUL_SUBGROUP, "matmul_subgroup.wgsl", true, true);
    shader!(BATCHNORM, "batchnorm.wgsl", false);
    shader!(REDUCE, "reduce.wgsl", false);
    shader!(LOSS, "loss.wgsl", false);
    shader!(OPTIM, "optim.wgsl", false);
    shader!(PROBE, "probe.wgsl", false);

    /// Every shader, for validation and warm-up.
    pub const ALL: &[&Shader] = &[
        &ELEMENTWISE,
        &CONV,
        &CONV_SUBGROUP,
        &MATMUL,
        &MATMUL_SUBGROUP,
        &BATCHNORM,
        &REDUCE,
        &LOSS,
        &OPTIM,
        &PROBE,
    ];
}

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
        return full_source(subgroups, &text);
    }
    full_source(subgroups, shader.source)
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

impl GpuInner {
    pub(crate) fn flush(&self) {
        self.batch.lock().expect("batch lock").submit(&self.queue);
    }
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

impl Gpu {
    /// Records one dispatch of `entry` in `shader`. `params` is the kernel's uniform block
    /// (binding 0); `buffers` are bound at 1, 2, ... in order.
    pub(crate) fn launch(
        &self,
        shader: &Shader,
        entry: &'static str,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) {
        assert!(
            params.len() <= MAX_PARAMS && params.len().is_multiple_of(4),
            "{entry}: bad uniform block size"
        );
        let inner = &*self.inner;
        if inner.plan_only {
            inner.batch.lock().expect("batch lock").dispatches += 1;
            return;
        }
        debug_assert!(
            !shader.needs_subgroups || inner.subgroup_kernels,
            "{} needs subgroups",
            shader.name
        );
        let pipeline = inner
            .pipelines
            .get(&inner.device, shader, entry, inner.subgroup_kernels);
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
    }

    /// Workgroup grid for `groups` linear workgroups.
    pub(crate) fn grid(&self, groups: u32) -> [u32; 3] {
        grid(
            groups,
            self.inner.limits.max_compute_workgroups_per_dimension,
        )
    }

    /// Records a copy of host data into `dst` (ordered with the recorded dispatches).
    pub(crate) fn upload(&self, dst: &wgpu::Buffer, data: &[u8]) {
        if data.is_empty() || self.inner.plan_only {
            return;
        }
        let inner = &*self.inner;
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
        let inner = &*self.inner;
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
        let inner = &*self.inner;
        if inner.plan_only {
            return;
        }
        let mut batch = inner.batch.lock().expect("batch lock");
        batch.encoder(&inner.device).clear_buffer(dst, 0, None);
    }

    /// Submits everything recorded, waits for it, and returns the first `bytes` of `src`.
    pub(crate) fn download(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let inner = &*self.inner;
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

    /// Dispatches recorded since the device was opened (a cheap progress/cost counter).
    pub fn dispatch_count(&self) -> u64 {
        self.inner.batch.lock().expect("batch lock").dispatches
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

    /// Every kernel file parses and validates with naga, with each prelude it can be
    /// compiled with, and with no device needed. Files without subgroup operations must
    /// validate without the subgroup capability.
    #[test]
    fn every_shader_validates_with_naga() {
        use naga::valid::{
            Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
        };
        for shader in shaders::ALL {
            for subgroups in [false, true] {
                if shader.needs_subgroups && !subgroups {
                    continue;
                }
                let text = full_source(subgroups, shader.source);
                let what = format!("{} (subgroup prelude: {subgroups})", shader.name);
                let module = naga::front::wgsl::parse_str(&text)
                    .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&text)));
                let caps = if subgroups {
                    Capabilities::SUBGROUP
                } else {
                    Capabilities::empty()
                };
                Validator::new(ValidationFlags::all(), caps)
                    .subgroup_stages(ShaderStages::COMPUTE)
                    .subgroup_operations(SubgroupOperationSet::all())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{what}: {e:?}"));
                assert!(
                    !module.entry_points.is_empty(),
                    "{what} has no entry points"
                );
            }
        }
    }
}
