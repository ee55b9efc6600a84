//! The one HTTP client for the node API, used by the CLI, the agent's console, the tests and
//! the benchmark harness: revocations, sessions, cluster membership, audit.

use crate::codes::ErrorBody;
use crate::types::{
    AddMemberRequest, AuditPage, AuditRecord, ClusterView, CreateSession, ListResponse,
    RevokeRequest, RevokeResponse, SessionEnded, SessionList, SessionToken,
};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A request to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not complete.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The node answered with an error.
    #[error("{status}: {} ({})", body.code, body.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// The node answered, but not what this client understands.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// The API error code, if the node answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(&body.code),
            Self::Http(_) | Self::Decode(_) => None,
        }
    }

    /// The HTTP status, if the node answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Http(e) => e.status().map(|s| s.as_u16()),
            Self::Decode(_) => None,
        }
    }
}

/// What to revoke.
#[derive(Clone, Debug)]
pub enum Target {
    /// A session id.
    Session(String),
    /// A token id.
    Token(String),
    /// An operator.
    Operator(String),
}

/// The HTTP base URL of a gateway: `host:port` gets `http://`, a trailing `/` goes.
pub fn http_url(gateway: &str) -> String {
    let base = gateway.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    }
}

/// A client bound to one node and one bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    idempotency_key: Option<String>,
}

impl Client {
    /// `base` is like `http://127.0.0.1:8080`; a bare `host:port` gets `http://`.
    pub fn new(base: &str, token: &str) -> Self {
        Self::with_timeout(base, token, Duration::from_secs(40))
    }

    /// A client whose requests give up after `timeout`.
    pub fn with_timeout(base: &str, token: &str, timeout: Duration) -> Self {
        // HTTPS trusts what the process was told to ([`crate::tls`]).
        let tls = (*crate::tls::client_config()).clone();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(1024)
            .tls_backend_preconfigured(tls)
            .build()
            .expect("a client with a ready TLS configuration always builds");
        Self {
            http,
            base: http_url(base),
            token: token.to_owned(),
            idempotency_key: None,
        }
    }

    /// The same node and connection pool with another bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_owned(),
            ..self.clone()
        }
    }

    /// The same client sending `Idempotency-Key: key` with every request: the writes it
    /// sends are retries of one intended write, applied at most once (`docs/api.md`).
    pub fn with_idempotency_key(&self, key: &str) -> Self {
        Self {
            idempotency_key: Some(key.to_owned()),
            ..self.clone()
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let request = match &self.idempotency_key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        };
        let response = request.bearer_auth(&self.token).send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(ErrorBody {
            code: "unknown".into(),
            message: text,
        });
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
        })
    }

    /// `POST /v1/revocations`.
    pub async fn revoke(
        &self,
        target: &Target,
        reason: &str,
        expires_at: Option<&str>,
    ) -> Result<RevokeResponse, ClientError> {
        let mut body = RevokeRequest {
            reason: reason.to_owned(),
            expires_at: expires_at.map(str::to_owned),
            ..RevokeRequest::default()
        };
        match target {
            Target::Session(id) => body.session_id = Some(id.clone()),
            Target::Token(id) => body.jti = Some(id.clone()),
            Target::Operator(id) => body.operator = Some(id.clone()),
        }
        self.send(self.http.post(self.url("/v1/revocations")).json(&body))
            .await
    }

    /// `GET /v1/revocations`.
    pub async fn list(&self, query: &[(&str, &str)]) -> Result<ListResponse, ClientError> {
        self.send(self.http.get(self.url("/v1/revocations")).query(query))
            .await
    }

    /// `DELETE /v1/revocations/operator/{id}`.
    pub async fn lift(&self, operator: &str) -> Result<serde_json::Value, ClientError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/revocations/operator/{operator}"))),
        )
        .await
    }

    /// One page of the node's audit ledger.
    pub async fn audit_page(&self, after: u64, limit: usize) -> Result<AuditPage, ClientError> {
        self.send(
            self.http
                .get(self.url("/v1/audit"))
                .query(&[("after", after.to_string()), ("limit", limit.to_string())]),
        )
        .await
    }

    /// Every record of the node's audit ledger, page by page.
    pub async fn audit_all(&self) -> Result<Vec<AuditRecord>, ClientError> {
        let mut records = Vec::new();
        let mut after = 0;
        loop {
            let page = self.audit_page(after, 1000).await?;
            records.extend(page.items);
            match page.next {
                Some(n) => after = n,
                None => return Ok(records),
            }
        }
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.send(self.http.get(self.url("/v1/cluster"))).await
    }

    /// `GET /v1/token-key`: the PEM public key that verifies the cluster's tokens.
    pub async fn token_key(&self) -> Result<String, ClientError> {
        let body: serde_json::Value = self.send(self.http.get(self.url("/v1/token-key"))).await?;
        body["public_key_pem"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode("no public_key_pem in /v1/token-key".into()))
    }

    /// `POST /v1/cluster/members`.
    pub async fn add_member(&self, request: &AddMemberRequest) -> Result<ClusterView, ClientError> {
        self.send(
            self.http
                .post(self.url("/v1/cluster/members"))
                .json(request),
        )
        .await
    }

    /// `DELETE /v1/cluster/members/{id}`.
    pub async fn remove_member(&self, id: u64) -> Result<ClusterView, ClientError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/cluster/members/{id}"))),
        )
        .await
    }

    /// `POST /v1/sessions`: a session on `robot_id` for this client's operator.
    pub async fn create_session(&self, robot_id: &str) -> Result<SessionToken, ClientError> {
        let body = CreateSession {
            robot_id: robot_id.to_owned(),
        };
        self.send(self.http.post(self.url("/v1/sessions")).json(&body))
            .await
    }

    /// `DELETE /v1/sessions/{sid}`: the operator ends its own session.
    pub async fn end_session(&self, session_id: &str) -> Result<SessionEnded, ClientError> {
        self.send(
            self.http
                .delete(self.url(&format!("/v1/sessions/{session_id}"))),
        )
        .await
    }

    /// `POST /v1/sessions/{sid}/refresh`: a fresh token while the session is active.
    pub async fn refresh_session(&self, session_id: &str) -> Result<SessionToken, ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/sessions/{session_id}/refresh"))),
        )
        .await
    }

    /// `GET /v1/sessions`.
    pub async fn sessions(&self) -> Result<SessionList, ClientError> {
        self.send(self.http.get(self.url("/v1/sessions"))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_get_a_scheme_and_trailing_slashes_go() {
        assert_eq!(http_url("127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(http_url("https://gw/"), "https://gw");
        assert_eq!(
            Client::new("127.0.0.1:9/", "t").base(),
            "http://127.0.0.1:9"
        );
    }
}
