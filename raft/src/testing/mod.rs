//! An in-process Raft test router (feature `testing`): N openraft members on real RocksDB
//! storage, connected by an in-memory network with partitions, lost links and delays, for
//! fast Raft-level tests without OS processes or QUIC.
//!
//! ```ignore
//! let dir = tempfile::tempdir()?;
//! let router = Router::start_cluster(dir.path(), 3, &Router::fast_timing()).await?;
//! let leader = router.wait_for_leader(Duration::from_secs(2)).await?;
//! router.isolate(leader);
//! let others: Vec<_> = router.ids().into_iter().filter(|&id| id != leader).collect();
//! let new_leader = router.wait_for_leader_among(&others, Duration::from_secs(2)).await?;
//! router.write(new_leader, revoke("sid-1")).await?;
//! router.shutdown().await;
//! ```
//!
//! Time is real (tokio's clock), so the tests are fast but not a deterministic simulation:
//! they wait for conditions (metrics watches), never for fixed sleeps, and hold whatever
//! openraft may legally choose (which node wins an election, when a snapshot is built).

mod net;
mod wait;

pub use net::RpcStats;

use crate::RaftTiming;
use net::{Factory, Hub};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::RaftMetrics;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tether_store::{Command, NodeId, NodeInfo, ReplicatedState, RevocationKind, StateView};
use tether_store_rocks::{Raft, StoreError, TypeConfig};
use tokio::time::Instant;

/// What [`Router::write`] returns: openraft's own answer to `client_write`.
pub type WriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>;

/// Why a router operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No node with this id was ever started.
    #[error("node {0} is unknown")]
    Unknown(NodeId),
    /// The node is killed.
    #[error("node {0} is not running")]
    NotRunning(NodeId),
    /// The node runs already.
    #[error("node {0} is already running")]
    AlreadyRunning(NodeId),
    /// The store could not open.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A data directory could not be made.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// openraft refused or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// A condition did not come true in time.
    #[error("timed out after {timeout:?} waiting for {what}; last seen: {seen}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long it was given.
        timeout: Duration,
        /// What the nodes looked like last.
        seen: String,
    },
}

/// A node the router has started at least once.
struct Member {
    dir: PathBuf,
    view: StateView,
}

/// N openraft members on RocksDB in one process, and the network between them.
///
/// Node `id` keeps its data in `<base>/node-<id>`; it survives [`Router::kill`], so
/// [`Router::restart`] brings the node back with its log, vote and state. Call
/// [`Router::shutdown`] before the base directory goes away.
pub struct Router {
    base: PathBuf,
    config: Arc<openraft::Config>,
    hub: Arc<Hub>,
    members: Mutex<BTreeMap<NodeId, Member>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A revocation of session `sid`, as the gateway proposes one.
pub fn revoke(sid: &str) -> Command {
    Command::Revoke {
        kind: RevocationKind::Session,
        target: sid.to_owned(),
        reason: "test".into(),
        revoked_by: "router".into(),
        at: 1_000,
        expires_at: None,
    }
}

impl Router {
    /// Timing for tests: failover within about 200 ms, no snapshots unless asked for.
    pub fn fast_timing() -> RaftTiming {
        RaftTiming {
            heartbeat_ms: 15,
            election_min_ms: 60,
            election_max_ms: 120,
            snapshot_logs: 100_000,
            keep_logs: 1_000,
        }
    }

    /// A router with no nodes yet; nodes keep their data under `base`. openraft is
    /// configured from `timing` as [`crate::RaftNode::start`] configures it.
    pub fn new(base: &Path, timing: &RaftTiming) -> Result<Self, RouterError> {
        let config = crate::node::raft_config(timing).map_err(RouterError::Raft)?;
        Ok(Self {
            base: base.to_owned(),
            config: Arc::new(config),
            hub: Arc::new(Hub::default()),
            members: Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts nodes `1..=n`, initializes the cluster with all of them as voters and waits
    /// (up to five seconds) until they agree on a leader.
    pub async fn start_cluster(
        base: &Path,
        n: NodeId,
        timing: &RaftTiming,
    ) -> Result<Self, RouterError> {
        let router = Self::new(base, timing)?;
        let ids: Vec<NodeId> = (1..=n).collect();
        for &id in &ids {
            router.start_node(id).await?;
        }
        router.initialize(&ids).await?;
        router.wait_for_leader(Duration::from_secs(5)).await?;
        Ok(router)
    }

    /// The address record node `id` is given in the membership (no real address: the
    /// router delivers by id).
    pub fn node_info(id: NodeId) -> NodeInfo {
        NodeInfo {
            raft_addr: format!("router:{id}"),
            http_addr: String::new(),
        }
    }

    /// Starts a new node `id` (an uninitialized member until a membership includes it).
    pub async fn start_node(&self, id: NodeId) -> Result<(), RouterError> {
        if lock(&self.members).contains_key(&id) {
            return Err(RouterError::AlreadyRunning(id));
        }
        let dir = self.base.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir)?;
        let view = self.boot(id, &dir).await?;
        lock(&self.members).insert(id, Member { dir, view });
        Ok(())
    }

    /// Opens node `id`'s store in `dir`, starts its Raft and puts it on the network.
    async fn boot(&self, id: NodeId, dir: &Path) -> Result<StateView, RouterError> {
        let (log_store, state_machine) = open_store(dir).await?;
        let view = state_machine.view();
        let factory = Factory {
            hub: self.hub.clone(),
            from: id,
        };
        let raft = Raft::new(id, self.config.clone(), factory, log_store, state_machine)
            .await
            .map_err(|e| RouterError::Raft(e.to_string()))?;
        self.hub.set_running(id, raft);
        Ok(view)
    }

    /// Initializes the cluster on the first of `voters`, with all of them as voters.
    pub async fn initialize(&self, voters: &[NodeId]) -> Result<(), RouterError> {
        let first = *voters
            .first()
            .ok_or_else(|| RouterError::Raft("no voters".into()))?;
        let members: BTreeMap<NodeId, NodeInfo> =
            voters.iter().map(|&id| (id, Self::node_info(id))).collect();
        self.raft(first)?
            .initialize(members)
            .await
            .map_err(|e| RouterError::Raft(e.to_string()))
    }

    /// Every node ever started, running or killed.
    pub fn ids(&self) -> Vec<NodeId> {
        lock(&self.members).keys().copied().collect()
    }

    /// The nodes running now.
    pub fn running_ids(&self) -> Vec<NodeId> {
        self.hub.running_ids()
    }

    /// Node `id`'s openraft handle.
    pub fn raft(&self, id: NodeId) -> Result<Raft, RouterError> {
        self.hub.running(id).ok_or_else(|| self.absent(id))
    }

    fn absent(&self, id: NodeId) -> RouterError {
        if lock(&self.members).contains_key(&id) {
            RouterError::NotRunning(id)
        } else {
            RouterError::Unknown(id)
        }
    }

    /// Node `id`'s metrics now.
    pub fn metrics(&self, id: NodeId) -> Result<RaftMetrics<NodeId, NodeInfo>, RouterError> {
        Ok(self.raft(id)?.metrics().borrow().clone())
    }

    /// Node `id`'s applied state, as the deny check reads it.
    pub fn view(&self, id: NodeId) -> Result<StateView, RouterError> {
        lock(&self.members)
            .get(&id)
            .map(|m| m.view.clone())
            .ok_or(RouterError::Unknown(id))
    }

    /// A copy of node `id`'s applied state.
    pub fn state(&self, id: NodeId) -> Result<ReplicatedState, RouterError> {
        Ok(self.view(id)?.read().clone())
    }

    /// Commits `command` through node `id` with openraft's `client_write`, as Tether's
    /// leader-side batcher does (without batching): a follower answers `ForwardToLeader`.
    pub async fn write(&self, id: NodeId, command: Command) -> Result<WriteResult, RouterError> {
        Ok(self.raft(id)?.client_write(command).await)
    }

    /// Commits `command` through the leader wherever it is, starting at node `from` and
    /// following `ForwardToLeader` hints across leader changes until `timeout`, the way
    /// [`crate::RaftNode::write`] routes. Returns the node that committed it and its answer.
    pub async fn write_routed(
        &self,
        from: NodeId,
        command: Command,
        timeout: Duration,
    ) -> Result<(NodeId, ClientWriteResponse<TypeConfig>), RouterError> {
        let deadline = Instant::now() + timeout;
        let mut target = from;
        let mut seen = String::from("no attempt");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RouterError::Timeout {
                    what: "a routed write to commit".into(),
                    timeout,
                    seen,
                });
            }
            let Some(raft) = self.hub.running(target) else {
                // The hinted leader is down: wait until `from` learns of a running one.
                seen = format!("node {target} is down");
                target = self.wait_running_leader(from, remaining).await?;
                continue;
            };
            let attempt = tokio::time::timeout(remaining, raft.client_write(command.clone()));
            match attempt.await {
                Ok(Ok(response)) => return Ok((target, response)),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    seen = format!("node {target}: forward to {:?}", f.leader_id);
                    target = match f.leader_id {
                        Some(leader) => leader,
                        // No leader known yet: ask again once either knows one.
                        None => self.wait_new_hint(from, target, remaining).await?,
                    };
                }
                Ok(Err(e)) => return Err(RouterError::Raft(e.to_string())),
                Err(_) => seen = format!("node {target}: no answer"),
            }
        }
    }

    /// Waits until `from` or `target` knows a running leader, other than `target` unless it
    /// has become leader since it refused.
    async fn wait_new_hint(
        &self,
        from: NodeId,
        target: NodeId,
        timeout: Duration,
    ) -> Result<NodeId, RouterError> {
        let ids: Vec<NodeId> = [from, target]
            .into_iter()
            .filter(|&id| self.hub.running(id).is_some())
            .collect();
        self.wait_until(&ids, timeout, "a leader to forward to", |seen| {
            let target_leads = seen
                .get(&target)
                .is_some_and(|m| m.state == openraft::ServerState::Leader);
            seen.values().find_map(|m| {
                m.current_leader
                    .filter(|&l| self.hub.running(l).is_some() && (l != target || target_leads))
            })
        })
        .await
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.hub.set_cut(x, y, true);
                self.hub.set_cut(y, x, true);
            }
        }
    }

    /// Cuts node `id` off from every other node the router knows, both ways.
    pub fn isolate(&self, id: NodeId) {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|&n| n != id).collect();
        self.partition(&[id], &others);
    }

    /// Loses every request sent on `from → to` (and every reply to a request `to` sent to
    /// `from`); the other direction is untouched.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.hub.set_cut(from, to, true);
    }

    /// Restores the link `from → to`.
    pub fn restore(&self, from: NodeId, to: NodeId) {
        self.hub.set_cut(from, to, false);
    }

    /// Holds every message on `from → to` for `delay` before delivering it (zero: no
    /// delay). A delay beyond the heartbeat interval makes openraft time the RPC out.
    pub fn delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        self.hub.set_delay(from, to, delay);
    }

    /// Restores every link and removes every delay.
    pub fn heal(&self) {
        self.hub.heal();
    }

    /// The RPCs node `id` has received, and lost on their way to it.
    pub fn rpc_stats(&self, id: NodeId) -> RpcStats {
        self.hub.stats(id)
    }

    /// Stops node `id` (openraft shutdown); its data stays for [`Router::restart`]. RPCs to
    /// it are lost (`Unreachable`) from now on.
    pub async fn kill(&self, id: NodeId) -> Result<(), RouterError> {
        let raft = self.hub.take_running(id).ok_or_else(|| self.absent(id))?;
        raft.shutdown()
            .await
            .map_err(|e| RouterError::Raft(e.to_string()))
    }

    /// Starts killed node `id` again from its data directory.
    pub async fn restart(&self, id: NodeId) -> Result<(), RouterError> {
        if self.hub.running(id).is_some() {
            return Err(RouterError::AlreadyRunning(id));
        }
        let dir = lock(&self.members)
            .get(&id)
            .map(|m| m.dir.clone())
            .ok_or(RouterError::Unknown(id))?;
        let view = self.boot(id, &dir).await?;
        if let Some(member) = lock(&self.members).get_mut(&id) {
            member.view = view;
        }
        Ok(())
    }

    /// Stops every running node.
    pub async fn shutdown(&self) {
        for id in self.running_ids() {
            let _ = self.kill(id).await;
        }
    }
}

/// Opens a store, waiting out a previous incarnation's last tasks: openraft's shutdown
/// returns before its state machine worker (which holds the database) has ended, and
/// RocksDB refuses a second open while the lock is held.
async fn open_store(
    dir: &Path,
) -> Result<
    (
        tether_store_rocks::LogStore,
        tether_store_rocks::StateMachineStore,
    ),
    RouterError,
> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tether_store_rocks::open(dir, false) {
            Ok(stores) => return Ok(stores),
            Err(StoreError::Rocks(e))
                if e.to_string().contains("lock") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
