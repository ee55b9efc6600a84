//! The suite can fail: nodes built with the `planted-bugs` feature (`tether-planted`, which
//! `./x build` puts beside `tether`) run one planted bug each, and the checker for the
//! property it breaks must find the history invalid, with a counterexample. Needs root and
//! the planted binary; skips with a visible message otherwise.

use std::path::PathBuf;
use std::time::Duration;
use tether_chaos::check::{Validity, Verdict};
use tether_chaos_lab::netns::Lab;
use tether_chaos_lab::run::{run, RunOptions, Scenario};

/// The planted binary beside the `tether` the tests use, if it was built.
fn planted_bin() -> Option<PathBuf> {
    if let Err(why) = Lab::available() {
        eprintln!("SKIPPED: the chaos lab needs root, ip and iptables: {why}");
        return None;
    }
    let bin = tether_devkit::tether_bin()
        .ok()?
        .with_file_name("tether-planted");
    if !bin.exists() {
        eprintln!(
            "SKIPPED: no {} (build it: cargo build --release --bin tether --features tether-cli/planted-bugs, then copy it there; ./x build does)",
            bin.display()
        );
        return None;
    }
    Some(bin)
}

/// Runs `scenario` on nodes with `bug` planted; returns the verdicts.
async fn with_bug(
    bug: &str,
    scenario: Scenario,
    robots: bool,
    target: Option<u64>,
) -> Option<Vec<Verdict>> {
    let bin = planted_bin()?;
    // One test per process (nextest): the nodes inherit the choice.
    std::env::set_var("TETHER_PLANTED_BUG", bug);
    let report = tempfile::tempdir().unwrap();
    let options = RunOptions {
        scenario,
        seed: 1,
        nodes: 3,
        phase: Duration::from_secs(3),
        rounds: 2,
        writers: 3,
        operators: 3,
        report: report.path().join(bug),
        bin,
        robots,
        target,
        progress: false,
    };
    Some(run(&options).await.expect("the run").verdicts)
}

fn verdict<'a>(verdicts: &'a [Verdict], checker: &str) -> &'a Verdict {
    verdicts
        .iter()
        .find(|v| v.checker == checker)
        .expect("the checker ran")
}

fn assert_caught(verdicts: &[Verdict], checker: &str) {
    let v = verdict(verdicts, checker);
    assert_eq!(
        v.valid,
        Validity::Invalid,
        "{checker} missed the planted bug: {v:#?}"
    );
    assert!(
        !v.counterexample.is_empty(),
        "{checker} gave no counterexample"
    );
}

#[tokio::test]
async fn a_node_that_acknowledges_revocations_it_never_committed_is_caught_losing_them() {
    let Some(verdicts) = with_bug(
        "drop-every-100th-revocation",
        Scenario::IsolateFollower,
        false,
        None,
    )
    .await
    else {
        return;
    };
    assert_caught(&verdicts, "no_lost_revocation");
}

#[tokio::test]
async fn a_node_that_admits_joins_without_the_read_barrier_is_caught() {
    let Some(verdicts) = with_bug(
        "admit-without-barrier",
        Scenario::IsolateLeader,
        false,
        None,
    )
    .await
    else {
        return;
    };
    // The cut-off node admits joins it cannot confirm.
    assert_caught(&verdicts, "fail_closed");
}

#[tokio::test]
async fn a_gateway_that_renews_leases_without_a_quorum_is_caught() {
    // The scenario cuts off whichever node serves the robot, so the renewals it sends
    // meanwhile are ones a correct gateway would have withheld.
    let Some(verdicts) = with_bug(
        "lease-without-quorum",
        Scenario::GatewayMinority,
        true,
        None,
    )
    .await
    else {
        return;
    };
    assert_caught(&verdicts, "fail_closed");
}
