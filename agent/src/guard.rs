//! The safety core's owner: carries out its effects on the actuator, and runs the watchdog
//! thread that stops the robot when a token, a lease or control runs out.
//!
//! The watchdog is a plain OS thread on the monotonic clock. It shares one mutex with the
//! network tasks, held only for the core's update and the actuator call: events and log
//! lines leave through a bounded queue to a writer thread (dropped, and counted, when the
//! queue is full), so a stalled events file or log cannot hold up a stop.

use crate::actuator::Actuator;
use crate::events::{monotonic_now, EventLog};
use crate::safety::{
    Command, Credentials, DenyReason, Effect, SafetyConfig, SafetyCore, StopCause,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest the watchdog sleeps without looking, whatever the deadlines say.
const WATCHDOG_MAX_SLEEP: Duration = Duration::from_millis(20);
/// How many records may wait for the writer thread; beyond it they are dropped.
pub const EVENTS_QUEUE: usize = 1024;

struct Inner {
    core: SafetyCore,
    actuator: Box<dyn Actuator>,
}

impl Inner {
    /// Carries out the effects that touch the robot (nothing else: this runs under the lock).
    fn actuate(&mut self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::Apply { command, .. } => self.actuator.apply(command),
                Effect::SafeStop { .. } => self.actuator.stop(),
                _ => {}
            }
        }
    }
}

/// An effect to record, with the instant the core saw it.
struct Record {
    t: Duration,
    effect: Effect,
}

/// The sending end of the events queue. `try_send` never waits for the writer, so it is
/// safe under the lock (where it keeps the core's order).
#[derive(Clone)]
struct Recorder {
    tx: SyncSender<Record>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    fn send(&self, t: Duration, effects: &[Effect]) {
        for effect in effects {
            let record = Record {
                t,
                effect: effect.clone(),
            };
            if self.tx.try_send(record).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
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
    /// Events (and their log lines) dropped so far because the writer fell behind.
    pub events_dropped: u64,
}

/// The safety core behind a lock, with its watchdog thread and its events writer.
pub struct SafetyGuard {
    inner: Arc<Mutex<Inner>>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

impl SafetyGuard {
    /// Boots the core (in safe-stop) and starts the watchdog and the events writer.
    pub fn start(config: SafetyConfig, actuator: Box<dyn Actuator>, events: EventLog) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(EVENTS_QUEUE);
        let recorder = Recorder {
            tx,
            dropped: Arc::default(),
        };
        {
            let dropped = recorder.dropped.clone();
            // Never joined: a writer stuck in a write must not hold up the guard's drop.
            std::thread::Builder::new()
                .name("tether-events".into())
                .spawn(move || writer(rx, events, dropped))
                .expect("spawning the events writer");
        }
        let (core, effects) = SafetyCore::boot(config);
        let mut inner = Inner { core, actuator };
        inner.actuate(&effects);
        recorder.send(monotonic_now(), &effects);
        let inner = Arc::new(Mutex::new(inner));
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (inner, recorder, stop) = (inner.clone(), recorder.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tether-watchdog".into())
                .spawn(move || watchdog(inner, recorder, stop))
                .expect("spawning the watchdog thread")
        };
        Self {
            inner,
            recorder,
            stop,
            watchdog: Some(watchdog),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn input(&self, f: impl FnOnce(&mut SafetyCore, Duration) -> Vec<Effect>) -> Vec<Effect> {
        let effects = {
            let mut inner = self.lock();
            let now = monotonic_now();
            let effects = f(&mut inner.core, now);
            inner.actuate(&effects);
            self.recorder.send(now, &effects);
            effects
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

    /// See [`SafetyCore::lease_request`]: the `(session_id, nonce)` to send now.
    pub fn lease_request(&self) -> Option<(String, u64)> {
        let mut inner = self.lock();
        inner.core.lease_request(monotonic_now())
    }

    /// See [`SafetyCore::lease_period`].
    pub fn lease_period(&self) -> Duration {
        self.lock().core.lease_period()
    }

    /// See [`SafetyCore::lease`].
    pub fn lease(&self, session_id: &str, ttl: Duration, nonce: u64) -> Vec<Effect> {
        self.input(|c, now| c.lease(session_id, ttl, nonce, now))
    }

    /// See [`SafetyCore::control_on`].
    pub fn control(&self, channel: u64, command: Command) -> Vec<Effect> {
        self.input(|c, now| c.control_on(channel, command, now))
    }

    /// See [`SafetyCore::estop`].
    pub fn estop(&self) -> Vec<Effect> {
        self.input(|c, now| c.estop(now))
    }

    /// See [`SafetyCore::rearm_on`].
    pub fn rearm(&self, channel: u64) -> Vec<Effect> {
        self.input(|c, now| c.rearm_on(channel, now))
    }

    /// See [`SafetyCore::end_session`].
    pub fn end_session(&self, session_id: &str, cause: StopCause) -> Vec<Effect> {
        self.input(|c, _| c.end_session(session_id, cause))
    }

    /// Where the core stands now.
    pub fn status(&self) -> GuardStatus {
        let inner = self.lock();
        GuardStatus {
            armed: inner.core.armed(),
            cause: inner.core.stop_cause(),
            session_id: inner.core.session_id().map(str::to_owned),
            events_dropped: self.recorder.dropped.load(Ordering::Relaxed),
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
/// Its stop path takes the lock and calls the actuator; nothing else.
fn watchdog(inner: Arc<Mutex<Inner>>, recorder: Recorder, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let (now, deadline) = {
            let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
            let now = monotonic_now();
            let effects = inner.core.tick(now);
            inner.actuate(&effects);
            recorder.send(now, &effects);
            (now, inner.core.next_deadline())
        };
        let sleep = deadline
            .map(|d| d.saturating_sub(now))
            .unwrap_or(WATCHDOG_MAX_SLEEP)
            .min(WATCHDOG_MAX_SLEEP);
        std::thread::park_timeout(sleep);
    }
}

/// Writes each record to the events file and the log, in the core's order, until every
/// sender is gone; reports drops once it catches up.
fn writer(rx: Receiver<Record>, events: EventLog, dropped: Arc<AtomicU64>) {
    let mut reported = 0;
    for Record { t, effect } in rx {
        record(&events, t, &effect);
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped > reported {
            tracing::warn!(
                dropped = now_dropped,
                "the events queue was full: events were dropped"
            );
            events.now("events_dropped", json!({ "count": now_dropped }));
            reported = now_dropped;
        }
    }
}

fn record(events: &EventLog, t: Duration, effect: &Effect) {
    match effect {
        Effect::Armed { session_id } => {
            tracing::info!(%session_id, "armed");
            events.record(t, "armed", json!({ "session_id": session_id }));
        }
        Effect::Apply {
            session_id,
            command,
        } => events.record(
            t,
            "command_applied",
            json!({
                "session_id": session_id,
                "seq": command.seq,
                "linear": command.linear,
                "angular": command.angular,
            }),
        ),
        Effect::SafeStop { cause, session_id } => {
            tracing::info!(cause = cause.as_str(), ?session_id, "safe-stop");
            events.record(
                t,
                "safe_stop",
                json!({ "cause": cause.as_str(), "session_id": session_id }),
            );
        }
        Effect::Rearmed { session_id } => {
            tracing::info!(%session_id, "e-stop cleared (rearm)");
            events.record(t, "rearmed", json!({ "session_id": session_id }));
        }
        Effect::AuthOk { session_id } => {
            events.record(t, "auth_ok", json!({ "session_id": session_id }));
        }
        Effect::AuthDenied { session_id, reason } => events.record(
            t,
            "auth_denied",
            json!({ "session_id": session_id, "reason": reason.as_str() }),
        ),
        // The network side closes the PeerConnection and records `peer_closed`.
        Effect::ClosePeer { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::SimulatedRobot;
    use std::io::Write;
    use std::sync::mpsc;

    fn creds() -> Credentials {
        Credentials {
            session_id: "ses_1".into(),
            token_id: "j".into(),
            operator: "alice".into(),
            expires_in: Duration::from_secs(3600),
        }
    }

    fn cmd(seq: u64) -> Command {
        Command {
            seq,
            linear: 1.0,
            angular: 0.0,
        }
    }

    fn config() -> SafetyConfig {
        SafetyConfig {
            control_timeout: Duration::from_millis(30),
            ..SafetyConfig::default()
        }
    }

    /// Session 1, authenticated on PeerConnection 1, leased, driving.
    fn drive(guard: &SafetyGuard) {
        guard.assign("ses_1");
        guard.authenticate(1, Ok(creds()));
        let (sid, nonce) = guard.lease_request().expect("a session");
        guard.lease(&sid, Duration::from_secs(10), nonce);
        guard.control(1, cmd(1));
    }

    /// Polls `done` (a condition wait) until it holds or `within` passes.
    fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + within;
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }

    /// The real thread, on the real clock: silence stops the robot without any input.
    #[test]
    fn the_watchdog_stops_a_silent_robot_on_its_own() {
        let robot = SimulatedRobot::new();
        let guard = SafetyGuard::start(config(), Box::new(robot.clone()), EventLog::disabled());
        drive(&guard);
        assert!(guard.status().armed);
        assert!(robot.state().moving);
        wait_until(Duration::from_secs(5), "the watchdog never fired", || {
            !guard.status().armed
        });
        assert_eq!(guard.status().cause, Some(StopCause::ControlLoss));
        assert!(!robot.state().moving);
    }

    /// A sink whose writes block until it is released, then collect what they are given.
    struct Stalled {
        gate: Option<Receiver<()>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.gate.take() {
                // Blocks until the test drops the sending end.
                let _ = gate.recv();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The events sink blocks on its first write (the boot record) and stays blocked: the
    /// robot still drives, the watchdog still stops it on time, and the events that did not
    /// fit in the queue are counted, then reported once the sink moves again.
    #[test]
    fn the_watchdog_stops_the_robot_while_the_events_sink_is_stuck() {
        let robot = SimulatedRobot::new();
        let (release, gate) = mpsc::channel::<()>();
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Stalled {
            gate: Some(gate),
            written: written.clone(),
        };
        // Driven from another thread, so that a guard that blocked on the sink fails this
        // test instead of hanging it.
        let (done, driven) = mpsc::channel();
        let r = robot.clone();
        std::thread::spawn(move || {
            let guard =
                SafetyGuard::start(config(), Box::new(r), EventLog::to_sink(Box::new(sink)));
            drive(&guard);
            // Far more records than the queue holds.
            for seq in 2..(EVENTS_QUEUE as u64 * 2) {
                guard.control(1, cmd(seq));
            }
            let _ = done.send(guard);
        });
        let guard = driven
            .recv_timeout(Duration::from_secs(10))
            .expect("the guard blocked on its events sink");
        assert!(robot.state().commands > 0);
        wait_until(
            Duration::from_secs(5),
            "the watchdog did not stop the robot",
            || !robot.state().moving,
        );
        let status = guard.status();
        assert_eq!(status.cause, Some(StopCause::ControlLoss));
        assert!(status.events_dropped > 0, "{status:?}");
        // Released, the writer catches up and says how many it dropped.
        drop(release);
        wait_until(Duration::from_secs(5), "no events_dropped line", || {
            String::from_utf8_lossy(&written.lock().unwrap()).contains("\"events_dropped\"")
        });
    }
}
