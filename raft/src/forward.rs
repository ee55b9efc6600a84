//! Group forwarding on followers: concurrent writes bound for the leader share one RPC.
//!
//! With many clients posting to a follower, one QUIC stream per forwarded write made the
//! forwarding the follower's costliest work. Through the same queue as the leader's batcher
//! ([`crate::queue`]), up to [`MAX_IN_FLIGHT`] calls are in flight; writes that arrive while
//! every slot is busy go out together as one [`Request::WriteBatch`], which the leader feeds
//! to its own batcher. Writes whose callers gave up are not sent.

use crate::network::{CallError, Peers};
use crate::queue::{drain, Batchable};
use crate::rpc::{ForwardError, Reply, Request};
use std::sync::Arc;
use std::time::Duration;
use tether_store::{Command, NodeId, NodeInfo, Response};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// The Raft metrics this node publishes; the forwarder watches them for leader changes.
type Metrics = watch::Receiver<openraft::RaftMetrics<NodeId, NodeInfo>>;

/// Forwarding calls in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Writes in one call at most.
const MAX_BATCH: usize = crate::rpc::MAX_COMMANDS_PER_ENTRY;

/// What a forwarded write came to: the leader's answer, or why it could not be asked.
pub(crate) type Outcome = Result<Result<Response, ForwardError>, CallError>;

struct Item {
    leader: NodeId,
    addr: String,
    command: Command,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

impl Item {
    /// Whether anyone still waits for this write: its caller gives up at its deadline, or
    /// earlier when it learns of a leader change.
    fn wanted(&self, now: Instant) -> bool {
        !self.reply.is_closed() && self.deadline > now
    }
}

/// The sending side; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Forwarder {
    tx: mpsc::UnboundedSender<Item>,
}

impl Forwarder {
    /// Starts the forwarding task over `peers`; `metrics` tells it of leader changes.
    pub(crate) fn start(peers: Arc<Peers>, metrics: Metrics) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(peers, metrics, rx));
        Self { tx }
    }

    /// Sends `command` to `leader` (possibly with others) and returns its own answer.
    pub(crate) async fn forward(
        &self,
        leader: NodeId,
        addr: String,
        command: Command,
        timeout: Duration,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let item = Item {
            leader,
            addr,
            command,
            deadline: Instant::now() + timeout,
            reply,
        };
        if self.tx.send(item).is_err() {
            return Err(CallError::Network(leader, "shutting down".into()));
        }
        // Dropped unanswered: its deadline passed before it could be sent.
        answer.await.unwrap_or(Err(CallError::Timeout(leader)))
    }
}

impl Batchable for Item {
    fn wanted(&self, now: Instant) -> bool {
        Item::wanted(self, now)
    }

    /// A write for another leader (during a leader change) starts the next batch.
    fn fits_with(&self, first: &Self) -> bool {
        self.leader == first.leader
    }
}

async fn run(peers: Arc<Peers>, metrics: Metrics, rx: mpsc::UnboundedReceiver<Item>) {
    drain(rx, MAX_IN_FLIGHT, MAX_BATCH, move |batch| {
        let peers = peers.clone();
        let metrics = metrics.clone();
        async move { call(&peers, metrics, batch).await }
    })
    .await
}

/// One call for the whole batch; every write in it gets its own answer. The call is given
/// up as soon as this node learns of another leader: its callers retry with that one.
async fn call(peers: &Peers, mut metrics: Metrics, batch: Vec<Item>) {
    let (leader, addr) = (batch[0].leader, batch[0].addr.clone());
    // Until the most patient caller's deadline; each caller stops waiting at its own.
    let deadline = batch
        .iter()
        .map(|i| i.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|i| (i.command, i.reply)).unzip();
    metrics::histogram!(crate::metric_names::RAFT_FORWARD_BATCH_SIZE).record(commands.len() as f64);
    let request = if commands.len() == 1 {
        Request::Write(commands.into_iter().next().expect("one command"))
    } else {
        Request::WriteBatch(commands)
    };
    let unexpected = || {
        Ok(Err(ForwardError::Unavailable(
            "unexpected reply from leader".into(),
        )))
    };
    let leader_changed = metrics.wait_for(|m| m.current_leader != Some(leader));
    let outcome = tokio::select! {
        outcome = peers.call(leader, &addr, &request, timeout) => outcome,
        _ = leader_changed => Err(CallError::Network(leader, "the leader changed".into())),
    };
    match outcome {
        Ok(Reply::Write(answer)) if replies.len() == 1 => {
            for reply in replies {
                let _ = reply.send(Ok(answer.clone()));
            }
        }
        Ok(Reply::WriteBatch(answers)) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(unexpected());
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
