//! The contract between Rust and WGSL, declared once per kernel.
//!
//! Each kernel file in `shaders/` has one module here that declares
//! - its parameter block with [`params!`](crate::params): the `#[repr(C)]` Rust struct and the
//!   WGSL `struct Params` text are generated from the same field list, and the text is
//!   prepended to the file when it is compiled, so the block exists exactly once;
//! - its [`Shader`] (the embedded file and how to compile it);
//! - one typed [`Kernel`] constant per entry point with [`kernels!`](crate::kernels): the
//!   entry's name and the buffers it binds, in binding order, each read-only or writable.
//!
//! Every kernel binds its parameter block as a uniform at binding 0 and its buffers at 1, 2,
//! ... A launch checks the buffers it is given against the declaration and returns an error
//! naming the kernel and the binding instead of letting wgpu panic, and a test parses every
//! shader with naga and checks each declaration against what the WGSL really binds, and the
//! Rust struct's field offsets against the WGSL struct's.

use std::marker::PhantomData;

pub mod batchnorm;
pub mod conv;
pub mod conv_gemm;
pub mod conv_implicit;
pub mod depthwise;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod optim;
pub mod optim_multi;
pub mod probe;
pub mod quant;
pub mod reduce;
pub mod winograd;

#[cfg(test)]
mod interface_tests;

/// Invocation ids for devices without subgroup kernels (`shaders/prelude_plain.wgsl`).
pub const PRELUDE_PLAIN: &str = include_str!("../../../../shaders/prelude_plain.wgsl");
/// Invocation ids built from subgroup builtins (`shaders/prelude_subgroup.wgsl`).
pub const PRELUDE_SUBGROUP: &str = include_str!("../../../../shaders/prelude_subgroup.wgsl");
/// Index helpers every kernel file may use (`shaders/common.wgsl`).
pub const COMMON: &str = include_str!("../../../../shaders/common.wgsl");

/// The memory layout of a parameter block as Rust lays it out; [`params!`](crate::params)
/// fills it in, and the interface test compares it with naga's layout of the WGSL text.
#[derive(Debug)]
pub struct ParamsLayout {
    /// The Rust type's name, for messages.
    pub rust_name: &'static str,
    /// The WGSL declaration (`struct Params { ... }`) generated from the same fields.
    pub wgsl: &'static str,
    /// Each field's name and byte offset, in declaration order.
    pub fields: &'static [(&'static str, usize)],
    /// `size_of` the Rust struct.
    pub size: usize,
}

/// A kernel parameter block: plain 32-bit fields, uploaded as the uniform at binding 0.
pub trait Params: bytemuck::Pod {
    /// How the block is laid out, and its WGSL text.
    const LAYOUT: ParamsLayout;
}

/// Declares a kernel parameter block once: a `#[repr(C)]`, `Pod` Rust struct and, from the
/// same field list, the WGSL `struct Params` that [`Shader`]s using it get prepended.
/// Fields are `u32`, `i32` or `f32` (the names WGSL uses too), so Rust and WGSL agree on
/// every offset without padding rules; doc comments on fields document both sides.
///
/// ```
/// repopt_tensor::params! {
///     /// Parameters of a scaling kernel.
///     pub struct ScaleParams {
///         /// Elements.
///         n: u32,
///         /// Factor.
///         alpha: f32,
///     }
/// }
/// use repopt_tensor::kernels::Params;
/// assert_eq!(ScaleParams::LAYOUT.wgsl, "struct Params {\n    n: u32,\n    alpha: f32,\n}\n");
/// assert_eq!(ScaleParams::LAYOUT.fields, &[("n", 0), ("alpha", 4)]);
/// ```
#[macro_export]
macro_rules! params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$fmeta:meta])* $field:ident : $ty:ident),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }

        impl $crate::kernels::Params for $name {
            const LAYOUT: $crate::kernels::ParamsLayout = $crate::kernels::ParamsLayout {
                rust_name: stringify!($name),
                wgsl: concat!(
                    "struct Params {\n",
                    $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)*
                    "}\n"
                ),
                fields: &[$((stringify!($field), ::core::mem::offset_of!($name, $field))),*],
                size: ::core::mem::size_of::<$name>(),
            };
        }
    };
}

/// One WGSL source file from `shaders/`, embedded in the binary.
#[derive(Debug)]
pub struct Shader {
    /// File name, used as the cache key and in messages.
    pub name: &'static str,
    /// WGSL text of the file (without prelude and parameter block).
    pub source: &'static str,
    /// The parameter block its kernels read at binding 0.
    pub params: &'static ParamsLayout,
    /// Whether the kernels keep every index in range themselves (clamped or proven by shape),
    /// so wgpu's per-access bounds checks can be left out.
    pub trusted: bool,
    /// Whether the file uses subgroup operations (compiled only where they run).
    pub needs_subgroups: bool,
    /// Whether the file uses `f16` (compiled only where the adapter has `SHADER_F16`).
    pub needs_f16: bool,
    /// A file of kernels and functions several files share, appended after this file's text
    /// (name in `shaders/`, text): each including file declares the operands the shared code
    /// reads, e.g. as `f32` or as `f16`.
    pub library: Option<(&'static str, &'static str)>,
}

impl Shader {
    /// The full text the file compiles as: its `enable` directives (WGSL wants them before
    /// any declaration), a prelude, the shared helpers, the generated parameter block, then
    /// `body` (the file's text, or a replacement from disk) and the library's text.
    pub fn full_source(&self, subgroups: bool, body: &str) -> String {
        let library = self.library.map_or("", |(_, text)| text);
        self.assemble(subgroups, body, library)
    }

    pub(crate) fn assemble(&self, subgroups: bool, body: &str, library: &str) -> String {
        let prelude = if subgroups {
            PRELUDE_SUBGROUP
        } else {
            PRELUDE_PLAIN
        };
        let (enables, rest): (Vec<&str>, Vec<&str>) = body
            .lines()
            .partition(|line| line.trim_start().starts_with("enable "));
        let mut text = enables.join("\n");
        text.push('\n');
        text.push_str(&format!("{prelude}{COMMON}{}", self.params.wgsl));
        text.push_str(&rest.join("\n"));
        text.push('\n');
        text.push_str(library);
        text
    }
}

/// Declares a [`Shader`] constant for a file in `shaders/`, optionally with the `library`
/// file appended to it (see [`Shader::library`]).
macro_rules! shader {
    ($ident:ident, $file:literal, $params:ty, trusted: $trusted:expr, subgroups: $subgroups:expr) => {
        $crate::kernels::shader!(@make $ident, $file, $params, $trusted, $subgroups, false, None,
            concat!("`shaders/", $file, "`"));
    };
    ($ident:ident, $file:literal, $params:ty, trusted: $trusted:expr, subgroups: $subgroups:expr,
     f16: $f16:expr, library: $library:literal) => {
        $crate::kernels::shader!(@make $ident, $file, $params, $trusted, $subgroups, $f16,
            Some(($library, include_str!(concat!("../../../../shaders/", $library)))),
            concat!("`shaders/", $file, "` with `shaders/", $library, "`"));
    };
    (@make $ident:ident, $file:literal, $params:ty, $trusted:expr, $subgroups:expr, $f16:expr,
     $library:expr, $doc:expr) => {
        #[doc = $doc]
        pub const $ident: $crate::kernels::Shader = $crate::kernels::Shader {
            name: $file,
            source: include_str!(concat!("../../../../shaders/", $file)),
            params: &<$params as $crate::kernels::Params>::LAYOUT,
            trusted: $trusted,
            needs_subgroups: $subgroups,
            needs_f16: $f16,
            library: $library,
        };
    };
}
pub(crate) use shader;

/// One buffer a kernel binds (at 1, 2, ... in declaration order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The WGSL variable's name.
    pub name: &'static str,
    /// Whether the kernel may write it (`read_write` storage).
    pub writable: bool,
}

impl Binding {
    /// A `var<storage, read>` binding.
    pub const fn read(name: &'static str) -> Self {
        Binding {
            name,
            writable: false,
        }
    }

    /// A `var<storage, read_write>` binding.
    pub const fn write(name: &'static str) -> Self {
        Binding {
            name,
            writable: true,
        }
    }
}

/// One entry point, typed by its parameter block so a launch cannot pass the wrong one.
#[derive(Debug)]
pub struct Kernel<P> {
    /// The untyped declaration.
    pub info: KernelInfo,
    params: PhantomData<fn(&P)>,
}

impl<P: Params> Kernel<P> {
    /// Declares `entry` in `shader`, binding `bindings` at 1, 2, ...
    pub const fn new(
        shader: &'static Shader,
        entry: &'static str,
        bindings: &'static [Binding],
    ) -> Self {
        Kernel {
            info: KernelInfo {
                shader,
                entry,
                bindings,
            },
            params: PhantomData,
        }
    }
}

/// What a [`Kernel`] declares, without its parameter type (for listing and checking).
#[derive(Clone, Copy, Debug)]
pub struct KernelInfo {
    /// The file it is in.
    pub shader: &'static Shader,
    /// The entry point's name.
    pub entry: &'static str,
    /// Its buffers, bound at 1, 2, ... in this order.
    pub bindings: &'static [Binding],
}

impl std::fmt::Display for KernelInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.shader.name, self.entry)
    }
}

/// Declares one [`Kernel`] constant per entry point of a shader, and a list of them all:
/// `LIST = SHADER: Params { NAME = entry(read a, write b); ... }`.
macro_rules! kernels {
    ($list:ident = $shader:ident: $params:ty {
        $($(#[$meta:meta])* $name:ident = $entry:ident($($access:ident $binding:ident),* $(,)?);)*
    }) => {
        $(
            $(#[$meta])*
            pub const $name: $crate::kernels::Kernel<$params> = $crate::kernels::Kernel::new(
                &$shader,
                stringify!($entry),
                &[$($crate::kernels::Binding::$access(stringify!($binding))),*],
            );
        )*

        #[doc = concat!("Every entry point of [`", stringify!($shader), "`].")]
        pub const $list: &[$crate::kernels::KernelInfo] = &[$($name.info),*];
    };
}
pub(crate) use kernels;

/// Every shader, for validation and warm-up.
pub const SHADERS: &[&Shader] = &[
    &elementwise::SHADER,
    &conv::SHADER,
    &conv::SUBGROUP_SHADER,
    &conv_gemm::SHADER,
    &conv_implicit::SHADER,
    &conv_implicit::F16_SHADER,
    &depthwise::SHADER,
    &dropout::SHADER,
    &matmul::SHADER,
    &matmul::SUBGROUP_SHADER,
    &matmul::SUBGROUP_VEC_SHADER,
    &batchnorm::SHADER,
    &reduce::SHADER,
    &loss::SHADER,
    &optim::SHADER,
    &optim_multi::SHADER,
    &probe::SHADER,
    &quant::SHADER,
    &winograd::SHADER,
];

/// Every declared kernel.
pub fn all() -> impl Iterator<Item = &'static KernelInfo> {
    [
        elementwise::KERNELS,
        conv::KERNELS,
        conv::SUBGROUP_KERNELS,
        conv_gemm::KERNELS,
        conv_implicit::KERNELS,
        conv_implicit::F16_KERNELS,
        depthwise::KERNELS,
        dropout::KERNELS,
        matmul::KERNELS,
        matmul::SUBGROUP_KERNELS,
        matmul::SUBGROUP_VEC_KERNELS,
        batchnorm::KERNELS,
        reduce::KERNELS,
        loss::KERNELS,
        optim::KERNELS,
        optim_multi::KERNELS,
        probe::KERNELS,
        quant::KERNELS,
        winograd::KERNELS,
    ]
    .into_iter()
    .flatten()
}
