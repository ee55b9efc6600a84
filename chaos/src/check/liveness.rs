//! Liveness after healing, and the run's validity: traffic flowed before the first fault,
//! and revocations, new sessions and driving work again once every fault is healed.

use super::common::us;
use super::{Params, Verdict};
use crate::history::{Body, Event, History, Op, Operation, Outcome, Phase};
use serde_json::json;
use std::collections::BTreeMap;

/// The faults of a history: when the first began, the event that healed the last, and
/// those never healed.
struct Faults<'a> {
    first_start: Option<f64>,
    last_stop: Option<&'a Event>,
    unhealed: Vec<String>,
}

fn faults(history: &History) -> Faults<'_> {
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut f = Faults {
        first_start: None,
        last_stop: None,
        unhealed: Vec::new(),
    };
    for e in &history.events {
        let (key, phase) = match &e.body {
            Body::Nemesis {
                fault,
                targets,
                phase,
            } => (format!("{fault} {targets:?}"), *phase),
            Body::ControlCut { robot, link, phase } => (format!("{link:?} cut of {robot}"), *phase),
            _ => continue,
        };
        match phase {
            Phase::Start => {
                f.first_start.get_or_insert(e.t_ms);
                open.insert(key, e.t_ms);
            }
            Phase::Stop => {
                open.remove(&key);
                f.last_stop = Some(e);
            }
        }
    }
    f.unhealed = open.into_keys().collect();
    f
}

fn is(op: &Operation<'_>, name: &str) -> bool {
    matches!(
        (op.op(), name),
        (Op::Revoke { .. }, "revoke") | (Op::StartSession { .. }, "start_session")
    )
}

/// Let T be the last fault's heal (nemesis or cut stop; the history's start if there was no
/// fault) + `heal_grace_ms`. A Revoke ok and a StartSession ok must complete at or after
/// T, and a `CommandApplied` come at or after T. When attempts were made after T and none
/// succeeded (or sessions started but no robot drove), the verdict is invalid; when the run
/// made no attempt after T, left a fault unhealed, or its ok throughput before the first
/// fault was under `min_ops_per_s`, the run proves nothing and the verdict is unknown.
/// Detail: recovery times (each kind's first success after the heal, from the heal) and
/// the throughput before the fault.
pub fn liveness(history: &History, params: &Params) -> Verdict {
    let mut v = Verdict::new("liveness");
    let Some(start) = history.events.first().map(|e| e.t_ms) else {
        v.unknown("run invalid: empty history".into());
        return v;
    };
    let end = history.events.last().map_or(start, |e| e.t_ms);
    let ops = history.operations();
    let f = faults(history);
    let healed_at = f.last_stop.map_or(start, |e| e.t_ms);
    let after = healed_at + params.heal_grace_ms;

    // Throughput before the first fault: ok client operations per second.
    let first_fault = f.first_start.unwrap_or(end);
    let before = ops
        .iter()
        .filter(|o| o.outcome() == Outcome::Ok && !matches!(o.op(), Op::Read { .. }))
        .filter(|o| o.complete_ms().is_some_and(|t| t < first_fault))
        .count();
    let seconds = (first_fault - start) / 1_000.0;
    let rate = if seconds > 0.0 {
        before as f64 / seconds
    } else {
        0.0
    };
    v.count("ok_before_first_fault", before as u64);
    v.detail("ops_per_s_before_first_fault", json!(rate));
    v.detail("healed_ms", json!(healed_at));

    // Recovery: the first success after the heal (reported); validity needs one after T.
    let mut recovery = serde_json::Map::new();
    let mut started_after: Option<Operation<'_>> = None;
    for name in ["revoke", "start_session"] {
        let done_after = |o: &&Operation<'_>, t0: f64| o.complete_ms().is_some_and(|t| t >= t0);
        let of_kind = || ops.iter().filter(|o| is(o, name));
        let oks = || of_kind().filter(|o| o.outcome() == Outcome::Ok);
        if let Some(t) = oks()
            .filter(|o| done_after(o, healed_at))
            .filter_map(|o| o.complete_ms())
            .reduce(f64::min)
        {
            recovery.insert(name.into(), json!(us(t - healed_at)));
        }
        let ok: Vec<&Operation<'_>> = oks().filter(|o| done_after(o, after)).collect();
        let tried: Vec<&Operation<'_>> = of_kind()
            .filter(|o| {
                o.complete_ms()
                    .or(o.invoke_ms())
                    .is_some_and(|t| t >= after)
            })
            .collect();
        v.count(&format!("{name}_ok_after_grace"), ok.len() as u64);
        v.count(&format!("{name}_tried_after_grace"), tried.len() as u64);
        match ok.first() {
            Some(op) => {
                if name == "start_session" {
                    started_after = Some(**op);
                }
            }
            None if tried.is_empty() => v.unknown(format!("run invalid: no {name} after healing")),
            None => {
                let mut example: Vec<Event> = f.last_stop.into_iter().cloned().collect();
                example.extend(tried.iter().take(3).flat_map(|o| o.events()));
                v.violated(example);
            }
        }
    }
    let commands = || {
        history
            .events
            .iter()
            .filter(|e| matches!(e.body, Body::CommandApplied { .. }))
    };
    if let Some(e) = commands().find(|e| e.t_ms >= healed_at) {
        recovery.insert("command_applied".into(), json!(us(e.t_ms - healed_at)));
    }
    match (commands().find(|e| e.t_ms >= after), started_after) {
        (Some(_), _) => {}
        _ if !params.robots_drive => {}
        (None, Some(op)) => {
            // A session started after healing, yet no robot applied a command.
            let mut example: Vec<Event> = f.last_stop.into_iter().cloned().collect();
            example.extend(op.events());
            v.violated(example);
        }
        (None, None) => v.unknown("run invalid: no command applied after healing".into()),
    }
    v.detail("recovery_ms", recovery.into());

    if let Some(fault) = f.unhealed.first() {
        v.unknown(format!("run invalid: fault never healed: {fault}"));
    }
    if rate < params.min_ops_per_s {
        v.unknown(format!(
            "run invalid: {rate:.1} ok ops/s before the first fault, under the minimum {}",
            params.min_ops_per_s
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::{Builder, RevokeKind};

    /// 20 revokes over the first second, a fault over [1 s, 2 s].
    fn run() -> Builder {
        let mut b = Builder::new();
        for i in 0..20 {
            let t = f64::from(i) * 50.0;
            let target = format!("s{i}");
            b.call("admin-1", 1, Op::revoke(RevokeKind::Session, &target), t)
                .ok(t + 1.0);
        }
        b.nemesis("partition", &["n1"], Phase::Start, 1_000.0)
            .nemesis("partition", &["n1"], Phase::Stop, 2_000.0);
        b
    }

    fn recovered(b: &mut Builder) {
        b.call(
            "admin-1",
            2,
            Op::revoke(RevokeKind::Session, "late"),
            4_100.0,
        )
        .ok(4_102.0);
        b.call(
            "console-1",
            2,
            Op::start_session("o", "r1", Some("s9")),
            4_200.0,
        )
        .ok(4_210.0);
        b.command("r1", "s9", 1, 4_300.0);
    }

    #[test]
    fn a_cluster_that_works_after_healing_is_live() {
        let mut b = run();
        recovered(&mut b);
        let v = liveness(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.detail["recovery_ms"]["revoke"], json!(2_102.0));
        assert_eq!(v.detail["ops_per_s_before_first_fault"], json!(20.0));
    }

    #[test]
    fn without_robots_in_the_run_no_driving_is_asked_for() {
        let mut b = run();
        b.call(
            "admin-1",
            2,
            Op::revoke(RevokeKind::Session, "late"),
            4_100.0,
        )
        .ok(4_102.0);
        b.call("op-1", 2, Op::start_session("o", "r1", Some("s9")), 4_200.0)
            .ok(4_210.0);
        let history = b.build();
        assert!(matches!(
            liveness(&history, &Params::default()).valid,
            Validity::Invalid
        ));
        let without = Params {
            robots_drive: false,
            ..Params::default()
        };
        assert_eq!(liveness(&history, &without).valid, Validity::Valid);
    }

    #[test]
    fn operations_that_all_fail_after_healing_are_a_liveness_violation() {
        let mut b = run();
        b.call("admin-1", 2, Op::revoke(RevokeKind::Session, "x"), 4_100.0)
            .info(9_000.0);
        b.call("console-1", 2, Op::start_session("o", "r1", None), 4_200.0)
            .fail(4_210.0, "unavailable");
        let v = liveness(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        // The heal, then the first failed attempt.
        assert_eq!(v.counterexample[0].t_ms, 2_000.0);
        assert_eq!(v.counterexample.len(), 3, "{:?}", v.counterexample);
    }

    #[test]
    fn no_operations_after_healing_make_the_run_invalid_not_passed() {
        let v = liveness(&run().build(), &Params::default());
        assert!(
            matches!(&v.valid, Validity::Unknown(r) if r.contains("no revoke")),
            "{v:?}"
        );
    }

    #[test]
    fn too_little_traffic_before_the_fault_or_an_unhealed_fault_is_unknown() {
        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(RevokeKind::Session, "a"), 0.0)
            .ok(1.0);
        b.nemesis("kill", &["n2"], Phase::Start, 1_000.0);
        recovered(&mut b);
        let v = liveness(&b.build(), &Params::default());
        let Validity::Unknown(reason) = &v.valid else {
            panic!("{v:?}")
        };
        assert!(reason.contains("never healed"), "{reason}");
        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(RevokeKind::Session, "a"), 0.0)
            .ok(1.0);
        b.nemesis("kill", &["n2"], Phase::Start, 1_000.0).nemesis(
            "kill",
            &["n2"],
            Phase::Stop,
            2_000.0,
        );
        recovered(&mut b);
        let v = liveness(&b.build(), &Params::default());
        assert!(
            matches!(&v.valid, Validity::Unknown(r) if r.contains("ops/s")),
            "{v:?}"
        );
    }
}
