//! What the pipeline tests share: fixture paths, `.npy` reading and the diffusers reference cases.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ndarray_npy::ReadNpyExt;
use rapid_engine::pipeline::Progress;
use serde::Deserialize;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn npy<D: ndarray::Dimension>(path: &Path) -> ndarray::Array<f32, D> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ndarray::Array::<f32, D>::read_npy(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn no_progress() -> impl FnMut(Progress) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

/// `tests/fixtures/pipeline/cases.json`: whole pipelines recorded from diffusers (PyTorch, fp32).
#[derive(Deserialize)]
pub struct Cases {
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub model_dir: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f32,
    pub sampler: String,
    pub latents: String,
    pub expected_image: String,
}

impl Cases {
    pub fn load() -> Self {
        let path = repo().join("tests/fixtures/pipeline/cases.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }
}
