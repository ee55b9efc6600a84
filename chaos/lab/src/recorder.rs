//! The history as a run records it: one shared, append-only list of events on
//! CLOCK_MONOTONIC milliseconds, and the recorded calls every workload makes (invoke, then
//! ok / fail / info by the answer).

use crate::cluster::LabCluster;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tether_api::{ClientError, Target};
use tether_chaos::history::{Body, Event, History, Op, RevokeKind};

/// The shared, append-only history of a run, with a running count of outcomes.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    /// Completions so far: ok, fail, info.
    tally: Arc<[AtomicU64; 3]>,
}

impl Recorder {
    pub(crate) fn push(&self, process: &str, node: Option<u64>, body: Body) {
        self.push_at(now_ms(), process, node, body);
    }

    /// An event observed at `t_ms` (another process's events file, same clock).
    pub(crate) fn push_at(&self, t_ms: f64, process: &str, node: Option<u64>, body: Body) {
        let slot = match body {
            Body::Ok { .. } => Some(0),
            Body::Fail { .. } => Some(1),
            Body::Info { .. } => Some(2),
            _ => None,
        };
        if let Some(i) = slot {
            self.tally[i].fetch_add(1, Ordering::Relaxed);
        }
        let event = Event {
            t_ms,
            process: process.to_owned(),
            node,
            body,
        };
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    pub(crate) fn history(&self) -> History {
        History::new(
            self.events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Completed operations so far by outcome (ok, fail, info), for the progress line.
    pub(crate) fn tally(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.tally[i].load(Ordering::Relaxed))
    }
}

/// CLOCK_MONOTONIC in milliseconds, the clock of every history and events file.
pub(crate) fn now_ms() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as f64 * 1000.0 + ts.tv_nsec() as f64 / 1e6
}

/// An answer's outcome: a 4xx definitely did nothing; a timeout, a 5xx or a lost
/// connection may have (the write can still commit).
pub(crate) fn completion(op: Op, result: Result<(), ClientError>) -> Body {
    match result {
        Ok(()) => Body::Ok { op },
        Err(ClientError::Api { status, body }) if status < 500 => Body::Fail {
            op,
            error: Some(body.code),
        },
        Err(e) => Body::Info {
            op,
            error: Some(e.to_string()),
        },
    }
}

/// Revokes `kind`/`target` through node `node` as `process`, recording the invoke and its
/// completion; true when acknowledged.
pub(crate) async fn recorded_revoke(
    cluster: &LabCluster,
    recorder: &Recorder,
    process: &str,
    node: u64,
    (kind, target): (RevokeKind, &str),
    reason: &str,
) -> bool {
    let op = Op::revoke(kind, target);
    recorder.push(process, Some(node), Body::Invoke { op: op.clone() });
    let what = match kind {
        RevokeKind::Session => Target::Session(target.to_owned()),
        RevokeKind::Token => Target::Token(target.to_owned()),
        RevokeKind::Operator => Target::Operator(target.to_owned()),
    };
    let result = cluster
        .client(node)
        .revoke(&what, reason, None)
        .await
        .map(|_| ());
    let acknowledged = result.is_ok();
    recorder.push(process, Some(node), completion(op, result));
    acknowledged
}
