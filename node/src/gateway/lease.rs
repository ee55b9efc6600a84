//! The lease driver (S7): renews the lease of every robot here with an active session each
//! quarter lease, each renewal only right after this node has proved contact with the
//! quorum. Without a quorum nothing is sent, and the robots stop when their leases run out.
//!
//! The schedule is [`LeaseSchedule`]: robots spread over up to 64 turns per quarter lease,
//! each turn with its own quorum check (renewing a thousand robots at once held every relay
//! on this node behind a burst of lease frames, for up to 30 ms); a late turn covers every
//! group that fell due meanwhile.

use super::{Hub, Outbound};
use crate::telemetry::names;
use std::sync::Arc;
use tether_signaling::lease::LeaseSchedule;
use tether_signaling::protocol::ServerFrame;
use tether_signaling::rooms::ConnId;

/// Leases queued before the lease loop lets other tasks run: small, so that a frame to
/// relay waits behind a few lease writes at most.
const LEASE_SLICE: usize = 4;

impl Hub {
    pub(super) async fn lease_loop(
        self: Arc<Self>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let schedule = LeaseSchedule::new(self.config.sessions.lease_ttl_ms);
        let start = tokio::time::Instant::now();
        let mut served = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(start + schedule.turn_time(served)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let due = schedule.due(start.elapsed(), served);
            served = due.served;
            let robots = self.shell().core.lease_candidates(&due.due, &schedule);
            if robots.is_empty() {
                continue;
            }
            if self
                .raft
                .read_barrier(schedule.quarter() / 2)
                .await
                .is_err()
            {
                metrics::counter!(names::LEASE_ROUNDS_TOTAL, "result" => "no_quorum").increment(1);
                continue;
            }
            metrics::counter!(names::LEASE_ROUNDS_TOTAL, "result" => "renewed").increment(1);
            let grants: Vec<(ConnId, String)> = {
                let state = self.raft.view().read();
                robots
                    .into_iter()
                    .filter_map(|(conn, robot)| {
                        state
                            .active_session_of(&robot)
                            .map(|s| (conn, s.id.clone()))
                    })
                    .collect()
            };
            // In slices, yielding between them, for nodes with very many robots.
            for slice in grants.chunks(LEASE_SLICE) {
                {
                    let shell = self.shell();
                    for (conn, session_id) in slice {
                        let lease = ServerFrame::Lease {
                            session_id: session_id.clone(),
                            ttl_ms: schedule.ttl_ms(),
                        };
                        self.queue(&shell, *conn, Outbound::Frame(lease));
                    }
                }
                tokio::task::yield_now().await;
            }
        }
    }
}
