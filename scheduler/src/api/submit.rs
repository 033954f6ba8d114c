//! The three ways to submit work: explicit prompts, fashion keywords, cuisine menus. Each turns
//! its body into prompts, hands them to the planner and answers 202 with the jobs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use rapid_proto::{ImageFormat, Priority, RequestKind, Sampler};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::error::{ApiError, ErrorBody, Json};
use super::AppState;
use crate::planner::{self, check_prompt, GenerationParams, PromptImages};
use crate::prompts::{Dish, FashionKeywords, Language};

/// Declares a submission body: the endpoint's own fields plus the generation parameters every
/// endpoint takes, as flat JSON fields. A macro rather than `#[serde(flatten)]`, because flatten
/// defeats `deny_unknown_fields` and hides the path of a bad field from the error message.
macro_rules! submission_body {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $type:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $type,)*
            /// A model name from the configuration; default `scheduler.default_model`.
            pub model: Option<String>,
            pub negative_prompt: Option<String>,
            /// Denoising steps (1 to `limits.max_steps`).
            pub steps: Option<u32>,
            /// Classifier-free guidance weight, 0 to 50.
            pub guidance_scale: Option<f32>,
            /// `pndm`, `ddim`, `euler`, `euler-a` or `dpmpp-2m`.
            #[schema(value_type = Option<String>)]
            pub sampler: Option<Sampler>,
            /// Karras sigma spacing, for `euler` and `dpmpp-2m` only; absent = the model's
            /// scheduler config (or `scheduler.defaults.karras_sigmas`). `dpmpp-2m` with Karras
            /// sigmas at 20 steps is close to 50 PNDM steps in about half the time.
            pub karras_sigmas: Option<bool>,
            /// Seed of the first image; image n gets seed + n. Random when absent.
            pub seed: Option<u64>,
            /// Size before upscaling, a multiple of the model's `size_multiple`.
            pub width: Option<u32>,
            pub height: Option<u32>,
            /// ESRGAN ×4 after decoding.
            pub upscale: Option<bool>,
            /// `png`, `jpeg` or `webp`.
            #[schema(value_type = Option<String>)]
            pub format: Option<ImageFormat>,
            /// `interactive` (served first) or `batch`.
            #[schema(value_type = Option<String>)]
            pub priority: Option<Priority>,
            /// Receives a signed POST when the request ends.
            pub callback_url: Option<String>,
            /// Unix milliseconds after which unstarted jobs fail instead of running.
            pub deadline_ms: Option<u64>,
        }

        impl $name {
            fn params(&self) -> GenerationParams {
                GenerationParams {
                    model: self.model.clone(),
                    negative_prompt: self.negative_prompt.clone(),
                    steps: self.steps,
                    guidance_scale: self.guidance_scale,
                    sampler: self.sampler,
                    karras_sigmas: self.karras_sigmas,
                    seed: self.seed,
                    width: self.width,
                    height: self.height,
                    upscale: self.upscale,
                    format: self.format,
                    priority: self.priority,
                    callback_url: self.callback_url.clone(),
                    deadline_ms: self.deadline_ms,
                }
            }
        }
    };
}

submission_body! {
    /// `POST /v1/generations`.
    pub struct GenerationBody {
        /// One or more prompts.
        pub prompts: Vec<String>,
        /// Images per prompt (default 1).
        pub images_per_prompt: Option<u32>,
    }
}

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

submission_body! {
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
}

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

submission_body! {
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
}

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
    responses((status = 202, body = Accepted), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn generations(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Json(body): Json<GenerationBody>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    let max_chars = state.config.limits.max_prompt_chars;
    if body.prompts.is_empty() {
        return Err(ApiError::invalid("prompts", "give at least one prompt"));
    }
    let images = images_per("images_per_prompt", body.images_per_prompt, &state)?;
    let prompts = body
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Ok(PromptImages { prompt: check_prompt(&format!("prompts[{i}]"), p, max_chars)?, images }))
        .collect::<Result<Vec<_>, ApiError>>()?;
    submit(&state, &tenant, RequestKind::Generation, prompts, &body.params(), Priority::Interactive).await
}

#[utoipa::path(post, path = "/v1/fashion/designs", request_body = FashionBody, security(("bearer" = [])),
    responses((status = 202, body = Accepted), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
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
    responses((status = 202, body = Accepted), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn cuisine_menus(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    Json(body): Json<CuisineBody>,
) -> Result<(StatusCode, axum::Json<Accepted>), ApiError> {
    check_prompt("vendor", &body.vendor, 200)?;
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
    let plan = planner::plan(&state.config, tenant, kind, prompts, params, default_priority)?;
    planner::enqueue(&state.state, &state.queue, &plan).await?;
    state.metrics.accepted(kind.name(), plan.jobs.len());
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
