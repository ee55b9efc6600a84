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
use tether_store::{Command, NodeId, Response};
use tokio::sync::{mpsc, oneshot, Semaphore};

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
    timeout: Duration,
    reply: oneshot::Sender<Outcome>,
}

/// The sending side; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Forwarder {
    tx: mpsc::UnboundedSender<Item>,
}

impl Forwarder {
    /// Starts the forwarding task over `peers`.
    pub(crate) fn start(peers: Arc<Peers>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(peers, rx));
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
            timeout,
            reply,
        };
        if self.tx.send(item).is_err() {
            return Err(CallError::Network(leader, "shutting down".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CallError::Network(leader, "shutting down".into())))
    }
}

async fn run(peers: Arc<Peers>, mut rx: mpsc::UnboundedReceiver<Item>) {
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
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) if item.leader == batch[0].leader => batch.push(item),
                Ok(item) => {
                    held = Some(item);
                    break;
                }
                Err(_) => break,
            }
        }
        let peers = peers.clone();
        tokio::spawn(async move {
            let _slot = slot;
            call(&peers, batch).await;
        });
    }
}

/// One call for the whole batch; every write in it gets its own answer.
async fn call(peers: &Peers, batch: Vec<Item>) {
    let (leader, addr) = (batch[0].leader, batch[0].addr.clone());
    // The tightest caller's time: the others retry through `route` if it runs out.
    let timeout = batch.iter().map(|i| i.timeout).min().unwrap_or_default();
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
    match peers.call(leader, &addr, &request, timeout).await {
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
