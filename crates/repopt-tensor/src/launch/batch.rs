//! The batch of recorded work not yet submitted, with the two arenas that let recording stay
//! free of queue operations and allocations: kernel parameters (one uniform slot per
//! dispatch) and uploaded host data. Both are written with one `write_buffer` each when the
//! batch is submitted, which wgpu orders before the batch's commands.

use super::HostCounters;

/// Dispatches per batch: the uniform arena holds one parameter slot for each.
pub(crate) const ARENA_SLOTS: u64 = 256;
/// Largest parameter block, and the size of the uniform binding every kernel sees.
pub(crate) const MAX_PARAMS: usize = 256;
/// Smallest upload arena; it grows to the largest batch of uploads seen, then stays.
const MIN_UPLOAD_ARENA: u64 = 1 << 16;

pub(crate) struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    pub(crate) arena: wgpu::Buffer,
    params: Vec<u8>,
    pub(crate) slot: u64,
    /// Bytes between parameter slots (the adapter's uniform offset alignment, at least
    /// [`MAX_PARAMS`]).
    pub(crate) align: u64,
    upload_arena: Option<wgpu::Buffer>,
    uploads: Vec<u8>,
    pub(crate) counters: HostCounters,
}

impl Batch {
    pub(crate) fn new(device: &wgpu::Device, align: u64) -> Self {
        let slot = align.max(MAX_PARAMS as u64);
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: slot * ARENA_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Batch {
            encoder: None,
            arena,
            params: Vec::new(),
            slot: 0,
            align: slot,
            upload_arena: None,
            uploads: Vec::new(),
            counters: HostCounters {
                buffers_created: 1,
                ..HostCounters::default()
            },
        }
    }

    pub(crate) fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// Stores `params` in the next uniform slot and returns its offset; the caller submits
    /// first when every slot is taken.
    pub(crate) fn push_params(&mut self, params: &[u8]) -> u64 {
        let offset = self.slot * self.align;
        self.params.resize(offset as usize, 0);
        self.params.extend_from_slice(params);
        let padded = params.len().max(16).next_multiple_of(16);
        self.params.resize(offset as usize + padded, 0);
        self.slot += 1;
        offset
    }

    /// Stages `data` in the upload arena and records its copy into `dst`, growing the arena
    /// (after submitting what uses the old one) only when this batch's uploads outgrow it.
    pub(crate) fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        dst: &wgpu::Buffer,
        data: &[u8],
    ) {
        let len = (data.len() as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let capacity = self.upload_arena.as_ref().map_or(0, wgpu::Buffer::size);
        if self.uploads.len() as u64 + len > capacity {
            self.submit(queue);
            if len > capacity {
                self.upload_arena = Some(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("upload arena"),
                    size: len.next_power_of_two().max(MIN_UPLOAD_ARENA),
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
                self.counters.buffers_created += 1;
            }
        }
        let offset = self.uploads.len() as u64;
        self.uploads.extend_from_slice(data);
        self.uploads.resize((offset + len) as usize, 0);
        self.counters.bytes_uploaded += data.len() as u64;
        let arena = self.upload_arena.clone().expect("upload arena exists");
        self.encoder(device)
            .copy_buffer_to_buffer(&arena, offset, dst, 0, len);
    }

    /// Writes both arenas and submits the recorded commands.
    pub(crate) fn submit(&mut self, queue: &wgpu::Queue) {
        let clock = std::time::Instant::now();
        if let Some(encoder) = self.encoder.take() {
            if !self.params.is_empty() {
                queue.write_buffer(&self.arena, 0, &self.params);
            }
            if let Some(arena) = &self.upload_arena
                && !self.uploads.is_empty()
            {
                queue.write_buffer(arena, 0, &self.uploads);
            }
            queue.submit([encoder.finish()]);
            self.counters.submissions += 1;
        }
        self.counters.submit_seconds += clock.elapsed().as_secs_f64();
        self.params.clear();
        self.uploads.clear();
        self.slot = 0;
    }
}
