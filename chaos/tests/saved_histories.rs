//! Re-checks the saved histories in `tests/fixtures/`: each failing history found (or
//! planted) once must keep failing exactly the checkers it failed, with a counterexample.

use std::collections::BTreeSet;
use std::path::PathBuf;
use tether_chaos::check::{check_all, Params, Validity};
use tether_chaos::history::{read_jsonl, Body, Op};

/// Every fixture, with the checkers it must fail (all others must pass).
const FIXTURES: &[(&str, &[&str])] = &[(
    // Node 3, isolated in a minority, admits a rejoin of a session revoked through the
    // majority 98 ms earlier (the planted bug: a join admitted without the read barrier).
    "stale-join-on-isolated-node.jsonl",
    &["no_stale_admission", "fail_closed"],
)];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn every_saved_history_fails_exactly_its_checkers() {
    for (name, failing) in FIXTURES {
        let history = read_jsonl(&fixtures().join(name)).unwrap();
        for v in check_all(&history, &Params::default()) {
            if failing.contains(&v.checker) {
                assert_eq!(v.valid, Validity::Invalid, "{name}: {}: {v:#?}", v.checker);
                assert!(!v.counterexample.is_empty(), "{name}: {}", v.checker);
            } else {
                assert_eq!(v.valid, Validity::Valid, "{name}: {}: {v:#?}", v.checker);
            }
        }
    }
}

#[test]
fn the_stale_join_counterexample_is_the_revoke_and_the_join() {
    let history = read_jsonl(&fixtures().join(FIXTURES[0].0)).unwrap();
    let verdicts = check_all(&history, &Params::default());
    let stale = verdicts
        .iter()
        .find(|v| v.checker == "no_stale_admission")
        .unwrap();
    assert_eq!(stale.counts["stale"], 1);
    assert_eq!(stale.counts["denied_after_ack"], 1);
    let ops: Vec<_> = stale
        .counterexample
        .iter()
        .map(|e| match &e.body {
            Body::Invoke { op } | Body::Ok { op } => (e.node, op.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ops.len(), 4, "{ops:?}");
    assert!(matches!(&ops[0].1, Op::Revoke { target, .. } if target == "ses_b1"));
    assert!(matches!(&ops[3], (Some(3), Op::Join { .. })));
    // The info revoke sent to the isolated node was applied and is on every node.
    let lost = verdicts
        .iter()
        .find(|v| v.checker == "no_lost_revocation")
        .unwrap();
    assert_eq!(lost.counts["info_applied"], 1);
    assert_eq!(lost.counts["lost"], 0);
    // The summary serializes.
    let json = serde_json::to_string(&verdicts).unwrap();
    assert!(json.contains(r#""status":"invalid""#));
}

#[test]
fn every_fixture_file_is_listed() {
    let listed: BTreeSet<&str> = FIXTURES.iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".jsonl") {
            assert!(listed.contains(name.as_str()), "{name} is not re-checked");
        }
    }
}
