//! What the engine's tests share: fixture paths, `.npy` reading, the diffusers reference cases and
//! one-call U-Net helpers.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4, Ix4};
use ndarray_npy::ReadNpyExt;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rapid_engine::parts::unet::Unet;
use rapid_engine::pipeline::{GenerationRequest, Progress};
use rapid_engine::samplers::SamplerKind;
use serde::Deserialize;

/// The repository the fixtures are read from: where this was built, or `RAPID_REPO` for a test
/// binary carried to another machine (the GPU payload, deploy/bench/gpu/).
pub fn repo() -> PathBuf {
    match std::env::var_os("RAPID_REPO") {
        Some(repo) => PathBuf::from(repo),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

pub fn npy<D: ndarray::Dimension>(path: &Path) -> ndarray::Array<f32, D> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ndarray::Array::<f32, D>::read_npy(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture model's U-Net graph.
pub fn unet_path(model: &str) -> PathBuf {
    repo().join("tests/fixtures/models").join(model).join("unet/model.onnx")
}

/// One U-Net call at timestep 500, its prediction copied out.
pub fn predict(unet: &mut Unet, sample: &Array4<f32>, hidden: &Array3<f32>) -> Array4<f32> {
    let mut prediction = None;
    unet.predict(sample.view(), 500.0, hidden.view(), &mut |out| prediction = Some(out.to_owned())).unwrap();
    prediction.unwrap()
}

/// Standard-normal values of `shape` from a seeded generator.
pub fn normal<D: ndarray::Dimension>(shape: impl ndarray::ShapeBuilder<Dim = D>, seed: u64) -> ndarray::Array<f32, D> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    ndarray::Array::from_shape_simple_fn(shape, || StandardNormal.sample(&mut rng))
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

impl Case {
    /// The request diffusers ran: its prompts, steps, guidance, sampler and starting latents,
    /// without upscaling (the references stop at the VAE).
    pub fn request(&self) -> GenerationRequest {
        let mut request = GenerationRequest::new(&self.prompt);
        request.negative_prompt = self.negative_prompt.clone();
        request.steps = self.steps;
        request.guidance_scale = self.guidance_scale;
        request.sampler = self.sampler.parse::<SamplerKind>().unwrap();
        request.init_latents = Some(npy::<Ix4>(&repo().join(&self.latents)));
        request.upscale = false;
        request
    }

    /// The largest per-pixel difference, in 1/255 levels, between a `[3, H, W]` image and the
    /// case's `[H, W, 3]` reference; panics on a size mismatch.
    pub fn levels_off(&self, image: &Array3<f32>) -> f32 {
        let expected: Array3<f32> = npy(&repo().join(&self.expected_image));
        let (h, w, _) = expected.dim();
        assert_eq!(image.dim(), (3, h, w), "{}: image size", self.name);
        image.indexed_iter().map(|((c, y, x), &v)| (v - expected[[y, x, c]]).abs() * 255.0).fold(0f32, f32::max)
    }
}

impl Cases {
    /// The random-weight fixture models' cases.
    pub fn load() -> Self {
        Self::load_from("tests/fixtures/pipeline/cases.json")
    }

    /// Cases from a `cases.json` under the repository root.
    pub fn load_from(relative: &str) -> Self {
        let path = repo().join(relative);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}
