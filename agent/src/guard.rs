//! The safety core's owner: carries out its effects on the actuator and the events file,
//! and runs the watchdog thread that stops the robot when a lease or control runs out.
//!
//! The watchdog is a plain OS thread on the monotonic clock: it shares only a mutex with the
//! network tasks (held for microseconds), so a busy or stalled async runtime cannot delay it.

use crate::actuator::Actuator;
use crate::events::{monotonic_now, EventLog};
use crate::safety::{
    Command, Credentials, DenyReason, Effect, SafetyConfig, SafetyCore, StopCause,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest the watchdog sleeps without looking, whatever the deadlines say.
const WATCHDOG_MAX_SLEEP: Duration = Duration::from_millis(20);

struct Inner {
    core: SafetyCore,
    actuator: Box<dyn Actuator>,
    events: EventLog,
}

impl Inner {
    /// Carries out the effects that touch the robot and records them; returns them all.
    fn carry_out(&mut self, effects: Vec<Effect>, now: Duration) -> Vec<Effect> {
        for effect in &effects {
            match effect {
                Effect::Armed { session_id } => {
                    tracing::info!(%session_id, "armed");
                    self.events
                        .record(now, "armed", json!({ "session_id": session_id }));
                }
                Effect::Apply {
                    session_id,
                    command,
                } => {
                    self.actuator.apply(command);
                    self.events.record(
                        now,
                        "command_applied",
                        json!({
                            "session_id": session_id,
                            "seq": command.seq,
                            "linear": command.linear,
                            "angular": command.angular,
                        }),
                    );
                }
                Effect::SafeStop { cause, session_id } => {
                    self.actuator.stop();
                    tracing::info!(cause = cause.as_str(), ?session_id, "safe-stop");
                    self.events.record(
                        now,
                        "safe_stop",
                        json!({ "cause": cause.as_str(), "session_id": session_id }),
                    );
                }
                Effect::AuthOk { session_id } => {
                    self.events
                        .record(now, "auth_ok", json!({ "session_id": session_id }));
                }
                Effect::AuthDenied { session_id, reason } => {
                    self.events.record(
                        now,
                        "auth_denied",
                        json!({ "session_id": session_id, "reason": reason.as_str() }),
                    );
                }
                // The network side closes the PeerConnection and records `peer_closed`.
                Effect::ClosePeer { .. } => {}
            }
        }
        effects
    }
}

/// A snapshot for telemetry.
#[derive(Clone, Debug, PartialEq)]
pub struct GuardStatus {
    /// Whether the robot may move.
    pub armed: bool,
    /// Why it is stopped.
    pub cause: Option<StopCause>,
    /// The session it serves.
    pub session_id: Option<String>,
}

/// The safety core behind a lock, with its watchdog thread.
pub struct SafetyGuard {
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

impl SafetyGuard {
    /// Boots the core (in safe-stop) and starts the watchdog.
    pub fn start(config: SafetyConfig, actuator: Box<dyn Actuator>, events: EventLog) -> Self {
        let (core, effects) = SafetyCore::boot(config);
        let mut inner = Inner {
            core,
            actuator,
            events,
        };
        inner.carry_out(effects, monotonic_now());
        let inner = Arc::new(Mutex::new(inner));
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let inner = inner.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tether-watchdog".into())
                .spawn(move || watchdog(inner, stop))
                .expect("spawning the watchdog thread")
        };
        Self {
            inner,
            stop,
            watchdog: Some(watchdog),
        }
    }

    fn input(&self, f: impl FnOnce(&mut SafetyCore, Duration) -> Vec<Effect>) -> Vec<Effect> {
        let effects = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let now = monotonic_now();
            let effects = f(&mut inner.core, now);
            inner.carry_out(effects, now)
        };
        // A new deadline may be earlier than the one the watchdog sleeps towards.
        if let Some(w) = &self.watchdog {
            w.thread().unpark();
        }
        effects
    }

    /// See [`SafetyCore::assign`].
    pub fn assign(&self, session_id: &str) -> Vec<Effect> {
        self.input(|c, now| c.assign(session_id, now))
    }

    /// See [`SafetyCore::authenticate_on`].
    pub fn authenticate(
        &self,
        channel: u64,
        verified: Result<Credentials, DenyReason>,
    ) -> Vec<Effect> {
        self.input(|c, now| c.authenticate_on(channel, verified, now))
    }

    /// See [`SafetyCore::channel_closed_on`].
    pub fn channel_closed(&self, channel: u64) -> Vec<Effect> {
        self.input(|c, now| c.channel_closed_on(Some(channel), now))
    }

    /// See [`SafetyCore::lease`].
    pub fn lease(&self, session_id: &str, ttl: Duration) -> Vec<Effect> {
        self.input(|c, now| c.lease(session_id, ttl, now))
    }

    /// See [`SafetyCore::control`].
    pub fn control(&self, command: Command) -> Vec<Effect> {
        self.input(|c, now| c.control(command, now))
    }

    /// See [`SafetyCore::estop`].
    pub fn estop(&self) -> Vec<Effect> {
        self.input(|c, now| c.estop(now))
    }

    /// See [`SafetyCore::end_session`].
    pub fn end_session(&self, session_id: &str, cause: StopCause) -> Vec<Effect> {
        self.input(|c, _| c.end_session(session_id, cause))
    }

    /// Where the core stands now.
    pub fn status(&self) -> GuardStatus {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        GuardStatus {
            armed: inner.core.armed(),
            cause: inner.core.stop_cause(),
            session_id: inner.core.session_id().map(str::to_owned),
        }
    }
}

impl Drop for SafetyGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watchdog.take() {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// Ticks the core at each deadline (or every [`WATCHDOG_MAX_SLEEP`]) until told to stop.
fn watchdog(inner: Arc<Mutex<Inner>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let (now, deadline) = {
            let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
            let now = monotonic_now();
            let effects = inner.core.tick(now);
            inner.carry_out(effects, now);
            (now, inner.core.next_deadline())
        };
        let sleep = deadline
            .map(|d| d.saturating_sub(now))
            .unwrap_or(WATCHDOG_MAX_SLEEP)
            .min(WATCHDOG_MAX_SLEEP);
        std::thread::park_timeout(sleep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::SimulatedRobot;

    fn creds() -> Credentials {
        Credentials {
            session_id: "ses_1".into(),
            token_id: "j".into(),
            operator: "alice".into(),
        }
    }

    /// The real thread, on the real clock: silence stops the robot without any input.
    #[test]
    fn the_watchdog_stops_a_silent_robot_on_its_own() {
        let robot = SimulatedRobot::new();
        let guard = SafetyGuard::start(
            SafetyConfig {
                control_timeout: Duration::from_millis(30),
            },
            Box::new(robot.clone()),
            EventLog::disabled(),
        );
        guard.assign("ses_1");
        guard.authenticate(1, Ok(creds()));
        guard.lease("ses_1", Duration::from_secs(10));
        guard.control(Command {
            seq: 1,
            linear: 1.0,
            angular: 0.0,
        });
        assert!(guard.status().armed);
        assert!(robot.state().moving);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while guard.status().armed {
            assert!(
                std::time::Instant::now() < deadline,
                "the watchdog never fired"
            );
            std::thread::park_timeout(Duration::from_millis(5));
        }
        assert_eq!(guard.status().cause, Some(StopCause::ControlLoss));
        assert!(!robot.state().moving);
    }
}
