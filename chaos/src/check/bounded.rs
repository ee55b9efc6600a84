//! Bounded control (S5, S7): after a revocation is acknowledged, the robot of every session
//! it ends applies no command later than the push bound, or the lease bound when it is cut
//! off from revocations.

use super::common::{acks, covers_session, cut_windows, percentiles, quorum_windows, sessions};
use super::common::{us, Window, DETAIL_LIMIT};
use super::{Params, Verdict};
use crate::history::{Body, CutLink, Event, History, Op, Outcome};
use serde_json::json;
use std::collections::BTreeMap;

/// Figures for one kind of bound.
#[derive(Default)]
struct Figures {
    last_command: Vec<f64>,
    safe_stop: Vec<f64>,
}

/// For each session that was driving at the ack (a command applied within the control
/// timeout + margin before it, or any after it) and that an acknowledged revocation ends
/// (the earliest such ack, A): the last `CommandApplied` of the session after A must come
/// by A + `push_bound_ms`, or by A + `lease_ttl_ms` + `lease_margin_ms` when over
/// [A, A + push_bound_ms] the robot was cut off from revocations: its gateway link cut
/// (`ControlCut` or a nemesis fault naming it), or the node that granted its last lease
/// before A without a quorum. Detail: "ack → last command" and "ack → safe-stop" (the
/// robot's first stop after its last command before A, 0 if already stopped) per bound.
pub fn bounded_control(history: &History, params: &Params) -> Verdict {
    let mut v = Verdict::new("bounded_control");
    let ops = history.operations();
    let sessions = sessions(history, &ops);
    let acks = acks(&ops);
    // A robot whose gateway may only have lost the leader is held to the lease bound too.
    let quorum = quorum_windows(history, true);

    let mut commands: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut stops: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &history.events {
        match &e.body {
            Body::CommandApplied { session_id, .. } => {
                commands.entry(session_id).or_default().push(e)
            }
            Body::SafeStop { robot, .. } => stops.entry(robot).or_default().push(e),
            _ => {}
        }
    }
    // Each robot's leases: when it got one, and from which node.
    let mut leases: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome() == Outcome::Ok) {
        if let (Op::Lease { robot, .. }, Some(t), Some(n)) = (op.op(), op.complete_ms(), op.node())
        {
            leases.entry(robot).or_default().push((t, n));
        }
    }

    for name in ["revoked_sessions", "late"] {
        v.count(name, 0);
    }
    let (mut push, mut lease) = (Figures::default(), Figures::default());
    let mut late = Vec::new();
    for (sid, info) in &sessions {
        let (Some(cmds), Some(robot)) = (commands.get(sid.as_str()), info.robot.as_deref()) else {
            continue;
        };
        let Some((key, ack)) = acks
            .iter()
            .filter(|(k, _)| covers_session(k, sid, Some(info)))
            .min_by(|a, b| a.1.at.total_cmp(&b.1.at))
        else {
            continue;
        };
        let a = ack.at;
        let driving_from = a - params.control_timeout_ms - params.control_margin_ms;
        if !cmds.iter().any(|e| e.t_ms >= driving_from) {
            v.count("idle_at_ack", 1);
            continue;
        }
        v.count("revoked_sessions", 1);

        let span = (a, a + params.push_bound_ms);
        let mut cut: Vec<Window> = cut_windows(history, robot, CutLink::Gateway)
            .into_iter()
            .filter(|w| w.overlaps(span.0, span.1))
            .collect();
        let gateway = leases
            .get(robot)
            .and_then(|l| l.iter().rev().find(|(t, _)| *t <= a))
            .map(|(_, n)| *n);
        if let Some(ws) = gateway.and_then(|n| quorum.get(&n)) {
            cut.extend(ws.iter().filter(|w| w.overlaps(span.0, span.1)).cloned());
        }
        let (bound_name, bound, figures) = if cut.is_empty() {
            ("push", params.push_bound_ms, &mut push)
        } else {
            (
                "lease",
                params.lease_ttl_ms + params.lease_margin_ms,
                &mut lease,
            )
        };

        let last_after = cmds.iter().rev().find(|e| e.t_ms > a);
        let delay = last_after.map_or(0.0, |e| e.t_ms - a);
        figures.last_command.push(delay);
        // The stop that counts follows the last command before the ack (or the first
        // command, when it drove only after the ack): an older stop is not this one.
        let last_before = cmds
            .iter()
            .rev()
            .find(|e| e.t_ms <= a)
            .unwrap_or(&cmds[0])
            .t_ms;
        let stop = stops.get(robot).into_iter().flatten().find(|e| {
            let same = match &e.body {
                Body::SafeStop { session_id, .. } => session_id.as_deref().is_none_or(|s| s == sid),
                _ => false,
            };
            same && e.t_ms >= last_before
        });
        match stop {
            Some(e) => figures.safe_stop.push((e.t_ms - a).max(0.0)),
            None => v.count("no_safe_stop", 1),
        }

        if let (true, Some(last)) = (delay > bound, last_after) {
            v.count("late", 1);
            let mut example = ack.op.events();
            example.push((*last).clone());
            example.extend(cut.iter().flat_map(|w| w.evidence.iter().cloned()));
            v.violated(example);
            late.push(json!({
                "session_id": sid, "robot": robot, "revocation": key, "ack_ms": a,
                "last_command_ms": last.t_ms, "after_ack_ms": us(delay),
                "bound": bound_name, "bound_ms": bound,
            }));
        }
    }
    late.truncate(DETAIL_LIMIT);
    v.detail("late", json!(late));
    for (name, f) in [("push", &push), ("lease", &lease)] {
        v.detail(
            name,
            json!({
                "ack_to_last_command_ms": percentiles(&f.last_command),
                "ack_to_safe_stop_ms": percentiles(&f.safe_stop),
                // Every figure, for the report's histograms (one per revoked session).
                "samples": {
                    "ack_to_last_command_ms": f.last_command.iter().copied().map(us).collect::<Vec<_>>(),
                    "ack_to_safe_stop_ms": f.safe_stop.iter().copied().map(us).collect::<Vec<_>>(),
                },
            }),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::{Builder, Phase, RevokeKind};

    /// alice drives r1 in s1 at 20 Hz from t = 0 to `until` (the lease from node 1).
    fn driving(until: f64) -> Builder {
        let mut b = Builder::new();
        b.call(
            "console-1",
            1,
            Op::start_session("alice", "r1", Some("s1")),
            -50.0,
        )
        .ok(-40.0);
        b.call("robot-r1", 1, Op::lease("r1", "s1", 1), -30.0)
            .ok(-29.0);
        let mut t = 0.0;
        let mut seq = 0;
        while t <= until {
            b.command("r1", "s1", seq, t);
            t += 50.0;
            seq += 1;
        }
        b
    }

    fn revoke_at(b: &mut Builder, t: f64) {
        b.call("admin-1", 2, Op::revoke(RevokeKind::Session, "s1"), t - 2.0)
            .ok(t);
    }

    #[test]
    fn a_robot_that_stops_within_the_push_bound_is_valid() {
        let mut b = driving(1_000.0);
        revoke_at(&mut b, 1_010.0);
        b.safe_stop("r1", "s1", "revoked", 1_012.0);
        let v = bounded_control(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["revoked_sessions"], 1);
        assert_eq!(v.detail["push"]["ack_to_safe_stop_ms"]["max"], json!(2.0));
        assert_eq!(
            v.detail["push"]["ack_to_last_command_ms"]["max"],
            json!(0.0)
        );
    }

    #[test]
    fn a_command_applied_400_ms_after_the_ack_while_connected_is_late() {
        let mut b = driving(1_400.0);
        revoke_at(&mut b, 1_000.0);
        b.safe_stop("r1", "s1", "lease_expired", 1_420.0);
        let v = bounded_control(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.detail["late"][0]["after_ack_ms"], json!(400.0));
        assert_eq!(v.detail["late"][0]["bound"], json!("push"));
        // The revoke's invoke and ok, and the late command.
        assert_eq!(v.counterexample.len(), 3, "{:?}", v.counterexample);
        assert!(matches!(
            v.counterexample[2].body,
            Body::CommandApplied { seq: 28, .. }
        ));
    }

    #[test]
    fn a_cut_off_robot_gets_the_lease_bound_and_no_more() {
        // Cut from its gateways: 400 ms of commands is within TTL + margin.
        let mut b = driving(1_400.0);
        b.control_cut("r1", CutLink::Gateway, Phase::Start, 900.0);
        revoke_at(&mut b, 1_000.0);
        let v = bounded_control(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(
            v.detail["lease"]["ack_to_last_command_ms"]["max"],
            json!(400.0)
        );

        // Its gateway lost the quorum: same bound; past it, the verdict is invalid.
        let mut b = driving(2_200.0);
        b.quorum_lost(1, 800.0, 5_000.0);
        revoke_at(&mut b, 1_000.0);
        let v = bounded_control(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.detail["late"][0]["bound"], json!("lease"));
        // The revoke, the late command and the window that set the bound.
        assert!(v
            .counterexample
            .iter()
            .any(|e| matches!(e.body, Body::QuorumLost { .. })));
    }

    #[test]
    fn a_gateway_that_may_only_have_lost_the_leader_gets_the_lease_bound() {
        // A bridge's far side: 400 ms of commands after the ack is within the lease bound.
        let mut b = driving(1_400.0);
        b.leader_maybe_lost(1, 800.0, 5_000.0);
        revoke_at(&mut b, 1_000.0);
        let v = bounded_control(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        // ... and fail_closed does not judge its admissions.
        let mut b = driving(1_400.0);
        b.leader_maybe_lost(1, 800.0, 5_000.0);
        b.call("robot-r1", 1, Op::lease("r1", "s1", 9), 2_000.0)
            .ok(2_001.0);
        let v = crate::check::fail_closed::fail_closed(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
    }

    #[test]
    fn an_idle_session_or_an_uncovered_one_is_not_judged() {
        let mut b = driving(100.0);
        revoke_at(&mut b, 2_000.0);
        b.call("admin-2", 2, Op::revoke(RevokeKind::Operator, "bob"), 1.0)
            .ok(2.0);
        let v = bounded_control(&b.build(), &Params::default());
        assert!(v.is_valid());
        assert_eq!(v.counts["idle_at_ack"], 1);
        assert_eq!(v.counts["revoked_sessions"], 0);
    }
}
