//! The generation parameters every submission endpoint takes, declared once.
//!
//! [`with_generation_params`] hands the field list (docs and OpenAPI attributes included) to another
//! macro: [`GenerationParams`] below and each submission body in `api::submit` are declared through
//! it, so a parameter added here reaches the bodies, the planner and the OpenAPI document together.
//! A macro rather than `#[serde(flatten)]` of one struct into the bodies, because flatten defeats
//! `deny_unknown_fields` and hides the path of a bad field from the error message.

use rapid_proto::{ImageFormat, Priority, Sampler};

/// Calls `$then! { <its input> { <the parameters as `name: Type,` with their attributes> } }`.
macro_rules! with_generation_params {
    ($then:ident! { $($input:tt)* }) => {
        $then! { $($input)* {
            /// A model name from the configuration; default `scheduler.default_model`.
            model: Option<String>,
            negative_prompt: Option<String>,
            /// Denoising steps (1 to `limits.max_steps`).
            steps: Option<u32>,
            /// Classifier-free guidance weight, 0 to 50.
            guidance_scale: Option<f32>,
            /// `pndm`, `ddim`, `euler`, `euler-a` or `dpmpp-2m`.
            #[schema(value_type = Option<String>)]
            sampler: Option<Sampler>,
            /// Karras sigma spacing, for `euler` and `dpmpp-2m` only; absent = the model's
            /// scheduler config (or `scheduler.defaults.karras_sigmas`). `dpmpp-2m` with Karras
            /// sigmas at 20 steps is close to 50 PNDM steps in about half the time.
            karras_sigmas: Option<bool>,
            /// Seed of the first image; image n gets seed + n. Random when absent.
            seed: Option<u64>,
            /// Size before upscaling, a multiple of the model's `size_multiple`.
            width: Option<u32>,
            height: Option<u32>,
            /// ESRGAN ×4 after decoding.
            upscale: Option<bool>,
            /// `png`, `jpeg` or `webp`.
            #[schema(value_type = Option<String>)]
            format: Option<ImageFormat>,
            /// `interactive` (served first) or `batch`.
            #[schema(value_type = Option<String>)]
            priority: Option<Priority>,
            /// Receives a signed POST when the request ends.
            callback_url: Option<String>,
            /// Unix milliseconds after which unstarted jobs fail instead of running.
            deadline_ms: Option<u64>,
        } }
    };
}
pub(crate) use with_generation_params;

macro_rules! params_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* $field:ident: $type:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $type,)*
        }
    };
}

with_generation_params!(params_struct! {
    /// What a request asked for; absent parameters come from the configuration's
    /// `scheduler.defaults` and the model's size. (`ToSchema` only so the shared `#[schema]`
    /// attributes are understood; the API documents the bodies.)
    #[derive(Debug, Clone, Default, utoipa::ToSchema)]
    pub struct GenerationParams
});
