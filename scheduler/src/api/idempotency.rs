//! `Idempotency-Key` on every POST (the header of the IETF httpapi draft, as Stripe uses it): a
//! backend that retries a submit after a timeout gets the original answer instead of paying twice.
//!
//! The first request with a key claims it in the state store (Redis in the fleet, so duplicates
//! arriving at different scheduler replicas, or after a restart, see the same record), runs, and
//! stores its 2xx response for `idempotency_ttl_secs`. A duplicate with the same body gets that
//! response back with `Idempotent-Replayed: true`; one that arrives while the first is still running
//! waits for it. The same key with another body (or on another route) is a 422. A request that fails
//! (4xx or 5xx) gives its key up, so a corrected or later retry runs afresh.
//!
//! The claim lives only [`PENDING_TTL`] while its request runs: a scheduler that dies mid-submit
//! frees the key within that time rather than blocking it for a day. If it dies after enqueueing and
//! before storing the answer, a retry after that window submits again; the window is a few
//! milliseconds of a submit.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rapid_fleet::state::Claim;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::Tenant;
use super::error::ApiError;
use super::AppState;

pub const HEADER: &str = "idempotency-key";
/// Set on a response that repeats an earlier one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a claim outlives a scheduler that died holding it.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// How long a duplicate waits for the first request with its key to finish.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(15);
/// The longest key accepted (Stripe's limit).
const MAX_KEY_LEN: usize = 255;

/// What the state store holds under a key: the request's fingerprint and, once it answered, the
/// answer.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    response: Option<StoredResponse>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    body: String,
}

pub async fn replay_or_run(
    State(state): State<AppState>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = request.headers().get(HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = check_key(key)?;
    let limit = state.config.limits.max_body_bytes;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::TooLarge { limit })?;
    let fingerprint = fingerprint(parts.uri.path(), &body);
    // Keys are the tenant's own: two tenants may pick the same one.
    let store_key = format!("idempotency:{tenant}:{}", hex::encode(Sha256::digest(key.as_bytes())));
    let ttl = Duration::from_secs(state.config.idempotency_ttl_secs);
    let pending = serde_json::to_vec(&Record { fingerprint: fingerprint.clone(), response: None })
        .map_err(|e| ApiError::Internal(e.to_string()))?;

    let waiting_since = Instant::now();
    loop {
        match state.state.claim(&store_key, &pending, PENDING_TTL).await? {
            Claim::Claimed => {
                let response = next.run(Request::from_parts(parts, Body::from(body))).await;
                return remember(&state, &store_key, fingerprint, response, ttl).await;
            }
            Claim::Held(held) => {
                let held: Record = serde_json::from_slice(&held)
                    .map_err(|e| ApiError::Internal(format!("idempotency record {store_key}: {e}")))?;
                if held.fingerprint != fingerprint {
                    return Err(ApiError::invalid(
                        "Idempotency-Key",
                        "was already used with a different request (body or route); send a new key for a new request",
                    ));
                }
                if let Some(stored) = held.response {
                    return Ok(replay(stored));
                }
                if waiting_since.elapsed() > WAIT_FOR_FIRST {
                    return Err(ApiError::Conflict(
                        "a request with this Idempotency-Key is still being processed; retry in a moment".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Stores a 2xx answer under the key; any other answer gives the key up.
async fn remember(
    state: &AppState,
    store_key: &str,
    fingerprint: String,
    response: Response,
    ttl: Duration,
) -> Result<Response, ApiError> {
    let status = response.status();
    if !status.is_success() {
        state.state.release_claim(store_key).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    // Submit answers are a few kilobytes of JSON; the cap only guards against a surprise.
    let body: Bytes = axum::body::to_bytes(body, 16 << 20).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    let stored = StoredResponse { status: status.as_u16(), body: String::from_utf8_lossy(&body).into_owned() };
    let record = serde_json::to_vec(&Record { fingerprint, response: Some(stored) })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // The work is enqueued by now: a store that fails here must not turn the answer into an error
    // the client would retry. The claim then lapses after PENDING_TTL.
    if let Err(error) = state.state.update_claim(store_key, &record, ttl).await {
        tracing::warn!(%error, "could not store an idempotent response; a retry after a minute submits again");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, [(axum::http::header::CONTENT_TYPE, "application/json")], stored.body).into_response();
    response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

fn check_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    let printable = key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if key.is_empty() || key.len() > MAX_KEY_LEN || !printable {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters, e.g. a UUID"),
        ));
    }
    Ok(key.to_owned())
}

/// The route and the exact body bytes: a retry sends the same bytes.
fn fingerprint(path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_of_bounded_length() {
        assert_eq!(check_key(&HeaderValue::from_static(" 8e0f-retry 1 ")).unwrap(), "8e0f-retry 1");
        let long = "k".repeat(256);
        for bad in ["", "   ", long.as_str()] {
            let error = check_key(&HeaderValue::from_str(bad).unwrap()).unwrap_err();
            assert!(matches!(&error, ApiError::Invalid { field, .. } if field == "Idempotency-Key"), "{bad:?}");
        }
        assert!(check_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
    }

    #[test]
    fn the_fingerprint_covers_route_and_body() {
        let a = fingerprint("/v1/generations", b"{}");
        assert_eq!(a, fingerprint("/v1/generations", b"{}"));
        assert_ne!(a, fingerprint("/v1/cuisine/menus", b"{}"));
        assert_ne!(a, fingerprint("/v1/generations", b"{ }"));
    }
}
