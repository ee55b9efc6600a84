//! The robot's safety core: a pure state machine that decides, from explicit inputs and an
//! explicit `now`, whether the robot may actuate (S5, S6, S7). No I/O, no clock, no threads.
//!
//! The robot actuates only while all of these hold: the `session` channel is authenticated
//! for the current session; that session is neither revoked nor terminated (latched); a
//! lease for it has not run out; the last control command is younger than the control-loss
//! timeout. Every input returns the [`Effect`]s the caller carries out, in order.

use std::collections::HashSet;
use std::time::Duration;

/// A point on the robot's monotonic clock (time since an arbitrary origin).
pub type Instant = Duration;

/// Why the robot is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopCause {
    /// It just started.
    Boot,
    /// The session was revoked (latched).
    Revoked,
    /// The session was terminated (latched).
    Terminated,
    /// No control command within the control-loss timeout (S6).
    ControlLoss,
    /// The authorization lease ran out (S7).
    LeaseExpired,
    /// The operator pressed the e-stop.
    Estop,
    /// The authenticated `session` channel closed.
    PeerClosed,
}

impl StopCause {
    /// The name used in events and telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            StopCause::Boot => "boot",
            StopCause::Revoked => "revoked",
            StopCause::Terminated => "terminated",
            StopCause::ControlLoss => "control_loss",
            StopCause::LeaseExpired => "lease_expired",
            StopCause::Estop => "estop",
            StopCause::PeerClosed => "peer_closed",
        }
    }

    /// Whether only a new session re-arms the robot.
    pub fn latches(self) -> bool {
        matches!(self, StopCause::Revoked | StopCause::Terminated)
    }
}

/// What an authenticated console presented: the verified claims that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The session the token admits to (`sid`).
    pub session_id: String,
    /// The token id (`jti`).
    pub token_id: String,
    /// The operator (`sub`).
    pub operator: String,
}

/// Why an `auth` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// Bad signature, malformed, wrong role.
    InvalidToken,
    /// Past its expiry.
    TokenExpired,
    /// Not for the session this robot was assigned (or none is assigned).
    WrongSession,
    /// Its session or token was revoked or terminated.
    Revoked,
}

impl DenyReason {
    /// The stable code sent in `auth_denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InvalidToken => "invalid_token",
            DenyReason::TokenExpired => "token_expired",
            DenyReason::WrongSession => "wrong_session",
            DenyReason::Revoked => "revoked",
        }
    }
}

/// A drive command, already validated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Command {
    /// Sequence number within the session, increasing.
    pub seq: u64,
    /// Forward speed, −1..1.
    pub linear: f64,
    /// Turn rate, −1..1 (positive turns left).
    pub angular: f64,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The robot may move again (recorded as `armed`).
    Armed { session_id: String },
    /// Drive the actuator with this command (recorded as `command_applied`).
    Apply {
        session_id: String,
        command: Command,
    },
    /// Stop the actuator now (recorded as `safe_stop`).
    SafeStop {
        cause: StopCause,
        session_id: Option<String>,
    },
    /// Answer `auth_ok` on the session channel.
    AuthOk { session_id: String },
    /// Answer `auth_denied` on the session channel.
    AuthDenied {
        session_id: Option<String>,
        reason: DenyReason,
    },
    /// The session ended: close the PeerConnection and ICE.
    ClosePeer { session_id: String },
}

/// Tunables of the core.
#[derive(Clone, Copy, Debug)]
pub struct SafetyConfig {
    /// Silence on the control channel longer than this stops the robot (S6).
    pub control_timeout: Duration,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            control_timeout: Duration::from_millis(300),
        }
    }
}

/// The session the robot serves now.
#[derive(Debug)]
struct Current {
    id: String,
    auth: Option<Credentials>,
    /// Which `session` channel authenticated (a caller-chosen id; 0 when unnamed).
    auth_channel: u64,
    ended: Option<StopCause>,
    lease_until: Option<Instant>,
    last_command_at: Option<Instant>,
    last_seq: u64,
}

impl Current {
    /// Whether a lease covers `now`.
    fn leased(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|until| now < until)
    }

    /// Whether the last command is younger than `timeout` at `now`.
    fn control_fresh(&self, now: Instant, timeout: Duration) -> bool {
        self.last_command_at.is_some_and(|at| now < at + timeout)
    }
}

/// The robot's safety state machine.
#[derive(Debug)]
pub struct SafetyCore {
    config: SafetyConfig,
    current: Option<Current>,
    revoked_sessions: HashSet<String>,
    revoked_tokens: HashSet<String>,
    armed: bool,
    cause: Option<StopCause>,
}

impl SafetyCore {
    /// A core that boots in safe-stop; the returned effects record it.
    pub fn boot(config: SafetyConfig) -> (Self, Vec<Effect>) {
        let core = Self {
            config,
            current: None,
            revoked_sessions: HashSet::new(),
            revoked_tokens: HashSet::new(),
            armed: false,
            cause: Some(StopCause::Boot),
        };
        let effects = vec![Effect::SafeStop {
            cause: StopCause::Boot,
            session_id: None,
        }];
        (core, effects)
    }

    /// Whether the robot may move now (as of the last input).
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// Why the robot is stopped, if it is.
    pub fn stop_cause(&self) -> Option<StopCause> {
        if self.armed {
            None
        } else {
            self.cause
        }
    }

    /// The session assigned to the robot, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.current.as_ref().map(|c| c.id.as_str())
    }

    /// Whether the current session has an authenticated console.
    pub fn authenticated(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.auth.is_some())
    }

    /// The gateway assigned a session to this robot. A new session replaces the old one
    /// (stopping the robot if it was driving); the same one again changes nothing.
    pub fn assign(&mut self, session_id: &str, _now: Instant) -> Vec<Effect> {
        if self.session_id() == Some(session_id) {
            return Vec::new();
        }
        let mut effects = self.stop(StopCause::PeerClosed);
        if let Some(old) = self.current.take() {
            effects.push(Effect::ClosePeer { session_id: old.id });
        }
        let ended = self
            .revoked_sessions
            .contains(session_id)
            .then_some(StopCause::Revoked);
        self.current = Some(Current {
            id: session_id.to_owned(),
            auth: None,
            auth_channel: 0,
            ended,
            lease_until: None,
            last_command_at: None,
            last_seq: 0,
        });
        effects
    }

    /// A console presented a token on the `session` channel; `verified` is the outcome of
    /// the signature and expiry check done by the caller.
    pub fn authenticate(
        &mut self,
        verified: Result<Credentials, DenyReason>,
        now: Instant,
    ) -> Vec<Effect> {
        self.authenticate_on(0, verified, now)
    }

    /// [`Self::authenticate`] on the channel the caller names `channel`, so that only that
    /// channel's closing revokes the authentication (an older channel closing late does not).
    pub fn authenticate_on(
        &mut self,
        channel: u64,
        verified: Result<Credentials, DenyReason>,
        _now: Instant,
    ) -> Vec<Effect> {
        let session_id = self.session_id().map(str::to_owned);
        let denied = |reason| {
            vec![Effect::AuthDenied {
                session_id: session_id.clone(),
                reason,
            }]
        };
        let creds = match verified {
            Ok(creds) => creds,
            Err(reason) => return denied(reason),
        };
        if self.revoked_sessions.contains(&creds.session_id)
            || self.revoked_tokens.contains(&creds.token_id)
        {
            return denied(DenyReason::Revoked);
        }
        let Some(current) = self.current.as_mut() else {
            return denied(DenyReason::WrongSession);
        };
        if current.id != creds.session_id {
            return denied(DenyReason::WrongSession);
        }
        if current.ended.is_some() {
            return denied(DenyReason::Revoked);
        }
        current.auth = Some(creds);
        current.auth_channel = channel;
        vec![Effect::AuthOk {
            session_id: current.id.clone(),
        }]
    }

    /// The `session` channel closed: the next one must authenticate again.
    pub fn channel_closed(&mut self, now: Instant) -> Vec<Effect> {
        self.channel_closed_on(None, now)
    }

    /// The `session` channel named `channel` closed (`None`: whichever it was). A channel
    /// other than the authenticated one changes nothing.
    pub fn channel_closed_on(&mut self, channel: Option<u64>, _now: Instant) -> Vec<Effect> {
        let Some(current) = self.current.as_mut() else {
            return Vec::new();
        };
        if channel.is_some_and(|c| c != current.auth_channel) || current.auth.take().is_none() {
            return Vec::new();
        }
        self.stop(StopCause::PeerClosed)
    }

    /// A gateway granted a lease for `session_id`, valid `ttl` from `now`.
    pub fn lease(&mut self, session_id: &str, ttl: Duration, now: Instant) -> Vec<Effect> {
        if let Some(current) = self.current.as_mut() {
            if current.id == session_id && current.ended.is_none() {
                current.lease_until = Some(now + ttl);
            }
        }
        Vec::new()
    }

    /// A control command arrived. It is applied only if it is fresh (its `seq` above every
    /// applied one), the console is authenticated, the session live and the lease valid.
    pub fn control(&mut self, command: Command, now: Instant) -> Vec<Effect> {
        let Some(current) = self.current.as_mut() else {
            return Vec::new();
        };
        if current.auth.is_none() || current.ended.is_some() || command.seq <= current.last_seq {
            return Vec::new();
        }
        current.last_seq = command.seq;
        current.last_command_at = Some(now);
        if !current.leased(now) {
            let effects = self.stop(StopCause::LeaseExpired);
            self.cause = Some(StopCause::LeaseExpired);
            return effects;
        }
        let session_id = current.id.clone();
        let mut effects = Vec::new();
        if !self.armed {
            self.armed = true;
            self.cause = None;
            effects.push(Effect::Armed {
                session_id: session_id.clone(),
            });
        }
        effects.push(Effect::Apply {
            session_id,
            command,
        });
        effects
    }

    /// The operator pressed the e-stop: stop until the next fresh command.
    pub fn estop(&mut self, _now: Instant) -> Vec<Effect> {
        self.stop(StopCause::Estop)
    }

    /// The gateway said `session_id` was revoked (or, with `Terminated`, ended): stop, latch,
    /// remember its sid and token so no re-opened channel can authenticate with them again.
    pub fn end_session(&mut self, session_id: &str, cause: StopCause) -> Vec<Effect> {
        debug_assert!(cause.latches());
        self.revoked_sessions.insert(session_id.to_owned());
        let Some(current) = self.current.as_mut().filter(|c| c.id == session_id) else {
            return Vec::new();
        };
        if current.ended.is_some() {
            return Vec::new();
        }
        current.ended = Some(cause);
        current.lease_until = None;
        if let Some(auth) = current.auth.take() {
            self.revoked_tokens.insert(auth.token_id);
        }
        self.armed = false;
        self.cause = Some(cause);
        vec![
            Effect::SafeStop {
                cause,
                session_id: Some(session_id.to_owned()),
            },
            Effect::ClosePeer {
                session_id: session_id.to_owned(),
            },
        ]
    }

    /// The watchdog's check: stops the robot when its lease or its control ran out.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        if !self.armed {
            return Vec::new();
        }
        let Some(current) = self.current.as_ref() else {
            return self.stop(StopCause::PeerClosed);
        };
        if !current.leased(now) {
            return self.stop(StopCause::LeaseExpired);
        }
        if !current.control_fresh(now, self.config.control_timeout) {
            return self.stop(StopCause::ControlLoss);
        }
        Vec::new()
    }

    /// When the watchdog must look next: the earliest instant a check could fail.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.armed {
            return None;
        }
        let current = self.current.as_ref()?;
        let control = current
            .last_command_at
            .map(|at| at + self.config.control_timeout);
        match (current.lease_until, control) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn stop(&mut self, cause: StopCause) -> Vec<Effect> {
        if !self.armed {
            return Vec::new();
        }
        self.armed = false;
        self.cause = Some(cause);
        vec![Effect::SafeStop {
            cause,
            session_id: self.session_id().map(str::to_owned),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "ses_1";
    const TTL: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Instant {
        Duration::from_millis(n)
    }

    fn creds(sid: &str, jti: &str) -> Credentials {
        Credentials {
            session_id: sid.into(),
            token_id: jti.into(),
            operator: "alice".into(),
        }
    }

    fn cmd(seq: u64) -> Command {
        Command {
            seq,
            linear: 0.5,
            angular: 0.0,
        }
    }

    fn causes(effects: &[Effect]) -> Vec<StopCause> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::SafeStop { cause, .. } => Some(*cause),
                _ => None,
            })
            .collect()
    }

    fn applied(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Apply { .. }))
    }

    /// A core with session SID assigned, authenticated, leased at 0 and armed by seq 1.
    fn driving() -> SafetyCore {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        assert_eq!(
            core.authenticate(Ok(creds(SID, "jti-1")), ms(0)),
            vec![Effect::AuthOk {
                session_id: SID.into()
            }]
        );
        core.lease(SID, TTL, ms(0));
        let effects = core.control(cmd(1), ms(0));
        assert!(matches!(effects[0], Effect::Armed { .. }));
        assert!(applied(&effects));
        core
    }

    #[test]
    fn it_boots_in_safe_stop_and_does_not_move_without_everything() {
        let (mut core, effects) = SafetyCore::boot(SafetyConfig::default());
        assert_eq!(causes(&effects), vec![StopCause::Boot]);
        assert!(!core.armed());
        assert_eq!(core.stop_cause(), Some(StopCause::Boot));
        // No session: nothing applies.
        assert!(!applied(&core.control(cmd(1), ms(0))));
        core.assign(SID, ms(0));
        // Not authenticated.
        assert!(!applied(&core.control(cmd(1), ms(0))));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        // Authenticated but no lease: refused, and the cause says why.
        assert!(!applied(&core.control(cmd(2), ms(0))));
        assert_eq!(core.stop_cause(), Some(StopCause::LeaseExpired));
        core.lease(SID, TTL, ms(0));
        assert!(applied(&core.control(cmd(3), ms(1))));
        assert!(core.armed());
    }

    #[test]
    fn stale_and_duplicate_commands_are_dropped() {
        let mut core = driving();
        assert!(applied(&core.control(cmd(5), ms(10))));
        assert!(!applied(&core.control(cmd(5), ms(11))));
        assert!(!applied(&core.control(cmd(4), ms(12))));
        assert!(applied(&core.control(cmd(6), ms(13))));
    }

    #[test]
    fn control_loss_stops_at_the_timeout_and_a_fresh_command_rearms() {
        let mut core = driving();
        assert_eq!(core.next_deadline(), Some(ms(300)));
        assert!(core.tick(ms(299)).is_empty());
        assert_eq!(causes(&core.tick(ms(300))), vec![StopCause::ControlLoss]);
        assert!(!core.armed());
        // Stopping twice says nothing more.
        assert!(core.tick(ms(301)).is_empty());
        let effects = core.control(cmd(2), ms(310));
        assert!(matches!(effects[0], Effect::Armed { .. }));
    }

    #[test]
    fn lease_expiry_stops_and_a_renewal_keeps_it_going() {
        let mut core = driving();
        for t in (100..1000).step_by(100) {
            core.control(cmd(t / 100 + 1), ms(t));
        }
        assert_eq!(core.next_deadline(), Some(ms(1000)));
        core.lease(SID, TTL, ms(900));
        core.control(cmd(20), ms(1000));
        assert!(core.tick(ms(1000)).is_empty());
        core.control(cmd(21), ms(1200));
        assert_eq!(causes(&core.tick(ms(1900))), vec![StopCause::LeaseExpired]);
        // Commands without a lease do not re-arm.
        assert!(!applied(&core.control(cmd(22), ms(1901))));
    }

    #[test]
    fn a_lease_for_another_session_counts_for_nothing() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        core.lease("ses_other", TTL, ms(0));
        assert!(!applied(&core.control(cmd(1), ms(0))));
    }

    #[test]
    fn revoke_latches_safe_stop_until_a_new_session() {
        let mut core = driving();
        let effects = core.end_session(SID, StopCause::Revoked);
        assert_eq!(causes(&effects), vec![StopCause::Revoked]);
        assert!(effects.contains(&Effect::ClosePeer {
            session_id: SID.into()
        }));
        // In-flight commands, leases and a re-opened channel change nothing.
        core.lease(SID, TTL, ms(1));
        assert!(!applied(&core.control(cmd(2), ms(1))));
        assert!(core.tick(ms(2)).is_empty());
        assert_eq!(core.stop_cause(), Some(StopCause::Revoked));
        // Hearing it twice records nothing new.
        assert!(core.end_session(SID, StopCause::Revoked).is_empty());
        // A new session re-arms once it has everything.
        core.assign("ses_2", ms(5));
        core.authenticate(Ok(creds("ses_2", "jti-2")), ms(5));
        core.lease("ses_2", TTL, ms(5));
        assert!(applied(&core.control(cmd(1), ms(6))));
    }

    #[test]
    fn termination_latches_like_revocation() {
        let mut core = driving();
        assert_eq!(
            causes(&core.end_session(SID, StopCause::Terminated)),
            vec![StopCause::Terminated]
        );
        assert_eq!(
            core.authenticate(Ok(creds(SID, "jti-1")), ms(1)),
            vec![Effect::AuthDenied {
                session_id: Some(SID.into()),
                reason: DenyReason::Revoked
            }]
        );
    }

    #[test]
    fn a_reopened_channel_must_authenticate_again_and_revoked_ids_are_refused() {
        let mut core = driving();
        assert_eq!(
            causes(&core.channel_closed(ms(10))),
            vec![StopCause::PeerClosed]
        );
        assert!(!applied(&core.control(cmd(2), ms(11))));
        assert!(
            core.authenticate(Ok(creds(SID, "jti-1")), ms(12))[0]
                == Effect::AuthOk {
                    session_id: SID.into()
                }
        );
        assert!(applied(&core.control(cmd(3), ms(13))));
        core.end_session(SID, StopCause::Revoked);
        // The same sid, or the revoked token on any session, is refused.
        let deny = |core: &mut SafetyCore, c| {
            core.authenticate(Ok(c), ms(20)).into_iter().any(|e| {
                matches!(
                    e,
                    Effect::AuthDenied {
                        reason: DenyReason::Revoked,
                        ..
                    }
                )
            })
        };
        assert!(deny(&mut core, creds(SID, "jti-9")));
        core.assign("ses_2", ms(21));
        assert!(deny(&mut core, creds("ses_2", "jti-1")));
        assert!(!deny(&mut core, creds("ses_2", "jti-2")));
    }

    #[test]
    fn an_old_channel_closing_late_does_not_unauthenticate_the_new_one() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate_on(1, Ok(creds(SID, "j")), ms(0));
        core.authenticate_on(2, Ok(creds(SID, "j")), ms(1));
        assert!(core.channel_closed_on(Some(1), ms(2)).is_empty());
        assert!(core.authenticated());
        core.channel_closed_on(Some(2), ms(3));
        assert!(!core.authenticated());
    }

    #[test]
    fn a_revocation_heard_before_the_assignment_still_counts() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.end_session(SID, StopCause::Revoked);
        core.assign(SID, ms(0));
        assert!(matches!(
            core.authenticate(Ok(creds(SID, "j")), ms(0))[0],
            Effect::AuthDenied {
                reason: DenyReason::Revoked,
                ..
            }
        ));
    }

    #[test]
    fn tokens_for_another_session_or_failing_verification_are_denied() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        assert!(matches!(
            core.authenticate(Ok(creds(SID, "j")), ms(0))[0],
            Effect::AuthDenied {
                reason: DenyReason::WrongSession,
                ..
            }
        ));
        core.assign(SID, ms(0));
        for reason in [DenyReason::InvalidToken, DenyReason::TokenExpired] {
            assert_eq!(
                core.authenticate(Err(reason), ms(0)),
                vec![Effect::AuthDenied {
                    session_id: Some(SID.into()),
                    reason
                }]
            );
        }
        assert!(matches!(
            core.authenticate(Ok(creds("ses_other", "j")), ms(0))[0],
            Effect::AuthDenied {
                reason: DenyReason::WrongSession,
                ..
            }
        ));
        assert!(!core.authenticated());
    }

    #[test]
    fn estop_stops_until_the_next_fresh_command() {
        let mut core = driving();
        assert_eq!(causes(&core.estop(ms(5))), vec![StopCause::Estop]);
        assert_eq!(core.stop_cause(), Some(StopCause::Estop));
        assert!(applied(&core.control(cmd(2), ms(6))));
    }

    #[test]
    fn a_new_assignment_stops_the_old_session() {
        let mut core = driving();
        let effects = core.assign("ses_2", ms(5));
        assert_eq!(causes(&effects), vec![StopCause::PeerClosed]);
        assert!(effects.contains(&Effect::ClosePeer {
            session_id: SID.into()
        }));
        assert!(!core.authenticated());
        // The same assignment again is a no-op.
        assert!(core.assign("ses_2", ms(6)).is_empty());
    }

    /// Every order of a small alphabet of inputs keeps the invariant: whenever the core
    /// applies a command, the session is authenticated, not ended, leased and fresh.
    #[test]
    fn no_sequence_of_inputs_applies_a_command_without_every_condition() {
        #[derive(Clone, Copy, Debug)]
        enum Input {
            Assign(u8),
            Auth(u8),
            Lease(u8),
            Control,
            Revoke(u8),
            Close,
            Tick,
            Wait(u64),
        }
        let alphabet = [
            Input::Assign(1),
            Input::Assign(2),
            Input::Auth(1),
            Input::Auth(2),
            Input::Lease(1),
            Input::Lease(2),
            Input::Control,
            Input::Revoke(1),
            Input::Close,
            Input::Tick,
            Input::Wait(350),
            Input::Wait(1100),
        ];
        let sid = |n: u8| format!("ses_{n}");
        let depth = 5;
        let total = alphabet.len().pow(depth);
        for mut code in 0..total {
            let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
            let mut now = ms(0);
            let mut seq = 0;
            let mut revoked: HashSet<String> = HashSet::new();
            for _ in 0..depth {
                let input = alphabet[code % alphabet.len()];
                code /= alphabet.len();
                let effects = match input {
                    Input::Assign(n) => core.assign(&sid(n), now),
                    Input::Auth(n) => core.authenticate(Ok(creds(&sid(n), "j")), now),
                    Input::Lease(n) => core.lease(&sid(n), TTL, now),
                    Input::Control => {
                        seq += 1;
                        core.control(cmd(seq), now)
                    }
                    Input::Revoke(n) => {
                        revoked.insert(sid(n));
                        core.end_session(&sid(n), StopCause::Revoked)
                    }
                    Input::Close => core.channel_closed(now),
                    Input::Tick => core.tick(now),
                    Input::Wait(d) => {
                        now += ms(d);
                        core.tick(now)
                    }
                };
                if applied(&effects) {
                    let current = core.current.as_ref().expect("a session");
                    assert!(current.auth.is_some(), "{input:?}");
                    assert!(current.ended.is_none());
                    assert!(!revoked.contains(&current.id));
                    assert!(current.lease_until.is_some_and(|u| now < u));
                    assert!(core.armed());
                }
                // Armed implies every condition, at all times the watchdog could look.
                if core.armed() {
                    let current = core.current.as_ref().expect("a session");
                    assert!(current.auth.is_some() && current.ended.is_none());
                }
            }
        }
    }
}
