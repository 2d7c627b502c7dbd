//! Every declaration in this module checked against the WGSL it describes, with naga and no
//! device: the shaders validate with each prelude they can be compiled with, every entry point
//! is declared, each declared kernel binds exactly its declared buffers (names, order,
//! read-only or writable) plus the parameter block at 0, and the parameter block's WGSL layout
//! (field names, offsets, size) equals the Rust struct's.

use std::collections::BTreeMap;

use naga::valid::{
    Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
};
use naga::{AddressSpace, StorageAccess, TypeInner};

use super::{KernelInfo, SHADERS, Shader, all};

fn compile(shader: &Shader, subgroups: bool) -> (naga::Module, ModuleInfo) {
    let text = shader.full_source(subgroups, shader.source);
    let what = format!("{} (subgroup prelude: {subgroups})", shader.name);
    let module = naga::front::wgsl::parse_str(&text)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&text)));
    let mut caps = if subgroups {
        Capabilities::SUBGROUP
    } else {
        Capabilities::empty()
    };
    if shader.needs_f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
    (module, info)
}

/// Files without subgroup operations must validate without the subgroup capability.
#[test]
fn every_shader_validates_with_each_prelude() {
    for shader in SHADERS {
        for subgroups in [false, true] {
            if shader.needs_subgroups && !subgroups {
                continue;
            }
            let (module, _) = compile(shader, subgroups);
            assert!(
                !module.entry_points.is_empty(),
                "{} has no entry points",
                shader.name
            );
        }
    }
}

#[test]
fn every_entry_point_is_declared_once() {
    let declared: Vec<&KernelInfo> = all().collect();
    for shader in SHADERS {
        let (module, _) = compile(shader, shader.needs_subgroups);
        for ep in &module.entry_points {
            let n = declared
                .iter()
                .filter(|k| k.shader.name == shader.name && k.entry == ep.name)
                .count();
            assert_eq!(n, 1, "{}::{} is declared {n} times", shader.name, ep.name);
        }
    }
    for k in &declared {
        assert!(
            SHADERS.iter().any(|s| s.name == k.shader.name),
            "{k}: its shader is missing from SHADERS"
        );
    }
}

/// What an entry point really binds: index -> (variable name, writable); 0 is the uniform.
fn used_bindings(
    module: &naga::Module,
    info: &ModuleInfo,
    entry: usize,
) -> BTreeMap<u32, (String, bool)> {
    let fun = info.get_entry_point(entry);
    let mut used = BTreeMap::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        if fun[handle].is_empty() {
            continue;
        }
        assert_eq!(binding.group, 0, "{:?} is outside group 0", var.name);
        let writable = match var.space {
            AddressSpace::Storage { access } => access.contains(StorageAccess::STORE),
            AddressSpace::Uniform => false,
            other => panic!("{:?}: unexpected address space {other:?}", var.name),
        };
        let name = var.name.clone().unwrap_or_default();
        let previous = used.insert(binding.binding, (name, writable));
        assert!(previous.is_none(), "binding {} used twice", binding.binding);
    }
    used
}

#[test]
fn every_kernel_binds_what_it_declares() {
    for kernel in all() {
        let (module, info) = compile(kernel.shader, kernel.shader.needs_subgroups);
        let index = module
            .entry_points
            .iter()
            .position(|ep| ep.name == kernel.entry)
            .unwrap_or_else(|| panic!("{kernel}: no such entry point"));
        let used = used_bindings(&module, &info, index);
        let mut expected = BTreeMap::new();
        expected.insert(0u32, ("p".to_string(), false));
        for (i, b) in kernel.bindings.iter().enumerate() {
            expected.insert(i as u32 + 1, (b.name.to_string(), b.writable));
        }
        assert_eq!(
            used, expected,
            "{kernel}: the WGSL binds (index -> name, writable) the left side, the declaration the right"
        );
    }
}

#[test]
fn every_parameter_block_matches_its_rust_struct() {
    for shader in SHADERS {
        let (module, _) = compile(shader, shader.needs_subgroups);
        let layout = shader.params;
        let ty = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .map(|(_, t)| &t.inner)
            .unwrap_or_else(|| panic!("{}: no Params struct", shader.name));
        let TypeInner::Struct { members, span } = ty else {
            panic!("{}: Params is not a struct", shader.name);
        };
        let wgsl: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        let rust: Vec<(String, usize)> = layout
            .fields
            .iter()
            .map(|(n, o)| (n.to_string(), *o))
            .collect();
        assert_eq!(
            wgsl, rust,
            "{}: field offsets of {}",
            shader.name, layout.rust_name
        );
        assert_eq!(
            *span as usize, layout.size,
            "{}: size of {}",
            shader.name, layout.rust_name
        );
    }
}
