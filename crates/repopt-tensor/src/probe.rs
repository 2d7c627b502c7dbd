//! The adapter's arithmetic peak, measured with a kernel that only does FMAs in registers.

use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::probe::{FMA_PROBE, ProbeParams};
use crate::tensor::{DType, Tensor};

/// A register-only FMA workload: `workgroups` x 64 invocations, each running `iterations`
/// rounds of 12 independent FMAs (no memory traffic inside the loop).
pub struct FmaProbe {
    gpu: Gpu,
    sink: Tensor,
    workgroups: u32,
    iterations: u32,
}

impl FmaProbe {
    /// A probe sized for `workgroups` workgroups of 64 invocations.
    ///
    /// ```no_run
    /// use repopt_tensor::{probe::FmaProbe, Gpu};
    /// let gpu = Gpu::from_env()?;
    /// let probe = FmaProbe::new(&gpu, 1024, 4096)?;
    /// probe.record()?;
    /// gpu.synchronize()?;
    /// println!("{} FLOP per run", probe.flops());
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn new(gpu: &Gpu, workgroups: u32, iterations: u32) -> Result<Self> {
        Ok(FmaProbe {
            gpu: gpu.clone(),
            sink: Tensor::empty(gpu, &[64], DType::F32)?,
            workgroups,
            iterations,
        })
    }

    /// Floating-point operations one run performs (an FMA counts as two).
    pub fn flops(&self) -> f64 {
        self.workgroups as f64 * 64.0 * self.iterations as f64 * 12.0 * 2.0
    }

    /// Records one run (asynchronously; synchronise the device to time it).
    pub fn record(&self) -> Result<()> {
        let p = ProbeParams {
            iterations: self.iterations,
            mul: 0.999_999,
            add: 1e-7,
        };
        let grid = self.gpu.grid(self.workgroups);
        self.gpu.launch(&FMA_PROBE, &p, &[self.sink.buffer()], grid)
    }
}
