//! The model directory (DESIGN.md, "Model directory"): file locations and the few facts the
//! pipeline needs from the parts' `config.json` files.
//!
//! Only the fields the engine uses are parsed, each with diffusers' default when absent; everything
//! else in those files (Optimum writes dozens of keys) is ignored on purpose, so that any SD 1.x
//! export loads. Facts about tensors (dtypes, ranks) come from the ONNX files instead; see `parts`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{EngineError, Result};

/// Which graph of the U-Net a pipeline runs. Preparing a model (`make prepare-model`) may add
/// rewrites of the export that compute the same function faster on some CPUs; `crate::autotune`
/// measures each one present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnetVariant {
    /// `unet/model.onnx`, as exported.
    #[default]
    Plain,
    /// `unet/winograd/model.onnx`: the larger 3×3 convolutions as `ai.rapid::WinogradConv`
    /// (deploy/export/winograd.py), which only the CPU provider runs.
    Winograd,
}

impl UnetVariant {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Winograd => "winograd",
        }
    }
}

/// Paths of one model directory's parts.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// Checks that `root` looks like a model directory (has `model_index.json`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(EngineError::MissingFile {
                path: root,
                hint:
                    "pass --model a directory laid out as DESIGN.md describes (e.g. tests/fixtures/models/tiny-sd-clip)",
            });
        }
        let dir = Self { root };
        let index = dir.root.join("model_index.json");
        if !index.exists() {
            return Err(EngineError::MissingFile {
                path: index,
                hint: "not a model directory: Optimum's `optimum-cli export onnx` writes this file",
            });
        }
        read_json::<serde_json::Value>(&index)?;
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A short name for provenance records: the directory's own name.
    pub fn name(&self) -> String {
        self.root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone())
            .file_name()
            .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned())
    }

    pub fn part(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn scheduler_config(&self) -> PathBuf {
        self.part("scheduler/scheduler_config.json")
    }

    pub fn tokenizer_dir(&self) -> PathBuf {
        self.part("tokenizer")
    }

    pub fn text_encoder(&self) -> PathBuf {
        self.part("text_encoder/model.onnx")
    }

    pub fn unet(&self) -> PathBuf {
        self.part("unet/model.onnx")
    }

    /// The U-Net graph of `variant`: the export itself, or a prepared rewrite of it beside it.
    pub fn unet_variant(&self, variant: UnetVariant) -> PathBuf {
        match variant {
            UnetVariant::Plain => self.unet(),
            UnetVariant::Winograd => self.part("unet/winograd/model.onnx"),
        }
    }

    pub fn vae_decoder(&self) -> PathBuf {
        self.part("vae_decoder/model.onnx")
    }

    /// The optional ESRGAN upscaler; `None` when the model ships none.
    pub fn upscaler(&self) -> Option<PathBuf> {
        Some(self.part("upscaler/model.onnx")).filter(|p| p.exists())
    }

    /// The optional knowledge folder (entity names, TransE vectors, projection); `None` when absent.
    pub fn knowledge(&self) -> Option<PathBuf> {
        Some(self.part("knowledge")).filter(|p| p.is_dir())
    }

    pub fn unet_config(&self) -> Result<UnetConfig> {
        read_json(&self.part("unet/config.json"))
    }

    pub fn vae_config(&self) -> Result<VaeConfig> {
        let path = self.part("vae_decoder/config.json");
        let config: VaeConfig = read_json(&path)?;
        if config.block_out_channels.is_empty() {
            return Err(EngineError::bad_file(path, "`block_out_channels` is empty; the VAE needs at least one level"));
        }
        if !(config.scaling_factor.is_finite() && config.scaling_factor > 0.0) {
            return Err(EngineError::bad_file(
                path,
                format!("`scaling_factor` must be a positive number (got {})", config.scaling_factor),
            ));
        }
        Ok(config)
    }
}

/// The U-Net facts the pipeline needs.
#[derive(Debug, Clone, Deserialize)]
pub struct UnetConfig {
    /// Latent side (or [height, width]) the U-Net was trained on; the default image size derives from it.
    #[serde(default = "default_sample_size")]
    pub sample_size: SampleSize,
    #[serde(default = "default_latent_channels")]
    pub in_channels: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(usize),
    Rect([usize; 2]),
}

impl SampleSize {
    /// (height, width) in latent pixels.
    pub fn height_width(self) -> (usize, usize) {
        match self {
            Self::Square(side) => (side, side),
            Self::Rect([h, w]) => (h, w),
        }
    }
}

fn default_sample_size() -> SampleSize {
    SampleSize::Square(64)
}

fn default_latent_channels() -> usize {
    4
}

/// The VAE facts the pipeline needs.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    /// Latents are divided by this before decoding (diffusers' `vae.config.scaling_factor`).
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f32,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
}

impl VaeConfig {
    /// Image pixels per latent pixel: each level after the first halves the resolution.
    pub fn spatial_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

fn default_scaling_factor() -> f32 {
    0.18215
}

fn default_block_out_channels() -> Vec<usize> {
    vec![128, 256, 512, 512]
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => EngineError::MissingFile {
            path: path.to_path_buf(),
            hint: "the model directory needs this file (see DESIGN.md, \"Model directory\")",
        },
        _ => EngineError::bad_file(path, format!("cannot read: {e}")),
    })?;
    serde_json::from_str(&text).map_err(|e| EngineError::bad_file(path, format!("invalid JSON: {e}")))
}
