//! The host cost of a steady training step, as deterministic counts: once a step has run,
//! the next ones create no buffer, bind group or pipeline, upload only the batch, and read
//! back only the logged loss. Checked for every kernel family, with a Grad Mult and
//! gradient clipping in the step so every kind of kernel takes part.

use repopt_tensor::ops::{self, BatchNormStats, Conv2dConfig};
use repopt_tensor::optim::{GradMult, Optimizer, ParamSpec, Sgd, SgdConfig, clip_grad_norm};
use repopt_tensor::testing::{data, kernel_families};
use repopt_tensor::{Gpu, HostCounters, Tensor};

const N: usize = 4;
const HW: usize = 9;

struct Net {
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
    g: Tensor,
    b: Tensor,
    stats: BatchNormStats,
    fc_w: Tensor,
    fc_b: Tensor,
    opt: Sgd,
}

impl Net {
    fn new(gpu: &Gpu) -> Net {
        let p = |d: Vec<f32>, s: &[usize]| Tensor::parameter(gpu, &d, s).unwrap();
        let w1 = p(data(8 * 3 * 9, 1), &[8, 3, 3, 3]);
        let w2 = p(data(8 * 8 * 9, 2), &[8, 8, 3, 3]);
        let w3 = p(data(16 * 8, 3), &[16, 8, 1, 1]);
        let (g, b) = (p(vec![1.0; 8], &[8]), p(vec![0.0; 8], &[8]));
        let fc_w = p(data(5 * 16, 4), &[5, 16]);
        let fc_b = p(vec![0.0; 5], &[5]);
        let factors = Tensor::from_slice(gpu, &data(16, 5), &[16]).unwrap();
        let mut specs: Vec<ParamSpec> = [&w1, &w3, &g, &b, &fc_w, &fc_b]
            .into_iter()
            .map(|t| ParamSpec::new(t.clone(), 1e-4))
            .collect();
        specs.push(ParamSpec {
            tensor: w2.clone(),
            weight_decay: 1e-4,
            grad_mult: Some(GradMult::Conv3x3 {
                factors,
                identity: true,
            }),
        });
        Net {
            opt: Sgd::new(specs, SgdConfig::default()).unwrap(),
            stats: BatchNormStats::new(gpu, 8).unwrap(),
            w1,
            w2,
            w3,
            g,
            b,
            fc_w,
            fc_b,
        }
    }

    /// One step on host data, as the trainer runs it: upload, forward, backward, clip,
    /// update; the loss stays on the device unless `log`.
    fn step(&mut self, gpu: &Gpu, images: &[f32], labels: &[u32], log: bool) -> Option<f32> {
        let x = Tensor::from_slice(gpu, images, &[N, 3, HW, HW]).unwrap();
        let y = Tensor::from_u32(gpu, labels, &[N]).unwrap();
        let h = ops::conv2d(&x, &self.w1, Conv2dConfig::same(3, 1)).unwrap();
        let h = ops::conv2d(&h.relu().unwrap(), &self.w2, Conv2dConfig::same(3, 2)).unwrap();
        let h = ops::batch_norm2d(&h, &self.g, &self.b, &self.stats, true, true).unwrap();
        let h = ops::conv2d(&h, &self.w3, Conv2dConfig::same(1, 1)).unwrap();
        let logits = ops::linear(&ops::global_avg_pool(&h).unwrap(), &self.fc_w, &self.fc_b);
        let loss = ops::cross_entropy(&logits.unwrap(), &y, 0.1).unwrap();
        loss.backward().unwrap();
        clip_grad_norm(self.opt.params(), 5.0).unwrap();
        self.opt.step(0.01).unwrap();
        self.opt.zero_grad();
        log.then(|| loss.item().unwrap())
    }
}

fn counted(gpu: &Gpu, f: impl FnOnce()) -> HostCounters {
    let before = gpu.counters();
    f();
    gpu.synchronize().unwrap();
    gpu.counters().since(&before)
}

#[test]
fn a_steady_step_creates_nothing_and_moves_only_the_batch_and_the_loss() {
    for (family, gpu) in kernel_families() {
        let mut net = Net::new(&gpu);
        let images = data(N * 3 * HW * HW, 6);
        let labels: Vec<u32> = (0..N as u32).collect();
        // The first steps compile kernels and fill the pool and the caches.
        let first = counted(&gpu, || {
            for _ in 0..6 {
                net.step(&gpu, &images, &labels, true);
            }
        });
        assert!(
            first.pipelines_created > 0 && first.bind_groups_created > 0,
            "{family}: warm-up created nothing? {first:?}"
        );
        let quiet = counted(&gpu, || {
            net.step(&gpu, &images, &labels, false);
        });
        let logged = counted(&gpu, || {
            net.step(&gpu, &images, &labels, true);
        });
        let batch_bytes = (images.len() * 4 + labels.len() * 4) as u64;
        for (what, c, read_backs) in [("unlogged", quiet, 0), ("logged", logged, 1)] {
            let msg = format!("{family}, {what} step: {c:?}");
            assert_eq!(c.buffers_created, 0, "{msg}");
            assert_eq!(c.bind_groups_created, 0, "{msg}");
            assert_eq!(c.pipelines_created, 0, "{msg}");
            assert_eq!(c.bytes_uploaded, batch_bytes, "{msg}");
            assert_eq!(c.read_backs, read_backs, "{msg}");
            assert_eq!(c.bytes_read_back, 4 * read_backs, "{msg}");
        }
        assert_eq!(quiet.dispatches, logged.dispatches, "{family}");
        assert!(quiet.dispatches > 20, "{family}: {quiet:?}");
    }
}

#[test]
fn profiling_times_every_launch_by_kernel() {
    // A device of its own: profiling is per device and other tests share the default one.
    let gpu = Gpu::new(repopt_tensor::GpuOptions {
        adapter: repopt_tensor::AdapterSelector::from_env(),
        ..Default::default()
    })
    .unwrap();
    let x = Tensor::from_slice(&gpu, &data(2 * 3 * 5 * 5, 1), &[2, 3, 5, 5]).unwrap();
    let w = Tensor::from_slice(&gpu, &data(4 * 3 * 9, 2), &[4, 3, 3, 3]).unwrap();
    gpu.set_profiling(true);
    let before = gpu.dispatch_count();
    for _ in 0..3 {
        ops::conv2d(&x, &w, Conv2dConfig::same(3, 1))
            .unwrap()
            .relu()
            .unwrap();
    }
    let launched = gpu.dispatch_count() - before;
    let profile = gpu.kernel_profile();
    assert_eq!(profile.iter().map(|k| k.calls).sum::<u64>(), launched);
    let relu = profile
        .iter()
        .find(|k| k.kernel.ends_with("::relu_forward"))
        .unwrap();
    assert_eq!(relu.calls, 3);
    assert!(profile.iter().all(|k| k.seconds > 0.0));
    assert!(profile.windows(2).all(|w| w[0].seconds >= w[1].seconds));
    gpu.set_profiling(false);
    assert!(gpu.kernel_profile().is_empty());
    ops::conv2d(&x, &w, Conv2dConfig::same(3, 1)).unwrap();
    assert!(
        gpu.kernel_profile().is_empty(),
        "nothing is recorded while off"
    );
}
