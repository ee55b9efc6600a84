//! Group commit on the leader: concurrent writes share one log entry.
//!
//! openraft 0.9 appends (and fsyncs) each `client_write` separately, which caps throughput
//! at one fsync per write. Through the shared queue ([`crate::queue`]) up to
//! [`MAX_IN_FLIGHT`] entries are in flight; writes that arrive while every slot is busy go
//! out together as one [`Command::Batch`].

use crate::queue::{drain, Batchable};
use crate::rpc::ForwardError;
use tether_store::{Command, NodeId, NodeInfo, Response};
use tether_store_rocks::Raft;
use tokio::sync::{mpsc, oneshot};

/// Log entries in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Commands in one batch at most, bounding entry size.
const MAX_BATCH: usize = crate::rpc::MAX_COMMANDS_PER_ENTRY;

type Reply = oneshot::Sender<Result<Response, ForwardError>>;
type WriteError =
    openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, NodeInfo>>;

/// The sending side; cloning is cheap.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::UnboundedSender<(Command, Reply)>,
}

impl Batcher {
    /// Starts the batching task for `raft`.
    pub(crate) fn start(raft: Raft, to_error: fn(WriteError) -> ForwardError) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx, to_error));
        Self { tx }
    }

    /// Commits one command (possibly with others) and returns its own response.
    pub(crate) async fn write(&self, command: Command) -> Result<Response, ForwardError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((command, reply))
            .map_err(|_| ForwardError::Unavailable("raft is shutting down".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(ForwardError::Unavailable("raft is shutting down".into())))
    }
}

impl Batchable for (Command, Reply) {}

async fn run(
    raft: Raft,
    rx: mpsc::UnboundedReceiver<(Command, Reply)>,
    to_error: fn(WriteError) -> ForwardError,
) {
    drain(rx, MAX_IN_FLIGHT, MAX_BATCH, move |batch| {
        let raft = raft.clone();
        async move {
            metrics::histogram!(crate::metric_names::RAFT_BATCH_SIZE).record(batch.len() as f64);
            let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let entry = if commands.len() == 1 {
                commands.into_iter().next().expect("one command")
            } else {
                Command::Batch(commands)
            };
            let result = raft
                .client_write(entry)
                .await
                .map(|w| w.data)
                .map_err(to_error);
            match result {
                Ok(Response::Batch(responses)) if responses.len() == replies.len() => {
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Ok(response) if replies.len() == 1 => {
                    if let Some(reply) = replies.into_iter().next() {
                        let _ = reply.send(Ok(response));
                    }
                }
                Ok(other) => {
                    let e = ForwardError::Unavailable(format!("batch answered {other:?}"));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    })
    .await
}
