//! The hub's share of credentials on open connections: a fresh `auth` that extends a
//! connection, a token that expired, a credential revoked while connected (S4 for robots,
//! watchers and owners), and robots' lease requests (S7).

use super::{Action, FrameStep, HubCore, Identity};
use crate::codes::{CloseCode, ErrorCode};
use crate::hub::types::Credential;
use crate::lease::LeaseAsk;
use crate::protocol::{error_frame, ServerFrame};
use crate::rooms::ConnId;

impl HubCore {
    /// A fresh token on an authenticated connection (verified and checked against
    /// revocations by the shell). The same principal ([`Identity::same_principal`]) takes
    /// the new token (its id is what revocations match from now on) and gets `auth_ok`;
    /// another one is refused with `reauth_mismatch` and the connection keeps its old
    /// token. True when taken: the shell moves the connection's expiry.
    pub fn reauthenticated(
        &mut self,
        conn: ConnId,
        identity: Identity,
        expires_in_ms: u64,
    ) -> (bool, Vec<Action>) {
        let Some(current) = self.conns.get_mut(&conn) else {
            return (false, Vec::new());
        };
        if !current.same_principal(&identity) {
            let refusal = error_frame(
                ErrorCode::ReauthMismatch,
                "a fresh token must name the same subject, role and session",
            );
            return (false, vec![Action::Send(conn, refusal)]);
        }
        let auth_ok = ServerFrame::AuthOk {
            role: identity.role().into(),
            subject: identity.subject().into(),
            expires_in_ms,
            last_session: None,
        };
        *current = identity;
        (true, vec![Action::Send(conn, auth_ok)])
    }

    /// `conn`'s token expired without a fresh `auth`: `token_expired`, the close (4004), and
    /// the connection is forgotten (its peer told).
    pub fn token_expired(&mut self, conn: ConnId) -> Vec<Action> {
        if !self.conns.contains_key(&conn) {
            return Vec::new();
        }
        let message = "the token expired; authenticate again with a fresh one";
        let mut actions = vec![
            Action::Send(conn, error_frame(ErrorCode::TokenExpired, message)),
            Action::Close(conn, CloseCode::TokenExpired, message.into()),
        ];
        actions.extend(self.disconnected(conn));
        actions
    }

    /// A revocation of `credential` was applied: every connection that presented it is told
    /// (`credential_revoked` with the reason), closed (4005) and forgotten; then their peers
    /// hear `peer_left`. Operators' session connections are left to the session teardown
    /// that the same revocation causes (it ends every session of the token or operator, and
    /// tells them `revoked`, 4001).
    pub fn credential_revoked(&mut self, credential: Credential<'_>, reason: &str) -> Vec<Action> {
        let hit: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, identity)| {
                let in_session = matches!(
                    identity,
                    Identity::Operator {
                        session_id: Some(_),
                        ..
                    }
                );
                !in_session
                    && match credential {
                        Credential::TokenId(jti) => identity.token_id() == jti,
                        Credential::Subject(sub) => identity.subject() == sub,
                    }
            })
            .map(|(conn, _)| *conn)
            .collect();
        let mut actions = Vec::new();
        for conn in &hit {
            actions.push(Action::Send(
                *conn,
                error_frame(ErrorCode::CredentialRevoked, reason),
            ));
            actions.push(Action::Close(
                *conn,
                CloseCode::CredentialRevoked,
                reason.into(),
            ));
        }
        for conn in hit {
            actions.extend(self.disconnected(conn));
        }
        actions
    }

    /// A `lease_request`: for the robot's current connection, the ask for the shell's lease
    /// desk; `forbidden` for anyone else (an older connection of the robot included: leases
    /// go to the newest one, which gets the session notices too).
    pub(super) fn lease_requested(
        &self,
        conn: ConnId,
        session_id: String,
        nonce: u64,
    ) -> FrameStep {
        match self.conns.get(&conn) {
            Some(Identity::Robot { robot_id, .. }) if self.robots.get(robot_id) == Some(&conn) => {
                FrameStep::Lease {
                    robot_id: robot_id.clone(),
                    session_id,
                    nonce,
                }
            }
            Some(_) => FrameStep::Done(vec![Action::Send(
                conn,
                error_frame(
                    ErrorCode::Forbidden,
                    "only a robot's current connection asks for leases",
                ),
            )]),
            None => FrameStep::Done(Vec::new()),
        }
    }

    /// The shell's quorum check (begun after `ask` arrived) passed and the robot's active
    /// session is `ask.session_id`: the lease, if the connection is still the robot's.
    pub fn lease_granted(&self, ask: &LeaseAsk, ttl_ms: u64) -> Vec<Action> {
        if self.robots.get(&ask.robot_id) != Some(&ask.conn) {
            return Vec::new();
        }
        vec![Action::Send(
            ask.conn,
            ServerFrame::Lease {
                session_id: ask.session_id.clone(),
                ttl_ms,
                nonce: ask.nonce,
            },
        )]
    }
}
