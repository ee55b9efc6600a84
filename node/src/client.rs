//! A small HTTP client for the node API, used by the CLI, the benchmark harness and tests.

use crate::api::{ClusterView, ListResponse, RevokeResponse};
use crate::error::ErrorBody;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
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
}

impl ClientError {
    /// The API error code, if the node answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(&body.code),
            Self::Http(_) => None,
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

/// A client bound to one node and one bearer token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// `base` is like `http://127.0.0.1:8080`; a bare `host:port` gets `http://`.
    pub fn new(base: &str, token: &str) -> Self {
        let base = if base.starts_with("http") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("http://{base}")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(40))
            .pool_max_idle_per_host(1024)
            .build()
            .expect("a plain HTTP client always builds");
        Self {
            http,
            base,
            token: token.to_owned(),
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
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
        let mut body = json!({ "reason": reason });
        let (field, id) = match target {
            Target::Session(id) => ("session_id", id),
            Target::Token(id) => ("jti", id),
            Target::Operator(id) => ("operator", id),
        };
        body[field] = Value::from(id.as_str());
        if let Some(at) = expires_at {
            body["expires_at"] = Value::from(at);
        }
        self.send(
            self.http
                .post(format!("{}/v1/revocations", self.base))
                .json(&body),
        )
        .await
    }

    /// `GET /v1/revocations`.
    pub async fn list(&self, query: &[(&str, &str)]) -> Result<ListResponse, ClientError> {
        self.send(
            self.http
                .get(format!("{}/v1/revocations", self.base))
                .query(query),
        )
        .await
    }

    /// `DELETE /v1/revocations/operator/{id}`.
    pub async fn lift(&self, operator: &str) -> Result<Value, ClientError> {
        self.send(
            self.http
                .delete(format!("{}/v1/revocations/operator/{operator}", self.base)),
        )
        .await
    }

    /// Every record of the node's audit ledger, page by page.
    pub async fn audit_all(&self) -> Result<Vec<crate::audit::Record>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<crate::audit::Record>,
            next: Option<u64>,
        }
        let mut records = Vec::new();
        let mut after = 0;
        loop {
            let page: Page = self
                .send(
                    self.http
                        .get(format!("{}/v1/audit", self.base))
                        .query(&[("after", after.to_string()), ("limit", "1000".into())]),
                )
                .await?;
            records.extend(page.items);
            match page.next {
                Some(n) => after = n,
                None => return Ok(records),
            }
        }
    }

    /// `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.send(self.http.get(format!("{}/v1/cluster", self.base)))
            .await
    }

    /// `POST /v1/cluster/members`.
    pub async fn add_member(
        &self,
        id: u64,
        raft_addr: &str,
        http_addr: &str,
        timeout: Option<Duration>,
    ) -> Result<ClusterView, ClientError> {
        let mut body = json!({ "id": id, "raft_addr": raft_addr, "http_addr": http_addr });
        if let Some(t) = timeout {
            body["timeout_ms"] = Value::from(t.as_millis() as u64);
        }
        self.send(
            self.http
                .post(format!("{}/v1/cluster/members", self.base))
                .json(&body),
        )
        .await
    }

    /// `DELETE /v1/cluster/members/{id}`.
    pub async fn remove_member(&self, id: u64) -> Result<ClusterView, ClientError> {
        self.send(
            self.http
                .delete(format!("{}/v1/cluster/members/{id}", self.base)),
        )
        .await
    }
}
