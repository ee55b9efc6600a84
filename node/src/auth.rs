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

/// What a token is for (its `aud` claim): each kind is accepted only where it belongs, so
/// that one cannot stand in for another (`docs/api.md`, "Tokens").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Admin and operator login tokens: the HTTP API (and, for notices, `/v1/signal`).
    #[serde(rename = "tether-api")]
    Api,
    /// Session tokens: one session on `/v1/signal` and on the robot's `session` channel.
    #[serde(rename = "tether-session")]
    Session,
    /// Robot tokens: a robot's connection on `/v1/signal`.
    #[serde(rename = "tether-robot")]
    Robot,
}

/// The four kinds of token, from the role and the audience together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An admin's token (role admin, audience api).
    Admin,
    /// An operator's login token (role operator, audience api, no session).
    Login,
    /// A session token (role operator, audience session, with `sid` and `robot`).
    Session,
    /// A robot's token (role robot, audience robot).
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
    /// What the token is for.
    pub aud: Audience,
    /// On a session token: the session it admits to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// On a session token: the robot of that session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robot: Option<String>,
}

impl Claims {
    /// Fresh claims valid for `ttl` from now: an admin or login token (audience api), or a
    /// robot token (audience robot).
    pub fn new(sub: impl Into<String>, role: Role, ttl: Duration) -> Self {
        let now = unix_now().as_secs();
        Self {
            sub: sub.into(),
            role,
            iat: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.into(),
            aud: match role {
                Role::Robot => Audience::Robot,
                Role::Admin | Role::Operator => Audience::Api,
            },
            sid: None,
            robot: None,
        }
    }

    /// Fresh session-token claims: `operator` in session `sid` with `robot`, id `jti`.
    pub fn session(
        operator: impl Into<String>,
        sid: impl Into<String>,
        robot: impl Into<String>,
        jti: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        let mut claims = Self::new(operator, Role::Operator, ttl);
        claims.aud = Audience::Session;
        claims.jti = jti.into();
        claims.sid = Some(sid.into());
        claims.robot = Some(robot.into());
        claims
    }

    /// The kind of token, or `None` when role, audience and session claims disagree (such a
    /// token is refused as invalid).
    pub fn kind(&self) -> Option<TokenKind> {
        match (
            self.role,
            self.aud,
            self.sid.is_some(),
            self.robot.is_some(),
        ) {
            (Role::Admin, Audience::Api, false, false) => Some(TokenKind::Admin),
            (Role::Operator, Audience::Api, false, false) => Some(TokenKind::Login),
            (Role::Operator, Audience::Session, true, true) => Some(TokenKind::Session),
            (Role::Robot, Audience::Robot, false, false) => Some(TokenKind::Robot),
            _ => None,
        }
    }

    /// The token's expiry in milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.exp.saturating_mul(1000)
    }
}

/// The longest lifetime (`exp - iat`) a token may have, unless configured otherwise
/// (`auth.max_token_ttl_s`): a token revocation lasts this long by default, so no revoked
/// token outlives its revocation.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// The longest string claim (`sub`, `jti`, `sid`, `robot`) a token may carry: what lands in
/// replicated commands stays small enough for Raft's frames (`tether_raft::rpc::MAX_FRAME`).
pub const MAX_CLAIM_LEN: usize = 256;
/// The longest token accepted, checked before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Verifies tokens against the cluster's public key.
///
/// A signature check costs tens of microseconds; tokens already verified are remembered (by
/// their exact text) so a client's repeated requests skip it. Expiry is checked on every use.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    max_ttl_s: u64,
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
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        // The audience is a typed claim, checked by `Claims::kind` and by each entry point.
        validation.validate_aud = false;
        validation.leeway = 2;
        Ok(Self {
            key,
            validation,
            max_ttl_s: MAX_TOKEN_TTL.as_secs(),
            verified: Arc::default(),
        })
    }

    /// The same verifier, refusing tokens whose lifetime exceeds `max_ttl`.
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl_s = max_ttl.as_secs();
        self
    }

    /// The longest token lifetime accepted.
    pub fn max_ttl(&self) -> Duration {
        Duration::from_secs(self.max_ttl_s)
    }

    /// Checks signature, algorithm, issuer, expiry, a bounded lifetime and that role and
    /// audience agree ([`Claims::kind`]).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid(format!(
                "a token is at most {MAX_TOKEN_BYTES} bytes"
            )));
        }
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
        if claims.kind().is_none() {
            return Err(AuthError::Invalid(
                "role, audience and session claims disagree".into(),
            ));
        }
        let strings = [&claims.sub, &claims.jti]
            .into_iter()
            .chain(claims.sid.as_ref())
            .chain(claims.robot.as_ref());
        if strings.into_iter().any(|c| c.len() > MAX_CLAIM_LEN) {
            return Err(AuthError::Invalid(format!(
                "a claim is longer than {MAX_CLAIM_LEN} bytes"
            )));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_ttl_s {
            return Err(AuthError::Invalid(format!(
                "the token's lifetime exceeds {} s",
                self.max_ttl_s
            )));
        }
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

/// The revocation that denies this token, if any: of its id (`jti`), its session (`sid`)
/// or its subject (`sub`, the `operator` kind). Every credential check calls it, from the
/// node's applied state with no I/O (S1).
pub fn denial<'a>(
    state: &'a tether_store::ReplicatedState,
    claims: &Claims,
) -> Option<&'a tether_store::Revocation> {
    state.denial(claims.sid.as_deref(), Some(&claims.jti), Some(&claims.sub))
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
    fn oversized_tokens_and_claims_are_refused() {
        let (m, v) = pair();
        let long = Claims::new(
            "a".repeat(MAX_CLAIM_LEN + 1),
            Role::Operator,
            Duration::from_secs(60),
        );
        let refused = v.verify(&m.mint(&long).unwrap());
        assert!(matches!(refused, Err(AuthError::Invalid(why)) if why.contains("claim")));
        let fits = Claims::new(
            "a".repeat(MAX_CLAIM_LEN),
            Role::Operator,
            Duration::from_secs(60),
        );
        assert!(v.verify(&m.mint(&fits).unwrap()).is_ok());
        let huge = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(v.verify(&huge), Err(AuthError::Invalid(why)) if why.contains("at most")));
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
    fn tokens_say_what_they_are_for_and_inconsistent_ones_are_refused() {
        let (m, v) = pair();
        let ttl = Duration::from_secs(60);
        let kind = |c: &Claims| v.verify(&m.mint(c).unwrap()).map(|c| c.kind());
        assert_eq!(
            kind(&Claims::new("a", Role::Admin, ttl)),
            Ok(Some(TokenKind::Admin))
        );
        assert_eq!(
            kind(&Claims::new("o", Role::Operator, ttl)),
            Ok(Some(TokenKind::Login))
        );
        assert_eq!(
            kind(&Claims::new("r", Role::Robot, ttl)),
            Ok(Some(TokenKind::Robot))
        );
        let session = Claims::session("o", "ses_1", "r", "jti", ttl);
        assert_eq!(kind(&session), Ok(Some(TokenKind::Session)));
        // A robot role with the api audience, or a login token naming a session, is invalid.
        let mut robot_as_api = Claims::new("r", Role::Robot, ttl);
        robot_as_api.aud = Audience::Api;
        assert!(matches!(kind(&robot_as_api), Err(AuthError::Invalid(_))));
        let mut login_with_sid = Claims::new("o", Role::Operator, ttl);
        login_with_sid.sid = Some("ses_1".into());
        assert!(matches!(kind(&login_with_sid), Err(AuthError::Invalid(_))));
        // A token without `aud` (as minted before audiences) is refused.
        let mut legacy = serde_json::to_value(Claims::new("a", Role::Admin, ttl)).unwrap();
        legacy.as_object_mut().unwrap().remove("aud");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &legacy, &m.key).unwrap();
        assert!(matches!(v.verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn a_token_living_longer_than_the_bound_is_refused() {
        let (m, v) = pair();
        let v = v.with_max_ttl(Duration::from_secs(3600));
        let long = Claims::new("r", Role::Robot, Duration::from_secs(3601));
        assert!(matches!(
            v.verify(&m.mint(&long).unwrap()),
            Err(AuthError::Invalid(_))
        ));
        let ok = Claims::new("r", Role::Robot, Duration::from_secs(3600));
        assert!(v.verify(&m.mint(&ok).unwrap()).is_ok());
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
