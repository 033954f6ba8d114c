//! Runs jobs on the engine, compatible ones batched: the synchronous half of the worker. Called on
//! a blocking thread (never on the async runtime); the consumer loop bridges to it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use rapid_engine::autotune;
use rapid_engine::error::EngineError;
use rapid_engine::marking::{OutputFormat, Provenance};
use rapid_engine::output::{mark_and_encode, MarkOptions};
use rapid_engine::parts::upscaler::Tiling;
use rapid_engine::pipeline::{BatchKey, Generated, GenerationRequest, Pipeline, Progress};
use rapid_engine::runtime::Runtime;
use rapid_engine::samplers::{SamplerKind, SamplerOptions};
use rapid_proto::{ImageFormat, Job, Sampler};

use crate::config::WorkerConfig;

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
    /// How many jobs shared this one's U-Net calls.
    pub batch_size: usize,
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
    models: HashMap<String, Loaded>,
}

/// One model on its setup.
struct Loaded {
    pipeline: Pipeline,
    /// How its images are upscaled: the configured tiling, or what `auto` measured fastest.
    tiling: Tiling,
}

impl Engines {
    /// Loads every model now, so a broken model directory stops the worker at start-up instead
    /// of failing jobs one by one. Under `execution_provider = "auto"` each model is loaded on the
    /// setup [`autotune`] measured (or stored) for it; otherwise every job's image is upscaled in
    /// the configured tiling.
    fn load(runtime: &Runtime, config: &WorkerConfig) -> Result<Self, EngineError> {
        let models = config
            .models
            .iter()
            .map(|(name, dir)| Self::load_one(runtime, config, dir).map(|loaded| (name.clone(), loaded)))
            .collect::<Result<_, _>>()?;
        Ok(Self { models })
    }

    fn load_one(runtime: &Runtime, config: &WorkerConfig, dir: &Path) -> Result<Loaded, EngineError> {
        match config.autotune_options() {
            Some(options) => {
                let tuned = autotune::load_tuned(runtime, dir, &options)?;
                let tiling = tuned.tiling(config.upscale_tile_overlap);
                Ok(Loaded { pipeline: tuned.pipeline, tiling })
            }
            None => Ok(Loaded { pipeline: Pipeline::load(runtime, dir)?, tiling: config.tiling() }),
        }
    }

    /// What a worker does at start-up: loads the configured models (measuring their setup under
    /// `auto`) and, unless `warm_up = false`, runs each once (see [`Engines::warm_up`]).
    pub fn start(runtime: &Runtime, config: &WorkerConfig) -> Result<Self, EngineError> {
        let mut engines = Self::load(runtime, config)?;
        if config.warm_up {
            engines.warm_up()?;
        }
        Ok(engines)
    }

    /// Runs every model once on a default job's shapes, so the first real job does not pay for
    /// ONNX Runtime's first-call planning or OpenVINO's compilation
    /// ([`Pipeline::warm_up`]). A failure here is a model that cannot run at all.
    fn warm_up(&mut self) -> Result<(), EngineError> {
        for (name, Loaded { pipeline, tiling }) in &mut self.models {
            let started = Instant::now();
            pipeline.warm_up(&GenerationRequest { tiling: *tiling, ..GenerationRequest::new("") })?;
            tracing::info!(model = %name, elapsed_ms = started.elapsed().as_millis() as u64, "warmed up");
        }
        Ok(())
    }

    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Generates the pictures of jobs, denoising those with equal [`batch_key`]s together (one
    /// U-Net call per step for all of them). Returns one result per job, in order;
    /// `progress(i, …)` reports job `i` and `Break` stops that job only. Marking and encoding
    /// ([`render`]) are left to the caller: they need no model, so they can run while the engine
    /// works on the next jobs.
    pub fn generate_batch(
        &mut self,
        jobs: &[Job],
        progress: &mut dyn FnMut(usize, Progress) -> ControlFlow<()>,
    ) -> Vec<Result<Generated, JobError>> {
        let mut results: Vec<Option<Result<Generated, JobError>>> = jobs.iter().map(|_| None).collect();
        let mut runnable = Vec::with_capacity(jobs.len());
        for (index, job) in jobs.iter().enumerate() {
            match self.check(job) {
                Ok(()) => runnable.push((index, generation_request(job))),
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let groups = group_by_key(runnable, |(index, request)| (&jobs[*index].model, BatchKey::of(request)));
        for group in groups {
            let (indices, requests): (Vec<usize>, Vec<GenerationRequest>) = group.into_iter().unzip();
            let loaded = self.models.get_mut(&jobs[indices[0]].model).expect("checked above");
            let requests: Vec<GenerationRequest> =
                requests.into_iter().map(|request| GenerationRequest { tiling: loaded.tiling, ..request }).collect();
            let generated = loaded.pipeline.generate_batch(&requests, &mut |slot, p| progress(indices[slot], p));
            for (index, generated) in indices.into_iter().zip(generated) {
                results[index] = Some(generated.map_err(JobError::from));
            }
        }
        results.into_iter().map(|r| r.expect("every job gets a result")).collect()
    }

    fn check(&self, job: &Job) -> Result<(), JobError> {
        if self.models.contains_key(&job.model) {
            return Ok(());
        }
        let mut known: Vec<&str> = self.models().collect();
        known.sort_unstable();
        Err(JobError::Permanent(format!("unknown model `{}`; this worker serves: {}", job.model, known.join(", "))))
    }
}

/// Model and engine batch key: jobs equal in both can share U-Net calls.
type BatchGroupKey = (String, BatchKey);

/// Groups items with equal keys, groups and members in first-seen order. Linear search over
/// `PartialEq` keys: a batch holds a handful of jobs.
pub fn group_by_key<T, K: PartialEq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let item_key = key(&item);
        match groups.iter_mut().find(|(k, _)| *k == item_key) {
            Some((_, group)) => group.push(item),
            None => groups.push((item_key, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// The key under which [`Engines::run_batch`] groups a job.
pub fn batch_key(job: &Job) -> BatchGroupKey {
    (job.model.clone(), BatchKey::of(&generation_request(job)))
}

/// The engine's sampler for a job's. The engine keeps its own enum (it knows nothing of the wire
/// types); the match is exhaustive, so a sampler added on one side only does not compile.
fn sampler_kind(sampler: Sampler) -> SamplerKind {
    match sampler {
        Sampler::Pndm => SamplerKind::Pndm,
        Sampler::Ddim => SamplerKind::Ddim,
        Sampler::Euler => SamplerKind::Euler,
        Sampler::EulerAncestral => SamplerKind::EulerAncestral,
        Sampler::DpmSolverMultistep => SamplerKind::DpmSolverMultistep,
    }
}

fn output_format(format: ImageFormat) -> OutputFormat {
    match format {
        ImageFormat::Png => OutputFormat::Png,
        ImageFormat::Jpeg => OutputFormat::Jpeg,
        ImageFormat::Webp => OutputFormat::Webp,
    }
}

fn generation_request(job: &Job) -> GenerationRequest {
    GenerationRequest {
        prompt: job.prompt.clone(),
        negative_prompt: job.negative_prompt.clone(),
        seed: job.seed,
        steps: job.steps as usize,
        guidance_scale: job.guidance_scale,
        sampler: sampler_kind(job.sampler),
        sampler_options: SamplerOptions { karras_sigmas: job.karras_sigmas },
        width: Some(job.width as usize),
        height: Some(job.height as usize),
        init_latents: None,
        upscale: job.upscale,
        // The worker's configuration, not the job, decides this: `Engines` sets it before running.
        tiling: Default::default(),
    }
}

/// Marks and encodes one generated image as the job asks. CPU work of its own (423–556 ms an
/// image at 1024 px in the H100 runs), so the consumer runs it beside the engine, not under it.
pub fn render(job: &Job, generated: &Generated) -> Result<RenderedImage, JobError> {
    let format = output_format(job.format);
    let provenance = Provenance {
        model: job.model.clone(),
        seed: job.seed,
        steps: job.steps,
        sampler: job.sampler.name().to_owned(),
        prompt: job.prompt.clone(),
        negative_prompt: job.negative_prompt.clone(),
        extra: [("guidance_scale".to_owned(), job.guidance_scale.to_string()), ("job_id".to_owned(), job.id.clone())]
            .into_iter()
            .chain(job.karras_sigmas.map(|karras| ("karras_sigmas".to_owned(), karras.to_string())))
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
        batch_size: generated.batch_size,
    })
}
