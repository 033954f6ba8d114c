//! The three ways to submit work: explicit prompts, fashion keywords, cuisine menus. Each turns
//! its body into prompts, hands them to the planner and answers 202 with the jobs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use rapid_fleet::state::{Admission, QuotaLimit};
use rapid_proto::{ImageFormat, Priority, RequestKind, Sampler};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ApiError, ErrorBody, Json};
use super::AppState;
use crate::callbacks;
use crate::params::{with_generation_params, GenerationParams};
use crate::planner::{self, check_prompt, PromptImages};
use crate::prompts::{Dish, FashionKeywords, Language};

/// The `Idempotency-Key` header every POST takes (`api/idempotency.rs`), for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Retries with the same key and body get the first answer.
    #[param(rename = "Idempotency-Key")]
    pub key: Option<String>,
}

/// What each submission route can answer, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
pub enum SubmitResponses {
    /// Accepted; `Idempotent-Replayed: true` when it repeats an earlier answer.
    #[response(status = 202)]
    Accepted(Accepted),
    /// Missing or unknown API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The same `Idempotency-Key` is still being processed.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over `limits.max_body_bytes`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A field is wrong; the error names it.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Over a tenant limit, or the fleet's backlog is full; see `Retry-After`.
    #[response(status = 429)]
    TooMany(ErrorBody),
    /// The broker or the state store is down; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Declares a submission body: the endpoint's own fields plus the generation parameters every
/// endpoint takes (handed over by [`with_generation_params`]), as flat JSON fields, and `params()`,
/// which picks the latter out for the planner.
macro_rules! submission_body {
    (
        $(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $type:ty,)* }
        { $($(#[$param_meta:meta])* $param:ident: $param_type:ty,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $type,)*
            $($(#[$param_meta])* pub $param: $param_type,)*
        }

        impl $name {
            // One clone per parameter whatever its type; some are `Copy`.
            #[allow(clippy::clone_on_copy)]
            fn params(&self) -> GenerationParams {
                GenerationParams { $($param: self.$param.clone(),)* }
            }
        }
    };
}

with_generation_params!(submission_body! {
    /// `POST /v1/generations`.
    pub struct GenerationBody {
        /// One or more prompts.
        pub prompts: Vec<String>,
        /// Images per prompt (default 1).
        pub images_per_prompt: Option<u32>,
    }
});

/// One keyword or several.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(value) => vec![value],
            Self::Many(values) => values,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FashionKeywordsBody {
    pub category: Option<OneOrMany>,
    pub trend: Option<OneOrMany>,
    pub fabric: Option<OneOrMany>,
    pub color: Option<OneOrMany>,
    pub style: Option<OneOrMany>,
}

with_generation_params!(submission_body! {
    /// `POST /v1/fashion/designs`.
    pub struct FashionBody {
        pub keywords: FashionKeywordsBody,
        /// How many prompts to generate from the keywords (default 4).
        pub prompts: Option<usize>,
        /// Images per prompt (default 1).
        pub images_per_prompt: Option<u32>,
        /// `zh` or `en` (default `en`).
        pub language: Option<Language>,
    }
});

/// A dish: a name, or a name with keywords.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DishBody {
    Name(String),
    Detailed {
        name: String,
        #[serde(default)]
        keywords: Vec<String>,
    },
}

with_generation_params!(submission_body! {
    /// `POST /v1/cuisine/menus` (batch priority unless the body says otherwise).
    pub struct CuisineBody {
        /// The vendor the menu is for (recorded, and part of no prompt).
        pub vendor: String,
        pub dishes: Vec<DishBody>,
        /// Images per dish (default 1).
        pub images_per_dish: Option<u32>,
        /// `zh` or `en` (default `en`).
        pub language: Option<Language>,
    }
});

/// What a submission answers: the request id, the prompts it expanded to, and one job per image.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub request_id: String,
    pub status_url: String,
    pub prompts: Vec<String>,
    pub jobs: Vec<AcceptedJob>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AcceptedJob {
    pub id: String,
    pub prompt: String,
    pub seed: u64,
}

#[utoipa::path(post, path = "/v1/generations", request_body = GenerationBody, security(("bearer" = [])),
    params(IdempotencyKey), responses(SubmitResponses))]
pub async fn generations(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Json(body): Json<GenerationBody>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let limits = &state.config.limits;
    if body.prompts.is_empty() {
        return Err(ApiError::invalid("prompts", "give at least one prompt"));
    }
    let images = images_per("images_per_prompt", body.images_per_prompt, &state)?;
    let prompts = body
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let prompt = check_prompt(&format!("prompts[{i}]"), p, limits.max_prompt_chars, limits.max_prompt_bytes)?;
            Ok(PromptImages { prompt, images })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    submit(&state, &tenant, RequestKind::Generation, prompts, &body.params(), Priority::Interactive).await
}

#[utoipa::path(post, path = "/v1/fashion/designs", request_body = FashionBody, security(("bearer" = [])),
    params(IdempotencyKey), responses(SubmitResponses))]
pub async fn fashion_designs(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Json(body): Json<FashionBody>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let images = images_per("images_per_prompt", body.images_per_prompt, &state)?;
    let params = body.params();
    let keywords = body.keywords;
    let keywords = FashionKeywords {
        category: keywords.category.map(OneOrMany::into_vec).unwrap_or_default(),
        trend: keywords.trend.map(OneOrMany::into_vec).unwrap_or_default(),
        fabric: keywords.fabric.map(OneOrMany::into_vec).unwrap_or_default(),
        color: keywords.color.map(OneOrMany::into_vec).unwrap_or_default(),
        style: keywords.style.map(OneOrMany::into_vec).unwrap_or_default(),
    };
    let language = body.language.unwrap_or(Language::En);
    let seed = body.seed.unwrap_or(0);
    let prompts = state
        .prompts
        .fashion(&keywords, body.prompts.unwrap_or(4), language, seed)
        .map_err(|e| ApiError::invalid(e.field(), e.to_string()))?;
    let prompts = prompts.into_iter().map(|prompt| PromptImages { prompt, images }).collect();
    submit(&state, &tenant, RequestKind::FashionDesign, prompts, &params, Priority::Interactive).await
}

#[utoipa::path(post, path = "/v1/cuisine/menus", request_body = CuisineBody, security(("bearer" = [])),
    params(IdempotencyKey), responses(SubmitResponses))]
pub async fn cuisine_menus(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Json(body): Json<CuisineBody>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    check_prompt("vendor", &body.vendor, 200, 800)?;
    let images = images_per("images_per_dish", body.images_per_dish, &state)?;
    let params = body.params();
    let dishes: Vec<Dish> = body
        .dishes
        .into_iter()
        .map(|dish| match dish {
            DishBody::Name(name) => Dish { name, keywords: Vec::new() },
            DishBody::Detailed { name, keywords } => Dish { name, keywords },
        })
        .collect();
    let language = body.language.unwrap_or(Language::En);
    let prompts = state
        .prompts
        .cuisine(&dishes, language, body.seed.unwrap_or(0))
        .map_err(|e| ApiError::invalid(e.field(), e.to_string()))?;
    let prompts = prompts.into_iter().map(|prompt| PromptImages { prompt, images }).collect();
    submit(&state, &tenant, RequestKind::CuisineMenu, prompts, &params, Priority::Batch).await
}

/// Counts the request against the tenant's quota. A request larger than a limit on images can
/// never pass it, so that is the client's mistake (422), not a reason to retry later (429).
async fn admit(state: &AppState, tenant: &str, images: usize) -> Result<(), ApiError> {
    let quota = state.quotas.get(tenant).copied().unwrap_or_default();
    let images = u32::try_from(images).unwrap_or(u32::MAX);
    for limit in [QuotaLimit::ImagesInFlight, QuotaLimit::ImagesPerDay] {
        if let Some(value) = limit.of(&quota).filter(|value| images > *value) {
            return Err(ApiError::invalid(
                "images_per_prompt",
                format!("the request asks for {images} images; this tenant's `{}` limit is {value}", limit.name()),
            ));
        }
    }
    match state.state.admit(tenant, images, &quota).await? {
        Admission::Admitted => Ok(()),
        Admission::Refused(limit) => Err(ApiError::QuotaExceeded {
            limit: limit.name(),
            value: limit.of(&quota).unwrap_or_default(),
            retry_after_secs: limit.retry_after_secs(rapid_fleet::state::now_ms()),
        }),
    }
}

fn images_per(field: &str, value: Option<u32>, state: &AppState) -> Result<u32, ApiError> {
    let max = state.config.limits.max_images_per_prompt;
    match value.unwrap_or(1) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ApiError::invalid(field, format!("must be 1 to {max} (got {n})"))),
    }
}

async fn submit(
    state: &AppState,
    tenant: &str,
    kind: RequestKind,
    prompts: Vec<PromptImages>,
    params: &GenerationParams,
    default_priority: Priority,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    if let Some((index, term)) =
        prompts.iter().enumerate().find_map(|(i, p)| state.policy.blocked_term(&p.prompt).map(|term| (i, term)))
    {
        return Err(ApiError::invalid(
            format!("prompts[{index}]"),
            format!("contains `{term}`, which this service does not draw (scheduler.blocked_terms)"),
        ));
    }
    let plan = planner::plan(&state.config, tenant, kind, prompts, params, default_priority)?;
    if let Some(url) = &plan.record.callback_url {
        let url = planner::check_callback_url(url)?;
        callbacks::destination::check(&url, state.config.callback_allow_private_addresses)
            .await
            .map_err(|message| ApiError::invalid("callback_url", message))?;
    }
    state.backlog.admit(&state.queue, &state.lanes).await?;
    admit(state, tenant, plan.jobs.len()).await?;
    planner::enqueue(&state.state, &state.queue, &plan).await?;
    state.metrics.accepted(kind, plan.jobs.len());
    tracing::info!(request = %plan.record.id, tenant, %kind, jobs = plan.jobs.len(), "request accepted");
    let accepted = Accepted {
        status_url: format!("/v1/requests/{}", plan.record.id),
        request_id: plan.record.id.clone(),
        prompts: plan.record.prompts.clone(),
        jobs: plan
            .jobs
            .iter()
            .map(|j| AcceptedJob { id: j.id.clone(), prompt: j.prompt.clone(), seed: j.seed })
            .collect(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)))
}
