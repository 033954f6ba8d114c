//! Cross-request batching: images denoised together in one U-Net call per step must equal what
//! each makes alone, and one image's bad input or cancellation must not touch the others.

use std::ops::ControlFlow;
use std::path::Path;

use rapid_engine::error::EngineError;
use rapid_engine::pipeline::{Generated, GenerationRequest, Pipeline};
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use rapid_engine::samplers::SamplerKind;

fn pipeline() -> Pipeline {
    let runtime = Runtime::new(&RuntimeOptions { intra_threads: Some(2), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny-sd-clip");
    Pipeline::load(&runtime, &dir).unwrap()
}

/// Three different prompts, seeds and guidance weights on the ancestral sampler, which draws fresh
/// noise every step: a batch that mixed up rows, weights or random streams would show here.
fn requests() -> Vec<GenerationRequest> {
    [("a red silk dress", 1, 7.5), ("a blue denim jacket", 2, 5.0), ("红色连衣裙", 3, 9.0)]
        .into_iter()
        .map(|(prompt, seed, guidance)| {
            let mut request = GenerationRequest::new(prompt);
            request.seed = seed;
            request.guidance_scale = guidance;
            request.sampler = SamplerKind::EulerAncestral;
            request.steps = 6;
            request.upscale = false;
            request
        })
        .collect()
}

fn alone(pipeline: &mut Pipeline, request: &GenerationRequest) -> Generated {
    pipeline.generate(request, &mut |_| ControlFlow::Continue(())).unwrap()
}

/// Batched GEMMs may sum in another order than single ones; anything beyond float noise is a bug.
fn assert_same_image(batched: &Generated, single: &Generated, what: &str) {
    let worst = batched.image.iter().zip(&single.image).map(|(a, b)| (a - b).abs()).fold(0.0_f32, f32::max);
    assert!(worst < 1e-4, "{what}: batched image differs from the single run by {worst}");
}

#[test]
fn batched_images_equal_their_single_runs() {
    let mut pipeline = pipeline();
    let requests = requests();
    let singles: Vec<Generated> = requests.iter().map(|r| alone(&mut pipeline, r)).collect();
    let mut steps_seen = vec![0; requests.len()];
    let batched = pipeline.generate_batch(&requests, &mut |index, progress| {
        steps_seen[index] = progress.step;
        ControlFlow::Continue(())
    });
    assert_eq!(batched.len(), 3);
    for (index, (batched, single)) in batched.into_iter().zip(&singles).enumerate() {
        let batched = batched.unwrap();
        assert_eq!(batched.batch_size, 3, "request {index} was not denoised in the batch");
        assert_eq!(single.batch_size, 1);
        assert_same_image(&batched, single, &format!("request {index}"));
    }
    assert_eq!(steps_seen, vec![6, 6, 6], "every member reports every step");
    assert_ne!(singles[0].image, singles[1].image, "different prompts and seeds must differ");
}

#[test]
fn a_cancelled_member_leaves_the_others_running() {
    let mut pipeline = pipeline();
    let requests = requests();
    let singles: Vec<Generated> = requests.iter().map(|r| alone(&mut pipeline, r)).collect();
    let mut last_step_of_cancelled = 0;
    let batched = pipeline.generate_batch(&requests, &mut |index, progress| {
        if index == 1 {
            last_step_of_cancelled = progress.step;
            if progress.step == 2 {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    assert_eq!(last_step_of_cancelled, 2, "a cancelled member is not asked again");
    assert!(matches!(batched[1], Err(EngineError::Cancelled)), "{:?}", batched[1].as_ref().err());
    assert_same_image(batched[0].as_ref().unwrap(), &singles[0], "request 0 after its neighbour left");
    assert_same_image(batched[2].as_ref().unwrap(), &singles[2], "request 2 after its neighbour left");
}

#[test]
fn a_bad_or_incompatible_member_fails_alone() {
    let mut pipeline = pipeline();
    let mut requests = requests();
    requests[1].width = Some(33);
    requests.push(GenerationRequest { steps: 4, ..requests[0].clone() });
    let results = pipeline.generate_batch(&requests, &mut |_, _| ControlFlow::Continue(()));
    assert!(
        matches!(&results[1], Err(EngineError::InvalidInput { field: "width", .. })),
        "{:?}",
        results[1].as_ref().err()
    );
    match &results[3] {
        Err(e @ EngineError::InvalidInput { field: "batch", .. }) => {
            assert!(e.to_string().contains("own batch"), "the error says what to do: {e}")
        }
        other => panic!("a request with other steps must be refused from the batch, got {:?}", other.as_ref().err()),
    }
    for index in [0, 2] {
        let generated = results[index].as_ref().unwrap();
        assert_eq!(generated.batch_size, 2, "request {index}: the good members still share the calls");
    }
}
