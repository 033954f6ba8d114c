//! Samplers against diffusers: golden trajectories, one conformance suite, and the API's errors.
//!
//! Run with `cargo test -p rapid-engine --test samplers`. The fixtures in
//! `tests/fixtures/samplers/` come from `make_sampler_fixtures.py` beside them (diffusers 0.42.1);
//! each holds a scheduler config, a step count, and a full denoising run recorded from diffusers.

use std::path::{Path, PathBuf};

use ndarray::{Array4, ArrayView4};
use rapid_engine::samplers::{build, Sampler, SamplerError, SamplerKind, SamplerOptions, SchedulerConfig, MAX_STEPS};
use serde::Deserialize;

/// Tolerance against diffusers, per value: |ours - theirs| <= REL_TOL * max(|theirs|, FLOOR).
const REL_TOL: f32 = 1e-5;
/// The floor is the latents' own scale: Stable Diffusion latents have unit standard deviation, so
/// an error is small or large relative to 1, not relative to a value that happens to pass near 0.
/// It cannot be much smaller, for a reason outside this engine: torch's float32 `sqrt`, `exp` and
/// `log` are not correctly rounded (torch 2.15's CPU `sqrt` differs from IEEE in ~20% of inputs),
/// so coefficients differ from ours by an ulp, and in the first steps, where Euler's latents reach
/// |x| ~ 30 and DPM++'s predicted x0 is sample / 0.07, one ulp is ~3e-6 absolute. That absolute
/// error stays in the trajectory while the values shrink towards 0 (worst seen: 5e-6 absolute on
/// values below 1, 4e-6 relative above 1). Every formula's order of operations is diffusers' own:
/// fed torch's scalars, the same f32 formulas reproduce diffusers' steps bit for bit.
const FLOOR: f32 = 1.0;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/samplers")
}

#[derive(Deserialize)]
struct Fixture {
    case: String,
    sampler: String,
    scheduler_config: serde_json::Value,
    steps: usize,
    karras_sigmas: Option<bool>,
    shape: [usize; 4],
    timesteps: Vec<f32>,
    init_noise_sigma: f32,
    model_input_scales: Vec<f32>,
    initial_sample: Vec<f32>,
    model_outputs: Vec<Vec<f32>>,
    noise: Vec<Vec<f32>>,
    samples: Vec<Vec<f32>>,
}

fn load_fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/samplers exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// Largest |ours - theirs| / max(|theirs|, FLOOR), asserting it stays within REL_TOL.
fn compare(what: &str, ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths differ");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        let err = (a - b).abs() / b.abs().max(FLOOR);
        assert!(err <= REL_TOL, "{what}[{i}]: ours {a}, diffusers {b}, relative error {err:e} > {REL_TOL:e}");
        worst = worst.max(err);
    }
    worst
}

/// Runs one fixture through our sampler; returns the worst relative error over the trajectory.
fn replay(fixture: &Fixture) -> f32 {
    let case = &fixture.case;
    let kind: SamplerKind = fixture.sampler.parse().unwrap();
    let config: SchedulerConfig =
        serde_json::from_value(fixture.scheduler_config.clone()).unwrap_or_else(|e| panic!("{case}: config: {e}"));
    let options = SamplerOptions { karras_sigmas: fixture.karras_sigmas };
    let mut sampler = build(kind, &config, fixture.steps, &options).unwrap();

    let mut worst = compare(&format!("{case} timesteps"), sampler.timesteps(), &fixture.timesteps);
    worst = worst.max(compare(
        &format!("{case} init_noise_sigma"),
        &[sampler.init_noise_sigma()],
        &[fixture.init_noise_sigma],
    ));
    let calls = sampler.timesteps().len();
    let scales: Vec<f32> = (0..calls).map(|c| sampler.model_input_scale(c)).collect();
    worst = worst.max(compare(&format!("{case} model_input_scale"), &scales, &fixture.model_input_scales));

    let mut sample = Array4::from_shape_vec(fixture.shape, fixture.initial_sample.clone()).unwrap();
    let mut draws = fixture.noise.iter();
    for call in 0..calls {
        let model_output = ArrayView4::from_shape(fixture.shape, &fixture.model_outputs[call]).unwrap();
        let mut noise =
            |buffer: &mut [f32]| buffer.copy_from_slice(draws.next().expect("sampler drew more noise than diffusers"));
        sampler.step(model_output, call, sample.view_mut(), &mut noise);
        worst = worst.max(compare(
            &format!("{case} sample after call {call}"),
            sample.as_slice().unwrap(),
            &fixture.samples[call],
        ));
    }
    assert!(draws.next().is_none(), "{case}: sampler drew less noise than diffusers");
    worst
}

#[test]
fn every_sampler_reproduces_diffusers_trajectories() {
    let fixtures = load_fixtures();
    let mut worst_by_kind = Vec::new();
    for kind in SamplerKind::ALL {
        let cases: Vec<&Fixture> = fixtures.iter().filter(|f| f.sampler == kind.name()).collect();
        assert!(!cases.is_empty(), "no fixture for {kind}");
        let worst = cases.iter().map(|f| replay(f)).fold(0.0f32, f32::max);
        worst_by_kind.push(format!("{kind}: {worst:.1e} over {} cases", cases.len()));
    }
    eprintln!("worst relative error: {}", worst_by_kind.join("; "));
}

/// Properties every sampler has whatever the config (diffusers' `tests/schedulers` common suite).
#[test]
fn conformance_suite() {
    let configs = [
        sd15(),
        config(r#"{"prediction_type": "v_prediction", "timestep_spacing": "trailing", "skip_prk_steps": true}"#),
        config(r#"{"timestep_spacing": "linspace", "beta_schedule": "squaredcos_cap_v2"}"#),
        config(r#"{"timestep_spacing": "leading", "steps_offset": 0, "use_karras_sigmas": true}"#),
    ];
    for kind in SamplerKind::ALL {
        for (c, config) in configs.iter().enumerate() {
            for steps in [1, 2, 3, 4, 7, 25, 50, 61, 999] {
                let what = format!("{kind}, config {c}, {steps} steps");
                let mut sampler = match build(kind, config, steps, &SamplerOptions::default()) {
                    Ok(sampler) => sampler,
                    // diffusers cannot run PNDM's Runge-Kutta warm-up in fewer than 4 steps.
                    Err(SamplerError::TooFewSteps { .. })
                        if kind == SamplerKind::Pndm && !config.skip_prk_steps && steps < 4 =>
                    {
                        continue
                    }
                    Err(e) => panic!("{what}: {e}"),
                };
                check_schedule(&what, sampler.as_ref(), config, steps);
                let first = denoise(sampler.as_mut());
                assert!(first.iter().all(|v| v.is_finite()), "{what}: non-finite output");
                // A fresh run from the same inputs gives the same numbers: no state leaks.
                let mut again = build(kind, config, steps, &SamplerOptions::default()).unwrap();
                assert_eq!(first, denoise(again.as_mut()), "{what}: not deterministic");
            }
        }
    }
}

fn check_schedule(what: &str, sampler: &dyn Sampler, config: &SchedulerConfig, steps: usize) {
    let timesteps = sampler.timesteps();
    assert!(timesteps.len() >= steps.min(2), "{what}: {} calls", timesteps.len());
    assert!(timesteps.windows(2).all(|w| w[0] >= w[1]), "{what}: timesteps not descending: {timesteps:?}");
    let last = (config.num_train_timesteps + config.steps_offset) as f32;
    assert!(
        timesteps.iter().all(|&t| (0.0..=last).contains(&t)),
        "{what}: timestep outside the training schedule: {timesteps:?}"
    );
    // Not always >= 1: diffusers' Euler with one "linspace" step starts at timestep 0.
    assert!(sampler.init_noise_sigma() > 0.0, "{what}: init_noise_sigma");
    for call in 0..timesteps.len() {
        let scale = sampler.model_input_scale(call);
        assert!(scale > 0.0 && scale <= 1.0, "{what}: scale {scale} at call {call}");
    }
}

/// A full run from pseudo-random latents with a stand-in model; returns the final latents.
fn denoise(sampler: &mut dyn Sampler) -> Vec<f32> {
    let shape = (1, 4, 3, 5);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let sigma = sampler.init_noise_sigma();
    let mut sample = Array4::from_shape_fn(shape, |_| next() * sigma);
    for call in 0..sampler.timesteps().len() {
        let scale = sampler.model_input_scale(call);
        let model_output = sample.mapv(|x| 0.8 * x * scale + 0.1);
        let mut noise = |buffer: &mut [f32]| buffer.iter_mut().for_each(|v| *v = next());
        sampler.step(model_output.view(), call, sample.view_mut(), &mut noise);
    }
    sample.into_raw_vec_and_offset().0
}

fn config(json: &str) -> SchedulerConfig {
    serde_json::from_str(json).unwrap()
}

fn sd15() -> SchedulerConfig {
    config(SD15_JSON)
}

/// Stable Diffusion 1.5's `scheduler/scheduler_config.json`.
const SD15_JSON: &str = r#"{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}"#;

fn write_config(json: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler_config.json");
    std::fs::write(&path, json).unwrap();
    (dir, path)
}

#[test]
fn real_config_file_parses_with_unknown_fields() {
    let (_dir, path) = write_config(SD15_JSON);
    let config = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(config.steps_offset, 1);
    assert_eq!(config.beta_end, 0.012);
}

#[test]
fn bad_value_of_a_known_field_names_file_and_field() {
    let cases = [
        (r#"{"beta_schedule": "cosine"}"#, "beta_schedule", "squaredcos_cap_v2"),
        (r#"{"prediction_type": "noise"}"#, "prediction_type", "v_prediction"),
        (r#"{"timestep_spacing": 3}"#, "timestep_spacing", "invalid type"),
        (r#"{"num_train_timesteps": -5}"#, "num_train_timesteps", "invalid value"),
        (r#"{"beta_end": 1.5}"#, "beta_end", "got 1.5"),
        (r#"{"steps_offset": 1000}"#, "steps_offset", "got 1000"),
    ];
    for (json, field, detail) in cases {
        let (_dir, path) = write_config(json);
        let err = SchedulerConfig::from_file(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(&err, SamplerError::ConfigField { field: f, .. } if f == field), "{json}: {message}");
        assert!(message.contains(&format!("`{field}`")), "{message}");
        assert!(message.contains(detail), "{json}: {message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[test]
fn unreadable_or_malformed_file_names_the_file() {
    let missing = Path::new("/nonexistent/scheduler_config.json");
    let message = SchedulerConfig::from_file(missing).unwrap_err().to_string();
    assert!(message.contains("/nonexistent/scheduler_config.json"), "{message}");

    let (_dir, path) = write_config("{ not json");
    let err = SchedulerConfig::from_file(&path).unwrap_err();
    assert!(matches!(err, SamplerError::ConfigSyntax { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn sampler_names_round_trip_and_unknown_names_list_the_valid_ones() {
    for kind in SamplerKind::ALL {
        assert_eq!(kind.to_string().parse::<SamplerKind>().unwrap(), kind);
    }
    let message = "dpm++".parse::<SamplerKind>().unwrap_err().to_string();
    assert!(message.contains("`dpm++`"), "{message}");
    assert!(message.contains("pndm, ddim, euler, euler-a, dpmpp-2m"), "{message}");
}

#[test]
fn steps_outside_one_to_max_are_rejected() {
    let sd15 = sd15();
    for kind in SamplerKind::ALL {
        for steps in [0, MAX_STEPS + 1] {
            let err = build(kind, &sd15, steps, &SamplerOptions::default()).err().unwrap();
            assert_eq!(err.to_string(), format!("steps must be between 1 and 1000 (got {steps})"));
        }
    }
    let short = config(r#"{"num_train_timesteps": 100}"#);
    let err = build(SamplerKind::Ddim, &short, 101, &SamplerOptions::default()).err().unwrap();
    assert_eq!(err.to_string(), "steps must be between 1 and 100 (got 101)");
}

#[test]
fn requests_the_engine_cannot_honour_are_refused_at_build() {
    let karras = SamplerOptions { karras_sigmas: Some(true) };
    let err = build(SamplerKind::Pndm, &sd15(), 20, &karras).err().unwrap();
    assert!(matches!(err, SamplerError::KarrasUnsupported { .. }), "{err}");

    let thresholding = config(r#"{"thresholding": true}"#);
    let err = build(SamplerKind::Ddim, &thresholding, 20, &SamplerOptions::default()).err().unwrap();
    assert!(err.to_string().contains("`thresholding`"), "{err}");
    // PNDM has no thresholding in diffusers either, so the setting is ignored there.
    build(SamplerKind::Pndm, &thresholding, 20, &SamplerOptions::default()).unwrap();

    let prk = config(r#"{"skip_prk_steps": false}"#);
    let err = build(SamplerKind::Pndm, &prk, 3, &SamplerOptions::default()).err().unwrap();
    assert!(err.to_string().contains("at least 4 steps (got 3)"), "{err}");

    // Leading spacing plus steps_offset 1 would index timestep 1000 of 0..=999.
    let err = build(SamplerKind::Ddim, &sd15(), 1000, &SamplerOptions::default()).err().unwrap();
    assert!(matches!(err, SamplerError::TimestepOutOfRange { timestep: 1000, .. }), "{err}");
}

#[test]
#[should_panic(expected = "expected call 0")]
fn stateful_samplers_refuse_calls_out_of_order() {
    let mut sampler = build(SamplerKind::DpmSolverMultistep, &sd15(), 10, &SamplerOptions::default()).unwrap();
    let zeros = Array4::<f32>::zeros((1, 4, 2, 2));
    let mut sample = zeros.clone();
    sampler.step(zeros.view(), 1, sample.view_mut(), &mut |_| {});
}
