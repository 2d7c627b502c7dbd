//! Many tensors as one: the contents of a list of f32 tensors copied into one flat tensor and
//! back, on the device. A set of small tensors (a model's gradients, its state) then crosses
//! to the host, or to another process, as one transfer instead of one per tensor: copies are
//! recorded in the current command batch and cost no dispatch.
//!
//! ```
//! use repopt_tensor::{Gpu, Tensor, flat};
//! let gpu = Gpu::from_env()?;
//! let a = Tensor::from_slice(&gpu, &[1.0, 2.0], &[2])?;
//! let b = Tensor::from_slice(&gpu, &[3.0, 4.0, 5.0], &[3])?;
//! let all = flat::gather(&[a.clone(), b.clone()])?;
//! assert_eq!(all.to_vec()?, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
//! all.write(&[0.0, 0.0, 0.0, 0.0, 7.0])?;
//! flat::scatter(&all, &[a, b.clone()])?;
//! assert_eq!(b.to_vec()?, vec![0.0, 0.0, 7.0]);
//! # Ok::<(), repopt_tensor::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Elements of all `parts` together.
pub fn numel(parts: &[Tensor]) -> usize {
    parts.iter().map(Tensor::numel).sum()
}

fn check(op: &'static str, flat: &Tensor, parts: &[Tensor]) -> Result<()> {
    flat.expect_dtype(op, DType::F32)?;
    for (i, p) in parts.iter().enumerate() {
        if p.dtype() != DType::F32 {
            return Err(Error::invalid(op, format!("part {i} is not f32")));
        }
        flat.same_gpu(op, p)?;
    }
    let n = numel(parts);
    if flat.numel() != n {
        return Err(Error::shape(
            op,
            format!(
                "the flat tensor has {} elements, the parts {n}",
                flat.numel()
            ),
        ));
    }
    Ok(())
}

/// A new flat tensor holding the contents of `parts`, one after another (a constant).
/// Fails on an empty list (a tensor needs a device).
pub fn gather(parts: &[Tensor]) -> Result<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| Error::invalid("flat::gather", "no tensors to gather"))?;
    let flat = Tensor::empty(first.gpu(), &[numel(parts)], DType::F32)?;
    gather_into(parts, &flat)?;
    Ok(flat)
}

/// Copies the contents of `parts`, one after another, into `flat` (which has exactly as many
/// elements).
pub fn gather_into(parts: &[Tensor], flat: &Tensor) -> Result<()> {
    check("flat::gather_into", flat, parts)?;
    let gpu = flat.gpu();
    let mut at = 0u64;
    for p in parts {
        let bytes = (p.numel() * 4) as u64;
        gpu.copy_range(p.buffer(), 0, flat.buffer(), at, bytes);
        at += bytes;
    }
    Ok(())
}

/// Copies consecutive ranges of `flat` back into `parts`, in place: every tensor sharing a
/// part's storage (a parameter's gradient, an optimizer's buffer) sees the new values.
pub fn scatter(flat: &Tensor, parts: &[Tensor]) -> Result<()> {
    check("flat::scatter", flat, parts)?;
    let gpu = flat.gpu();
    let mut at = 0u64;
    for p in parts {
        let bytes = (p.numel() * 4) as u64;
        gpu.copy_range(flat.buffer(), at, p.buffer(), 0, bytes);
        at += bytes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gpu;

    #[test]
    fn gather_and_scatter_round_trip_odd_sizes() {
        let gpu = Gpu::from_env().unwrap();
        let sizes = [1usize, 7, 3, 64, 5];
        let parts: Vec<Tensor> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let data: Vec<f32> = (0..n).map(|i| (k * 100 + i) as f32).collect();
                Tensor::from_slice(&gpu, &data, &[n]).unwrap()
            })
            .collect();
        let flat = gather(&parts).unwrap();
        let host = flat.to_vec().unwrap();
        let expected: Vec<f32> = sizes
            .iter()
            .enumerate()
            .flat_map(|(k, &n)| (0..n).map(move |i| (k * 100 + i) as f32))
            .collect();
        assert_eq!(host, expected);
        let negated: Vec<f32> = host.iter().map(|v| -v).collect();
        flat.write(&negated).unwrap();
        scatter(&flat, &parts).unwrap();
        for (k, p) in parts.iter().enumerate() {
            let want: Vec<f32> = (0..sizes[k]).map(|i| -((k * 100 + i) as f32)).collect();
            assert_eq!(p.to_vec().unwrap(), want);
        }
    }

    #[test]
    fn a_flat_tensor_of_the_wrong_size_is_refused() {
        let gpu = Gpu::from_env().unwrap();
        let a = Tensor::zeros(&gpu, &[3]).unwrap();
        let flat = Tensor::zeros(&gpu, &[4]).unwrap();
        let err = gather_into(std::slice::from_ref(&a), &flat).unwrap_err();
        assert!(err.to_string().contains("4 elements"), "{err}");
        assert!(gather(&[]).is_err());
    }
}
