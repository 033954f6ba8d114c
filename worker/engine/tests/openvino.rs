//! The OpenVINO execution provider against the same diffusers references the CPU provider meets
//! (`pipeline.rs`). A binary of its own because one process can load only one ONNX Runtime library,
//! and this one is the `onnxruntime-openvino` wheel's (`bash deploy/setup.sh --openvino`, which
//! `make test` runs).

mod support;

use ndarray::Array4;
use rapid_engine::error::Result;
use rapid_engine::parts::upscaler::{Tiling, Upscaler};
use rapid_engine::pipeline::Pipeline;
use rapid_engine::runtime::{cpu_has_bf16, ExecutionProvider, Part, Precision, Providers, Runtime, RuntimeOptions};
use support::{no_progress, npy, repo, Cases};

fn openvino_in(providers: Providers, precision: Precision) -> Result<Runtime> {
    let options = RuntimeOptions {
        providers,
        library: Some(repo().join(".cache/onnxruntime/openvino/libonnxruntime.so")),
        intra_threads: Some(2),
        session_cache: None,
        precision,
        profile: None,
        autotune: false,
        tensorrt: Default::default(),
    };
    Runtime::new(&options)
}

fn openvino(providers: Providers) -> Runtime {
    openvino_in(providers, Precision::Fp32)
        .expect("the OpenVINO build of ONNX Runtime did not load: run `bash deploy/setup.sh --openvino`")
}

/// How far bf16 images may be from diffusers' fp32 references, in levels of 255: the tiny models
/// measured 1.7–7.9 on a Xeon with AMX; 12 leaves room for AVX512-BF16's rounding on other CPUs.
const BF16_BOUND: f32 = 12.0;

/// One process, one library: every check shares it, so they are one test.
#[test]
fn openvino_meets_the_diffusers_references_like_the_cpu_provider() {
    let runtime = openvino(Providers::all(ExecutionProvider::OpenVino));
    // The worker's measured mix: everything on the CPU provider of the same library but ESRGAN.
    let mixed = openvino(Providers::all(ExecutionProvider::Cpu).with(Part::Upscaler, ExecutionProvider::OpenVino));

    // Whole pipelines: within 2/255 of diffusers, the CPU provider's bound.
    let Cases { cases } = Cases::load();
    for (runtime, providers) in [(&runtime, "openvino"), (&mixed, "cpu + openvino upscaler")] {
        for case in &cases {
            let mut pipeline = Pipeline::load(runtime, &repo().join(&case.model_dir)).unwrap();
            let generated = pipeline.generate(&case.request(), &mut no_progress()).unwrap();
            let worst = case.levels_off(&generated.image);
            eprintln!("{}: max |diff| {worst:.4}/255 on {providers}", case.name);
            assert!(worst <= 2.0, "{}: {providers} differs from diffusers by {worst}/255 (bound 2/255)", case.name);
        }
    }

    // bf16, where the CPU has it: the same pipelines within a looser bound of diffusers' fp32
    // references (bf16 keeps 8 significant bits), and not the fp32 images, which shows the hint
    // reached OpenVINO. Elsewhere the runtime refuses bf16, naming the instructions it lacks.
    let bf16 = openvino_in(Providers::all(ExecutionProvider::OpenVino), Precision::Bf16);
    if cpu_has_bf16() {
        let bf16 = bf16.expect("bf16 on a CPU with avx512_bf16 or amx_bf16");
        for case in &cases {
            let in_bf16 = Pipeline::load(&bf16, &repo().join(&case.model_dir))
                .unwrap()
                .generate(&case.request(), &mut no_progress())
                .unwrap();
            let in_fp32 = Pipeline::load(&runtime, &repo().join(&case.model_dir))
                .unwrap()
                .generate(&case.request(), &mut no_progress())
                .unwrap();
            let worst = case.levels_off(&in_bf16.image);
            eprintln!("{}: max |diff| {worst:.4}/255 in bf16", case.name);
            assert!(
                worst <= BF16_BOUND,
                "{}: bf16 differs from diffusers by {worst}/255 (bound {BF16_BOUND}/255)",
                case.name
            );
            assert_ne!(in_bf16.image, in_fp32.image, "{}: bf16 gave the fp32 image; the hint did not apply", case.name);
        }
    } else {
        let error = bf16.err().expect("bf16 must be refused on a CPU without bf16 instructions").to_string();
        assert!(error.contains("avx512_bf16 or amx_bf16"), "{error}");
    }

    // ESRGAN, where OpenVINO is faster on CPU: whole and tiled, against PyTorch.
    let path = repo().join("tests/fixtures/models/tiny-sd-clip/upscaler/model.onnx");
    let mut upscaler = Upscaler::load(&mixed, &path).unwrap();
    let input: Array4<f32> = npy(&repo().join("tests/fixtures/pipeline/upscaler_input_32x32.npy"));
    let input = input.index_axis_move(ndarray::Axis(0), 0);
    let reference: Array4<f32> = npy(&repo().join("tests/fixtures/pipeline/upscaler_output_128x128.npy"));
    let reference = reference.index_axis_move(ndarray::Axis(0), 0);
    for tiling in [Tiling { tile: 0, overlap: 0 }, Tiling { tile: 12, overlap: 16 }] {
        let upscaled = upscaler.upscale(input.view(), tiling).unwrap();
        let worst = upscaled.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) * 255.0;
        assert!(worst <= 1.0, "{tiling:?}: OpenVINO's upscale differs from PyTorch by {worst}/255");
    }

    // A U-Net rewritten with ai.rapid::WinogradConv runs on this library's CPU provider, and on
    // OpenVINO is refused with the way out named.
    let winograd = repo().join("tests/fixtures/models/tiny-sd-clip-winograd/unet/model.onnx");
    rapid_engine::parts::unet::Unet::load(&mixed, &winograd, 2).expect("the CPU provider runs ai.rapid operators");
    let error =
        rapid_engine::parts::unet::Unet::load(&runtime, &winograd, 2).err().expect("OpenVINO must refuse").to_string();
    assert!(error.contains("run this part on the `cpu` provider"), "{error}");
}
