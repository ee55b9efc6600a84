//! Control loss (S6): when the console ↔ robot media path is cut, the robot safe-stops
//! within the control-loss timeout of its last applied command, every time.

use super::common::{cut_windows, percentiles, DETAIL_LIMIT};
use super::{Params, Verdict};
use crate::history::{Body, CutLink, Event, History};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// For each media cut [C, E) of robot R (`ControlCut` media, or a nemesis fault naming R
/// whose name says `media`): let L be R's last `CommandApplied` before E. When R was
/// driving at the cut (L ≥ C − timeout − margin) and no command came within timeout +
/// margin after L (so the cut outlasted the timeout), a `SafeStop` of R (any cause) must
/// follow L by at most `control_timeout_ms + control_margin_ms`. Detail: "last command →
/// stop" and "cut → stop".
pub fn control_loss(history: &History, params: &Params) -> Verdict {
    let mut v = Verdict::new("control_loss");
    let bound = params.control_timeout_ms + params.control_margin_ms;
    let mut commands: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut stops: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut robots: BTreeSet<&str> = BTreeSet::new();
    for e in &history.events {
        match &e.body {
            Body::CommandApplied { robot, .. } => commands.entry(robot).or_default().push(e),
            Body::SafeStop { robot, .. } => stops.entry(robot).or_default().push(e),
            _ => {}
        }
    }
    // The robots are those that drove or stopped, and those a cut names.
    robots.extend(commands.keys().chain(stops.keys()));
    for e in &history.events {
        if let Body::ControlCut { robot, .. } = &e.body {
            robots.insert(robot);
        }
    }
    for name in ["cuts", "stopped_in_time", "late", "no_stop"] {
        v.count(name, 0);
    }
    let (mut from_command, mut from_cut, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for robot in robots {
        let cmds = commands.get(robot).map(Vec::as_slice).unwrap_or_default();
        let robot_stops = stops.get(robot).map(Vec::as_slice).unwrap_or_default();
        for cut in cut_windows(history, robot, CutLink::Media) {
            v.count("cuts", 1);
            let Some(i) = cmds.iter().rposition(|e| e.t_ms < cut.to) else {
                v.count("idle_at_cut", 1);
                continue;
            };
            let last = cmds[i];
            if last.t_ms < cut.from - bound {
                v.count("idle_at_cut", 1);
                continue;
            }
            let next = cmds.get(i + 1).map_or(f64::INFINITY, |e| e.t_ms);
            if next - last.t_ms <= bound {
                // Control came back before the robot had to stop.
                v.count("resumed_in_time", 1);
                continue;
            }
            let stop = robot_stops
                .iter()
                .find(|e| e.t_ms >= last.t_ms && e.t_ms <= next);
            match stop {
                Some(s) if s.t_ms - last.t_ms <= bound => {
                    v.count("stopped_in_time", 1);
                    from_command.push(s.t_ms - last.t_ms);
                    from_cut.push((s.t_ms - cut.from).max(0.0));
                }
                _ => {
                    v.count(if stop.is_some() { "late" } else { "no_stop" }, 1);
                    let mut example = vec![cut.evidence[0].clone(), last.clone()];
                    example.extend(stop.map(|s| (*s).clone()));
                    v.violated(example);
                    late.push(json!({
                        "robot": robot, "cut_ms": cut.from, "last_command_ms": last.t_ms,
                        "stop_ms": stop.map(|s| s.t_ms), "bound_ms": bound,
                    }));
                }
            }
        }
    }
    late.truncate(DETAIL_LIMIT);
    v.detail("late", json!(late));
    v.detail("last_command_to_stop_ms", percentiles(&from_command));
    v.detail("cut_to_stop_ms", percentiles(&from_cut));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Validity;
    use crate::history::{Builder, Phase};

    /// r1 drives every 50 ms over [from, to].
    fn drive(b: &mut Builder, from: f64, to: f64) {
        let mut t = from;
        while t <= to {
            b.command("r1", "s1", t as u64, t);
            t += 50.0;
        }
    }

    #[test]
    fn a_stop_within_the_timeout_after_a_media_cut_is_valid() {
        let mut b = Builder::new();
        drive(&mut b, 0.0, 1_000.0);
        b.control_cut("r1", CutLink::Media, Phase::Start, 1_010.0)
            .safe_stop("r1", "s1", "control_loss", 1_303.0)
            .control_cut("r1", CutLink::Media, Phase::Stop, 3_000.0);
        drive(&mut b, 3_100.0, 3_200.0);
        // A cut shorter than the timeout needs no stop.
        b.control_cut("r1", CutLink::Media, Phase::Start, 3_210.0)
            .control_cut("r1", CutLink::Media, Phase::Stop, 3_300.0);
        drive(&mut b, 3_310.0, 3_400.0);
        let v = control_loss(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Valid, "{v:?}");
        assert_eq!(v.counts["cuts"], 2);
        assert_eq!(v.counts["stopped_in_time"], 1);
        assert_eq!(v.counts["resumed_in_time"], 1);
        assert_eq!(v.detail["last_command_to_stop_ms"]["max"], json!(303.0));
    }

    #[test]
    fn no_stop_after_a_media_cut_is_caught() {
        let mut b = Builder::new();
        drive(&mut b, 0.0, 1_000.0);
        b.nemesis("media-cut", &["robot-r1"], Phase::Start, 1_010.0)
            .nemesis("media-cut", &["robot-r1"], Phase::Stop, 3_000.0);
        let v = control_loss(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["no_stop"], 1);
        // The cut and the last command applied.
        assert_eq!(v.counterexample.len(), 2);
        assert_eq!(v.counterexample[0].t_ms, 1_000.0);
    }

    #[test]
    fn a_stop_later_than_the_timeout_is_caught() {
        let mut b = Builder::new();
        drive(&mut b, 0.0, 1_000.0);
        b.control_cut("r1", CutLink::Media, Phase::Start, 1_010.0)
            .safe_stop("r1", "s1", "lease_expired", 1_900.0);
        let v = control_loss(&b.build(), &Params::default());
        assert_eq!(v.valid, Validity::Invalid);
        assert_eq!(v.counts["late"], 1);
        assert_eq!(v.counterexample.len(), 3);
    }
}
