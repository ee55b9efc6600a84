//! The robot's safety core: a pure state machine that decides, from explicit inputs and an
//! explicit `now`, whether the robot may actuate (S5, S6, S7). No I/O, no clock, no threads.
//!
//! The robot actuates only while all of these hold: the `session` channel is authenticated
//! for the current session with an unexpired token; that session is neither revoked nor
//! terminated (latched); no e-stop is latched; a lease anchored to the robot's own request
//! time has not run out; the last control command, from the authenticated PeerConnection,
//! is younger than the control-loss timeout. Every input returns the [`Effect`]s the caller
//! carries out, in order.
//!
//! Long file: one state machine whose every input keeps the same invariants; types first.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// A point on the robot's monotonic clock (time since an arbitrary origin).
pub type Instant = Duration;

/// How many lease requests may await their answer; beyond it the oldest is forgotten (its
/// anchor is the earliest, so its answer would be worth the least).
pub const MAX_OUTSTANDING_REQUESTS: usize = 8;

/// The shortest period between lease requests, whatever the gateway's TTL says.
const MIN_LEASE_PERIOD: Duration = Duration::from_millis(10);

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
    /// The operator pressed the e-stop (latched until `rearm`).
    Estop,
    /// The authenticated `session` channel closed.
    PeerClosed,
    /// The session token the channel authenticated with expired, and no fresh `auth` came.
    TokenExpired,
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
            StopCause::TokenExpired => "token_expired",
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
    /// How long the token has left (its `exp` minus wall-clock now, at the check): the core
    /// turns it into a deadline on its own monotonic clock.
    pub expires_in: Duration,
}

/// Why an `auth` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// Bad signature, malformed, wrong role or audience.
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
    /// The operator cleared the e-stop latch (recorded as `rearmed`); the next fresh command
    /// may move the robot again.
    Rearmed { session_id: String },
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
    /// The longest a granted lease counts for, whatever TTL the gateway names (S7).
    pub max_lease: Duration,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            control_timeout: Duration::from_millis(300),
            max_lease: Duration::from_secs(1),
        }
    }
}

/// The authentication of the current session's `session` channel.
#[derive(Debug)]
struct Auth {
    creds: Credentials,
    /// Which PeerConnection authenticated (a caller-chosen id; 0 when unnamed): only its
    /// `control` commands count, and only its closing revokes the authentication.
    channel: u64,
    /// When the token expires, on the core's clock.
    until: Instant,
}

/// The session the robot serves now.
#[derive(Debug)]
struct Current {
    id: String,
    auth: Option<Auth>,
    ended: Option<StopCause>,
    /// An e-stop came and no `rearm` since.
    estopped: bool,
    lease_until: Option<Instant>,
    /// Lease requests awaiting an answer, oldest first: (nonce, sent at).
    requests: VecDeque<(u64, Instant)>,
    /// The TTL of the last lease granted (it sets how often the robot asks).
    granted_ttl: Option<Duration>,
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
    /// The next lease request's nonce: increasing for the life of the core, so an echo
    /// meant for an earlier session can never match a request of this one.
    next_nonce: u64,
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
            next_nonce: 1,
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

    /// Whether an e-stop is latched on the current session.
    pub fn estopped(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.estopped)
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
            ended,
            estopped: false,
            lease_until: None,
            requests: VecDeque::new(),
            granted_ttl: None,
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

    /// [`Self::authenticate`] on the PeerConnection the caller names `channel`: only its
    /// `control` channel is obeyed, and only its closing revokes the authentication (an
    /// older one closing late does not). A fresh token on the same channel extends it.
    pub fn authenticate_on(
        &mut self,
        channel: u64,
        verified: Result<Credentials, DenyReason>,
        now: Instant,
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
        // The verifier allows some clock skew; this core does not count a dead token.
        if creds.expires_in.is_zero() {
            return denied(DenyReason::TokenExpired);
        }
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
        let until = now + creds.expires_in;
        current.auth = Some(Auth {
            creds,
            channel,
            until,
        });
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
        let theirs = current
            .auth
            .as_ref()
            .is_some_and(|a| channel.is_none_or(|c| c == a.channel));
        if !theirs {
            return Vec::new();
        }
        current.auth = None;
        self.stop(StopCause::PeerClosed)
    }

    /// Issues a lease request for the current session at `now`: the `(session_id, nonce)`
    /// to send, or `None` when there is no live session to ask for.
    pub fn lease_request(&mut self, now: Instant) -> Option<(String, u64)> {
        let current = self.current.as_mut().filter(|c| c.ended.is_none())?;
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        if current.requests.len() >= MAX_OUTSTANDING_REQUESTS {
            current.requests.pop_front();
        }
        current.requests.push_back((nonce, now));
        Some((current.id.clone(), nonce))
    }

    /// How long to wait before the next lease request: a quarter of the effective lease
    /// (the last TTL granted, at most [`SafetyConfig::max_lease`]).
    pub fn lease_period(&self) -> Duration {
        let max = self.config.max_lease;
        let ttl = self
            .current
            .as_ref()
            .and_then(|c| c.granted_ttl)
            .map_or(max, |t| t.min(max));
        (ttl / 4).max(MIN_LEASE_PERIOD)
    }

    /// A gateway granted a lease for `session_id`, echoing the request `nonce`: valid until
    /// `min(ttl, max_lease)` after that request was *sent* (S7). The gateway answers only
    /// after a quorum contact that began after it received the request, so anchored there a
    /// lease that waited behind a stalled link or a slow check grants no time beyond that
    /// contact. An unknown nonce, one older than a nonce already granted, another session's
    /// or an ended session's grants nothing, and so does a lease whose window has passed.
    pub fn lease(
        &mut self,
        session_id: &str,
        ttl: Duration,
        nonce: u64,
        now: Instant,
    ) -> Vec<Effect> {
        let max_lease = self.config.max_lease;
        let Some(current) = self
            .current
            .as_mut()
            .filter(|c| c.id == session_id && c.ended.is_none())
        else {
            return Vec::new();
        };
        let Some(at) = current.requests.iter().position(|(n, _)| *n == nonce) else {
            return Vec::new();
        };
        let (_, sent_at) = current.requests[at];
        // This request is answered; older ones are superseded (their anchors are earlier).
        current.requests.drain(..=at);
        if !ttl.is_zero() {
            current.granted_ttl = Some(ttl);
        }
        let until = sent_at + ttl.min(max_lease);
        if until > now {
            current.lease_until = Some(current.lease_until.map_or(until, |u| u.max(until)));
        }
        Vec::new()
    }

    /// A control command arrived on no particular PeerConnection (see [`Self::control_on`]).
    pub fn control(&mut self, command: Command, now: Instant) -> Vec<Effect> {
        self.control_on(0, command, now)
    }

    /// A control command arrived on the PeerConnection `channel`. It is applied only if it
    /// comes from the authenticated one, is fresh (its `seq` above every applied one), the
    /// token is unexpired, the session live, no e-stop latched and the lease valid.
    pub fn control_on(&mut self, channel: u64, command: Command, now: Instant) -> Vec<Effect> {
        let Some(current) = self.current.as_mut() else {
            return Vec::new();
        };
        let Some(auth) = current.auth.as_ref().filter(|a| a.channel == channel) else {
            return Vec::new();
        };
        if current.ended.is_some() || command.seq <= current.last_seq {
            return Vec::new();
        }
        let token_until = auth.until;
        current.last_seq = command.seq;
        current.last_command_at = Some(now);
        if current.estopped {
            return Vec::new();
        }
        let refused = if now >= token_until {
            Some(StopCause::TokenExpired)
        } else if !current.leased(now) {
            Some(StopCause::LeaseExpired)
        } else {
            None
        };
        if let Some(cause) = refused {
            let effects = self.stop(cause);
            self.cause = Some(cause);
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

    /// The operator pressed the e-stop (from any channel: stopping is always allowed). It
    /// latches for the rest of the session, across reconnects, until [`Self::rearm_on`].
    pub fn estop(&mut self, _now: Instant) -> Vec<Effect> {
        if let Some(current) = self.current.as_mut() {
            current.estopped = true;
        }
        let effects = self.stop(StopCause::Estop);
        self.cause = Some(StopCause::Estop);
        effects
    }

    /// `rearm` from the `session` channel of PeerConnection `channel`: clears the e-stop
    /// latch if that channel is the authenticated one and its token is unexpired. The robot
    /// moves again only with the next fresh command.
    pub fn rearm_on(&mut self, channel: u64, now: Instant) -> Vec<Effect> {
        let Some(current) = self.current.as_mut() else {
            return Vec::new();
        };
        let authorized = current
            .auth
            .as_ref()
            .is_some_and(|a| a.channel == channel && now < a.until);
        if !authorized || current.ended.is_some() || !current.estopped {
            return Vec::new();
        }
        current.estopped = false;
        vec![Effect::Rearmed {
            session_id: current.id.clone(),
        }]
    }

    /// The gateway said `session_id` was revoked (or, with `Terminated`, ended): stop, latch,
    /// remember its sid and token so no re-opened channel can authenticate with them again.
    /// A session other than the current one is remembered, so it is refused if assigned.
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
        current.requests.clear();
        if let Some(auth) = current.auth.take() {
            self.revoked_tokens.insert(auth.creds.token_id);
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

    /// The watchdog's check: stops the robot when its token, lease or control ran out.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        if !self.armed {
            return Vec::new();
        }
        let Some(current) = self.current.as_ref() else {
            return self.stop(StopCause::PeerClosed);
        };
        let Some(auth) = current.auth.as_ref() else {
            return self.stop(StopCause::PeerClosed);
        };
        if now >= auth.until {
            return self.stop(StopCause::TokenExpired);
        }
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
        let token = current.auth.as_ref().map(|a| a.until);
        [current.lease_until, control, token]
            .into_iter()
            .flatten()
            .min()
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
    use std::collections::HashMap;

    const SID: &str = "ses_1";
    const TTL: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Instant {
        Duration::from_millis(n)
    }

    fn creds(sid: &str, jti: &str) -> Credentials {
        expiring(sid, jti, Duration::from_secs(3600))
    }

    fn expiring(sid: &str, jti: &str, expires_in: Duration) -> Credentials {
        Credentials {
            session_id: sid.into(),
            token_id: jti.into(),
            operator: "alice".into(),
            expires_in,
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

    /// Asks for a lease at `sent` and gets it (TTL 1 s) at `answered`.
    fn grant(core: &mut SafetyCore, sent: Instant, answered: Instant) {
        let (sid, nonce) = core.lease_request(sent).expect("a live session");
        core.lease(&sid, TTL, nonce, answered);
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
        grant(&mut core, ms(0), ms(0));
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
        // No session: nothing applies, and there is nothing to ask a lease for.
        assert!(!applied(&core.control(cmd(1), ms(0))));
        assert_eq!(core.lease_request(ms(0)), None);
        core.assign(SID, ms(0));
        // Not authenticated.
        assert!(!applied(&core.control(cmd(1), ms(0))));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        // Authenticated but no lease: refused, and the cause says why.
        assert!(!applied(&core.control(cmd(2), ms(0))));
        assert_eq!(core.stop_cause(), Some(StopCause::LeaseExpired));
        grant(&mut core, ms(0), ms(0));
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
        grant(&mut core, ms(900), ms(910));
        core.control(cmd(20), ms(1000));
        assert!(core.tick(ms(1000)).is_empty());
        core.control(cmd(21), ms(1200));
        assert_eq!(causes(&core.tick(ms(1900))), vec![StopCause::LeaseExpired]);
        // Commands without a lease do not re-arm.
        assert!(!applied(&core.control(cmd(22), ms(1901))));
    }

    #[test]
    fn a_lease_counts_for_at_most_the_robots_own_maximum() {
        let config = SafetyConfig {
            max_lease: ms(500),
            ..SafetyConfig::default()
        };
        let (mut core, _) = SafetyCore::boot(config);
        core.assign(SID, ms(0));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        // The gateway grants ten seconds; the robot counts half a second.
        let (sid, nonce) = core.lease_request(ms(0)).unwrap();
        core.lease(&sid, Duration::from_secs(10), nonce, ms(5));
        assert!(applied(&core.control(cmd(1), ms(200))));
        assert!(applied(&core.control(cmd(2), ms(400))));
        assert_eq!(core.next_deadline(), Some(ms(500)));
        assert_eq!(causes(&core.tick(ms(500))), vec![StopCause::LeaseExpired]);
        assert!(!applied(&core.control(cmd(3), ms(501))));
        // The default maximum is one second.
        let mut core = driving();
        let (sid, nonce) = core.lease_request(ms(10)).unwrap();
        core.lease(&sid, Duration::from_secs(60), nonce, ms(20));
        core.control(cmd(2), ms(900));
        assert_eq!(causes(&core.tick(ms(1010))), vec![StopCause::LeaseExpired]);
    }

    #[test]
    fn a_lease_counts_from_the_request_not_from_its_arrival() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        // Asked at 0, answered late at 900: valid until 1000, not 1900.
        grant(&mut core, ms(0), ms(900));
        assert!(applied(&core.control(cmd(1), ms(950))));
        assert_eq!(core.next_deadline(), Some(ms(1000)));
        assert_eq!(causes(&core.tick(ms(1000))), vec![StopCause::LeaseExpired]);
        assert!(!applied(&core.control(cmd(2), ms(1100))));
        // Answered after its whole window: it grants nothing.
        let (sid, nonce) = core.lease_request(ms(1200)).unwrap();
        core.lease(&sid, TTL, nonce, ms(2200));
        assert!(!applied(&core.control(cmd(3), ms(2201))));
        assert_eq!(core.stop_cause(), Some(StopCause::LeaseExpired));
    }

    #[test]
    fn unknown_superseded_foreign_and_ended_echoes_grant_nothing() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        // A nonce the robot never sent.
        core.lease(SID, TTL, 99, ms(0));
        assert!(!applied(&core.control(cmd(1), ms(1))));
        // The right nonce under another session's name.
        let (_, nonce) = core.lease_request(ms(2)).unwrap();
        core.lease("ses_other", TTL, nonce, ms(3));
        assert!(!applied(&core.control(cmd(2), ms(4))));
        // Superseded: once a newer request is answered (here with a short TTL), a late
        // answer to an older one, however long, counts for nothing.
        let (_, older) = core.lease_request(ms(10)).unwrap();
        let (_, newer) = core.lease_request(ms(20)).unwrap();
        core.lease(SID, ms(100), newer, ms(25));
        core.lease(SID, TTL, older, ms(30));
        // An answer counts once.
        core.lease(SID, TTL, newer, ms(31));
        assert!(applied(&core.control(cmd(3), ms(100))));
        assert_eq!(causes(&core.tick(ms(120))), vec![StopCause::LeaseExpired]);
        // Only the newest few requests are remembered.
        let (_, first) = core.lease_request(ms(200)).unwrap();
        for i in 0..MAX_OUTSTANDING_REQUESTS as u64 {
            core.lease_request(ms(201 + i));
        }
        core.lease(SID, TTL, first, ms(300));
        assert!(!applied(&core.control(cmd(4), ms(301))));
        // A request of the old session, answered after a new assignment, counts for nothing
        // in either session's name.
        let (_, old) = core.lease_request(ms(400)).unwrap();
        core.assign("ses_2", ms(401));
        core.authenticate(Ok(creds("ses_2", "j2")), ms(401));
        core.lease(SID, TTL, old, ms(402));
        core.lease("ses_2", TTL, old, ms(402));
        assert!(!applied(&core.control(cmd(1), ms(403))));
        // An ended session asks for nothing and is granted nothing.
        let (_, last) = core.lease_request(ms(500)).unwrap();
        core.end_session("ses_2", StopCause::Revoked);
        assert_eq!(core.lease_request(ms(501)), None);
        core.lease("ses_2", TTL, last, ms(502));
        assert!(core.current.as_ref().unwrap().lease_until.is_none());
    }

    #[test]
    fn lease_requests_come_every_quarter_of_the_effective_lease() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        assert_eq!(core.lease_period(), ms(250));
        core.assign(SID, ms(0));
        let (sid, a) = core.lease_request(ms(0)).unwrap();
        let (_, b) = core.lease_request(ms(1)).unwrap();
        assert!(b > a, "nonces increase");
        core.lease(&sid, ms(400), b, ms(2));
        assert_eq!(core.lease_period(), ms(100));
        // A longer TTL than the robot's maximum: the maximum sets the pace.
        let (_, c) = core.lease_request(ms(3)).unwrap();
        core.lease(&sid, Duration::from_secs(30), c, ms(4));
        assert_eq!(core.lease_period(), ms(250));
        // A zero TTL (a confused gateway) does not turn requests into a flood.
        let (_, d) = core.lease_request(ms(5)).unwrap();
        core.lease(&sid, Duration::ZERO, d, ms(6));
        assert_eq!(core.lease_period(), ms(250));
    }

    /// The link to the gateway, simulated in 1 ms steps: 20 ms each way, except that
    /// everything sent either way from `stall.0` to `stall.1` is held and delivered at
    /// `stall.1`, in order. The gateway answers the newest pending request (as its lease
    /// desk does) 5 ms after receiving it (its quorum check), with TTL 1 s; the console
    /// commands every 50 ms over WebRTC, which the stall does not touch. Returns the times
    /// at which commands were applied; asserts the lease property at every one.
    fn simulate(stall: (u64, u64), end: u64) -> Vec<u64> {
        let deliver = |t: u64| {
            if (stall.0..stall.1).contains(&t) {
                stall.1
            } else {
                t + 20
            }
        };
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        let mut up: VecDeque<(u64, String, u64)> = VecDeque::new();
        let mut down: VecDeque<(u64, String, u64)> = VecDeque::new();
        let mut pending: Option<(u64, String, u64)> = None;
        let mut sent_at: HashMap<u64, u64> = HashMap::new();
        // The send time of the newest request whose answer reached the robot.
        let mut anchor: Option<u64> = None;
        let (mut next_request, mut seq, mut applied_at) = (0, 0, Vec::new());
        for t in 0..end {
            let now = ms(t);
            while up.front().is_some_and(|m| m.0 <= t) {
                let (_, sid, nonce) = up.pop_front().unwrap();
                pending = Some((t + 5, sid, nonce));
            }
            if let Some((at, sid, nonce)) = pending.take_if(|p| p.0 <= t) {
                let _ = at;
                down.push_back((deliver(t), sid, nonce));
            }
            while down.front().is_some_and(|m| m.0 <= t) {
                let (_, sid, nonce) = down.pop_front().unwrap();
                core.lease(&sid, TTL, nonce, now);
                anchor = anchor.max(Some(sent_at[&nonce]));
            }
            core.tick(now);
            if t >= next_request {
                if let Some((sid, nonce)) = core.lease_request(now) {
                    sent_at.insert(nonce, t);
                    up.push_back((deliver(t), sid, nonce));
                }
                next_request = t + core.lease_period().as_millis() as u64;
            }
            if t % 50 == 0 {
                seq += 1;
                if applied(&core.control(cmd(seq), now)) {
                    let a = anchor.expect("a command applied without any lease");
                    assert!(
                        t < a + 1000,
                        "applied at {t}, TTL after the request sent at {a}"
                    );
                    applied_at.push(t);
                }
            }
        }
        applied_at
    }

    #[test]
    fn no_command_applies_later_than_ttl_after_the_request_that_preceded_the_grant() {
        // A healthy link: the robot drives throughout.
        let healthy = simulate((u64::MAX, u64::MAX), 4000);
        assert!(healthy.len() >= 78, "{healthy:?}");
        // The link stalls for 3 s, then delivers its backlog both ways.
        let applied = simulate((2000, 5000), 8000);
        assert!(
            applied.iter().any(|&t| t < 2000),
            "it drove before the stall"
        );
        // The last answer delivered before the stall was for a request sent before 2000:
        // nothing moves from 3000 until fresh requests have been answered after the stall.
        let during: Vec<_> = applied
            .iter()
            .filter(|&&t| (3000..5000).contains(&t))
            .collect();
        assert!(during.is_empty(), "moved during the stall: {during:?}");
        assert!(
            applied.iter().any(|&t| t > 5100),
            "it drives again after the stall"
        );
    }

    #[test]
    fn a_backlog_of_leases_after_a_stalled_link_rearms_nothing() {
        let mut core = driving();
        // Requests every 250 ms until 2000; the gateway answered them all, but its answers
        // sat in a stalled link and arrive together at 4000.
        let backlog: Vec<_> = (1..=8)
            .map(|i| core.lease_request(ms(i * 250)).unwrap())
            .collect();
        let mut seq = 1;
        for t in (50..1000).step_by(50) {
            seq += 1;
            core.control(cmd(seq), ms(t));
        }
        assert_eq!(causes(&core.tick(ms(1000))), vec![StopCause::LeaseExpired]);
        for (sid, nonce) in &backlog {
            core.lease(sid, TTL, *nonce, ms(4000));
        }
        for t in [4000, 4050, 4100] {
            seq += 1;
            assert!(!applied(&core.control(cmd(seq), ms(t))), "re-armed at {t}");
        }
        assert_eq!(core.stop_cause(), Some(StopCause::LeaseExpired));
        // A fresh request answered promptly re-arms.
        grant(&mut core, ms(4150), ms(4170));
        assert!(applied(&core.control(cmd(seq + 1), ms(4200))));
    }

    #[test]
    fn a_lease_for_another_session_counts_for_nothing() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate(Ok(creds(SID, "j")), ms(0));
        let (_, nonce) = core.lease_request(ms(0)).unwrap();
        core.lease("ses_other", TTL, nonce, ms(0));
        assert!(!applied(&core.control(cmd(1), ms(0))));
    }

    #[test]
    fn revoke_latches_safe_stop_until_a_new_session() {
        let mut core = driving();
        let (_, nonce) = core.lease_request(ms(1)).unwrap();
        let effects = core.end_session(SID, StopCause::Revoked);
        assert_eq!(causes(&effects), vec![StopCause::Revoked]);
        assert!(effects.contains(&Effect::ClosePeer {
            session_id: SID.into()
        }));
        // In-flight commands, leases and a re-opened channel change nothing.
        core.lease(SID, TTL, nonce, ms(1));
        assert!(!applied(&core.control(cmd(2), ms(1))));
        assert!(core.tick(ms(2)).is_empty());
        assert_eq!(core.stop_cause(), Some(StopCause::Revoked));
        // Hearing it twice records nothing new.
        assert!(core.end_session(SID, StopCause::Revoked).is_empty());
        // A new session re-arms once it has everything.
        core.assign("ses_2", ms(5));
        core.authenticate(Ok(creds("ses_2", "jti-2")), ms(5));
        grant(&mut core, ms(5), ms(5));
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
    fn control_from_another_peer_connection_is_refused() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate_on(1, Ok(creds(SID, "j")), ms(0));
        grant(&mut core, ms(0), ms(0));
        // PeerConnection 2 never authenticated: its commands move nothing, and do not use
        // up sequence numbers the authenticated console will send.
        assert!(core.control_on(2, cmd(5), ms(1)).is_empty());
        assert!(applied(&core.control_on(1, cmd(1), ms(2))));
        // Once PeerConnection 2 authenticates, the older one's commands are refused.
        core.authenticate_on(2, Ok(creds(SID, "j")), ms(3));
        assert!(core.control_on(1, cmd(2), ms(4)).is_empty());
        assert!(applied(&core.control_on(2, cmd(3), ms(5))));
    }

    #[test]
    fn an_expired_token_stops_the_robot_and_a_fresh_auth_extends_it() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        // A token at (or past) its expiry is refused outright.
        assert_eq!(
            core.authenticate_on(1, Ok(expiring(SID, "j", Duration::ZERO)), ms(0)),
            vec![Effect::AuthDenied {
                session_id: Some(SID.into()),
                reason: DenyReason::TokenExpired
            }]
        );
        core.authenticate_on(1, Ok(expiring(SID, "j", ms(500))), ms(0));
        let mut seq = 0;
        for t in (0..500).step_by(50) {
            if t % 250 == 0 {
                grant(&mut core, ms(t), ms(t));
            }
            seq += 1;
            assert!(applied(&core.control_on(1, cmd(seq), ms(t))));
        }
        assert_eq!(core.next_deadline(), Some(ms(500)));
        assert_eq!(causes(&core.tick(ms(500))), vec![StopCause::TokenExpired]);
        assert_eq!(core.stop_cause(), Some(StopCause::TokenExpired));
        seq += 1;
        assert!(!applied(&core.control_on(1, cmd(seq), ms(510))));
        assert_eq!(core.stop_cause(), Some(StopCause::TokenExpired));
        // A fresh token on the same channel carries on.
        core.authenticate_on(1, Ok(expiring(SID, "j2", ms(1000))), ms(520));
        seq += 1;
        assert!(applied(&core.control_on(1, cmd(seq), ms(530))));
        assert_eq!(
            core.current.as_ref().unwrap().auth.as_ref().unwrap().until,
            ms(1520)
        );
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
        assert_eq!(core.lease_request(ms(0)), None);
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
    fn estop_latches_until_the_authenticated_channel_rearms() {
        let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
        core.assign(SID, ms(0));
        core.authenticate_on(1, Ok(creds(SID, "j")), ms(0));
        grant(&mut core, ms(0), ms(0));
        assert!(applied(&core.control_on(1, cmd(1), ms(1))));
        assert_eq!(causes(&core.estop(ms(5))), vec![StopCause::Estop]);
        // Fresh commands do not move the robot.
        assert!(!applied(&core.control_on(1, cmd(2), ms(6))));
        assert_eq!(core.stop_cause(), Some(StopCause::Estop));
        // Nor does a reconnect: a new PeerConnection authenticates, still latched.
        core.channel_closed_on(Some(1), ms(7));
        core.authenticate_on(2, Ok(creds(SID, "j")), ms(8));
        assert!(!applied(&core.control_on(2, cmd(3), ms(9))));
        // A rearm from a channel that is not the authenticated one is ignored.
        assert!(core.rearm_on(1, ms(10)).is_empty());
        assert!(core.estopped());
        assert_eq!(
            core.rearm_on(2, ms(11)),
            vec![Effect::Rearmed {
                session_id: SID.into()
            }]
        );
        assert!(!core.armed(), "rearm alone moves nothing");
        assert!(applied(&core.control_on(2, cmd(4), ms(12))));
        // An e-stop pressed while already stopped latches too.
        core.tick(ms(400));
        assert_eq!(core.stop_cause(), Some(StopCause::ControlLoss));
        assert!(core.estop(ms(401)).is_empty());
        assert_eq!(core.stop_cause(), Some(StopCause::Estop));
        grant(&mut core, ms(402), ms(402));
        assert!(!applied(&core.control_on(2, cmd(5), ms(403))));
        // A new session starts unlatched.
        core.assign("ses_2", ms(500));
        assert!(!core.estopped());
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

    /// The inputs of the exhaustive test. Every `auth` is on PeerConnection 1.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Input {
        Assign(u8),
        Auth(u8),
        /// Auth for session 1 with a token that expires in 400 ms.
        AuthShort,
        Request,
        /// The newest request answered, with a TTL above the robot's maximum.
        EchoNewest,
        /// The oldest request answered (superseded if a newer one was).
        EchoOldest,
        /// The newest nonce in the other session's name.
        EchoForeign,
        Control(u64),
        Estop,
        Rearm(u64),
        Revoke(u8),
        Close,
        Wait(u64),
    }

    /// What the exhaustive test knows independently of the core.
    #[derive(Default)]
    struct Model {
        now: Instant,
        seq: u64,
        revoked: HashSet<String>,
        /// Every request issued: (session, nonce, sent at).
        requests: Vec<(String, u64, Instant)>,
        /// Per session, the latest send time of a request whose answer arrived.
        anchor: HashMap<String, Instant>,
        /// When the last accepted token expires.
        token_until: Option<Instant>,
        /// An e-stop came and no rearm since (any rearm clears it here: weaker than the core).
        latched: bool,
    }

    fn sid(n: u8) -> String {
        format!("ses_{n}")
    }

    fn step(core: &mut SafetyCore, m: &mut Model, input: Input) -> Vec<Effect> {
        let now = m.now;
        let echo = |core: &mut SafetyCore,
                    m: &mut Model,
                    r: Option<&(String, u64, Instant)>,
                    name: Option<String>,
                    ttl| {
            let Some((s, nonce, sent)) = r.cloned() else {
                return Vec::new();
            };
            let name = name.unwrap_or(s);
            let entry = m.anchor.entry(name.clone()).or_default();
            *entry = (*entry).max(sent);
            core.lease(&name, ttl, nonce, now)
        };
        match input {
            Input::Assign(n) => {
                if core.session_id() != Some(&sid(n)) {
                    m.latched = false;
                    m.token_until = None;
                }
                core.assign(&sid(n), now)
            }
            Input::Auth(_) | Input::AuthShort => {
                let (n, life) = match input {
                    Input::Auth(n) => (n, Duration::from_secs(10)),
                    _ => (1, ms(400)),
                };
                let effects = core.authenticate_on(1, Ok(expiring(&sid(n), "j", life)), now);
                if matches!(effects[..], [Effect::AuthOk { .. }]) {
                    m.token_until = Some(now + life);
                }
                effects
            }
            Input::Request => {
                if let Some((s, nonce)) = core.lease_request(now) {
                    m.requests.push((s, nonce, now));
                }
                Vec::new()
            }
            Input::EchoNewest => {
                let r = m.requests.last().cloned();
                echo(core, m, r.as_ref(), None, Duration::from_secs(5))
            }
            Input::EchoOldest => {
                let r = m.requests.first().cloned();
                echo(core, m, r.as_ref(), None, TTL)
            }
            Input::EchoForeign => {
                let r = m.requests.last().cloned();
                let other = r
                    .as_ref()
                    .map(|(s, ..)| if *s == sid(1) { sid(2) } else { sid(1) });
                echo(core, m, r.as_ref(), other, TTL)
            }
            Input::Control(channel) => {
                m.seq += 1;
                core.control_on(channel, cmd(m.seq), now)
            }
            Input::Estop => {
                m.latched |= core.session_id().is_some();
                core.estop(now)
            }
            Input::Rearm(channel) => {
                if channel == 1 {
                    m.latched = false;
                }
                core.rearm_on(channel, now)
            }
            Input::Revoke(n) => {
                m.revoked.insert(sid(n));
                core.end_session(&sid(n), StopCause::Revoked)
            }
            Input::Close => core.channel_closed_on(Some(1), now),
            Input::Wait(d) => {
                m.now += ms(d);
                core.tick(m.now)
            }
        }
    }

    /// Every order of a small alphabet of inputs keeps the invariants: a command is applied
    /// only from the authenticated PeerConnection, with an unexpired token, in a session
    /// neither ended nor revoked, with no e-stop latched, and no later than the lease's TTL
    /// (at most the robot's maximum) after the send time of a request that was answered.
    #[test]
    fn no_sequence_of_inputs_applies_a_command_without_every_condition() {
        let alphabet = [
            Input::Assign(1),
            Input::Assign(2),
            Input::Auth(1),
            Input::Auth(2),
            Input::AuthShort,
            Input::Request,
            Input::EchoNewest,
            Input::EchoOldest,
            Input::EchoForeign,
            Input::Control(1),
            Input::Control(2),
            Input::Estop,
            Input::Rearm(1),
            Input::Rearm(2),
            Input::Revoke(1),
            Input::Close,
            Input::Wait(250),
            Input::Wait(1100),
        ];
        // From boot, and from a robot already driving session 1 (where longer stories are
        // in reach: a request answered after a wait, a rearm after an e-stop).
        let starts: [(&[Input], u32); 2] = [
            (&[], 4),
            (
                &[
                    Input::Assign(1),
                    Input::Auth(1),
                    Input::Request,
                    Input::EchoNewest,
                    Input::Control(1),
                ],
                5,
            ),
        ];
        for (prefix, depth) in starts {
            for mut code in 0..alphabet.len().pow(depth) {
                let (mut core, _) = SafetyCore::boot(SafetyConfig::default());
                let mut m = Model::default();
                let inputs = prefix.iter().copied().chain((0..depth).map(|_| {
                    let input = alphabet[code % alphabet.len()];
                    code /= alphabet.len();
                    input
                }));
                for input in inputs {
                    let effects = step(&mut core, &mut m, input);
                    if applied(&effects) {
                        let current = core.current.as_ref().expect("a session");
                        assert_eq!(input, Input::Control(1), "only the authenticated peer");
                        assert!(current.auth.is_some() && current.ended.is_none());
                        assert!(!m.revoked.contains(&current.id));
                        assert!(!m.latched, "applied under a latched e-stop");
                        assert!(m.token_until.is_some_and(|u| m.now < u), "expired token");
                        let anchor = m.anchor.get(&current.id).copied();
                        assert!(
                            anchor.is_some_and(|a| m.now < a + TTL),
                            "applied at {:?} past TTL after the request of {anchor:?}",
                            m.now
                        );
                        assert!(current.lease_until.is_some_and(|u| m.now < u));
                        assert!(core.armed());
                    }
                    // Armed implies every condition, at all times the watchdog could look.
                    if core.armed() {
                        let current = core.current.as_ref().expect("a session");
                        assert!(current.auth.is_some() && current.ended.is_none());
                        assert!(!current.estopped);
                        assert!(m.token_until.is_some_and(|u| m.now < u), "armed, expired");
                        assert!(core.next_deadline().is_some_and(|d| m.now < d));
                    }
                }
            }
        }
    }
}
