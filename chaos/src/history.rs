//! The history of a chaos run: Jepsen-style invoke → ok / fail / info operations and the
//! robots', consoles' and nemesis' single observations, on CLOCK_MONOTONIC milliseconds,
//! saved as JSON lines so that a history re-checks anywhere.
//!
//! Long file: the history's whole vocabulary (operations, bodies, outcomes, the pairing of
//! invokes with completions and the JSON-lines codec) is one wire format, kept together.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

mod builder;
pub use builder::{Builder, Call};

/// What a revocation is keyed by (the store's three kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeKind {
    /// A session id (`sid`).
    Session,
    /// A token id (`jti`).
    Token,
    /// An operator (the token's subject).
    Operator,
}

/// One revocation as a node's final read reports it, and as a revoke names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RevocationKey {
    /// By what it is keyed.
    pub kind: RevokeKind,
    /// The session id, token id or operator.
    pub target: String,
}

impl RevocationKey {
    /// The key of `kind`/`target`.
    pub fn new(kind: RevokeKind, target: &str) -> Self {
        Self {
            kind,
            target: target.to_owned(),
        }
    }
}

/// Which side of a session a join speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The console.
    Operator,
    /// The robot agent.
    Robot,
}

/// A client operation (Jepsen's `:f` and `:value`). A completion repeats the invoke's op
/// with what the answer filled in (a started session's id, a read's revocations).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/revocations`.
    Revoke {
        /// By what it revokes.
        kind: RevokeKind,
        /// The session id, token id or operator revoked.
        target: String,
    },
    /// `POST /v1/sessions`; the ok carries the new session's id and its session token's id.
    StartSession {
        /// Who starts it.
        operator: String,
        /// The robot it is for.
        robot: String,
        /// The new session's id (on the ok).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        /// The new session token's id (on the ok), which a token revocation can name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
        /// The id of the login token presented.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    /// A session token refresh.
    Refresh {
        /// The session refreshed.
        session_id: String,
        /// The id of the token presented.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    /// `DELETE /v1/sessions/{sid}`.
    EndSession {
        /// The session ended.
        session_id: String,
    },
    /// A signaling join; ok = admitted (`joined`), fail = denied with a code.
    Join {
        /// The session joined.
        session_id: String,
        /// Which side joins.
        side: Side,
        /// The id of the token presented.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    /// A robot's lease request; ok = the robot received the lease from the event's node.
    Lease {
        /// The robot asking.
        robot: String,
        /// The session the lease is for.
        session_id: String,
        /// The robot's nonce, echoed by the gateway.
        nonce: u64,
    },
    /// The final read of one node's revocations after healing (an ok alone is enough).
    Read {
        /// The node read.
        node: u64,
        /// Its revocations (on the ok).
        #[serde(default)]
        revocations: Vec<RevocationKey>,
    },
}

impl Op {
    /// A revoke of `kind`/`target`.
    pub fn revoke(kind: RevokeKind, target: &str) -> Self {
        Op::Revoke {
            kind,
            target: target.to_owned(),
        }
    }

    /// A session start by `operator` for `robot` that answers `session_id`.
    pub fn start_session(operator: &str, robot: &str, session_id: Option<&str>) -> Self {
        Op::StartSession {
            operator: operator.to_owned(),
            robot: robot.to_owned(),
            session_id: session_id.map(str::to_owned),
            token_id: None,
            credential: None,
        }
    }

    /// A join of `session_id` by `side` presenting `credential`.
    pub fn join(session_id: &str, side: Side, credential: Option<&str>) -> Self {
        Op::Join {
            session_id: session_id.to_owned(),
            side,
            credential: credential.map(str::to_owned),
        }
    }

    /// A refresh of `session_id`'s token.
    pub fn refresh(session_id: &str, credential: Option<&str>) -> Self {
        Op::Refresh {
            session_id: session_id.to_owned(),
            credential: credential.map(str::to_owned),
        }
    }

    /// A lease request of `robot` for `session_id`.
    pub fn lease(robot: &str, session_id: &str, nonce: u64) -> Self {
        Op::Lease {
            robot: robot.to_owned(),
            session_id: session_id.to_owned(),
            nonce,
        }
    }

    /// The session this op acts on, when it names one.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Op::StartSession { session_id, .. } => session_id.as_deref(),
            Op::Refresh { session_id, .. }
            | Op::EndSession { session_id }
            | Op::Join { session_id, .. }
            | Op::Lease { session_id, .. } => Some(session_id),
            Op::Revoke { .. } | Op::Read { .. } => None,
        }
    }

    /// The id of the token this op presented, when it records one.
    pub fn credential(&self) -> Option<&str> {
        match self {
            Op::StartSession { credential, .. }
            | Op::Refresh { credential, .. }
            | Op::Join { credential, .. } => credential.as_deref(),
            _ => None,
        }
    }
}

/// The start or the end of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The fault begins.
    Start,
    /// The fault is healed (`end` is read as well).
    #[serde(alias = "end")]
    Stop,
}

/// Which of a robot's paths a cut severs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutLink {
    /// Console ↔ robot media (the WebRTC control channel): S6's control loss.
    Media,
    /// Robot ↔ every gateway: revocations cannot be pushed, leases cannot be renewed (S7).
    #[serde(alias = "gateways")]
    Gateway,
}

/// What happened, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// A client began an operation.
    Invoke {
        /// The operation.
        op: Op,
    },
    /// It succeeded.
    Ok {
        /// The operation, with its results.
        op: Op,
    },
    /// It definitely did not take effect (a denial, a 4xx).
    Fail {
        /// The operation.
        op: Op,
        /// The stable error code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Its outcome is unknown (a timeout, `unavailable`): it may have taken effect.
    Info {
        /// The operation.
        op: Op,
        /// Why the outcome is unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A robot applied a control command.
    CommandApplied {
        /// The robot.
        robot: String,
        /// The session the command belongs to.
        session_id: String,
        /// The command's sequence number.
        seq: u64,
    },
    /// A robot entered safe-stop.
    SafeStop {
        /// The robot.
        robot: String,
        /// The session it was in, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        /// The agent's stop cause (`revoked`, `control_loss`, `lease_expired`, …).
        cause: String,
    },
    /// A cut of one of a robot's paths began or ended.
    ControlCut {
        /// The robot.
        robot: String,
        /// Which path.
        link: CutLink,
        /// Begins or ends.
        phase: Phase,
    },
    /// The nemesis began or healed a fault.
    Nemesis {
        /// The fault's name (`partition-leader`, `kill`, `pause`, `robot-cut`, …).
        fault: String,
        /// What it acts on (nodes, robots, consoles).
        targets: Vec<String>,
        /// Begins or heals.
        phase: Phase,
    },
    /// The event's node had no contact with a quorum over `[from_ms, to_ms]` (the runner
    /// derives these from the nemesis schedule; a killed or paused node counts).
    QuorumLost {
        /// From.
        from_ms: f64,
        /// To.
        to_ms: f64,
        /// False where the node may only have lost the leader (a bridge's or a ring's
        /// far side): its robots are then held to the lease bound, but it may yet reach a
        /// quorum under a new leader, so `fail_closed` does not judge it.
        #[serde(default = "certain", skip_serializing_if = "is_certain")]
        certain: bool,
    },
    /// A majority of the nodes stayed connected to each other over `[from_ms, to_ms]`
    /// despite the fault (a follower cut off, a lossy or slow mesh): writes must keep
    /// committing in it.
    QuorumKept {
        /// From.
        from_ms: f64,
        /// To.
        to_ms: f64,
        /// The nodes of that majority, whose writes must commit (empty: every node).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        nodes: Vec<u64>,
    },
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// CLOCK_MONOTONIC, milliseconds.
    pub t_ms: f64,
    /// Who did or saw it (`admin-2`, `console-1`, `robot-r1`, `nemesis`).
    pub process: String,
    /// The node it talked to, or the node it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// What happened.
    #[serde(flatten)]
    pub body: Body,
}

/// How an operation ended; one never completed counts as `Info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Definitely not applied.
    Fail,
    /// Maybe applied.
    Info,
}

/// An invoke paired with its completion (at least one of them; built by
/// [`History::operations`]).
#[derive(Clone, Copy, Debug)]
pub struct Operation<'a> {
    /// The invoke; `None` for a completion-only op (a final read).
    invoke: Option<&'a Event>,
    /// The completion; `None` when the process never answered.
    completion: Option<&'a Event>,
}

impl<'a> Operation<'a> {
    /// The invoke; `None` for a completion-only op (a final read).
    pub fn invoke(&self) -> Option<&'a Event> {
        self.invoke
    }

    /// The completion; `None` when the process never answered.
    pub fn completion(&self) -> Option<&'a Event> {
        self.completion
    }

    /// The op, as the completion reports it when there is one (it carries the results).
    pub fn op(&self) -> &'a Op {
        let event = self
            .completion
            .or(self.invoke)
            .expect("an operation has an event");
        match &event.body {
            Body::Invoke { op }
            | Body::Ok { op }
            | Body::Fail { op, .. }
            | Body::Info { op, .. } => op,
            _ => unreachable!("operations are built from invokes and completions only"),
        }
    }

    /// How it ended.
    pub fn outcome(&self) -> Outcome {
        match self.completion.map(|e| &e.body) {
            Some(Body::Ok { .. }) => Outcome::Ok,
            Some(Body::Fail { .. }) => Outcome::Fail,
            _ => Outcome::Info,
        }
    }

    /// When it was invoked.
    pub fn invoke_ms(&self) -> Option<f64> {
        self.invoke.map(|e| e.t_ms)
    }

    /// When it completed.
    pub fn complete_ms(&self) -> Option<f64> {
        self.completion.map(|e| e.t_ms)
    }

    /// The node that answered (or was asked).
    pub fn node(&self) -> Option<u64> {
        self.completion
            .and_then(|e| e.node)
            .or(self.invoke.and_then(|e| e.node))
    }

    /// Its events, for a counterexample.
    pub fn events(&self) -> Vec<Event> {
        self.invoke
            .into_iter()
            .chain(self.completion)
            .cloned()
            .collect()
    }
}

/// Reading or writing a history file failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("history file: {0}")]
    Io(#[from] std::io::Error),
    /// A line is not an event.
    #[error("history line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
}

/// A whole run's events, in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The events, sorted by `t_ms` (stable: a process's own order is kept on ties).
    pub events: Vec<Event>,
}

impl History {
    /// A history of `events`, sorted by time (files from several processes merge here).
    pub fn new(mut events: Vec<Event>) -> Self {
        events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        Self { events }
    }

    /// Adds `events` (another process's file) and keeps the order.
    pub fn extend(&mut self, events: impl IntoIterator<Item = Event>) {
        self.events.extend(events);
        self.events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    }

    /// The client operations, in invoke order: each process's invoke is paired with its
    /// next completion (a process does one thing at a time, as in Jepsen). An invoke
    /// followed by another invoke of the same process never completed; a completion with
    /// no pending invoke stands alone.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ops: Vec<Operation<'_>> = Vec::new();
        for event in &self.events {
            match &event.body {
                Body::Invoke { .. } => {
                    // A second invoke abandons the first: it stays without a completion.
                    pending.insert(&event.process, ops.len());
                    ops.push(Operation {
                        invoke: Some(event),
                        completion: None,
                    });
                }
                Body::Ok { .. } | Body::Fail { .. } | Body::Info { .. } => {
                    match pending.remove(event.process.as_str()) {
                        Some(i) => ops[i].completion = Some(event),
                        None => ops.push(Operation {
                            invoke: None,
                            completion: Some(event),
                        }),
                    }
                }
                _ => {}
            }
        }
        ops
    }

    /// Parses JSON lines (blank lines are skipped).
    pub fn parse_jsonl(reader: impl BufRead) -> Result<Self, HistoryError> {
        let mut events = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: i + 1,
                source,
            })?;
            events.push(event);
        }
        Ok(Self::new(events))
    }

    /// Writes one event per line.
    pub fn write_jsonl_to(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }
}

/// Reads a `history.jsonl`.
pub fn read_jsonl(path: &Path) -> Result<History, HistoryError> {
    History::parse_jsonl(BufReader::new(std::fs::File::open(path)?))
}

/// Writes a `history.jsonl` (replacing the file).
pub fn write_jsonl(path: &Path, history: &History) -> Result<(), HistoryError> {
    history.write_jsonl_to(BufWriter::new(std::fs::File::create(path)?))
}

/// `QuorumLost::certain` when absent: the windows of a saved history are certain.
fn certain() -> bool {
    true
}

fn is_certain(certain: &bool) -> bool {
    *certain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut b = Builder::new();
        b.call("admin-1", 1, Op::revoke(RevokeKind::Session, "s1"), 10.0)
            .ok(12.5);
        b.call("admin-2", 2, Op::revoke(RevokeKind::Token, "j1"), 11.0)
            .info(40.0);
        b.call(
            "console-1",
            3,
            Op::join("s1", Side::Operator, Some("j2")),
            13.0,
        )
        .fail(14.0, "session_revoked");
        b.call("robot-r1", 1, Op::lease("r1", "s1", 7), 15.0);
        b.command("r1", "s1", 3, 9.0)
            .safe_stop("r1", "s1", "revoked", 14.0)
            .control_cut("r1", CutLink::Media, Phase::Start, 20.0)
            .nemesis("partition", &["n1"], Phase::Start, 21.0)
            .quorum_lost(1, 21.0, 30.0)
            .read(1, 50.0, &[(RevokeKind::Session, "s1")]);
        b.build()
    }

    #[test]
    fn jsonl_round_trips_every_kind_of_event() {
        let h = sample();
        let mut bytes = Vec::new();
        h.write_jsonl_to(&mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count(), h.events.len());
        assert!(text.contains(r#""type":"invoke""#), "{text}");
        assert!(
            text.contains(r#""f":"revoke","kind":"session","target":"s1""#),
            "{text}"
        );
        let back = History::parse_jsonl(text.as_bytes()).unwrap();
        assert_eq!(back, h);

        let dir = std::env::temp_dir().join(format!("tether-chaos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        write_jsonl(&path, &h).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), h);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let text = "\n{\"type\":\"nemesis\",\"t_ms\":1,\"process\":\"n\",\"fault\":\"kill\",\
                    \"targets\":[],\"phase\":\"end\"}\n{\"type\":\"bogus\"}\n";
        match History::parse_jsonl(text.as_bytes()) {
            Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn operations_pair_per_process_in_order() {
        let h = sample();
        let ops = h.operations();
        let summary: Vec<_> = ops
            .iter()
            .map(|o| (o.invoke().map(|e| e.process.as_str()), o.outcome()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("admin-1"), Outcome::Ok),
                (Some("admin-2"), Outcome::Info),
                (Some("console-1"), Outcome::Fail),
                (Some("robot-r1"), Outcome::Info), // never completed
                (None, Outcome::Ok),               // the final read, completion-only
            ]
        );
        assert_eq!(ops[0].complete_ms(), Some(12.5));
        assert_eq!(ops[2].node(), Some(3));
    }

    #[test]
    fn a_second_invoke_abandons_the_first() {
        let mut b = Builder::new();
        b.call("c", 1, Op::refresh("s1", None), 1.0);
        b.call("c", 2, Op::refresh("s2", None), 2.0).ok(3.0);
        let h = b.build();
        let ops = h.operations();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].completion().is_none());
        assert_eq!(ops[1].op().session_id(), Some("s2"));
        assert_eq!(ops[1].outcome(), Outcome::Ok);
    }
}
