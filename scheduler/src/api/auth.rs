//! Bearer API keys per tenant. Keys are configured and compared only as SHA-256 hashes, so the
//! configuration file never holds a usable key; the comparison takes the same time whichever
//! hash matches, and a tenant may have two valid hashes while its key is rotated.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::TenantConfig;

/// The authenticated caller, put into the request's extensions by [`require_tenant`].
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// Every valid key hash with its tenant.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<Vec<([u8; 32], String)>>);

impl ApiKeys {
    pub fn new(tenants: &[TenantConfig]) -> Self {
        let keys = tenants.iter().flat_map(|t| t.api_key_sha256.0.iter().map(|hash| (*hash, t.name.clone())));
        Self(Arc::new(keys.collect()))
    }

    /// Compares against every hash without stopping at a match, each in constant time, so the
    /// response time says nothing about which hash (or how much of one) matched.
    fn tenant(&self, key: &str) -> Option<&String> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (hash, tenant) in self.0.iter() {
            if bool::from(hash[..].ct_eq(&presented[..])) {
                found = Some(tenant);
            }
        }
        found
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyHashes;

    fn tenant(name: &str, keys: &[&str]) -> TenantConfig {
        let hashes = keys.iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect();
        TenantConfig {
            name: name.into(),
            api_key_sha256: KeyHashes(hashes),
            limits: Default::default(),
            weight: std::num::NonZeroU32::MIN,
        }
    }

    #[test]
    fn both_keys_of_a_rotating_tenant_work_and_nothing_else_does() {
        let keys = ApiKeys::new(&[tenant("acme", &["old-key", "new-key"]), tenant("globex", &["g-key"])]);
        assert_eq!(keys.tenant("old-key").map(String::as_str), Some("acme"));
        assert_eq!(keys.tenant("new-key").map(String::as_str), Some("acme"));
        assert_eq!(keys.tenant("g-key").map(String::as_str), Some("globex"));
        assert_eq!(keys.tenant("old-keyx"), None);
        assert_eq!(keys.tenant(""), None);
    }
}
