//! The boundary to the robot's hardware: an [`Actuator`] trait, and the simulated robot that
//! stands in for hardware by default and records what it was told.

use crate::safety::Command;
use std::sync::{Arc, Mutex};

/// What drives the robot. Real hardware implements this; calls come from the safety core's
/// owner, never concurrently, and must return quickly (they run under its lock).
pub trait Actuator: Send {
    /// Move according to `command`.
    fn apply(&mut self, command: &Command);
    /// Stop all motion now.
    fn stop(&mut self);
}

/// A simulated robot's state, readable while it runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimulatedState {
    /// Position, metres.
    pub x: f64,
    /// Position, metres.
    pub y: f64,
    /// Heading, radians.
    pub heading: f64,
    /// Whether it is moving (the last call was `apply` with a non-zero command).
    pub moving: bool,
    /// Commands applied so far.
    pub commands: u64,
    /// Stops so far.
    pub stops: u64,
}

/// A robot that integrates each applied command over one control period (50 ms).
#[derive(Clone, Debug, Default)]
pub struct SimulatedRobot {
    state: Arc<Mutex<SimulatedState>>,
}

/// The period a command is assumed to last, for the simulation.
const STEP_SECONDS: f64 = 0.05;
/// Top speed, metres per second; top turn rate, radians per second.
const TOP_SPEED: f64 = 1.0;
const TOP_TURN: f64 = 1.5;

impl SimulatedRobot {
    /// A robot at the origin, facing +x.
    pub fn new() -> Self {
        Self::default()
    }

    /// A snapshot of its state.
    pub fn state(&self) -> SimulatedState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimulatedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Actuator for SimulatedRobot {
    fn apply(&mut self, command: &Command) {
        let mut s = self.lock();
        s.heading += command.angular.clamp(-1.0, 1.0) * TOP_TURN * STEP_SECONDS;
        let distance = command.linear.clamp(-1.0, 1.0) * TOP_SPEED * STEP_SECONDS;
        s.x += distance * s.heading.cos();
        s.y += distance * s.heading.sin();
        s.moving = command.linear != 0.0 || command.angular != 0.0;
        s.commands += 1;
    }

    fn stop(&mut self) {
        let mut s = self.lock();
        s.moving = false;
        s.stops += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_moves_along_the_heading_and_stop_records() {
        let mut robot = SimulatedRobot::new();
        robot.apply(&Command {
            seq: 1,
            linear: 1.0,
            angular: 0.0,
        });
        let s = robot.state();
        assert!((s.x - 0.05).abs() < 1e-9 && s.y == 0.0 && s.moving);
        robot.stop();
        let s = robot.state();
        assert!(!s.moving);
        assert_eq!((s.commands, s.stops), (1, 1));
    }
}
