//! A buffer pool with byte accounting.
//!
//! Device allocations are slow and fragment memory, and a training step allocates the same
//! sizes every iteration, so freed buffers are parked by size class and handed out again.
//! The pool counts the bytes held by live tensors (and their peak), which is what the
//! memory benchmarks report: it is the engine's own, device-independent allocation figure.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Bytes held by live tensors now, their peak since the last reset, and bytes parked for reuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of buffers currently owned by tensors.
    pub live_bytes: u64,
    /// Highest `live_bytes` since the device was opened or `reset_peak_memory` was called.
    pub peak_live_bytes: u64,
    /// Bytes of freed buffers kept for reuse.
    pub pooled_bytes: u64,
    /// Device buffers created so far (a steady training loop stops increasing this).
    pub buffers_created: u64,
}

/// Storage usages every pooled buffer gets, so any buffer can serve any tensor.
pub(crate) const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Rounds a request up to its size class: 256-byte steps up to 64 KiB, then eight classes
/// per power of two (at most 12.5% slack). Multiples of 16 bytes keep vec4 views valid.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    if bytes <= 65536 {
        return bytes.div_ceil(256) * 256;
    }
    let top = 63 - bytes.leading_zeros() as u64;
    let step = 1u64 << (top - 3);
    bytes.div_ceil(step) * step
}

#[derive(Default)]
pub(crate) struct BufferPool {
    /// Parked buffers by size class, ordered by identity: a step that allocates the same
    /// sizes in the same order from the same parked set then gets the same buffers every
    /// time (whatever order they were freed in), so its bind groups are found in the cache.
    free: HashMap<u64, BTreeSet<wgpu::Buffer>>,
    live: u64,
    peak: u64,
    pooled: u64,
    created: u64,
    pub(crate) limit: Option<u64>,
    /// Memory planning: create 16-byte buffers but account the full class size.
    pub(crate) placeholders: bool,
    /// Trims so far, shared with the recorder, whose cached bind groups may hold buffers a
    /// trim lets go.
    pub(crate) trims: Arc<AtomicU64>,
}

impl BufferPool {
    /// Hands out a buffer of at least `bytes`, reusing a parked one of the same class.
    pub(crate) fn acquire(
        &mut self,
        device: &wgpu::Device,
        bytes: u64,
    ) -> Result<(wgpu::Buffer, u64)> {
        let class = size_class(bytes);
        if let Some(limit) = self.limit
            && self.live + class > limit
        {
            return Err(Error::OutOfMemory {
                requested: class,
                live: self.live,
                limit,
            });
        }
        let buffer = match self.free.get_mut(&class).and_then(BTreeSet::pop_first) {
            Some(b) => {
                self.pooled -= class;
                b
            }
            None => {
                if let Some(limit) = self.limit {
                    // Under a limit, parked buffers of other sizes must not push real usage past it.
                    if self.live + self.pooled + class > limit {
                        self.trim();
                    }
                }
                self.created += 1;
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: if self.placeholders { 16 } else { class },
                    usage: USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        self.live += class;
        self.peak = self.peak.max(self.live);
        Ok((buffer, class))
    }

    /// Parks a buffer for reuse.
    pub(crate) fn release(&mut self, buffer: wgpu::Buffer, class: u64) {
        self.live -= class;
        self.pooled += class;
        self.free.entry(class).or_default().insert(buffer);
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats {
            live_bytes: self.live,
            peak_live_bytes: self.peak,
            pooled_bytes: self.pooled,
            buffers_created: self.created,
        }
    }

    pub(crate) fn reset_peak(&mut self) {
        self.peak = self.live;
    }

    pub(crate) fn trim(&mut self) {
        self.trims.fetch_add(1, Ordering::Relaxed);
        self.free.clear();
        self.pooled = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_requests_with_bounded_slack() {
        for bytes in [
            1u64,
            16,
            255,
            256,
            257,
            4000,
            65536,
            65537,
            100_000,
            1 << 20,
            3 << 20,
            123_456_789,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert_eq!(c % 16, 0, "{bytes} -> {c}");
            assert!(
                c as f64 <= (bytes.max(256) as f64) * 1.125 + 256.0,
                "{bytes} -> {c}"
            );
        }
        assert_eq!(size_class(1 << 20), 1 << 20);
    }
}
