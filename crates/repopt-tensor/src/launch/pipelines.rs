//! Compiled kernels and their bind groups, each created once per device.
//!
//! Pipelines get an explicit layout built from the kernel's declaration: the parameter block
//! at binding 0 is a uniform with a dynamic offset into the batch's arena, so a bind group
//! depends only on the buffers bound, and the same buffers (which the pool hands out again
//! step after step) reuse the same bind group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::kernels::{KernelInfo, Shader};

type PipelineKey = (&'static str, &'static str);

/// A compiled kernel and the layout its bind groups are made for.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Compiled modules and pipelines.
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
    let dir = std::env::var_os("REPOPT_SHADER_DIR");
    let read = |name: &str, embedded: &'static str| {
        dir.as_ref()
            .and_then(|d| std::fs::read_to_string(std::path::Path::new(d).join(name)).ok())
            .map_or(
                std::borrow::Cow::Borrowed(embedded),
                std::borrow::Cow::Owned,
            )
    };
    let body = read(shader.name, shader.source);
    let library = shader.library.map(|(name, text)| read(name, text));
    shader.assemble(subgroups, &body, library.as_deref().unwrap_or(""))
}

/// The bind group layout a kernel declares: its parameters as a uniform with a dynamic
/// offset, then its buffers, read-only or writable.
fn layout_entries(kernel: &KernelInfo) -> Vec<wgpu::BindGroupLayoutEntry> {
    let uniform = wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: None,
        },
        count: None,
    };
    let storage = kernel
        .bindings
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupLayoutEntry {
            binding: i as u32 + 1,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: !b.writable,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    std::iter::once(uniform).chain(storage).collect()
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

    /// The pipeline of `kernel`, and whether this call created it.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        kernel: &KernelInfo,
        subgroups: bool,
    ) -> (Arc<Pipeline>, bool) {
        let key = (kernel.shader.name, kernel.entry);
        if let Some(p) = self
            .pipelines
            .lock()
            .expect("pipeline cache lock")
            .get(&key)
        {
            return (p.clone(), false);
        }
        let module = self.module(device, kernel.shader, subgroups);
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(kernel.entry),
            entries: &layout_entries(kernel),
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.entry),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                // Kernels initialise the workgroup memory they read.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let p = Arc::new(Pipeline { pipeline, layout });
        self.pipelines
            .lock()
            .expect("pipeline cache lock")
            .insert(key, p.clone());
        (p, true)
    }
}

/// Bind groups by kernel and bound buffers. Holding a bind group keeps its buffers alive, so
/// the cache is emptied whenever the pool lets buffers go (a trim), and when it grows past
/// what any training step needs.
#[derive(Default)]
pub(crate) struct BindGroupCache {
    groups: HashMap<(PipelineKey, Vec<wgpu::Buffer>), wgpu::BindGroup>,
    trims_seen: u64,
}

/// More distinct (kernel, buffers) combinations than a step of the largest model records.
const MAX_BIND_GROUPS: usize = 16_384;

impl BindGroupCache {
    /// The bind group binding `arena` (dynamic offset) and `buffers` for `kernel`, and
    /// whether this call created it. `trims` is the pool's count of trims so far.
    pub(crate) fn get(
        &mut self,
        device: &wgpu::Device,
        pipeline: &Pipeline,
        kernel: &KernelInfo,
        (arena, arena_binding_size): (&wgpu::Buffer, u64),
        buffers: &[&wgpu::Buffer],
        trims: u64,
    ) -> (wgpu::BindGroup, bool) {
        if trims != self.trims_seen || self.groups.len() >= MAX_BIND_GROUPS {
            self.groups.clear();
            self.trims_seen = trims;
        }
        let key = (
            (kernel.shader.name, kernel.entry),
            buffers.iter().map(|b| (*b).clone()).collect::<Vec<_>>(),
        );
        if let Some(g) = self.groups.get(&key) {
            return (g.clone(), false);
        }
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: arena,
                offset: 0,
                size: wgpu::BufferSize::new(arena_binding_size),
            }),
        });
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.layout,
            entries: &entries,
        });
        self.groups.insert(key, group.clone());
        (group, true)
    }
}
