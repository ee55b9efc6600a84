//! A builder of histories for tests: operations as calls completed ok, fail or info, and
//! the robots' and nemesis' single events.

use super::{Body, CutLink, Event, History, Op, Phase, RevocationKey, RevokeKind};

/// Builds histories for tests: `b.call("admin-1", 1, op, 10.0).ok(12.0)`.
#[derive(Debug, Default)]
pub struct Builder {
    events: Vec<Event>,
}

/// An invoked call waiting for its completion; dropping it leaves it pending (info).
#[derive(Debug)]
pub struct Call<'b> {
    builder: &'b mut Builder,
    process: String,
    node: u64,
    op: Op,
}

impl Call<'_> {
    fn complete(self, t_ms: f64, body: Body) {
        self.builder
            .push(t_ms, &self.process, Some(self.node), body);
    }

    /// Completes ok at `t_ms`.
    pub fn ok(self, t_ms: f64) {
        let op = self.op.clone();
        self.complete(t_ms, Body::Ok { op });
    }

    /// Fails at `t_ms` with `code`.
    pub fn fail(self, t_ms: f64, code: &str) {
        let op = self.op.clone();
        let error = Some(code.to_owned());
        self.complete(t_ms, Body::Fail { op, error });
    }

    /// Completes with an unknown outcome at `t_ms`.
    pub fn info(self, t_ms: f64) {
        let op = self.op.clone();
        let error = Some("timeout".to_owned());
        self.complete(t_ms, Body::Info { op, error });
    }
}

impl Builder {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds any event.
    pub fn push(&mut self, t_ms: f64, process: &str, node: Option<u64>, body: Body) -> &mut Self {
        self.events.push(Event {
            t_ms,
            process: process.to_owned(),
            node,
            body,
        });
        self
    }

    /// `process` invokes `op` on `node` at `t_ms`; complete it with the returned call.
    pub fn call(&mut self, process: &str, node: u64, op: Op, t_ms: f64) -> Call<'_> {
        self.push(t_ms, process, Some(node), Body::Invoke { op: op.clone() });
        Call {
            builder: self,
            process: process.to_owned(),
            node,
            op,
        }
    }

    /// The final read of `node` at `t_ms` (an ok alone).
    pub fn read(&mut self, node: u64, t_ms: f64, revocations: &[(RevokeKind, &str)]) -> &mut Self {
        let revocations = revocations
            .iter()
            .map(|(kind, target)| RevocationKey::new(*kind, target))
            .collect();
        let op = Op::Read { node, revocations };
        self.push(t_ms, &format!("reader-{node}"), Some(node), Body::Ok { op })
    }

    /// `robot` applied command `seq` of `session_id` at `t_ms`.
    pub fn command(&mut self, robot: &str, session_id: &str, seq: u64, t_ms: f64) -> &mut Self {
        let body = Body::CommandApplied {
            robot: robot.to_owned(),
            session_id: session_id.to_owned(),
            seq,
        };
        self.push(t_ms, &format!("robot-{robot}"), None, body)
    }

    /// `robot` safe-stopped for `cause` at `t_ms`.
    pub fn safe_stop(
        &mut self,
        robot: &str,
        session_id: &str,
        cause: &str,
        t_ms: f64,
    ) -> &mut Self {
        let body = Body::SafeStop {
            robot: robot.to_owned(),
            session_id: Some(session_id.to_owned()),
            cause: cause.to_owned(),
        };
        self.push(t_ms, &format!("robot-{robot}"), None, body)
    }

    /// A cut of `robot`'s `link` began or ended at `t_ms`.
    pub fn control_cut(
        &mut self,
        robot: &str,
        link: CutLink,
        phase: Phase,
        t_ms: f64,
    ) -> &mut Self {
        let robot = robot.to_owned();
        self.push(
            t_ms,
            "nemesis",
            None,
            Body::ControlCut { robot, link, phase },
        )
    }

    /// The nemesis began or healed `fault` on `targets` at `t_ms`.
    pub fn nemesis(&mut self, fault: &str, targets: &[&str], phase: Phase, t_ms: f64) -> &mut Self {
        let body = Body::Nemesis {
            fault: fault.to_owned(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            phase,
        };
        self.push(t_ms, "nemesis", None, body)
    }

    /// `node` had no quorum contact over `[from_ms, to_ms]`.
    pub fn quorum_lost(&mut self, node: u64, from_ms: f64, to_ms: f64) -> &mut Self {
        self.push(
            from_ms,
            "runner",
            Some(node),
            Body::QuorumLost {
                from_ms,
                to_ms,
                certain: true,
            },
        )
    }

    /// `node` may have lost the leader (not certainly the quorum) over `[from_ms, to_ms]`.
    pub fn leader_maybe_lost(&mut self, node: u64, from_ms: f64, to_ms: f64) -> &mut Self {
        let body = Body::QuorumLost {
            from_ms,
            to_ms,
            certain: false,
        };
        self.push(from_ms, "runner", Some(node), body)
    }

    /// The majority `nodes` (empty: every node) stayed connected over `[from_ms, to_ms]`.
    pub fn quorum_kept(&mut self, from_ms: f64, to_ms: f64, nodes: &[u64]) -> &mut Self {
        let nodes = nodes.to_vec();
        let body = Body::QuorumKept {
            from_ms,
            to_ms,
            nodes,
        };
        self.push(from_ms, "runner", None, body)
    }

    /// The history, sorted by time.
    pub fn build(&mut self) -> History {
        History::new(std::mem::take(&mut self.events))
    }
}
