//! DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models" (arXiv:2010.02502), equation (12)
//! with eta = 0, as diffusers 0.42.1 `schedulers/scheduling_ddim.py` (`DDIMScheduler`) runs it.
//!
//! The design decision a newcomer will question: the step goes back `num_train_timesteps / steps`
//! timesteps from the current one even when "linspace" or "trailing" spacing put the next timestep
//! elsewhere. That is diffusers' behaviour, and matching it is the point of this file.

use ndarray::{ArrayView4, ArrayViewMut4, Zip};

use super::config::{PredictionType, SchedulerConfig};
use super::{schedule, Sampler, SamplerError, SamplerKind};

pub(crate) struct Ddim {
    alphas_cumprod: Vec<f32>,
    /// alpha_cumprod "before" timestep 0, used by the step that ends the schedule.
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    /// `Some(range)`: clamp the predicted clean sample to ±range.
    clip: Option<f32>,
    step_ratio: i64,
    timesteps: Vec<f32>,
    timestep_ids: Vec<i64>,
}

impl Ddim {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SamplerError> {
        config.check_supported(SamplerKind::Ddim)?;
        let train = config.num_train_timesteps;
        let timestep_ids = schedule::integer_timesteps(config.spacing_for(SamplerKind::Ddim), config, steps);
        super::check_timesteps_in_range(&timestep_ids, config, steps)?;
        let alphas_cumprod = schedule::alphas_cumprod(config);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { alphas_cumprod[0] };
        Ok(Ddim {
            alphas_cumprod,
            final_alpha_cumprod,
            prediction: config.prediction_type,
            clip: config.clip_sample.unwrap_or(true).then_some(config.clip_sample_range as f32),
            step_ratio: (train / steps) as i64,
            timesteps: timestep_ids.iter().map(|&t| t as f32).collect(),
            timestep_ids,
        })
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: ArrayView4<f32>,
        call: usize,
        sample: ArrayViewMut4<f32>,
        _noise: &mut dyn FnMut(&mut [f32]),
    ) {
        // Stateless between calls, so any call order is accepted.
        super::check_call(SamplerKind::Ddim, call, call, self.timesteps.len(), &model_output, &sample);
        let timestep = self.timestep_ids[call];
        let prev_timestep = timestep - self.step_ratio;
        let alpha_prod_t = self.alphas_cumprod[timestep as usize];
        let alpha_prod_t_prev =
            if prev_timestep >= 0 { self.alphas_cumprod[prev_timestep as usize] } else { self.final_alpha_cumprod };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let (sqrt_alpha, sqrt_beta) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
        let sqrt_alpha_prev = alpha_prod_t_prev.sqrt();
        // eta = 0 removes the variance term from the direction's weight sqrt(1 - alpha_prev - std^2).
        let direction = (1.0 - alpha_prod_t_prev).sqrt();
        let prediction = self.prediction;
        let clip = self.clip;
        Zip::from(sample).and(&model_output).for_each(|x, &out| {
            let (x0, eps) = match prediction {
                PredictionType::Epsilon => ((*x - sqrt_beta * out) / sqrt_alpha, out),
                PredictionType::Sample => (out, (*x - sqrt_alpha * out) / sqrt_beta),
                PredictionType::VPrediction => (sqrt_alpha * *x - sqrt_beta * out, sqrt_alpha * out + sqrt_beta * *x),
            };
            let x0 = match clip {
                Some(range) => x0.clamp(-range, range),
                None => x0,
            };
            *x = sqrt_alpha_prev * x0 + direction * eps;
        });
    }
}
