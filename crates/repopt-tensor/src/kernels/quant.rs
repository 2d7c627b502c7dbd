//! `shaders/quant.wgsl`: fake quantization with its straight-through gradient, and the
//! statistics calibration reads (histograms counted with atomics, min/max reductions).

use super::{kernels, shader};

crate::params! {
    /// A fake quantization grid, a histogram's bins, or a min/max reduction's runs.
    pub struct QuantParams {
        /// Elements (fake quantization, histograms).
        n: u32,
        /// Per-channel fake quantization: elements per channel.
        inner: u32,
        /// Per-tensor fake quantization: the grid step.
        scale: f32,
        /// Per-tensor fake quantization: `1 / scale` rounded to f32.
        inv_scale: f32,
        /// The grid index of 0.
        zero_point: f32,
        /// Lowest grid index.
        qmin: f32,
        /// Highest grid index.
        qmax: f32,
        /// Histograms: bins.
        bins: u32,
        /// Histograms: lower edge of the first bin.
        lo: f32,
        /// Histograms: `bins / (hi - lo)` rounded to f32.
        inv_width: f32,
        /// 1: take absolute values (histograms, min/max of raw values).
        abs: u32,
        /// Min/max: rows reduced separately.
        rows: u32,
        /// Min/max: items per row.
        cols: u32,
        /// Min/max: items per invocation.
        chunk: u32,
        /// Min/max: 1 when the items are (min, max) pairs from an earlier pass.
        pairs: u32,
        /// Min/max: 1 to fold each run into the pair already in the output.
        accumulate: u32,
        /// Min/max: 1 to write each run's max alone.
        max_only: u32,
        /// Min/max: +infinity, the empty minimum (WGSL has no literal for it).
        inf: f32,
    }
}

shader!(SHADER, "quant.wgsl", QuantParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: QuantParams {
        /// `y = (clamp(round(x * inv_scale) + zero_point, qmin, qmax) - zero_point) * scale`,
        /// four values per invocation (`n` counts vec4s).
        FAKE_QUANT_FORWARD = fake_quant_forward(read xq4, write yq4);
        /// `dx = dy` where `qmin <= round(x * inv_scale) + zero_point <= qmax`, else 0, four
        /// values per invocation (`n` counts vec4s).
        FAKE_QUANT_BACKWARD = fake_quant_backward(read xq4, read dyq4, write dxq4);
        /// The per-tensor forward with channel `i / inner`'s scale from `scales`.
        FAKE_QUANT_CHANNELS_FORWARD = fake_quant_channels_forward(read x, read scales, write y3);
        /// The per-tensor backward with channel `i / inner`'s scale from `scales`.
        FAKE_QUANT_CHANNELS_BACKWARD =
            fake_quant_channels_backward(read x, read scales, read dy3, write dx4);
        /// Adds each value's bin to `counts` (atomically).
        HISTOGRAM = histogram(read x, write counts);
        /// The (min, max) of each run of `chunk` items of each row.
        MIN_MAX_RUNS = min_max_runs(read x, write runs);
    }
}
