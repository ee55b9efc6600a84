//! The lease desk's shell (S7): robots ask (`lease_request` with their own nonce), the desk
//! collects the asks, and one task answers each batch after one quorum check begun after
//! every ask in it arrived. Without a quorum nothing is sent, and the robots stop when their
//! leases run out.
//!
//! The robot counts a lease from when it sent its request, so a lease that waits here (a
//! slow quorum check, a backlog on a stalled link) grants no time beyond "TTL after the
//! request that preceded the quorum contact" — whatever happens between here and the robot.

use super::{Hub, Outbound};
use crate::telemetry::names;
use std::sync::Arc;
use std::time::Duration;
use tether_signaling::lease::LeaseAsk;

/// Leases queued before the lease task lets other tasks run: small, so that a frame to
/// relay waits behind a few lease writes at most.
const LEASE_SLICE: usize = 4;

impl Hub {
    /// Files a robot's ask; the lease task wakes if it was idle.
    pub(super) fn lease_asked(&self, ask: LeaseAsk) {
        let wake = self.leases().ask(ask);
        if wake {
            self.lease_wake.notify_one();
        }
    }

    pub(super) fn leases(&self) -> std::sync::MutexGuard<'_, tether_signaling::lease::LeaseDesk> {
        self.lease_desk.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) async fn lease_loop(
        self: Arc<Self>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let ttl_ms = self.config.sessions.lease_ttl_ms;
        // A quorum check slower than half a lease would grant leases robots count as mostly
        // spent already: fail it and let the robots ask again.
        let barrier_timeout = Duration::from_millis(ttl_ms / 2);
        loop {
            tokio::select! {
                _ = self.lease_wake.notified() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let asks = self.leases().take();
            if asks.is_empty() {
                continue;
            }
            let planted = crate::planted::is(crate::planted::PlantedBug::LeaseWithoutQuorum);
            if !planted && self.raft.read_barrier(barrier_timeout).await.is_err() {
                metrics::counter!(names::LEASE_ROUNDS_TOTAL, "result" => "no_quorum").increment(1);
                continue;
            }
            metrics::counter!(names::LEASE_ROUNDS_TOTAL, "result" => "renewed").increment(1);
            let granted: Vec<LeaseAsk> = {
                let state = self.raft.view().read();
                asks.into_iter()
                    .filter(|ask| {
                        state.active_session_of(&ask.robot_id).is_some_and(|s| {
                            s.id == ask.session_id
                                && state
                                    .denial(Some(&s.id), Some(&s.token_id), Some(&s.operator))
                                    .is_none()
                        })
                    })
                    .collect()
            };
            // In slices, yielding between them, for nodes with very many robots.
            for slice in granted.chunks(LEASE_SLICE) {
                {
                    let shell = self.shell();
                    for ask in slice {
                        for action in shell.core.lease_granted(ask, ttl_ms) {
                            if let tether_signaling::hub::Action::Send(conn, frame) = action {
                                metrics::counter!(names::LEASES_GRANTED_TOTAL).increment(1);
                                self.queue(&shell, conn, Outbound::Frame(frame));
                            }
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
            // Asks that arrived during the quorum check wait for the next one.
            if !self.leases().is_empty() {
                self.lease_wake.notify_one();
            }
        }
    }
}
