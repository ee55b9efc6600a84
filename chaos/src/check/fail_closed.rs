//! Fail closed (S2, S7): a node cut off from the quorum admits nothing and grants no lease.

use super::common::{quorum_windows, us, DETAIL_LIMIT};
use super::{Params, Verdict};
use crate::history::{History, Op, Outcome};
use serde_json::json;

/// No `Join` ok and no `Lease` ok on a node lies wholly inside one of that node's
/// quorum-lost windows, each shrunk by `quorum_margin_ms` at both ends: invoked and
/// completed inside it (a node learns it lost the quorum only after an election timeout,
/// and an answer decided just before the window may arrive inside it: a join's `joined`
/// waits on the other nodes' presence answers, up to half a second, after its admission).
/// An observation without an invoke (a lease the robot received) is placed at its
/// completion. An ok with no node recorded cannot be placed and is only counted.
pub fn fail_closed(history: &History, params: &Params) -> Verdict {
    let mut v = Verdict::new("fail_closed");
    let windows = quorum_windows(history, false);
    let m = params.quorum_margin_ms;
    v.count("windows", windows.values().map(|w| w.len() as u64).sum());
    for name in ["joins_admitted", "leases_granted", "inside_window"] {
        v.count(name, 0);
    }
    let mut found = Vec::new();
    for op in history.operations() {
        let name = match op.op() {
            Op::Join { .. } => "joins_admitted",
            Op::Lease { .. } => "leases_granted",
            _ => continue,
        };
        let (Outcome::Ok, Some(done)) = (op.outcome(), op.complete_ms()) else {
            continue;
        };
        v.count(name, 1);
        let Some(node) = op.node() else {
            v.count("without_node", 1);
            continue;
        };
        let invoked = op.invoke_ms().unwrap_or(done);
        let inside = windows
            .get(&node)
            .into_iter()
            .flatten()
            .find(|w| w.from + m < invoked && done < w.to - m);
        if let Some(w) = inside {
            v.count("inside_window", 1);
            let mut example = op.events();
            example.extend(w.evidence.iter().cloned());
            v.violated(example);
            found.push(json!({
                "op": if name == "leases_granted" { "lease" } else { "join" },
                "session_id": op.op().session_id(), "node": node, "completed_ms": done,
                "window": [w.from, w.to], "into_window_ms": us(done - w.from),
            }));
        }
    }
    found.truncate(DETAIL_LIMIT);
    v.detail("inside_window", json!(found));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::{Builder, Side};

    fn base() -> Builder {
        let mut b = Builder::new();
        b.quorum_lost(1, 1_000.0, 3_000.0);
        // Before the window, on another node, and inside the margins: all fine.
        b.call("robot-r1", 1, Op::lease("r1", "s1", 1), 900.0)
            .ok(905.0);
        b.call("robot-r2", 2, Op::lease("r2", "s2", 1), 2_000.0)
            .ok(2_001.0);
        b.call(
            "console-1",
            1,
            Op::join("s1", Side::Operator, None),
            1_100.0,
        )
        .ok(1_150.0);
        b.call(
            "console-2",
            1,
            Op::join("s1", Side::Operator, None),
            1_500.0,
        )
        .fail(1_501.0, "unavailable");
        b
    }

    #[test]
    fn nothing_granted_inside_the_shrunk_window_is_valid() {
        let v = fail_closed(&base().build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["joins_admitted"], 1);
        assert_eq!(v.counts["leases_granted"], 2);
    }

    #[test]
    fn a_lease_granted_inside_a_quorum_lost_window_is_caught() {
        let mut b = base();
        b.call("robot-r1", 1, Op::lease("r1", "s1", 9), 1_999.0)
            .ok(2_000.0);
        let v = fail_closed(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["inside_window"], 1);
        assert_eq!(v.detail["inside_window"][0]["op"], json!("lease"));
        // The window, then the lease's invoke and ok.
        assert_eq!(v.counterexample.len(), 3, "{:?}", v.counterexample);
        assert_eq!(v.counterexample[0].t_ms, 1_000.0);
    }

    #[test]
    fn a_join_asked_before_the_window_and_answered_inside_it_proves_nothing() {
        // Admitted before the cut; its `joined` waited on the cut-off presence answers.
        let mut b = base();
        b.call("console-4", 1, Op::join("s4", Side::Operator, None), 990.0)
            .ok(1_500.0);
        let v = fail_closed(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
    }

    #[test]
    fn a_join_admitted_inside_the_window_is_caught() {
        let mut b = base();
        b.call("console-3", 1, Op::join("s3", Side::Robot, None), 2_500.0)
            .ok(2_600.0);
        let v = fail_closed(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.detail["inside_window"][0]["op"], json!("join"));
    }
}
