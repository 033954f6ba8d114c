//! `rapid-worker generate` end to end: a real run on the tiny model, and every class of bad input
//! giving a one-line error, a non-zero exit and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn clip_model() -> PathBuf {
    repo().join("tests/fixtures/models/tiny-sd-clip")
}

fn generate(args: &[&str]) -> Output {
    // Three steps keep the runs short unless a case is about the step count itself.
    let steps: &[&str] = if args.contains(&"--steps") { &[] } else { &["--steps", "3"] };
    Command::new(env!("CARGO_BIN_EXE_rapid-worker"))
        .arg("generate")
        .args(["--threads", "2"])
        .args(steps)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn generates_a_marked_png_with_timings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dress.png");
    let timings = dir.path().join("timings.json");
    let result = generate(&[
        "--model",
        clip_model().to_str().unwrap(),
        "--prompt",
        "a red silk dress",
        "--width",
        "64",
        "--height",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--timings",
        timings.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "stderr: {}", String::from_utf8_lossy(&result.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(summary["width"], 256, "64 px upscaled ×4: {summary}");
    assert!(summary["invisible_watermark"].as_str().unwrap().starts_with("embedded"), "{summary}");
    let decoded = image::open(&out).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (256, 256));
    let timings: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&timings).unwrap()).unwrap();
    for key in [
        "tokenize",
        "text_encoder",
        "unet_total",
        "unet_per_step",
        "vae",
        "upscale",
        "mark",
        "encode",
        "warm_up",
        "total",
    ] {
        assert!(timings[key].as_f64().is_some_and(|ms| ms >= 0.0), "timings lack `{key}`: {timings}");
    }
}

#[test]
fn warming_up_changes_the_timings_not_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let model = clip_model();
    let run = |name: &str, extra: &[&str]| {
        let (out, timings) = (dir.path().join(format!("{name}.png")), dir.path().join(format!("{name}.json")));
        let mut args = vec!["--model", model.to_str().unwrap(), "--prompt", "a red silk dress", "--steps", "4"];
        args.extend(["--out", out.to_str().unwrap(), "--timings", timings.to_str().unwrap()]);
        args.extend(extra);
        let result = generate(&args);
        assert!(result.status.success(), "stderr: {}", String::from_utf8_lossy(&result.stderr));
        let timings: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&timings).unwrap()).unwrap();
        (std::fs::read(&out).unwrap(), timings["warm_up"].as_f64().unwrap())
    };
    let (cold_png, cold_warm_up) = run("cold", &[]);
    let (warm_png, warm_up) = run("warm", &["--warm-up"]);
    assert_eq!(cold_warm_up, 0.0, "no warm-up was asked for");
    assert!(warm_up > 0.0, "--warm-up ran nothing");
    assert!(cold_png == warm_png, "--warm-up changed the image");
}

#[test]
fn small_images_say_they_carry_no_invisible_mark() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.jpg");
    let result = generate(&[
        "--model",
        clip_model().to_str().unwrap(),
        "--prompt",
        "soup",
        "--no-upscale",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "stderr: {}", String::from_utf8_lossy(&result.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(summary["invisible_watermark"].as_str().unwrap().starts_with("none"), "{summary}");
    assert_eq!(&std::fs::read(&out).unwrap()[..2], &[0xFF, 0xD8], "format follows the .jpg extension");
}

/// Runs a failing case and checks the contract: non-zero exit, one line naming `needle`, no file.
fn assert_fails(args: &[&str], out: &Path, needle: &str) {
    let result = generate(args);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "expected failure for {args:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "expected a one-line error, got:\n{stderr}");
    assert!(stderr.contains(needle), "error should name `{needle}`: {stderr}");
    assert!(!out.exists(), "a failed run left {}", out.display());
    if let Some(dir) = out.parent().filter(|d| d.exists()) {
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".rapid-partial"))
            .collect();
        assert!(leftovers.is_empty(), "partial files left behind: {leftovers:?}");
    }
}

#[test]
fn bad_requests_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let (model, out_s) = (clip_model(), out.to_str().unwrap().to_owned());
    let model = model.to_str().unwrap();
    assert_fails(&["--model", model, "--prompt", "p", "--out", &out_s, "--steps", "0"], &out, "steps");
    assert_fails(&["--model", model, "--prompt", "p", "--out", &out_s, "--steps", "1001"], &out, "steps");
    assert_fails(&["--model", model, "--prompt", "p", "--out", &out_s, "--width", "33"], &out, "width");
    assert_fails(&["--model", model, "--prompt", "p", "--out", &out_s, "--sampler", "heun"], &out, "dpmpp-2m");
    assert_fails(
        &["--model", model, "--prompt", "p", "--out", &out_s, "--part-provider", "vae=cpu"],
        &out,
        "vae_decoder",
    );
    assert_fails(
        &["--model", model, "--prompt", "p", "--out", &out_s, "--part-provider", "upscaler"],
        &out,
        "PART=PROVIDER",
    );
    let two_libraries = ["--execution-provider", "cuda", "--part-provider", "upscaler=openvino"];
    assert_fails(
        &[&["--model", model, "--prompt", "p", "--out", &out_s], &two_libraries[..]].concat(),
        &out,
        "one process loads one",
    );
    let unwritable = dir.path().join("no/such/folder/x.png");
    assert_fails(
        &["--model", model, "--prompt", "p", "--out", unwritable.to_str().unwrap()],
        &unwritable,
        "no/such/folder",
    );
    let missing = dir.path().join("nowhere");
    assert_fails(&["--model", missing.to_str().unwrap(), "--prompt", "p", "--out", &out_s], &out, "nowhere");
}

/// Breaks one thing in a copied model directory.
type Damage = fn(&Path);

#[test]
fn broken_model_directories_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let out_s = out.to_str().unwrap().to_owned();
    let cases: [(&str, Damage, &str); 4] = [
        ("missing unet", |m| std::fs::remove_file(m.join("unet/model.onnx")).unwrap(), "unet/model.onnx"),
        (
            "corrupt unet",
            |m| std::fs::write(m.join("unet/model.onnx"), b"not an onnx file").unwrap(),
            "unet/model.onnx",
        ),
        (
            "wrong contract",
            |m| {
                std::fs::copy(m.join("vae_decoder/model.onnx"), m.join("unet/model.onnx")).unwrap();
            },
            "has no input `sample`",
        ),
        (
            "corrupt config",
            |m| std::fs::write(m.join("scheduler/scheduler_config.json"), b"{ nope").unwrap(),
            "scheduler_config.json",
        ),
    ];
    for (name, damage, needle) in cases {
        let model = dir.path().join(name.replace(' ', "-"));
        copy_dir(&clip_model(), &model);
        damage(&model);
        assert_fails(&["--model", model.to_str().unwrap(), "--prompt", "p", "--out", &out_s], &out, needle);
    }
}
