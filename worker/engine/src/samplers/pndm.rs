//! PNDM: Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"
//! (arXiv:2202.09778), as diffusers 0.42.1 `schedulers/scheduling_pndm.py` (`PNDMScheduler`) runs it.
//!
//! The design decision a newcomer will question: the step logic keeps diffusers' call counter and
//! its special cases (the second call re-running the first step with an averaged noise estimate,
//! the Runge-Kutta calls that evaluate half-way timesteps) instead of a cleaner restatement of the
//! paper, because Stable Diffusion 1.x images are judged against diffusers' output and the PLMS
//! warm-up is exactly where a restatement would drift.

use ndarray::{Array4, ArrayView4, ArrayViewMut4, Zip};

use super::config::{PredictionType, SchedulerConfig};
use super::{ensure_shape, schedule, Sampler, SamplerError, SamplerKind};

/// Runge-Kutta warm-up: four U-Net calls per step for the first three steps.
const PRK_STEPS: usize = 3;

pub(crate) struct Pndm {
    alphas_cumprod: Vec<f32>,
    /// alpha_cumprod "before" timestep 0, used by the step that ends the schedule.
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    /// `num_train_timesteps // steps`: the PLMS step in timesteps, whatever the spacing.
    step_ratio: i64,
    /// Half of `step_ratio`: how far the Runge-Kutta calls look ahead.
    half_step: i64,
    timesteps: Vec<f32>,
    timestep_ids: Vec<i64>,
    /// U-Net calls that are Runge-Kutta calls (12, or 0 with `skip_prk_steps`).
    prk_calls: usize,
    counter: usize,
    /// The last four noise estimates fed to the multistep formulas.
    ets: History,
    /// The sample a multistep or Runge-Kutta step starts from when it is not the current one.
    cur_sample: Array4<f32>,
    /// Runge-Kutta's weighted sum of the noise estimates of one step so far.
    cur_model_output: Array4<f32>,
    /// The combined noise estimate of one step.
    combined: Array4<f32>,
}

impl Pndm {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SamplerError> {
        config.check_supported(SamplerKind::Pndm)?;
        let train = config.num_train_timesteps;
        let prk_calls = if config.skip_prk_steps {
            0
        } else {
            if steps < PRK_STEPS + 1 {
                // diffusers fails to build the Runge-Kutta timesteps below four steps.
                return Err(SamplerError::TooFewSteps {
                    sampler: SamplerKind::Pndm,
                    got: steps,
                    min: PRK_STEPS + 1,
                    why: "its Runge-Kutta warm-up (skip_prk_steps = false) spans four steps; use more steps or set skip_prk_steps to true",
                });
            }
            4 * PRK_STEPS
        };
        let mut ascending = schedule::integer_timesteps(config.spacing_for(SamplerKind::Pndm), config, steps);
        ascending.reverse();
        let n = ascending.len();
        let half_step = (train / steps / 2) as i64;
        let timestep_ids: Vec<i64> = if config.skip_prk_steps {
            // The second-to-last leading timestep is evaluated twice: once for the plain first
            // step, once more for the step that averages the first two noise estimates.
            let mut plms = ascending[..n - 1].to_vec();
            plms.extend_from_slice(&ascending[n.saturating_sub(2)..n - 1]);
            plms.push(ascending[n - 1]);
            plms.reverse();
            plms
        } else {
            // Each of the last four timesteps t paired with t + half_step, the last half step
            // dropped; every entry twice except the first and last; newest first.
            let pairs: Vec<i64> = ascending[n - 4..].iter().flat_map(|&t| [t, t + half_step]).take(7).collect();
            let doubled: Vec<i64> = pairs.iter().flat_map(|&t| [t, t]).collect();
            let mut all: Vec<i64> = doubled[1..doubled.len() - 1].iter().rev().copied().collect();
            all.extend(ascending[..n - 3].iter().rev());
            all
        };
        super::check_timesteps_in_range(&timestep_ids, config, steps)?;
        let alphas_cumprod = schedule::alphas_cumprod(config);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) { 1.0 } else { alphas_cumprod[0] };
        Ok(Pndm {
            alphas_cumprod,
            final_alpha_cumprod,
            prediction: config.prediction_type,
            step_ratio: (train / steps) as i64,
            half_step,
            timesteps: timestep_ids.iter().map(|&t| t as f32).collect(),
            timestep_ids,
            prk_calls,
            counter: 0,
            ets: History::default(),
            cur_sample: Array4::zeros((0, 0, 0, 0)),
            cur_model_output: Array4::zeros((0, 0, 0, 0)),
            combined: Array4::zeros((0, 0, 0, 0)),
        })
    }

    /// The coefficients of the paper's equation (9) going from `timestep` to `prev_timestep`.
    fn transfer(&self, timestep: i64, prev_timestep: i64) -> Transfer {
        let alpha_prod_t = self.alphas_cumprod[timestep as usize];
        let alpha_prod_t_prev =
            if prev_timestep >= 0 { self.alphas_cumprod[prev_timestep as usize] } else { self.final_alpha_cumprod };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        Transfer {
            sample_coeff: (alpha_prod_t_prev / alpha_prod_t).sqrt(),
            alpha_diff: alpha_prod_t_prev - alpha_prod_t,
            denom: alpha_prod_t * beta_prod_t_prev.sqrt() + (alpha_prod_t * beta_prod_t * alpha_prod_t_prev).sqrt(),
            v_alpha: alpha_prod_t.sqrt(),
            v_beta: beta_prod_t.sqrt(),
            v_prediction: self.prediction == PredictionType::VPrediction,
        }
    }

    /// One Runge-Kutta call: returns (timestep, previous timestep, whether `eps` is the final
    /// combination of the step, in which case it was written to `self.combined`).
    fn prk_call(&mut self, model_output: &ArrayView4<f32>, sample: &ArrayViewMut4<f32>) -> (i64, i64, bool) {
        let counter = self.counter;
        let diff_to_prev = if counter % 2 == 1 { 0 } else { self.half_step };
        let prev_timestep = self.timestep_ids[counter] - diff_to_prev;
        let timestep = self.timestep_ids[counter / 4 * 4];
        let sixth = (1.0f64 / 6.0) as f32;
        let third = (1.0f64 / 3.0) as f32;
        let combined = match counter % 4 {
            0 => {
                ensure_shape(&mut self.cur_model_output, model_output.dim());
                Zip::from(&mut self.cur_model_output).and(model_output).for_each(|acc, &e| *acc = sixth * e);
                self.ets.push(model_output);
                ensure_shape(&mut self.cur_sample, sample.dim());
                self.cur_sample.assign(sample);
                false
            }
            1 | 2 => {
                Zip::from(&mut self.cur_model_output).and(model_output).for_each(|acc, &e| *acc += third * e);
                false
            }
            _ => {
                ensure_shape(&mut self.combined, model_output.dim());
                Zip::from(&mut self.combined)
                    .and(&self.cur_model_output)
                    .and(model_output)
                    .for_each(|out, &acc, &e| *out = acc + sixth * e);
                true
            }
        };
        (timestep, prev_timestep, combined)
    }
}

impl Sampler for Pndm {
    fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: ArrayView4<f32>,
        call: usize,
        mut sample: ArrayViewMut4<f32>,
        _noise: &mut dyn FnMut(&mut [f32]),
    ) {
        super::check_call(SamplerKind::Pndm, self.counter, call, self.timesteps.len(), &model_output, &sample);
        if self.counter < self.prk_calls {
            let (timestep, prev_timestep, combined) = self.prk_call(&model_output, &sample);
            let transfer = self.transfer(timestep, prev_timestep);
            let eps = if combined { self.combined.view() } else { model_output };
            transfer.apply(&mut sample, Some(&self.cur_sample), eps);
            self.counter += 1;
            return;
        }

        // Pseudo linear multistep: Adams-Bashforth over the stored noise estimates.
        let counter = self.counter;
        let mut timestep = self.timestep_ids[counter];
        let mut prev_timestep = timestep - self.step_ratio;
        if counter != 1 {
            self.ets.push(&model_output);
        } else {
            // The second call re-does the first step from the same sample.
            prev_timestep = timestep;
            timestep += self.step_ratio;
        }
        let transfer = self.transfer(timestep, prev_timestep);
        ensure_shape(&mut self.combined, model_output.dim());
        let ets = &self.ets;
        match (ets.len, counter) {
            (1, 0) => {
                ensure_shape(&mut self.cur_sample, sample.dim());
                self.cur_sample.assign(&sample);
                transfer.apply(&mut sample, None, model_output);
            }
            (1, _) => {
                Zip::from(&mut self.combined)
                    .and(&model_output)
                    .and(ets.back(0))
                    .for_each(|out, &e, &e1| *out = (e + e1) / 2.0);
                transfer.apply(&mut sample, Some(&self.cur_sample), self.combined.view());
            }
            (2, _) => {
                Zip::from(&mut self.combined)
                    .and(ets.back(0))
                    .and(ets.back(1))
                    .for_each(|out, &e1, &e2| *out = (3.0 * e1 - e2) / 2.0);
                transfer.apply(&mut sample, None, self.combined.view());
            }
            (3, _) => {
                Zip::from(&mut self.combined)
                    .and(ets.back(0))
                    .and(ets.back(1))
                    .and(ets.back(2))
                    .for_each(|out, &e1, &e2, &e3| *out = (23.0 * e1 - 16.0 * e2 + 5.0 * e3) / 12.0);
                transfer.apply(&mut sample, None, self.combined.view());
            }
            _ => {
                let twenty_fourth = (1.0f64 / 24.0) as f32;
                Zip::from(&mut self.combined)
                    .and(ets.back(0))
                    .and(ets.back(1))
                    .and(ets.back(2))
                    .and(ets.back(3))
                    .for_each(|out, &e1, &e2, &e3, &e4| {
                        *out = twenty_fourth * (55.0 * e1 - 59.0 * e2 + 37.0 * e3 - 9.0 * e4)
                    });
                transfer.apply(&mut sample, None, self.combined.view());
            }
        }
        self.counter += 1;
    }
}

/// Scalars of the paper's equation (9), in `f32` as diffusers computes them.
struct Transfer {
    sample_coeff: f32,
    alpha_diff: f32,
    denom: f32,
    v_alpha: f32,
    v_beta: f32,
    v_prediction: bool,
}

impl Transfer {
    /// Writes x_{t-δ} into `out`, from `from` (or `out`'s own values) and the noise estimate `eps`.
    fn apply(&self, out: &mut ArrayViewMut4<f32>, from: Option<&Array4<f32>>, eps: ArrayView4<f32>) {
        let step = |x: f32, e: f32| {
            let e = if self.v_prediction { self.v_alpha * e + self.v_beta * x } else { e };
            self.sample_coeff * x - self.alpha_diff * e / self.denom
        };
        match from {
            Some(from) => Zip::from(out).and(from).and(&eps).for_each(|y, &x, &e| *y = step(x, e)),
            None => Zip::from(out).and(&eps).for_each(|y, &e| *y = step(*y, e)),
        }
    }
}

/// The last four noise estimates in four reused buffers, newest addressable as `back(0)`.
#[derive(Default)]
struct History {
    slots: [Array4<f32>; 4],
    newest: usize,
    len: usize,
}

impl History {
    fn push(&mut self, values: &ArrayView4<f32>) {
        let slot = (self.newest + 1) % 4;
        ensure_shape(&mut self.slots[slot], values.dim());
        self.slots[slot].assign(values);
        self.newest = slot;
        self.len = (self.len + 1).min(4);
    }

    fn back(&self, k: usize) -> &Array4<f32> {
        debug_assert!(k < self.len);
        &self.slots[(self.newest + 4 - k) % 4]
    }
}
