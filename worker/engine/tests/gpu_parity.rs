//! The diffusers reference cases of the fixture models (the hidden-model parity of
//! `pipeline.rs`) on the GPU providers: CUDA and TensorRT in fp32 within the CPU path's bound
//! (2/255), TensorRT with fp16 kernels within [`FP16_BOUND`]. They need an NVIDIA GPU and the
//! onnxruntime-gpu library (`bash deploy/setup.sh --gpu`, or `ORT_DYLIB_PATH`); where either is
//! missing each test says so on stderr and checks nothing. A test binary of its own: one process
//! loads one ONNX Runtime library. On the lent GPU machine: deploy/bench/gpu/gpu.sh, step `parity`.

mod support;

use std::path::{Path, PathBuf};

use rapid_engine::pipeline::Pipeline;
use rapid_engine::runtime::tensorrt::TensorRtOptions;
use rapid_engine::runtime::{ExecutionProvider, Providers, Runtime, RuntimeOptions};
use support::{no_progress, repo, Cases};

/// How far TensorRT's fp16 kernels may move a fixture image, in levels of 255. Stated before any
/// GPU ran it (the CPU's bf16 moved these models by up to 12 levels, `openvino.rs`); a GPU session
/// replaces it with a measured bound.
const FP16_BOUND: f32 = 12.0;

/// The GPU library, or `None` with the reason printed.
fn gpu_library() -> Option<PathBuf> {
    if !Path::new("/proc/driver/nvidia/gpus").is_dir() {
        eprintln!(
            "skipped: no NVIDIA GPU on this machine (no /proc/driver/nvidia/gpus); the GPU parity runs where one is"
        );
        return None;
    }
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/onnxruntime/gpu/libonnxruntime.so"));
    if !library.exists() {
        eprintln!("skipped: {} is missing; run `bash deploy/setup.sh --gpu` or set ORT_DYLIB_PATH", library.display());
        return None;
    }
    Some(library)
}

/// Every fixture case on `provider`, each image's distance from diffusers' within `bound`.
fn cases_within(provider: ExecutionProvider, tensorrt: TensorRtOptions, bound: f32) {
    let Some(library) = gpu_library() else { return };
    let runtime = Runtime::new(&RuntimeOptions {
        providers: Providers::all(provider),
        library: Some(library),
        tensorrt,
        ..RuntimeOptions::default()
    })
    .unwrap_or_else(|e| panic!("{provider} did not start on a machine with a GPU: {e}"));
    let Cases { cases } = Cases::load();
    let mut pipelines: Vec<(String, Pipeline)> = Vec::new();
    for case in &cases {
        if !pipelines.iter().any(|(dir, _)| *dir == case.model_dir) {
            let pipeline = Pipeline::load(&runtime, &repo().join(&case.model_dir)).unwrap();
            pipelines.push((case.model_dir.clone(), pipeline));
        }
        let pipeline = &mut pipelines.iter_mut().find(|(dir, _)| *dir == case.model_dir).unwrap().1;
        let generated = pipeline.generate(&case.request(), &mut no_progress()).unwrap();
        let worst = case.levels_off(&generated.image);
        eprintln!("{}: {provider} is {worst:.3}/255 from diffusers", case.name);
        assert!(worst <= bound, "{}: {provider} differs from diffusers by {worst}/255 (bound {bound}/255)", case.name);
    }
}

#[test]
fn cuda_meets_the_references_in_fp32() {
    cases_within(ExecutionProvider::Cuda, TensorRtOptions::default(), 2.0);
}

#[test]
fn tensorrt_meets_the_references_in_fp32() {
    cases_within(ExecutionProvider::TensorRt, TensorRtOptions { fp16: false, ..TensorRtOptions::default() }, 2.0);
}

#[test]
fn tensorrt_with_fp16_kernels_stays_within_its_stated_bound() {
    cases_within(ExecutionProvider::TensorRt, TensorRtOptions { fp16: true, ..TensorRtOptions::default() }, FP16_BOUND);
}
