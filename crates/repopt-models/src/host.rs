//! Named tensors in host memory: what files hold and what models load and save.

/// One named tensor on the host, converted to f32, in C order.
///
/// The `.pth` reader, safetensors files and model state all use this one form, so the
/// shape read from a file is the shape a model checks on load. `data.len()` is the product
/// of `shape` (1 for a zero-dimensional tensor).
///
/// ```
/// use repopt_models::HostTensor;
///
/// let t = HostTensor {
///     name: "stage0.scale_conv.weight".into(),
///     shape: vec![2],
///     data: vec![1.0, 0.5],
/// };
/// assert_eq!(t.shape.iter().product::<usize>(), t.data.len());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// The state-dict name, e.g. `stage1.0.scale_conv.weight`.
    pub name: String,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: Vec<f32>,
}
