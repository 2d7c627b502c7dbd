//! Reverse-mode automatic differentiation.
//!
//! Every op that sees an input requiring gradients records a [`Node`]: edges to where each
//! input's gradient goes (another node, or a parameter's gradient slot) and a closure that
//! turns the output's gradient into the inputs'. Nodes are numbered in creation order, so
//! the recorded graph is a tape: [`backward`] replays it from the newest node to the oldest.
//! Edges point at nodes, not tensors, so an activation's buffer is freed as soon as neither
//! user code nor a backward closure needs it, and each closure (with what it saved) is
//! dropped the moment it has run.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Turns the gradient of an op's output into the gradients of its inputs (None where an
/// input needs none).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send>;

/// The gradient slot of a parameter.
#[derive(Default)]
pub(crate) struct LeafGrad {
    pub(crate) grad: Mutex<Option<Tensor>>,
}

pub(crate) enum Edge {
    None,
    Leaf(Arc<LeafGrad>),
    Node(Arc<Node>),
}

/// One recorded op.
pub(crate) struct Node {
    seq: u64,
    name: &'static str,
    edges: Vec<Edge>,
    backward: Mutex<Option<BackwardFn>>,
}

/// Where a tensor sits in the graph.
pub(crate) enum GradState {
    /// No gradient flows here.
    Constant,
    /// A parameter.
    Leaf(Arc<LeafGrad>),
    /// Made by a recorded op.
    Interior(Arc<Node>),
}

static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record gradients on this thread right now.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Runs `f` with gradient recording off on this thread (evaluation, optimizer updates).
///
/// ```no_run
/// use repopt_tensor::{no_grad, Gpu, Tensor};
/// let gpu = Gpu::from_env()?;
/// let w = Tensor::parameter(&gpu, &[2.0], &[1])?;
/// let y = no_grad(|| w.mul(&w))?;
/// assert!(!y.requires_grad());
/// # Ok::<(), repopt_tensor::Error>(())
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Turns gradient recording off on this thread until dropped.
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Disables recording; the previous state returns on drop.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

fn edge_of(t: &Tensor) -> Edge {
    match &t.inner.grad_state {
        GradState::Constant => Edge::None,
        GradState::Leaf(l) => Edge::Leaf(l.clone()),
        GradState::Interior(n) => Edge::Node(n.clone()),
    }
}

/// Records a node when recording is on and some input requires gradients.
pub(crate) fn record(
    inputs: &[&Tensor],
    name: &'static str,
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Option<Arc<Node>> {
    if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return None;
    }
    Some(Arc::new(Node {
        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
        name,
        edges: inputs.iter().map(|t| edge_of(t)).collect(),
        backward: Mutex::new(Some(Box::new(backward))),
    }))
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    // Gradients are never changed in place: one tensor may be the gradient of several
    // inputs (add passes its gradient through to both).
    *slot = Some(match slot.take() {
        None => g,
        Some(prev) => prev.add(&g)?,
    });
    Ok(())
}

pub(crate) fn backward(root: &Tensor) -> Result<()> {
    if root.numel() != 1 {
        return Err(Error::Autograd(format!(
            "backward needs a one-element tensor (a loss), got shape {:?}",
            root.shape()
        )));
    }
    let seed = Tensor::full(root.gpu(), root.shape(), 1.0)?;
    backward_from(root, seed)
}

pub(crate) fn backward_from(root: &Tensor, seed: Tensor) -> Result<()> {
    if seed.shape() != root.shape() {
        return Err(Error::Autograd(format!(
            "the seed gradient has shape {:?}, the tensor {:?}",
            seed.shape(),
            root.shape()
        )));
    }
    let _guard = NoGradGuard::new();
    let node = match &root.inner.grad_state {
        GradState::Constant => {
            return Err(Error::Autograd(
                "backward on a tensor that does not require gradients (made under no_grad, or from constants only)"
                    .into(),
            ));
        }
        GradState::Leaf(l) => {
            let mut slot = l.grad.lock().expect("grad lock");
            return accumulate(&mut slot, seed);
        }
        GradState::Interior(n) => n.clone(),
    };
    let mut pending: BTreeMap<u64, (Arc<Node>, Option<Tensor>)> = BTreeMap::new();
    pending.insert(node.seq, (node, Some(seed)));
    while let Some((_, (node, grad))) = pending.pop_last() {
        let grad = grad.expect("every pending node has a gradient");
        let f = node.backward.lock().expect("node lock").take().ok_or_else(|| {
            Error::Autograd(format!(
                "backward through '{}' a second time: its saved tensors were freed by the first backward",
                node.name
            ))
        })?;
        let grads = f(&grad)?;
        drop(grad);
        if grads.len() != node.edges.len() {
            return Err(Error::Autograd(format!(
                "'{}' returned {} gradients for {} inputs",
                node.name,
                grads.len(),
                node.edges.len()
            )));
        }
        for (edge, g) in node.edges.iter().zip(grads) {
            let Some(g) = g else { continue };
            match edge {
                Edge::None => {}
                Edge::Leaf(l) => {
                    let mut slot = l.grad.lock().expect("grad lock");
                    accumulate(&mut slot, g)?;
                }
                Edge::Node(n) => {
                    let entry = pending.entry(n.seq).or_insert_with(|| (n.clone(), None));
                    accumulate(&mut entry.1, g)?;
                }
            }
        }
    }
    Ok(())
}
