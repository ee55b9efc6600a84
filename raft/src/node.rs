//! One Raft member: storage, QUIC endpoint, openraft, and the operations the gateway needs
//! (write anywhere, linearizable barrier, membership), each routed to the leader.
//!
//! Long file: each operation here is short, but they share the leader-routing retries;
//! the core both this and the QUIC server act on is `shared.rs`, the queues live apart.

use crate::network::{CallError, NetworkFactory, Peers};
use crate::rpc::{ForwardError, Reply, Request};
use crate::server;
pub use crate::shared::SignalHandler;
use crate::shared::{client_write_error, Shared};
use crate::status::{MemberStatus, RaftStatus};
use crate::tls::{TlsError, TlsIdentity};
use openraft::error::RaftError;
use openraft::SnapshotPolicy;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tether_store::{Command, NodeId, NodeInfo, Response, StateView};
use tether_store_rocks::Raft;
use tokio::time::Instant;

/// Raft timing and log compaction.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    /// Leader heartbeat period; openraft also times every append-entries RPC out after it,
    /// so it must exceed the worst node-to-node round trip plus a follower's fsync.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_logs: u64,
    /// Keep this many entries below a snapshot, so a briefly lagging peer needs no snapshot.
    pub keep_logs: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat_ms: 50,
            // A follower waits openraft's leader lease (= election_max_ms) and then its own
            // election timeout before it stands: failover ≈ max + rand(min, max).
            election_min_ms: 120,
            election_max_ms: 200,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
        }
    }
}

/// What a Raft member needs to start.
#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// The cluster CA and this node's certificate.
    pub tls: TlsIdentity,
    /// Where RocksDB keeps the log and state.
    pub data_dir: PathBuf,
    /// Sync the WAL on every log append (S3). Off only for measuring its cost.
    pub fsync: bool,
    /// Timing.
    pub timing: RaftTiming,
}

/// openraft's configuration for `timing`: the one mapping, shared with the test router.
pub(crate) fn raft_config(timing: &RaftTiming) -> Result<openraft::Config, String> {
    openraft::Config {
        cluster_name: "tether".into(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        install_snapshot_timeout: 2_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_logs),
        max_in_snapshot_log_to_keep: timing.keep_logs,
        // Bounds an append's frame (see `rpc::MAX_FRAME`).
        max_payload_entries: crate::rpc::MAX_ENTRIES_PER_APPEND,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

/// Why a Raft operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    /// The store could not open.
    #[error("store: {0}")]
    Store(#[from] tether_store_rocks::StoreError),
    /// The TLS material is unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The endpoint could not bind.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// openraft refused to start or failed fatally.
    #[error("raft: {0}")]
    Raft(String),
    /// No leader or no quorum answered in time: the cluster cannot decide now.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused as invalid (for example a bad membership change).
    #[error("invalid: {0}")]
    Invalid(String),
}

/// A running Raft member.
pub struct RaftNode {
    shared: Arc<Shared>,
    events: tokio::sync::broadcast::Sender<tether_store::SessionEvent>,
    peers: Arc<Peers>,
    forwarder: crate::forward::Forwarder,
    view: StateView,
    endpoint: quinn::Endpoint,
    server: tokio::task::JoinHandle<()>,
    barriers: crate::barrier::Coalescer,
}

impl RaftNode {
    /// Opens the store, binds the QUIC endpoint and starts openraft.
    pub async fn start(config: RaftNodeConfig) -> Result<Self, RaftNodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let (log_store, state_machine) = tether_store_rocks::open(&config.data_dir, config.fsync)?;
        let view = state_machine.view();
        let events = state_machine.events();

        let mut endpoint = quinn::Endpoint::server(config.tls.server_config()?, config.listen)?;
        endpoint.set_default_client_config(config.tls.client_config()?);
        let peers = Arc::new(Peers::new(config.id, endpoint.clone()));

        let t = &config.timing;
        let raft_config = raft_config(t).map_err(RaftNodeError::Raft)?;
        let factory = NetworkFactory {
            peers: peers.clone(),
        };
        let raft = Raft::new(
            config.id,
            Arc::new(raft_config),
            factory,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftNodeError::Raft(e.to_string()))?;
        let batcher = crate::batch::Batcher::start(raft.clone(), client_write_error);
        let shared = Arc::new(Shared {
            id: config.id,
            raft,
            batcher,
            signal_handler: std::sync::OnceLock::new(),
        });
        let server = tokio::spawn(server::serve(endpoint.clone(), shared.clone()));
        let forwarder = crate::forward::Forwarder::start(peers.clone(), shared.raft.metrics());
        tracing::info!(id = config.id, listen = %endpoint.local_addr()?, "raft node started");
        Ok(Self {
            shared,
            events,
            forwarder,
            peers,
            view,
            endpoint,
            server,
            barriers: crate::barrier::Coalescer::default(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The openraft handle (inside the Raft layer only: everything above reads
    /// [`RaftNode::status`]).
    pub(crate) fn raft(&self) -> &Raft {
        &self.shared.raft
    }

    /// This member's view of the cluster now.
    pub fn status(&self) -> RaftStatus {
        let m = self.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, info)| MemberStatus {
                id: *id,
                info: info.clone(),
                voter: voters.contains(id),
                matched_index: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten().map(|l| l.index)),
            })
            .collect();
        RaftStatus {
            id: m.id,
            state: format!("{:?}", m.state).to_lowercase(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
        }
    }

    /// The committed index as this node knows it (asks openraft's core).
    pub async fn committed_index(&self) -> Result<Option<u64>, RaftNodeError> {
        self.raft()
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await
            .map_err(|e| RaftNodeError::Unavailable(e.to_string()))
    }

    /// Whether this node believes it is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft().metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id)
    }

    /// The applied revocation state.
    pub fn view(&self) -> &StateView {
        &self.view
    }

    /// Installs the handler for signaling messages from other nodes (once).
    pub fn set_signal_handler(&self, handler: SignalHandler) {
        let _ = self.shared.signal_handler.set(handler);
    }

    /// Sends a signaling message to node `to` over the shared QUIC connection and returns
    /// its answer.
    pub async fn signal(
        &self,
        to: NodeId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RaftNodeError> {
        let node = self
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&to)
            .cloned()
            .ok_or_else(|| RaftNodeError::Invalid(format!("node {to} is not a member")))?;
        let request = Request::Signal {
            from: self.id(),
            payload,
        };
        match self
            .peers
            .call(to, &node.raft_addr, &request, timeout)
            .await
        {
            Ok(Reply::Signal(answer)) => Ok(answer),
            Ok(other) => Err(RaftNodeError::Unavailable(format!(
                "unexpected reply {other:?}"
            ))),
            Err(e) => Err(RaftNodeError::Unavailable(e.to_string())),
        }
    }

    /// Ids of every other member.
    pub fn other_members(&self) -> Vec<NodeId> {
        let id = self.id();
        self.raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(n, _)| *n)
            .filter(|n| *n != id)
            .collect()
    }

    /// Session starts and ends as this node applies them.
    pub fn session_events(&self) -> tokio::sync::broadcast::Receiver<tether_store::SessionEvent> {
        self.events.subscribe()
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Forms the cluster from a member list every node is given alike: only the member with
    /// the lowest id initializes, and only if this node has never been initialized. Returns
    /// whether this call initialized the cluster.
    pub async fn bootstrap(
        &self,
        members: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<bool, RaftNodeError> {
        let raft = self.raft();
        if members.keys().next() != Some(&self.id())
            || raft
                .is_initialized()
                .await
                .map_err(|e| RaftNodeError::Raft(e.to_string()))?
        {
            return Ok(false);
        }
        match raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(id = self.id(), "cluster initialized");
                Ok(true)
            }
            Err(RaftError::APIError(e)) => {
                tracing::info!(error = %e, "cluster already initialized");
                Ok(false)
            }
            Err(e) => Err(RaftNodeError::Raft(e.to_string())),
        }
    }

    /// Commits a command through the leader, wherever it is, and returns the applied
    /// response. Retries across leader changes until `timeout`: commands are idempotent, so
    /// a retry after an unknown outcome is safe.
    pub async fn write(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Response, RaftNodeError> {
        let started = Instant::now();
        let shared = self.shared.clone();
        let local_command = command.clone();
        let response = self
            .route_with(
                timeout,
                |leader, addr, remaining| {
                    self.forwarder
                        .forward(leader, addr, command.clone(), remaining)
                },
                move || {
                    let shared = shared.clone();
                    let command = local_command.clone();
                    async move { shared.write_as_leader(command).await }
                },
            )
            .await?;
        // The leader answers once it has applied; a follower acknowledges only once it has
        // applied too, so a revocation it acknowledges is refused by it, and pushed to its
        // robots, at once (a lossy link otherwise delays its apply by retransmissions).
        if self.raft().metrics().borrow().current_leader != Some(self.id()) {
            let remaining = timeout.saturating_sub(started.elapsed());
            if let Err(e) = self.read_barrier(remaining).await {
                tracing::warn!(error = %e, "a forwarded write committed but is not applied here yet");
            }
        }
        Ok(response)
    }

    /// Returns once this node has applied everything committed before the call, as confirmed
    /// by a leader in contact with a quorum (S2). A node cut off from the quorum gets
    /// [`RaftNodeError::Unavailable`] and must fail closed.
    /// Concurrent barriers share read-index rounds ([`crate::barrier`]).
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), RaftNodeError> {
        metrics::counter!(crate::metric_names::RAFT_READ_BARRIERS_TOTAL).increment(1);
        let deadline = Instant::now() + timeout;
        let shared = self.shared.clone();
        let round = || async move {
            let read_log_id = self
                .route(
                    timeout,
                    || Request::ReadIndex,
                    |reply| match reply {
                        Reply::ReadIndex(r) => Some(r),
                        _ => None,
                    },
                    move || {
                        let shared = shared.clone();
                        async move { shared.read_index_as_leader().await }
                    },
                )
                .await;
            read_log_id
                .map(|id| id.map(|l| l.index))
                .map_err(|e| match e {
                    RaftNodeError::Unavailable(why) => why,
                    other => other.to_string(),
                })
        };
        // Waiting for a round in flight and then running one's own could take two rounds'
        // time: the caller's timeout bounds both together.
        let read_index = tokio::time::timeout(timeout, self.barriers.read_index(round))
            .await
            .map_err(|_| RaftNodeError::Unavailable("read barrier timed out".into()))?
            .map_err(RaftNodeError::Unavailable)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.raft()
            .wait(Some(remaining))
            .applied_index_at_least(read_index, "read barrier")
            .await
            .map_err(|e| {
                RaftNodeError::Unavailable(format!("applying up to the read index: {e}"))
            })?;
        Ok(())
    }

    /// Adds a voter (as a learner first, until it has caught up).
    pub async fn add_member(
        &self,
        id: NodeId,
        node: NodeInfo,
        timeout: Duration,
    ) -> Result<(), RaftNodeError> {
        let shared = self.shared.clone();
        let remote_node = node.clone();
        // Leave the leader a little of the caller's time to answer.
        let catch_up = timeout.mul_f64(0.9);
        self.route(
            timeout,
            || Request::AddMember {
                id,
                node: remote_node.clone(),
                timeout_ms: catch_up.as_millis() as u64,
            },
            |reply| match reply {
                Reply::Membership(r) => Some(r),
                _ => None,
            },
            move || {
                let shared = shared.clone();
                let node = node.clone();
                async move { shared.add_member_as_leader(id, node, catch_up).await }
            },
        )
        .await
    }

    /// Removes a voter.
    pub async fn remove_member(&self, id: NodeId, timeout: Duration) -> Result<(), RaftNodeError> {
        let shared = self.shared.clone();
        self.route(
            timeout,
            || Request::RemoveMember { id },
            |reply| match reply {
                Reply::Membership(r) => Some(r),
                _ => None,
            },
            move || {
                let shared = shared.clone();
                async move { shared.remove_member_as_leader(id).await }
            },
        )
        .await
    }

    /// Runs `local` if this node leads, else sends `request()` to the leader; follows
    /// leader changes until `timeout`.
    async fn route<T, F, Fut>(
        &self,
        timeout: Duration,
        request: impl Fn() -> Request,
        extract: impl Fn(Reply) -> Option<Result<T, ForwardError>>,
        local: F,
    ) -> Result<T, RaftNodeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
    {
        let (request, extract) = (&request, &extract);
        self.route_with(
            timeout,
            |leader, addr, remaining| async move {
                let reply = self
                    .peers
                    .call(leader, &addr, &request(), remaining)
                    .await?;
                Ok(extract(reply).unwrap_or_else(|| {
                    Err(ForwardError::Unavailable(
                        "unexpected reply from leader".into(),
                    ))
                }))
            },
            local,
        )
        .await
    }

    /// Runs `local` if this node leads, else `remote(leader, its address, time left)`;
    /// follows leader changes until `timeout`.
    async fn route_with<T, F, Fut, R, RFut>(
        &self,
        timeout: Duration,
        remote: R,
        local: F,
    ) -> Result<T, RaftNodeError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ForwardError>>,
        R: Fn(NodeId, String, Duration) -> RFut,
        RFut: std::future::Future<Output = Result<Result<T, ForwardError>, CallError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no leader");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RaftNodeError::Unavailable(last_error));
            }
            let metrics = match self
                .raft()
                .wait(Some(remaining))
                .metrics(|m| m.current_leader.is_some(), "a known leader")
                .await
            {
                Ok(m) => m,
                Err(_) => return Err(RaftNodeError::Unavailable("no leader".into())),
            };
            let Some(leader) = metrics.current_leader else {
                continue;
            };
            let outcome = if leader == self.id() {
                tokio::time::timeout(remaining, local())
                    .await
                    .unwrap_or_else(|_| Err(ForwardError::Unavailable("timed out".into())))
            } else {
                let Some(node) = metrics.membership_config.membership().get_node(&leader) else {
                    return Err(RaftNodeError::Unavailable(format!(
                        "leader {leader} has no address"
                    )));
                };
                let call = remote(leader, node.raft_addr.clone(), remaining);
                // A dead leader's connection only fails at the QUIC idle timeout; stop
                // waiting as soon as this node learns of another leader (or an election).
                let waiter = self.raft().wait(Some(remaining));
                let leader_changed =
                    waiter.metrics(|m| m.current_leader != Some(leader), "leader change");
                tokio::select! {
                    reply = call => reply.unwrap_or_else(|e| match e {
                        // The leader will not do it for this node: asking again will not help.
                        CallError::Refused(..) => Err(ForwardError::Invalid(e.to_string())),
                        e => Err(ForwardError::Unavailable(e.to_string())),
                    }),
                    _ = leader_changed => Err(ForwardError::NotLeader { leader: None }),
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                Err(ForwardError::Invalid(msg)) => return Err(RaftNodeError::Invalid(msg)),
                Err(e) => {
                    last_error = e.to_string();
                    // A leader change is under way or the leader is unreachable; give the
                    // election a moment before asking again.
                    tokio::time::sleep(Duration::from_millis(10).min(remaining)).await;
                }
            }
        }
    }

    /// Stops openraft and closes the endpoint.
    pub async fn shutdown(&self) {
        let _ = self.raft().shutdown().await;
        self.endpoint.close(0u32.into(), b"shutdown");
        self.server.abort();
    }
}
