//! `auto` on a real model: the tiny CLIP fixture prepared as `make prepare-model` prepares one
//! (its Winograd rewrite in `unet/winograd/`), measured on this machine's CPU provider (and
//! OpenVINO, when `deploy/setup.sh --openvino` installed it), its choice stored and read back, and
//! the tuned pipeline still meeting diffusers' references.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rapid_engine::autotune::{load_tuned, AutotuneOptions, Verdict, PARITY_LEVELS};
use rapid_engine::model_dir::UnetVariant;
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use support::{no_progress, repo, Cases};

const MODEL: &str = "tests/fixtures/models/tiny-sd-clip";

/// A copy of the tiny CLIP model (its parts linked) with the rewritten U-Net where preparation
/// puts it.
fn prepared_model(scratch: &Path) -> PathBuf {
    let model = scratch.join("tiny-sd-clip");
    std::fs::create_dir_all(model.join("unet/winograd")).unwrap();
    for entry in std::fs::read_dir(repo().join(MODEL)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "unet" {
            std::os::unix::fs::symlink(entry.path().canonicalize().unwrap(), model.join(entry.file_name())).unwrap();
        }
    }
    for file in ["model.onnx", "config.json"] {
        std::fs::copy(repo().join(MODEL).join("unet").join(file), model.join("unet").join(file)).unwrap();
        let rewritten = repo().join("tests/fixtures/models/tiny-sd-clip-winograd/unet").join(file);
        std::fs::copy(rewritten, model.join("unet/winograd").join(file)).unwrap();
    }
    model
}

fn runtime(cache: &Path) -> Runtime {
    Runtime::new(&RuntimeOptions {
        intra_threads: Some(2),
        session_cache: Some(cache.to_path_buf()),
        autotune: true,
        ..RuntimeOptions::default()
    })
    .expect("ONNX Runtime did not load: run `bash deploy/setup.sh`")
}

#[test]
fn auto_measures_every_candidate_keeps_the_image_and_stores_its_choice() {
    let scratch = tempfile::tempdir().unwrap();
    let model = prepared_model(scratch.path());
    let cache = scratch.path().join("cache");
    let runtime = runtime(&cache);
    let options = AutotuneOptions::default();

    let mut tuned = load_tuned(&runtime, &model, &options).unwrap();
    assert!(!tuned.from_cache);
    let trial = |part: &str, candidate: &str| {
        tuned
            .trials
            .iter()
            .find(|t| t.part == part && t.candidate == candidate)
            .cloned()
            .unwrap_or_else(|| panic!("{part} {candidate} was not measured: {:#?}", tuned.trials))
    };
    for (part, candidate) in [("unet", "cpu, plain graph"), ("vae_decoder", "cpu"), ("upscaler", "cpu, 128 px tiles")] {
        assert_eq!(trial(part, candidate).verdict, Verdict::Reference);
        assert!(trial(part, candidate).ms.is_some_and(|ms| ms > 0.0));
    }
    // The rewrite computes the same function; only rounding differs.
    let winograd = trial("unet", "cpu, winograd graph");
    assert!(winograd.levels.is_some_and(|l| l <= PARITY_LEVELS), "{winograd:?}");
    assert!(matches!(winograd.verdict, Verdict::Chosen | Verdict::Slower), "{winograd:?}");
    let whole = trial("upscaler", "cpu, whole image");
    assert!(whole.levels.is_some_and(|l| l <= 1.0), "tiles with 8 px of context match the whole image: {whole:?}");
    for t in &tuned.trials {
        if t.verdict == Verdict::Chosen {
            assert!(t.levels.is_some_and(|l| l <= PARITY_LEVELS), "chosen outside the bound: {t:?}");
        }
    }
    let chose_winograd = winograd.verdict == Verdict::Chosen;
    assert_eq!(tuned.choice.unet_variant == UnetVariant::Winograd, chose_winograd, "{:?}", tuned.choice);

    // Whatever it chose still meets diffusers' references for the plain model.
    let Cases { cases } = Cases::load();
    for case in cases.iter().filter(|c| c.model_dir == MODEL) {
        let generated = tuned.pipeline.generate(&case.request(), &mut no_progress()).unwrap();
        let worst = case.levels_off(&generated.image);
        assert!(worst <= 2.0, "{}: {} is {worst}/255 from diffusers (bound 2/255)", case.name, tuned.choice);
    }

    // The next start reads the choice instead of measuring.
    let stored = tuned.stored.clone().expect("a session cache keeps the choice");
    assert!(stored.starts_with(cache.join("autotune")), "{}", stored.display());
    let again = load_tuned(&runtime, &model, &options).unwrap();
    assert!(again.from_cache && again.trials.is_empty());
    assert_eq!(again.choice, tuned.choice);

    // A changed model file is another model: measured again.
    std::fs::write(model.join("unet/winograd/config.json"), std::fs::read(model.join("unet/config.json")).unwrap())
        .unwrap();
    assert!(!load_tuned(&runtime, &model, &options).unwrap().from_cache, "new files must not reuse the choice");
}

#[test]
fn a_spent_budget_keeps_the_reference_setup_and_says_what_it_skipped() {
    let scratch = tempfile::tempdir().unwrap();
    let model = prepared_model(scratch.path());
    let runtime = runtime(&scratch.path().join("cache"));
    let options = AutotuneOptions { budget: Duration::ZERO, ..AutotuneOptions::default() };
    let tuned = load_tuned(&runtime, &model, &options).unwrap();
    assert_eq!(tuned.choice.unet_variant, UnetVariant::Plain);
    assert_eq!(tuned.choice.upscale_tile, 128);
    let skipped: Vec<_> = tuned.trials.iter().filter(|t| t.verdict == Verdict::Skipped).collect();
    assert!(skipped.iter().any(|t| t.candidate == "cpu, winograd graph"), "{:#?}", tuned.trials);
    assert!(skipped.iter().any(|t| t.candidate == "cpu, whole image"), "{:#?}", tuned.trials);
}

#[test]
fn a_model_that_is_not_there_is_named() {
    let scratch = tempfile::tempdir().unwrap();
    let runtime = runtime(&scratch.path().join("cache"));
    let missing = scratch.path().join("no-model");
    let error = load_tuned(&runtime, &missing, &AutotuneOptions::default()).err().unwrap().to_string();
    assert!(error.contains("no-model"), "{error}");
}
