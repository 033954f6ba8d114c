//! Euler: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"
//! (arXiv:2206.00364), algorithm 2 without churn, as diffusers 0.42.1
//! `schedulers/scheduling_euler_discrete.py` (`EulerDiscreteScheduler`) runs it.
//!
//! The design decision a newcomer will question: the sampler works on sigma-scaled latents
//! (x = x0 + sigma * noise), so the pipeline multiplies the initial noise by `init_noise_sigma`
//! and the U-Net input by `model_input_scale`, and the timesteps handed to the U-Net may be
//! fractional (linspace spacing, karras sigmas): they are sigma's position in the training
//! schedule, not an index.

use ndarray::{ArrayView4, ArrayViewMut4, Zip};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::{schedule, Sampler, SamplerError, SamplerKind};

pub(crate) struct Euler {
    /// One sigma per call, then 0: the sigma the last step lands on.
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    init_noise_sigma: f32,
    prediction: PredictionType,
}

impl Euler {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize, karras: bool) -> Result<Self, SamplerError> {
        config.check_supported(SamplerKind::Euler)?;
        let spacing = config.spacing_for(SamplerKind::Euler);
        let mut timesteps = schedule::float_timesteps(spacing, config, steps);
        let train_sigmas = schedule::train_sigmas(&schedule::alphas_cumprod(config));
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| schedule::interp(f64::from(t), &train_sigmas)).collect();
        if karras {
            let sigma_min = config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = schedule::karras_sigmas(sigma_min, sigma_max, steps);
            let log_sigmas = schedule::log_f32(&train_sigmas);
            timesteps = sigmas.iter().map(|&sigma| schedule::sigma_to_t(sigma, &log_sigmas) as f32).collect();
        }
        let sigmas: Vec<f32> = sigmas.into_iter().map(|s| s as f32).chain([0.0]).collect();
        Ok(Euler {
            init_noise_sigma: init_noise_sigma(&sigmas, spacing),
            sigmas,
            timesteps,
            prediction: config.prediction_type,
        })
    }
}

/// diffusers' `init_noise_sigma` for the Euler schedulers: the largest sigma, or sqrt(sigma² + 1)
/// for "leading" spacing, whose first timestep sits below the end of the training schedule.
pub(super) fn init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f32 {
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// The predicted clean sample for sigma-scaled latents `x`, in diffusers' order of operations.
pub(super) fn predict_x0(prediction: PredictionType, sigma: f32, x: f32, out: f32) -> f32 {
    match prediction {
        PredictionType::Epsilon => x - sigma * out,
        PredictionType::VPrediction => out * (-sigma / (sigma * sigma + 1.0).sqrt()) + x / (sigma * sigma + 1.0),
        PredictionType::Sample => out,
    }
}

/// `scale_model_input`'s factor: 1/sqrt(sigma² + 1) brings sigma-scaled latents back to unit
/// variance, the input the U-Net was trained on.
pub(super) fn input_scale(sigma: f32) -> f32 {
    1.0 / (sigma * sigma + 1.0).sqrt()
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f32 {
        self.init_noise_sigma
    }

    fn model_input_scale(&self, call: usize) -> f32 {
        input_scale(self.sigmas[call])
    }

    fn step(
        &mut self,
        model_output: ArrayView4<f32>,
        call: usize,
        sample: ArrayViewMut4<f32>,
        _noise: &mut dyn FnMut(&mut [f32]),
    ) {
        // Stateless between calls, so any call order is accepted.
        super::check_call(SamplerKind::Euler, call, call, self.timesteps.len(), &model_output, &sample);
        // No churn (diffusers' s_churn = 0), so sigma_hat is sigma.
        let sigma = self.sigmas[call];
        let dt = self.sigmas[call + 1] - sigma;
        let prediction = self.prediction;
        Zip::from(sample).and(&model_output).for_each(|x, &out| {
            let x0 = predict_x0(prediction, sigma, *x, out);
            let derivative = (*x - x0) / sigma;
            *x += derivative * dt;
        });
    }
}
