//! What the TensorRT provider is given, checked where no GPU is needed: the optimisation profile
//! each part of a real model gets from the shapes its ONNX file declares. (Building and loading
//! engines needs a GPU: `deploy/bench/gpu/gpu.sh`.)

mod support;

use rapid_engine::runtime::tensorrt::{ShapeLimits, TensorRtOptions};
use rapid_engine::runtime::{Part, Runtime, RuntimeOptions};
use support::repo;

#[test]
fn every_dynamic_part_of_a_real_model_gets_a_profile_over_the_configured_sizes() {
    let shapes = ShapeLimits { min_side: 32, opt_side: 64, max_side: 128, max_batch: 4 };
    let runtime = Runtime::new(&RuntimeOptions {
        intra_threads: Some(1),
        tensorrt: TensorRtOptions { shapes: Some(shapes), ..TensorRtOptions::default() },
        ..RuntimeOptions::default()
    })
    .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let model = repo().join("tests/fixtures/models/tiny-sd-clip");
    let profile = |part: Part, file: &str| {
        runtime.tensorrt_profile(&model.join(file), part).unwrap().unwrap_or_else(|| panic!("{file}: no profile"))
    };
    // The tiny model: VAE factor 2 (two levels), a 77-token CLIP, hidden width 32.
    let unet = profile(Part::Unet, "unet/model.onnx");
    assert!(unet.min.contains("sample:1x4x16x16"), "{unet:?}");
    assert!(unet.opt.contains("sample:2x4x32x32"), "{unet:?}");
    assert!(unet.max.contains("sample:8x4x64x64") && unet.max.contains("encoder_hidden_states:8x77x32"), "{unet:?}");
    let vae = profile(Part::VaeDecoder, "vae_decoder/model.onnx");
    assert!(vae.max.contains("x4x64x64") && vae.max.starts_with("latent_sample:4x"), "{vae:?}");
    let upscaler = profile(Part::Upscaler, "upscaler/model.onnx");
    assert!(upscaler.min.ends_with("1x3x32x32") && upscaler.max.ends_with("1x3x128x128"), "{upscaler:?}");
}

#[test]
fn without_limits_tensorrt_chooses_its_own_shapes() {
    let runtime = Runtime::new(&RuntimeOptions { intra_threads: Some(1), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let graph = repo().join("tests/fixtures/models/tiny-sd-clip/unet/model.onnx");
    assert_eq!(runtime.tensorrt_profile(&graph, Part::Unet).unwrap(), None);
}
