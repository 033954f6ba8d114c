//! `auto`: each part of a model on the fastest setup this machine has, measured once.
//!
//! The measured wins on CPUs depend on the CPU: OpenVINO ran the VAE 1.45× and ESRGAN 1.15–1.2×
//! faster than the CPU provider on AVX-512 machines but was level on a Xeon's U-Net; the Winograd
//! rewrite gained 1.20× on Zen 4 and less on Zen 3; the whole-image ESRGAN beat 128-px tiles on
//! AVX-512 and lost on AVX2 (deploy/bench/speed/NOTES.md, session/SESSION.md). No fixed default is
//! fastest everywhere, so a worker set to `auto` times the candidates it can run, on its own CPU,
//! at start-up: the U-Net on each provider and prepared graph, the VAE on each provider, ESRGAN on
//! each provider and tile size. A candidate is kept only when its image stays within
//! [`PARITY_LEVELS`] of the reference setup's (every part on the CPU provider, the exported
//! graph, 128-px tiles), the bound the engine's own parity tests hold the CPU path to against
//! diffusers; so bf16, which moved Table 6 images by up to 22 levels, is not a candidate.
//!
//! The search costs a few calls of each part per candidate, bounded by a time budget; its result
//! is kept in the session cache (`worker.session_cache_dir`) under a key of the model's files, the
//! library, the CPU and the thread count, so a restarted worker loads its choice without measuring.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use ndarray::Array3;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};
use crate::model_dir::{ModelDir, UnetVariant};
use crate::parts::unet::Unet;
use crate::parts::upscaler::{Tiling, Upscaler};
use crate::parts::vae::VaeDecoder;
use crate::pipeline::{GenerationRequest, Pipeline};
use crate::runtime::{ExecutionProvider, Part, Providers, Runtime};
use crate::samplers::SamplerKind;
use crate::session_cache::{cpu_identity, hex, stamp};

/// How far a candidate's image may be from the reference setup's, in levels of 255: the bound of
/// the engine's parity tests (`worker/engine/tests/pipeline.rs`).
pub const PARITY_LEVELS: f32 = 2.0;

/// A candidate replaces the one in hand only when it is this much faster: two timings on a shared
/// machine differ by a few percent with nothing changed, and flipping on noise would make the
/// choice differ from start to start.
const MARGIN: f64 = 0.03;

/// Timed calls per candidate after its untimed first call; the fastest counts.
const TIMED_CALLS: usize = 2;

/// Bumped when the candidates or the measurement change, to retire every stored choice.
const FORMAT: u32 = 1;

/// What a worker's `execution_provider` names: one provider for every part, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderSetting {
    Auto,
    Fixed(ExecutionProvider),
}

impl ProviderSetting {
    /// The provider every part is set up on first: `auto` measures from the CPU provider.
    pub fn provider(self) -> ExecutionProvider {
        match self {
            Self::Auto => ExecutionProvider::Cpu,
            Self::Fixed(provider) => provider,
        }
    }
}

impl FromStr for ProviderSetting {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        s.parse().map(Self::Fixed).map_err(|_| {
            let names: Vec<&str> = ExecutionProvider::ALL.iter().map(|p| p.name()).collect();
            EngineError::invalid("execution provider", format!("`{s}` is not one of auto, {}", names.join(", ")))
        })
    }
}

/// What `auto` tries and how long it may take.
#[derive(Debug, Clone)]
pub struct AutotuneOptions {
    /// Measuring stops starting new candidates after this long; the best so far is kept.
    pub budget: Duration,
    /// The ESRGAN tilings to try; the first is the reference.
    pub tilings: Vec<Tiling>,
}

impl AutotuneOptions {
    /// ESRGAN in `tiling` (the reference) and on the whole image, within `budget`.
    pub fn tiled_or_whole(budget: Duration, tiling: Tiling) -> Self {
        Self { budget, tilings: vec![tiling, Tiling { tile: 0, ..tiling }] }
    }
}

impl Default for AutotuneOptions {
    fn default() -> Self {
        Self::tiled_or_whole(Duration::from_secs(300), Tiling::default())
    }
}

/// Where each part runs: what `auto` chose, or what was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    #[serde(with = "provider_name")]
    pub unet: ExecutionProvider,
    pub unet_variant: UnetVariant,
    #[serde(with = "provider_name")]
    pub vae_decoder: ExecutionProvider,
    #[serde(with = "provider_name")]
    pub upscaler: ExecutionProvider,
    /// ESRGAN tile side in input pixels; 0 = whole image.
    pub upscale_tile: usize,
}

impl Choice {
    /// The setup every candidate is compared with.
    fn reference(tiling: Tiling) -> Self {
        Self {
            unet: ExecutionProvider::Cpu,
            unet_variant: UnetVariant::Plain,
            vae_decoder: ExecutionProvider::Cpu,
            upscaler: ExecutionProvider::Cpu,
            upscale_tile: tiling.tile,
        }
    }

    pub fn providers(&self) -> Providers {
        Providers::all(ExecutionProvider::Cpu)
            .with(Part::Unet, self.unet)
            .with(Part::VaeDecoder, self.vae_decoder)
            .with(Part::Upscaler, self.upscaler)
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tile =
            if self.upscale_tile == 0 { "whole image".to_owned() } else { format!("{} px tiles", self.upscale_tile) };
        write!(
            f,
            "unet {} ({} graph), vae_decoder {}, upscaler {} ({tile})",
            self.unet,
            self.unet_variant.name(),
            self.vae_decoder,
            self.upscaler
        )
    }
}

/// One candidate as measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// The part's name in the model directory (`Part::name`).
    pub part: String,
    pub candidate: String,
    /// The part's time per call (the U-Net's per step), the fastest of the timed calls.
    pub ms: Option<f64>,
    /// Largest difference from the reference setup's image, in levels of 255.
    pub levels: Option<f32>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The setup every other candidate of the part is compared with.
    Reference,
    /// Faster by more than the margin, within the bound: it runs the part.
    Chosen,
    /// Not faster by more than the margin than the one kept.
    Slower,
    /// Its image left the parity bound.
    OutsideBound,
    /// It could not be built or run; the message says why.
    Failed(String),
    /// The time budget ran out before it was tried.
    Skipped,
}

/// A loaded model on its chosen setup.
pub struct Tuned {
    pub pipeline: Pipeline,
    pub choice: Choice,
    /// The candidates measured now; empty when the choice came from the cache.
    pub trials: Vec<Trial>,
    /// Where the choice is kept, when a session cache is configured.
    pub stored: Option<PathBuf>,
    pub from_cache: bool,
}

impl Tuned {
    pub fn tiling(&self, overlap: usize) -> Tiling {
        Tiling { tile: self.choice.upscale_tile, overlap }
    }
}

/// Loads the model at `dir` on the fastest setup within the parity bound: the stored choice when
/// the session cache has one for these files, library, CPU and threads, else measured now (and
/// stored). `runtime` must have every part on the CPU provider (its library decides which other
/// providers are candidates).
pub fn load_tuned(runtime: &Runtime, dir: &Path, options: &AutotuneOptions) -> Result<Tuned> {
    let model = ModelDir::open(dir)?;
    let stored = match runtime.session_cache() {
        Some(cache) => match choice_path(cache.dir(), &model, runtime, options) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!(model = %dir.display(), error = %e, "cannot key the stored autotune choice; measuring without storing");
                None
            }
        },
        None => None,
    };
    if let Some(path) = &stored {
        match read_choice(path) {
            Ok(Some(choice)) => {
                let pipeline = load_choice(runtime, dir, &choice)?;
                tracing::info!(model = %dir.display(), %choice, stored = %path.display(), "autotune: the stored choice");
                return Ok(Tuned { pipeline, choice, trials: Vec::new(), stored, from_cache: true });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(stored = %path.display(), error = %e, "autotune: the stored choice does not read; measuring again")
            }
        }
    }
    let started = Instant::now();
    let (pipeline, choice, trials) = Search::new(runtime, &model, options)?.run()?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    for trial in &trials {
        tracing::info!(part = %trial.part, candidate = %trial.candidate, ms = ?trial.ms, levels = ?trial.levels, verdict = ?trial.verdict, "autotune: measured");
    }
    tracing::info!(model = %dir.display(), %choice, elapsed_ms, "autotune: chosen");
    if let Some(path) = &stored {
        if let Err(e) = write_choice(path, &choice, &trials) {
            tracing::warn!(stored = %path.display(), error = %e, "autotune: cannot store the choice; the next start measures again");
        }
    }
    Ok(Tuned { pipeline, choice, trials, stored, from_cache: false })
}

/// The model on a known choice, without measuring.
pub fn load_choice(runtime: &Runtime, dir: &Path, choice: &Choice) -> Result<Pipeline> {
    Pipeline::load_variant(&runtime.with_providers(choice.providers())?, dir, choice.unet_variant)
}

/// The measurement: the reference setup first, then each part's candidates in turn, each swapped
/// into the pipeline in place of the best so far.
struct Search<'a> {
    runtime: &'a Runtime,
    model: &'a ModelDir,
    options: &'a AutotuneOptions,
    started: Instant,
    trials: Vec<Trial>,
}

impl<'a> Search<'a> {
    fn new(runtime: &'a Runtime, model: &'a ModelDir, options: &'a AutotuneOptions) -> Result<Self> {
        if options.tilings.is_empty() {
            return Err(EngineError::invalid("autotune", "no ESRGAN tiling to try; name at least one"));
        }
        Ok(Self { runtime, model, options, started: Instant::now(), trials: Vec::new() })
    }

    fn run(mut self) -> Result<(Pipeline, Choice, Vec<Trial>)> {
        let mut choice = Choice::reference(self.options.tilings[0]);
        let reference_runtime = self.runtime.with_providers(choice.providers())?;
        let mut pipeline = Pipeline::load(&reference_runtime, self.model.root())?;
        let probe = probe_request();

        // The U-Net and the VAE: one short generation, timed by its own stage timings.
        let (reference, unet_ms, vae_ms) = self.time_generation_warm(&mut pipeline, &probe)?;
        self.record(Part::Unet, "cpu, plain graph", Some(unet_ms), Some(0.0), Verdict::Reference);
        self.record(Part::VaeDecoder, "cpu", Some(vae_ms), Some(0.0), Verdict::Reference);
        let mut best_unet = unet_ms;
        for (provider, variant) in self.unet_candidates() {
            let label = format!("{provider}, {} graph", variant.name());
            let Some(runtime) = self.candidate_runtime(Part::Unet, &label, provider) else { continue };
            let path = self.model.unet_variant(variant);
            let loaded = Unet::load(&runtime, &path, 2);
            let Some(unet) = self.loaded(Part::Unet, &label, loaded) else { continue };
            let previous = pipeline.swap_unet(unet);
            let measured = self.time_generation_warm(&mut pipeline, &probe).map(|(image, ms, _)| (image, ms));
            match self.judge(Part::Unet, &label, measured, &reference, best_unet) {
                Some(ms) => {
                    best_unet = ms;
                    (choice.unet, choice.unet_variant) = (provider, variant);
                }
                None => drop(pipeline.swap_unet(previous)),
            }
        }
        if self.runtime.has_provider(ExecutionProvider::OpenVino) {
            let (provider, label) = (ExecutionProvider::OpenVino, "openvino");
            if let Some(runtime) = self.candidate_runtime(Part::VaeDecoder, label, provider) {
                let loaded = self
                    .model
                    .vae_config()
                    .and_then(|config| VaeDecoder::load(&runtime, &self.model.vae_decoder(), &config));
                if let Some(vae) = self.loaded(Part::VaeDecoder, label, loaded) {
                    let previous = pipeline.swap_vae(vae);
                    let measured = self.time_generation_warm(&mut pipeline, &probe).map(|(image, _, ms)| (image, ms));
                    match self.judge(Part::VaeDecoder, label, measured, &reference, vae_ms) {
                        Some(_) => choice.vae_decoder = provider,
                        None => drop(pipeline.swap_vae(previous)),
                    }
                }
            }
        }

        // ESRGAN: on the reference image, each provider with each tiling.
        if pipeline.upscaler_mut().is_some() {
            self.tune_upscaler(&mut pipeline, &reference, &mut choice)?;
        }
        Ok((pipeline, choice, self.trials))
    }

    fn tune_upscaler(&mut self, pipeline: &mut Pipeline, decoded: &Array3<f32>, choice: &mut Choice) -> Result<()> {
        let tilings = self.options.tilings.clone();
        let upscaler = pipeline.upscaler_mut().expect("checked by the caller");
        let (reference, reference_ms) = time_upscale(upscaler, decoded, tilings[0])?;
        self.record(
            Part::Upscaler,
            &upscale_label(ExecutionProvider::Cpu, tilings[0]),
            Some(reference_ms),
            Some(0.0),
            Verdict::Reference,
        );
        let mut best = reference_ms;
        let mut providers = vec![ExecutionProvider::Cpu];
        if self.runtime.has_provider(ExecutionProvider::OpenVino) {
            providers.push(ExecutionProvider::OpenVino);
        }
        for provider in providers {
            let mut own: Option<Upscaler> = None;
            if provider != ExecutionProvider::Cpu {
                let label = upscale_label(provider, tilings[0]);
                let Some(runtime) = self.candidate_runtime(Part::Upscaler, &label, provider) else {
                    continue;
                };
                let path = self.model.upscaler().expect("the pipeline has an upscaler");
                let loaded = Upscaler::load(&runtime, &path);
                let Some(upscaler) = self.loaded(Part::Upscaler, &label, loaded) else { continue };
                own = Some(upscaler);
            }
            for &tiling in &tilings {
                if provider == ExecutionProvider::Cpu && tiling == tilings[0] {
                    continue;
                }
                let label = upscale_label(provider, tiling);
                if self.over_budget(Part::Upscaler, &label) {
                    continue;
                }
                let upscaler = match own.as_mut() {
                    Some(own) => own,
                    None => pipeline.upscaler_mut().expect("checked by the caller"),
                };
                let measured = time_upscale(upscaler, decoded, tiling);
                if let Some(ms) = self.judge(Part::Upscaler, &label, measured, &reference, best) {
                    best = ms;
                    (choice.upscaler, choice.upscale_tile) = (provider, tiling.tile);
                    if let Some(chosen) = own.take() {
                        pipeline.swap_upscaler(chosen);
                        // Later tilings of this provider run on the session now in the pipeline.
                    }
                }
            }
        }
        Ok(())
    }

    /// A generation's image, U-Net ms per step and VAE ms: the fastest of the timed runs.
    fn time_generation(&self, pipeline: &mut Pipeline, probe: &GenerationRequest) -> Result<(Array3<f32>, f64, f64)> {
        let mut image = None;
        let (mut unet, mut vae) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..TIMED_CALLS {
            let generated = pipeline.generate(probe, &mut |_| std::ops::ControlFlow::Continue(()))?;
            unet = unet.min(generated.timings.unet_per_step);
            vae = vae.min(generated.timings.vae);
            image = Some(generated.image);
        }
        Ok((image.expect("at least one timed call"), unet, vae))
    }

    /// [`Search::time_generation`] after one untimed call: a new session's first call plans its
    /// memory (or, on OpenVINO, compiles its graph).
    fn time_generation_warm(
        &self,
        pipeline: &mut Pipeline,
        probe: &GenerationRequest,
    ) -> Result<(Array3<f32>, f64, f64)> {
        pipeline.generate(probe, &mut |_| std::ops::ControlFlow::Continue(()))?;
        self.time_generation(pipeline, probe)
    }

    fn unet_candidates(&self) -> Vec<(ExecutionProvider, UnetVariant)> {
        let mut candidates = Vec::new();
        if self.runtime.has_provider(ExecutionProvider::OpenVino) {
            candidates.push((ExecutionProvider::OpenVino, UnetVariant::Plain));
        }
        // The rewrite's operators are CPU-provider kernels.
        if self.model.unet_variant(UnetVariant::Winograd).exists() {
            candidates.push((ExecutionProvider::Cpu, UnetVariant::Winograd));
        }
        candidates
    }

    /// The runtime of a candidate with `part` on `provider`; `None` (recorded) when over budget.
    fn candidate_runtime(&mut self, part: Part, label: &str, provider: ExecutionProvider) -> Option<Runtime> {
        if self.over_budget(part, label) {
            return None;
        }
        let providers = Providers::all(ExecutionProvider::Cpu).with(part, provider);
        let runtime = self.runtime.with_providers(providers);
        self.loaded(part, label, runtime)
    }

    /// The loaded thing, or `None` with the failure recorded: a candidate that cannot load is
    /// not chosen, and the worker still starts on what can.
    fn loaded<T>(&mut self, part: Part, label: &str, loaded: Result<T>) -> Option<T> {
        match loaded {
            Ok(value) => Some(value),
            Err(e) => {
                self.record(part, label, None, None, Verdict::Failed(e.to_string()));
                None
            }
        }
    }

    fn over_budget(&mut self, part: Part, label: &str) -> bool {
        let over = self.started.elapsed() > self.options.budget;
        if over {
            self.record(part, label, None, None, Verdict::Skipped);
        }
        over
    }

    /// Records a measured candidate and returns its time when it should replace the best so far.
    fn judge(
        &mut self,
        part: Part,
        label: &str,
        measured: Result<(Array3<f32>, f64)>,
        reference: &Array3<f32>,
        best_ms: f64,
    ) -> Option<f64> {
        let (image, ms) = match measured {
            Ok(measured) => measured,
            Err(e) => {
                self.record(part, label, None, None, Verdict::Failed(e.to_string()));
                return None;
            }
        };
        let levels = levels_apart(&image, reference);
        let verdict = decide(ms, levels, best_ms);
        let chosen = verdict == Verdict::Chosen;
        self.record(part, label, Some(ms), Some(levels), verdict);
        chosen.then_some(ms)
    }

    fn record(&mut self, part: Part, candidate: &str, ms: Option<f64>, levels: Option<f32>, verdict: Verdict) {
        self.trials.push(Trial { part: part.name().to_owned(), candidate: candidate.to_owned(), ms, levels, verdict });
    }
}

/// Whether a candidate measured at `ms`, `levels` from the reference, replaces the best so far.
fn decide(ms: f64, levels: f32, best_ms: f64) -> Verdict {
    if levels.is_nan() || levels > PARITY_LEVELS {
        Verdict::OutsideBound
    } else if ms < best_ms * (1.0 - MARGIN) {
        Verdict::Chosen
    } else {
        Verdict::Slower
    }
}

/// Two generation steps at the model's default size with guidance: every part call a job makes,
/// at its shapes, for a fixed seed.
fn probe_request() -> GenerationRequest {
    GenerationRequest {
        steps: 2,
        sampler: SamplerKind::Ddim,
        upscale: false,
        seed: 0,
        ..GenerationRequest::new("autotune probe: a red silk dress")
    }
}

/// The upscaled image and ESRGAN's ms for it: one untimed call per new tile shape, then the
/// fastest of the timed ones.
fn time_upscale(upscaler: &mut Upscaler, image: &Array3<f32>, tiling: Tiling) -> Result<(Array3<f32>, f64)> {
    let (_, height, width) = image.dim();
    upscaler.warm_up(height, width, tiling)?;
    let mut fastest = f64::INFINITY;
    let mut upscaled = None;
    for _ in 0..TIMED_CALLS {
        let started = Instant::now();
        let out = upscaler.upscale(image.view(), tiling)?;
        fastest = fastest.min(started.elapsed().as_secs_f64() * 1e3);
        upscaled = Some(out);
    }
    Ok((upscaled.expect("at least one timed call"), fastest))
}

fn upscale_label(provider: ExecutionProvider, tiling: Tiling) -> String {
    match tiling.tile {
        0 => format!("{provider}, whole image"),
        tile => format!("{provider}, {tile} px tiles"),
    }
}

/// The largest per-pixel difference of two `[3, H, W]` images in [0, 1], in levels of 255.
fn levels_apart(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
    if a.dim() != b.dim() {
        return f32::NAN;
    }
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) * 255.0
}

/// The stored choice's file: `<cache>/autotune/<key>.json`, the key covering everything the
/// timings depend on.
fn choice_path(cache: &Path, model: &ModelDir, runtime: &Runtime, options: &AutotuneOptions) -> io::Result<PathBuf> {
    let mut key = Sha256::new();
    key.update(format!("format {FORMAT}\nengine {}\n", env!("CARGO_PKG_VERSION")));
    let root = fs::canonicalize(model.root())?;
    key.update(format!("model {}\n", root.display()));
    for folder in ["text_encoder", "unet", "unet/winograd", "vae_decoder", "upscaler"] {
        let Ok(entries) = fs::read_dir(root.join(folder)) else { continue };
        let mut files: Vec<_> = entries.collect::<io::Result<_>>()?;
        files.sort_by_key(fs::DirEntry::file_name);
        for file in files.iter().filter(|f| f.file_type().is_ok_and(|t| t.is_file())) {
            key.update(format!("file {folder}/{:?} {}\n", file.file_name(), stamp(&file.path())?));
        }
    }
    let library = runtime.library();
    key.update(format!("library {} {}\n", fs::canonicalize(library)?.display(), stamp(library)?));
    key.update(format!("cpu {}\nthreads {:?}\n", cpu_identity()?, runtime.intra_threads()));
    key.update(format!("tilings {:?}\n", options.tilings));
    let name = format!("{}-{}.json", model.name(), &hex(&key.finalize())[..16]);
    Ok(cache.join("autotune").join(name))
}

/// What the stored file holds: the choice, and the measurements that made it, for people.
#[derive(Serialize, Deserialize)]
struct Stored {
    choice: Choice,
    trials: Vec<Trial>,
}

fn read_choice(path: &Path) -> io::Result<Option<Choice>> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice::<Stored>(&bytes).map(|stored| Some(stored.choice)).map_err(io::Error::other)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Written beside its final name and renamed into place: never half a file to read.
fn write_choice(path: &Path, choice: &Choice, trials: &[Trial]) -> io::Result<()> {
    let folder = path.parent().expect("the choice's path has a folder");
    fs::create_dir_all(folder)?;
    let mut staged = tempfile::NamedTempFile::new_in(folder)?;
    serde_json::to_writer_pretty(&mut staged, &Stored { choice: *choice, trials: trials.to_vec() })
        .map_err(io::Error::other)?;
    staged.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `ExecutionProvider` by its configuration name in the stored file.
mod provider_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::runtime::ExecutionProvider;

    pub fn serialize<S: Serializer>(provider: &ExecutionProvider, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(provider.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ExecutionProvider, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candidate_is_chosen_only_when_faster_by_the_margin_and_within_the_bound() {
        assert_eq!(decide(80.0, 0.5, 100.0), Verdict::Chosen);
        assert_eq!(decide(98.0, 0.5, 100.0), Verdict::Slower, "2% is within the machine's noise");
        assert_eq!(decide(120.0, 0.0, 100.0), Verdict::Slower);
        assert_eq!(decide(50.0, 2.5, 100.0), Verdict::OutsideBound, "fast but off the reference");
        assert_eq!(decide(50.0, PARITY_LEVELS, 100.0), Verdict::Chosen, "the bound itself is inside");
        assert_eq!(decide(50.0, f32::NAN, 100.0), Verdict::OutsideBound, "another shape is never a match");
    }

    #[test]
    fn auto_or_a_provider_is_read_from_the_setting() {
        assert_eq!("auto".parse::<ProviderSetting>().unwrap(), ProviderSetting::Auto);
        assert_eq!("openvino".parse::<ProviderSetting>().unwrap(), ProviderSetting::Fixed(ExecutionProvider::OpenVino));
        let error = "fastest".parse::<ProviderSetting>().unwrap_err().to_string();
        assert!(error.contains("`fastest`") && error.contains("auto, cpu, cuda, tensorrt, openvino"), "{error}");
    }

    #[test]
    fn a_choice_names_every_part_and_reads_back_as_written() {
        let choice = Choice {
            unet: ExecutionProvider::Cpu,
            unet_variant: UnetVariant::Winograd,
            vae_decoder: ExecutionProvider::OpenVino,
            upscaler: ExecutionProvider::OpenVino,
            upscale_tile: 0,
        };
        assert_eq!(
            choice.to_string(),
            "unet cpu (winograd graph), vae_decoder openvino, upscaler openvino (whole image)"
        );
        assert_eq!(choice.providers().to_string(), "cpu (vae_decoder: openvino, upscaler: openvino)");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autotune/model.json");
        write_choice(&path, &choice, &[]).unwrap();
        assert_eq!(read_choice(&path).unwrap(), Some(choice));
        assert_eq!(read_choice(&dir.path().join("absent.json")).unwrap(), None);
        fs::write(&path, b"{\"choice\": {\"unet\": \"gpu\"}}").unwrap();
        assert!(read_choice(&path).is_err(), "a file that does not read is an error, not a choice");
    }
}
