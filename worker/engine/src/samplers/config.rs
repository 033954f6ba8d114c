//! `scheduler_config.json` parsed into types, with diffusers' defaults for absent fields.
//!
//! The design decision a newcomer will question: unknown fields are accepted (real configs carry
//! `_class_name`, `_diffusers_version` and settings of other scheduler classes), but every field
//! that changes the math of a sampler here is declared, so a value this engine does not implement
//! (`thresholding: true`, `rescale_betas_zero_snr: true`, …) is refused by [`super::build`] instead
//! of being ignored silently. Fields whose default differs between diffusers classes are `Option`s,
//! resolved by the sampler that reads them, because diffusers' `Class.from_config` does the same.

use std::path::Path;

use serde::Deserialize;

use super::{SamplerError, SamplerKind};

/// A model's `scheduler/scheduler_config.json`. Parse once per model with [`Self::from_file`].
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    /// Length of the training noise schedule (diffusers default 1000).
    #[serde(default = "default_num_train_timesteps")]
    pub num_train_timesteps: usize,
    /// First beta of the training schedule (default 0.0001).
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// Last beta of the training schedule (default 0.02).
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// How betas go from `beta_start` to `beta_end` (default linear).
    #[serde(default)]
    pub beta_schedule: BetaSchedule,
    /// Explicit betas, overriding the three fields above.
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// Added to `leading` timesteps (default 0; Stable Diffusion 1.x uses 1).
    #[serde(default)]
    pub steps_offset: usize,
    /// Whether the step past timestep 0 uses alpha_cumprod = 1 rather than alpha_cumprod[0].
    /// Default: false for PNDM, true for DDIM (which are the only readers).
    #[serde(default)]
    pub set_alpha_to_one: Option<bool>,
    /// PNDM: start with pseudo linear multistep steps instead of 12 Runge-Kutta calls (default false).
    #[serde(default)]
    pub skip_prk_steps: bool,
    /// What the U-Net predicts (default epsilon).
    #[serde(default)]
    pub prediction_type: PredictionType,
    /// How inference timesteps are spread. Default: leading for PNDM and DDIM, linspace for the
    /// Euler samplers and DPM++.
    #[serde(default)]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// DDIM: clamp the predicted clean sample to ±`clip_sample_range` (default true).
    #[serde(default)]
    pub clip_sample: Option<bool>,
    /// DDIM: bound for `clip_sample` (default 1.0).
    #[serde(default = "default_clip_sample_range")]
    pub clip_sample_range: f64,
    /// Euler and DPM++: Karras et al. sigma spacing (default false); `SamplerOptions` overrides it.
    #[serde(default)]
    pub use_karras_sigmas: Option<bool>,
    /// Euler with karras sigmas: smallest sigma (default: the schedule's).
    #[serde(default)]
    pub sigma_min: Option<f64>,
    /// Euler with karras sigmas: largest sigma (default: the schedule's).
    #[serde(default)]
    pub sigma_max: Option<f64>,
    /// DPM++: second-order update formula (default midpoint).
    #[serde(default)]
    pub solver_type: SolverType,
    /// DPM++: cuts the schedule where lambda(t) falls below this (default: never). JSON has no
    /// infinity, so absent or null means minus infinity, as in diffusers.
    #[serde(default)]
    pub lambda_min_clipped: Option<f64>,

    // Settings with other math than this engine implements; parsed only to be refused.
    /// DDIM, DPM++: dynamic thresholding (refused when true).
    #[serde(default)]
    pub thresholding: bool,
    /// Zero terminal SNR rescaling (refused when true).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    /// Euler, DPM++: exponential sigma spacing (refused when true).
    #[serde(default)]
    pub use_exponential_sigmas: Option<bool>,
    /// Euler, DPM++: beta-distribution sigma spacing (refused when true).
    #[serde(default)]
    pub use_beta_sigmas: Option<bool>,
    /// DPM++: uniform-lambda spacing (refused when true).
    #[serde(default)]
    pub use_lu_lambdas: Option<bool>,
    /// DPM++: flow-matching sigmas (refused when true).
    #[serde(default)]
    pub use_flow_sigmas: Option<bool>,
    /// Euler, DPM++: the sigma after the last step (only `zero`, the default, is implemented).
    #[serde(default)]
    pub final_sigmas_type: FinalSigmasType,
    /// Euler: sigma interpolation (only `linear`, the default, is implemented).
    #[serde(default)]
    pub interpolation_type: InterpolationType,
    /// Euler: timestep values passed to the U-Net (`continuous` with v-prediction is refused).
    #[serde(default)]
    pub timestep_type: TimestepType,
}

/// diffusers `beta_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    #[default]
    Linear,
    /// Linear in sqrt(beta): Stable Diffusion's schedule.
    ScaledLinear,
    /// Nichol & Dhariwal's cosine schedule, betas capped at 0.999.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// diffusers `prediction_type`: what the U-Net outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The noise (Stable Diffusion 1.x, SDXL).
    #[default]
    Epsilon,
    /// The velocity alpha*noise - sigma*x0 (Stable Diffusion 2.x 768).
    VPrediction,
    /// The clean sample itself.
    Sample,
}

/// diffusers `timestep_spacing` (Lin et al. 2023, table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

/// diffusers `solver_type` for DPM-Solver++'s second-order step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverType {
    #[default]
    Midpoint,
    Heun,
}

/// diffusers `final_sigmas_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    #[default]
    Zero,
    SigmaMin,
}

/// diffusers `interpolation_type` (Euler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterpolationType {
    #[default]
    Linear,
    LogLinear,
}

/// diffusers `timestep_type` (Euler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    #[default]
    Discrete,
    Continuous,
}

fn default_num_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_clip_sample_range() -> f64 {
    1.0
}

impl Default for SchedulerConfig {
    /// diffusers' defaults, as if `scheduler_config.json` were `{}`.
    fn default() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }
}

impl SchedulerConfig {
    /// Reads and validates a `scheduler_config.json`; errors name the file and the bad field.
    pub fn from_file(path: &Path) -> Result<Self, SamplerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SamplerError::ConfigRead { path: path.to_owned(), source })?;
        Self::from_json(&text).map_err(|err| match err {
            JsonError::Syntax(message) => SamplerError::ConfigSyntax { path: path.to_owned(), message },
            JsonError::Field { field, message } => SamplerError::ConfigField { path: path.to_owned(), field, message },
        })
    }

    fn from_json(text: &str) -> Result<Self, JsonError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(JsonError::Syntax("the top level is not an object".into()));
        };
        let config = match Self::deserialize(&value) {
            Ok(config) => config,
            // serde_json says what is wrong but not where. Every field has a default, so a
            // one-field object fails exactly when that field's value is bad: that finds the field.
            Err(whole) => {
                let culprit = object.iter().find_map(|(key, field_value)| {
                    let alone = serde_json::Value::Object([(key.clone(), field_value.clone())].into_iter().collect());
                    Self::deserialize(&alone).err().map(|e| (key.clone(), e))
                });
                return Err(match culprit {
                    Some((field, e)) => JsonError::Field { field, message: e.to_string() },
                    None => JsonError::Syntax(whole.to_string()),
                });
            }
        };
        config.validate().map_err(|e| match e {
            SamplerError::InvalidConfig { field, message } => JsonError::Field { field: field.to_owned(), message },
            other => JsonError::Syntax(other.to_string()),
        })?;
        Ok(config)
    }

    /// Checks values that parse but cannot describe a noise schedule.
    pub fn validate(&self) -> Result<(), SamplerError> {
        let invalid = |field: &'static str, message: String| Err(SamplerError::InvalidConfig { field, message });
        if self.num_train_timesteps == 0 {
            return invalid("num_train_timesteps", "must be at least 1 (got 0)".into());
        }
        match &self.trained_betas {
            Some(betas) => {
                if betas.len() != self.num_train_timesteps {
                    return invalid(
                        "trained_betas",
                        format!(
                            "must hold num_train_timesteps = {} values (got {})",
                            self.num_train_timesteps,
                            betas.len()
                        ),
                    );
                }
                if let Some(bad) = betas.iter().find(|b| !(**b > 0.0 && **b < 1.0)) {
                    return invalid("trained_betas", format!("values must be between 0 and 1, exclusive (got {bad})"));
                }
            }
            None => {
                for (field, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                    if !(value > 0.0 && value < 1.0) {
                        return invalid(field, format!("must be between 0 and 1, exclusive (got {value})"));
                    }
                }
            }
        }
        if self.steps_offset >= self.num_train_timesteps {
            return invalid(
                "steps_offset",
                format!("must be below num_train_timesteps = {} (got {})", self.num_train_timesteps, self.steps_offset),
            );
        }
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return invalid("clip_sample_range", format!("must be positive (got {})", self.clip_sample_range));
        }
        for (field, value) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(value) = value.filter(|v| !(*v > 0.0 && v.is_finite())) {
                return invalid(field, format!("must be positive (got {value})"));
            }
        }
        if let Some(lambda) = self.lambda_min_clipped.filter(|l| l.is_nan()) {
            return invalid("lambda_min_clipped", format!("must be a number (got {lambda})"));
        }
        Ok(())
    }

    /// The spacing the diffusers class of `kind` uses when the config does not say.
    pub(crate) fn spacing_for(&self, kind: SamplerKind) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(match kind {
            SamplerKind::Pndm | SamplerKind::Ddim => TimestepSpacing::Leading,
            SamplerKind::Euler | SamplerKind::EulerAncestral | SamplerKind::DpmSolverMultistep => {
                TimestepSpacing::Linspace
            }
        })
    }

    /// Refuses settings that the diffusers class of `kind` reads but this engine does not
    /// implement. Settings the class does not have are ignored, as `from_config` ignores them.
    pub(crate) fn check_supported(&self, kind: SamplerKind) -> Result<(), SamplerError> {
        use SamplerKind::*;
        let unsupported =
            |field: &'static str, value: String| Err(SamplerError::UnsupportedConfig { sampler: kind, field, value });
        let flags = [
            ("thresholding", Some(self.thresholding), &[Ddim, DpmSolverMultistep][..]),
            (
                "rescale_betas_zero_snr",
                Some(self.rescale_betas_zero_snr),
                &[Ddim, Euler, EulerAncestral, DpmSolverMultistep][..],
            ),
            ("use_exponential_sigmas", self.use_exponential_sigmas, &[Euler, DpmSolverMultistep][..]),
            ("use_beta_sigmas", self.use_beta_sigmas, &[Euler, DpmSolverMultistep][..]),
            ("use_lu_lambdas", self.use_lu_lambdas, &[DpmSolverMultistep][..]),
            ("use_flow_sigmas", self.use_flow_sigmas, &[DpmSolverMultistep][..]),
        ];
        for (field, value, readers) in flags {
            if value == Some(true) && readers.contains(&kind) {
                return unsupported(field, "true".into());
            }
        }
        if self.prediction_type == PredictionType::Sample && matches!(kind, Pndm | EulerAncestral) {
            // diffusers raises for these two as well.
            return unsupported("prediction_type", "\"sample\"".into());
        }
        if self.final_sigmas_type != FinalSigmasType::Zero && matches!(kind, Euler | DpmSolverMultistep) {
            return unsupported("final_sigmas_type", "\"sigma_min\"".into());
        }
        if kind == Euler {
            if self.interpolation_type != InterpolationType::Linear {
                return unsupported("interpolation_type", "\"log_linear\"".into());
            }
            if self.timestep_type == TimestepType::Continuous && self.prediction_type == PredictionType::VPrediction {
                return unsupported("timestep_type", "\"continuous\" (with v_prediction)".into());
            }
        }
        Ok(())
    }
}

enum JsonError {
    Syntax(String),
    Field { field: String, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_error(json: &str) -> (String, String) {
        match SchedulerConfig::from_json(json) {
            Err(JsonError::Field { field, message }) => (field, message),
            Err(JsonError::Syntax(message)) => panic!("expected a field error, got syntax: {message}"),
            Ok(config) => panic!("expected an error, parsed {config:?}"),
        }
    }

    #[test]
    fn empty_object_gives_diffusers_defaults() {
        let config = SchedulerConfig::default();
        assert_eq!(config.num_train_timesteps, 1000);
        assert_eq!(config.beta_start, 0.0001);
        assert_eq!(config.beta_schedule, BetaSchedule::Linear);
        assert_eq!(config.prediction_type, PredictionType::Epsilon);
        assert_eq!(config.timestep_spacing, None);
        assert_eq!(config.spacing_for(SamplerKind::Ddim), TimestepSpacing::Leading);
        assert_eq!(config.spacing_for(SamplerKind::Euler), TimestepSpacing::Linspace);
    }

    #[test]
    fn bad_enum_value_names_the_field_and_the_valid_values() {
        let (field, message) = field_error(r#"{"_class_name": "X", "beta_schedule": "cosine"}"#);
        assert_eq!(field, "beta_schedule");
        assert!(message.contains("scaled_linear"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let (field, _) = field_error(r#"{"num_train_timesteps": "many"}"#);
        assert_eq!(field, "num_train_timesteps");
    }

    #[test]
    fn invalid_value_names_the_field() {
        let (field, message) = field_error(r#"{"beta_start": 0.0}"#);
        assert_eq!(field, "beta_start");
        assert!(message.contains("got 0"), "{message}");
        let (field, _) = field_error(r#"{"num_train_timesteps": 4, "trained_betas": [0.1, 0.2]}"#);
        assert_eq!(field, "trained_betas");
    }
}
