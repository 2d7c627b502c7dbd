//! SGD steps of small tensors without a Grad Mult, eight to a dispatch
//! (`shaders/optim_multi.wgsl`): a model's dozens of batch-norm scales, shifts and biases
//! cost a few launches instead of one each.

use super::{ParamSpec, SgdConfig};
use crate::error::Result;
use crate::kernels::optim_multi::{MultiSgdParams, SGD_STEP_MULTI, TENSORS};
use crate::ops::groups;
use crate::tensor::Tensor;

/// Largest tensor batched: 64 workgroups of 256 vec4. A dispatch's grid covers its largest
/// tensor, so mixing in a large one would launch many idle workgroups for the others.
const MAX_ELEMENTS: usize = 64 * 256 * 4;

/// Storage buffers one dispatch binds (three per tensor).
const BINDINGS: u32 = 3 * TENSORS as u32;

/// Whether `p`'s step can be batched: no Grad Mult, small, and an adapter that allows the
/// kernel's bindings.
pub(crate) fn takes(p: &ParamSpec) -> bool {
    p.grad_mult.is_none()
        && p.tensor.numel() <= MAX_ELEMENTS
        && p.tensor.gpu().limits().max_storage_buffers_per_shader_stage >= BINDINGS
}

/// (parameter, gradient, momentum buffer, weight decay).
pub(crate) type Entry = (Tensor, Tensor, Tensor, f32);

/// Tensors waiting for their dispatch, kept apart by whether it is their first step (the
/// kernel's `first` flag is per dispatch), and the spare buffers that fill unused slots.
#[derive(Default)]
pub(crate) struct SmallTensors {
    pending: [Vec<Entry>; 2],
    /// Two per slot (parameter and momentum are written, so each needs a buffer of its own).
    spares: Vec<Tensor>,
}

impl SmallTensors {
    /// Queues one tensor's step; launches when eight are queued.
    pub(crate) fn push(
        &mut self,
        entry: Entry,
        first: bool,
        config: &SgdConfig,
        lr: f32,
    ) -> Result<()> {
        let queue = &mut self.pending[first as usize];
        queue.push(entry);
        if queue.len() == TENSORS {
            let group = std::mem::take(queue);
            self.launch(&group, first, config, lr)?;
        }
        Ok(())
    }

    /// Launches what is still queued.
    pub(crate) fn finish(&mut self, config: &SgdConfig, lr: f32) -> Result<()> {
        for first in [false, true] {
            let group = std::mem::take(&mut self.pending[first as usize]);
            if !group.is_empty() {
                self.launch(&group, first, config, lr)?;
            }
        }
        Ok(())
    }

    fn launch(&mut self, group: &[Entry], first: bool, config: &SgdConfig, lr: f32) -> Result<()> {
        let gpu = group[0].0.gpu().clone();
        if group.len() < TENSORS && self.spares.is_empty() {
            for _ in 0..2 * (TENSORS - 1) {
                self.spares.push(Tensor::zeros(&gpu, &[4])?);
            }
        }
        let mut n4 = [0u32; TENSORS];
        let mut wd = [0f32; TENSORS];
        let mut buffers = Vec::with_capacity(3 * TENSORS);
        for slot in 0..TENSORS {
            match group.get(slot) {
                Some((w, g, m, decay)) => {
                    n4[slot] = w.numel().div_ceil(4) as u32;
                    wd[slot] = *decay;
                    buffers.extend([w.buffer(), g.buffer(), m.buffer()]);
                }
                None => {
                    // Never read (its count is 0); a gradient is bound read-only, as in slot 0.
                    let spare = &self.spares[2 * (slot - 1)..2 * slot];
                    buffers.extend([spare[0].buffer(), group[0].1.buffer(), spare[1].buffer()]);
                }
            }
        }
        let params = MultiSgdParams {
            first: first as u32,
            nesterov: config.nesterov as u32,
            lr,
            momentum: config.momentum,
            dampening: config.dampening,
            n4_0: n4[0],
            n4_1: n4[1],
            n4_2: n4[2],
            n4_3: n4[3],
            n4_4: n4[4],
            n4_5: n4[5],
            n4_6: n4[6],
            n4_7: n4[7],
            wd_0: wd[0],
            wd_1: wd[1],
            wd_2: wd[2],
            wd_3: wd[3],
            wd_4: wd[4],
            wd_5: wd[5],
            wd_6: wd[6],
            wd_7: wd[7],
        };
        let largest = *n4.iter().max().expect("eight slots") as usize;
        gpu.launch(
            &SGD_STEP_MULTI,
            &params,
            &buffers,
            [groups(largest, 256), 1, TENSORS as u32],
        )
    }
}
