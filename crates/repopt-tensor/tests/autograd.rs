//! The tape: reverse order, accumulation, zero_grad, no_grad, constants, freed graphs, memory.

use repopt_tensor::testing::{data, gpu};
use repopt_tensor::{Error, Tensor, no_grad, ops};

#[test]
fn gradients_accumulate_across_backward_calls_until_zero_grad() {
    let gpu = gpu();
    let w = Tensor::parameter(&gpu, &[1.0, -2.0, 3.0], &[3]).unwrap();
    let x = Tensor::from_slice(&gpu, &[2.0, 3.0, 4.0], &[3]).unwrap();
    w.mul(&x).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![2.0, 3.0, 4.0]);
    w.mul(&x).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![4.0, 6.0, 8.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
    w.mul(&x).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![2.0, 3.0, 4.0]);
}

#[test]
fn a_tensor_used_twice_gets_the_sum_of_both_paths() {
    let gpu = gpu();
    // y = w*w + 3w  ->  dy/dw = 2w + 3
    let w = Tensor::parameter(&gpu, &[1.0, -2.0], &[2]).unwrap();
    let y = w
        .mul(&w)
        .unwrap()
        .add(&w.scale(3.0).unwrap())
        .unwrap()
        .sum()
        .unwrap();
    y.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![5.0, -1.0]);
}

#[test]
fn constants_get_no_gradient_and_no_grad_records_nothing() {
    let gpu = gpu();
    let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let c = Tensor::from_slice(&gpu, &[5.0, 6.0], &[2]).unwrap();
    let y = no_grad(|| w.mul(&c).unwrap());
    assert!(!y.requires_grad());
    assert!(matches!(
        y.sum().unwrap().backward(),
        Err(Error::Autograd(_))
    ));
    let z = w.mul(&c).unwrap();
    assert!(z.requires_grad() && !z.is_parameter());
    z.sum().unwrap().backward().unwrap();
    assert!(c.grad().is_none());
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![5.0, 6.0]);
    assert!(
        c.detach().set_grad(None).is_err(),
        "only parameters hold gradients"
    );
}

#[test]
fn backward_with_a_seed_gradient_weights_each_output() {
    let gpu = gpu();
    let w = Tensor::parameter(&gpu, &[1.0, -2.0, 3.0], &[3]).unwrap();
    let seed = Tensor::from_slice(&gpu, &[0.5, 2.0, -1.0], &[3]).unwrap();
    w.scale(3.0).unwrap().backward_with(&seed).unwrap();
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![1.5, 6.0, -3.0]);
    let bad = Tensor::zeros(&gpu, &[2]).unwrap();
    assert!(w.scale(1.0).unwrap().backward_with(&bad).is_err());
}

#[test]
fn backward_needs_a_scalar_and_refuses_a_freed_graph() {
    let gpu = gpu();
    let w = Tensor::parameter(&gpu, &[1.0, 2.0], &[2]).unwrap();
    let y = w.relu().unwrap();
    let err = y.backward().unwrap_err();
    assert!(err.to_string().contains("one-element"), "{err}");
    let loss = y.sum().unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err();
    assert!(err.to_string().contains("second time"), "{err}");
}

#[test]
fn backward_runs_nodes_in_reverse_creation_order_through_a_diamond() {
    // a -> b = relu(a), c = 2a; d = b * c; every path must be complete before a's node runs.
    let gpu = gpu();
    let a = Tensor::parameter(&gpu, &[1.5, -0.5, 2.0], &[3]).unwrap();
    let b = a.relu().unwrap();
    let c = a.scale(2.0).unwrap();
    let d = b.mul(&c).unwrap().sum().unwrap();
    d.backward().unwrap();
    // d = sum(relu(a) * 2a): derivative 4a where a > 0, 0 elsewhere.
    assert_eq!(a.grad().unwrap().to_vec().unwrap(), vec![6.0, 0.0, 8.0]);
}

#[test]
fn activations_are_freed_as_soon_as_backward_is_done_with_them() {
    // A device of its own: other tests allocate concurrently on the shared one.
    let gpu = repopt_tensor::Gpu::from_env().unwrap();
    let x = Tensor::from_slice(&gpu, &data(4 * 8 * 16 * 16, 1), &[4, 8, 16, 16]).unwrap();
    let w1 = Tensor::parameter(&gpu, &data(8 * 8 * 9, 2), &[8, 8, 3, 3]).unwrap();
    let w2 = Tensor::parameter(&gpu, &data(8 * 8 * 9, 3), &[8, 8, 3, 3]).unwrap();
    gpu.synchronize().unwrap();
    let before = gpu.memory().live_bytes;
    {
        let cfg = ops::Conv2dConfig::same(3, 1);
        let h = ops::conv2d(&x, &w1, cfg).unwrap().relu().unwrap();
        let y = ops::conv2d(&h, &w2, cfg).unwrap();
        drop(h);
        let loss = y.mean().unwrap();
        drop(y);
        assert!(
            gpu.memory().live_bytes > before,
            "the graph holds saved activations"
        );
        loss.backward().unwrap();
    }
    w1.zero_grad();
    w2.zero_grad();
    assert_eq!(
        gpu.memory().live_bytes,
        before,
        "graph, activations and gradients all released"
    );
    assert!(gpu.memory().peak_live_bytes > before);
}

#[test]
fn shape_errors_name_the_op_and_the_shapes() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let b = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let err = a.add(&b).unwrap_err().to_string();
    assert!(
        err.contains("add") && err.contains("[2, 3]") && err.contains("[3, 2]"),
        "{err}"
    );
    let x = Tensor::zeros(&gpu, &[1, 4, 5, 5]).unwrap();
    let w = Tensor::zeros(&gpu, &[8, 3, 3, 3]).unwrap();
    let err = ops::conv2d(&x, &w, ops::Conv2dConfig::same(3, 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d") && err.contains("input channels"),
        "{err}"
    );
    let err = Tensor::from_slice(&gpu, &[1.0, 2.0], &[3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected 3") && err.contains("got 2"), "{err}");
    let huge = gpu.limits().max_storage_buffer_binding_size as usize / 4 + 1;
    assert!(matches!(
        Tensor::zeros(&gpu, &[huge]),
        Err(Error::TensorTooLarge { .. })
    ));
}

#[test]
fn memory_limit_refuses_allocations_beyond_it() {
    let gpu = repopt_tensor::Gpu::from_env().unwrap();
    let live = gpu.memory().live_bytes;
    gpu.set_memory_limit(Some(live + 64 * 1024));
    let ok = Tensor::zeros(&gpu, &[1024]).unwrap();
    let err = Tensor::zeros(&gpu, &[1 << 20]).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    drop(ok);
    gpu.set_memory_limit(None);
    Tensor::zeros(&gpu, &[1 << 20]).unwrap();
}

#[test]
fn the_pool_reuses_buffers_across_identical_steps() {
    let gpu = repopt_tensor::Gpu::from_env().unwrap();
    let w = Tensor::parameter(&gpu, &data(16 * 3 * 9, 5), &[16, 3, 3, 3]).unwrap();
    let x = Tensor::from_slice(&gpu, &data(2 * 3 * 10 * 10, 6), &[2, 3, 10, 10]).unwrap();
    let step = || {
        let y = ops::conv2d(&x, &w, ops::Conv2dConfig::same(3, 2))
            .unwrap()
            .relu()
            .unwrap();
        y.mean().unwrap().backward().unwrap();
        w.zero_grad();
    };
    step();
    step();
    let created = gpu.memory().buffers_created;
    for _ in 0..3 {
        step();
    }
    assert_eq!(
        gpu.memory().buffers_created,
        created,
        "a steady loop allocates nothing new"
    );
}

/// A plan-only device accounts exactly the bytes a real run allocates, without running it.
#[test]
fn plan_only_devices_count_the_same_peak_bytes() {
    use repopt_tensor::optim::{Optimizer, ParamSpec, Sgd, SgdConfig};
    use repopt_tensor::{AdapterSelector, GpuOptions};
    let run = |plan_only: bool| {
        let gpu = repopt_tensor::Gpu::new(GpuOptions {
            adapter: AdapterSelector::from_env(),
            plan_only,
            ..Default::default()
        })
        .unwrap();
        let x = Tensor::from_slice(&gpu, &data(6 * 3 * 12 * 12, 1), &[6, 3, 12, 12]).unwrap();
        let y = Tensor::from_u32(&gpu, &[0, 1, 2, 0, 1, 2], &[6]).unwrap();
        let w = Tensor::parameter(&gpu, &data(8 * 3 * 9, 2), &[8, 3, 3, 3]).unwrap();
        let gamma = Tensor::parameter(&gpu, &[1.0; 8], &[8]).unwrap();
        let beta = Tensor::parameter(&gpu, &[0.0; 8], &[8]).unwrap();
        let stats = ops::BatchNormStats::new(&gpu, 8).unwrap();
        let fc = Tensor::parameter(&gpu, &data(3 * 8, 3), &[3, 8]).unwrap();
        let fb = Tensor::parameter(&gpu, &[0.0; 3], &[3]).unwrap();
        let specs = [&w, &gamma, &beta, &fc, &fb]
            .map(|t| ParamSpec::new(t.clone(), 1e-4))
            .to_vec();
        let mut opt = Sgd::new(specs, SgdConfig::default()).unwrap();
        gpu.reset_peak_memory();
        for _ in 0..2 {
            let h = ops::conv2d(&x, &w, ops::Conv2dConfig::same(3, 2)).unwrap();
            let h = ops::batch_norm2d(&h, &gamma, &beta, &stats, true, true).unwrap();
            let logits = ops::linear(&ops::global_avg_pool(&h).unwrap(), &fc, &fb).unwrap();
            ops::cross_entropy(&logits, &y, 0.1)
                .unwrap()
                .backward()
                .unwrap();
            opt.step(0.1).unwrap();
            opt.zero_grad();
        }
        gpu.synchronize().unwrap();
        let m = gpu.memory();
        (m.peak_live_bytes, m.live_bytes, gpu.dispatch_count())
    };
    let real = run(false);
    let planned = run(true);
    assert_eq!(
        real, planned,
        "(peak bytes, live bytes, dispatches): real vs planned"
    );
    assert!(real.0 > 0);
}
