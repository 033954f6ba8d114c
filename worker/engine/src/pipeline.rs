//! The text-to-image pipeline, written as diffusers' `StableDiffusionPipeline.__call__` is: a
//! numbered script over small parts (check inputs → encode prompt → timesteps → latents →
//! denoising loop → decode → upscale). Marking and encoding come after, in `output`.
//!
//! Compatible requests (same [`BatchKey`]) are denoised together: one U-Net call per step carries
//! every image's rows, while each image keeps its own prompt, seed, sampler state and guidance
//! weight. Buffers the loop needs (the stacked U-Net input, the guided prediction) are allocated
//! once per batch, not per step; the latents are updated in place by the sampler.

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
use crate::model_dir::{ModelDir, UnetConfig, UnetVariant};
use crate::parts::text_encoder::TextEncoder;
use crate::parts::unet::Unet;
use crate::parts::upscaler::{Tiling, Upscaler};
use crate::parts::vae::VaeDecoder;
use crate::runtime::Runtime;
use crate::samplers::{self, Sampler, SamplerKind, SamplerOptions, SchedulerConfig, MAX_STEPS};
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
    /// How many images shared this one's U-Net calls when they started (1 = not batched).
    pub batch_size: usize,
}

/// The text encoder's output for one (prompt, negative prompt, guided) triple, and what
/// tokenizing it found.
struct EncodedPrompts {
    hidden: Array3<f32>,
    truncations: Vec<(PromptRole, Truncation)>,
    entities: Vec<(PromptRole, LinkedEntity)>,
}

/// What requests must share to be denoised in one batch: the timestep sequence (steps, sampler
/// and its options) and the tensor shapes (size, guidance on or off).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchKey {
    width: Option<usize>,
    height: Option<usize>,
    latents: Option<Vec<usize>>,
    steps: usize,
    sampler: SamplerKind,
    sampler_options: SamplerOptions,
    guided: bool,
}

impl BatchKey {
    pub fn of(request: &GenerationRequest) -> Self {
        Self {
            width: request.width,
            height: request.height,
            latents: request.init_latents.as_ref().map(|l| l.shape().to_vec()),
            steps: request.steps,
            sampler: request.sampler,
            sampler_options: request.sampler_options.clone(),
            guided: request.guidance_scale > 1.0,
        }
    }
}

/// One image of a batch while it is being denoised.
struct Member {
    /// Its position in the caller's request list.
    index: usize,
    sampler: Box<dyn Sampler>,
    latents: Array4<f32>,
    rng: ChaCha8Rng,
    encoded: Arc<EncodedPrompts>,
    weight: f32,
    timings: StageTimings,
    started: Instant,
    batch_size: usize,
}

/// The members' prompt encodings stacked in batch order: rows (uncond, text) per member.
fn stack_prompts(members: &[Member]) -> Array3<f32> {
    let views: Vec<_> = members.iter().map(|m| m.encoded.hidden.view()).collect();
    ndarray::concatenate(Axis(0), &views).expect("every prompt encoding has the encoder's [rows, L, H] shape")
}

/// Prompt encodings kept for reuse; a few dozen cover the prompts of the requests in flight.
const PROMPT_CACHE_ENTRIES: usize = 32;

/// What an encoding depends on: both prompts, and whether the negative one is encoded at all.
type PromptCacheKey = (String, String, bool);

fn prompt_cache_key(request: &GenerationRequest, guided: bool) -> PromptCacheKey {
    (request.prompt.clone(), request.negative_prompt.clone(), guided)
}

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
    prompt_cache: LruCache<PromptCacheKey, Arc<EncodedPrompts>>,
}

impl Pipeline {
    pub fn load(runtime: &Runtime, dir: &Path) -> Result<Self> {
        Self::load_variant(runtime, dir, UnetVariant::Plain)
    }

    /// [`Pipeline::load`] with the U-Net graph of `variant` (a prepared rewrite of the export).
    pub fn load_variant(runtime: &Runtime, dir: &Path, variant: UnetVariant) -> Result<Self> {
        let model = ModelDir::open(dir)?;
        let scheduler_config = SchedulerConfig::from_file(&model.scheduler_config())?;
        let unet_config = model.unet_config()?;
        let vae_config = model.vae_config()?;
        let text_encoder = TextEncoder::load(runtime, &model.text_encoder())?;
        let tokenizer = PromptTokenizer::load(&model.tokenizer_dir(), text_encoder.context_length())?;
        let unet = Unet::load(runtime, &model.unet_variant(variant), 2)?;
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

    /// Puts `unet` in place of the loaded U-Net and returns that one (`crate::autotune`).
    pub(crate) fn swap_unet(&mut self, unet: Unet) -> Unet {
        std::mem::replace(&mut self.unet, unet)
    }

    pub(crate) fn swap_vae(&mut self, vae: VaeDecoder) -> VaeDecoder {
        std::mem::replace(&mut self.vae, vae)
    }

    /// Puts `upscaler` in place of the loaded one, which the model must have.
    pub(crate) fn swap_upscaler(&mut self, upscaler: Upscaler) -> Option<Upscaler> {
        self.upscaler.replace(upscaler)
    }

    pub(crate) fn upscaler_mut(&mut self) -> Option<&mut Upscaler> {
        self.upscaler.as_mut()
    }

    pub fn has_upscaler(&self) -> bool {
        self.upscaler.is_some()
    }

    /// (width, height) of the decoded image when the request names no size.
    pub fn default_size(&self) -> (usize, usize) {
        let (h, w) = self.unet_config.sample_size.height_width();
        (w * self.vae.spatial_factor(), h * self.vae.spatial_factor())
    }

    /// Runs every part once on the shapes a request like `like` uses (its size, guidance on or
    /// off, upscaled or not, its tiling), for one image, and throws the result away. The fleet
    /// warms up with a default request; `generate --warm-up` with the request it is about to run.
    ///
    /// A session's first call with a shape is slower than the rest: ONNX Runtime's CPU provider
    /// plans its memory then, and OpenVINO compiles its graph (deploy/bench/session/SESSION.md,
    /// "Start-up"). A long-running worker pays that here, before it takes a job, instead of in its
    /// first job's latency. Other sizes and batches still pay it on their own first call.
    pub fn warm_up(&mut self, like: &GenerationRequest) -> Result<()> {
        // One DDIM step: any sampler makes the same part calls, and DDIM accepts a single step.
        let request = GenerationRequest {
            steps: 1,
            sampler: SamplerKind::Ddim,
            guidance_scale: like.guidance_scale,
            width: like.width,
            height: like.height,
            init_latents: like.init_latents.as_ref().map(|given| Array4::zeros(given.raw_dim())),
            upscale: false,
            ..GenerationRequest::new("")
        };
        let decoded = self.generate(&request, &mut |_| ControlFlow::Continue(()))?.image;
        // The cache is for jobs' prompts; the warm-up's empty pair would only take a slot.
        self.prompt_cache.pop(&prompt_cache_key(&request, BatchKey::of(&request).guided));
        // One call per tile shape, not a whole upscale: the default tiles of an image share one.
        let (_, height, width) = decoded.dim();
        match self.upscaler.as_mut() {
            Some(upscaler) if like.upscale => upscaler.warm_up(height, width, like.tiling),
            _ => Ok(()),
        }
    }

    /// Generates one image; the same as a batch of one.
    pub fn generate(
        &mut self,
        request: &GenerationRequest,
        progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Generated> {
        let mut results = self.generate_batch(std::slice::from_ref(request), &mut |_, p| progress(p));
        results.pop().expect("one result per request")
    }

    /// Generates several images that share a [`BatchKey`] with one U-Net call per step for all of
    /// them; each keeps its own prompt, seed and guidance weight, so every image equals what
    /// [`Pipeline::generate`] makes of it alone (up to float summation order in the batched GEMMs).
    ///
    /// Returns one result per request, in order: a request with bad input, or one whose key differs
    /// from the first request's, fails alone. `progress(i, …)` is asked after every U-Net call for
    /// each request `i` still running; `Break` cancels that request only.
    pub fn generate_batch(
        &mut self,
        requests: &[GenerationRequest],
        progress: &mut dyn FnMut(usize, Progress) -> ControlFlow<()>,
    ) -> Vec<Result<Generated>> {
        let mut results: Vec<Option<Result<Generated>>> = requests.iter().map(|_| None).collect();
        let Some(key) = requests.first().map(BatchKey::of) else {
            return Vec::new();
        };
        let mut members = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            match self.start(index, request, &key) {
                Ok(member) => members.push(member),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        // A graph exported with a fixed batch takes one image (both guidance halves) per call.
        let per_call = if self.unet.fixed_batch().is_some() { 1 } else { members.len().max(1) };
        let mut chunks = Vec::new();
        while !members.is_empty() {
            let rest = members.split_off(per_call.min(members.len()));
            chunks.push(std::mem::replace(&mut members, rest));
        }
        for chunk in chunks {
            for (index, result) in self.denoise(chunk, key.guided, progress) {
                let generated = result.and_then(|member| self.finish(member, &requests[index]));
                results[index] = Some(generated);
            }
        }
        results.into_iter().map(|r| r.expect("every request gets a result")).collect()
    }

    /// Steps 1–4 for one request: check it, encode its prompts (cached: a design request renders
    /// each prompt several times, and most jobs share the empty negative prompt), draw its noise.
    fn start(&mut self, index: usize, request: &GenerationRequest, key: &BatchKey) -> Result<Member> {
        let started = Instant::now();
        let mut timings = StageTimings::default();
        let (latent_h, latent_w) = self.check_inputs(request)?;
        if BatchKey::of(request) != *key {
            return Err(EngineError::invalid(
                "batch",
                format!(
                    "request {index} cannot share U-Net calls with request 0 (size, steps, sampler and guidance \
                     on/off must match: {:?} vs {key:?}); generate it in its own batch",
                    BatchKey::of(request)
                ),
            ));
        }
        let sampler =
            samplers::build(request.sampler, &self.scheduler_config, request.steps, &request.sampler_options)?;
        let cache_key = prompt_cache_key(request, key.guided);
        let encoded = match self.prompt_cache.get(&cache_key) {
            Some(encoded) => Arc::clone(encoded),
            None => {
                let encoded = Arc::new(self.encode_prompts(request, key.guided, &mut timings)?);
                self.prompt_cache.put(cache_key, Arc::clone(&encoded));
                encoded
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
        let channels = self.unet_config.in_channels;
        let mut latents = match &request.init_latents {
            Some(given) => given.clone(),
            None => Array4::from_shape_simple_fn((1, channels, latent_h, latent_w), || StandardNormal.sample(&mut rng)),
        };
        let sigma = sampler.init_noise_sigma();
        latents.mapv_inplace(|v| v * sigma);
        Ok(Member {
            index,
            sampler,
            latents,
            rng,
            encoded,
            weight: request.guidance_scale,
            timings,
            started,
            batch_size: 1,
        })
    }

    /// Step 5, the denoising loop, for requests that share their timesteps: one U-Net call per
    /// timestep with every member's rows (uncond, text) stacked in one batch. Returns each
    /// member's outcome by request index.
    fn denoise(
        &mut self,
        mut members: Vec<Member>,
        guided: bool,
        progress: &mut dyn FnMut(usize, Progress) -> ControlFlow<()>,
    ) -> Vec<(usize, Result<Member>)> {
        let mut ended = Vec::new();
        let Some(first) = members.first() else {
            return ended;
        };
        let rows = if guided { 2 } else { 1 };
        let timesteps = first.sampler.timesteps().to_vec();
        let (_, channels, latent_h, latent_w) = first.latents.dim();
        let batch_size = members.len();
        members.iter_mut().for_each(|m| m.batch_size = batch_size);
        let mut hidden = stack_prompts(&members);
        let mut model_input = Array4::<f32>::zeros((rows * members.len(), channels, latent_h, latent_w));
        let mut prediction = Array4::<f32>::zeros((1, channels, latent_h, latent_w));
        let unet_started = Instant::now();
        for (call, &timestep) in timesteps.iter().enumerate() {
            for (slot, member) in members.iter().enumerate() {
                let scale = member.sampler.model_input_scale(call);
                for row in 0..rows {
                    Zip::from(model_input.index_axis_mut(Axis(0), slot * rows + row))
                        .and(&member.latents.index_axis(Axis(0), 0))
                        .for_each(|dst, &src| *dst = src * scale);
                }
            }
            let predicted = self.unet.predict(model_input.view(), timestep, hidden.view(), &mut |out| {
                for (slot, member) in members.iter_mut().enumerate() {
                    if guided {
                        // diffusers: uncond + w * (text - uncond)
                        let weight = member.weight;
                        Zip::from(prediction.index_axis_mut(Axis(0), 0))
                            .and(out.index_axis(Axis(0), slot * rows))
                            .and(out.index_axis(Axis(0), slot * rows + 1))
                            .for_each(|p, &uncond, &text| *p = uncond + weight * (text - uncond));
                    } else {
                        prediction.index_axis_mut(Axis(0), 0).assign(&out.index_axis(Axis(0), slot));
                    }
                    let rng = &mut member.rng;
                    member.sampler.step(
                        prediction.view(),
                        call,
                        member.latents.view_mut(),
                        &mut |buffer: &mut [f32]| {
                            buffer.iter_mut().for_each(|v| *v = StandardNormal.sample(rng));
                        },
                    );
                }
            });
            if let Err(e) = predicted {
                // One failed call fails every image in it; each gets the same message.
                let message = e.to_string();
                ended.extend(members.drain(..).map(|m| (m.index, Err(EngineError::inference("U-Net", &message)))));
                return ended;
            }
            let before = members.len();
            let report = Progress { step: call + 1, total: timesteps.len() };
            members.retain(|member| {
                let keep = progress(member.index, report).is_continue();
                if !keep {
                    ended.push((member.index, Err(EngineError::Cancelled)));
                }
                keep
            });
            if members.is_empty() {
                return ended;
            }
            if members.len() != before {
                hidden = stack_prompts(&members);
                model_input = Array4::<f32>::zeros((rows * members.len(), channels, latent_h, latent_w));
            }
        }
        let unet_total = ms(unet_started);
        tracing::debug!(images = members.len(), unet_ms = unet_total, "denoised");
        ended.extend(members.into_iter().map(|mut member| {
            member.timings.unet_total = unet_total;
            member.timings.unet_per_step = unet_total / timesteps.len().max(1) as f64;
            (member.index, Ok(member))
        }));
        ended
    }

    /// Steps 6 and 7 for one denoised member: decode, then upscale ×4 in tiles.
    fn finish(&mut self, member: Member, request: &GenerationRequest) -> Result<Generated> {
        let Member { latents, encoded, mut timings, started, batch_size, .. } = member;
        // Decode and map [-1, 1] to [0, 1] (diffusers' `denormalize`).
        let t = Instant::now();
        let decoded = self.vae.decode(latents)?;
        let mut image = decoded.index_axis_move(Axis(0), 0);
        image.mapv_inplace(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0));
        timings.vae = ms(t);

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
        Ok(Generated { image, truncations, entities, upscaled, timings, batch_size })
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
