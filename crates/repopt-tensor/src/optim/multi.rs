//! SGD steps of several tensors per dispatch (`shaders/optim_multi.wgsl`): a model's dozens
//! of batch-norm scales, shifts, biases and kernels cost a few launches instead of one each.
//! Tensors without a Grad Mult go eight to a dispatch, tensors with the RepOptimizer's
//! structured one seven; a dense Grad Mult keeps its own kernel.

use super::{GradMult, ParamSpec, SgdConfig};
use crate::error::Result;
use crate::kernels::optim_multi::{
    CONV3X3_TENSORS, MultiSgdParams, SGD_STEP_CONV3X3_MULTI, SGD_STEP_MULTI, TENSORS,
};
use crate::ops::groups;
use crate::tensor::Tensor;

/// Whether `p`'s step can be batched: no Grad Mult or a structured one, and an adapter that
/// allows the kernel's bindings.
pub(crate) fn takes(p: &ParamSpec) -> bool {
    let bindings = match p.grad_mult {
        None => 3 * TENSORS,
        Some(GradMult::Conv3x3 { .. }) => 4 * CONV3X3_TENSORS,
        Some(GradMult::Dense(_)) => return false,
    };
    p.tensor.gpu().limits().max_storage_buffers_per_shader_stage >= bindings as u32
}

/// One tensor's step: parameter, gradient, momentum buffer, weight decay, and the factors
/// and identity flag of a structured Grad Mult.
pub(crate) struct Entry {
    pub(crate) w: Tensor,
    pub(crate) g: Tensor,
    pub(crate) m: Tensor,
    pub(crate) weight_decay: f32,
    pub(crate) structured: Option<(Tensor, bool)>,
}

/// Tensors waiting for their dispatch, kept apart by kernel and by whether it is their first
/// step (the kernel's `first` flag is per dispatch), and the spare buffers that fill unused
/// slots.
#[derive(Default)]
pub(crate) struct Batches {
    /// Indexed by `[structured][first]`.
    pending: [[Vec<Entry>; 2]; 2],
    /// Two per slot (parameter and momentum are written, so each needs a buffer of its own).
    spares: Vec<Tensor>,
}

impl Batches {
    /// Queues one tensor's step; launches when its batch is full.
    pub(crate) fn push(
        &mut self,
        entry: Entry,
        first: bool,
        config: &SgdConfig,
        lr: f32,
    ) -> Result<()> {
        let structured = entry.structured.is_some();
        let queue = &mut self.pending[structured as usize][first as usize];
        queue.push(entry);
        if queue.len() == capacity(structured) {
            let batch = std::mem::take(queue);
            self.launch(&batch, first, config, lr)?;
        }
        Ok(())
    }

    /// Launches what is still queued.
    pub(crate) fn finish(&mut self, config: &SgdConfig, lr: f32) -> Result<()> {
        for structured in [false, true] {
            for first in [false, true] {
                let queue = &mut self.pending[structured as usize][first as usize];
                let batch = std::mem::take(queue);
                if !batch.is_empty() {
                    self.launch(&batch, first, config, lr)?;
                }
            }
        }
        Ok(())
    }

    fn launch(&mut self, batch: &[Entry], first: bool, config: &SgdConfig, lr: f32) -> Result<()> {
        let gpu = batch[0].w.gpu().clone();
        let structured = batch[0].structured.is_some();
        let slots = capacity(structured);
        if batch.len() < slots && self.spares.is_empty() {
            for _ in 0..2 * (TENSORS - 1) {
                self.spares.push(Tensor::zeros(&gpu, &[4])?);
            }
        }
        let mut p = MultiSgdParams {
            first: first as u32,
            nesterov: config.nesterov as u32,
            lr,
            momentum: config.momentum,
            dampening: config.dampening,
            ..Default::default()
        };
        let mut counts = [0u32; TENSORS];
        let mut starts = [0u32; TENSORS];
        let mut decays = [0f32; TENSORS];
        let mut rows = [(0u32, 0u32); TENSORS];
        let mut total = 0u32;
        let mut buffers = Vec::with_capacity(4 * slots);
        for (slot, e) in batch.iter().enumerate() {
            // Four elements per invocation (the pool's buffers are whole vec4s).
            match &e.structured {
                None => buffers.extend([e.w.buffer(), e.g.buffer(), e.m.buffer()]),
                Some((factors, identity)) => {
                    let co = e.w.shape()[0];
                    rows[slot] = ((e.w.numel() / co) as u32, co as u32);
                    p.identity |= (*identity as u32) << slot;
                    buffers.extend([e.w.buffer(), e.g.buffer(), factors.buffer(), e.m.buffer()]);
                }
            }
            let n = e.w.numel().div_ceil(4);
            counts[slot] = n as u32;
            starts[slot] = total;
            decays[slot] = e.weight_decay;
            total += groups(n, 256);
        }
        for slot in batch.len()..slots {
            // Never reached (its workgroups start at the grid's end, its count is 0);
            // read-only bindings reuse slot 0's, written ones need buffers of their own.
            let spare = &self.spares[2 * (slot - 1)..2 * slot];
            let (w, g) = (spare[0].buffer(), batch[0].g.buffer());
            match &batch[0].structured {
                None => buffers.extend([w, g, spare[1].buffer()]),
                Some((factors, _)) => buffers.extend([w, g, factors.buffer(), spare[1].buffer()]),
            }
        }
        starts[batch.len()..].fill(total);
        [p.n_0, p.n_1, p.n_2, p.n_3, p.n_4, p.n_5, p.n_6, p.n_7] = counts;
        [
            _,
            p.start_1,
            p.start_2,
            p.start_3,
            p.start_4,
            p.start_5,
            p.start_6,
            p.start_7,
        ] = starts;
        [
            p.wd_0, p.wd_1, p.wd_2, p.wd_3, p.wd_4, p.wd_5, p.wd_6, p.wd_7,
        ] = decays;
        [
            p.row_0, p.row_1, p.row_2, p.row_3, p.row_4, p.row_5, p.row_6,
        ] = std::array::from_fn(|t| rows[t].0);
        [
            p.rows_0, p.rows_1, p.rows_2, p.rows_3, p.rows_4, p.rows_5, p.rows_6,
        ] = std::array::from_fn(|t| rows[t].1);
        let kernel = if structured {
            &SGD_STEP_CONV3X3_MULTI
        } else {
            &SGD_STEP_MULTI
        };
        gpu.launch(kernel, &p, &buffers, gpu.grid(total))
    }
}

fn capacity(structured: bool) -> usize {
    if structured { CONV3X3_TENSORS } else { TENSORS }
}
