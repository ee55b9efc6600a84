//! Group forwarding on followers: concurrent writes bound for the leader share one RPC.
//!
//! With many clients posting to a follower, one QUIC stream per forwarded write made the
//! forwarding the follower's costliest work. Like the leader's batcher, the forwarder keeps
//! up to [`MAX_IN_FLIGHT`] calls in flight; writes that arrive while every slot is busy go
//! out together as one [`Request::WriteBatch`], which the leader feeds to its own batcher.
//! At low load a write goes out alone at once, so latency does not grow.

use crate::network::{CallError, Peers};
use crate::rpc::{ForwardError, Reply, Request};
use std::sync::Arc;
use std::time::Duration;
use tether_store::{Command, NodeId, NodeInfo, Response};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::Instant;

/// The Raft metrics this node publishes; the forwarder watches them for leader changes.
type Metrics = watch::Receiver<openraft::RaftMetrics<NodeId, NodeInfo>>;

/// Forwarding calls in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Writes in one call at most.
const MAX_BATCH: usize = 512;

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

async fn run(peers: Arc<Peers>, metrics: Metrics, mut rx: mpsc::UnboundedReceiver<Item>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A write for another leader (during a leader change) starts the next batch.
    let mut held: Option<Item> = None;
    loop {
        let first = match held.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Writes whose callers gave up while waiting for a slot are not sent.
        let now = Instant::now();
        let mut batch: Vec<Item> = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            if item.wanted(now) {
                if batch.first().is_some_and(|b| b.leader != item.leader) {
                    held = Some(item);
                    break;
                }
                batch.push(item);
            }
            next = if batch.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            continue;
        }
        let peers = peers.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            call(&peers, metrics, batch).await;
        });
    }
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
    metrics::histogram!("tether_raft_forward_batch_size").record(commands.len() as f64);
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
