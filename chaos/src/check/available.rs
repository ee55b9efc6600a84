//! Availability while a majority stays connected: a fault that leaves a quorum of nodes
//! talking to each other (a follower cut off or frozen, a lossy or slow mesh) must not stop
//! revocations from committing. Safety checkers pass a cluster that refuses everything;
//! this one does not.

use super::{Params, Verdict};
use crate::history::{Body, Event, History, Op, Operation, Outcome};
use serde_json::json;

/// For every `QuorumKept` window, shrunk at its start by `election_ms` (a new leader's
/// election, when the fault took the old one): a revocation acknowledged inside it, among
/// those sent to the window's majority (a write sent to the cut-off node may rightly wait). A window
/// with attempts and no acknowledgement is a violation (the window and its first attempts
/// are the counterexample); one without attempts proves nothing. Detail: per window, the
/// acknowledged revocations and the longest gap between two acknowledgements.
pub fn majority_available(history: &History, params: &Params) -> Verdict {
    let mut v = Verdict::new("majority_available");
    let ops = history.operations();
    let revokes: Vec<_> = ops
        .iter()
        .filter(|o| matches!(o.op(), Op::Revoke { .. }))
        .collect();
    for name in ["windows", "windows_without_commit"] {
        v.count(name, 0);
    }
    let mut windows = Vec::new();
    for e in &history.events {
        let Body::QuorumKept {
            from_ms,
            to_ms,
            ref nodes,
        } = e.body
        else {
            continue;
        };
        let at_majority =
            |o: &Operation| nodes.is_empty() || o.node().is_some_and(|n| nodes.contains(&n));
        v.count("windows", 1);
        let from = from_ms + params.election_ms;
        let inside = |t: Option<f64>| t.is_some_and(|t| t >= from && t <= to_ms);
        let mut acked: Vec<f64> = revokes
            .iter()
            .filter(|o| at_majority(o))
            .filter(|o| o.outcome() == Outcome::Ok)
            .filter_map(|o| o.complete_ms())
            .filter(|t| inside(Some(*t)))
            .collect();
        acked.sort_by(f64::total_cmp);
        let tried: Vec<_> = (revokes.iter().filter(|o| at_majority(o)))
            .filter(|o| inside(o.invoke_ms()))
            .collect();
        let mut edges = vec![from];
        edges.extend(acked.iter().copied());
        edges.push(to_ms);
        let gap = edges.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        windows.push(json!({
            "from_ms": from_ms, "to_ms": to_ms, "nodes": nodes, "acknowledged": acked.len(),
            "attempted": tried.len(), "longest_gap_ms": gap,
        }));
        match (acked.is_empty(), tried.is_empty()) {
            (false, _) => {}
            (true, true) => v.unknown("a quorum-kept window saw no revocation attempt".into()),
            (true, false) => {
                v.count("windows_without_commit", 1);
                let mut example: Vec<Event> = vec![e.clone()];
                example.extend(tried.iter().take(3).flat_map(|o| o.events()));
                v.violated(example);
            }
        }
    }
    v.detail("windows", json!(windows));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::{Builder, RevokeKind};

    /// A 200 ms election margin, as the windows below are short.
    fn params() -> Params {
        Params {
            election_ms: 200.0,
            ..Params::default()
        }
    }

    /// Revokes every 50 ms over [0, 3 s); those invoked in `stalled` never complete.
    fn traffic(stalled: (f64, f64)) -> Builder {
        let mut b = Builder::new();
        for i in 0..60 {
            let t = f64::from(i) * 50.0;
            let call = b.call(
                "admin-1",
                1,
                Op::revoke(RevokeKind::Token, &format!("j{i}")),
                t,
            );
            if t >= stalled.0 && t < stalled.1 {
                call.info(t + 10_000.0);
            } else {
                call.ok(t + 2.0);
            }
        }
        b
    }

    #[test]
    fn writes_committing_through_a_kept_quorum_are_valid() {
        let mut b = traffic((1_000.0, 1_300.0));
        b.quorum_kept(1_000.0, 2_000.0, &[]);
        let v = majority_available(&b.build(), &params());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["windows"], 1);
        assert_eq!(v.detail["windows"][0]["longest_gap_ms"], json!(102.0));
    }

    #[test]
    fn a_kept_quorum_that_commits_nothing_is_a_violation() {
        let mut b = traffic((900.0, 2_100.0));
        b.quorum_kept(1_000.0, 2_000.0, &[]);
        let v = majority_available(&b.build(), &params());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["windows_without_commit"], 1);
        assert!(matches!(v.counterexample[0].body, Body::QuorumKept { .. }));
    }

    #[test]
    fn only_writes_sent_to_the_kept_majority_count() {
        // Node 1's writes commit; node 2's (the cut-off one) stall throughout.
        let mut b = traffic((0.0, 0.0));
        for i in 0..20 {
            let t = 1_000.0 + f64::from(i) * 50.0;
            b.call(
                "admin-2",
                2,
                Op::revoke(RevokeKind::Token, &format!("k{i}")),
                t,
            )
            .info(t + 10_000.0);
        }
        b.quorum_kept(1_000.0, 2_000.0, &[1, 3]);
        let v = majority_available(&b.build(), &params());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        let mut only_node_1 = traffic((0.0, 0.0));
        only_node_1.quorum_kept(1_000.0, 2_000.0, &[1, 3]);
        let control = majority_available(&only_node_1.build(), &params());
        assert_eq!(
            v.detail["windows"][0]["attempted"], control.detail["windows"][0]["attempted"],
            "node 2's stalled writes are not counted"
        );
        b = traffic((900.0, 2_100.0));
        b.quorum_kept(1_000.0, 2_000.0, &[2]);
        let v = majority_available(&b.build(), &params());
        assert!(matches!(v.valid, Validity::Unknown(_)), "{v:?}");
    }

    #[test]
    fn without_kept_windows_there_is_nothing_to_check() {
        let v = majority_available(&traffic((0.0, 0.0)).build(), &params());
        assert_eq!((v.valid, v.counts["windows"]), (Validity::Valid, 0));
    }

    #[test]
    fn a_window_without_attempts_proves_nothing() {
        let mut b = Builder::new();
        b.quorum_kept(0.0, 1_000.0, &[]);
        let v = majority_available(&b.build(), &params());
        assert!(matches!(v.valid, Validity::Unknown(_)));
    }
}
