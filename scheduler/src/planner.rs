//! From an accepted request to jobs: validate the generation parameters (naming the bad field),
//! give every prompt × image its own job and seed, record the request, then publish the jobs.
//!
//! Validation happens entirely before any write, so a rejected request leaves nothing behind.

use rand::Rng;
use rapid_fleet::jobs::{final_event, notify_if_request_done, queued_record, BackendError};
use rapid_fleet::queue::{Lane, Queue};
use rapid_fleet::state::{now_ms, StateStore};
use rapid_proto::{Job, Priority, RequestKind, RequestRecord, Sampler, SCHEMA_VERSION};

use crate::config::SchedulerConfig;
use crate::params::GenerationParams;

/// Why a request cannot be planned. The HTTP layer maps it to its own error shape.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A field of the request is wrong (named as a path into the body); nothing was recorded.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl PlanError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

/// A validated request, ready to be recorded and published.
pub struct Plan {
    pub record: RequestRecord,
    pub jobs: Vec<Job>,
    /// The request's class, which each of its jobs carries.
    pub priority: Priority,
}

/// One prompt and how many images of it.
pub struct PromptImages {
    pub prompt: String,
    pub images: u32,
}

pub fn plan(
    config: &SchedulerConfig,
    tenant: &str,
    kind: RequestKind,
    prompts: Vec<PromptImages>,
    params: &GenerationParams,
    default_priority: Priority,
) -> Result<Plan, PlanError> {
    let limits = &config.limits;
    let defaults = &config.defaults;
    let model_name = params.model.clone().unwrap_or_else(|| config.default_model.clone());
    let model = config.models.get(&model_name).ok_or_else(|| {
        let known: Vec<&str> = config.models.keys().map(String::as_str).collect();
        PlanError::invalid("model", format!("unknown model `{model_name}`; available: {}", known.join(", ")))
    })?;
    let steps = params.steps.unwrap_or(defaults.steps);
    if steps == 0 || steps > limits.max_steps {
        return Err(PlanError::invalid("steps", format!("must be 1 to {} (got {steps})", limits.max_steps)));
    }
    let guidance_scale = params.guidance_scale.unwrap_or(defaults.guidance_scale);
    if !(0.0..=50.0).contains(&guidance_scale) {
        return Err(PlanError::invalid(
            "guidance_scale",
            format!("must be 0 to 50 (got {guidance_scale}); 7.5 is usual"),
        ));
    }
    let sampler = params.sampler.unwrap_or(defaults.sampler);
    let karras_sigmas = karras_sigmas(sampler, params.karras_sigmas, defaults.karras_sigmas)?;
    let format = params.format.unwrap_or(defaults.format);
    let (width, height) = (params.width.unwrap_or(model.width), params.height.unwrap_or(model.height));
    for (field, side) in [("width", width), ("height", height)] {
        if side == 0 || side > limits.max_side || side % model.size_multiple != 0 {
            return Err(PlanError::invalid(
                field,
                format!(
                    "{side} is not a multiple of {} between {} and {}",
                    model.size_multiple, model.size_multiple, limits.max_side
                ),
            ));
        }
    }
    let upscale = params.upscale.unwrap_or(defaults.upscale && model.has_upscaler);
    if upscale && !model.has_upscaler {
        return Err(PlanError::invalid(
            "upscale",
            format!("model `{model_name}` has no upscaler; leave upscale false"),
        ));
    }
    let negative_prompt = params.negative_prompt.clone().unwrap_or_default();
    if !negative_prompt.trim().is_empty() {
        check_prompt("negative_prompt", &negative_prompt, limits.max_prompt_chars, limits.max_prompt_bytes)?;
    }
    if let Some(url) = &params.callback_url {
        check_callback_url(url)?;
    }
    if params.deadline_ms.is_some_and(|deadline| deadline <= now_ms()) {
        return Err(PlanError::invalid("deadline_ms", "is in the past"));
    }
    let total: u64 = prompts.iter().map(|p| u64::from(p.images)).sum();
    if total == 0 || total > u64::from(limits.max_jobs_per_request) {
        return Err(PlanError::invalid(
            "images_per_prompt",
            format!("the request asks for {total} images; it must be 1 to {}", limits.max_jobs_per_request),
        ));
    }

    let request_id = uuid::Uuid::now_v7().to_string();
    let first_seed = params.seed.unwrap_or_else(|| rand::rng().random_range(0..u64::from(u32::MAX)));
    let priority = params.priority.unwrap_or(default_priority);
    let mut jobs = Vec::new();
    for item in &prompts {
        for _ in 0..item.images {
            let index = jobs.len();
            jobs.push(Job {
                v: SCHEMA_VERSION,
                id: format!("{request_id}-{index:03}"),
                request_id: request_id.clone(),
                tenant: tenant.to_owned(),
                model: model_name.clone(),
                prompt: item.prompt.clone(),
                negative_prompt: negative_prompt.clone(),
                seed: first_seed.wrapping_add(index as u64),
                width,
                height,
                steps,
                guidance_scale,
                sampler,
                karras_sigmas,
                upscale,
                format,
                priority,
                deadline_ms: params.deadline_ms,
                attempt: 0,
            });
        }
    }
    let record = RequestRecord {
        v: SCHEMA_VERSION,
        id: request_id,
        tenant: tenant.to_owned(),
        kind,
        prompts: prompts.into_iter().map(|p| p.prompt).collect(),
        job_ids: jobs.iter().map(|j| j.id.clone()).collect(),
        callback_url: params.callback_url.clone(),
        created_ms: now_ms(),
    };
    Ok(Plan { record, jobs, priority })
}

/// Checks a prompt's length in characters and bytes and that it has text, naming the field.
pub fn check_prompt(field: &str, prompt: &str, max_chars: usize, max_bytes: usize) -> Result<String, PlanError> {
    let prompt = prompt.trim();
    if prompt.is_empty() {
        return Err(PlanError::invalid(field, "is empty"));
    }
    if prompt.chars().count() > max_chars {
        return Err(PlanError::invalid(field, format!("longer than {max_chars} characters")));
    }
    if prompt.len() > max_bytes {
        return Err(PlanError::invalid(field, format!("longer than {max_bytes} bytes of UTF-8")));
    }
    Ok(prompt.to_owned())
}

/// The job's Karras option: the request's, else the configured default where the sampler has
/// sigmas to space. Asking for it with a sampler that has none is the client's mistake and named as
/// such; the default is silently not applied there, so `defaults.karras_sigmas = true` does not
/// break requests for `pndm`.
/// The engine refuses the option on samplers without sigmas, so the planner refuses it first,
/// before anything is queued.
fn karras_sigmas(sampler: Sampler, requested: Option<bool>, default: Option<bool>) -> Result<Option<bool>, PlanError> {
    if !sampler.has_sigmas() {
        return match requested {
            Some(true) => Err(PlanError::invalid(
                "karras_sigmas",
                format!(
                    "Karras sigmas apply only to the {} samplers, not `{sampler}`; drop karras_sigmas or pick one of those",
                    Sampler::ALL.iter().filter(|s| s.has_sigmas()).map(|s| s.name()).collect::<Vec<_>>().join(" and ")
                ),
            )),
            _ => Ok(None),
        };
    }
    Ok(requested.or(default))
}

/// A callback URL as the callback sender will use it: http(s) with a host. (Where it may point is
/// checked at submit, which can resolve names, and again at delivery.)
pub fn check_callback_url(url: &str) -> Result<reqwest::Url, PlanError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| PlanError::invalid("callback_url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(PlanError::invalid("callback_url", "must be an http:// or https:// URL with a host"));
    }
    Ok(parsed)
}

/// Records the request (every job queued), then publishes its jobs into the tenant's lane (the
/// dispatcher moves them on to the workers by fair share), with the broker's confirms awaited in
/// windows. If the broker fails part-way, the jobs it did not confirm are marked failed, so the
/// request still ends and nothing waits forever for a job that was never queued.
pub async fn enqueue(state: &StateStore, queue: &Queue, plan: &Plan) -> Result<(), BackendError> {
    let records: Vec<_> = plan.jobs.iter().map(queued_record).collect();
    state.create_request(&plan.record, &records).await?;
    let lane = Lane::new(&plan.record.tenant, plan.priority);
    let bodies: Vec<_> = plan.jobs.iter().map(rapid_proto::encode).collect();
    // The jobs continue the trace of the API request that made them (`telemetry`).
    let traceparent = rapid_fleet::telemetry::traceparent(&tracing::Span::current());
    if let Err(partial) = queue.publish_all_to_lane(&lane, &bodies, traceparent.as_deref()).await {
        for mut record in records.into_iter().skip(partial.queued) {
            record.status = rapid_proto::JobStatus::Failed;
            record.error = Some("could not be queued: the broker was unavailable".into());
            state.put_job(&record).await?;
            state.append_event(&final_event(&record)).await?;
            notify_if_request_done(state, queue, &plan.record, &record.id).await.ok();
        }
        return Err(partial.error.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_sigmas_follow_the_request_then_the_default_where_the_sampler_has_sigmas() {
        assert_eq!(karras_sigmas(Sampler::DpmSolverMultistep, Some(true), None).unwrap(), Some(true));
        assert_eq!(karras_sigmas(Sampler::DpmSolverMultistep, None, Some(true)).unwrap(), Some(true));
        assert_eq!(karras_sigmas(Sampler::Euler, Some(false), Some(true)).unwrap(), Some(false));
        assert_eq!(karras_sigmas(Sampler::DpmSolverMultistep, None, None).unwrap(), None);
        assert_eq!(karras_sigmas(Sampler::Pndm, None, Some(true)).unwrap(), None, "the default skips pndm");
        assert_eq!(karras_sigmas(Sampler::Ddim, Some(false), None).unwrap(), None);
        let error = karras_sigmas(Sampler::Pndm, Some(true), None).unwrap_err();
        assert!(matches!(&error, PlanError::Invalid { field, .. } if field == "karras_sigmas"), "{error:?}");
    }
}
