//! A network of your own on the engine alone: three convolutions with batch norm and ReLU,
//! global average pooling and a linear classifier, written with `repopt_tensor`'s ops and
//! trained with its SGD. No model or training code from the rest of the workspace is used:
//! a program that depends on `repopt-tensor` only can do the same.
//!
//! The task is synthetic and seeded: 16x16 noisy stripe images whose class is the stripes'
//! orientation (horizontal, vertical, diagonal, anti-diagonal). Position does not matter,
//! which suits a convolutional net that pools globally.
//!
//! ```text
//! cargo run --release --example custom_net
//! ```

use std::f32::consts::{PI, TAU};
use std::time::Instant;

use repopt_tensor::ops::{self, BatchNormStats, Conv2dConfig};
use repopt_tensor::optim::{Optimizer, ParamSpec, Sgd, SgdConfig};
use repopt_tensor::{Gpu, Result, Tensor, no_grad};

const SIZE: usize = 16;
const CLASSES: usize = 4;
/// Channels after each convolution.
const WIDTHS: [usize; 3] = [8, 16, 32];
const BATCH: usize = 32;
const LR: f32 = 0.05;
const WEIGHT_DECAY: f32 = 1e-4;

/// What training achieved.
pub struct Outcome {
    /// Training loss of every step.
    pub losses: Vec<f32>,
    /// Top-1 accuracy (0 to 1) on the training images, in evaluation mode.
    pub train_accuracy: f64,
    /// Top-1 accuracy on as many images never trained on.
    pub fresh_accuracy: f64,
}

/// xorshift64*: the example needs reproducible noise, not a random-number dependency.
struct Rng(u64);

impl Rng {
    /// Uniform in [-bound, bound).
    fn uniform(&mut self, bound: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let unit = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * bound
    }
}

/// `n` images `[n, 1, SIZE, SIZE]` and their labels: stripes of a random period and phase
/// along the class's direction, under noise as strong as the stripes themselves.
fn stripes(n: usize, rng: &mut Rng) -> (Vec<f32>, Vec<u32>) {
    let mut images = Vec::with_capacity(n * SIZE * SIZE);
    for i in 0..n {
        let (period, phase) = (4.5 + rng.uniform(1.5), rng.uniform(PI));
        for y in 0..SIZE {
            for x in 0..SIZE {
                let (x, y) = (x as f32, y as f32);
                let along = [y, x, (x + y) / 2f32.sqrt(), (x - y) / 2f32.sqrt()][i % CLASSES];
                images.push((TAU * along / period + phase).sin() + rng.uniform(1.0));
            }
        }
    }
    // Classes alternate, so every batch holds all of them and needs no shuffling.
    (images, (0..n).map(|i| (i % CLASSES) as u32).collect())
}

/// A 3x3 convolution followed by batch norm and ReLU.
struct ConvBn {
    kernel: Tensor,
    gamma: Tensor,
    beta: Tensor,
    stats: BatchNormStats,
    stride: usize,
}

struct Net {
    convs: Vec<ConvBn>,
    fc: (Tensor, Tensor),
}

impl Net {
    fn new(gpu: &Gpu, rng: &mut Rng) -> Result<Net> {
        let (mut convs, mut cin) = (Vec::new(), 1);
        for (i, &cout) in WIDTHS.iter().enumerate() {
            // He initialisation keeps the activations' scale through each ReLU.
            let bound = (6.0 / (cin * 9) as f32).sqrt();
            let w: Vec<f32> = (0..cout * cin * 9).map(|_| rng.uniform(bound)).collect();
            convs.push(ConvBn {
                kernel: Tensor::parameter(gpu, &w, &[cout, cin, 3, 3])?,
                gamma: Tensor::parameter(gpu, &vec![1.0; cout], &[cout])?,
                beta: Tensor::parameter(gpu, &vec![0.0; cout], &[cout])?,
                stats: BatchNormStats::new(gpu, cout)?,
                // Full resolution first, then halve it twice: 16 -> 8 -> 4.
                stride: if i == 0 { 1 } else { 2 },
            });
            cin = cout;
        }
        let w: Vec<f32> = (0..CLASSES * cin)
            .map(|_| rng.uniform(1.0 / (cin as f32).sqrt()))
            .collect();
        let fc = (
            Tensor::parameter(gpu, &w, &[CLASSES, cin])?,
            Tensor::parameter(gpu, &[0.0; CLASSES], &[CLASSES])?,
        );
        Ok(Net { convs, fc })
    }

    /// Logits `[N, CLASSES]`. `training` selects batch statistics (and updates the running
    /// ones) or the running statistics, as for any batch-norm network.
    fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for c in &self.convs {
            h = ops::conv2d(&h, &c.kernel, Conv2dConfig::same(3, c.stride))?;
            h = ops::batch_norm2d(&h, &c.gamma, &c.beta, &c.stats, training, true)?;
        }
        ops::linear(&ops::global_avg_pool(&h)?, &self.fc.0, &self.fc.1)
    }

    /// Weight decay on kernels and the classifier's weight only: decaying batch-norm scales
    /// and biases would only fight the normalisation.
    fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = Vec::new();
        for c in &self.convs {
            specs.push(ParamSpec::new(c.kernel.clone(), WEIGHT_DECAY));
            specs.push(ParamSpec::new(c.gamma.clone(), 0.0));
            specs.push(ParamSpec::new(c.beta.clone(), 0.0));
        }
        specs.push(ParamSpec::new(self.fc.0.clone(), WEIGHT_DECAY));
        specs.push(ParamSpec::new(self.fc.1.clone(), 0.0));
        specs
    }
}

/// The images and labels as device batches, uploaded once and reused every epoch.
fn upload(gpu: &Gpu, (images, labels): (Vec<f32>, Vec<u32>)) -> Result<Vec<(Tensor, Tensor)>> {
    let batches = images.chunks(BATCH * SIZE * SIZE).zip(labels.chunks(BATCH));
    batches
        .map(|(x, y)| {
            let x = Tensor::from_slice(gpu, x, &[y.len(), 1, SIZE, SIZE])?;
            Ok((x, Tensor::from_u32(gpu, y, &[y.len()])?))
        })
        .collect()
}

/// Fraction of correctly classified images, with the running batch-norm statistics.
fn accuracy(net: &Net, batches: &[(Tensor, Tensor)]) -> Result<f64> {
    let (mut right, mut total) = (0, 0);
    for (x, y) in batches {
        let logits = no_grad(|| net.forward(x, false))?.to_vec()?;
        for (row, label) in logits.chunks(CLASSES).zip(y.to_vec_u32()?) {
            let best = (0..CLASSES).max_by(|&a, &b| row[a].total_cmp(&row[b]));
            right += usize::from(best == Some(label as usize));
            total += 1;
        }
    }
    Ok(right as f64 / total.max(1) as f64)
}

/// Trains on `images` seeded stripe images for `epochs` epochs, printing the loss every
/// `log_every` steps (0: never), and measures the accuracy reached.
pub fn run(gpu: &Gpu, images: usize, epochs: usize, log_every: usize) -> Result<Outcome> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let train = upload(gpu, stripes(images, &mut rng))?;
    let fresh = upload(gpu, stripes(images, &mut rng))?;
    let net = Net::new(gpu, &mut rng)?;
    let mut sgd = Sgd::new(net.param_specs(), SgdConfig::default())?;
    let mut losses = Vec::new();
    for _ in 0..epochs {
        for (x, y) in &train {
            let loss = ops::cross_entropy(&net.forward(x, true)?, y, 0.0)?;
            loss.backward()?;
            sgd.step(LR)?;
            // Gradients accumulate until cleared, as in PyTorch.
            sgd.zero_grad();
            // Reading the loss waits for the device; a long run would read it less often.
            let value = loss.item()?;
            losses.push(value);
            if log_every > 0 && losses.len().is_multiple_of(log_every) {
                println!("step {:4}  loss {value:.4}", losses.len());
            }
        }
    }
    let (train_accuracy, fresh_accuracy) = (accuracy(&net, &train)?, accuracy(&net, &fresh)?);
    Ok(Outcome {
        losses,
        train_accuracy,
        fresh_accuracy,
    })
}

fn main() -> Result<()> {
    let gpu = Gpu::from_env()?;
    println!("adapter: {}", gpu.adapter().name);
    let start = Instant::now();
    let out = run(&gpu, 512, 5, 10)?;
    println!(
        "training accuracy {:.1}%, on fresh images {:.1}% (chance {:.0}%), {:.1} s",
        100.0 * out.train_accuracy,
        100.0 * out.fresh_accuracy,
        100.0 / CLASSES as f32,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
