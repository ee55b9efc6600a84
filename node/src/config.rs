//! The node's configuration file (TOML): every field documented, defaulted and validated.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tether_store::NodeId;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or has unknown fields.
    #[error("parsing {path}: {source}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// One member of the initial cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's node id.
    pub id: NodeId,
    /// Its QUIC (Raft) address.
    pub raft_addr: SocketAddr,
    /// Its HTTP address.
    pub http_addr: SocketAddr,
}

/// TLS material for node-to-node QUIC, as PEM files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This node's certificate, issued by the cluster CA.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Token verification (and, later, issuing session tokens).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The cluster's Ed25519 public key (PEM) that verifies every bearer token.
    pub public_key: PathBuf,
    /// The matching private key (PEM), needed only to mint tokens.
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The longest lifetime (`exp - iat`) a token may have, in seconds; longer ones are
    /// refused. Session and token revocations last at least this long, so that no revoked
    /// token outlives its revocation. Default 7 days.
    #[serde(default = "default_max_token_ttl_s")]
    pub max_token_ttl_s: u64,
}

fn default_max_token_ttl_s() -> u64 {
    crate::auth::MAX_TOKEN_TTL.as_secs()
}

/// Raft timing and compaction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    /// Leader heartbeat period in milliseconds.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound in milliseconds.
    pub election_min_ms: u64,
    /// Election timeout upper bound in milliseconds.
    pub election_max_ms: u64,
    /// Snapshot after this many entries since the last snapshot.
    pub snapshot_logs: u64,
    /// Entries kept below a snapshot.
    pub keep_logs: u64,
    /// Sync the write-ahead log on every append (required for S3).
    pub fsync: bool,
    /// How often the leader proposes the expiry cleanup, in milliseconds.
    pub expire_interval_ms: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        let t = tether_raft::RaftTiming::default();
        Self {
            heartbeat_ms: t.heartbeat_ms,
            election_min_ms: t.election_min_ms,
            election_max_ms: t.election_max_ms,
            snapshot_logs: t.snapshot_logs,
            keep_logs: t.keep_logs,
            fsync: true,
            expire_interval_ms: 10_000,
        }
    }
}

/// HTTP limits and timeouts, and HTTPS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// How long a write may wait for commit before answering `unavailable`, in ms.
    pub write_timeout_ms: u64,
    /// Default expiry of session and token revocations without `expires_at`, in seconds.
    pub default_revocation_ttl_s: u64,
    /// The TLS handshake and each request head (and, on a kept-alive connection, the next
    /// request) must arrive within this many ms.
    pub header_timeout_ms: u64,
    /// A request body must arrive within this many ms.
    pub body_timeout_ms: u64,
    /// HTTPS and WSS for clients (the API, the Web Console, `/v1/signal`). Without it the
    /// node serves plain HTTP, which it allows only on a loopback address unless
    /// `allow_plaintext` says otherwise.
    pub tls: Option<HttpsConfig>,
    /// Serve plain HTTP on an address other than loopback (logged at every start): tokens,
    /// leases and revocation notices then cross the network readable and forgeable.
    pub allow_plaintext: bool,
    /// Requests per second one client address may send, sustained (0: no limit).
    pub per_client_per_second: u32,
    /// Requests one client address may send at once.
    pub per_client_burst: u32,
    /// Writes (`POST`, `DELETE`) per second one token other than an admin's may make,
    /// sustained (0: no limit).
    pub writes_per_token_per_second: u32,
    /// Writes one such token may make at once.
    pub writes_per_token_burst: u32,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            write_timeout_ms: 3_000,
            default_revocation_ttl_s: 24 * 3600,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            tls: None,
            allow_plaintext: false,
            per_client_per_second: 500,
            per_client_burst: 1_000,
            writes_per_token_per_second: 10,
            writes_per_token_burst: 20,
        }
    }
}

/// The certificate clients see, as PEM files (issued by the cluster CA, or by another CA
/// the clients trust).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// How often the files are checked for a new certificate, in ms (a change is loaded
    /// without a restart).
    #[serde(default = "default_reload_ms")]
    pub reload_ms: u64,
}

fn default_reload_ms() -> u64 {
    2_000
}

/// Sessions, signaling and the authorization lease.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Lifetime of a session token in seconds (renewable while the session is active).
    pub token_ttl_s: u64,
    /// Which operators may drive which robots: operator id → robot ids (`*` for any).
    /// Empty: every operator may drive every robot.
    pub policy: std::collections::BTreeMap<String, Vec<String>>,
    /// Each robot's owner: robot id → operator id. The owner, connected to `/v1/signal`
    /// with an operator token, is told (`session_terminated`) when a session on the robot
    /// ends, whoever ran it.
    pub owners: std::collections::BTreeMap<String, String>,
    /// A signaling connection must authenticate within this many milliseconds.
    pub auth_timeout_ms: u64,
    /// Signaling connections this node accepts at once.
    pub max_connections: usize,
    /// Of those, connections that have not authenticated yet (a cheap socket flood fills
    /// this, not the room honest clients need).
    pub max_unauthenticated: usize,
    /// Frames queued for one connection before it counts as a reader that stopped reading
    /// and is closed (`too_slow`); session ends and closes never wait behind them. Above
    /// `frame_burst`, so the answers to an allowed burst fit.
    pub outbound_queue_frames: usize,
    /// A frame that cannot be written to a connection within this many milliseconds ends
    /// the connection (its reader stopped reading).
    pub write_stall_ms: u64,
    /// Sustained signaling frames per second per connection.
    pub frames_per_second: u32,
    /// Burst of signaling frames per connection.
    pub frame_burst: u32,
    /// Authorization lease lifetime sent to robots; renewed every quarter of it.
    pub lease_ttl_ms: u64,
    /// How long a join may wait for the linearizable check before `unavailable`.
    pub admission_timeout_ms: u64,
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            token_ttl_s: 300,
            policy: Default::default(),
            owners: Default::default(),
            auth_timeout_ms: 2_000,
            max_connections: 10_000,
            max_unauthenticated: 1_000,
            outbound_queue_frames: 1_024,
            write_stall_ms: 5_000,
            frames_per_second: 200,
            frame_burst: 400,
            lease_ttl_ms: 1_000,
            admission_timeout_ms: 1_000,
        }
    }
}

impl SessionsSection {
    /// `robot`'s owner, if it has one.
    pub fn owner_of(&self, robot: &str) -> Option<&str> {
        self.owners.get(robot).map(String::as_str)
    }

    /// Whether the policy lets `operator` drive `robot`.
    pub fn allows(&self, operator: &str, robot: &str) -> bool {
        self.policy.is_empty()
            || self
                .policy
                .get(operator)
                .is_some_and(|robots| robots.iter().any(|r| r == "*" || r == robot))
    }
}

/// A gateway node's configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster, non-zero.
    pub id: NodeId,
    /// Address of the HTTP API.
    pub http_addr: SocketAddr,
    /// UDP address of the QUIC endpoint for Raft and node-to-node traffic.
    pub raft_addr: SocketAddr,
    /// Directory for RocksDB.
    pub data_dir: PathBuf,
    /// The initial cluster, identical on every node. The lowest id initializes it.
    #[serde(default)]
    pub initial_members: Vec<MemberConfig>,
    /// Node-to-node TLS.
    pub tls: TlsConfig,
    /// Bearer token verification.
    pub auth: AuthConfig,
    /// Raft tuning.
    #[serde(default)]
    pub raft: RaftSection,
    /// HTTP tuning.
    #[serde(default)]
    pub http: HttpSection,
    /// Sessions and signaling.
    #[serde(default)]
    pub sessions: SessionsSection,
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.id == 0 {
            return bad("id must be non-zero".into());
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return bad(format!(
                "raft.election_min_ms ({}) must exceed twice raft.heartbeat_ms ({})",
                r.election_min_ms, r.heartbeat_ms
            ));
        }
        if r.election_max_ms <= r.election_min_ms {
            return bad("raft.election_max_ms must exceed raft.election_min_ms".into());
        }
        if r.snapshot_logs == 0 || r.expire_interval_ms == 0 {
            return bad("raft.snapshot_logs and raft.expire_interval_ms must be positive".into());
        }
        let h = &self.http;
        if h.tls.is_none() && !h.allow_plaintext && !self.http_addr.ip().is_loopback() {
            return bad(format!(
                "http_addr {} is not a loopback address: configure [http.tls] (cert, key) or, knowingly, http.allow_plaintext = true",
                self.http_addr
            ));
        }
        if h.header_timeout_ms == 0
            || h.body_timeout_ms == 0
            || h.tls.as_ref().is_some_and(|t| t.reload_ms == 0)
        {
            return bad("http.header_timeout_ms, http.body_timeout_ms and http.tls.reload_ms must be positive".into());
        }
        if self.http.max_body_bytes < 256 || self.http.write_timeout_ms == 0 {
            return bad(
                "http.max_body_bytes must be at least 256 and http.write_timeout_ms positive"
                    .into(),
            );
        }
        let s = &self.sessions;
        if s.token_ttl_s == 0
            || s.lease_ttl_ms < 40
            || s.frames_per_second == 0
            || s.max_connections == 0
            || s.max_unauthenticated == 0
            || s.outbound_queue_frames == 0
            || s.write_stall_ms == 0
            || s.auth_timeout_ms == 0
        {
            return bad("sessions: token_ttl_s, frames_per_second, max_connections, max_unauthenticated, outbound_queue_frames, write_stall_ms and auth_timeout_ms must be positive and lease_ttl_ms at least 40".into());
        }
        let ids: BTreeSet<_> = self.initial_members.iter().map(|m| m.id).collect();
        if ids.len() != self.initial_members.len() {
            return bad("initial_members has a duplicate id".into());
        }
        if ids.contains(&0) {
            return bad("initial_members has id 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        r#"
id = 1
http_addr = "127.0.0.1:8080"
raft_addr = "127.0.0.1:9090"
data_dir = "/tmp/x"
[[initial_members]]
id = 1
raft_addr = "127.0.0.1:9090"
http_addr = "127.0.0.1:8080"
[tls]
ca_cert = "ca.pem"
cert = "cert.pem"
key = "key.pem"
[auth]
public_key = "pub.pem"
"#
        .into()
    }

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let c: NodeConfig = toml::from_str(&sample()).unwrap();
        c.validate().unwrap();
        assert!(c.raft.fsync);
        assert_eq!(c.http.max_body_bytes, 64 * 1024);
    }

    #[test]
    fn plain_http_beyond_loopback_needs_an_explicit_opt_out() {
        let mut c: NodeConfig = toml::from_str(&sample()).unwrap();
        c.http_addr = "10.0.0.1:8080".parse().unwrap();
        let refused = c.validate().unwrap_err().to_string();
        assert!(refused.contains("http.tls"), "{refused}");
        c.http.allow_plaintext = true;
        c.validate().unwrap();
        c.http.allow_plaintext = false;
        c.http.tls = Some(HttpsConfig {
            cert: "https.pem".into(),
            key: "https-key.pem".into(),
            reload_ms: 2_000,
        });
        c.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(toml::from_str::<NodeConfig>(&format!("{}\nbogus = 1", sample())).is_err());
        let mut c: NodeConfig = toml::from_str(&sample()).unwrap();
        c.raft.election_min_ms = c.raft.heartbeat_ms;
        assert!(c.validate().is_err());
        c = toml::from_str(&sample()).unwrap();
        c.id = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_example_in_the_operations_guide_parses_with_the_defaults_it_shows() {
        let guide = include_str!("../../docs/operations.md");
        let example = guide
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml block in docs/operations.md");
        let c: NodeConfig = toml::from_str(example).unwrap();
        c.validate().unwrap();
        assert_eq!(c.raft, RaftSection::default());
        let https = c.http.tls.clone().expect("the guide serves HTTPS");
        assert_eq!(https.reload_ms, default_reload_ms());
        let http = HttpSection {
            tls: None,
            ..c.http.clone()
        };
        assert_eq!(http, HttpSection::default());
        let defaults = SessionsSection::default();
        assert_eq!(
            (
                c.sessions.token_ttl_s,
                c.sessions.lease_ttl_ms,
                c.sessions.max_connections
            ),
            (
                defaults.token_ttl_s,
                defaults.lease_ttl_ms,
                defaults.max_connections
            )
        );
        assert_eq!(
            (c.sessions.frames_per_second, c.sessions.frame_burst),
            (defaults.frames_per_second, defaults.frame_burst)
        );
        assert_eq!(
            (c.sessions.auth_timeout_ms, c.sessions.admission_timeout_ms),
            (defaults.auth_timeout_ms, defaults.admission_timeout_ms)
        );
        assert_eq!(
            (
                c.sessions.max_unauthenticated,
                c.sessions.outbound_queue_frames,
                c.sessions.write_stall_ms
            ),
            (
                defaults.max_unauthenticated,
                defaults.outbound_queue_frames,
                defaults.write_stall_ms
            )
        );
        assert_eq!(c.sessions.owner_of("robot-1"), Some("olga"));
        assert_eq!(c.sessions.owner_of("robot-2"), None);
        assert!(c.sessions.allows("alice", "robot-2") && !c.sessions.allows("alice", "robot-3"));
        assert!(c.sessions.allows("bob", "robot-3"));
    }
}
