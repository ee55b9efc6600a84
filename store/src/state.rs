//! The revocation and session state machine: pure, no I/O, no clock.
//!
//! [`ReplicatedState::apply`] turns a [`Command`] into a [`Response`] and the list of
//! [`Mutation`]s the storage layer must persist. The same state answers the deny check (S1)
//! from memory, so a join is refused without touching disk or network.

use crate::model::{
    AppliedRequest, Command, Response, Revocation, RevocationKind, Session, SessionState,
    UnixMillis, REQUEST_RETENTION_MS,
};
use crate::requests::Requests;
use crate::sessions::Sessions;
use std::collections::{BTreeMap, BTreeSet};
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
    /// Remember (or overwrite) this applied request, keyed by its id.
    PutRequest(AppliedRequest),
    /// Forget this request id.
    DeleteRequest(String),
}

/// What applying the log changed that the nodes' signaling acts on (S4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A session started.
    Started(Session),
    /// A session ended (terminated or revoked).
    Ended(Session),
    /// A revocation was applied (created, extended or confirmed): close the connections
    /// whose token id, session or subject it covers. Idempotent on the receiving side.
    Revoked(Revocation),
    /// A snapshot replaced the state: re-check every session.
    Reset,
}

/// The events one applied command's response carries: the apply function's second output,
/// which the nodes' teardown (S4) consumes. A revocation's [`SessionEvent::Revoked`] comes
/// before the [`SessionEvent::Ended`] of the sessions it ended. A [`Response::Replayed`]
/// yields nothing: its request's first application already published its events, and a
/// retry must not end (or start) anything twice.
pub fn session_events(response: &Response) -> Vec<SessionEvent> {
    let mut out = Vec::new();
    collect_session_events(response, &mut out);
    out
}

fn collect_session_events(response: &Response, out: &mut Vec<SessionEvent>) {
    match response {
        Response::SessionStarted(s) => out.push(SessionEvent::Started(s.clone())),
        Response::SessionEnded(s) => out.push(SessionEvent::Ended(s.clone())),
        Response::Revoked { entry, ended, .. } => {
            out.push(SessionEvent::Revoked(entry.clone()));
            out.extend(ended.iter().cloned().map(SessionEvent::Ended))
        }
        Response::Batch(responses) => responses
            .iter()
            .for_each(|r| collect_session_events(r, out)),
        Response::Replayed(_) => {}
        Response::None
        | Response::Lifted(_)
        | Response::Expired(_)
        | Response::SessionRefused { .. } => {}
    }
}

/// Every live revocation (indexed by key and by expiry), every retained session and every
/// remembered request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicatedState {
    entries: BTreeMap<(RevocationKind, String), Revocation>,
    by_expiry: BTreeSet<(UnixMillis, RevocationKind, String)>,
    counts: [usize; 3],
    sessions: Sessions,
    requests: Requests,
}

impl ReplicatedState {
    /// Applies one command.
    pub fn apply(&mut self, command: &Command) -> (Response, Vec<Mutation>) {
        match command {
            Command::Revoke {
                kind,
                target,
                reason,
                at,
                ..
            } => {
                let proposed = command.proposed_revocation().expect("a revoke");
                let (entry, created, mut mutations) = self.revoke(proposed);
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
                    .iter()
                    .take_while(|(at, _, _)| at <= now)
                    .map(|(_, kind, target)| (*kind, target.clone()))
                    .collect();
                let mut mutations: Vec<_> = due
                    .into_iter()
                    .filter_map(|(kind, target)| {
                        self.remove(kind, &target)
                            .map(|_| Mutation::Delete(kind, target))
                    })
                    .collect();
                let revocations = mutations.len() as u64;
                let sessions = self.sessions.drop_due(*now);
                mutations.extend(sessions.into_iter().map(Mutation::DeleteSession));
                let requests = self.requests.drop_due(*now);
                mutations.extend(requests.into_iter().map(Mutation::DeleteRequest));
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
                        .sessions
                        .end(id, SessionState::Terminated, "client_request", *at)
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
            Command::Once {
                request,
                at,
                command,
            } => {
                if let Some(first) = self.requests.get(request) {
                    return (Response::Replayed(Box::new(first.response.clone())), vec![]);
                }
                let (response, mut mutations) = self.apply(command);
                let applied = AppliedRequest {
                    request: request.clone(),
                    expires_at: at.saturating_add(REQUEST_RETENTION_MS),
                    response: response.clone(),
                };
                self.requests.insert(applied.clone());
                mutations.push(Mutation::PutRequest(applied));
                (response, mutations)
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

    /// Ends every active session the revocation of `kind`/`target` covers, in robot order.
    fn end_revoked_sessions(
        &mut self,
        kind: RevocationKind,
        target: &str,
        reason: &str,
        at: UnixMillis,
    ) -> Vec<Session> {
        let hit: Vec<String> = self
            .sessions
            .active()
            .filter(|s| match kind {
                RevocationKind::Session => s.id == target,
                RevocationKind::Token => s.token_id == target,
                RevocationKind::Operator => s.operator == target,
            })
            .map(|s| s.id.clone())
            .collect();
        hit.into_iter()
            .filter_map(|sid| self.sessions.end(&sid, SessionState::Revoked, reason, at))
            .collect()
    }

    fn start_session(&mut self, command: &Command) -> (Response, Vec<Mutation>) {
        let Command::StartSession {
            id,
            operator,
            robot,
            token_id,
            login_token_id,
            node,
            at,
        } = command
        else {
            unreachable!("start_session() is called with Command::StartSession");
        };
        if self.sessions.get(id).is_some() {
            return refuse("conflict", format!("session {id} exists"));
        }
        if let Some(r) = self.denial(None, None, Some(operator)) {
            return refuse(
                "operator_revoked",
                format!("operator {operator} is revoked: {}", r.reason),
            );
        }
        if let Some(r) = self.denial(None, login_token_id.as_deref(), None) {
            return refuse(
                "credential_revoked",
                format!("the login token {} is revoked: {}", r.target, r.reason),
            );
        }
        if let Some(busy) = self.sessions.active_id_of(robot) {
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
        self.sessions.insert(session.clone());
        (
            Response::SessionStarted(session.clone()),
            vec![Mutation::PutSession(session)],
        )
    }

    /// Inserts (or replaces) a session loaded from storage (or from a snapshot), in any
    /// state and in any order.
    pub fn insert_session(&mut self, session: Session) {
        self.sessions.insert(session);
    }

    /// One session.
    pub fn session(&self, sid: &str) -> Option<&Session> {
        self.sessions.get(sid)
    }

    /// Every retained session, by id.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter()
    }

    /// How many sessions are retained.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The active session of a robot.
    pub fn active_session_of(&self, robot: &str) -> Option<&Session> {
        self.sessions.get(self.sessions.active_id_of(robot)?)
    }

    /// The robot's most recent retained session, active or ended: the greatest
    /// `created_at`, ties broken by the greatest id. What a (re)connecting robot is told
    /// about the outcome of its last session.
    pub fn latest_session_of(&self, robot: &str) -> Option<&Session> {
        self.sessions.latest_of(robot)
    }

    /// Remembers (or replaces) an applied request loaded from storage (or from a snapshot).
    pub fn insert_request(&mut self, applied: AppliedRequest) {
        self.requests.insert(applied);
    }

    /// The remembered request with this id.
    pub fn request(&self, request: &str) -> Option<&AppliedRequest> {
        self.requests.get(request)
    }

    /// Every remembered request, by id.
    pub fn requests(&self) -> impl Iterator<Item = &AppliedRequest> {
        self.requests.iter()
    }

    /// How many requests are remembered.
    pub fn request_count(&self) -> usize {
        self.requests.len()
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

    /// The earliest instant at which the cleanup has something to drop: a revocation, an
    /// ended session or a remembered request.
    pub fn next_expiry(&self) -> Option<UnixMillis> {
        let revocation = self.by_expiry.first().map(|(at, _, _)| *at);
        [
            revocation,
            self.sessions.next_expiry(),
            self.requests.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
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
    use crate::model::SESSION_RETENTION_MS;

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
            login_token_id: None,
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

    fn end(id: &str, operator: &str, at: u64) -> Command {
        Command::EndSession {
            id: id.into(),
            operator: operator.into(),
            at,
        }
    }

    fn refused_code(r: &Response) -> &str {
        match r.original() {
            Response::SessionRefused { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_retried_start_session_answers_the_same_session_and_leaves_the_robot_to_it() {
        let mut s = ReplicatedState::default();
        let once = Command::once("req-1", 100, start("s1", "alice", "r1"));
        let (first, m1) = s.apply(&once);
        assert!(matches!(&first, Response::SessionStarted(x) if x.id == "s1"));
        assert!(matches!(m1.last(), Some(Mutation::PutRequest(r)) if r.request == "req-1"));
        let (again, m2) = s.apply(&once);
        assert_eq!(again, Response::Replayed(Box::new(first.clone())));
        assert_eq!(again.original(), &first, "same answer, not `conflict`");
        assert!(again.is_replay());
        assert!(m2.is_empty(), "a replay changes nothing");
        assert!(session_events(&again).is_empty(), "nothing starts twice");
        assert_eq!(s.active_session_of("r1").unwrap().id, "s1");
        assert_eq!(s.session_count(), 1);
        // Without the request id the same command is a conflict, as before.
        assert_eq!(
            refused_code(&s.apply(&start("s1", "alice", "r1")).0),
            "conflict"
        );
    }

    #[test]
    fn a_retried_end_session_answers_session_ended_and_a_new_request_is_refused() {
        let mut s = ReplicatedState::default();
        s.apply(&start("s1", "alice", "r1"));
        let once = Command::once("req-end", 1_000, end("s1", "alice", 1_000));
        let (first, _) = s.apply(&once);
        assert!(matches!(first, Response::SessionEnded(_)));
        let (again, m) = s.apply(&once);
        assert!(matches!(again.original(), Response::SessionEnded(x) if x.id == "s1"));
        assert!(m.is_empty());
        assert!(
            session_events(&again).is_empty(),
            "the end is not published twice"
        );
        // A genuinely new request behaves as before.
        let other = Command::once("req-end-2", 1_001, end("s1", "alice", 1_001));
        let (r, _) = s.apply(&other);
        assert!(!r.is_replay());
        assert_eq!(refused_code(&r), "session_already_terminated");
    }

    #[test]
    fn a_retried_revoke_answers_created_like_the_first_and_ends_nothing_again() {
        let mut s = ReplicatedState::default();
        s.apply(&start("s1", "alice", "r1"));
        let once = Command::once(
            "req-rv",
            500,
            revoke(RevocationKind::Operator, "alice", 500, None),
        );
        let (first, _) = s.apply(&once);
        assert!(
            matches!(&first, Response::Revoked { created: true, ended, .. } if ended.len() == 1)
        );
        let (again, m) = s.apply(&once);
        assert_eq!(
            again.original(),
            &first,
            "created: true, the same ended sessions"
        );
        assert!(m.is_empty());
        assert!(
            session_events(&again).is_empty(),
            "no second Revoked, no second Ended"
        );
    }

    #[test]
    fn a_retried_lift_does_not_delete_a_revocation_acknowledged_after_it() {
        let mut s = ReplicatedState::default();
        s.apply(&revoke(RevocationKind::Operator, "op", 1, None));
        let lift = Command::once(
            "req-lift",
            2,
            Command::Lift {
                operator: "op".into(),
                lifted_by: "admin".into(),
            },
        );
        assert!(matches!(s.apply(&lift).0, Response::Lifted(Some(_))));
        let (r, _) = s.apply(&Command::once(
            "req-revoke",
            3,
            revoke(RevocationKind::Operator, "op", 3, None),
        ));
        assert!(matches!(r, Response::Revoked { created: true, .. }));
        let (retried, m) = s.apply(&lift);
        assert!(matches!(retried.original(), Response::Lifted(Some(_))));
        assert!(m.is_empty());
        assert_eq!(s.get(RevocationKind::Operator, "op").unwrap().revoked_at, 3);
    }

    #[test]
    fn expiry_forgets_old_request_ids_and_a_later_retry_is_applied_anew() {
        let mut s = ReplicatedState::default();
        let once = Command::once(
            "req",
            1_000,
            revoke(RevocationKind::Session, "x", 1_000, Some(5_000)),
        );
        s.apply(&once);
        assert_eq!(s.request_count(), 1);
        let until = 1_000 + REQUEST_RETENTION_MS;
        assert_eq!(s.request("req").unwrap().expires_at, until);
        s.apply(&Command::Expire { now: 5_000 });
        assert!(s.get(RevocationKind::Session, "x").is_none());
        assert_eq!(
            s.next_expiry(),
            Some(until),
            "the request is still remembered"
        );
        assert!(
            s.apply(&once).0.is_replay(),
            "remembered: replayed, not re-applied"
        );
        let (_, m) = s.apply(&Command::Expire { now: until });
        assert_eq!(m, vec![Mutation::DeleteRequest("req".into())]);
        assert_eq!(s.request_count(), 0);
        assert_eq!(s.next_expiry(), None);
        let (r, m) = s.apply(&once);
        assert!(
            matches!(r, Response::Revoked { created: true, .. }),
            "applied anew"
        );
        assert_eq!(m.len(), 2, "the entry and the request");
    }

    #[test]
    fn once_inside_a_batch_dedups_within_and_across_batches() {
        let mut s = ReplicatedState::default();
        let a = Command::once("a", 10, start("s1", "alice", "r1"));
        let b = Command::once("b", 10, end("s1", "alice", 20));
        let (r, _) = s.apply(&Command::Batch(vec![a.clone(), b.clone(), a.clone()]));
        let Response::Batch(rs) = &r else {
            panic!("unexpected {r:?}")
        };
        assert!(matches!(&rs[0], Response::SessionStarted(_)));
        assert!(matches!(&rs[1], Response::SessionEnded(_)));
        assert_eq!(rs[2], Response::Replayed(Box::new(rs[0].clone())));
        assert_eq!(session_events(&r).len(), 2, "started and ended once each");
        let (r2, m) = s.apply(&Command::Batch(vec![b, a]));
        assert!(matches!(&r2, Response::Batch(rs) if rs.iter().all(Response::is_replay)));
        assert!(m.is_empty());
        assert!(s.active_session_of("r1").is_none());
    }

    #[test]
    fn replicas_applying_the_same_once_log_agree() {
        let log = [
            start("s1", "alice", "r1"),
            start("s2", "alice", "r2"),
            Command::once("x", 5, revoke(RevocationKind::Operator, "alice", 5, None)),
            Command::once("x", 5, revoke(RevocationKind::Operator, "alice", 5, None)),
            Command::Expire {
                now: 5 + REQUEST_RETENTION_MS,
            },
        ];
        let (mut x, mut y) = (ReplicatedState::default(), ReplicatedState::default());
        let rx: Vec<_> = log.iter().map(|c| x.apply(c)).collect();
        let ry: Vec<_> = log.iter().map(|c| y.apply(c)).collect();
        assert_eq!(rx, ry);
        assert_eq!(x, y);
        let Response::Revoked { ended, .. } = &rx[2].0 else {
            panic!()
        };
        let ids: Vec<_> = ended.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s1", "s2"], "ended in robot order");
    }

    #[test]
    fn a_revoked_login_token_refuses_the_session_after_the_operator_check() {
        let mut s = ReplicatedState::default();
        let with_login = |id: &str, operator: &str, jti: Option<&str>| {
            let mut c = start(id, operator, "r1");
            if let Command::StartSession { login_token_id, .. } = &mut c {
                *login_token_id = jti.map(str::to_owned);
            }
            c
        };
        s.apply(&revoke(RevocationKind::Token, "login-1", 1, None));
        let (r, m) = s.apply(&with_login("s1", "alice", Some("login-1")));
        assert_eq!(refused_code(&r), "credential_revoked");
        assert!(m.is_empty());
        assert!(s.active_session_of("r1").is_none());
        s.apply(&revoke(RevocationKind::Operator, "bob", 1, None));
        let (r, _) = s.apply(&with_login("s2", "bob", Some("login-1")));
        assert_eq!(
            refused_code(&r),
            "operator_revoked",
            "the operator check comes first"
        );
        assert!(matches!(
            s.apply(&with_login("s3", "alice", Some("login-2"))).0,
            Response::SessionStarted(_)
        ));
        let (r, _) = s.apply(&with_login("s4", "carol", Some("login-1")));
        assert_eq!(
            refused_code(&r),
            "credential_revoked",
            "checked before robot_busy"
        );
        assert_eq!(
            refused_code(&s.apply(&with_login("s5", "carol", None)).0),
            "robot_busy"
        );
    }

    fn session(id: &str, robot: &str, created_at: u64, ended_at: Option<u64>) -> Session {
        Session {
            id: id.into(),
            operator: "alice".into(),
            robot: robot.into(),
            token_id: format!("jti-{id}"),
            node: 1,
            created_at,
            state: match ended_at {
                None => SessionState::Active,
                Some(_) => SessionState::Terminated,
            },
            ended_at,
            end_reason: ended_at.map(|_| "client_request".into()),
        }
    }

    #[test]
    fn the_latest_session_of_a_robot_follows_starts_ends_and_loading_in_any_order() {
        let mut s = ReplicatedState::default();
        assert!(s.latest_session_of("r1").is_none());
        s.apply(&start("s1", "alice", "r1"));
        assert_eq!(s.latest_session_of("r1").unwrap().id, "s1");
        s.apply(&end("s1", "alice", 150));
        let latest = s.latest_session_of("r1").unwrap();
        assert_eq!(
            (latest.id.as_str(), latest.state),
            ("s1", SessionState::Terminated)
        );
        let mut later = start("s0", "bob", "r1");
        if let Command::StartSession { at, .. } = &mut later {
            *at = 200;
        }
        s.apply(&later);
        assert_eq!(
            s.latest_session_of("r1").unwrap().id,
            "s0",
            "by created_at, not id"
        );
        assert!(s.latest_session_of("r2").is_none());

        let mut loaded = ReplicatedState::default();
        for x in [
            session("c", "r1", 300, Some(400)),
            session("a", "r1", 100, Some(200)),
            session("d", "r1", 300, Some(350)),
            session("b", "r2", 500, None),
        ] {
            loaded.insert_session(x);
        }
        assert_eq!(
            loaded.latest_session_of("r1").unwrap().id,
            "d",
            "ties: greatest id"
        );
        assert_eq!(loaded.latest_session_of("r2").unwrap().id, "b");
        loaded.insert_session(session("d", "r2", 600, Some(650)));
        assert_eq!(
            loaded.latest_session_of("r1").unwrap().id,
            "c",
            "a replaced session moves"
        );
        assert_eq!(loaded.latest_session_of("r2").unwrap().id, "d");
    }

    #[test]
    fn expiry_of_the_latest_session_falls_back_to_the_next_retained_one() {
        let mut s = ReplicatedState::default();
        s.insert_session(session("old", "r1", 100, Some(5_000)));
        s.insert_session(session("new", "r1", 200, Some(1_000)));
        assert_eq!(s.latest_session_of("r1").unwrap().id, "new");
        let (_, m) = s.apply(&Command::Expire {
            now: 1_000 + SESSION_RETENTION_MS,
        });
        assert_eq!(m, vec![Mutation::DeleteSession("new".into())]);
        assert_eq!(s.latest_session_of("r1").unwrap().id, "old");
        s.apply(&Command::Expire {
            now: 5_000 + SESSION_RETENTION_MS,
        });
        assert!(s.latest_session_of("r1").is_none());
        assert_eq!(
            s,
            ReplicatedState::default(),
            "no index keeps a dropped session"
        );
    }

    #[test]
    fn a_revocation_event_comes_before_the_ends_of_the_sessions_it_ended() {
        let mut s = ReplicatedState::default();
        s.apply(&start("s1", "alice", "r1"));
        s.apply(&start("s2", "alice", "r2"));
        let (r, _) = s.apply(&revoke(RevocationKind::Operator, "alice", 500, None));
        let events = session_events(&r);
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[0], SessionEvent::Revoked(e) if e.target == "alice"));
        assert!(matches!(&events[1], SessionEvent::Ended(x) if x.id == "s1"));
        assert!(matches!(&events[2], SessionEvent::Ended(x) if x.id == "s2"));
        // Revoking again (nothing new ended) still tells the gateways; they are idempotent.
        let (r, _) = s.apply(&revoke(RevocationKind::Operator, "alice", 600, None));
        assert!(matches!(
            &session_events(&r)[..],
            [SessionEvent::Revoked(_)]
        ));
    }
}
