//! Bearer API keys per tenant. Keys are configured and compared only as SHA-256 hashes, so the
//! configuration file never holds a usable key.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::config::TenantConfig;

/// The authenticated caller, put into the request's extensions by [`require_tenant`].
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// Hash of key → tenant name.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<HashMap<String, String>>);

impl ApiKeys {
    pub fn new(tenants: &[TenantConfig]) -> Self {
        Self(Arc::new(tenants.iter().map(|t| (t.api_key_sha256.to_ascii_lowercase(), t.name.clone())).collect()))
    }

    fn tenant(&self, key: &str) -> Option<&String> {
        self.0.get(&hash_key(key))
    }
}

/// The hex SHA-256 of an API key, as `tenants[].api_key_sha256` holds it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub async fn require_tenant(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let tenant = state.keys.tenant(key.trim()).ok_or(ApiError::Unauthorized)?.clone();
    request.extensions_mut().insert(Tenant(tenant));
    Ok(next.run(request).await)
}
