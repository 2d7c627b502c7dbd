//! `shaders/dropout.wgsl`: inverted dropout with the mask drawn in the kernel from a
//! counter-based generator (Threefry-2x32-20), so the forward and backward kernels compute
//! the same mask from the seed alone.

use super::{kernels, shader};

crate::params! {
    /// One dropout mask: its seed, its drop threshold and the scale of kept elements.
    pub struct DropoutParams {
        /// Elements.
        n: u32,
        /// Low 32 bits of the seed (the generator's first key word).
        seed_lo: u32,
        /// High 32 bits of the seed (the second key word).
        seed_hi: u32,
        /// Element `i` is dropped when its 32 random bits are below this: `ceil(p * 2^32)`.
        threshold: u32,
        /// Factor for kept elements, `1 / (1 - p)` rounded to f32.
        scale: f32,
    }
}

shader!(SHADER, "dropout.wgsl", DropoutParams, trusted: false, subgroups: false);

kernels! {
    KERNELS = SHADER: DropoutParams {
        /// `y = x * scale` where kept, else 0.
        FORWARD = dropout_forward(read x, write y);
        /// `dx = dy * scale` where kept, else 0 (the forward mask, drawn again).
        BACKWARD = dropout_backward(read dy, write dx);
    }
}
