//! [`Tensor`]: a shape, a pooled device buffer, and its place in the autograd graph.

use std::fmt;
use std::sync::Arc;

use crate::autograd::{self, GradState, LeafGrad};
use crate::device::Gpu;
use crate::error::{Error, Result};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float: activations, parameters, gradients.
    F32,
    /// 32-bit unsigned integer: class labels.
    U32,
}

/// A pooled device buffer; returns to the pool when the last tensor using it is dropped.
pub(crate) struct Storage {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    gpu: Gpu,
}

impl Storage {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("storage buffer present until drop")
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take()
            && let Ok(mut pool) = self.gpu.inner.pool.lock()
        {
            pool.release(buffer, self.class);
        }
    }
}

pub(crate) struct TensorInner {
    gpu: Gpu,
    shape: Vec<usize>,
    dtype: DType,
    storage: Arc<Storage>,
    pub(crate) grad_state: GradState,
}

/// An n-dimensional array on a [`Gpu`], NCHW for images.
///
/// A tensor is a cheap handle (cloning shares the buffer). Tensors made by ops on inputs that
/// require gradients record how to compute them; [`Tensor::backward`] walks that record in
/// reverse. Parameters are leaf tensors that require gradients; everything else is a constant.
///
/// ```no_run
/// use repopt_tensor::{Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let w = Tensor::parameter(&gpu, &[1.0, -2.0, 3.0], &[3])?;
/// let x = Tensor::from_slice(&gpu, &[0.5, 0.5, 0.5], &[3])?;
/// let loss = w.mul(&x)?.sum()?;
/// loss.backward()?;
/// assert_eq!(w.grad().unwrap().to_vec()?, vec![0.5, 0.5, 0.5]);
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    pub(crate) inner: Arc<TensorInner>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}{})",
            self.inner.shape,
            self.inner.dtype,
            if self.requires_grad() { ", grad" } else { "" }
        )
    }
}

fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// Bytes a tensor of `shape` (4-byte elements) takes on `gpu`, or the
    /// [`Error::TensorTooLarge`] creating it would fail with. Computed with checked
    /// arithmetic, so that a caller can refuse a shape before building host data for it.
    ///
    /// ```no_run
    /// use repopt_tensor::{Gpu, Tensor};
    /// let gpu = Gpu::from_env()?;
    /// assert_eq!(Tensor::check_size(&gpu, &[2, 3])?, 24);
    /// assert!(Tensor::check_size(&gpu, &[1 << 40, 1 << 40]).is_err());
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn check_size(gpu: &Gpu, shape: &[usize]) -> Result<u64> {
        let bytes = shape
            .iter()
            .try_fold(4u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?));
        let limit = gpu.inner.limits.max_storage_buffer_binding_size;
        match bytes {
            // Planning counts bytes for any device, so this adapter's binding limit is not
            // applied.
            Some(b) if b <= limit || gpu.inner.recorder.plan_only => Ok(b.max(4)),
            _ => Err(Error::TensorTooLarge {
                shape: shape.to_vec(),
                bytes: bytes.unwrap_or(u64::MAX),
                limit,
            }),
        }
    }

    /// Allocates an uninitialised tensor (contents unspecified until a kernel writes it).
    pub(crate) fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = Tensor::check_size(gpu, shape)?;
        let (buffer, class) = gpu
            .inner
            .pool
            .lock()
            .expect("pool lock")
            .acquire(&gpu.inner.recorder.device, bytes)?;
        Ok(Tensor {
            inner: Arc::new(TensorInner {
                gpu: gpu.clone(),
                shape: shape.to_vec(),
                dtype,
                storage: Arc::new(Storage {
                    buffer: Some(buffer),
                    class,
                    gpu: gpu.clone(),
                }),
                grad_state: GradState::Constant,
            }),
        })
    }

    /// A constant tensor holding `data` (row-major) with the given shape.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_len("Tensor::from_slice", shape, data.len())?;
        let t = Tensor::empty(gpu, shape, DType::F32)?;
        gpu.upload(t.buffer(), bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A constant `u32` tensor (class labels).
    pub fn from_u32(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        check_len("Tensor::from_u32", shape, data.len())?;
        let t = Tensor::empty(gpu, shape, DType::U32)?;
        gpu.upload(t.buffer(), bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A trainable leaf tensor: gradients accumulate in [`Tensor::grad`].
    pub fn parameter(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(gpu, data, shape)?.into_parameter())
    }

    /// A constant tensor of zeros.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::empty(gpu, shape, DType::F32)?;
        gpu.zero(t.buffer());
        Ok(t)
    }

    /// A constant tensor with every element `value`.
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor> {
        if value == 0.0 {
            return Tensor::zeros(gpu, shape);
        }
        let t = Tensor::empty(gpu, shape, DType::F32)?;
        crate::ops::elementwise::fill(&t, value)?;
        Ok(t)
    }

    /// The same data as a trainable leaf (a new leaf with no gradient yet).
    pub fn into_parameter(self) -> Tensor {
        self.with_state(GradState::Leaf(Arc::new(LeafGrad::default())))
    }

    /// The same data, cut off from the graph: a constant that records nothing.
    pub fn detach(&self) -> Tensor {
        self.with_state(GradState::Constant)
    }

    fn with_state(&self, grad_state: GradState) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                gpu: self.inner.gpu.clone(),
                shape: self.inner.shape.clone(),
                dtype: self.inner.dtype,
                storage: self.inner.storage.clone(),
                grad_state,
            }),
        }
    }

    /// A tensor made by an op: records `backward` when gradients are enabled and any input
    /// requires them.
    pub(crate) fn from_op(
        out: Tensor,
        inputs: &[&Tensor],
        name: &'static str,
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Tensor {
        match autograd::record(inputs, name, backward) {
            Some(node) => out.with_state(GradState::Interior(node)),
            None => out,
        }
    }

    /// The device this tensor lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.inner.gpu
    }

    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel_of(&self.inner.shape)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// Whether gradients flow into or through this tensor.
    pub fn requires_grad(&self) -> bool {
        !matches!(self.inner.grad_state, GradState::Constant)
    }

    /// Whether this is a trainable leaf (a parameter).
    pub fn is_parameter(&self) -> bool {
        matches!(self.inner.grad_state, GradState::Leaf(_))
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.inner.storage.buffer()
    }

    /// The underlying wgpu buffer, for embedding applications with kernels of their own.
    /// It may be larger than the tensor (buffers come in size classes).
    pub fn raw_buffer(&self) -> &wgpu::Buffer {
        self.buffer()
    }

    /// Whether two tensors share one device buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.inner.storage, &other.inner.storage)
    }

    /// Copies the data back to the host (submits pending work and waits for it).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.expect_dtype("to_vec", DType::F32)?;
        let bytes = self
            .gpu()
            .download(self.buffer(), (self.numel() * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies `u32` data back to the host.
    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        self.expect_dtype("to_vec_u32", DType::U32)?;
        let bytes = self
            .gpu()
            .download(self.buffer(), (self.numel() * 4) as u64)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "item",
                format!("needs one element, shape is {:?}", self.shape()),
            ));
        }
        Ok(self.to_vec()?[0])
    }

    /// Overwrites the contents with host data (same number of elements), in place: every
    /// tensor sharing this buffer sees the new values. Used to load checkpoints.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        self.expect_dtype("write", DType::F32)?;
        check_len("Tensor::write", self.shape(), data.len())?;
        self.gpu().upload(self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrites the contents with another tensor's (same shape), on the device.
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() || src.dtype() != self.dtype() {
            return Err(Error::shape(
                "copy_from",
                format!(
                    "source {:?} does not match destination {:?}",
                    src.shape(),
                    self.shape()
                ),
            ));
        }
        self.same_gpu("copy_from", src)?;
        self.gpu()
            .copy(src.buffer(), self.buffer(), (self.numel() * 4) as u64);
        Ok(())
    }

    /// A device-side copy with its own buffer (a constant).
    pub fn deep_clone(&self) -> Result<Tensor> {
        let t = Tensor::empty(self.gpu(), self.shape(), self.dtype())?;
        self.gpu()
            .copy(self.buffer(), t.buffer(), (self.numel() * 4) as u64);
        Ok(t)
    }

    /// Accumulated gradient of a parameter (None before the first backward or after zero_grad).
    pub fn grad(&self) -> Option<Tensor> {
        match &self.inner.grad_state {
            GradState::Leaf(leaf) => leaf.grad.lock().expect("grad lock").clone(),
            _ => None,
        }
    }

    /// Replaces the gradient of a parameter (None clears it).
    pub fn set_grad(&self, grad: Option<Tensor>) -> Result<()> {
        match &self.inner.grad_state {
            GradState::Leaf(leaf) => {
                if let Some(g) = &grad
                    && g.shape() != self.shape()
                {
                    return Err(Error::shape(
                        "set_grad",
                        format!(
                            "gradient {:?} does not match parameter {:?}",
                            g.shape(),
                            self.shape()
                        ),
                    ));
                }
                *leaf.grad.lock().expect("grad lock") = grad;
                Ok(())
            }
            _ => Err(Error::Autograd(
                "set_grad on a tensor that is not a parameter".into(),
            )),
        }
    }

    /// Clears the accumulated gradient.
    pub fn zero_grad(&self) {
        if let GradState::Leaf(leaf) = &self.inner.grad_state {
            *leaf.grad.lock().expect("grad lock") = None;
        }
    }

    /// Back-propagates from this one-element tensor into every parameter it depends on;
    /// gradients add to what the parameters already hold.
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self)
    }

    /// Back-propagates `grad` (the gradient of some scalar with respect to this tensor, same
    /// shape) into every parameter this tensor depends on.
    ///
    /// ```no_run
    /// use repopt_tensor::{Gpu, Tensor};
    /// let gpu = Gpu::from_env()?;
    /// let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2])?;
    /// let y = w.relu()?;
    /// y.backward_with(&Tensor::from_slice(&gpu, &[0.5, -1.0], &[2])?)?;
    /// assert_eq!(w.grad().unwrap().to_vec()?, vec![0.5, -1.0]);
    /// # Ok::<(), repopt_tensor::Error>(())
    /// ```
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        self.same_gpu("backward_with", grad)?;
        autograd::backward_from(self, grad.detach())
    }

    pub(crate) fn expect_dtype(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype() != dtype {
            return Err(Error::invalid(
                op,
                format!("expects {dtype:?} data, got {:?}", self.dtype()),
            ));
        }
        Ok(())
    }

    pub(crate) fn same_gpu(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.gpu() != other.gpu() {
            return Err(Error::DeviceMismatch(op));
        }
        Ok(())
    }

    /// The same data with another shape of equal element count; gradients flow through.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel_of(shape) != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {:?}", self.shape(), shape),
            ));
        }
        let out = Tensor {
            inner: Arc::new(TensorInner {
                gpu: self.gpu().clone(),
                shape: shape.to_vec(),
                dtype: self.dtype(),
                storage: self.inner.storage.clone(),
                grad_state: GradState::Constant,
            }),
        };
        let from = self.shape().to_vec();
        Ok(Tensor::from_op(out, &[self], "reshape", move |g| {
            Ok(vec![Some(g.reshape(&from)?)])
        }))
    }
}

fn check_len(what: &'static str, shape: &[usize], got: usize) -> Result<()> {
    let expected = numel_of(shape);
    if expected != got || expected == 0 {
        return Err(Error::DataLength {
            what,
            shape: shape.to_vec(),
            expected,
            got,
        });
    }
    Ok(())
}
