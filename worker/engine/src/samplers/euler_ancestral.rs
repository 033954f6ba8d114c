//! Euler ancestral: Song et al. 2021, "Score-Based Generative Modeling through Stochastic
//! Differential Equations" (arXiv:2011.13456) ancestral sampling in Karras et al.'s sigma
//! parametrisation (k-diffusion's `sample_euler_ancestral`), as diffusers 0.42.1
//! `schedulers/scheduling_euler_ancestral_discrete.py` (`EulerAncestralDiscreteScheduler`) runs it.
//!
//! The design decision a newcomer will question: noise comes from the caller's closure, drawn on
//! every step including the last (where its weight is 0), so that a caller replaying diffusers'
//! draws — the golden tests do — stays aligned call for call, and the job's seed stays the only
//! source of randomness.

use ndarray::{Array4, ArrayView4, ArrayViewMut4, Zip};

use super::config::{PredictionType, SchedulerConfig};
use super::euler::{init_noise_sigma, input_scale, predict_x0};
use super::{ensure_shape, schedule, Sampler, SamplerError, SamplerKind};

pub(crate) struct EulerAncestral {
    /// One sigma per call, then 0: the sigma the last step lands on.
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    init_noise_sigma: f32,
    prediction: PredictionType,
    /// Reused buffer for each step's Gaussian draw.
    noise: Array4<f32>,
}

impl EulerAncestral {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SamplerError> {
        config.check_supported(SamplerKind::EulerAncestral)?;
        let spacing = config.spacing_for(SamplerKind::EulerAncestral);
        let timesteps = schedule::float_timesteps(spacing, config, steps);
        let train_sigmas = schedule::train_sigmas(&schedule::alphas_cumprod(config));
        let sigmas: Vec<f32> =
            timesteps.iter().map(|&t| schedule::interp(f64::from(t), &train_sigmas) as f32).chain([0.0]).collect();
        Ok(EulerAncestral {
            init_noise_sigma: init_noise_sigma(&sigmas, spacing),
            sigmas,
            timesteps,
            prediction: config.prediction_type,
            noise: Array4::zeros((0, 0, 0, 0)),
        })
    }
}

impl Sampler for EulerAncestral {
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
        noise: &mut dyn FnMut(&mut [f32]),
    ) {
        // Stateless between calls apart from the noise buffer, so any call order is accepted.
        super::check_call(SamplerKind::EulerAncestral, call, call, self.timesteps.len(), &model_output, &sample);
        let sigma_from = self.sigmas[call];
        let sigma_to = self.sigmas[call + 1];
        // Split the step to sigma_to into a deterministic part down to sigma_down and fresh
        // noise of sigma_up, with sigma_down² + sigma_up² = sigma_to².
        let sigma_up =
            (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to) / (sigma_from * sigma_from)).sqrt();
        // Mathematically sigma_to⁴ / sigma_from² >= 0, but it rounds below 0 when sigma_from is
        // huge (cosine schedule: ~2e4), where diffusers takes the root of a negative and returns NaN.
        let sigma_down = (sigma_to * sigma_to - sigma_up * sigma_up).max(0.0).sqrt();
        let dt = sigma_down - sigma_from;

        ensure_shape(&mut self.noise, model_output.dim());
        noise(self.noise.as_slice_mut().expect("a freshly allocated array is contiguous"));
        let prediction = self.prediction;
        Zip::from(sample).and(&model_output).and(&self.noise).for_each(|x, &out, &z| {
            let x0 = predict_x0(prediction, sigma_from, *x, out);
            let derivative = (*x - x0) / sigma_from;
            *x = (*x + derivative * dt) + z * sigma_up;
        });
    }
}
