//! `repopt devices`.

use clap::Args;
use repopt::tensor::list_adapters;

#[derive(Args)]
pub struct DevicesArgs {
    /// One JSON object per adapter.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &DevicesArgs) -> anyhow::Result<()> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        anyhow::bail!(repopt::tensor::Error::NoAdapter);
    }
    for a in adapters {
        if args.json {
            let v = serde_json::json!({
                "index": a.index,
                "name": a.name,
                "backend": a.backend.to_str(),
                "device_type": a.device_type_name(),
                "driver": a.driver,
                "driver_info": a.driver_info,
                "max_buffer_size": a.limits.max_buffer_size,
                "max_storage_buffer_binding_size": a.limits.max_storage_buffer_binding_size,
                "max_storage_buffers_per_shader_stage": a.limits.max_storage_buffers_per_shader_stage,
                "max_compute_workgroup_storage_size": a.limits.max_compute_workgroup_storage_size,
                "max_compute_invocations_per_workgroup": a.limits.max_compute_invocations_per_workgroup,
                "timestamp_query": a.timestamp_query,
                "shader_f16": a.shader_f16,
                "subgroups": a.subgroups,
                "subgroup_sizes": [a.subgroup_min_size, a.subgroup_max_size],
            });
            println!("{v}");
        } else {
            println!("{a}");
            let l = &a.limits;
            println!(
                "    max buffer {} MiB, max storage binding {} MiB, {} storage buffers/stage, {} KiB workgroup memory, {} invocations/workgroup",
                l.max_buffer_size >> 20,
                l.max_storage_buffer_binding_size >> 20,
                l.max_storage_buffers_per_shader_stage,
                l.max_compute_workgroup_storage_size >> 10,
                l.max_compute_invocations_per_workgroup
            );
            println!(
                "    subgroups: {} (sizes {}..{}), f16: {}, timestamps: {}",
                a.subgroups,
                a.subgroup_min_size,
                a.subgroup_max_size,
                a.shader_f16,
                a.timestamp_query
            );
        }
    }
    Ok(())
}
