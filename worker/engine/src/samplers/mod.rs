//! Samplers (diffusers calls them schedulers): pure step functions behind one trait.
//!
//! The design decision a newcomer will question: every sampler reproduces one diffusers scheduler
//! class number for number, quirks included (PNDM's repeated timestep, DDIM's `prev_timestep` that
//! ignores the spacing, Euler's fractional timesteps), and does its per-element arithmetic in `f32`
//! in diffusers' order of operations. Golden trajectories recorded from diffusers
//! (`tests/fixtures/samplers/`) then hold each sampler to 1e-5 relative error, which a "cleaner"
//! reformulation in `f64` would not meet at the steps where diffusers itself rounds.
//!
//! Flow: [`SchedulerConfig::from_file`] parses `scheduler/scheduler_config.json` once per model
//! (immutable, shared by every job); [`build`] validates a job's step count against it and returns
//! the per-run state as a `Box<dyn Sampler>`; the pipeline then calls, for each entry of
//! [`Sampler::timesteps`], [`Sampler::model_input_scale`] → U-Net → [`Sampler::step`].

mod config;
mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod pndm;
mod schedule;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use ndarray::{ArrayView4, ArrayViewMut4};

pub use config::{
    BetaSchedule, FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, SolverType, TimestepSpacing,
    TimestepType,
};

/// The most steps a job may ask for, whatever the model was trained with: past this, every
/// sampler here only repeats timesteps and the job is a mistake, not a quality setting.
pub const MAX_STEPS: usize = 1000;

/// The samplers the engine offers, by the names the CLI and the job messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// Pseudo numerical methods (diffusers `PNDMScheduler`), Stable Diffusion 1.x's default.
    Pndm,
    /// Deterministic DDIM, eta = 0 (`DDIMScheduler`).
    Ddim,
    /// Euler's method in sigma space (`EulerDiscreteScheduler`).
    Euler,
    /// Euler with fresh noise at every step (`EulerAncestralDiscreteScheduler`).
    EulerAncestral,
    /// DPM-Solver++ 2M (`DPMSolverMultistepScheduler`, `algorithm_type="dpmsolver++"`, order 2).
    DpmSolverMultistep,
}

impl SamplerKind {
    /// Every sampler, in the order help texts list them.
    pub const ALL: [SamplerKind; 5] = [
        SamplerKind::Pndm,
        SamplerKind::Ddim,
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::DpmSolverMultistep,
    ];

    /// The CLI name, which [`FromStr`] accepts back.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Pndm => "pndm",
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-a",
            SamplerKind::DpmSolverMultistep => "dpmpp-2m",
        }
    }

    fn valid_names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|kind| kind.name()).collect();
        names.join(", ")
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = SamplerError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| SamplerError::UnknownSampler { name: name.to_owned(), valid: Self::valid_names() })
    }
}

/// Per-job choices that override the model's scheduler config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplerOptions {
    /// Karras et al. (2022) sigma spacing; `None` keeps the config's `use_karras_sigmas`. Only
    /// `euler` and `dpmpp-2m` have it (as in diffusers); asking another sampler for it is an error.
    pub karras_sigmas: Option<bool>,
}

/// Everything that can be wrong with a sampler request. All are permanent: the same config and
/// request fail the same way on any worker, so a job that hits one should be dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("cannot read scheduler config {}: {source}; check that the model directory has scheduler/scheduler_config.json", path.display())]
    ConfigRead { path: PathBuf, source: std::io::Error },
    #[error("scheduler config {} is not a JSON object of scheduler settings: {message}; re-export it with diffusers' save_config", path.display())]
    ConfigSyntax { path: PathBuf, message: String },
    #[error("scheduler config {}: field `{field}` {message}; fix the value or delete the field to get diffusers' default", path.display())]
    ConfigField { path: PathBuf, field: String, message: String },
    /// A value that parses but cannot describe a noise schedule; [`SchedulerConfig::from_file`]
    /// reports it as [`SamplerError::ConfigField`] with the file's path.
    #[error("scheduler config field `{field}` {message}; fix the value or delete the field to get diffusers' default")]
    InvalidConfig { field: &'static str, message: String },
    #[error("scheduler config sets `{field}` to {value}, which the {sampler} sampler does not implement; remove the field or pick another sampler")]
    UnsupportedConfig { sampler: SamplerKind, field: &'static str, value: String },
    #[error("unknown sampler `{name}`; valid samplers are: {valid}")]
    UnknownSampler { name: String, valid: String },
    #[error("steps must be between 1 and {max} (got {got})")]
    Steps { got: usize, max: usize },
    #[error("the {sampler} sampler with this scheduler config needs at least {min} steps (got {got}): {why}")]
    TooFewSteps { sampler: SamplerKind, got: usize, min: usize, why: &'static str },
    #[error("{steps} steps with steps_offset {steps_offset} reach timestep {timestep}, past the model's last trained timestep {last}; use fewer steps or a scheduler config with steps_offset 0")]
    TimestepOutOfRange { steps: usize, steps_offset: usize, timestep: i64, last: usize },
    #[error("karras sigmas are only available for the euler and dpmpp-2m samplers, not {sampler}; drop the karras option or pick one of those")]
    KarrasUnsupported { sampler: SamplerKind },
}

/// Validates `steps` against `config` and builds the per-run state of sampler `kind`.
///
/// `steps` is the number of denoising steps a user asks for; [`Sampler::timesteps`] may hold more
/// U-Net calls (PNDM).
pub fn build(
    kind: SamplerKind,
    config: &SchedulerConfig,
    steps: usize,
    options: &SamplerOptions,
) -> Result<Box<dyn Sampler>, SamplerError> {
    config.validate()?;
    let max = config.num_train_timesteps.min(MAX_STEPS);
    if steps == 0 || steps > max {
        return Err(SamplerError::Steps { got: steps, max });
    }
    let karras = match kind {
        SamplerKind::Euler | SamplerKind::DpmSolverMultistep => {
            options.karras_sigmas.or(config.use_karras_sigmas).unwrap_or(false)
        }
        _ if options.karras_sigmas == Some(true) => return Err(SamplerError::KarrasUnsupported { sampler: kind }),
        _ => false,
    };
    Ok(match kind {
        SamplerKind::Pndm => Box::new(pndm::Pndm::new(config, steps)?),
        SamplerKind::Ddim => Box::new(ddim::Ddim::new(config, steps)?),
        SamplerKind::Euler => Box::new(euler::Euler::new(config, steps, karras)?),
        SamplerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(config, steps)?),
        SamplerKind::DpmSolverMultistep => {
            Box::new(dpm_solver_multistep::DpmSolverMultistep::new(config, steps, karras)?)
        }
    })
}

/// One run of a sampler: built for a step count, stepped once per U-Net call, then dropped.
///
/// Calls must come in order, `call` = 0, 1, … `timesteps().len() - 1`, with latents of one shape;
/// samplers that keep history (PNDM, DPM++) panic on any other order, which is a pipeline bug.
pub trait Sampler: Send {
    /// Timesteps the U-Net is called with, one entry per U-Net call, in order
    /// (PNDM with skip_prk_steps: N steps are N+1 calls, diffusers repeats one timestep).
    fn timesteps(&self) -> &[f32];
    /// Multiplier diffusers applies to the initial Gaussian latents (`init_noise_sigma`); 1 unless
    /// the sampler works in sigma space.
    fn init_noise_sigma(&self) -> f32 {
        1.0
    }
    /// Scalar diffusers' `scale_model_input` multiplies the latents by before the U-Net call number `call`
    /// (1/sqrt(sigma^2+1) for the Euler family, 1 otherwise). A scalar so the pipeline needs no extra tensor.
    fn model_input_scale(&self, _call: usize) -> f32 {
        1.0
    }
    /// Advance `sample` in place with the (already guided) U-Net output of call number `call`.
    /// `noise` fills a slice with standard-normal values; only ancestral samplers call it.
    fn step(
        &mut self,
        model_output: ArrayView4<f32>,
        call: usize,
        sample: ArrayViewMut4<f32>,
        noise: &mut dyn FnMut(&mut [f32]),
    );
}

/// Every timestep a schedule produced must index the training schedule; a large `steps_offset`
/// or step count can push one past the end, which `build` reports instead of panicking later.
fn check_timesteps_in_range(timesteps: &[i64], config: &SchedulerConfig, steps: usize) -> Result<(), SamplerError> {
    let last = config.num_train_timesteps - 1;
    match timesteps.iter().find(|&&t| t < 0 || t > last as i64) {
        Some(&timestep) => {
            Err(SamplerError::TimestepOutOfRange { steps, steps_offset: config.steps_offset, timestep, last })
        }
        None => Ok(()),
    }
}

/// The checks every `step` starts with: a call out of order or a shape mismatch is a pipeline bug
/// that would otherwise corrupt the history silently.
fn check_call(
    kind: SamplerKind,
    expected_call: usize,
    call: usize,
    calls: usize,
    model_output: &ArrayView4<f32>,
    sample: &ArrayViewMut4<f32>,
) {
    assert!(
        call == expected_call && call < calls,
        "{kind} sampler stepped with call {call}, expected call {expected_call} of {calls}"
    );
    assert_eq!(model_output.shape(), sample.shape(), "{kind} sampler: model output and sample shapes differ");
}

/// Allocates `buffer` on a sampler's first step (or if the latents change shape), then reuses it:
/// samplers learn the latent shape only from `step`.
fn ensure_shape(buffer: &mut ndarray::Array4<f32>, shape: (usize, usize, usize, usize)) {
    if buffer.dim() != shape {
        *buffer = ndarray::Array4::zeros(shape);
    }
}
