//! One error type for the whole HTTP API, one JSON shape for every error:
//! `{"error": {"code": "...", "field": "...", "message": "..."}}`. Internal details (Redis or
//! RabbitMQ messages) are logged, never returned to clients.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::AppState;
use crate::metrics::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body or a field in it is wrong; nothing was enqueued.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("missing or unknown API key; send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The tenant is over one of its limits; nothing was enqueued.
    #[error(
        "over this tenant's `{limit}` limit of {value}; retry in {retry_after_secs} s (GET /v1/usage shows the counts)"
    )]
    QuotaExceeded { limit: &'static str, value: u32, retry_after_secs: u64 },
    /// The fleet's backlog is over `scheduler.max_waiting_jobs`; nothing was enqueued.
    #[error("the fleet has {waiting} jobs waiting, at or over its limit of {limit}; retry in {retry_after_secs} s")]
    Busy { waiting: u32, limit: u32, retry_after_secs: u64 },
    /// A request with the same idempotency key is still running.
    #[error("{0}")]
    Conflict(String),
    /// A path the API does not have.
    #[error("no such path; /openapi.json lists the API's routes")]
    NoRoute,
    #[error("this path does not take that method; the `Allow` header lists those it takes")]
    MethodNotAllowed,
    /// Also what a tenant gets for another tenant's request.
    #[error("no request {0}")]
    NotFound(String),
    /// The broker or the state store is down; the client may retry.
    #[error("the service cannot take work right now; retry later")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `invalid_field`, `unauthorized`, `too_large`, `conflict`, `quota_exceeded`, `not_found`,
    /// `method_not_allowed`, `unavailable` or `internal`.
    pub code: &'static str,
    /// The offending field, as a path into the request body (`keywords.color[1]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            Self::Invalid { field, .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", Some(field.clone())),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", Some("body".to_owned())),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            Self::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", None),
            Self::Busy { .. } => (StatusCode::TOO_MANY_REQUESTS, "busy", None),
            Self::NotFound(_) | Self::NoRoute => (StatusCode::NOT_FOUND, "not_found", None),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::Unavailable(detail) => {
                tracing::error!(%detail, "dependency unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        };
        let rejection = match &self {
            Self::Busy { .. } => Some(Rejection::Busy),
            Self::QuotaExceeded { .. } => Some(Rejection::Quota),
            Self::Invalid { .. } | Self::TooLarge { .. } => Some(Rejection::Invalid),
            Self::Unauthorized => Some(Rejection::Unauthorized),
            Self::Conflict(_)
            | Self::NotFound(_)
            | Self::NoRoute
            | Self::MethodNotAllowed
            | Self::Unavailable(_)
            | Self::Internal(_) => None,
        };
        let body = ErrorBody { error: ErrorDetail { code, field, message: self.to_string() } };
        let mut response = (status, axum::Json(body)).into_response();
        // The metrics middleware (`api::observe`) counts it; an error has no state to count with.
        if let Some(rejection) = rejection {
            response.extensions_mut().insert(rejection);
        }
        if let Self::QuotaExceeded { retry_after_secs, .. } | Self::Busy { retry_after_secs, .. } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

impl From<crate::planner::PlanError> for ApiError {
    fn from(error: crate::planner::PlanError) -> Self {
        match error {
            crate::planner::PlanError::Invalid { field, message } => Self::Invalid { field, message },
        }
    }
}

impl From<rapid_fleet::jobs::BackendError> for ApiError {
    fn from(error: rapid_fleet::jobs::BackendError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<rapid_fleet::state::StateError> for ApiError {
    fn from(error: rapid_fleet::state::StateError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// A JSON body whose errors name the field (`steps: invalid type: string "x", expected u32`) in
/// the API's error shape, instead of axum's plain-text rejection.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // The router's `DefaultBodyLimit` is this same number; it is read here to name it.
        let body_limit = state.config.limits.max_body_bytes;
        let is_json = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::invalid("Content-Type", "send the body as `application/json`"));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge { limit: body_limit }
            } else {
                ApiError::invalid("body", e.body_text())
            }
        })?;
        let deserializer = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(deserializer).map(Json).map_err(|e| {
            let message = e.inner().to_string();
            let field = field_of(&e.path().to_string(), &message);
            ApiError::invalid(field, message)
        })
    }
}

/// The field a deserialisation error is about. For unknown and missing fields serde reports the
/// enclosing object's path and names the field only in its message (`unknown field `stepz``),
/// so the name is taken from there.
fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|marker| message.split_once(marker).and_then(|(_, rest)| rest.split_once('`')).map(|(name, _)| name));
    match (path, named) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn unknown_and_missing_fields_are_named_from_the_message() {
        assert_eq!(field_of(".", "unknown field `stepz`, expected one of `a`, `b`"), "stepz");
        assert_eq!(field_of("keywords", "unknown field `colour`, expected `color`"), "keywords.colour");
        assert_eq!(field_of(".", "missing field `prompts`"), "prompts");
        assert_eq!(field_of("steps", "invalid type: string \"x\", expected u32"), "steps");
        assert_eq!(field_of(".", "expected value at line 1 column 2"), "body");
    }
}
