//! Tables and target ratios, shared by `repopt bench` and `cargo bench`.

use repopt_models::ghostnet::GhostConfig;
use serde::Serialize;

use crate::kernels::{KernelResult, PeakResult};
use crate::train::{MaxBatchResult, MemoryResult, StepResult};
use crate::update::UpdateResult;

/// A ratio measured in one run against the project's target for it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub target: String,
    /// The measured ratio.
    pub value: f64,
    /// The target it should reach.
    pub goal: f64,
    /// Whether it does.
    pub met: bool,
}

fn target(name: impl Into<String>, value: f64, goal: f64) -> Target {
    Target {
        target: name.into(),
        value,
        goal,
        met: value >= goal,
    }
}

/// Whether results of `config` can be held to the targets: their goals are RepOpt-VGG's
/// over RepVGG, and no goal is set for RepOpt-GhostNet over RepGhostNet, whose results the
/// tables report as they are.
fn has_targets(config: &str) -> bool {
    !GhostConfig::is_ghostnet(config)
}

/// The performance targets the results allow checking (RepOpt-VGG configurations only).
pub fn targets(
    peak: Option<&PeakResult>,
    kernels: &[KernelResult],
    updates: &[UpdateResult],
    steps: &[StepResult],
    max_batches: &[MaxBatchResult],
) -> Vec<Target> {
    let mut out = Vec::new();
    let by = |v: &str| updates.iter().find(|u| u.variant == v);
    if let (Some(f), Some(u)) = (by("fused"), by("unfused")) {
        out.push(target(
            "fused RepOpt-SGD / unfused (elements/s)",
            f.elements_per_s / u.elements_per_s,
            2.0,
        ));
    }
    if let (Some(f), Some(c)) = (by("fused"), by("copy")) {
        out.push(target(
            "fused RepOpt-SGD GB/s / copy GB/s",
            f.gb_per_s / c.gb_per_s,
            0.7,
        ));
    }
    let step =
        |mode: &str, config: &str| steps.iter().find(|s| s.mode == mode && s.config == config);
    let mut configs: Vec<&str> = steps
        .iter()
        .map(|s| s.config.as_str())
        .filter(|c| has_targets(c))
        .collect();
    configs.dedup();
    for config in configs {
        if let (Some(t), Some(r)) = (step("target", config), step("repvgg", config)) {
            out.push(target(
                format!("{config}: RepOpt-VGG step speed / RepVGG"),
                t.images_per_s / r.images_per_s,
                1.6,
            ));
            out.push(target(
                format!("{config}: RepVGG peak bytes / RepOpt-VGG"),
                r.peak_bytes as f64 / t.peak_bytes as f64,
                1.3,
            ));
        }
    }
    let mb = |mode: &str| {
        max_batches
            .iter()
            .find(|m| m.mode == mode && has_targets(&m.config))
    };
    if let (Some(t), Some(r)) = (mb("target"), mb("repvgg")) {
        out.push(target(
            format!("{}: RepOpt-VGG max batch / RepVGG", t.config),
            t.max_batch as f64 / r.max_batch.max(1) as f64,
            1.3,
        ));
    }
    if let Some(p) = peak {
        // Each kernel against the probe of its own minutes where one was taken.
        let share = |k: &KernelResult| k.gflops / k.probe_gflops.unwrap_or(p.gflops);
        for k in kernels.iter().filter(|k| !k.memory_bound) {
            if k.kernel == "matmul" {
                out.push(target(
                    format!("matmul {} / FMA peak", k.shape),
                    share(k),
                    0.30,
                ));
            }
        }
        // A 3x3 direction counts with its faster algorithm (what the tuner picks, which
        // excludes f16 operands), rated by the direct convolution's FLOPs.
        let mut best: Vec<(String, &str, f64, &str)> = Vec::new();
        let exact = |k: &&KernelResult| !k.kernel.ends_with("_f16");
        for k in kernels
            .iter()
            .filter(|k| k.kernel.starts_with("conv3x3"))
            .filter(exact)
        {
            let (name, algorithm) = ["winograd", "gemm", "implicit"]
                .into_iter()
                .find_map(|a| Some((k.kernel.strip_suffix(&format!("_{a}"))?, a)))
                .unwrap_or((k.kernel.as_str(), "direct"));
            match best.iter_mut().find(|b| b.0 == name && b.1 == k.shape) {
                Some(b) if b.2 >= share(k) => {}
                Some(b) => (b.2, b.3) = (share(k), algorithm),
                None => best.push((name.to_string(), &k.shape, share(k), algorithm)),
            }
        }
        for (name, shape, share, algorithm) in best {
            out.push(target(
                format!("{name} {shape} ({algorithm}) / FMA peak"),
                share,
                0.45,
            ));
        }
    }
    out
}

/// The memory target from planned peaks: RepVGG's peak bytes over RepOpt-VGG's, per config,
/// batch and resolution (RepOpt-VGG configurations only).
pub fn memory_targets(memory: &[MemoryResult]) -> Vec<Target> {
    let mut out = Vec::new();
    for t in memory
        .iter()
        .filter(|m| m.mode == "target" && has_targets(&m.config))
    {
        let same = |m: &&MemoryResult| {
            m.mode == "repvgg" && m.config == t.config && m.batch == t.batch && m.res == t.res
        };
        if let Some(r) = memory.iter().find(same) {
            out.push(target(
                format!(
                    "{} b{} r{}: RepVGG planned peak bytes / RepOpt-VGG",
                    t.config, t.batch, t.res
                ),
                r.peak_bytes as f64 / t.peak_bytes as f64,
                1.3,
            ));
        }
    }
    out
}

/// Prints rows as an aligned table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// `items` as a table, one row each.
fn table_of<T>(header: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) -> String {
    table(header, &items.iter().map(row).collect::<Vec<_>>())
}

/// Kernel results as a table.
pub fn kernels_table(kernels: &[KernelResult]) -> String {
    let header = ["kernel", "shape", "ms", "GFLOP/s", "probe GFLOP/s"];
    table_of(&header, kernels, |k| {
        vec![
            k.kernel.clone(),
            k.shape.clone(),
            format!("{:.2}", k.ms),
            if k.memory_bound {
                format!("{:.1} GB/s", k.gflops)
            } else {
                format!("{:.1}", k.gflops)
            },
            k.probe_gflops.map_or("-".into(), |g| format!("{g:.1}")),
        ]
    })
}

/// Update results as a table.
pub fn updates_table(updates: &[UpdateResult]) -> String {
    table_of(
        &["variant", "kernels", "ms", "Melements/s", "GB/s"],
        updates,
        |u| {
            vec![
                u.variant.clone(),
                u.kernels.to_string(),
                format!("{:.2}", u.ms),
                format!("{:.0}", u.elements_per_s / 1e6),
                format!("{:.1}", u.gb_per_s),
            ]
        },
    )
}

/// One profiled step of `mode`: each kernel's launches, milliseconds and share, slowest
/// first.
pub fn profile_table(mode: &str, times: &[repopt_tensor::KernelTime]) -> String {
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    let mut out = format!(
        "{mode}: {:.1} ms in {} kernels, each launch waited for\n",
        total * 1e3,
        times.len()
    );
    out.push_str(&table_of(&["kernel", "calls", "ms", "share"], times, |t| {
        vec![
            t.kernel.clone(),
            t.calls.to_string(),
            format!("{:.2}", t.seconds * 1e3),
            format!("{:.1}%", 100.0 * t.seconds / total.max(1e-12)),
        ]
    }));
    out
}

/// Training-step results as a table.
pub fn steps_table(steps: &[StepResult]) -> String {
    table_of(
        &[
            "mode",
            "config",
            "batch",
            "res",
            "images/s",
            "ms/step",
            "peak MiB",
            "dispatches",
            "submits",
            "created (buf/bg/pipe)",
            "up/down KiB",
            "encode/submit ms",
        ],
        steps,
        |s| {
            let h = &s.host;
            vec![
                s.mode.clone(),
                s.config.clone(),
                s.batch.to_string(),
                s.res.to_string(),
                format!("{:.1}", s.images_per_s),
                format!("{:.1}", s.ms_per_step),
                format!("{:.1}", s.peak_bytes as f64 / 1048576.0),
                h.dispatches.to_string(),
                h.submissions.to_string(),
                format!(
                    "{}/{}/{}",
                    h.buffers_created, h.bind_groups_created, h.pipelines_created
                ),
                format!(
                    "{:.1}/{:.1}",
                    h.bytes_uploaded as f64 / 1024.0,
                    h.bytes_read_back as f64 / 1024.0
                ),
                format!("{:.2}/{:.1}", h.encode_ms, h.submit_ms),
            ]
        },
    )
}

/// Max-batch results as a table.
pub fn max_batch_table(results: &[MaxBatchResult]) -> String {
    table_of(
        &["mode", "config", "res", "limit MiB", "max batch"],
        results,
        |m| {
            vec![
                m.mode.clone(),
                m.config.clone(),
                m.res.to_string(),
                format!("{:.0}", m.memory_limit as f64 / 1048576.0),
                m.max_batch.to_string(),
            ]
        },
    )
}

/// Planned peak bytes as a table, with each mode's ratio to the first.
pub fn memory_table(results: &[MemoryResult]) -> String {
    let base = results.first().map_or(1, |r| r.peak_bytes.max(1)) as f64;
    table_of(
        &[
            "mode",
            "config",
            "batch",
            "res",
            "planned peak MiB",
            "vs first",
        ],
        results,
        |m| {
            vec![
                m.mode.clone(),
                m.config.clone(),
                m.batch.to_string(),
                m.res.to_string(),
                format!("{:.1}", m.peak_bytes as f64 / 1048576.0),
                format!("{:.2}", m.peak_bytes as f64 / base),
            ]
        },
    )
}

/// Targets as a table.
pub fn targets_table(targets: &[Target]) -> String {
    table_of(&["target", "measured", "goal", "met"], targets, |t| {
        vec![
            t.target.clone(),
            format!("{:.2}", t.value),
            format!(">= {:.2}", t.goal),
            if t.met { "yes".into() } else { "no".into() },
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kernel: &str, gflops: f64, probe: Option<f64>) -> KernelResult {
        KernelResult {
            kernel: kernel.into(),
            shape: "N1 C8->8 4x4 k3 s1".into(),
            ms: 1.0,
            gflops,
            memory_bound: false,
            probe_gflops: probe,
        }
    }

    #[test]
    fn kernels_are_rated_against_the_probe_of_their_own_case() {
        let peak = PeakResult {
            adapter: "test".into(),
            gflops: 40.0,
        };
        let kernels = [
            // Forward: direct at 12 of a probe that measured 20 around it (0.6), Winograd at 14.
            conv("conv3x3_forward", 12.0, Some(20.0)),
            conv("conv3x3_forward_winograd", 14.0, Some(20.0)),
            // No probe of its own: the run's peak.
            conv("conv3x3_backward_input", 10.0, None),
        ];
        let t = targets(Some(&peak), &kernels, &[], &[], &[]);
        let find = |name: &str| t.iter().find(|t| t.target.starts_with(name)).unwrap();
        let fwd = find("conv3x3_forward ");
        assert!(fwd.target.contains("(winograd)"), "{}", fwd.target);
        assert!((fwd.value - 0.7).abs() < 1e-12 && fwd.met);
        let bwd = find("conv3x3_backward_input ");
        assert!((bwd.value - 0.25).abs() < 1e-12 && !bwd.met);
    }
}
