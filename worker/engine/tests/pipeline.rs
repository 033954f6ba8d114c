//! Pipeline parity with diffusers, upscaler tiling, reproducibility and input checks, on the tiny
//! models `tests/fixtures/make_models.py` exports (references come from diffusers in PyTorch).

mod support;

use std::collections::HashMap;
use std::ops::ControlFlow;

use ndarray::{Array3, Array4};
use rapid_engine::error::EngineError;
use rapid_engine::marking::{OutputFormat, Provenance};
use rapid_engine::output::{mark_and_encode, MarkOptions};
use rapid_engine::parts::upscaler::{Tiling, Upscaler};
use rapid_engine::pipeline::{GenerationRequest, Pipeline};
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use support::{no_progress, npy, repo, Cases};

fn runtime() -> Runtime {
    // A fixed thread count keeps results reproducible across machines with other core counts.
    Runtime::new(&RuntimeOptions { intra_threads: Some(2), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`")
}

/// The acceptance bound: within 2/255 per pixel of diffusers (PyTorch, fp32), before marking.
#[test]
fn images_match_diffusers_within_two_levels() {
    let Cases { cases } = Cases::load();
    assert!(cases.len() >= 4, "expected PNDM and DPM++ cases for both models");
    assert_cases_match_diffusers(&cases);
}

/// The bundled trained model (models/rapid-mini, with knowledge entities) against diffusers on its
/// PyTorch weights (training/rapid_training/reference.py), in English and Chinese.
#[test]
fn trained_model_matches_diffusers_within_two_levels() {
    let Cases { cases } = Cases::load_from("tests/fixtures/trained/cases.json");
    assert!(cases.len() >= 3, "expected English, Chinese and menu cases");
    assert_cases_match_diffusers(&cases);
}

fn assert_cases_match_diffusers(cases: &[support::Case]) {
    let runtime = runtime();
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    let mut report = Vec::new();
    for case in cases {
        let pipeline = pipelines
            .entry(case.model_dir.clone())
            .or_insert_with(|| Pipeline::load(&runtime, &repo().join(&case.model_dir)).unwrap());
        let generated = pipeline.generate(&case.request(), &mut no_progress()).unwrap();
        let worst = case.levels_off(&generated.image);
        report.push(format!("{}: max |diff| {worst:.4}/255", case.name));
        assert!(worst <= 2.0, "{}: differs from diffusers by {worst}/255 (bound 2/255)", case.name);
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn tiled_upscaling_matches_untiled_within_one_level() {
    let runtime = runtime();
    let path = repo().join("tests/fixtures/models/tiny-sd-clip/upscaler/model.onnx");
    let mut upscaler = Upscaler::load(&runtime, &path).unwrap();
    let input: Array4<f32> = npy(&repo().join("tests/fixtures/pipeline/upscaler_input_32x32.npy"));
    let input = input.index_axis_move(ndarray::Axis(0), 0);
    let whole = upscaler.upscale(input.view(), Tiling { tile: 0, overlap: 0 }).unwrap();

    let reference: Array4<f32> = npy(&repo().join("tests/fixtures/pipeline/upscaler_output_128x128.npy"));
    let reference = reference.index_axis_move(ndarray::Axis(0), 0);
    let vs_torch = max_abs_diff(&whole, &reference);
    assert!(vs_torch < 1e-4, "untiled ONNX output differs from PyTorch by {vs_torch}");

    for tiling in [Tiling { tile: 8, overlap: 16 }, Tiling { tile: 12, overlap: 16 }, Tiling::default()] {
        let tiled = upscaler.upscale(input.view(), tiling).unwrap();
        let diff = max_abs_diff(&tiled, &whole) * 255.0;
        assert!(diff <= 1.0, "{tiling:?}: tiled differs from untiled by {diff}/255");
    }
}

fn max_abs_diff(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn render(pipeline: &mut Pipeline, seed: u64) -> Vec<u8> {
    let mut request = GenerationRequest::new("a red silk dress");
    request.seed = seed;
    request.steps = 4;
    let generated = pipeline.generate(&request, &mut no_progress()).unwrap();
    let provenance = Provenance {
        model: "tiny-sd-clip".into(),
        seed,
        steps: 4,
        sampler: "pndm".into(),
        prompt: request.prompt.clone(),
        negative_prompt: String::new(),
        extra: vec![],
    };
    mark_and_encode(&generated.image, OutputFormat::Png, &MarkOptions::default(), &provenance).unwrap().bytes
}

#[test]
fn same_seed_gives_identical_png_bytes() {
    let runtime = runtime();
    let mut pipeline = Pipeline::load(&runtime, &repo().join("tests/fixtures/models/tiny-sd-clip")).unwrap();
    let first = render(&mut pipeline, 42);
    let second = render(&mut pipeline, 42);
    assert!(first == second, "two runs with seed 42 gave different PNGs");
    let other = render(&mut pipeline, 43);
    assert!(first != other, "seeds 42 and 43 gave the same PNG: the seed is not used");
}

#[test]
fn repeated_prompts_reuse_their_encoding_and_nothing_else() {
    let runtime = runtime();
    let mut pipeline = Pipeline::load(&runtime, &repo().join("tests/fixtures/models/tiny-sd-clip")).unwrap();
    let mut request = GenerationRequest::new("a red silk dress");
    request.steps = 2;
    request.upscale = false;
    let first = pipeline.generate(&request, &mut no_progress()).unwrap();
    assert!(first.timings.text_encoder > 0.0);
    request.seed = 5;
    let again = pipeline.generate(&request, &mut no_progress()).unwrap();
    assert_eq!(again.timings.text_encoder, 0.0, "the second image of a prompt skips the text encoder");
    request.negative_prompt = "blurry".into();
    let other_negative = pipeline.generate(&request, &mut no_progress()).unwrap();
    assert!(other_negative.timings.text_encoder > 0.0, "a new negative prompt is a new encoding");
    assert_ne!(again.image, other_negative.image, "the cache keys on the negative prompt too");
    let fresh = Pipeline::load(&runtime, &repo().join("tests/fixtures/models/tiny-sd-clip"))
        .unwrap()
        .generate(&request, &mut no_progress())
        .unwrap();
    assert_eq!(fresh.image, other_negative.image, "a cached encoding gives the same image as a fresh one");
}

#[test]
fn warming_up_changes_no_image_and_caches_no_prompt() {
    let runtime = runtime();
    let dir = repo().join("tests/fixtures/models/tiny-sd-clip");
    let mut warmed = Pipeline::load(&runtime, &dir).unwrap();
    let mut request = GenerationRequest::new("a red silk dress");
    request.steps = 3;
    // Not the model's default size (32 px): the warm-up must follow the request.
    (request.width, request.height) = (Some(64), Some(64));
    warmed.warm_up(&request).unwrap();
    let after_warm_up = warmed.generate(&request, &mut no_progress()).unwrap();
    assert!(after_warm_up.upscaled);
    let cold = Pipeline::load(&runtime, &dir).unwrap().generate(&request, &mut no_progress()).unwrap();
    assert_eq!(after_warm_up.image, cold.image, "a warmed-up pipeline must give the image a cold one gives");

    // The warm-up's own prompts (both empty) must not sit in the cache.
    let empty = GenerationRequest { steps: 1, upscale: false, ..GenerationRequest::new("") };
    let generated = warmed.generate(&empty, &mut no_progress()).unwrap();
    assert!(generated.timings.text_encoder > 0.0, "the warm-up left its prompts in the cache");
}

#[test]
fn cancelling_stops_between_steps() {
    let runtime = runtime();
    let mut pipeline = Pipeline::load(&runtime, &repo().join("tests/fixtures/models/tiny-sd-clip")).unwrap();
    let mut request = GenerationRequest::new("a dress");
    request.steps = 10;
    let mut seen = 0;
    let result = pipeline.generate(&request, &mut |p| {
        seen = p.step;
        if p.step == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
    assert_eq!(seen, 3, "no step may run after cancellation");
}

type Mutation = Box<dyn Fn(&mut GenerationRequest)>;

#[test]
fn bad_requests_name_the_field() {
    let runtime = runtime();
    let mut pipeline = Pipeline::load(&runtime, &repo().join("tests/fixtures/models/tiny-sd-bert")).unwrap();
    let cases: [(&str, Mutation); 5] = [
        ("steps", Box::new(|r| r.steps = 0)),
        ("steps", Box::new(|r| r.steps = 1001)),
        ("guidance_scale", Box::new(|r| r.guidance_scale = f32::NAN)),
        ("width", Box::new(|r| r.width = Some(33))),
        ("init_latents", Box::new(|r| r.init_latents = Some(Array4::zeros((1, 3, 8, 8))))),
    ];
    for (field, mutate) in cases {
        let mut request = GenerationRequest::new("红色连衣裙");
        mutate(&mut request);
        let error = pipeline.generate(&request, &mut no_progress()).unwrap_err();
        assert!(
            matches!(&error, EngineError::InvalidInput { field: f, .. } if *f == field),
            "expected an error naming `{field}`, got: {error}"
        );
    }
}
