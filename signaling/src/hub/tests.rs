//! Unit tests of the hub core: one node, with other nodes played by hand.
//!
//! Long file: exhaustive tests of every decision, each short and independent.

use super::*;
use crate::lease::LeaseAsk;
use serde_json::json;

fn operator(subject: &str, sid: Option<&str>) -> Identity {
    Identity::Operator {
        subject: subject.into(),
        session_id: sid.map(Into::into),
        token_id: format!("jti-{subject}"),
    }
}

fn robot(id: &str) -> Identity {
    Identity::Robot {
        robot_id: id.into(),
        token_id: format!("jti-{id}"),
    }
}

fn watcher() -> Identity {
    Identity::Watcher {
        subject: "admin".into(),
        token_id: "jti-admin".into(),
    }
}

fn assigned(session_id: impl Into<String>) -> Welcome {
    Welcome {
        assigned_session: Some(session_id.into()),
        ..Welcome::default()
    }
}

fn offer() -> RelayFrame {
    RelayFrame::Offer { sdp: "v=0".into() }
}

fn err(conn: ConnId, code: &str, message: &str) -> Action {
    Action::Send(
        conn,
        ServerFrame::Error {
            code: code.into(),
            message: message.into(),
        },
    )
}

fn joined(conn: ConnId, sid: &str, peer_present: bool) -> Action {
    Action::Send(
        conn,
        ServerFrame::Joined {
            session_id: sid.into(),
            peer_present,
        },
    )
}

fn peer_joined(conn: ConnId, sid: &str) -> Action {
    Action::Send(
        conn,
        ServerFrame::PeerJoined {
            session_id: sid.into(),
        },
    )
}

fn peer_left(conn: ConnId, sid: &str) -> Action {
    Action::Send(
        conn,
        ServerFrame::PeerLeft {
            session_id: sid.into(),
        },
    )
}

fn presence(sid: &str, side: Side, joined: bool) -> NodeSignal {
    NodeSignal::Presence {
        session_id: sid.into(),
        side,
        joined,
    }
}

/// Authenticates and joins with no other node answering; returns the `joined` actions.
fn join_alone(hub: &mut HubCore, conn: ConnId, sid: &str) -> Vec<Action> {
    let step = hub.join_admitted(conn, sid);
    assert!(step.presence.is_some());
    let mut actions = step.actions;
    actions.extend(hub.presence_answers(conn, sid, Vec::new()));
    actions
}

/// A hub with operator 1 and robot 2 of session `s` joined, both here.
fn paired() -> HubCore {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    hub.authenticated(2, robot("r1"), assigned("s"));
    join_alone(&mut hub, 1, "s");
    join_alone(&mut hub, 2, "s");
    hub
}

fn ended(id: &str, revoked: bool) -> EndedSession {
    EndedSession {
        id: id.into(),
        operator: "olga".into(),
        robot: "r1".into(),
        revoked,
        reason: if revoked {
            "stolen laptop"
        } else {
            "client_request"
        }
        .into(),
        created_at_ms: 1_000,
        ended_at_ms: 62_999,
        terminated_at: "1970-01-01T00:01:02.999Z".into(),
        owner: None,
        robot_moved_on: false,
    }
}

fn notice(conn: ConnId, s: &EndedSession) -> Action {
    Action::Send(
        conn,
        ServerFrame::SessionTerminated {
            session_id: s.id.clone(),
            operator: s.operator.clone(),
            robot: s.robot.clone(),
            terminated_at: s.terminated_at.clone(),
            duration_seconds: 61,
            reason: s.reason.clone(),
        },
    )
}

fn revoked_then_closed(conn: ConnId, s: &EndedSession) -> [Action; 2] {
    [
        Action::Send(
            conn,
            ServerFrame::Revoked {
                session_id: s.id.clone(),
                reason: s.reason.clone(),
            },
        ),
        Action::Close(conn, CloseCode::Revoked, s.reason.clone()),
    ]
}

fn audits(s: &EndedSession, event: AuditEvent, connections: usize) -> [Action; 2] {
    [
        Action::Audit {
            event,
            session_id: s.id.clone(),
            detail: json!({ "operator": s.operator, "robot": s.robot, "reason": s.reason }),
        },
        Action::Audit {
            event: AuditEvent::Teardown,
            session_id: s.id.clone(),
            detail: json!({ "connections": connections }),
        },
    ]
}

fn zero() -> CoreCounts {
    CoreCounts::default()
}

#[test]
fn auth_ok_names_the_role_and_subject_and_a_robot_hears_of_its_active_session() {
    let mut hub = HubCore::new();
    assert_eq!(
        hub.authenticated(1, operator("olga", Some("s")), Welcome::default()),
        vec![Action::Send(
            1,
            ServerFrame::AuthOk {
                role: "operator".into(),
                subject: "olga".into(),
                expires_in_ms: 0,
                last_session: None,
            }
        )]
    );
    assert_eq!(
        hub.authenticated(2, robot("r1"), assigned("s")),
        vec![
            Action::Send(
                2,
                ServerFrame::AuthOk {
                    role: "robot".into(),
                    subject: "r1".into(),
                    expires_in_ms: 0,
                    last_session: None,
                }
            ),
            Action::Send(
                2,
                ServerFrame::SessionAssigned {
                    session_id: "s".into()
                }
            ),
        ]
    );
    assert_eq!(
        hub.authenticated(3, watcher(), Welcome::default()),
        vec![Action::Send(
            3,
            ServerFrame::AuthOk {
                role: "watcher".into(),
                subject: "admin".into(),
                expires_in_ms: 0,
                last_session: None,
            }
        )]
    );
    assert_eq!(hub.identity(2), Some(&robot("r1")));
    assert_eq!(hub.identity(9), None);
    assert_eq!(hub.robot_conn("r1"), Some(2));
    assert_eq!(
        hub.counts(),
        CoreCounts {
            connections: 3,
            rooms: 0,
            room_members: 0
        }
    );
}

#[test]
fn a_refused_auth_is_an_error_then_a_close() {
    assert_eq!(
        HubCore::auth_refused(
            5,
            CloseCode::AuthFailed,
            ErrorCode::TokenExpired,
            "token refused: token_expired"
        ),
        vec![
            err(5, "token_expired", "token refused: token_expired"),
            Action::Close(
                5,
                CloseCode::AuthFailed,
                "token refused: token_expired".into()
            ),
        ]
    );
}

#[test]
fn a_newer_robot_connection_takes_over_the_robot_and_the_older_stays_open() {
    let mut hub = HubCore::new();
    hub.authenticated(1, robot("r1"), Welcome::default());
    let actions = hub.authenticated(2, robot("r1"), Welcome::default());
    assert!(!actions.iter().any(|a| matches!(a, Action::Close(..))));
    assert_eq!(hub.robot_conn("r1"), Some(2));
    assert_eq!(hub.counts().connections, 2);
    // The older one going away does not unmap the newer.
    hub.disconnected(1);
    assert_eq!(hub.robot_conn("r1"), Some(2));
    // Session notices go to the newer.
    assert_eq!(
        hub.session_started("s", "olga", "r1")[1],
        Action::Send(
            2,
            ServerFrame::SessionAssigned {
                session_id: "s".into()
            }
        )
    );
    hub.disconnected(2);
    assert_eq!(hub.robot_conn("r1"), None);
    assert_eq!(hub.counts(), zero());
}

#[test]
fn frames_are_dispatched_to_their_step() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    hub.authenticated(3, watcher(), Welcome::default());
    assert_eq!(
        hub.frame(1, ClientFrame::Auth { token: "t".into() }),
        FrameStep::Done(vec![err(1, "already_authenticated", "auth comes once")])
    );
    assert_eq!(
        hub.frame(1, ClientFrame::Ping),
        FrameStep::Done(vec![Action::Send(1, ServerFrame::Pong)])
    );
    assert_eq!(
        hub.frame(
            1,
            ClientFrame::Join {
                session_id: "s".into()
            }
        ),
        FrameStep::Admit {
            session_id: "s".into(),
            identity: operator("olga", Some("s")),
            side: Side::Operator
        }
    );
    assert_eq!(
        hub.frame(
            3,
            ClientFrame::Join {
                session_id: "s".into()
            }
        ),
        FrameStep::Done(vec![err(3, "forbidden", "watchers do not join sessions")])
    );
    // A connection torn down meanwhile: nothing.
    assert_eq!(
        hub.frame(
            9,
            ClientFrame::Join {
                session_id: "s".into()
            }
        ),
        FrameStep::Done(vec![])
    );
    assert_eq!(hub.frame(1, ClientFrame::Leave), FrameStep::Done(vec![]));
    for f in [
        ClientFrame::Offer { sdp: "v=0".into() },
        ClientFrame::Answer { sdp: "v=0".into() },
        ClientFrame::Candidate {
            candidate: String::new(),
            sdp_mid: None,
            sdp_mline_index: None,
        },
    ] {
        assert_eq!(
            hub.frame(1, f),
            FrameStep::Done(vec![err(1, "not_joined", "join a session first")])
        );
    }
}

#[test]
fn relayed_client_frames_keep_their_fields() {
    let mut hub = paired();
    let step = hub.frame(
        1,
        ClientFrame::Candidate {
            candidate: "candidate:1".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(3),
        },
    );
    assert_eq!(
        step,
        FrameStep::Done(vec![Action::Relay {
            to: 2,
            frame: RelayFrame::Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(3)
            },
            path: RelayPath::Local
        }])
    );
    assert!(matches!(
        hub.frame(2, ClientFrame::Answer { sdp: "v=0".into() }),
        FrameStep::Done(a) if a == vec![Action::Relay {
            to: 1,
            frame: RelayFrame::Answer { sdp: "v=0".into() },
            path: RelayPath::Local
        }]
    ));
}

#[test]
fn two_local_peers_join_and_find_each_other() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    hub.authenticated(2, robot("r1"), Welcome::default());
    let step = hub.join_admitted(1, "s");
    assert_eq!(
        step,
        JoinStep {
            actions: vec![],
            presence: Some(presence("s", Side::Operator, true))
        }
    );
    assert_eq!(
        hub.presence_answers(1, "s", vec![]),
        vec![joined(1, "s", false)]
    );
    let step = hub.join_admitted(2, "s");
    assert_eq!(step.presence, Some(presence("s", Side::Robot, true)));
    // Answers from nodes without the peer change nothing.
    let answers = vec![(7, SignalAnswer::default())];
    assert_eq!(
        hub.presence_answers(2, "s", answers),
        vec![joined(2, "s", true), peer_joined(1, "s")]
    );
    assert_eq!(
        hub.counts(),
        CoreCounts {
            connections: 2,
            rooms: 1,
            room_members: 2
        }
    );
}

#[test]
fn a_denied_join_is_audited_with_its_side_then_refused() {
    let hub = HubCore::new();
    assert_eq!(
        hub.join_denied(
            4,
            "s",
            Side::Robot,
            ErrorCode::Forbidden,
            "that session is for another robot"
        ),
        vec![
            Action::Audit {
                event: AuditEvent::JoinDenied,
                session_id: "s".into(),
                detail: json!({ "code": "forbidden", "side": "robot" })
            },
            err(4, "forbidden", "that session is for another robot"),
        ]
    );
}

#[test]
fn a_rejoin_on_the_same_side_closes_the_older_connection() {
    let mut hub = paired();
    hub.authenticated(3, robot("r1"), Welcome::default());
    let step = hub.join_admitted(3, "s");
    assert_eq!(
        step.actions,
        vec![Action::Close(
            2,
            CloseCode::Replaced,
            "replaced by a newer connection".into()
        )]
    );
    assert_eq!(
        hub.presence_answers(3, "s", vec![]),
        vec![joined(3, "s", true), peer_joined(1, "s")]
    );
    // The replaced connection is in no room; its socket closing tells nobody.
    assert_eq!(
        hub.relay(2, offer()),
        RelayStep::Done(vec![err(2, "not_joined", "join a session first")])
    );
    assert_eq!(hub.disconnected(2), vec![]);
    assert_eq!(hub.counts().room_members, 2);
}

#[test]
fn joining_another_room_tells_the_first_rooms_peer_here_or_on_its_node() {
    let mut hub = paired();
    hub.authenticated(5, operator("olga", None), Welcome::default());
    // An operator token may only be admitted to its own session, but the core does not
    // judge: admission is the shell's. Move operator 1 to `t`.
    let step = hub.join_admitted(1, "t");
    assert_eq!(
        step.actions,
        vec![
            peer_left(2, "s"),
            Action::Broadcast(presence("s", Side::Operator, false))
        ]
    );
    // Robot 2's peer now is on node 9; moving it tells every node, node 9 among them.
    hub.node_signal(9, presence("s", Side::Operator, true));
    let step = hub.join_admitted(2, "u");
    assert_eq!(
        step.actions,
        vec![Action::Broadcast(presence("s", Side::Robot, false))]
    );
}

#[test]
fn a_join_admitted_after_the_connection_was_torn_down_is_dropped() {
    let mut hub = HubCore::new();
    assert_eq!(hub.join_admitted(1, "s"), JoinStep::default());
    hub.authenticated(2, watcher(), Welcome::default());
    assert_eq!(hub.join_admitted(2, "s"), JoinStep::default());
    assert_eq!(hub.presence_answers(1, "s", vec![]), vec![]);
    assert_eq!(hub.counts().rooms, 0);
}

#[test]
fn presence_answers_find_the_peer_on_the_first_node_that_has_it() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    hub.join_admitted(1, "s");
    let answers = vec![
        (
            7,
            SignalAnswer {
                present: vec![Side::Operator],
                delivered: false,
            },
        ),
        (
            8,
            SignalAnswer {
                present: vec![Side::Robot],
                delivered: false,
            },
        ),
        (
            9,
            SignalAnswer {
                present: vec![Side::Robot],
                delivered: false,
            },
        ),
    ];
    assert_eq!(
        hub.presence_answers(1, "s", answers),
        vec![joined(1, "s", true)]
    );
    assert_eq!(
        hub.relay(1, offer()),
        RelayStep::Forward {
            node: 8,
            signal: NodeSignal::Relay {
                session_id: "s".into(),
                to: Side::Robot,
                frame: offer()
            }
        }
    );
}

#[test]
fn presence_answers_for_a_connection_no_longer_in_that_room_do_nothing() {
    let mut hub = HubCore::new();
    hub.authenticated(1, robot("r1"), Welcome::default());
    hub.join_admitted(1, "s");
    // Displaced by the same side joining on node 9 while the broadcast was out.
    let (_, actions) = hub.node_signal(9, presence("s", Side::Robot, true));
    assert_eq!(
        actions,
        vec![Action::Close(
            1,
            CloseCode::Replaced,
            "joined on another node".into()
        )]
    );
    assert_eq!(hub.presence_answers(1, "s", vec![]), vec![]);
    // Or moved to another room.
    hub.join_admitted(1, "t");
    assert_eq!(hub.presence_answers(1, "s", vec![]), vec![]);
    assert_eq!(
        hub.presence_answers(1, "t", vec![]),
        vec![joined(1, "t", false)]
    );
}

#[test]
fn a_peer_that_joined_during_the_broadcast_is_seen() {
    // Robot 2 joined locally while operator 1's presence broadcast was out: the robot's
    // join saw the operator, and the operator's `joined` says the peer is present.
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    hub.authenticated(2, robot("r1"), Welcome::default());
    hub.join_admitted(1, "s");
    hub.join_admitted(2, "s");
    assert_eq!(
        hub.presence_answers(2, "s", vec![]),
        vec![joined(2, "s", true), peer_joined(1, "s")]
    );
    assert_eq!(
        hub.presence_answers(1, "s", vec![]),
        vec![joined(1, "s", true), peer_joined(2, "s")]
    );
}

#[test]
fn relay_is_local_forwarded_or_refused() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    assert_eq!(
        hub.relay(1, offer()),
        RelayStep::Done(vec![err(1, "not_joined", "join a session first")])
    );
    join_alone(&mut hub, 1, "s");
    assert_eq!(
        hub.relay(1, offer()),
        RelayStep::Done(vec![err(
            1,
            "peer_not_present",
            "the other peer is not connected"
        )])
    );
    hub.authenticated(2, robot("r1"), Welcome::default());
    join_alone(&mut hub, 2, "s");
    assert_eq!(
        hub.relay(2, offer()),
        RelayStep::Done(vec![Action::Relay {
            to: 1,
            frame: offer(),
            path: RelayPath::Local
        }])
    );
    hub.leave(2);
    hub.node_signal(4, presence("s", Side::Robot, true));
    assert_eq!(
        hub.relay(1, offer()),
        RelayStep::Forward {
            node: 4,
            signal: NodeSignal::Relay {
                session_id: "s".into(),
                to: Side::Robot,
                frame: offer()
            }
        }
    );
    assert_eq!(hub.relay_result(1, true), vec![]);
    assert_eq!(
        hub.relay_result(1, false),
        vec![err(
            1,
            "relay_failed",
            "the peer's node did not take the frame"
        )]
    );
}

#[test]
fn remote_presence_notifies_the_local_peer_and_answers_what_is_here() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    join_alone(&mut hub, 1, "s");
    let (answer, actions) = hub.node_signal(3, presence("s", Side::Robot, true));
    assert_eq!(
        answer,
        SignalAnswer {
            present: vec![Side::Operator],
            delivered: false
        }
    );
    assert_eq!(actions, vec![peer_joined(1, "s")]);
    // A leave from a node that does not hold that side is ignored.
    let (answer, actions) = hub.node_signal(4, presence("s", Side::Robot, false));
    assert_eq!((answer.present, actions), (vec![Side::Operator], vec![]));
    let (answer, actions) = hub.node_signal(3, presence("s", Side::Robot, false));
    assert_eq!(answer.present, vec![Side::Operator]);
    assert_eq!(actions, vec![peer_left(1, "s")]);
    // A session nobody here is in: nothing present, and the room is remembered.
    let (answer, actions) = hub.node_signal(3, presence("x", Side::Robot, true));
    assert_eq!((answer, actions), (SignalAnswer::default(), vec![]));
    assert_eq!(hub.counts().rooms, 2);
    let (_, actions) = hub.node_signal(3, presence("x", Side::Robot, false));
    assert_eq!(actions, vec![]);
    assert_eq!(hub.counts().rooms, 1);
}

#[test]
fn both_sides_here_answer_both() {
    let hub = &mut paired();
    let (answer, actions) = hub.node_signal(3, presence("s", Side::Robot, false));
    assert_eq!(answer.present, vec![Side::Operator, Side::Robot]);
    assert_eq!(actions, vec![]);
}

#[test]
fn a_relay_from_another_node_is_delivered_to_the_side_it_names() {
    let mut hub = paired();
    let relay = |to| NodeSignal::Relay {
        session_id: "s".into(),
        to,
        frame: offer(),
    };
    let (answer, actions) = hub.node_signal(3, relay(Side::Robot));
    assert_eq!(
        answer,
        SignalAnswer {
            present: vec![],
            delivered: true
        }
    );
    assert_eq!(
        actions,
        vec![Action::Relay {
            to: 2,
            frame: offer(),
            path: RelayPath::FromPeerNode
        }]
    );
    hub.leave(2);
    let (answer, actions) = hub.node_signal(3, relay(Side::Robot));
    assert_eq!((answer.delivered, actions), (false, vec![]));
    let (answer, _) = hub.node_signal(
        3,
        NodeSignal::Relay {
            session_id: "nope".into(),
            to: Side::Operator,
            frame: offer(),
        },
    );
    assert!(!answer.delivered);
}

#[test]
fn leave_and_disconnect_tell_the_peer_and_leave_nothing_behind() {
    let mut hub = paired();
    let left = |side| Action::Broadcast(presence("s", side, false));
    assert_eq!(hub.leave(1), vec![peer_left(2, "s"), left(Side::Operator)]);
    assert_eq!(hub.leave(1), vec![], "a second leave is a no-op");
    assert_eq!(hub.counts().connections, 2, "leave keeps the connection");
    join_alone(&mut hub, 1, "s");
    assert_eq!(
        hub.disconnected(2),
        vec![peer_left(1, "s"), left(Side::Robot)]
    );
    assert_eq!(hub.robot_conn("r1"), None);
    // A peer on another node is told through its node.
    hub.node_signal(6, presence("s", Side::Robot, true));
    assert_eq!(hub.disconnected(1), vec![left(Side::Operator)]);
    // The robot is still on node 6 as far as this node knows, until node 6 says otherwise.
    assert_eq!(hub.counts().rooms, 1);
    assert_eq!(
        hub.node_signal(6, presence("s", Side::Robot, false)).1,
        vec![]
    );
    assert_eq!(hub.counts(), zero());
    assert_eq!(hub.disconnected(1), vec![]);
}

#[test]
fn a_dead_node_is_forgotten_and_its_peers_told() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    join_alone(&mut hub, 1, "s");
    hub.node_signal(6, presence("s", Side::Robot, true));
    hub.node_signal(6, presence("other", Side::Robot, true));
    assert_eq!(hub.node_gone(6), vec![peer_left(1, "s")]);
    assert_eq!(hub.counts().rooms, 1);
    assert_eq!(
        hub.relay(1, offer()),
        RelayStep::Done(vec![err(
            1,
            "peer_not_present",
            "the other peer is not connected"
        )])
    );
}

#[test]
fn a_session_start_is_audited_and_assigned_to_its_robot_if_here() {
    let mut hub = HubCore::new();
    let audit = Action::Audit {
        event: AuditEvent::SessionStarted,
        session_id: "s".into(),
        detail: json!({ "operator": "olga", "robot": "r1" }),
    };
    assert_eq!(hub.session_started("s", "olga", "r1"), vec![audit.clone()]);
    hub.authenticated(2, robot("r1"), Welcome::default());
    assert_eq!(
        hub.session_started("s", "olga", "r1"),
        vec![
            audit,
            Action::Send(
                2,
                ServerFrame::SessionAssigned {
                    session_id: "s".into()
                }
            )
        ]
    );
}

#[test]
fn teardown_closes_every_connection_of_the_session_and_tells_watchers_and_the_owner() {
    let mut hub = paired(); // 1: operator olga joined, 2: robot r1 joined.
    hub.authenticated(3, operator("olga", Some("s")), Welcome::default()); // the token, not joined
    hub.authenticated(4, watcher(), Welcome::default());
    hub.authenticated(5, operator("oscar", None), Welcome::default()); // r1's owner
    hub.authenticated(6, operator("olga", Some("t")), Welcome::default()); // another session
    hub.authenticated(7, robot("r2"), Welcome::default());
    hub.authenticated(8, robot("r1"), Welcome::default()); // a second connection of r1, not joined
    let mut s = ended("s", true);
    s.owner = Some("oscar".into());
    let actions = hub.session_ended(&s, false);
    let mut expected = Vec::new();
    for conn in [1, 2, 3, 8] {
        expected.extend(revoked_then_closed(conn, &s));
    }
    expected.push(notice(4, &s));
    expected.push(notice(5, &s));
    expected.extend(audits(&s, AuditEvent::SessionRevoked, 4));
    expected.extend(left_everywhere("s"));
    assert_eq!(actions, expected);
    assert_eq!(
        hub.counts(),
        CoreCounts {
            connections: 4,
            rooms: 0,
            room_members: 0
        }
    );
    assert_eq!(hub.robot_conn("r1"), None);
    assert_eq!(hub.robot_conn("r2"), Some(7));
    for conn in [1, 2, 3, 8] {
        assert_eq!(hub.identity(conn), None);
        assert_eq!(
            hub.relay(conn, offer()),
            RelayStep::Done(vec![err(conn, "not_joined", "join a session first")])
        );
        // Their sockets closing afterwards tells nobody anything.
        assert_eq!(hub.disconnected(conn), vec![]);
    }
    for conn in [4, 5, 6, 7] {
        hub.disconnected(conn);
    }
    assert_eq!(hub.counts(), zero());
}

#[test]
fn an_owner_who_is_also_a_target_gets_the_notice_before_the_close() {
    let mut hub = paired();
    let mut s = ended("s", false);
    s.owner = Some("olga".into());
    let actions = hub.session_ended(&s, false);
    let terminated = |conn| {
        [
            Action::Send(
                conn,
                ServerFrame::Terminated {
                    session_id: "s".into(),
                    reason: "client_request".into(),
                },
            ),
            Action::Close(conn, CloseCode::Terminated, "client_request".into()),
        ]
    };
    let mut expected = vec![notice(1, &s)];
    expected.extend(terminated(1));
    expected.extend(terminated(2));
    expected.extend(audits(&s, AuditEvent::SessionTerminated, 2));
    expected.extend(left_everywhere("s"));
    assert_eq!(actions, expected);
}

/// The broadcast a teardown with members here ends with.
fn left_everywhere(session_id: &str) -> Vec<Action> {
    vec![Action::Broadcast(NodeSignal::Ended {
        session_id: session_id.into(),
    })]
}

#[test]
fn a_quiet_teardown_with_nothing_here_does_nothing_and_a_loud_one_still_tells() {
    let mut hub = HubCore::new();
    hub.authenticated(4, watcher(), Welcome::default());
    hub.authenticated(6, operator("olga", Some("t")), Welcome::default());
    let s = ended("s", true);
    assert_eq!(hub.session_ended(&s, true), vec![]);
    let mut expected = vec![notice(4, &s)];
    expected.extend(audits(&s, AuditEvent::SessionRevoked, 0));
    assert_eq!(hub.session_ended(&s, false), expected);
    assert_eq!(hub.counts().connections, 2);
}

#[test]
fn a_re_check_of_an_old_session_leaves_a_robot_that_moved_on_to_a_new_one_alone() {
    // Robot 2 is in session `t` now; `s` (the robot's previous session) is re-checked after
    // a snapshot. Before the fix the robot's connection counted as `s`'s and was closed.
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("t")), Welcome::default());
    hub.authenticated(2, robot("r1"), assigned("t"));
    join_alone(&mut hub, 1, "t");
    join_alone(&mut hub, 2, "t");
    let old = EndedSession {
        robot_moved_on: true,
        ..ended("s", false)
    };
    assert_eq!(hub.session_ended(&old, true), vec![]);
    assert_eq!(hub.counts().connections, 2);
    assert_eq!(hub.robot_conn("r1"), Some(2));
    // A robot that has not moved on is the ended session's, joined or not.
    let mut lone = HubCore::new();
    lone.authenticated(5, robot("r1"), Welcome::default());
    let s = ended("s", false);
    let actions = lone.session_ended(&s, true);
    assert!(actions.contains(&Action::Close(
        5,
        CloseCode::Terminated,
        "client_request".into()
    )));
}

#[test]
fn a_quiet_teardown_with_a_connection_here_is_a_full_one() {
    let mut hub = HubCore::new();
    hub.authenticated(3, operator("olga", Some("s")), Welcome::default());
    let s = ended("s", true);
    let mut expected = revoked_then_closed(3, &s).to_vec();
    expected.extend(audits(&s, AuditEvent::SessionRevoked, 1));
    assert_eq!(hub.session_ended(&s, true), expected);
    // Done once: the re-check finds nothing more.
    assert_eq!(hub.session_ended(&s, true), vec![]);
}

#[test]
fn teardown_forgets_the_remote_side_too_and_a_duration_never_goes_negative() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    join_alone(&mut hub, 1, "s");
    hub.node_signal(6, presence("s", Side::Robot, true));
    // A room only known from another node's presence goes too.
    hub.node_signal(6, presence("s2", Side::Robot, true));
    let mut s = ended("s", false);
    s.ended_at_ms = 0;
    hub.authenticated(4, watcher(), Welcome::default());
    let actions = hub.session_ended(&s, false);
    assert!(actions.contains(&Action::Send(
        4,
        ServerFrame::SessionTerminated {
            session_id: "s".into(),
            operator: "olga".into(),
            robot: "r1".into(),
            terminated_at: s.terminated_at.clone(),
            duration_seconds: 0,
            reason: "client_request".into(),
        }
    )));
    assert_eq!(hub.counts().rooms, 1);
    let (_, actions) = hub.node_signal(6, presence("s", Side::Robot, false));
    assert_eq!(actions, vec![]);
    // A quiet teardown with nobody here says nothing, but still frees the room.
    assert_eq!(hub.session_ended(&ended("s2", false), true), vec![]);
    assert_eq!(
        hub.counts(),
        CoreCounts {
            connections: 1,
            rooms: 0,
            room_members: 0
        }
    );
}

#[test]
fn relay_paths_have_their_metric_labels() {
    assert_eq!(RelayPath::Local.as_str(), "local");
    assert_eq!(RelayPath::FromPeerNode.as_str(), "from_peer_node");
}

#[test]
fn counts_return_to_zero_after_a_busy_life() {
    let mut hub = HubCore::new();
    let mut next = 0;
    for round in 0..20u64 {
        let sid = format!("s{}", round % 3);
        let (o, r) = (next + 1, next + 2);
        next += 2;
        hub.authenticated(o, operator("olga", Some(&sid)), Welcome::default());
        hub.authenticated(r, robot("r1"), Welcome::default());
        join_alone(&mut hub, o, &sid);
        join_alone(&mut hub, r, &sid);
        hub.node_signal(round % 4, presence(&sid, Side::Robot, round % 2 == 0));
        match round % 4 {
            0 => {
                hub.session_ended(&ended(&sid, round % 8 == 0), false);
            }
            1 => {
                hub.leave(o);
            }
            _ => {}
        }
        if round % 5 == 4 {
            for c in 1..=next {
                hub.disconnected(c);
            }
        }
    }
    for c in 1..=next {
        hub.disconnected(c);
    }
    for node in 0..4 {
        hub.node_gone(node);
    }
    assert_eq!(hub.counts(), zero());
}

// Credentials on open connections, leases, and rooms that must not outlive their session.

#[test]
fn a_fresh_token_of_the_same_principal_extends_the_connection_and_another_is_refused() {
    let mut hub = paired();
    let mut fresh = robot("r1");
    if let Identity::Robot { token_id, .. } = &mut fresh {
        *token_id = "jti-new".into();
    }
    let (taken, actions) = hub.reauthenticated(2, fresh.clone(), 60_000);
    assert!(taken);
    assert_eq!(
        actions,
        vec![Action::Send(
            2,
            ServerFrame::AuthOk {
                role: "robot".into(),
                subject: "r1".into(),
                expires_in_ms: 60_000,
                last_session: None,
            }
        )]
    );
    assert_eq!(hub.identity(2), Some(&fresh));
    // Another robot's token, or an operator token for another session, is refused.
    let (taken, actions) = hub.reauthenticated(2, robot("r2"), 1);
    assert!(!taken);
    assert!(
        matches!(&actions[..], [Action::Send(2, ServerFrame::Error { code, .. })] if code == "reauth_mismatch")
    );
    let (taken, _) = hub.reauthenticated(1, operator("olga", Some("t")), 1);
    assert!(!taken);
    assert_eq!(hub.identity(2), Some(&fresh), "the old identity stays");
}

#[test]
fn an_expired_token_closes_its_connection_and_the_peer_hears_it_left() {
    let mut hub = paired();
    let actions = hub.token_expired(2);
    assert!(
        matches!(&actions[0], Action::Send(2, ServerFrame::Error { code, .. }) if code == "token_expired")
    );
    assert!(matches!(
        &actions[1],
        Action::Close(2, CloseCode::TokenExpired, _)
    ));
    assert!(actions.contains(&Action::Send(
        1,
        ServerFrame::PeerLeft {
            session_id: "s".into()
        }
    )));
    assert_eq!(hub.identity(2), None);
    assert!(hub.token_expired(2).is_empty(), "once");
}

#[test]
fn a_revoked_credential_closes_robots_watchers_and_owners_but_leaves_sessions_to_teardown() {
    let mut hub = paired();
    hub.authenticated(4, watcher(), Welcome::default());
    hub.authenticated(5, operator("olga", None), Welcome::default()); // olga's login token
                                                                      // The robot's token id.
    let actions = hub.credential_revoked(Credential::TokenId("jti-r1"), "lost robot");
    assert_eq!(
        actions[..2],
        [
            err(2, "credential_revoked", "lost robot"),
            Action::Close(2, CloseCode::CredentialRevoked, "lost robot".into()),
        ]
    );
    assert!(actions.contains(&Action::Send(
        1,
        ServerFrame::PeerLeft {
            session_id: "s".into()
        }
    )));
    assert_eq!(hub.robot_conn("r1"), None);
    // The subject olga: her login connection closes; her session connection (1) is the
    // session teardown's (the same revocation ends her sessions).
    let actions = hub.credential_revoked(Credential::Subject("olga"), "fired");
    let closed: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Close(c, code, _) => Some((*c, *code)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![(5, CloseCode::CredentialRevoked)]);
    assert!(hub.identity(1).is_some());
    // A watcher by subject.
    let actions = hub.credential_revoked(Credential::Subject("admin"), "rotated");
    assert!(actions.contains(&Action::Close(
        4,
        CloseCode::CredentialRevoked,
        "rotated".into()
    )));
    assert!(hub
        .credential_revoked(Credential::TokenId("nobody"), "x")
        .is_empty());
}

#[test]
fn only_a_robots_current_connection_asks_for_leases_and_gets_them() {
    let mut hub = paired();
    let ask = |hub: &mut HubCore, conn| {
        hub.frame(
            conn,
            ClientFrame::LeaseRequest {
                session_id: "s".into(),
                nonce: 7,
            },
        )
    };
    assert_eq!(
        ask(&mut hub, 2),
        FrameStep::Lease {
            robot_id: "r1".into(),
            session_id: "s".into(),
            nonce: 7
        }
    );
    assert!(
        matches!(ask(&mut hub, 1), FrameStep::Done(a) if matches!(&a[..], [Action::Send(1, ServerFrame::Error { code, .. })] if code == "forbidden"))
    );
    let granted = LeaseAsk {
        conn: 2,
        robot_id: "r1".into(),
        session_id: "s".into(),
        nonce: 7,
    };
    assert_eq!(
        hub.lease_granted(&granted, 1000),
        vec![Action::Send(
            2,
            ServerFrame::Lease {
                session_id: "s".into(),
                ttl_ms: 1000,
                nonce: 7
            }
        )]
    );
    // A newer connection of r1 takes over: the old one neither asks nor receives.
    hub.authenticated(9, robot("r1"), Welcome::default());
    assert!(matches!(ask(&mut hub, 2), FrameStep::Done(_)));
    assert!(hub.lease_granted(&granted, 1000).is_empty());
}

#[test]
fn a_teardown_tells_other_nodes_and_late_presence_never_recreates_the_room() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    join_alone(&mut hub, 1, "s");
    // The robot is on node 2.
    hub.node_signal(
        2,
        NodeSignal::Presence {
            session_id: "s".into(),
            side: Side::Robot,
            joined: true,
        },
    );
    let actions = hub.session_ended(&ended("s", true), false);
    assert_eq!(
        actions.last(),
        Some(&Action::Broadcast(NodeSignal::Ended {
            session_id: "s".into()
        }))
    );
    assert_eq!(hub.counts().rooms, 0);
    // Node 2 lags: its robot's presence arrives after the end. No room comes back.
    let (answer, actions) = hub.node_signal(
        2,
        NodeSignal::Presence {
            session_id: "s".into(),
            side: Side::Robot,
            joined: true,
        },
    );
    assert_eq!((answer, actions), (SignalAnswer::default(), vec![]));
    assert_eq!(hub.counts().rooms, 0);
}

#[test]
fn a_node_that_says_a_session_ended_has_its_members_forgotten_silently() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    join_alone(&mut hub, 1, "s");
    hub.node_signal(
        2,
        NodeSignal::Presence {
            session_id: "s".into(),
            side: Side::Robot,
            joined: true,
        },
    );
    let (_, actions) = hub.node_signal(
        2,
        NodeSignal::Ended {
            session_id: "s".into(),
        },
    );
    assert!(
        actions.is_empty(),
        "this node's own teardown tells its members why"
    );
    assert!(matches!(
        hub.relay(1, offer()),
        RelayStep::Done(a) if matches!(&a[..], [Action::Send(1, ServerFrame::Error { code, .. })] if code == "peer_not_present")
    ));
    assert!(hub.has_ended("s"));
}

#[test]
fn a_node_no_longer_a_member_has_its_presences_dropped_and_peers_told() {
    let mut hub = HubCore::new();
    hub.authenticated(1, operator("olga", Some("s")), Welcome::default());
    join_alone(&mut hub, 1, "s");
    hub.node_signal(
        3,
        NodeSignal::Presence {
            session_id: "s".into(),
            side: Side::Robot,
            joined: true,
        },
    );
    assert!(hub.members_now(&[2, 3]).is_empty(), "still a member");
    assert_eq!(
        hub.members_now(&[2]),
        vec![Action::Send(
            1,
            ServerFrame::PeerLeft {
                session_id: "s".into()
            }
        )]
    );
    assert!(
        matches!(
            hub.relay(1, offer()),
            RelayStep::Done(a) if matches!(&a[..], [Action::Send(1, ServerFrame::Error { code, .. })] if code == "peer_not_present")
        ),
        "no relay waits on the gone node"
    );
}
