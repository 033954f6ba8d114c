//! The training noise schedule and inference timestep spacing, computed the way torch and numpy
//! compute them for diffusers.
//!
//! The design decision a newcomer will question: this copies library internals down to the
//! rounding — torch's `linspace` (a fused multiply-add per element), `cumprod` (accumulated in
//! `f64`), numpy's `arange`, `interp` and round-half-to-even. The smallest sigmas are
//! sqrt(1 - alpha_cumprod) with alpha_cumprod close to 1, so one ulp of difference in alpha_cumprod
//! becomes a relative error near 1e-4 there; matching the rounding is what makes a 1e-5 tolerance
//! against diffusers possible at all.

use super::config::{BetaSchedule, SchedulerConfig, TimestepSpacing};

/// `alphas_cumprod` of diffusers' schedulers: `torch.cumprod(1 - betas)` in `float32`.
pub(crate) fn alphas_cumprod(config: &SchedulerConfig) -> Vec<f32> {
    let betas = betas(config);
    // torch's CPU cumprod accumulates float32 in double and rounds each partial product.
    let mut product = 1.0f64;
    betas
        .iter()
        .map(|&beta| {
            product *= f64::from(1.0f32 - beta);
            product as f32
        })
        .collect()
}

fn betas(config: &SchedulerConfig) -> Vec<f32> {
    let n = config.num_train_timesteps;
    if let Some(trained) = &config.trained_betas {
        return trained.iter().map(|&b| b as f32).collect();
    }
    match config.beta_schedule {
        BetaSchedule::Linear => torch_linspace_f32(config.beta_start, config.beta_end, n),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(config.beta_start.sqrt(), config.beta_end.sqrt(), n).into_iter().map(|b| b * b).collect()
        }
        BetaSchedule::SquaredcosCapV2 => {
            // diffusers' betas_for_alpha_bar, in Python floats.
            let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
            (0..n)
                .map(|i| {
                    let t1 = i as f64 / n as f64;
                    let t2 = (i + 1) as f64 / n as f64;
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                })
                .collect()
        }
    }
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` on CPU: the first half counts up from
/// `start`, the second half down from `end`, each element one fused multiply-add (the compiler
/// contracts torch's `start + step * i`).
fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| if i < halfway { step.mul_add(i as f32, start) } else { (-step).mul_add((n - 1 - i) as f32, end) })
        .collect()
}

/// Karras sigmas of the training schedule, `sqrt((1 - alpha_cumprod) / alpha_cumprod)` in `f32`,
/// indexed by training timestep.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Vec<f32> {
    alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect()
}

/// `np.linspace(start, stop, num)` in `f64`.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            values[num - 1] = stop;
            values
        }
    }
}

/// The first `count` values of `np.arange(start, stop, step)` for floats: numpy writes
/// `start`, `start + step`, then `start + i * delta` with `delta = (start + step) - start`.
///
/// Deliberately `count` values, never more: numpy's length `ceil((stop - start) / step)` rounds up
/// to `count + 1` for some step counts (61, 103, 121, … of 1000), which gives diffusers' "trailing"
/// spacing an extra step at timestep -1. This engine runs the `count` steps the user asked for.
fn np_arange_prefix(start: f64, step: f64, count: usize) -> Vec<f64> {
    let second = start + step;
    let delta = second - start;
    (0..count)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// Inference timesteps as PNDM and DDIM space them: integers, descending (PNDM reverses them).
pub(crate) fn integer_timesteps(spacing: TimestepSpacing, config: &SchedulerConfig, steps: usize) -> Vec<i64> {
    let train = config.num_train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => {
            np_linspace(0.0, (train - 1) as f64, steps).into_iter().rev().map(|t| t.round_ties_even() as i64).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = train / steps;
            (0..steps).rev().map(|i| (i * ratio + config.steps_offset) as i64).collect()
        }
        TimestepSpacing::Trailing => trailing(train, train as f64 / steps as f64, steps),
    }
}

/// `np.round(np.arange(start, 0, -ratio)) - 1`, descending, at most `steps` values (fewer only
/// when DPM++'s `lambda_min_clipped` shortened the schedule).
pub(crate) fn trailing(start: usize, ratio: f64, steps: usize) -> Vec<i64> {
    let numpy_len = (start as f64 / ratio).ceil() as usize;
    np_arange_prefix(start as f64, -ratio, steps.min(numpy_len))
        .into_iter()
        .map(|t| t.round_ties_even() as i64 - 1)
        .collect()
}

/// Inference timesteps as the Euler schedulers space them: `float32`, descending, fractional for
/// linspace (diffusers does not round them there).
pub(crate) fn float_timesteps(spacing: TimestepSpacing, config: &SchedulerConfig, steps: usize) -> Vec<f32> {
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, (config.num_train_timesteps - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect(),
        TimestepSpacing::Leading | TimestepSpacing::Trailing => {
            integer_timesteps(spacing, config, steps).into_iter().map(|t| t as f32).collect()
        }
    }
}

/// `np.interp(t, np.arange(len(sigmas)), sigmas)`: linear interpolation in `f64`, clamped at
/// both ends.
pub(crate) fn interp(t: f64, sigmas: &[f32]) -> f64 {
    let last = sigmas.len() - 1;
    if t <= 0.0 {
        return f64::from(sigmas[0]);
    }
    if t >= last as f64 {
        return f64::from(sigmas[last]);
    }
    let j = t.floor() as usize;
    if t == j as f64 {
        return f64::from(sigmas[j]);
    }
    let slope = f64::from(sigmas[j + 1]) - f64::from(sigmas[j]);
    slope * (t - j as f64) + f64::from(sigmas[j])
}

/// diffusers' `_convert_to_karras`: rho = 7 spacing between `sigma_max` and `sigma_min`, `f64`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / RHO);
    let max_inv_rho = sigma_max.powf(1.0 / RHO);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(RHO))
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep whose sigma is `sigma`, by linear
/// interpolation in log-sigma. `log_sigmas` is `np.log` of the `float32` training sigmas.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // The last index whose log-sigma is <= log_sigma (0 if none), kept below the last index.
    let low = log_sigmas.iter().rposition(|&l| log_sigma - f64::from(l) >= 0.0).unwrap_or(0).min(log_sigmas.len() - 2);
    let (lo, hi) = (f64::from(log_sigmas[low]), f64::from(log_sigmas[low + 1]));
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// `np.log` of a `float32` array.
pub(crate) fn log_f32(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| v.ln()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> SchedulerConfig {
        serde_json::from_str(
            r#"{"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "steps_offset": 1}"#,
        )
        .unwrap()
    }

    #[test]
    fn sd15_alphas_cumprod_matches_torch_bit_for_bit_at_the_ends() {
        // torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000)**2)[[0, 1, 999]]
        let ac = alphas_cumprod(&sd15());
        assert_eq!(ac[0], 0.99915f32);
        assert_eq!(ac[1], 0.998296f32);
        assert_eq!(ac[999], 0.004660095f32);
    }

    #[test]
    fn trailing_keeps_the_requested_step_count_where_numpy_arange_overshoots() {
        // np.arange(1000, 0, -1000/61) has 62 elements, the last rounding to timestep -1.
        let config = sd15();
        let timesteps = integer_timesteps(TimestepSpacing::Trailing, &config, 61);
        assert_eq!(timesteps.len(), 61);
        assert_eq!(timesteps[0], 999);
        assert!(*timesteps.last().unwrap() >= 0);
    }

    #[test]
    fn rounding_is_half_to_even_like_numpy() {
        // 1000 - 62.5 = 937.5 rounds to 938 and 1000 - 3 * 62.5 = 812.5 to 812 (then minus 1).
        let timesteps = integer_timesteps(TimestepSpacing::Trailing, &sd15(), 16);
        assert_eq!(&timesteps[..4], &[999, 937, 874, 811]);
    }
}
