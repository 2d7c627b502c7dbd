//! `shaders/probe.wgsl`: the FMA peak probe.

use super::{kernels, shader};

crate::params! {
    /// Rounds of FMAs and their constants.
    pub struct ProbeParams {
        /// Rounds of 12 FMAs per invocation.
        iterations: u32,
        /// Multiplier of every FMA.
        mul: f32,
        /// Addend of every FMA.
        add: f32,
    }
}

shader!(SHADER, "probe.wgsl", ProbeParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: ProbeParams {
        /// Register-only FMA chains; writes one value per invocation so nothing is elided.
        FMA_PROBE = fma_probe(write sink);
    }
}
