//! Architectures and scales outside their domains are refused with a message naming the
//! setting (or the block) and the value, before anything is allocated.

mod common;

use common::{build, small_config};
use repopt_models::repoptimizer::{RepOptimizerConfig, UpdateRule, prepare};
use repopt_models::{Mode, Scales, VggConfig};

fn refusal(config: &VggConfig) -> String {
    config
        .validate()
        .expect_err("the config should be refused")
        .to_string()
}

#[test]
fn architectures_outside_their_domains_are_refused_naming_the_field() {
    let base = small_config(10);
    let cases: Vec<(VggConfig, &str)> = vec![
        (
            VggConfig {
                width_multipliers: [f32::INFINITY, 1.0, 1.0, 1.0],
                ..base.clone()
            },
            "width_multipliers must be in (0, 16], got inf",
        ),
        (
            VggConfig {
                width_multipliers: [1.0, f32::NAN, 1.0, 1.0],
                ..base.clone()
            },
            "width_multipliers must be in (0, 16], got NaN",
        ),
        (
            VggConfig {
                width_multipliers: [1.0, 1.0, -2.0, 1.0],
                ..base.clone()
            },
            "width_multipliers must be in (0, 16], got -2",
        ),
        (
            VggConfig {
                num_blocks: [1, 1, 1000, 1],
                ..base.clone()
            },
            "num_blocks must be in [1, 128], got 1000",
        ),
        (
            VggConfig {
                num_blocks: [0, 1, 1, 1],
                ..base.clone()
            },
            "num_blocks must be in [1, 128], got 0",
        ),
        (
            VggConfig {
                strides: [1, 1, 4, 2, 2],
                ..base.clone()
            },
            "strides must be in [1, 2], got 4",
        ),
        (
            VggConfig {
                in_channels: 0,
                ..base.clone()
            },
            "in_channels must be in [1, 1024], got 0",
        ),
        (
            VggConfig {
                num_classes: 10_000_000,
                ..base.clone()
            },
            "num_classes must be in [1, 1048576], got 10000000",
        ),
    ];
    for (config, expected) in cases {
        let message = refusal(&config);
        assert!(
            message.contains(expected),
            "expected '{expected}' in: {message}"
        );
    }
}

#[test]
fn models_too_large_to_build_are_refused_with_their_size_and_the_limit() {
    // Every value in range, but 128 blocks per stage of up to 8192 channels.
    let huge = VggConfig {
        num_blocks: [128; 4],
        width_multipliers: [16.0; 4],
        ..VggConfig::preset("B1").unwrap()
    };
    let message = refusal(&huge);
    assert!(
        message.contains("bytes") && message.contains("limit of 17179869184 bytes"),
        "{message}"
    );
    // The presets themselves are far below the limits.
    for name in VggConfig::preset_names() {
        VggConfig::preset(name).unwrap().validate().unwrap();
    }
}

fn scales_of(config: &VggConfig, value: f32) -> Scales {
    let mut scales = Scales::ones(config);
    for b in &mut scales.blocks {
        b.conv.fill(value);
        b.one.fill(value);
    }
    scales
}

#[test]
fn scales_whose_grad_mults_are_not_finite_or_absurd_are_refused_naming_block_and_value() {
    let config = small_config(10);
    let model = build(&config, Mode::Target, 0);
    let sgd = RepOptimizerConfig::default();
    let err = prepare(&model, &scales_of(&config, 1e30), &sgd, 4e-5, 0)
        .expect_err("1e30 squared is no Grad Mult")
        .to_string();
    assert!(err.contains("stage0") && err.contains("1e30"), "{err}");

    // 200 squared is 40000, past the bound.
    let err = prepare(&model, &scales_of(&config, 200.0), &sgd, 4e-5, 0)
        .expect_err("a Grad Mult of 40000 is refused")
        .to_string();
    assert!(err.contains("stage0") && err.contains("200"), "{err}");

    // An identity scale that is not finite, made in memory rather than read from a file.
    let mut scales = Scales::ones(&config);
    let (i, block) = scales
        .blocks
        .iter_mut()
        .enumerate()
        .find(|(_, b)| b.identity.is_some())
        .unwrap();
    block.identity.as_mut().unwrap()[0] = f32::NAN;
    let name = config.blocks()[i].name.clone();
    let err = prepare(&model, &scales, &sgd, 4e-5, 0)
        .expect_err("a NaN identity scale is refused")
        .to_string();
    assert!(err.contains(&name) && err.contains("NaN"), "{err}");

    // Refused scales leave the model's kernels as they were.
    let fresh = build(&config, Mode::Target, 0);
    for ((_, a), (_, b)) in model.parameters().iter().zip(fresh.parameters().iter()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    }

    // To the power 1 (AdamW), 200 is within the bound.
    let adamw = RepOptimizerConfig {
        rule: UpdateRule::AdamW,
        ..sgd
    };
    prepare(&fresh, &scales_of(&config, 200.0), &adamw, 4e-5, 0).unwrap();
}
