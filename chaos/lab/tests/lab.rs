//! The laboratory against the real binary: nodes in their own namespaces form a cluster,
//! and a partition made inside one namespace behaves like a cut host. Needs root; skips
//! with a visible message otherwise.

use std::time::Duration;
use tether_api::{ClientError, Target};
use tether_chaos_lab::cluster::LabCluster;
use tether_chaos_lab::netns::Lab;

fn skip() -> bool {
    match Lab::available() {
        Ok(()) => false,
        Err(why) => {
            eprintln!("SKIPPED: the chaos lab needs root, ip and iptables: {why}");
            true
        }
    }
}

#[tokio::test]
async fn nodes_in_their_own_namespaces_keep_a_majority_when_one_is_cut_off() {
    if skip() {
        return;
    }
    let bin = tether_devkit::tether_bin().expect("the tether binary");
    let cluster = LabCluster::start(&bin, 3, |_| {}).expect("the lab cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("a leader");
    let cut_off = (1..=3).find(|id| *id != leader).unwrap();
    let token = |t: &str| Target::Token(t.into());
    cluster
        .client(leader)
        .revoke(&token("before"), "lab", None)
        .await
        .expect("a write before the cut");
    let cut = cluster
        .lab
        .isolate(&cluster.node(cut_off).host)
        .expect("iptables inside the namespace");
    // The majority still commits; the cut-off node cannot confirm a read with a quorum.
    cluster
        .client(leader)
        .revoke(&token("during"), "lab", None)
        .await
        .expect("the majority commits");
    let stale = cluster
        .client(cut_off)
        .list(&[("consistent", "true")])
        .await;
    assert!(
        matches!(&stale, Err(ClientError::Api { status: 503, .. })),
        "a node cut off from the quorum fails closed: {stale:?}"
    );
    cut.heal();
    // Healed, it learns what it missed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = cluster.client(cut_off).list(&[("kind", "token")]).await;
        if listed.is_ok_and(|l| l.items.iter().any(|e| e.target == "during")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the healed node never caught up:\n{}",
            cluster.log(cut_off)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_lab_is_removed_when_it_drops() {
    if skip() {
        return;
    }
    let netns = {
        let lab = Lab::create(&["a", "b"]).expect("a lab");
        lab.hosts()[0].netns.clone()
    };
    let listed = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        !listed(&["netns", "list"]).contains(&netns),
        "the namespace {netns} outlived its lab"
    );
    let links = format!("tcb{}", std::process::id());
    assert!(
        !listed(&["-o", "link", "show"]).contains(&links),
        "a bridge or veth of this lab outlived it"
    );
}

/// The short suite CI runs: every scenario once with a fixed seed; each must pass its
/// checkers with non-trivial counts (hundreds of acknowledged revocations, dozens of
/// rejoins of revoked sessions refused). Every scenario runs even when one fails; the
/// reports stay in `target/tmp/chaos-ci/` for a look afterwards.
#[tokio::test]
async fn every_scenario_once_passes_its_checkers() {
    if skip() {
        return;
    }
    let bin = tether_devkit::tether_bin().expect("the tether binary");
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-ci");
    let _ = std::fs::remove_dir_all(&root);
    let mut failures = Vec::new();
    for scenario in tether_chaos_lab::run::Scenario::ALL {
        let options = tether_chaos_lab::run::RunOptions {
            scenario,
            seed: 1,
            nodes: scenario.min_nodes(),
            phase: Duration::from_secs(2),
            rounds: 2,
            writers: 3,
            operators: 2,
            robots: true,
            target: None,
            report: tether_chaos_lab::run::scenario_dir(&root, scenario),
            bin: bin.clone(),
            progress: false,
        };
        let summary = tether_chaos_lab::run::run(&options).await.expect("the run");
        let count = |checker: &str, key: &str| {
            summary
                .verdicts
                .iter()
                .find(|v| v.checker == checker)
                .and_then(|v| v.counts.get(key).copied())
                .unwrap_or(0)
        };
        let acked = count("no_lost_revocation", "acknowledged");
        let denied = count("no_stale_admission", "denied_after_ack");
        eprintln!(
            "{:<18} valid {} acknowledged {acked} denied after ack {denied}",
            scenario.name(),
            summary.valid
        );
        if !summary.valid || acked <= 200 || denied <= 20 {
            failures.push(format!(
                "{} (report in {}): {summary:#?}",
                scenario.name(),
                options.report.display()
            ));
        }
        for file in ["history.jsonl", "summary.json", "index.html"] {
            assert!(options.report.join(file).exists(), "{file} missing");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
