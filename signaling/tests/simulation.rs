//! Three hub cores over a simulated mesh: a deterministic router that carries every node
//! message (through its wire form) to the other cores and feeds the answers back, and a
//! shell that performs actions the way the gateway does (a connection's writer stops at its
//! close; a closed socket is reported as disconnected once the test settles).
//!
//! Long file: the simulated cluster and the scenarios it runs belong together.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use tether_signaling::codes::{AuditEvent, CloseCode, ErrorCode};
use tether_signaling::hub::{
    Action, CoreCounts, EndedSession, FrameStep, HubCore, Identity, RelayPath, Welcome,
};
use tether_signaling::mesh::{self, NodeSignal};
use tether_signaling::protocol::{ClientFrame, ServerFrame};
use tether_signaling::rooms::{ConnId, NodeId};

const NODES: [NodeId; 3] = [1, 2, 3];

/// What a client saw on its socket.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Frame(ServerFrame),
    Relayed(ServerFrame, RelayPath),
    Closed(CloseCode, String),
}

#[derive(Debug, Clone)]
struct SessionRecord {
    operator: String,
    robot: String,
    active: bool,
    revoked: bool,
    reason: String,
}

#[derive(Default)]
struct Cluster {
    hubs: BTreeMap<NodeId, HubCore>,
    /// Which node each connection is on (connection ids are unique cluster-wide here, for
    /// readable tests; the cores never rely on it).
    node_of: BTreeMap<ConnId, NodeId>,
    got: BTreeMap<ConnId, Vec<Got>>,
    closed: BTreeSet<ConnId>,
    gone: BTreeSet<ConnId>,
    audits: Vec<(NodeId, AuditEvent, String, Value)>,
    /// The replicated state every node agrees on, for admission.
    sessions: BTreeMap<String, SessionRecord>,
    owners: BTreeMap<String, String>,
    next_conn: ConnId,
    node_messages: usize,
}

impl Cluster {
    fn new() -> Self {
        let mut c = Self::default();
        for n in NODES {
            c.hubs.insert(n, HubCore::new());
        }
        c
    }

    fn hub(&mut self, node: NodeId) -> &mut HubCore {
        self.hubs.get_mut(&node).expect("a node of the cluster")
    }

    /// Performs actions as the gateway shell does, in order.
    fn perform(&mut self, node: NodeId, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(conn, frame) => self.deliver(node, conn, Got::Frame(frame)),
                Action::Relay { to, frame, path } => {
                    self.deliver(node, to, Got::Relayed(frame.into(), path))
                }
                Action::Close(conn, code, reason) => {
                    self.deliver(node, conn, Got::Closed(code, reason));
                    self.closed.insert(conn);
                }
                Action::ToNode(to, signal) => {
                    // Fire and forget: the answer is decoded and dropped.
                    let _ = self.call(node, to, &signal);
                }
                Action::Broadcast(signal) => {
                    let others: Vec<NodeId> =
                        self.hubs.keys().copied().filter(|n| *n != node).collect();
                    for to in others {
                        let _ = self.call(node, to, &signal);
                    }
                }
                Action::Audit {
                    event,
                    session_id,
                    detail,
                } => self.audits.push((node, event, session_id, detail)),
            }
        }
    }

    fn deliver(&mut self, node: NodeId, conn: ConnId, got: Got) {
        assert_eq!(
            self.node_of.get(&conn),
            Some(&node),
            "{conn} is not on {node}"
        );
        // The writer stopped at the close: anything after it never reaches the socket.
        if !self.closed.contains(&conn) {
            self.got.entry(conn).or_default().push(got);
        }
    }

    /// One node-to-node call, through the wire form, performing the receiver's actions.
    fn call(&mut self, from: NodeId, to: NodeId, signal: &NodeSignal) -> mesh::SignalAnswer {
        self.node_messages += 1;
        let payload = mesh::encode(signal);
        let signal = mesh::decode(&payload).expect("the wire form decodes");
        let (answer, actions) = self.hub(to).node_signal(from, signal);
        self.perform(to, actions);
        mesh::decode_answer(&mesh::encode_answer(&answer)).expect("answers decode")
    }

    fn connect(&mut self, node: NodeId, identity: Identity) -> ConnId {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.node_of.insert(conn, node);
        let assigned = match &identity {
            Identity::Robot { robot_id, .. } => self
                .sessions
                .iter()
                .find(|(_, s)| s.active && s.robot == *robot_id)
                .map(|(id, _)| id.clone()),
            _ => None,
        };
        let welcome = Welcome {
            assigned_session: assigned,
            ..Welcome::default()
        };
        let actions = self.hub(node).authenticated(conn, identity, welcome);
        self.perform(node, actions);
        conn
    }

    fn operator(&mut self, node: NodeId, subject: &str, sid: Option<&str>) -> ConnId {
        let identity = Identity::Operator {
            subject: subject.into(),
            session_id: sid.map(Into::into),
            token_id: format!("jti-{subject}-{}", self.next_conn),
        };
        self.connect(node, identity)
    }

    fn robot(&mut self, node: NodeId, robot_id: &str) -> ConnId {
        self.connect(
            node,
            Identity::Robot {
                robot_id: robot_id.into(),
                token_id: format!("jti-{robot_id}"),
            },
        )
    }

    fn watcher(&mut self, node: NodeId) -> ConnId {
        self.connect(
            node,
            Identity::Watcher {
                subject: "admin".into(),
                token_id: "jti-admin".into(),
            },
        )
    }

    /// The gateway's admission check on the agreed state (S1/S2 collapsed: the simulated
    /// state is always current).
    fn admit(&self, identity: &Identity, session_id: &str) -> Result<(), (ErrorCode, String)> {
        let Some(s) = self.sessions.get(session_id) else {
            return Err((
                ErrorCode::SessionNotFound,
                format!("no session {session_id}"),
            ));
        };
        if s.revoked {
            return Err((ErrorCode::SessionRevoked, "the session was revoked".into()));
        }
        if !s.active {
            return Err((ErrorCode::SessionTerminated, "the session has ended".into()));
        }
        let ok = match identity {
            Identity::Operator {
                subject,
                session_id: sid,
                ..
            } => sid.as_deref() == Some(session_id) && *subject == s.operator,
            Identity::Robot { robot_id, .. } => *robot_id == s.robot,
            Identity::Watcher { .. } => false,
        };
        if ok {
            Ok(())
        } else {
            Err((
                ErrorCode::Forbidden,
                "this token is not for that session".into(),
            ))
        }
    }

    /// A client sends a frame; the shell drives the core through it, awaiting each step.
    fn frame(&mut self, conn: ConnId, frame: ClientFrame) {
        if self.closed.contains(&conn) {
            return; // its socket is closing; the frame is never read
        }
        let node = self.node_of[&conn];
        match self.hub(node).frame(conn, frame) {
            FrameStep::Done(actions) => self.perform(node, actions),
            FrameStep::Admit {
                session_id,
                identity,
                side,
            } => match self.admit(&identity, &session_id) {
                Err((code, message)) => {
                    let actions =
                        self.hub(node)
                            .join_denied(conn, &session_id, side, code, &message);
                    self.perform(node, actions);
                }
                Ok(()) => {
                    let step = self.hub(node).join_admitted(conn, &session_id);
                    self.perform(node, step.actions);
                    let Some(presence) = step.presence else {
                        return;
                    };
                    let answers: Vec<_> = NODES
                        .into_iter()
                        .filter(|n| *n != node)
                        .map(|n| (n, self.call(node, n, &presence)))
                        .collect();
                    let actions = self.hub(node).presence_answers(conn, &session_id, answers);
                    self.perform(node, actions);
                }
            },
            FrameStep::Lease {
                robot_id,
                session_id,
                nonce,
            } => {
                // The simulated state is always current: the quorum check passes.
                let active = self
                    .sessions
                    .get(&session_id)
                    .is_some_and(|s| s.active && s.robot == robot_id);
                if active {
                    let ask = tether_signaling::lease::LeaseAsk {
                        conn,
                        robot_id,
                        session_id,
                        nonce,
                    };
                    let actions = self.hub(node).lease_granted(&ask, 1000);
                    self.perform(node, actions);
                }
            }
            FrameStep::Forward { node: to, signal } => {
                let delivered = self.call(node, to, &signal).delivered;
                let actions = self.hub(node).relay_result(conn, delivered);
                self.perform(node, actions);
            }
        }
    }

    fn join(&mut self, conn: ConnId, sid: &str) {
        self.frame(
            conn,
            ClientFrame::Join {
                session_id: sid.into(),
            },
        );
    }

    fn offer(&mut self, conn: ConnId, sdp: &str) {
        self.frame(conn, ClientFrame::Offer { sdp: sdp.into() });
    }

    /// A socket closes (the client went away).
    fn disconnect(&mut self, conn: ConnId) {
        if self.gone.insert(conn) {
            self.closed.insert(conn);
            let node = self.node_of[&conn];
            let actions = self.hub(node).disconnected(conn);
            self.perform(node, actions);
        }
    }

    /// Every closed socket finishes its closing handshake and is reported disconnected.
    fn settle(&mut self) {
        let closing: Vec<_> = self.closed.difference(&self.gone).copied().collect();
        for conn in closing {
            self.disconnect(conn);
        }
    }

    fn start(&mut self, sid: &str, operator: &str, robot: &str) {
        self.sessions.insert(
            sid.into(),
            SessionRecord {
                operator: operator.into(),
                robot: robot.into(),
                active: true,
                revoked: false,
                reason: String::new(),
            },
        );
        for n in NODES {
            let actions = self.hub(n).session_started(sid, operator, robot);
            self.perform(n, actions);
        }
    }

    /// The session ends in the replicated state; every node applies it.
    fn end(&mut self, sid: &str, revoked: bool, reason: &str) {
        let s = self.sessions.get_mut(sid).expect("a started session");
        s.active = false;
        s.revoked = revoked;
        s.reason = reason.into();
        let ended = EndedSession {
            id: sid.into(),
            operator: s.operator.clone(),
            robot: s.robot.clone(),
            revoked,
            reason: reason.into(),
            created_at_ms: 0,
            ended_at_ms: 5_000,
            terminated_at: "1970-01-01T00:00:05Z".into(),
            owner: self.owners.get(&s.robot).cloned(),
            robot_moved_on: false,
        };
        for n in NODES {
            let actions = self.hub(n).session_ended(&ended, false);
            self.perform(n, actions);
        }
    }

    /// What `conn` saw since the last call.
    fn take(&mut self, conn: ConnId) -> Vec<Got> {
        self.got.remove(&conn).unwrap_or_default()
    }

    fn counts(&self) -> Vec<CoreCounts> {
        self.hubs.values().map(HubCore::counts).collect()
    }
}

fn frame(f: ServerFrame) -> Got {
    Got::Frame(f)
}

fn joined(sid: &str, peer_present: bool) -> Got {
    frame(ServerFrame::Joined {
        session_id: sid.into(),
        peer_present,
    })
}

fn peer_joined(sid: &str) -> Got {
    frame(ServerFrame::PeerJoined {
        session_id: sid.into(),
    })
}

fn relayed_offer(sdp: &str, path: RelayPath) -> Got {
    Got::Relayed(ServerFrame::Offer { sdp: sdp.into() }, path)
}

fn auth_ok(role: &str, subject: &str) -> Got {
    frame(ServerFrame::AuthOk {
        role: role.into(),
        subject: subject.into(),
        expires_in_ms: 0,
        last_session: None,
    })
}

fn error(code: ErrorCode) -> impl Fn(&Got) -> bool {
    move |g| matches!(g, Got::Frame(ServerFrame::Error { code: c, .. }) if c == code.as_str())
}

const NONE: CoreCounts = CoreCounts {
    connections: 0,
    rooms: 0,
    room_members: 0,
};

/// Operator on node 1, robot on node 2, both joined to `s`.
fn across() -> (Cluster, ConnId, ConnId) {
    let mut c = Cluster::new();
    c.start("s", "olga", "r1");
    let op = c.operator(1, "olga", Some("s"));
    let robot = c.robot(2, "r1");
    assert_eq!(c.take(op), vec![auth_ok("operator", "olga")]);
    assert_eq!(
        c.take(robot),
        vec![
            auth_ok("robot", "r1"),
            frame(ServerFrame::SessionAssigned {
                session_id: "s".into()
            })
        ]
    );
    c.join(op, "s");
    assert_eq!(c.take(op), vec![joined("s", false)]);
    c.join(robot, "s");
    assert_eq!(c.take(robot), vec![joined("s", true)]);
    assert_eq!(c.take(op), vec![peer_joined("s")]);
    (c, op, robot)
}

#[test]
fn frames_relay_across_nodes_in_order_and_on_the_peer_node_path() {
    let (mut c, op, robot) = across();
    for i in 0..5 {
        c.offer(op, &format!("v=0 #{i}"));
    }
    let expected: Vec<_> = (0..5)
        .map(|i| relayed_offer(&format!("v=0 #{i}"), RelayPath::FromPeerNode))
        .collect();
    assert_eq!(c.take(robot), expected);
    c.frame(
        robot,
        ClientFrame::Answer {
            sdp: "v=0 a".into(),
        },
    );
    assert_eq!(
        c.take(op),
        vec![Got::Relayed(
            ServerFrame::Answer {
                sdp: "v=0 a".into()
            },
            RelayPath::FromPeerNode
        )]
    );
    assert!(c.take(op).is_empty(), "no relay_failed");
    // The robot leaves: the operator's node hears of it, and relays stop.
    c.frame(robot, ClientFrame::Leave);
    assert_eq!(
        c.take(op),
        vec![frame(ServerFrame::PeerLeft {
            session_id: "s".into()
        })]
    );
    c.offer(op, "v=0 late");
    assert!(c.take(op).iter().any(error(ErrorCode::PeerNotPresent)));
    assert!(c.take(robot).is_empty());
}

#[test]
fn a_relay_to_a_node_whose_peer_just_left_fails_visibly() {
    let (mut c, op, robot) = across();
    // Node 2 forgets the robot without telling node 1 (its presence message was lost).
    let actions = c.hub(2).leave(robot);
    assert!(matches!(actions.as_slice(), [Action::Broadcast(_)]));
    c.offer(op, "v=0");
    assert!(c.take(op).iter().any(error(ErrorCode::RelayFailed)));
}

#[test]
fn a_rejoin_on_another_node_replaces_the_old_connection() {
    let (mut c, op, old) = across();
    let new = c.robot(3, "r1");
    c.take(new);
    c.join(new, "s");
    assert_eq!(c.take(new), vec![joined("s", true)]);
    assert_eq!(
        c.take(old),
        vec![Got::Closed(
            CloseCode::Replaced,
            "joined on another node".into()
        )]
    );
    assert_eq!(c.take(op), vec![peer_joined("s")]);
    c.settle();
    assert!(c.take(op).is_empty(), "the old socket closing tells nobody");
    c.offer(op, "v=0 to the new one");
    assert_eq!(
        c.take(new),
        vec![relayed_offer("v=0 to the new one", RelayPath::FromPeerNode)]
    );
    assert!(c.take(old).is_empty());
    // Node 2 holds no connection, only what it heard of the other nodes (a remote-only
    // room, until the session ends).
    assert_eq!(
        c.hub(2).counts(),
        CoreCounts {
            connections: 0,
            rooms: 1,
            room_members: 0
        }
    );
}

#[test]
fn a_rejoin_on_the_same_node_replaces_the_old_connection_and_relays_stay_local() {
    let mut c = Cluster::new();
    c.start("s", "olga", "r1");
    let op = c.operator(1, "olga", Some("s"));
    let old = c.robot(1, "r1");
    c.join(op, "s");
    c.join(old, "s");
    let new = c.robot(1, "r1");
    c.join(new, "s");
    assert_eq!(
        c.take(old).last(),
        Some(&Got::Closed(
            CloseCode::Replaced,
            "replaced by a newer connection".into()
        ))
    );
    c.settle();
    c.take(op);
    c.offer(op, "v=0");
    assert_eq!(
        c.take(new).last(),
        Some(&relayed_offer("v=0", RelayPath::Local))
    );
}

#[test]
fn teardown_closes_the_session_on_every_node_and_tells_every_watcher_once() {
    let (mut c, op, robot) = across();
    c.owners.insert("r1".into(), "oscar".into());
    let token_holder = c.operator(3, "olga", Some("s")); // never joined
    let watchers: Vec<_> = NODES.into_iter().map(|n| c.watcher(n)).collect();
    let owner = c.operator(2, "oscar", None);
    let bystander = c.operator(3, "olga", Some("other"));
    for w in watchers.iter().chain([&owner, &bystander]) {
        c.take(*w);
    }
    c.take(token_holder);
    c.end("s", true, "stolen laptop");
    let revoked = [
        frame(ServerFrame::Revoked {
            session_id: "s".into(),
            reason: "stolen laptop".into(),
        }),
        Got::Closed(CloseCode::Revoked, "stolen laptop".into()),
    ];
    for conn in [op, robot, token_holder] {
        assert_eq!(c.take(conn), revoked, "connection {conn}");
    }
    let notice = frame(ServerFrame::SessionTerminated {
        session_id: "s".into(),
        operator: "olga".into(),
        robot: "r1".into(),
        terminated_at: "1970-01-01T00:00:05Z".into(),
        duration_seconds: 5,
        reason: "stolen laptop".into(),
    });
    for w in watchers.iter().chain([&owner]) {
        assert_eq!(c.take(*w), vec![notice.clone()]);
    }
    assert!(c.take(bystander).is_empty());
    let teardowns: Vec<_> = c
        .audits
        .iter()
        .filter(|a| a.1 == AuditEvent::Teardown)
        .map(|a| (a.0, a.3["connections"].as_u64().unwrap()))
        .collect();
    assert_eq!(teardowns, vec![(1, 1), (2, 1), (3, 1)]);
    assert_eq!(
        c.audits
            .iter()
            .filter(|a| a.1 == AuditEvent::SessionRevoked)
            .count(),
        3,
        "each node records what it applied"
    );
    c.settle();
    // Only the watchers, the owner and the bystander remain; no room anywhere.
    let left: Vec<_> = c
        .counts()
        .iter()
        .map(|k| (k.connections, k.rooms, k.room_members))
        .collect();
    assert_eq!(left, vec![(1, 0, 0), (2, 0, 0), (2, 0, 0)]);
    // A rejoin with the revoked token is refused and audited.
    let again = c.operator(1, "olga", Some("s"));
    c.take(again);
    c.join(again, "s");
    assert!(c.take(again).iter().any(error(ErrorCode::SessionRevoked)));
    let denial = c.audits.last().unwrap();
    assert_eq!(
        (denial.1, denial.3["side"].as_str()),
        (AuditEvent::JoinDenied, Some("operator"))
    );
}

#[test]
fn presence_after_teardown_sees_no_stale_peer() {
    let (mut c, _, _) = across();
    c.end("s", false, "client_request");
    c.settle();
    assert_eq!(c.counts(), vec![NONE; 3]);
    c.start("s2", "olga", "r1");
    let op = c.operator(1, "olga", Some("s2"));
    c.join(op, "s2");
    assert_eq!(c.take(op).last(), Some(&joined("s2", false)));
    c.offer(op, "v=0");
    assert!(c.take(op).iter().any(error(ErrorCode::PeerNotPresent)));
    // The robot comes back on another node and finds the operator.
    let robot = c.robot(3, "r1");
    assert!(c.take(robot).contains(&frame(ServerFrame::SessionAssigned {
        session_id: "s2".into()
    })));
    c.join(robot, "s2");
    assert_eq!(c.take(robot), vec![joined("s2", true)]);
    assert_eq!(c.take(op), vec![peer_joined("s2")]);
    c.offer(op, "v=0 again");
    assert_eq!(
        c.take(robot),
        vec![relayed_offer("v=0 again", RelayPath::FromPeerNode)]
    );
    c.disconnect(op);
    c.disconnect(robot);
    c.end("s2", false, "client_request");
    assert_eq!(c.counts(), vec![NONE; 3]);
}

/// A leave is heard by every node, not only the peer's: a node that recorded the side's
/// location at its join must forget it (this was a stale peer, and failed relays, before).
#[test]
fn an_unpaired_leave_leaves_no_stale_presence_on_other_nodes() {
    let mut c = Cluster::new();
    c.start("s", "olga", "r1");
    let op = c.operator(1, "olga", Some("s"));
    c.join(op, "s");
    c.frame(op, ClientFrame::Leave);
    assert_eq!(c.hub(1).counts().rooms, 0);
    assert_eq!(
        c.hub(2).counts().rooms,
        0,
        "node 2 forgot the operator on node 1"
    );
    let robot = c.robot(2, "r1");
    c.take(robot);
    c.join(robot, "s");
    assert_eq!(c.take(robot), vec![joined("s", false)], "nobody is there");
    c.offer(robot, "v=0");
    assert!(c.take(robot).iter().any(error(ErrorCode::PeerNotPresent)));
    c.end("s", false, "client_request");
    c.settle();
    c.disconnect(op);
    assert_eq!(c.counts(), vec![NONE; 3]);
}

/// Deterministic pseudo-random steps (xorshift), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_lives_never_cross_sessions_and_leave_nothing_behind() {
    let mut paths = BTreeMap::<&str, usize>::new();
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut c = Cluster::new();
        let mut clients: Vec<(ConnId, String)> = Vec::new(); // conn, the session it may join
        let mut next_session = 0;
        for _ in 0..400 {
            match rng.next(20) {
                0 => {
                    next_session += 1;
                    let sid = format!("s{next_session}");
                    let robot = format!("r{}", next_session % 4);
                    c.start(&sid, "olga", &robot);
                }
                2..=5 => {
                    let active: Vec<_> = c
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.active)
                        .map(|(id, s)| (id.clone(), s.robot.clone()))
                        .collect();
                    if active.is_empty() {
                        continue;
                    }
                    let (sid, robot) = active[rng.next(active.len() as u64) as usize].clone();
                    let node = NODES[rng.next(3) as usize];
                    let conn = if rng.next(2) == 0 {
                        c.operator(node, "olga", Some(&sid))
                    } else {
                        c.robot(node, &robot)
                    };
                    clients.push((conn, sid));
                }
                6..=9 if !clients.is_empty() => {
                    let (conn, sid) = clients[rng.next(clients.len() as u64) as usize].clone();
                    c.join(conn, &sid);
                }
                10..=16 if !clients.is_empty() => {
                    let (conn, sid) = clients[rng.next(clients.len() as u64) as usize].clone();
                    c.offer(conn, &format!("v=0 {sid}"));
                }
                17 | 18 if !clients.is_empty() => {
                    let (conn, _) = clients[rng.next(clients.len() as u64) as usize].clone();
                    if rng.next(2) == 0 {
                        c.frame(conn, ClientFrame::Leave);
                    } else {
                        c.disconnect(conn);
                    }
                }
                1 => {
                    let active: Vec<_> = c
                        .sessions
                        .iter()
                        .filter(|(_, s)| s.active)
                        .map(|(id, _)| id.clone())
                        .collect();
                    if let Some(sid) = active.first() {
                        c.end(sid, rng.next(2) == 0, "done");
                        c.settle();
                    }
                }
                _ => {}
            }
        }
        // Every relayed frame reached a client of the session it was sent in.
        let session_of: BTreeMap<_, _> = clients.iter().cloned().collect();
        for (conn, got) in &c.got {
            for g in got {
                if let Got::Relayed(ServerFrame::Offer { sdp }, path) = g {
                    *paths.entry(path.as_str()).or_default() += 1;
                    assert_eq!(
                        sdp,
                        &format!("v=0 {}", session_of[conn]),
                        "seed {seed}: {conn} got another session's frame"
                    );
                }
            }
        }
        // End everything: every node is empty again.
        let active: Vec<_> = c.sessions.keys().cloned().collect();
        for sid in active {
            if c.sessions[&sid].active {
                c.end(&sid, false, "done");
            }
        }
        c.settle();
        for (conn, _) in clients {
            c.disconnect(conn);
        }
        assert_eq!(c.counts(), vec![NONE; 3], "seed {seed}");
        assert!(c.node_messages > 0);
    }
    // The random lives did relay, on both paths.
    assert!(paths.get("local") > Some(&10), "{paths:?}");
    assert!(paths.get("from_peer_node") > Some(&10), "{paths:?}");
}

#[test]
fn a_watcher_cannot_join_and_a_second_auth_is_refused() {
    let mut c = Cluster::new();
    c.start("s", "olga", "r1");
    let w = c.watcher(2);
    c.take(w);
    c.join(w, "s");
    assert!(c.take(w).iter().any(error(ErrorCode::Forbidden)));
    c.frame(w, ClientFrame::Auth { token: "x".into() });
    assert!(c.take(w).iter().any(error(ErrorCode::AlreadyAuthenticated)));
    assert_eq!(c.hub(2).identity(w).map(Identity::side), Some(None));
    let op = c.operator(1, "olga", Some("s"));
    c.take(op);
    c.join(op, "nope");
    assert!(c.take(op).iter().any(error(ErrorCode::SessionNotFound)));
    let stranger = c.robot(1, "r9");
    c.take(stranger);
    c.join(stranger, "s");
    assert!(c.take(stranger).iter().any(error(ErrorCode::Forbidden)));
    assert_eq!(
        c.audits
            .iter()
            .filter(|a| a.1 == AuditEvent::JoinDenied)
            .map(|a| a.3["side"].clone())
            .collect::<Vec<_>>(),
        vec![Value::from("operator"), Value::from("robot")]
    );
}
