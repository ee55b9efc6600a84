//! No lost revocation (S3), with Jepsen's set-full semantics over the final reads.

use super::common::{percentiles, revoke_key, DETAIL_LIMIT};
use super::{Params, Verdict};
use crate::history::{Event, History, Op, Operation, Outcome, RevocationKey};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// The attempts at one revocation.
#[derive(Default)]
struct Attempts<'a> {
    ok: Vec<Operation<'a>>,
    info: Vec<Operation<'a>>,
    fail: Vec<Operation<'a>>,
}

/// Every acknowledged revocation is in every node's final read; an `info` revoke found on
/// any node was applied and must then be on all; one on some nodes only is lost on the
/// others. A revocation read that no revoke could have written (only failed attempts, or
/// none) is unexpected. Each node's last final read counts; with none the verdict is
/// unknown. Detail: the stable latency (ok − invoke) of acknowledged revokes.
pub fn no_lost_revocation(history: &History, _params: &Params) -> Verdict {
    let mut v = Verdict::new("no_lost_revocation");
    let ops = history.operations();

    let mut reads: BTreeMap<u64, (&Event, BTreeSet<&RevocationKey>)> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome() == Outcome::Ok) {
        if let (Op::Read { node, revocations }, Some(done)) = (op.op(), op.completion()) {
            let later = reads.get(node).is_none_or(|(e, _)| e.t_ms <= done.t_ms);
            if later {
                reads.insert(*node, (done, revocations.iter().collect()));
            }
        }
    }

    let mut attempts: BTreeMap<RevocationKey, Attempts<'_>> = BTreeMap::new();
    let mut latencies = Vec::new();
    for op in &ops {
        let Some(key) = revoke_key(op) else { continue };
        let a = attempts.entry(key).or_default();
        match op.outcome() {
            Outcome::Ok => {
                if let (Some(t0), Some(t1)) = (op.invoke_ms(), op.complete_ms()) {
                    latencies.push(t1 - t0);
                }
                a.ok.push(*op);
            }
            Outcome::Info => a.info.push(*op),
            Outcome::Fail => a.fail.push(*op),
        }
    }
    v.detail("stable_latency_ms", percentiles(&latencies));
    v.detail("nodes_read", json!(reads.keys().collect::<Vec<_>>()));
    for name in [
        "acknowledged",
        "info",
        "failed",
        "lost",
        "present_unacknowledged",
    ] {
        v.count(name, 0);
    }
    if reads.is_empty() {
        v.count(
            "acknowledged",
            attempts.values().filter(|a| !a.ok.is_empty()).count() as u64,
        );
        v.unknown("no final read of any node".into());
        return v;
    }

    let mut problems = Vec::new();
    for (key, a) in &attempts {
        let present: Vec<u64> = nodes_where(&reads, |keys| keys.contains(key));
        let missing: Vec<u64> = nodes_where(&reads, |keys| !keys.contains(key));
        let (status, op) = if let Some(op) = a.ok.first() {
            ("acknowledged", op)
        } else if let Some(op) = a.info.first() {
            ("info", op)
        } else {
            ("failed", &a.fail[0])
        };
        v.count(status, 1);
        if status != "acknowledged" && !present.is_empty() {
            v.count("present_unacknowledged", 1);
        }
        match status {
            "info" if present.is_empty() => v.count("info_not_applied", 1),
            "info" => v.count("info_applied", 1),
            _ => {}
        }
        let applied = status == "acknowledged" || (status == "info" && !present.is_empty());
        let lost = applied && !missing.is_empty();
        let unexpected = status == "failed" && !present.is_empty();
        if !(lost || unexpected) {
            continue;
        }
        v.count(if lost { "lost" } else { "unexpected" }, 1);
        let mut example = op.events();
        // The read that lacks it shows the loss; one that has it shows an info or a
        // failed write did land.
        example.extend(missing.first().map(|n| reads[n].0.clone()));
        if status != "acknowledged" {
            example.extend(present.first().map(|n| reads[n].0.clone()));
        }
        v.violated(example);
        problems.push(json!({
            "kind": key.kind, "target": key.target, "status": status,
            "present_on": present, "missing_on": if lost { missing } else { vec![] },
        }));
    }

    // Read but never attempted: nothing in the history could have written it.
    let attempted: BTreeSet<&RevocationKey> = attempts.keys().collect();
    let mut strays: BTreeMap<&RevocationKey, Vec<u64>> = BTreeMap::new();
    for (node, (_, keys)) in &reads {
        for key in keys.iter().filter(|k| !attempted.contains(*k)) {
            strays.entry(key).or_default().push(*node);
        }
    }
    for (key, nodes) in strays {
        v.count("unexpected", 1);
        v.count("present_unacknowledged", 1);
        v.violated(vec![reads[&nodes[0]].0.clone()]);
        problems.push(json!({
            "kind": key.kind, "target": key.target, "status": "never_attempted",
            "present_on": nodes,
        }));
    }
    problems.truncate(DETAIL_LIMIT);
    v.detail("violations", json!(problems));
    v
}

fn nodes_where(
    reads: &BTreeMap<u64, (&Event, BTreeSet<&RevocationKey>)>,
    f: impl Fn(&BTreeSet<&RevocationKey>) -> bool,
) -> Vec<u64> {
    reads
        .iter()
        .filter(|(_, (_, k))| f(k))
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::{Body, Builder, RevokeKind::*};

    fn revokes(b: &mut Builder) {
        b.call("admin-1", 1, Op::revoke(Session, "s1"), 10.0)
            .ok(11.0);
        b.call("admin-2", 2, Op::revoke(Token, "j1"), 10.0).ok(14.0);
        b.call("admin-3", 3, Op::revoke(Operator, "o1"), 12.0)
            .fail(13.0, "bad_request");
    }

    #[test]
    fn every_acknowledged_revocation_on_every_node_is_valid() {
        let mut b = Builder::new();
        revokes(&mut b);
        let all = [(Session, "s1"), (Token, "j1")];
        b.read(1, 100.0, &all)
            .read(2, 100.0, &all)
            .read(3, 100.0, &all);
        let v = no_lost_revocation(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["acknowledged"], 2);
        assert_eq!(v.counts["failed"], 1);
        assert_eq!(v.counts["lost"], 0);
        assert_eq!(v.detail["stable_latency_ms"]["max"], json!(4.0));
        assert!(v.counterexample.is_empty());
    }

    #[test]
    fn a_node_whose_final_read_lacks_an_acknowledged_revocation_loses_it() {
        let mut b = Builder::new();
        revokes(&mut b);
        let all = [(Session, "s1"), (Token, "j1")];
        b.read(1, 100.0, &all)
            .read(2, 100.0, &[(Session, "s1")])
            .read(3, 100.0, &all);
        let v = no_lost_revocation(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["lost"], 1);
        assert_eq!(v.detail["violations"][0]["missing_on"], json!([2]));
        // Minimal: the revoke's invoke and ok, and node 2's read.
        assert_eq!(v.counterexample.len(), 3, "{:?}", v.counterexample);
        assert!(matches!(
            &v.counterexample[2].body,
            Body::Ok {
                op: Op::Read { node: 2, .. }
            }
        ));
    }

    #[test]
    fn info_writes_are_resolved_from_the_final_state() {
        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(Session, "applied"), 10.0)
            .info(500.0);
        b.call("admin-2", 2, Op::revoke(Session, "dropped"), 10.0)
            .info(500.0);
        b.call("admin-3", 3, Op::revoke(Session, "half"), 10.0); // never answered
        let both = [(Session, "applied"), (Session, "half")];
        b.read(1, 900.0, &both)
            .read(2, 900.0, &[(Session, "applied")]);
        let v = no_lost_revocation(&b.build(), &Params::default());
        assert_eq!(v.counts["info"], 3);
        assert_eq!(v.counts["info_applied"], 2);
        assert_eq!(v.counts["info_not_applied"], 1);
        assert_eq!(v.counts["present_unacknowledged"], 2);
        // "half" was applied (node 1 has it) and so is lost on node 2.
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["lost"], 1);
        assert_eq!(v.detail["violations"][0]["target"], json!("half"));

        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(Session, "applied"), 10.0)
            .info(500.0);
        b.read(1, 900.0, &[(Session, "applied")])
            .read(2, 900.0, &[(Session, "applied")]);
        assert!(no_lost_revocation(&b.build(), &Params::default()).is_valid());
    }

    #[test]
    fn a_failed_or_unattempted_revocation_that_is_read_is_unexpected() {
        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(Session, "s1"), 10.0)
            .fail(11.0, "bad_request");
        b.read(1, 100.0, &[(Session, "s1"), (Session, "ghost")]);
        let v = no_lost_revocation(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["unexpected"], 2);
    }

    #[test]
    fn without_final_reads_the_verdict_is_unknown() {
        let mut b = Builder::new();
        revokes(&mut b);
        let v = no_lost_revocation(&b.build(), &Params::default());
        assert!(matches!(v.valid, Validity::Unknown(_)), "{v:?}");
    }
}
