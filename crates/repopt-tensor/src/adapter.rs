//! Adapter discovery and selection: which GPU (or software driver) a [`Gpu`](crate::Gpu)
//! opens.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Environment variable that picks the adapter when no explicit selector is given.
pub const ADAPTER_ENV: &str = "REPOPT_ADAPTER";

/// Which adapter to open.
///
/// Parsed from the `--adapter` flag or the `REPOPT_ADAPTER` variable:
/// `auto` (default), an index into [`list_adapters`], a backend (`vulkan`, `metal`, `dx12`,
/// `gl`), `software`/`cpu`, or any other text, matched as a case-insensitive substring of the
/// adapter name.
///
/// ```
/// use repopt_tensor::AdapterSelector;
/// assert_eq!("1".parse::<AdapterSelector>().unwrap(), AdapterSelector::Index(1));
/// assert_eq!("Vulkan".parse::<AdapterSelector>().unwrap(), AdapterSelector::Backend(wgpu::Backend::Vulkan));
/// assert_eq!("llvmpipe".parse::<AdapterSelector>().unwrap(), AdapterSelector::Name("llvmpipe".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AdapterSelector {
    /// Prefer hardware (discrete, then integrated, then virtual); software only if nothing else.
    #[default]
    Auto,
    /// Position in [`list_adapters`].
    Index(usize),
    /// The preferred adapter of one backend.
    Backend(wgpu::Backend),
    /// A software (CPU) adapter such as Mesa's lavapipe.
    Software,
    /// Case-insensitive substring of the adapter name.
    Name(String),
}

impl FromStr for AdapterSelector {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "" | "auto" | "default" => AdapterSelector::Auto,
            "vulkan" | "vk" => AdapterSelector::Backend(wgpu::Backend::Vulkan),
            "metal" => AdapterSelector::Backend(wgpu::Backend::Metal),
            "dx12" | "d3d12" => AdapterSelector::Backend(wgpu::Backend::Dx12),
            "gl" | "gles" | "opengl" => AdapterSelector::Backend(wgpu::Backend::Gl),
            "software" | "cpu" => AdapterSelector::Software,
            _ => match t.parse::<usize>() {
                Ok(i) => AdapterSelector::Index(i),
                Err(_) => AdapterSelector::Name(t.to_string()),
            },
        })
    }
}

impl fmt::Display for AdapterSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterSelector::Auto => write!(f, "auto"),
            AdapterSelector::Index(i) => write!(f, "{i}"),
            AdapterSelector::Backend(b) => write!(f, "{}", b.to_str()),
            AdapterSelector::Software => write!(f, "software"),
            AdapterSelector::Name(n) => write!(f, "{n}"),
        }
    }
}

impl AdapterSelector {
    /// The selector from `REPOPT_ADAPTER`, or [`AdapterSelector::Auto`] when unset.
    pub fn from_env() -> Self {
        std::env::var(ADAPTER_ENV)
            .ok()
            .map(|v| v.parse().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// What `repopt devices` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Position in the enumeration (what `--adapter N` selects).
    pub index: usize,
    /// Adapter name as the driver reports it.
    pub name: String,
    /// Vulkan, Metal, DX12, ...
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub device_type: wgpu::DeviceType,
    /// Driver name.
    pub driver: String,
    /// Driver version / details.
    pub driver_info: String,
    /// The limits the engine cares about.
    pub limits: KeyLimits,
    /// Whether the adapter has GPU timestamp queries (used by benchmarks when present).
    pub timestamp_query: bool,
    /// Whether the adapter supports `f16` in shaders.
    pub shader_f16: bool,
    /// Whether the adapter supports subgroup operations.
    pub subgroups: bool,
    /// Smallest subgroup size the adapter may use (0 if unknown).
    pub subgroup_min_size: u32,
    /// Largest subgroup size the adapter may use (0 if unknown).
    pub subgroup_max_size: u32,
}

/// The subset of adapter limits that bounds what the engine can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLimits {
    /// Largest single buffer, in bytes.
    pub max_buffer_size: u64,
    /// Largest storage buffer binding, in bytes (bounds the largest tensor).
    pub max_storage_buffer_binding_size: u64,
    /// Storage buffers one kernel may bind.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Workgroup (shared) memory per workgroup, in bytes.
    pub max_compute_workgroup_storage_size: u32,
    /// Invocations per workgroup.
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
}

impl KeyLimits {
    fn of(l: &wgpu::Limits) -> Self {
        KeyLimits {
            max_buffer_size: l.max_buffer_size,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
        }
    }
}

impl AdapterSummary {
    pub(crate) fn of(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let features = adapter.features();
        AdapterSummary {
            index,
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            driver_info: info.driver_info,
            limits: KeyLimits::of(&adapter.limits()),
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
        }
    }

    /// Whether the subgroup kernels can run here: they share values within groups of 8
    /// invocations, so subgroups must exist and hold at least 8.
    pub fn supports_subgroup_kernels(&self) -> bool {
        self.subgroups && self.subgroup_min_size >= 8
    }

    /// True for software rasterisers such as lavapipe / llvmpipe / WARP.
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// `Cpu`, `DiscreteGpu`, ... as a short lowercase word.
    pub fn device_type_name(&self) -> &'static str {
        device_type_name(self.device_type)
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "software",
        wgpu::DeviceType::Other => "other",
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} ({}, {}, driver {} {})",
            self.index,
            self.name,
            self.backend.to_str(),
            self.device_type_name(),
            self.driver,
            self.driver_info
        )
    }
}

pub(crate) fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // Validation layers (when installed) slow every dispatch; opt in with WGPU_VALIDATION=1.
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    desc.backends = wgpu::Backends::PRIMARY.with_env();
    wgpu::Instance::new(desc)
}

pub(crate) fn enumerate(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Lists every adapter wgpu can see, in the order `--adapter N` indexes them.
///
/// ```no_run
/// for a in repopt_tensor::list_adapters() {
///     println!("{a}");
/// }
/// ```
pub fn list_adapters() -> Vec<AdapterSummary> {
    enumerate(&instance())
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterSummary::of(i, a))
        .collect()
}

fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_preference(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

/// Picks the index of the adapter `selector` means among `summaries`.
pub(crate) fn choose(summaries: &[AdapterSummary], selector: &AdapterSelector) -> Result<usize> {
    if summaries.is_empty() {
        return Err(Error::NoAdapter);
    }
    let best_of = |pred: &dyn Fn(&AdapterSummary) -> bool| {
        summaries
            .iter()
            .filter(|s| pred(s))
            .min_by_key(|s| {
                (
                    preference(s.device_type),
                    backend_preference(s.backend),
                    s.index,
                )
            })
            .map(|s| s.index)
    };
    let found = match selector {
        AdapterSelector::Auto => best_of(&|_| true),
        AdapterSelector::Index(i) => summaries.get(*i).map(|s| s.index),
        AdapterSelector::Backend(b) => best_of(&|s| s.backend == *b),
        AdapterSelector::Software => best_of(&|s| s.is_software()),
        AdapterSelector::Name(n) => {
            let n = n.to_ascii_lowercase();
            best_of(&|s| s.name.to_ascii_lowercase().contains(&n))
        }
    };
    found.ok_or_else(|| Error::AdapterNotFound {
        selector: selector.to_string(),
        available: summaries
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(index: usize, name: &str, t: wgpu::DeviceType) -> AdapterSummary {
        AdapterSummary {
            index,
            name: name.into(),
            backend: wgpu::Backend::Vulkan,
            device_type: t,
            driver: String::new(),
            driver_info: String::new(),
            limits: KeyLimits::of(&wgpu::Limits::default()),
            timestamp_query: false,
            shader_f16: false,
            subgroups: false,
            subgroup_min_size: 0,
            subgroup_max_size: 0,
        }
    }

    #[test]
    fn auto_prefers_hardware_and_falls_back_to_software() {
        let list = vec![
            summary(0, "llvmpipe (LLVM 19)", wgpu::DeviceType::Cpu),
            summary(1, "Intel UHD", wgpu::DeviceType::IntegratedGpu),
            summary(2, "NVIDIA H100", wgpu::DeviceType::DiscreteGpu),
        ];
        assert_eq!(choose(&list, &AdapterSelector::Auto).unwrap(), 2);
        assert_eq!(choose(&list, &AdapterSelector::Software).unwrap(), 0);
        assert_eq!(choose(&list, &"intel".parse().unwrap()).unwrap(), 1);
        assert_eq!(choose(&list, &"0".parse().unwrap()).unwrap(), 0);
        assert_eq!(choose(&list[..1], &AdapterSelector::Auto).unwrap(), 0);
    }

    #[test]
    fn unknown_selector_lists_what_exists() {
        let list = vec![summary(0, "llvmpipe", wgpu::DeviceType::Cpu)];
        let err = choose(&list, &"radeon".parse().unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("radeon") && text.contains("llvmpipe"),
            "{text}"
        );
        assert!(matches!(
            choose(&[], &AdapterSelector::Auto),
            Err(Error::NoAdapter)
        ));
        assert!(Error::NoAdapter.to_string().contains("mesa-vulkan-drivers"));
    }
}
