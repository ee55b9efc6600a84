//! The Tether gateway node: configuration, tokens, audit, the signaling gateway, the HTTP
//! API, and [`start_node`], the one way a node is started (by `tether node`, the tests and
//! the chaos suite alike).
//!
//! This crate is the gateway process only: no command line, no WebRTC, no bench or dev
//! tooling (those sit above it, in `node/cli`, `node/devkit` and `tests/bench`).

pub mod audit;
pub mod auth;
pub mod config;
pub mod gateway;
pub mod http;
pub mod planted;
pub mod telemetry;

use crate::config::NodeConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether_raft::{RaftNode, RaftNodeConfig, RaftTiming, TlsIdentity};
use tether_store::{Command, NodeInfo};

/// Starting a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file named in the configuration could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token key is unusable.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// Raft failed to start.
    #[error(transparent)]
    Raft(#[from] tether_raft::RaftNodeError),
    /// The HTTPS certificate or key is unusable.
    #[error("https: {0}")]
    Https(#[from] http::listen::ServerTlsError),
    /// The HTTP listener could not bind.
    #[error("binding http {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn read(path: &std::path::Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|source| NodeError::Read {
        path: path.into(),
        source,
    })
}

/// A running node; dropping it does not stop it, [`NodeHandle::shutdown`] does.
pub struct NodeHandle {
    /// The bound HTTP address.
    pub http_addr: SocketAddr,
    /// The Raft member.
    pub raft: Arc<RaftNode>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops serving, stops Raft, and waits for the tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.raft.shutdown().await;
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts a node from a validated configuration: store, Raft over QUIC, bootstrap, the HTTP
/// API and the leader's expiry cleanup.
pub async fn start_node(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let tls = TlsIdentity {
        ca_cert_pem: read(&config.tls.ca_cert)?,
        node: tether_raft::CertPair {
            cert_pem: read(&config.tls.cert)?,
            key_pem: read(&config.tls.key)?,
        },
    };
    let public_key_pem = read(&config.auth.public_key)?;
    let verifier = auth::Verifier::from_pem(public_key_pem.as_bytes())?
        .with_max_ttl(Duration::from_secs(config.auth.max_token_ttl_s));
    let metrics = telemetry::prometheus();
    let r = &config.raft;
    let raft = Arc::new(
        RaftNode::start(RaftNodeConfig {
            id: config.id,
            listen: config.raft_addr,
            tls,
            data_dir: config.data_dir.clone(),
            fsync: r.fsync,
            timing: RaftTiming {
                heartbeat_ms: r.heartbeat_ms,
                election_min_ms: r.election_min_ms,
                election_max_ms: r.election_max_ms,
                snapshot_logs: r.snapshot_logs,
                keep_logs: r.keep_logs,
            },
        })
        .await?,
    );
    let members: BTreeMap<_, _> = config
        .initial_members
        .iter()
        .map(|m| {
            (
                m.id,
                NodeInfo {
                    raft_addr: m.raft_addr.to_string(),
                    http_addr: m.http_addr.to_string(),
                },
            )
        })
        .collect();
    if !members.is_empty() {
        raft.bootstrap(members).await?;
    }

    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| NodeError::Bind {
        addr: config.http_addr,
        source,
    })?;
    let https = match &config.http.tls {
        Some(t) => Some(Arc::new(http::listen::ServerTls::load(&t.cert, &t.key)?)),
        None => {
            if !config.http_addr.ip().is_loopback() {
                tracing::warn!(%http_addr, "serving plain HTTP beyond loopback (http.allow_plaintext): tokens and revocation notices cross the network in the clear");
            }
            None
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let minter = match &config.auth.private_key {
        Some(path) => Some(auth::Minter::from_pem(read(path)?.as_bytes())?),
        None => None,
    };
    let config = Arc::new(config);
    let audit_path = config.data_dir.join("audit.jsonl");
    let audit =
        audit::AuditLog::open(&audit_path, config.id).map_err(|source| NodeError::Read {
            path: audit_path,
            source,
        })?;
    let hub = gateway::Hub::new(
        raft.clone(),
        config.clone(),
        verifier.clone(),
        audit.clone(),
    );
    let hub_tasks = hub.start(stopped.clone());
    let app = http::router(http::AppState {
        raft: raft.clone(),
        verifier,
        public_key_pem: public_key_pem.into(),
        config: config.clone(),
        metrics,
        minter,
        hub,
        audit,
        limits: Arc::new(http::limits::HttpLimits::new(&config.http)),
    });
    let deadlines = http::listen::Deadlines {
        handshake: Duration::from_millis(config.http.header_timeout_ms),
        header_read: Duration::from_millis(config.http.header_timeout_ms),
    };
    let mut tasks = Vec::new();
    if let (Some(https), Some(t)) = (&https, &config.http.tls) {
        let every = Duration::from_millis(t.reload_ms);
        tasks.push(tokio::spawn(https.clone().watch(every, stopped.clone())));
    }
    let http = tokio::spawn(http::listen::serve(
        listener,
        app,
        https,
        deadlines,
        stopped.clone(),
    ));
    let expiry = tokio::spawn(expire_loop(
        raft.clone(),
        Duration::from_millis(config.raft.expire_interval_ms),
        stopped,
    ));
    tracing::info!(id = config.id, %http_addr, "node serving");
    Ok(NodeHandle {
        http_addr,
        raft,
        stop,
        tasks: [http, expiry]
            .into_iter()
            .chain(hub_tasks)
            .chain(tasks)
            .collect(),
    })
}

/// Returns once `flag` is (or becomes) true, or its sender is gone. Unlike awaiting
/// `wait_for` in a `select!`, it holds no borrow of the value across other awaits.
pub(crate) async fn until_set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Runs `tick` every `period` until `stopped` (a tick missed while the last one ran is not
/// made up for).
pub(crate) async fn every<F, Fut>(
    period: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = until_set(&mut stopped) => return,
        }
        tick().await;
    }
}

/// On the leader, periodically proposes the deterministic expiry cleanup when something is
/// due. The cut-off instant travels in the log, so every node drops the same entries.
async fn expire_loop(
    raft: Arc<RaftNode>,
    period: Duration,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    every(period, stopped, || async {
        let is_leader = raft.is_leader();
        let now = tether_api::time::now_ms();
        let due = raft.view().read().next_expiry().is_some_and(|at| at <= now);
        if is_leader && due {
            match raft.write(Command::Expire { now }, period).await {
                Ok(r) => tracing::info!(result = ?r, "expired revocations dropped"),
                Err(e) => tracing::warn!(error = %e, "expiry cleanup failed"),
            }
        }
    })
    .await
}
