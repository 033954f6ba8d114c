//! The VAE decoder: latents `[B,4,h,w]` → image `[B,3,f·h,f·w]` in [-1, 1].
//!
//! Latents are divided by the VAE's `scaling_factor` here, not by the caller, because the factor
//! belongs to the VAE (its config) and models differ in it (0.18215 for SD 1.x, others elsewhere).

use std::path::Path;

use ndarray::{Array4, ArrayView4};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use super::{expect, input, output};
use crate::error::{EngineError, Result};
use crate::model_dir::VaeConfig;
use crate::runtime::{Part, Runtime};

pub struct VaeDecoder {
    session: Session,
    input_name: String,
    output_name: String,
    scaling_factor: f32,
    spatial_factor: usize,
}

impl VaeDecoder {
    pub fn load(runtime: &Runtime, path: &Path, config: &VaeConfig) -> Result<Self> {
        let session = runtime.session(path, Part::VaeDecoder)?;
        let latent = input(&session, path, "latent_sample")?;
        expect(path, &latent, &[TensorElementType::Float32], 4)?;
        let out = output(&session, path, "sample")?;
        expect(path, &out, &[TensorElementType::Float32], 4)?;
        Ok(Self {
            session,
            input_name: latent.name,
            output_name: out.name,
            scaling_factor: config.scaling_factor,
            spatial_factor: config.spatial_factor(),
        })
    }

    pub fn spatial_factor(&self) -> usize {
        self.spatial_factor
    }

    /// Decodes final latents (consumed: they are scaled in place, the sampler is done with them).
    pub fn decode(&mut self, mut latents: Array4<f32>) -> Result<Array4<f32>> {
        let fail = |e: ort::Error| EngineError::inference("VAE decoder", e);
        latents.mapv_inplace(|v| v / self.scaling_factor);
        let view: ArrayView4<f32> = latents.view();
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => TensorRef::from_array_view(view).map_err(fail)?])
            .map_err(fail)?;
        let image = outputs[self.output_name.as_str()].try_extract_array::<f32>().map_err(fail)?;
        let image = image
            .into_dimensionality::<ndarray::Ix4>()
            .map_err(|e| EngineError::inference("VAE decoder", format!("output is not [B, 3, H, W]: {e}")))?;
        let (_, _, h, w) = latents.dim();
        if image.shape()[1] != 3
            || image.shape()[2] != h * self.spatial_factor
            || image.shape()[3] != w * self.spatial_factor
        {
            return Err(EngineError::inference(
                "VAE decoder",
                format!(
                    "output shape {:?} does not match latents {:?} at factor {} (check block_out_channels in vae_decoder/config.json)",
                    image.shape(),
                    latents.shape(),
                    self.spatial_factor
                ),
            ));
        }
        Ok(image.to_owned())
    }
}
