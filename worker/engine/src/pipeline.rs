//! The text-to-image pipeline, written as diffusers' `StableDiffusionPipeline.__call__` is: a
//! numbered script over small parts (check inputs → encode prompt → timesteps → latents →
//! denoising loop → decode → upscale). Marking and encoding come after, in `output`.
//!
//! Buffers the loop needs (the U-Net input with both guidance halves, the guided prediction) are
//! allocated once per image, not per step; the latents are updated in place by the sampler.

use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;
use ndarray::{Array2, Array3, Array4, Axis, Zip};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{EngineError, Result};
use crate::knowledge::{KnowledgeBase, LinkedEntity};
use crate::model_dir::{ModelDir, UnetConfig};
use crate::parts::text_encoder::TextEncoder;
use crate::parts::unet::Unet;
use crate::parts::upscaler::{Tiling, Upscaler};
use crate::parts::vae::VaeDecoder;
use crate::runtime::Runtime;
use crate::samplers::{self, SamplerKind, SamplerOptions, SchedulerConfig, MAX_STEPS};
use crate::tokenizer::{PromptTokenizer, Truncation};

/// The largest image side before upscaling; larger sizes would exhaust memory long before finishing.
pub const MAX_SIDE: usize = 4096;

/// One image to generate.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    /// Classifier-free guidance weight; at 1 or below guidance is off, as in diffusers.
    pub guidance_scale: f32,
    pub sampler: SamplerKind,
    pub sampler_options: SamplerOptions,
    /// Image size before upscaling; `None` takes the model's default (U-Net sample size × VAE factor).
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// Initial latents `[1, 4, h, w]` with the meaning of diffusers' `latents=`: unscaled standard
    /// normal noise; the sampler's initial sigma is applied here. Replaces the seeded noise.
    pub init_latents: Option<Array4<f32>>,
    pub upscale: bool,
    pub tiling: Tiling,
}

impl GenerationRequest {
    /// The paper's defaults: 50 PNDM steps, guidance 7.5, upscaled.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            negative_prompt: String::new(),
            seed: 0,
            steps: 50,
            guidance_scale: 7.5,
            sampler: SamplerKind::Pndm,
            sampler_options: SamplerOptions::default(),
            width: None,
            height: None,
            init_latents: None,
            upscale: true,
            tiling: Tiling::default(),
        }
    }
}

/// Reported to the caller after every U-Net call; returning `Break` cancels the run.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: usize,
    pub total: usize,
}

/// Milliseconds per stage, as `--timings` writes them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StageTimings {
    pub tokenize: f64,
    pub text_encoder: f64,
    pub unet_total: f64,
    pub unet_per_step: f64,
    pub vae: f64,
    pub upscale: f64,
}

/// Which prompt a truncation report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptRole {
    Prompt,
    NegativePrompt,
}

impl PromptRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Prompt => "prompt",
            Self::NegativePrompt => "negative_prompt",
        }
    }
}

impl Generated {
    /// The linked entities as one provenance text field (`entities`: JSON), or `None` when there
    /// are none; the CLI and the fleet both write it into the image.
    pub fn entities_field(&self) -> Option<(String, String)> {
        if self.entities.is_empty() {
            return None;
        }
        let list: Vec<serde_json::Value> = self
            .entities
            .iter()
            .map(|(role, e)| serde_json::json!({"role": role.name(), "entity": e.entity, "text": e.text}))
            .collect();
        Some(("entities".to_owned(), serde_json::Value::Array(list).to_string()))
    }
}

#[derive(Debug, Clone)]
pub struct Generated {
    /// `[3, H, W]` in [0, 1], upscaled when asked and possible.
    pub image: Array3<f32>,
    pub truncations: Vec<(PromptRole, Truncation)>,
    /// Knowledge-graph entities linked in the prompt and the negative prompt (empty for models
    /// without `knowledge/`).
    pub entities: Vec<(PromptRole, LinkedEntity)>,
    pub upscaled: bool,
    pub timings: StageTimings,
}

/// The text encoder's output for one (prompt, negative prompt, guided) triple, and what
/// tokenizing it found.
struct EncodedPrompts {
    hidden: Array3<f32>,
    truncations: Vec<(PromptRole, Truncation)>,
    entities: Vec<(PromptRole, LinkedEntity)>,
}

/// Prompt encodings kept for reuse; a few dozen cover the prompts of the requests in flight.
const PROMPT_CACHE_ENTRIES: usize = 32;

/// A loaded model: every ONNX session built once and reused for every image.
pub struct Pipeline {
    model: ModelDir,
    tokenizer: PromptTokenizer,
    text_encoder: TextEncoder,
    unet: Unet,
    vae: VaeDecoder,
    upscaler: Option<Upscaler>,
    knowledge: Option<KnowledgeBase>,
    scheduler_config: SchedulerConfig,
    unet_config: UnetConfig,
    prompt_cache: LruCache<(String, String, bool), Arc<EncodedPrompts>>,
}

impl Pipeline {
    pub fn load(runtime: &Runtime, dir: &Path) -> Result<Self> {
        let model = ModelDir::open(dir)?;
        let scheduler_config = SchedulerConfig::from_file(&model.scheduler_config())?;
        let unet_config = model.unet_config()?;
        let vae_config = model.vae_config()?;
        let text_encoder = TextEncoder::load(runtime, &model.text_encoder())?;
        let tokenizer = PromptTokenizer::load(&model.tokenizer_dir(), text_encoder.context_length())?;
        let unet = Unet::load(runtime, &model.unet(), 2)?;
        let vae = VaeDecoder::load(runtime, &model.vae_decoder(), &vae_config)?;
        let upscaler = model.upscaler().map(|path| Upscaler::load(runtime, &path)).transpose()?;
        let knowledge = match model.knowledge() {
            Some(dir) if !text_encoder.takes_entity_embeds() => {
                return Err(EngineError::contract(
                    model.text_encoder(),
                    format!(
                        "{} is present but this text encoder has no `entity_embeds` input; export one with \
                         deploy/export/add_knowledge.py or remove the folder",
                        dir.display()
                    ),
                ))
            }
            Some(dir) => Some(KnowledgeBase::load(&dir, text_encoder.hidden_size()?)?),
            None => None,
        };
        Ok(Self {
            model,
            tokenizer,
            text_encoder,
            unet,
            vae,
            upscaler,
            knowledge,
            scheduler_config,
            unet_config,
            prompt_cache: LruCache::new(NonZeroUsize::new(PROMPT_CACHE_ENTRIES).expect("non-zero")),
        })
    }

    pub fn model(&self) -> &ModelDir {
        &self.model
    }

    pub fn has_upscaler(&self) -> bool {
        self.upscaler.is_some()
    }

    /// (width, height) of the decoded image when the request names no size.
    pub fn default_size(&self) -> (usize, usize) {
        let (h, w) = self.unet_config.sample_size.height_width();
        (w * self.vae.spatial_factor(), h * self.vae.spatial_factor())
    }

    pub fn generate(
        &mut self,
        request: &GenerationRequest,
        progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Generated> {
        let started = Instant::now();
        let mut timings = StageTimings::default();

        // 1. Check inputs before any work, naming the bad field.
        let (latent_h, latent_w) = self.check_inputs(request)?;
        let mut sampler =
            samplers::build(request.sampler, &self.scheduler_config, request.steps, &request.sampler_options)?;
        let guided = request.guidance_scale > 1.0;

        // 2. Encode the prompt and the negative prompt (cached: a design request renders each prompt
        //    several times, and most jobs share the empty negative prompt).
        let key = (request.prompt.clone(), request.negative_prompt.clone(), guided);
        let encoded = match self.prompt_cache.get(&key) {
            Some(encoded) => Arc::clone(encoded),
            None => {
                let encoded = Arc::new(self.encode_prompts(request, guided, &mut timings)?);
                self.prompt_cache.put(key, Arc::clone(&encoded));
                encoded
            }
        };
        let hidden = &encoded.hidden;

        // 3 + 4. Timesteps come from the sampler; latents from the request or the seed.
        let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
        let channels = self.unet_config.in_channels;
        let mut latents = match &request.init_latents {
            Some(given) => given.clone(),
            None => Array4::from_shape_simple_fn((1, channels, latent_h, latent_w), || StandardNormal.sample(&mut rng)),
        };
        let sigma = sampler.init_noise_sigma();
        latents.mapv_inplace(|v| v * sigma);

        // 5. Denoising loop: one U-Net call per timestep, both guidance halves in one batch.
        let batch = if guided { 2 } else { 1 };
        let mut model_input = Array4::<f32>::zeros((batch, channels, latent_h, latent_w));
        let mut prediction = Array4::<f32>::zeros((1, channels, latent_h, latent_w));
        let timesteps = sampler.timesteps().to_vec();
        let unet_started = Instant::now();
        for (call, &timestep) in timesteps.iter().enumerate() {
            let scale = sampler.model_input_scale(call);
            for mut half in model_input.axis_iter_mut(Axis(0)) {
                Zip::from(&mut half).and(&latents.index_axis(Axis(0), 0)).for_each(|dst, &src| *dst = src * scale);
            }
            let weight = request.guidance_scale;
            self.unet.predict(model_input.view(), timestep, hidden.view(), &mut |out| {
                if guided {
                    // diffusers: uncond + w * (text - uncond)
                    Zip::from(prediction.index_axis_mut(Axis(0), 0))
                        .and(out.index_axis(Axis(0), 0))
                        .and(out.index_axis(Axis(0), 1))
                        .for_each(|p, &uncond, &text| *p = uncond + weight * (text - uncond));
                } else {
                    prediction.assign(&out);
                }
            })?;
            sampler.step(prediction.view(), call, latents.view_mut(), &mut |buffer: &mut [f32]| {
                buffer.iter_mut().for_each(|v| *v = StandardNormal.sample(&mut rng));
            });
            if progress(Progress { step: call + 1, total: timesteps.len() }).is_break() {
                return Err(EngineError::Cancelled);
            }
        }
        timings.unet_total = ms(unet_started);
        timings.unet_per_step = timings.unet_total / timesteps.len().max(1) as f64;

        // 6. Decode and map [-1, 1] to [0, 1] (diffusers' `denormalize`).
        let t = Instant::now();
        let decoded = self.vae.decode(latents)?;
        let mut image = decoded.index_axis_move(Axis(0), 0);
        image.mapv_inplace(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0));
        timings.vae = ms(t);

        // 7. Upscale ×4 in tiles.
        let mut upscaled = false;
        if request.upscale {
            if let Some(upscaler) = self.upscaler.as_mut() {
                let t = Instant::now();
                image = upscaler.upscale(image.view(), request.tiling)?;
                image.mapv_inplace(|v| v.clamp(0.0, 1.0));
                timings.upscale = ms(t);
                upscaled = true;
            }
        }
        tracing::debug!(elapsed_ms = ms(started), "generated");
        let (truncations, entities) = (encoded.truncations.clone(), encoded.entities.clone());
        Ok(Generated { image, truncations, entities, upscaled, timings })
    }

    /// Tokenizes and encodes `[negative, prompt]` (the order diffusers concatenates them in, so the
    /// U-Net output halves are (uncond, text)) in one text encoder call, with entity embeddings
    /// for models that have knowledge.
    fn encode_prompts(
        &mut self,
        request: &GenerationRequest,
        guided: bool,
        timings: &mut StageTimings,
    ) -> Result<EncodedPrompts> {
        let t = Instant::now();
        let prompt = self.tokenizer.encode(&request.prompt)?;
        let mut truncations: Vec<(PromptRole, Truncation)> =
            prompt.truncation.clone().map(|t| (PromptRole::Prompt, t)).into_iter().collect();
        let mut rows = vec![(PromptRole::Prompt, request.prompt.as_str(), prompt)];
        if guided {
            let negative = self.tokenizer.encode(&request.negative_prompt)?;
            truncations.extend(negative.truncation.clone().map(|t| (PromptRole::NegativePrompt, t)));
            rows.insert(0, (PromptRole::NegativePrompt, request.negative_prompt.as_str(), negative));
        }
        let length = self.tokenizer.max_length();
        let ids =
            Array2::from_shape_vec((rows.len(), length), rows.iter().flat_map(|(_, _, t)| t.ids.clone()).collect())
                .map_err(|e| EngineError::inference("tokenizer", e))?;
        // Knowledge: link entities in each row and give their tokens the entity embedding.
        let mut entities = Vec::new();
        let entity_embeds = match &self.knowledge {
            Some(knowledge) => {
                let mut embeds = Array3::<f32>::zeros((rows.len(), length, self.text_encoder.hidden_size()?));
                for (row, (role, text, tokens)) in rows.iter().enumerate() {
                    let linked = knowledge.inject(text, &tokens.offsets, &mut embeds, row);
                    entities.extend(linked.into_iter().map(|entity| (*role, entity)));
                }
                Some(embeds)
            }
            None => None,
        };
        timings.tokenize = ms(t);
        let t = Instant::now();
        let hidden = self.text_encoder.encode(&ids, entity_embeds)?;
        timings.text_encoder = ms(t);
        Ok(EncodedPrompts { hidden, truncations, entities })
    }

    /// Returns the latent (height, width) the request implies, or the first bad field.
    fn check_inputs(&self, request: &GenerationRequest) -> Result<(usize, usize)> {
        if request.steps == 0 || request.steps > MAX_STEPS {
            return Err(EngineError::invalid(
                "steps",
                format!("must be between 1 and {MAX_STEPS} (got {})", request.steps),
            ));
        }
        if !request.guidance_scale.is_finite() || request.guidance_scale < 0.0 {
            return Err(EngineError::invalid(
                "guidance_scale",
                format!("must be a finite number ≥ 0 (got {}); 7.5 is the usual value", request.guidance_scale),
            ));
        }
        let factor = self.vae.spatial_factor();
        let channels = self.unet_config.in_channels;
        let (default_w, default_h) = match &request.init_latents {
            Some(latents) => {
                let shape = latents.shape();
                if shape[0] != 1 || shape[1] != channels {
                    return Err(EngineError::invalid(
                        "init_latents",
                        format!("shape {shape:?}; expected [1, {channels}, h, w] for this model"),
                    ));
                }
                (shape[3] * factor, shape[2] * factor)
            }
            None => self.default_size(),
        };
        let width = request.width.unwrap_or(default_w);
        let height = request.height.unwrap_or(default_h);
        for (field, side) in [("width", width), ("height", height)] {
            if side == 0 || side > MAX_SIDE || side % factor != 0 {
                return Err(EngineError::invalid(
                    field,
                    format!("{side} is not a positive multiple of {factor} (the VAE factor) up to {MAX_SIDE}"),
                ));
            }
        }
        if let Some(latents) = &request.init_latents {
            if latents.shape()[2] * factor != height || latents.shape()[3] * factor != width {
                return Err(EngineError::invalid(
                    "init_latents",
                    format!(
                        "shape {:?} gives a {}×{} image but {width}×{height} was asked",
                        latents.shape(),
                        latents.shape()[3] * factor,
                        latents.shape()[2] * factor
                    ),
                ));
            }
            if latents.iter().any(|v| !v.is_finite()) {
                return Err(EngineError::invalid("init_latents", "contains NaN or infinite values"));
            }
        }
        Ok((height / factor, width / factor))
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// `[3, H, W]` in [0, 1] → 8-bit RGB, rounding as diffusers' `numpy_to_pil` does.
pub fn to_rgb8(image: &Array3<f32>) -> image::RgbImage {
    let (_, height, width) = image.dim();
    image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let px = |c: usize| (image[[c, y as usize, x as usize]] * 255.0).round().clamp(0.0, 255.0) as u8;
        image::Rgb([px(0), px(1), px(2)])
    })
}

/// Reads `[1, 4, h, w]` float32 latents from a `.npy` file, as `--init-latents` takes them.
pub fn read_latents(path: &Path) -> Result<Array4<f32>> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::bad_file(path, format!("cannot open: {e}")))?;
    ndarray_npy::ReadNpyExt::read_npy(file)
        .map_err(|e| EngineError::bad_file(path, format!("not a float32 .npy array of rank 4 ([1, 4, h, w]): {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb8_rounds_like_diffusers() {
        let image = Array3::from_shape_vec((3, 1, 2), vec![0.0, 1.0, 0.5, 0.499, 0.002, 0.998]).unwrap();
        let rgb = to_rgb8(&image);
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 128, 1]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 127, 254]);
    }
}
