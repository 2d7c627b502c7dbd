//! A block of your own design trained with a RepOptimizer: declare it as a sum of branches
//! and the engine derives its Grad Mult and initial kernel, and checks that training the
//! plain convolution with them equals training the multi-branch block.
//!
//! The block here is ACNet-style: a 3x3, a 1x3 and a 3x1 convolution, each followed by a
//! constant channel-wise scale.
//!
//! ```text
//! cargo run --release --example declare_block
//! ```

use repopt::models::gr::verify::{VerifyConfig, VerifyReport, verify};
use repopt::models::gr::{Branch, CslaBlock};
use repopt::models::repoptimizer::UpdateRule;
use repopt::tensor::Gpu;

/// The declared block for `c` channels in and out.
pub fn acnet(c: usize) -> CslaBlock {
    CslaBlock::dense(
        c,
        c,
        3,
        1,
        vec![
            Branch::conv("square", 3, 3, vec![1.2; c]),
            Branch::conv("row", 1, 3, vec![0.7; c]),
            Branch::conv("column", 3, 1, vec![0.4; c]),
        ],
    )
}

/// The block's Grad Mult and the equivalence check over `steps` steps.
pub fn run(gpu: &Gpu, c: usize, steps: usize) -> anyhow::Result<(Vec<f32>, VerifyReport)> {
    let block = acnet(c);
    block.validate()?;
    // `[c, c, 3, 3]`: what RepOptimizer-SGD multiplies the kernel's gradient by.
    let grad_mult = block.grad_mult(UpdateRule::Sgd);
    let report = verify(
        gpu,
        &block,
        &VerifyConfig {
            steps,
            ..Default::default()
        },
    )?;
    Ok((grad_mult, report))
}

fn main() -> anyhow::Result<()> {
    let gpu = Gpu::from_env()?;
    let (m, report) = run(&gpu, 8, 100)?;
    println!(
        "Grad Mult of channel 0 -> 0, row by row: {:?} {:?} {:?}",
        &m[0..3],
        &m[3..6],
        &m[6..9]
    );
    println!(
        "after {} steps the target kernel is {:.1e} (relative) from the block's equivalent kernel",
        report.steps, report.gap
    );
    Ok(())
}
