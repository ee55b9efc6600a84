//! Bearer tokens: EdDSA (Ed25519) JWTs signed by the cluster's key.
//!
//! Only `EdDSA` is accepted; `alg: none` and every other algorithm fail verification.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_api::time::unix_now;

/// The issuer written into and required in every token.
pub const ISSUER: &str = "tether";

/// What a token lets its holder do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Revokes, manages the cluster, reads the audit log.
    Admin,
    /// Drives robots through sessions.
    Operator,
    /// A robot agent.
    Robot,
}

/// The claims of a Tether token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The subject: admin name, operator id or robot id.
    pub sub: String,
    /// The role.
    pub role: Role,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// The token id, revocable by itself.
    pub jti: String,
    /// Always [`ISSUER`].
    pub iss: String,
    /// On a session token: the session it admits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// On a session token: the robot of that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robot: Option<String>,
}

impl Claims {
    /// Fresh claims valid for `ttl` from now.
    pub fn new(sub: impl Into<String>, role: Role, ttl: Duration) -> Self {
        let now = unix_now().as_secs();
        Self {
            sub: sub.into(),
            role,
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.into(),
            sid: None,
            robot: None,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// The token is past its `exp`.
    #[error("token expired")]
    Expired,
    /// Malformed, wrong algorithm, wrong signature or wrong issuer.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A key file is unusable.
    #[error("key: {0}")]
    Key(String),
}

/// Verifies tokens against the cluster's public key.
///
/// A signature check costs tens of microseconds; tokens already verified are remembered (by
/// their exact text) so a client's repeated requests skip it. Expiry is checked on every use.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    verified: Arc<Mutex<HashMap<String, Claims>>>,
}

/// Verified tokens remembered at most; the memory is dropped wholesale when full.
const VERIFIED_CACHE: usize = 4096;

impl Verifier {
    /// From the Ed25519 public key in PEM (SPKI).
    pub fn from_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| AuthError::Key(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 2;
        Ok(Self {
            key,
            validation,
            verified: Arc::default(),
        })
    }

    /// Checks signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let remembered = self.cache().get(token).cloned();
        if let Some(claims) = remembered {
            if claims.exp + self.validation.leeway < unix_now().as_secs() {
                return Err(AuthError::Expired);
            }
            return Ok(claims);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let mut cache = self.cache();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Signs tokens with the cluster's private key.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
}

impl Minter {
    /// From the Ed25519 private key in PEM (PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<Self, AuthError> {
        let key = EncodingKey::from_ed_pem(pem).map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self { key })
    }

    /// Signs `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|e| AuthError::Key(e.to_string()))
    }
}

/// A fresh Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_signing_key() -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The same claims as an unsigned `alg: none` token, to prove such tokens are refused.
    fn unsigned_token(claims: &Claims) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = br#"{"alg":"none","typ":"JWT"}"#;
        let body = serde_json::to_vec(claims).expect("claims always serialize");
        format!("{}.{}.", b64.encode(header), b64.encode(body))
    }

    fn pair() -> (Minter, Verifier) {
        let (private, public) = generate_signing_key().unwrap();
        (
            Minter::from_pem(private.as_bytes()).unwrap(),
            Verifier::from_pem(public.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let (m, v) = pair();
        let claims = Claims::new("alice", Role::Operator, Duration::from_secs(60));
        let token = m.mint(&claims).unwrap();
        assert_eq!(v.verify(&token).unwrap(), claims);
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_expired() {
        let (m, v) = pair();
        let mut claims = Claims::new("alice", Role::Admin, Duration::from_secs(60));
        let token = m.mint(&claims).unwrap();
        assert!(v.verify(&token).is_ok());
        // Age the remembered claims past their expiry.
        claims.exp = claims.iat - 60;
        v.cache().insert(token.clone(), claims);
        assert_eq!(v.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn expired_foreign_and_unsigned_tokens_are_refused() {
        let (m, v) = pair();
        let mut claims = Claims::new("alice", Role::Admin, Duration::from_secs(60));
        claims.exp = claims.iat - 60;
        assert_eq!(v.verify(&m.mint(&claims).unwrap()), Err(AuthError::Expired));

        let (other, _) = pair();
        let good = Claims::new("alice", Role::Admin, Duration::from_secs(60));
        assert!(matches!(
            v.verify(&other.mint(&good).unwrap()),
            Err(AuthError::Invalid(_))
        ));

        let unsigned = unsigned_token(&good);
        assert!(matches!(v.verify(&unsigned), Err(AuthError::Invalid(_))));
        assert!(matches!(
            v.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
    }
}
