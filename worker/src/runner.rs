//! Runs one job on the engine: the synchronous half of the worker. Called on a blocking thread
//! (never on the async runtime); the consumer loop bridges to it.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::path::PathBuf;

use rapid_engine::error::EngineError;
use rapid_engine::marking::{OutputFormat, Provenance};
use rapid_engine::output::{mark_and_encode, MarkOptions};
use rapid_engine::pipeline::{GenerationRequest, Pipeline, Progress};
use rapid_engine::runtime::Runtime;
use rapid_engine::samplers::{SamplerKind, SamplerOptions};
use rapid_proto::Job;

/// Why a job did not produce an image; decides ack, retry or dead-letter.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Retrying cannot help: bad parameters, unknown model, broken model files.
    #[error("{0}")]
    Permanent(String),
    /// May work on another attempt (a runtime failure, storage briefly down).
    #[error("{0}")]
    Retryable(String),
    /// The progress callback asked to stop (request cancelled or worker shutting down).
    #[error("stopped between steps")]
    Stopped,
}

impl From<EngineError> for JobError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Cancelled => Self::Stopped,
            e if e.is_permanent() => Self::Permanent(e.to_string()),
            e => Self::Retryable(e.to_string()),
        }
    }
}

/// A finished, marked and encoded image.
pub struct RenderedImage {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: OutputFormat,
    pub model: String,
    pub timings_ms: Vec<(String, f64)>,
    /// Knowledge-graph entities linked in the prompts.
    pub entities: Vec<rapid_proto::EntityLink>,
}

impl RenderedImage {
    pub fn content_type(&self) -> &'static str {
        match self.format {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
        }
    }
}

/// Every model this worker serves, loaded once at start-up and reused for every job.
pub struct Engines {
    pipelines: HashMap<String, Pipeline>,
}

impl Engines {
    /// Loads every model now, so a broken model directory stops the worker at start-up instead
    /// of failing jobs one by one.
    pub fn load(runtime: &Runtime, models: &BTreeMap<String, PathBuf>) -> Result<Self, EngineError> {
        let pipelines = models
            .iter()
            .map(|(name, dir)| Pipeline::load(runtime, dir).map(|pipeline| (name.clone(), pipeline)))
            .collect::<Result<_, _>>()?;
        Ok(Self { pipelines })
    }

    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    pub fn run(
        &mut self,
        job: &Job,
        progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<RenderedImage, JobError> {
        let mut known: Vec<&str> = self.models().collect();
        known.sort_unstable();
        let known = known.join(", ");
        let pipeline = self.pipelines.get_mut(&job.model).ok_or_else(|| {
            JobError::Permanent(format!("unknown model `{}`; this worker serves: {known}", job.model))
        })?;
        let sampler: SamplerKind = job
            .sampler
            .parse()
            .map_err(|e: rapid_engine::samplers::SamplerError| JobError::Permanent(format!("sampler: {e}")))?;
        let format: OutputFormat = job
            .format
            .parse()
            .map_err(|e: rapid_engine::marking::MarkingError| JobError::Permanent(format!("format: {e}")))?;
        let request = GenerationRequest {
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            seed: job.seed,
            steps: job.steps as usize,
            guidance_scale: job.guidance_scale,
            sampler,
            sampler_options: SamplerOptions::default(),
            width: Some(job.width as usize),
            height: Some(job.height as usize),
            init_latents: None,
            upscale: job.upscale,
            tiling: Default::default(),
        };
        let generated = pipeline.generate(&request, progress)?;
        let provenance = Provenance {
            model: job.model.clone(),
            seed: job.seed,
            steps: job.steps,
            sampler: job.sampler.clone(),
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            extra: [
                ("guidance_scale".to_owned(), job.guidance_scale.to_string()),
                ("job_id".to_owned(), job.id.clone()),
            ]
            .into_iter()
            .chain(generated.entities_field())
            .collect(),
        };
        // The fleet always draws the visible label (DESIGN.md, "Marking").
        let encoded = mark_and_encode(&generated.image, format, &MarkOptions::default(), &provenance)?;
        let t = &generated.timings;
        let timings_ms = [
            ("tokenize", t.tokenize),
            ("text_encoder", t.text_encoder),
            ("unet_total", t.unet_total),
            ("unet_per_step", t.unet_per_step),
            ("vae", t.vae),
            ("upscale", t.upscale),
            ("mark", encoded.mark_ms),
            ("encode", encoded.encode_ms),
        ]
        .into_iter()
        .map(|(name, ms)| (name.to_owned(), ms))
        .collect();
        let entities = generated
            .entities
            .iter()
            .map(|(role, e)| rapid_proto::EntityLink {
                role: role.name().to_owned(),
                entity: e.entity.clone(),
                text: e.text.clone(),
            })
            .collect();
        Ok(RenderedImage {
            entities,
            bytes: encoded.bytes,
            width: encoded.width,
            height: encoded.height,
            format,
            model: job.model.clone(),
            timings_ms,
        })
    }
}
