//! The training-step benchmark on GhostNet: RepOpt-GhostNet (with its RepOptimizer) and
//! RepGhostNet step, are timed and measured, and a steady step of either creates nothing on
//! the host side, as a RepOpt-VGG step does.

use repopt_bench::timing::TimingBudget;
use repopt_bench::train::train_steps;
use repopt_models::Mode;
use repopt_models::any::NetConfig;
use repopt_tensor::Gpu;

#[test]
fn ghostnet_steps_are_measured_and_a_steady_step_creates_nothing() {
    let gpu = Gpu::from_env().expect("a GPU adapter (software Vulkan is enough)");
    let config = NetConfig::preset("ghostnet-0.5x").unwrap().with_data(3, 10);
    let (batch, res) = (2, 32);
    let steps = train_steps(
        &gpu,
        &config,
        &[Mode::Target, Mode::Repvgg],
        batch,
        res,
        TimingBudget::quick(),
    )
    .unwrap();
    assert_eq!(steps.len(), 2);
    for (s, mode) in steps.iter().zip(["target", "repvgg"]) {
        let msg = format!("{s:?}");
        assert_eq!(
            (s.mode.as_str(), s.config.as_str()),
            (mode, "ghostnet-0.5x")
        );
        assert_eq!((s.batch, s.res), (batch, res));
        assert!(s.images_per_s.is_finite() && s.images_per_s > 0.0, "{msg}");
        assert!(s.ms_per_step.is_finite() && s.ms_per_step > 0.0, "{msg}");
        assert!(s.peak_bytes > 0, "{msg}");
        let h = &s.host;
        assert_eq!(h.buffers_created, 0, "{msg}");
        assert_eq!(h.bind_groups_created, 0, "{msg}");
        assert_eq!(h.pipelines_created, 0, "{msg}");
        // Images and labels go up; nothing comes back from an unlogged step.
        let batch_bytes = (batch * 3 * res * res * 4 + batch * 4) as u64;
        assert_eq!(h.bytes_uploaded, batch_bytes, "{msg}");
        assert_eq!(h.bytes_read_back, 0, "{msg}");
        assert!(h.dispatches > 100, "{msg}");
    }
    // RepGhostNet trains the cheap operation's fusion branch as a layer of its own.
    assert!(steps[1].peak_bytes > steps[0].peak_bytes, "{steps:?}");
}
