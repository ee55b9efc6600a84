//! No stale admission (S2, S8): nothing a revocation covers is admitted once the
//! revocation was acknowledged, on any node.

use super::common::{acks, sessions, us, SessionInfo, DETAIL_LIMIT};
use super::{Params, Verdict};
use crate::history::{History, Op, Outcome, RevocationKey, RevokeKind};
use serde_json::json;
use std::collections::BTreeMap;

/// The revocation keys that would deny `op`, if it is an admission (a join, a session
/// start or a refresh): a session revocation covers its joins and refreshes; a token
/// revocation covers whatever presented that token and the joins and refreshes of the
/// session it is the session token of; an operator revocation covers the operator's
/// session starts and the joins and refreshes of sessions it started.
fn covering_keys(op: &Op, sessions: &BTreeMap<String, SessionInfo>) -> Option<Vec<RevocationKey>> {
    let mut keys = Vec::new();
    let key = |kind, target: &str| RevocationKey::new(kind, target);
    match op {
        Op::StartSession { operator, .. } => keys.push(key(RevokeKind::Operator, operator)),
        Op::Join { session_id, .. } | Op::Refresh { session_id, .. } => {
            keys.push(key(RevokeKind::Session, session_id));
            if let Some(s) = sessions.get(session_id) {
                keys.extend(s.tokens.iter().map(|t| key(RevokeKind::Token, t)));
                keys.extend(s.operator.iter().map(|o| key(RevokeKind::Operator, o)));
            }
        }
        _ => return None,
    }
    keys.extend(op.credential().map(|c| key(RevokeKind::Token, c)));
    keys.sort();
    keys.dedup();
    Some(keys)
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::StartSession { .. } => "start_session",
        Op::Refresh { .. } => "refresh",
        _ => "join",
    }
}

/// No join, session start or refresh completes ok when it was invoked after a revocation
/// covering it was acknowledged (strict real-time order, as in Jepsen: ack < invoke; an
/// admission invoked before the ack is concurrent with the revoke and may go either way).
/// Admissions with no recorded invoke cannot be ordered and are only counted.
pub fn no_stale_admission(history: &History, _params: &Params) -> Verdict {
    let mut v = Verdict::new("no_stale_admission");
    let ops = history.operations();
    let sessions = sessions(history, &ops);
    let acks = acks(&ops);
    for name in [
        "admitted",
        "denied_after_ack",
        "stale",
        "concurrent_admitted",
    ] {
        v.count(name, 0);
    }
    let mut stale = Vec::new();
    for op in &ops {
        let Some(keys) = covering_keys(op.op(), &sessions) else {
            continue;
        };
        let admitted = op.outcome() == Outcome::Ok;
        if admitted {
            v.count("admitted", 1);
        }
        let Some(t0) = op.invoke_ms() else {
            v.count("unpaired", 1);
            continue;
        };
        // The earliest acknowledged revocation that covers it decides.
        let Some((key, ack)) = keys
            .iter()
            .filter_map(|k| acks.get(k).map(|a| (k, a)))
            .min_by(|a, b| a.1.at.total_cmp(&b.1.at))
        else {
            continue;
        };
        match (ack.at < t0, admitted) {
            (true, true) => {
                v.count("stale", 1);
                let mut example = ack.op.events();
                example.extend(op.events());
                v.violated(example);
                stale.push(json!({
                    "op": op_name(op.op()), "session_id": op.op().session_id(),
                    "node": op.node(), "revocation": key, "ack_ms": ack.at,
                    "invoke_ms": t0, "after_ack_ms": us(t0 - ack.at),
                }));
            }
            (true, false) => v.count("denied_after_ack", 1),
            // Overlapping the revoke in real time: allowed either way, but worth a count.
            (false, true) if op.complete_ms() > ack.op.invoke_ms() => {
                v.count("concurrent_admitted", 1)
            }
            (false, _) => {}
        }
    }
    stale.truncate(DETAIL_LIMIT);
    v.detail("stale", json!(stale));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::Operation;
    use crate::history::{Builder, Side};

    /// The admissions among the history's operations.
    fn admissions(h: &History) -> Vec<Operation<'_>> {
        let ops = h.operations();
        let s = sessions(h, &ops);
        ops.into_iter()
            .filter(|o| covering_keys(o.op(), &s).is_some())
            .collect()
    }

    /// alice starts s1 on r1 with session token j1; the robot joins with its token jr1.
    fn session(b: &mut Builder) {
        let mut start = Op::start_session("alice", "r1", Some("s1"));
        if let Op::StartSession { token_id, .. } = &mut start {
            *token_id = Some("j1".into());
        }
        b.call("console-1", 1, start, 0.0).ok(5.0);
        b.call(
            "console-1",
            1,
            Op::join("s1", Side::Operator, Some("j1")),
            6.0,
        )
        .ok(8.0);
        b.call("robot-r1", 2, Op::join("s1", Side::Robot, Some("jr1")), 6.0)
            .ok(9.0);
    }

    #[test]
    fn denials_after_the_ack_are_valid() {
        let mut b = Builder::new();
        session(&mut b);
        b.call("admin-1", 3, Op::revoke(RevokeKind::Session, "s1"), 100.0)
            .ok(110.0);
        b.call(
            "console-1",
            2,
            Op::join("s1", Side::Operator, Some("j1")),
            115.0,
        )
        .fail(116.0, "session_revoked");
        b.call("robot-r1", 3, Op::refresh("s1", None), 120.0)
            .fail(121.0, "session_revoked");
        let h = b.build();
        assert_eq!(admissions(&h).len(), 5);
        let v = no_stale_admission(&h, &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["denied_after_ack"], 2);
        assert_eq!(v.counts["admitted"], 3);
    }

    #[test]
    fn a_join_admitted_5_ms_after_the_ack_is_stale() {
        let mut b = Builder::new();
        session(&mut b);
        b.call("admin-1", 3, Op::revoke(RevokeKind::Session, "s1"), 100.0)
            .ok(110.0);
        b.call(
            "console-1",
            2,
            Op::join("s1", Side::Operator, Some("j1")),
            115.0,
        )
        .ok(117.0);
        let v = no_stale_admission(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["stale"], 1);
        assert_eq!(v.detail["stale"][0]["after_ack_ms"], json!(5.0));
        assert_eq!(v.detail["stale"][0]["node"], json!(2));
        // The revoke's invoke and ok, then the join's invoke and ok.
        let times: Vec<f64> = v.counterexample.iter().map(|e| e.t_ms).collect();
        assert_eq!(times, vec![100.0, 110.0, 115.0, 117.0]);
    }

    #[test]
    fn a_join_invoked_before_the_ack_and_admitted_after_it_is_not_stale() {
        let mut b = Builder::new();
        session(&mut b);
        b.call("admin-1", 3, Op::revoke(RevokeKind::Session, "s1"), 100.0)
            .ok(110.0);
        b.call(
            "console-1",
            2,
            Op::join("s1", Side::Operator, Some("j1")),
            109.0,
        )
        .ok(130.0);
        let v = no_stale_admission(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["concurrent_admitted"], 1);
    }

    #[test]
    fn token_and_operator_revocations_cover_what_they_should() {
        let cases: [(RevokeKind, &str, Op); 4] = [
            // The robot's own token.
            (
                RevokeKind::Token,
                "jr1",
                Op::join("s1", Side::Robot, Some("jr1")),
            ),
            // s1's session token: the session ended, so even a robot join is stale.
            (
                RevokeKind::Token,
                "j1",
                Op::join("s1", Side::Robot, Some("jr1")),
            ),
            // The operator: their sessions' joins and their new sessions.
            (RevokeKind::Operator, "alice", Op::refresh("s1", None)),
            (
                RevokeKind::Operator,
                "alice",
                Op::start_session("alice", "r2", Some("s2")),
            ),
        ];
        for (kind, target, admission) in cases {
            let mut b = Builder::new();
            session(&mut b);
            b.call("admin-1", 3, Op::revoke(kind, target), 100.0)
                .ok(110.0);
            b.call("console-2", 1, admission.clone(), 200.0).ok(201.0);
            let v = no_stale_admission(&b.build(), &Params::default());
            assert_eq!(
                v.valid,
                Validity::Invalid,
                "{kind:?} {target} {admission:?}"
            );
        }
        // Bob's new session is not covered by alice's revocation; another token is not.
        let mut b = Builder::new();
        session(&mut b);
        b.call(
            "admin-1",
            3,
            Op::revoke(RevokeKind::Operator, "alice"),
            100.0,
        )
        .ok(110.0);
        b.call("admin-2", 3, Op::revoke(RevokeKind::Token, "other"), 100.0)
            .ok(110.0);
        b.call(
            "console-2",
            1,
            Op::start_session("bob", "r2", Some("s2")),
            200.0,
        )
        .ok(201.0);
        b.call(
            "robot-r2",
            1,
            Op::join("s2", Side::Robot, Some("jr2")),
            202.0,
        )
        .ok(203.0);
        assert!(no_stale_admission(&b.build(), &Params::default()).is_valid());
    }
}
