//! Moving bytes: host to device through the batch's upload arena, device to device, and back
//! to the host through one reusable read-back buffer.

use super::Recorder;
use crate::error::{Error, Result};

impl Recorder {
    /// Records a copy of host data into `dst` (ordered with the recorded dispatches).
    pub(crate) fn upload(&self, dst: &wgpu::Buffer, data: &[u8]) {
        if data.is_empty() || self.plan_only {
            return;
        }
        let clock = std::time::Instant::now();
        let mut batch = self.batch.lock().expect("batch lock");
        let submitted = batch.counters.submit_seconds;
        batch.upload(&self.device, &self.queue, dst, data);
        let c = &mut batch.counters;
        c.encode_seconds += clock.elapsed().as_secs_f64() - (c.submit_seconds - submitted);
    }

    /// Records a device-side copy of `bytes` from `src` to `dst`.
    pub(crate) fn copy(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        let len = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        self.copy_range(src, 0, dst, 0, len);
    }

    /// Records a device-side copy of `bytes` (a multiple of 4) from `src` at `src_offset` to
    /// `dst` at `dst_offset`.
    pub(crate) fn copy_range(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) {
        if self.plan_only || bytes == 0 {
            return;
        }
        let mut batch = self.batch.lock().expect("batch lock");
        batch
            .encoder(&self.device)
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
    }

    /// Records a fill of `dst` with zeros.
    pub(crate) fn zero(&self, dst: &wgpu::Buffer) {
        if self.plan_only {
            return;
        }
        let mut batch = self.batch.lock().expect("batch lock");
        batch.encoder(&self.device).clear_buffer(dst, 0, None);
    }

    /// Submits everything recorded, waits for it, and returns the first `bytes` of `src`.
    pub(crate) fn download(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if self.plan_only {
            return Ok(vec![0; bytes as usize]);
        }
        let len = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        // One read-back buffer, grown to the largest read so far: reading the logged loss
        // every few steps then creates nothing.
        let mut readback = self.readback.lock().expect("read-back lock");
        let staging = match readback.as_ref() {
            Some(b) if b.size() >= len => b.clone(),
            _ => {
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read-back"),
                    size: len.next_power_of_two().max(256),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                *readback = Some(b.clone());
                self.batch
                    .lock()
                    .expect("batch lock")
                    .counters
                    .buffers_created += 1;
                b
            }
        };
        {
            let mut batch = self.batch.lock().expect("batch lock");
            batch
                .encoder(&self.device)
                .copy_buffer_to_buffer(src, 0, &staging, 0, len);
            batch.submit(&self.queue);
            batch.counters.read_backs += 1;
            batch.counters.bytes_read_back += bytes;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..len, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|e| Error::Readback(e.to_string()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        let data = {
            let view = staging
                .get_mapped_range(..len)
                .map_err(|e| Error::Readback(e.to_string()))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }
}
