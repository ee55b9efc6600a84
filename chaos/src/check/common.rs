//! What several checkers derive from a history: the sessions, the acknowledged
//! revocations and what each covers, fault windows, and percentiles.

use crate::history::{
    Body, CutLink, Event, History, Op, Operation, Outcome, Phase, RevocationKey, RevokeKind, Side,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What the history tells of one session.
#[derive(Debug, Default)]
pub(super) struct SessionInfo {
    /// Who started it (from the StartSession ok).
    pub operator: Option<String>,
    /// Its robot (from the StartSession ok, or the robot that applied its commands).
    pub robot: Option<String>,
    /// Its session tokens: the StartSession ok's token id, and what the console presented
    /// on admitted operator joins and refreshes (a session token opens one session only).
    pub tokens: BTreeSet<String>,
}

/// Every session named by a StartSession ok, a CommandApplied or an admitted join.
pub(super) fn sessions(history: &History, ops: &[Operation<'_>]) -> BTreeMap<String, SessionInfo> {
    let mut out: BTreeMap<String, SessionInfo> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome() == Outcome::Ok) {
        match op.op() {
            Op::StartSession {
                operator,
                robot,
                session_id: Some(sid),
                token_id,
                ..
            } => {
                let s = out.entry(sid.clone()).or_default();
                s.operator = Some(operator.clone());
                s.robot = Some(robot.clone());
                s.tokens.extend(token_id.clone());
            }
            Op::Join {
                session_id,
                side: Side::Operator,
                credential: Some(c),
            }
            | Op::Refresh {
                session_id,
                credential: Some(c),
            } => {
                out.entry(session_id.clone())
                    .or_default()
                    .tokens
                    .insert(c.clone());
            }
            _ => {}
        }
    }
    for e in &history.events {
        if let Body::CommandApplied {
            robot, session_id, ..
        } = &e.body
        {
            let s = out.entry(session_id.clone()).or_default();
            s.robot.get_or_insert_with(|| robot.clone());
        }
    }
    out
}

/// Whether revoking `key` ends session `sid` (the store's rule: by id, by its session
/// token, by its operator).
pub(super) fn covers_session(key: &RevocationKey, sid: &str, info: Option<&SessionInfo>) -> bool {
    match key.kind {
        RevokeKind::Session => key.target == sid,
        RevokeKind::Token => info.is_some_and(|s| s.tokens.contains(&key.target)),
        RevokeKind::Operator => info.is_some_and(|s| s.operator.as_deref() == Some(&key.target)),
    }
}

/// A revocation acknowledged to the admin: its earliest ok.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ack<'a> {
    /// When the admin had the answer.
    pub at: f64,
    /// The revoke.
    pub op: Operation<'a>,
}

/// The revoke op's key, if `op` is a revoke.
pub(super) fn revoke_key(op: &Operation<'_>) -> Option<RevocationKey> {
    match op.op() {
        Op::Revoke { kind, target } => Some(RevocationKey::new(*kind, target)),
        _ => None,
    }
}

/// The earliest acknowledgement of each revocation key.
pub(super) fn acks<'a>(ops: &[Operation<'a>]) -> BTreeMap<RevocationKey, Ack<'a>> {
    let mut out: BTreeMap<RevocationKey, Ack<'a>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.outcome() == Outcome::Ok) {
        let (Some(key), Some(at)) = (revoke_key(op), op.complete_ms()) else {
            continue;
        };
        let earlier = out.get(&key).is_some_and(|a| a.at <= at);
        if !earlier {
            out.insert(key, Ack { at, op: *op });
        }
    }
    out
}

/// A time window and the events that define it.
#[derive(Clone, Debug)]
pub(super) struct Window {
    pub from: f64,
    pub to: f64,
    pub evidence: Vec<Event>,
}

impl Window {
    /// Whether it overlaps `[from, to]`.
    pub(super) fn overlaps(&self, from: f64, to: f64) -> bool {
        self.from <= to && from <= self.to
    }
}

/// Whether a nemesis target names `robot` (`r1` or its process `robot-r1`).
fn names_robot(target: &str, robot: &str) -> bool {
    target == robot || target.strip_prefix("robot-") == Some(robot)
}

/// The windows in which `robot`'s `link` was cut: its `ControlCut` events, and nemesis
/// faults naming the robot (those whose name says `media` cut the media, the others its
/// gateways). A cut never healed lasts to the end of the history.
pub(super) fn cut_windows(history: &History, robot: &str, link: CutLink) -> Vec<Window> {
    let mut open: BTreeMap<String, Event> = BTreeMap::new();
    let mut out = Vec::new();
    for e in &history.events {
        let (key, phase) = match &e.body {
            Body::ControlCut {
                robot: r,
                link: l,
                phase,
            } if r == robot && *l == link => ("cut".to_owned(), *phase),
            Body::Nemesis {
                fault,
                targets,
                phase,
            } if fault.contains("media") == (link == CutLink::Media)
                && targets.iter().any(|t| names_robot(t, robot)) =>
            {
                (format!("nemesis {fault} {targets:?}"), *phase)
            }
            _ => continue,
        };
        match phase {
            Phase::Start => {
                open.entry(key).or_insert_with(|| e.clone());
            }
            Phase::Stop => {
                if let Some(start) = open.remove(&key) {
                    out.push(Window {
                        from: start.t_ms,
                        to: e.t_ms,
                        evidence: vec![start, e.clone()],
                    });
                }
            }
        }
    }
    out.extend(open.into_values().map(|start| Window {
        from: start.t_ms,
        to: f64::INFINITY,
        evidence: vec![start],
    }));
    out.sort_by(|a, b| a.from.total_cmp(&b.from));
    out
}

/// Each node's quorum-lost windows (events without a node are skipped): only the certain
/// ones, or also those where the node may only have lost the leader (`maybe`).
pub(super) fn quorum_windows(history: &History, maybe: bool) -> BTreeMap<u64, Vec<Window>> {
    let mut out: BTreeMap<u64, Vec<Window>> = BTreeMap::new();
    for e in &history.events {
        let (
            Body::QuorumLost {
                from_ms,
                to_ms,
                certain,
            },
            Some(node),
        ) = (&e.body, e.node)
        else {
            continue;
        };
        if *certain || maybe {
            out.entry(node).or_default().push(Window {
                from: *from_ms,
                to: *to_ms,
                evidence: vec![e.clone()],
            });
        }
    }
    out
}

/// `x` ms to the microsecond: monotonic times are large, so their differences carry float
/// noise below it.
pub(super) fn us(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// The nearest-rank percentile `p` (0–100) of sorted `values`.
fn rank(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// `{n, p50, p99, max}` of `values` to the microsecond (just `{n: 0}` when empty).
pub(super) fn percentiles(values: &[f64]) -> Value {
    if values.is_empty() {
        return json!({"n": 0});
    }
    let mut sorted: Vec<f64> = values.iter().copied().map(us).collect();
    sorted.sort_by(f64::total_cmp);
    json!({
        "n": sorted.len(),
        "p50": rank(&sorted, 50.0),
        "p99": rank(&sorted, 99.0),
        "max": sorted[sorted.len() - 1],
    })
}

/// At most this many violations are listed in a verdict's detail.
pub(super) const DETAIL_LIMIT: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Builder;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            percentiles(&v),
            json!({"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0})
        );
        assert_eq!(
            percentiles(&[7.0]),
            json!({"n": 1, "p50": 7.0, "p99": 7.0, "max": 7.0})
        );
        assert_eq!(percentiles(&[]), json!({"n": 0}));
    }

    #[test]
    fn cut_windows_pair_starts_with_stops_and_read_nemesis_naming_the_robot() {
        let mut b = Builder::new();
        b.control_cut("r1", CutLink::Gateway, Phase::Start, 10.0)
            .control_cut("r1", CutLink::Gateway, Phase::Stop, 20.0)
            .control_cut("r1", CutLink::Media, Phase::Start, 30.0)
            .nemesis("robot-cut", &["robot-r1"], Phase::Start, 40.0)
            .nemesis("media-cut", &["robot-r1"], Phase::Start, 45.0)
            .nemesis("robot-cut", &["robot-r1"], Phase::Stop, 50.0)
            .control_cut("r2", CutLink::Gateway, Phase::Start, 60.0);
        let h = b.build();
        let spans = |l| {
            cut_windows(&h, "r1", l)
                .iter()
                .map(|w| (w.from, w.to))
                .collect::<Vec<_>>()
        };
        assert_eq!(spans(CutLink::Gateway), vec![(10.0, 20.0), (40.0, 50.0)]);
        let forever = f64::INFINITY;
        assert_eq!(
            spans(CutLink::Media),
            vec![(30.0, forever), (45.0, forever)]
        );
    }
}
