//! Per-client rate limits on the HTTP API, the signaling upgrade included: every request by
//! the client's address, and the writes (`POST`, `DELETE`: each a fsync'd Raft write) also
//! by the token that asks, unless it is an admin's. One low-privilege token, or one
//! address, cannot make a node spend its leader's disk on it.

use super::{ApiError, AppState};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;
use tether_api::ErrorCode;
use tether_signaling::rate::KeyedBuckets;

/// Clients (addresses, tokens) a node keeps a bucket for at most.
const MAX_CLIENTS: usize = 100_000;

/// The buckets of one node.
pub struct HttpLimits {
    started: Instant,
    per_address: Option<Mutex<KeyedBuckets<IpAddr>>>,
    writes_per_token: Option<Mutex<KeyedBuckets<String>>>,
}

impl HttpLimits {
    /// From `http.*` in the config; a rate of 0 turns that limit off.
    pub fn new(http: &crate::config::HttpSection) -> Self {
        fn buckets<K: std::hash::Hash + Eq>(
            burst: u32,
            per_second: u32,
        ) -> Option<Mutex<KeyedBuckets<K>>> {
            (per_second > 0).then(|| Mutex::new(KeyedBuckets::new(burst, per_second, MAX_CLIENTS)))
        }
        Self {
            started: Instant::now(),
            per_address: buckets(http.per_client_burst, http.per_client_per_second),
            writes_per_token: buckets(
                http.writes_per_token_burst,
                http.writes_per_token_per_second,
            ),
        }
    }

    fn take<K: std::hash::Hash + Eq>(
        &self,
        buckets: &Option<Mutex<KeyedBuckets<K>>>,
        key: K,
    ) -> bool {
        let now_ms = self.started.elapsed().as_millis() as u64;
        buckets.as_ref().is_none_or(|b| {
            b.lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(key, now_ms)
        })
    }
}

/// The middleware: answers `429 rate_limited` (with `Retry-After`) to a client over its
/// rate, and passes everything else on.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limits = &state.limits;
    let address = (request.extensions().get::<ConnectInfo<SocketAddr>>()).map(|c| c.0.ip());
    if let Some(ip) = address {
        if !limits.take(&limits.per_address, ip) {
            return refused(
                "per_address",
                format!("too many requests from {ip}; slow down"),
            );
        }
    }
    let writes = matches!(*request.method(), Method::POST | Method::DELETE);
    if writes && limits.writes_per_token.is_some() {
        let token = (request.headers().get(header::AUTHORIZATION))
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        // An unverifiable token is refused by the handler, on the address's budget alone.
        let claims = token.and_then(|t| state.verifier.verify(t).ok());
        if let Some(claims) = claims.filter(|c| c.role != crate::auth::Role::Admin) {
            if !limits.take(&limits.writes_per_token, claims.jti) {
                return refused(
                    "writes_per_token",
                    "too many writes with this token; slow down".into(),
                );
            }
        }
    }
    next.run(request).await
}

fn refused(limit: &'static str, message: String) -> Response {
    metrics::counter!(crate::telemetry::names::HTTP_RATE_LIMITED_TOTAL, "limit" => limit)
        .increment(1);
    let mut response = ApiError::new(ErrorCode::RateLimited, message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
