//! The project's `ai.rapid::WinogradConv` operator inside a real U-Net: the tiny fixture U-Net
//! (`tests/fixtures/models/tiny-sd-clip`) against its copy rewritten by
//! `deploy/export/winograd.py --min-size 1` (`tiny-sd-clip-winograd`, all 19 of its 3×3 convolutions
//! custom nodes), loaded through the engine's own `Runtime`, which registers the operator; and the
//! whole pipeline on the rewritten model against diffusers' references for the plain one.

mod support;

use rapid_engine::parts::unet::Unet;
use rapid_engine::pipeline::Pipeline;
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use support::{no_progress, normal, predict, repo, unet_path, Cases};

#[test]
fn unet_with_winograd_convolutions_matches_the_plain_graph() {
    let runtime = Runtime::new(&RuntimeOptions { intra_threads: Some(2), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let mut plain = Unet::load(&runtime, &unet_path("tiny-sd-clip"), 2).unwrap();
    let mut rewritten = Unet::load(&runtime, &unet_path("tiny-sd-clip-winograd"), 2).unwrap();
    // The fixture's own 16×16 latent (feature maps 16 and 8, whole tiles), a 12×12 one (12 and 6:
    // the 6×6 map ends in half a tile) and a batch of 3 on a 10×14 latent.
    for (batch, height, width) in [(2, 16, 16), (2, 12, 12), (3, 10, 14)] {
        let sample = normal((batch, 4, height, width), 1);
        let hidden = normal((batch, 77, 32), 2);
        let expected = predict(&mut plain, &sample, &hidden);
        let got = predict(&mut rewritten, &sample, &hidden);
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = (&got - &expected).iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(
            diff < 1e-4 * scale.max(1.0),
            "batch {batch}, {height}×{width} latent: max abs diff {diff} at scale {scale}"
        );
    }
}

/// The rewrite changes rounding only: every diffusers reference case of the plain tiny CLIP model
/// is met by the rewritten one within the bound the plain model meets (2/255, `pipeline.rs`).
#[test]
fn pipeline_on_the_rewritten_model_meets_the_diffusers_references() {
    let runtime = Runtime::new(&RuntimeOptions { intra_threads: Some(2), ..RuntimeOptions::default() })
        .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let mut pipeline = Pipeline::load(&runtime, &repo().join("tests/fixtures/models/tiny-sd-clip-winograd")).unwrap();
    let Cases { cases } = Cases::load();
    let plain: Vec<_> = cases.iter().filter(|c| c.model_dir == "tests/fixtures/models/tiny-sd-clip").collect();
    assert!(!plain.is_empty(), "no reference case uses tiny-sd-clip");
    for case in plain {
        let generated = pipeline.generate(&case.request(), &mut no_progress()).unwrap();
        let worst = case.levels_off(&generated.image);
        eprintln!("{}: max |diff| {worst:.4}/255 with Winograd convolutions", case.name);
        assert!(worst <= 2.0, "{}: differs from diffusers by {worst}/255 (bound 2/255)", case.name);
    }
}

/// `RuntimeOptions::profile` creates its folder, and each session writes ONNX Runtime's profile
/// there when it ends, with the custom nodes in it (what `deploy/bench/unet-ops/unet_ops.py` reads).
#[test]
fn a_profiled_session_writes_its_nodes_into_a_new_folder() {
    let scratch = tempfile::tempdir().unwrap();
    let folder = scratch.path().join("not/yet/there");
    let options = RuntimeOptions { intra_threads: Some(2), profile: Some(folder.clone()), ..RuntimeOptions::default() };
    let runtime = Runtime::new(&options).expect("ONNX Runtime did not load: run `bash deploy/setup.sh`");
    let mut unet = Unet::load(&runtime, &unet_path("tiny-sd-clip-winograd"), 2).unwrap();
    predict(&mut unet, &normal((2, 4, 16, 16), 1), &normal((2, 77, 32), 2));
    drop(unet);
    let profiles: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(profiles.len(), 1, "one session, one profile: {profiles:?}");
    let name = profiles[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("unet_") && name.ends_with(".json"), "{name}");
    let text = std::fs::read_to_string(&profiles[0]).unwrap();
    assert!(text.contains(r#""op_name" : "WinogradConv""#), "no WinogradConv node in {name}");
}
