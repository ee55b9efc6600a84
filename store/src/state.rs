//! The revocation state machine: pure, no I/O, no clock.
//!
//! [`ReplicatedState::apply`] turns a [`Command`] into a [`Response`] and the list of
//! [`Mutation`]s the storage layer must persist. The same state answers the deny check (S1)
//! from memory, so a join is refused without touching disk or network.

use crate::model::{
    Command, Response, Revocation, RevocationKind, Session, SessionState, UnixMillis,
    SESSION_RETENTION_MS,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// A change the storage layer must make durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Store (or overwrite) this entry.
    Put(Revocation),
    /// Remove the entry for this key.
    Delete(RevocationKind, String),
    /// Store (or overwrite) this session.
    PutSession(Session),
    /// Remove this session.
    DeleteSession(String),
}

/// What applying the log changed about sessions, for the nodes' signaling (S4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session started.
    Started(Session),
    /// A session ended (terminated or revoked).
    Ended(Session),
    /// A snapshot replaced the state: re-check every session.
    Reset,
}

/// The session events one applied command's response carries: the apply function's second
/// output, which the nodes' teardown (S4) consumes.
pub fn session_events(response: &Response) -> Vec<SessionEvent> {
    let mut out = Vec::new();
    collect_session_events(response, &mut out);
    out
}

fn collect_session_events(response: &Response, out: &mut Vec<SessionEvent>) {
    match response {
        Response::SessionStarted(s) => out.push(SessionEvent::Started(s.clone())),
        Response::SessionEnded(s) => out.push(SessionEvent::Ended(s.clone())),
        Response::Revoked { ended, .. } => {
            out.extend(ended.iter().cloned().map(SessionEvent::Ended))
        }
        Response::Batch(responses) => responses
            .iter()
            .for_each(|r| collect_session_events(r, out)),
        _ => {}
    }
}

/// Every live revocation, indexed by key and by expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicatedState {
    entries: BTreeMap<(RevocationKind, String), Revocation>,
    by_expiry: BTreeSet<(UnixMillis, RevocationKind, String)>,
    counts: [usize; 3],
    sessions: BTreeMap<String, Session>,
    /// The active session of each busy robot.
    active_by_robot: HashMap<String, String>,
    /// Ended sessions by the instant they may be dropped.
    sessions_by_expiry: BTreeSet<(UnixMillis, String)>,
}

impl ReplicatedState {
    /// Applies one command.
    pub fn apply(&mut self, command: &Command) -> (Response, Vec<Mutation>) {
        match command {
            Command::Revoke {
                kind,
                target,
                reason,
                revoked_by,
                at,
                expires_at,
            } => {
                let entry = Revocation {
                    kind: *kind,
                    target: target.clone(),
                    revoked_at: *at,
                    reason: reason.clone(),
                    revoked_by: revoked_by.clone(),
                    expires_at: *expires_at,
                };
                let (entry, created, mut mutations) = self.revoke(entry);
                let ended = self.end_revoked_sessions(*kind, target, reason, *at);
                mutations.extend(ended.iter().cloned().map(Mutation::PutSession));
                (
                    Response::Revoked {
                        entry,
                        created,
                        ended,
                    },
                    mutations,
                )
            }
            Command::Lift { operator, .. } => {
                match self.remove(RevocationKind::Operator, operator) {
                    Some(entry) => (
                        Response::Lifted(Some(entry)),
                        vec![Mutation::Delete(RevocationKind::Operator, operator.clone())],
                    ),
                    None => (Response::Lifted(None), vec![]),
                }
            }
            Command::Expire { now } => {
                let due: Vec<_> = self
                    .by_expiry
                    .range(..=(*now, RevocationKind::Operator, String::from('\u{10FFFF}')))
                    .map(|(_, kind, target)| (*kind, target.clone()))
                    .collect();
                let mutations: Vec<_> = due
                    .into_iter()
                    .filter_map(|(kind, target)| {
                        self.remove(kind, &target)
                            .map(|_| Mutation::Delete(kind, target))
                    })
                    .collect();
                let dropped: Vec<_> = self
                    .sessions_by_expiry
                    .range(..=(*now, String::from('\u{10FFFF}')))
                    .cloned()
                    .collect();
                let mut mutations = mutations;
                let revocations = mutations.len() as u64;
                for key in dropped {
                    self.sessions_by_expiry.remove(&key);
                    self.sessions.remove(&key.1);
                    mutations.push(Mutation::DeleteSession(key.1));
                }
                (Response::Expired(revocations), mutations)
            }
            Command::StartSession { .. } => self.start_session(command),
            Command::EndSession { id, operator, at } => match self.sessions.get(id) {
                None => refuse("session_not_found", format!("no session {id}")),
                Some(s) if s.operator != *operator => {
                    refuse("unauthorized", format!("session {id} is not yours"))
                }
                Some(s) if s.state != SessionState::Active => refuse(
                    "session_already_terminated",
                    format!("session {id} already ended"),
                ),
                Some(_) => {
                    let ended = self
                        .end_session(id, SessionState::Terminated, "client_request", *at)
                        .expect("checked active");
                    (
                        Response::SessionEnded(ended.clone()),
                        vec![Mutation::PutSession(ended)],
                    )
                }
            },
            Command::Batch(commands) => {
                let mut responses = Vec::with_capacity(commands.len());
                let mut mutations = Vec::new();
                for command in commands {
                    let (response, changes) = self.apply(command);
                    responses.push(response);
                    mutations.extend(changes);
                }
                (Response::Batch(responses), mutations)
            }
        }
    }

    /// Stores a proposed revocation idempotently: an existing entry stands (its expiry may
    /// only grow). Returns the entry as it stands, whether it is new, and what to persist.
    fn revoke(&mut self, proposed: Revocation) -> (Revocation, bool, Vec<Mutation>) {
        let key = (proposed.kind, proposed.target.clone());
        if let Some(existing) = self.entries.get(&key) {
            let extended = later_expiry(existing.expires_at, proposed.expires_at);
            if extended == existing.expires_at {
                return (existing.clone(), false, vec![]);
            }
            let mut entry = existing.clone();
            entry.expires_at = extended;
            self.insert(entry.clone());
            return (entry.clone(), false, vec![Mutation::Put(entry)]);
        }
        self.insert(proposed.clone());
        (proposed.clone(), true, vec![Mutation::Put(proposed)])
    }

    /// Ends every active session the revocation of `kind`/`target` covers.
    fn end_revoked_sessions(
        &mut self,
        kind: RevocationKind,
        target: &str,
        reason: &str,
        at: UnixMillis,
    ) -> Vec<Session> {
        let hit: Vec<String> = self
            .active_by_robot
            .values()
            .filter(|sid| {
                self.sessions.get(*sid).is_some_and(|s| match kind {
                    RevocationKind::Session => s.id == target,
                    RevocationKind::Token => s.token_id == target,
                    RevocationKind::Operator => s.operator == target,
                })
            })
            .cloned()
            .collect();
        hit.into_iter()
            .filter_map(|sid| self.end_session(&sid, SessionState::Revoked, reason, at))
            .collect()
    }

    fn end_session(
        &mut self,
        sid: &str,
        state: SessionState,
        reason: &str,
        at: UnixMillis,
    ) -> Option<Session> {
        let session = self.sessions.get_mut(sid)?;
        if session.state != SessionState::Active {
            return None;
        }
        session.state = state;
        session.ended_at = Some(at);
        session.end_reason = Some(reason.to_owned());
        let session = session.clone();
        self.active_by_robot.remove(&session.robot);
        self.sessions_by_expiry
            .insert((at + SESSION_RETENTION_MS, session.id.clone()));
        Some(session)
    }

    fn start_session(&mut self, command: &Command) -> (Response, Vec<Mutation>) {
        let Command::StartSession {
            id,
            operator,
            robot,
            token_id,
            node,
            at,
        } = command
        else {
            unreachable!("start_session() is called with Command::StartSession");
        };
        if self.sessions.contains_key(id) {
            return refuse("conflict", format!("session {id} exists"));
        }
        if let Some(r) = self.denial(None, None, Some(operator)) {
            return refuse(
                "operator_revoked",
                format!("operator {operator} is revoked: {}", r.reason),
            );
        }
        if let Some(busy) = self.active_by_robot.get(robot) {
            return refuse(
                "robot_busy",
                format!("robot {robot} is controlled by session {busy}"),
            );
        }
        let session = Session {
            id: id.clone(),
            operator: operator.clone(),
            robot: robot.clone(),
            token_id: token_id.clone(),
            node: *node,
            created_at: *at,
            state: SessionState::Active,
            ended_at: None,
            end_reason: None,
        };
        self.insert_session(session.clone());
        (
            Response::SessionStarted(session.clone()),
            vec![Mutation::PutSession(session)],
        )
    }

    /// Inserts a session loaded from storage (or from a snapshot).
    pub fn insert_session(&mut self, session: Session) {
        match session.ended_at {
            None => {
                self.active_by_robot
                    .insert(session.robot.clone(), session.id.clone());
            }
            Some(at) => {
                self.sessions_by_expiry
                    .insert((at + SESSION_RETENTION_MS, session.id.clone()));
            }
        }
        self.sessions.insert(session.id.clone(), session);
    }

    /// One session.
    pub fn session(&self, sid: &str) -> Option<&Session> {
        self.sessions.get(sid)
    }

    /// Every session, by id.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// The active session of a robot.
    pub fn active_session_of(&self, robot: &str) -> Option<&Session> {
        self.sessions.get(self.active_by_robot.get(robot)?)
    }

    /// Inserts an entry loaded from storage (or from a snapshot).
    pub fn insert(&mut self, entry: Revocation) {
        let key = (entry.kind, entry.target.clone());
        if let Some(old) = self.entries.get(&key) {
            if let Some(at) = old.expires_at {
                self.by_expiry.remove(&(at, old.kind, old.target.clone()));
            }
        }
        if let Some(at) = entry.expires_at {
            self.by_expiry
                .insert((at, entry.kind, entry.target.clone()));
        }
        let kind = entry.kind;
        if self.entries.insert(key, entry).is_none() {
            self.counts[kind as usize] += 1;
        }
    }

    fn remove(&mut self, kind: RevocationKind, target: &str) -> Option<Revocation> {
        let entry = self.entries.remove(&(kind, target.to_owned()))?;
        self.counts[kind as usize] -= 1;
        if let Some(at) = entry.expires_at {
            self.by_expiry.remove(&(at, kind, target.to_owned()));
        }
        Some(entry)
    }

    /// The entry for one key.
    pub fn get(&self, kind: RevocationKind, target: &str) -> Option<&Revocation> {
        // BTreeMap needs an owned tuple to borrow-compare; the allocation is a few bytes.
        self.entries.get(&(kind, target.to_owned()))
    }

    /// The first revocation that denies a session with these identifiers, if any (S1).
    pub fn denial(
        &self,
        session_id: Option<&str>,
        token_id: Option<&str>,
        operator: Option<&str>,
    ) -> Option<&Revocation> {
        [
            (RevocationKind::Session, session_id),
            (RevocationKind::Token, token_id),
            (RevocationKind::Operator, operator),
        ]
        .into_iter()
        .find_map(|(kind, id)| id.and_then(|id| self.get(kind, id)))
    }

    /// A page of entries in key order, optionally of one kind, strictly after `after`.
    pub fn list(
        &self,
        kind: Option<RevocationKind>,
        after: Option<(RevocationKind, String)>,
        limit: usize,
    ) -> Vec<Revocation> {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.entries
            .range((start, Bound::Unbounded))
            .map(|(_, e)| e)
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Revocation> {
        self.entries.values()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many entries of one kind there are.
    pub fn count(&self, kind: RevocationKind) -> usize {
        self.counts[kind as usize]
    }

    /// The earliest instant at which the cleanup has something to drop.
    pub fn next_expiry(&self) -> Option<UnixMillis> {
        let revocation = self.by_expiry.first().map(|(at, _, _)| *at);
        let session = self.sessions_by_expiry.first().map(|(at, _)| *at);
        revocation.into_iter().chain(session).min()
    }
}

/// A refused session command: nothing changes.
fn refuse(code: &str, message: String) -> (Response, Vec<Mutation>) {
    (
        Response::SessionRefused {
            code: code.into(),
            message,
        },
        vec![],
    )
}

/// `None` means "never expires", which is later than any instant.
fn later_expiry(a: Option<UnixMillis>, b: Option<UnixMillis>) -> Option<UnixMillis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// A shared, read-mostly handle on the applied state: the state machine writes, everything
/// else reads.
#[derive(Clone, Debug, Default)]
pub struct StateView(Arc<RwLock<ReplicatedState>>);

impl StateView {
    /// Reads the state. Holders must not block or await while holding the guard.
    pub fn read(&self) -> RwLockReadGuard<'_, ReplicatedState> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the state: for the state machine store alone (`tether-store-rocks`), which
    /// applies committed entries and installs snapshots.
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, ReplicatedState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoke(kind: RevocationKind, target: &str, at: u64, exp: Option<u64>) -> Command {
        Command::Revoke {
            kind,
            target: target.into(),
            reason: "r".into(),
            revoked_by: "admin".into(),
            at,
            expires_at: exp,
        }
    }

    #[test]
    fn revoking_twice_is_idempotent_and_keeps_the_first_entry() {
        let mut s = ReplicatedState::default();
        let (r1, m1) = s.apply(&revoke(RevocationKind::Session, "s1", 10, Some(100)));
        assert!(matches!(r1, Response::Revoked { created: true, .. }));
        assert_eq!(m1.len(), 1);
        let mut again = revoke(RevocationKind::Session, "s1", 20, Some(50));
        if let Command::Revoke { reason, .. } = &mut again {
            *reason = "other".into();
        }
        let (r2, m2) = s.apply(&again);
        let Response::Revoked { entry, created, .. } = r2 else {
            panic!("unexpected {r2:?}")
        };
        assert!(!created);
        assert_eq!(entry.revoked_at, 10);
        assert_eq!(entry.reason, "r");
        assert_eq!(entry.expires_at, Some(100));
        assert!(m2.is_empty(), "nothing to persist");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn revoking_again_with_a_later_expiry_extends_it() {
        let mut s = ReplicatedState::default();
        s.apply(&revoke(RevocationKind::Token, "j", 10, Some(100)));
        let (_, m) = s.apply(&revoke(RevocationKind::Token, "j", 20, Some(200)));
        assert_eq!(m.len(), 1);
        assert_eq!(
            s.get(RevocationKind::Token, "j").unwrap().expires_at,
            Some(200)
        );
        s.apply(&revoke(RevocationKind::Token, "j", 30, None));
        assert_eq!(s.get(RevocationKind::Token, "j").unwrap().expires_at, None);
        // The old expiry no longer drops it.
        s.apply(&Command::Expire { now: 1_000 });
        assert!(s.get(RevocationKind::Token, "j").is_some());
    }

    #[test]
    fn expiry_drops_exactly_the_due_entries_deterministically() {
        let cmds = vec![
            revoke(RevocationKind::Session, "a", 1, Some(10)),
            revoke(RevocationKind::Token, "b", 1, Some(20)),
            revoke(RevocationKind::Operator, "c", 1, None),
            revoke(RevocationKind::Session, "d", 1, Some(10)),
            Command::Expire { now: 10 },
        ];
        let mut x = ReplicatedState::default();
        let mut y = ReplicatedState::default();
        let mut last = Response::None;
        for c in &cmds {
            last = x.apply(c).0;
            y.apply(c);
        }
        assert_eq!(last, Response::Expired(2));
        assert_eq!(x, y, "two replicas applying one log agree");
        assert!(x.get(RevocationKind::Session, "a").is_none());
        assert!(x.get(RevocationKind::Session, "d").is_none());
        assert!(x.get(RevocationKind::Token, "b").is_some());
        assert!(x.get(RevocationKind::Operator, "c").is_some());
        let (r, m) = x.apply(&Command::Expire { now: 20 });
        assert_eq!(r, Response::Expired(1));
        assert_eq!(m, vec![Mutation::Delete(RevocationKind::Token, "b".into())]);
    }

    #[test]
    fn a_batch_applies_in_order_like_its_commands_one_by_one() {
        let cmds = vec![
            revoke(RevocationKind::Session, "a", 1, Some(10)),
            revoke(RevocationKind::Session, "a", 2, Some(30)),
            revoke(RevocationKind::Operator, "o", 3, None),
            Command::Lift {
                operator: "o".into(),
                lifted_by: "admin".into(),
            },
        ];
        let mut one_by_one = ReplicatedState::default();
        let singles: Vec<_> = cmds.iter().map(|c| one_by_one.apply(c).0).collect();
        let mut batched = ReplicatedState::default();
        let (response, mutations) = batched.apply(&Command::Batch(cmds));
        assert_eq!(response, Response::Batch(singles));
        assert_eq!(batched, one_by_one);
        assert_eq!(mutations.len(), 4, "put, extend, put, delete");
    }

    #[test]
    fn lifting_removes_only_operator_revocations() {
        let mut s = ReplicatedState::default();
        s.apply(&revoke(RevocationKind::Operator, "op", 1, None));
        s.apply(&revoke(RevocationKind::Session, "op", 1, None));
        let lift = Command::Lift {
            operator: "op".into(),
            lifted_by: "admin".into(),
        };
        let (r, _) = s.apply(&lift);
        assert!(matches!(r, Response::Lifted(Some(_))));
        assert!(s.get(RevocationKind::Operator, "op").is_none());
        assert!(s.get(RevocationKind::Session, "op").is_some());
        assert_eq!(s.apply(&lift).0, Response::Lifted(None));
    }

    #[test]
    fn denial_checks_sid_jti_and_operator() {
        let mut s = ReplicatedState::default();
        assert!(s.denial(Some("s"), Some("j"), Some("o")).is_none());
        s.apply(&revoke(RevocationKind::Operator, "o", 1, None));
        assert_eq!(
            s.denial(Some("s"), Some("j"), Some("o")).unwrap().kind,
            RevocationKind::Operator
        );
        assert!(s.denial(Some("s"), Some("j"), Some("p")).is_none());
        s.apply(&revoke(RevocationKind::Token, "j", 1, None));
        assert_eq!(
            s.denial(Some("s"), Some("j"), None).unwrap().kind,
            RevocationKind::Token
        );
    }

    #[test]
    fn listing_pages_in_key_order_and_filters_by_kind() {
        let mut s = ReplicatedState::default();
        for i in 0..5 {
            s.apply(&revoke(RevocationKind::Session, &format!("s{i}"), 1, None));
            s.apply(&revoke(RevocationKind::Token, &format!("t{i}"), 1, None));
        }
        let page1 = s.list(Some(RevocationKind::Session), None, 3);
        assert_eq!(page1.len(), 3);
        let last = page1.last().unwrap();
        let page2 = s.list(
            Some(RevocationKind::Session),
            Some((last.kind, last.target.clone())),
            3,
        );
        assert_eq!(page2.len(), 2);
        assert!(page2.iter().all(|e| e.kind == RevocationKind::Session));
        assert_eq!(s.list(None, None, 100).len(), 10);
        assert_eq!(s.count(RevocationKind::Token), 5);
    }

    fn start(id: &str, operator: &str, robot: &str) -> Command {
        Command::StartSession {
            id: id.into(),
            operator: operator.into(),
            robot: robot.into(),
            token_id: format!("jti-{id}"),
            node: 1,
            at: 100,
        }
    }

    #[test]
    fn one_active_session_per_robot_and_revoked_operators_are_refused() {
        let mut s = ReplicatedState::default();
        assert!(matches!(
            s.apply(&start("s1", "alice", "r1")).0,
            Response::SessionStarted(_)
        ));
        let code = |r: Response| match r {
            Response::SessionRefused { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(code(s.apply(&start("s2", "bob", "r1")).0), "robot_busy");
        assert_eq!(code(s.apply(&start("s1", "bob", "r2")).0), "conflict");
        s.apply(&revoke(RevocationKind::Operator, "carol", 1, None));
        assert_eq!(
            code(s.apply(&start("s3", "carol", "r2")).0),
            "operator_revoked"
        );
        assert_eq!(s.active_session_of("r1").unwrap().id, "s1");
    }

    #[test]
    fn ending_a_session_checks_owner_existence_and_state() {
        let mut s = ReplicatedState::default();
        s.apply(&start("s1", "alice", "r1"));
        let end = |id: &str, op: &str| Command::EndSession {
            id: id.into(),
            operator: op.into(),
            at: 1_000,
        };
        let code = |r: Response| match r {
            Response::SessionRefused { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(code(s.apply(&end("nope", "alice")).0), "session_not_found");
        assert_eq!(code(s.apply(&end("s1", "bob")).0), "unauthorized");
        let (r, m) = s.apply(&end("s1", "alice"));
        let Response::SessionEnded(ended) = r else {
            panic!()
        };
        assert_eq!(ended.state, SessionState::Terminated);
        assert_eq!(ended.end_reason.as_deref(), Some("client_request"));
        assert_eq!(m.len(), 1);
        assert_eq!(
            code(s.apply(&end("s1", "alice")).0),
            "session_already_terminated"
        );
        assert!(
            s.active_session_of("r1").is_none(),
            "the robot is free again"
        );
        assert!(matches!(
            s.apply(&start("s2", "bob", "r1")).0,
            Response::SessionStarted(_)
        ));
    }

    #[test]
    fn revoking_by_sid_jti_or_operator_ends_the_covered_sessions() {
        for (kind, target) in [
            (RevocationKind::Session, "s1"),
            (RevocationKind::Token, "jti-s1"),
            (RevocationKind::Operator, "alice"),
        ] {
            let mut s = ReplicatedState::default();
            s.apply(&start("s1", "alice", "r1"));
            s.apply(&start("s2", "bob", "r2"));
            let (r, _) = s.apply(&revoke(kind, target, 500, None));
            let Response::Revoked { ended, .. } = r else {
                panic!()
            };
            assert_eq!(ended.len(), 1, "{kind:?}");
            assert_eq!(ended[0].id, "s1");
            assert_eq!(ended[0].state, SessionState::Revoked);
            assert_eq!(s.session("s2").unwrap().state, SessionState::Active);
            // Revoking again ends nothing more.
            let (r, _) = s.apply(&revoke(kind, target, 600, None));
            assert!(matches!(r, Response::Revoked { ended, .. } if ended.is_empty()));
        }
    }

    #[test]
    fn ended_sessions_are_dropped_after_the_retention() {
        let mut s = ReplicatedState::default();
        s.apply(&start("s1", "alice", "r1"));
        s.apply(&revoke(RevocationKind::Session, "s1", 1_000, Some(2_000)));
        assert_eq!(s.next_expiry(), Some(2_000));
        s.apply(&Command::Expire { now: 2_000 });
        assert!(s.session("s1").is_some(), "kept for the retention period");
        let (_, m) = s.apply(&Command::Expire {
            now: 1_000 + SESSION_RETENTION_MS,
        });
        assert_eq!(m, vec![Mutation::DeleteSession("s1".into())]);
        assert!(s.session("s1").is_none());
    }
}
