//! The session cache on a real model: what a second start loads from it, and what a damaged entry
//! does (it is replaced, never trusted).

mod support;

use std::path::{Path, PathBuf};

use rapid_engine::pipeline::{GenerationRequest, Pipeline};
use rapid_engine::runtime::{Runtime, RuntimeOptions};
use support::{no_progress, repo};

fn runtime(cache: &Path) -> Runtime {
    let options = RuntimeOptions {
        intra_threads: Some(2),
        session_cache: Some(cache.to_path_buf()),
        ..RuntimeOptions::default()
    };
    Runtime::new(&options).expect("ONNX Runtime did not load: run `bash deploy/setup.sh`")
}

fn image(runtime: &Runtime) -> ndarray::Array3<f32> {
    let mut pipeline = Pipeline::load(runtime, &repo().join("tests/fixtures/models/tiny-sd-clip")).unwrap();
    let request = GenerationRequest { steps: 3, seed: 11, ..GenerationRequest::new("a linen shirt") };
    pipeline.generate(&request, &mut no_progress()).unwrap().image
}

/// The saved graphs, one entry folder per part.
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    entries
}

#[test]
fn a_second_start_loads_the_saved_graphs_and_makes_the_same_image() {
    let cache = tempfile::tempdir().unwrap();
    let uncached = {
        let options = RuntimeOptions { intra_threads: Some(2), ..RuntimeOptions::default() };
        image(&Runtime::new(&options).unwrap())
    };
    let first = image(&runtime(cache.path()));
    let saved = entries(cache.path());
    assert_eq!(saved.len(), 4, "one entry per part (text encoder, U-Net, VAE, upscaler): {saved:?}");
    for entry in &saved {
        assert!(entry.join("model.onnx").is_file(), "{} has no graph", entry.display());
    }
    let modified: Vec<_> = saved.iter().map(|e| e.join("model.onnx").metadata().unwrap().modified().unwrap()).collect();

    let second = image(&runtime(cache.path()));
    assert_eq!(entries(cache.path()), saved, "a second start must reuse the entries, not add any");
    let after: Vec<_> = saved.iter().map(|e| e.join("model.onnx").metadata().unwrap().modified().unwrap()).collect();
    assert_eq!(after, modified, "a second start must not rewrite the entries");
    assert_eq!(first, uncached, "saving the optimized graph must not change the image");
    assert_eq!(second, uncached, "the saved graphs must make the same image");
}

#[test]
fn a_damaged_entry_is_replaced_not_used() {
    let cache = tempfile::tempdir().unwrap();
    let expected = image(&runtime(cache.path()));
    for entry in entries(cache.path()) {
        std::fs::write(entry.join("model.onnx"), b"not a graph").unwrap();
    }
    assert_eq!(image(&runtime(cache.path())), expected, "a damaged entry must fall back to the model's own graph");
    for entry in entries(cache.path()) {
        assert_ne!(
            std::fs::read(entry.join("model.onnx")).unwrap(),
            b"not a graph",
            "{} was not rewritten",
            entry.display()
        );
    }
}
