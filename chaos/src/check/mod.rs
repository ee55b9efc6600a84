//! The checkers: pure functions from a saved history to a verdict with a minimal
//! counterexample, so a history saved by a run (or kept as a fixture) re-checks in CI.

mod available;
mod bounded;
mod common;
mod control_loss;
mod fail_closed;
mod liveness;
mod lost;
mod stale;

pub use available::majority_available;
pub use bounded::bounded_control;
pub use control_loss::control_loss;
pub use fail_closed::fail_closed;
pub use liveness::liveness;
pub use lost::no_lost_revocation;
pub use stale::no_stale_admission;

use crate::history::{Event, History};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The bounds the checkers hold the run to (milliseconds unless named otherwise).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    /// How far inside a quorum-lost window a node must be before it has to know (the
    /// election timeout's upper end): `fail_closed` shrinks each window by this at both ends.
    pub quorum_margin_ms: f64,
    /// Revoke ack → last command applied, when the robot can hear a gateway (S5 push).
    pub push_bound_ms: f64,
    /// The robot's lease TTL (S7).
    pub lease_ttl_ms: f64,
    /// Added to the TTL when the robot is cut off (the target is TTL + 100 ms).
    pub lease_margin_ms: f64,
    /// The robot's control-loss timeout (S6).
    pub control_timeout_ms: f64,
    /// Added to it: the watchdog's tick and the event's write.
    pub control_margin_ms: f64,
    /// After the last nemesis stop, how long the cluster may take to work again.
    pub heal_grace_ms: f64,
    /// How long a kept majority may take to elect a leader when the fault took the old
    /// one: `majority_available` starts each window this much later.
    pub election_ms: f64,
    /// The least throughput (ok operations per second) before the first fault for the run
    /// to count.
    pub min_ops_per_s: f64,
    /// Whether robots drive in the run: `liveness` then also wants a command applied after
    /// healing. A workload without robots (revocations and sessions only) sets it false.
    pub robots_drive: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            quorum_margin_ms: 200.0,
            push_bound_ms: 20.0,
            lease_ttl_ms: 1_000.0,
            lease_margin_ms: 100.0,
            control_timeout_ms: 300.0,
            control_margin_ms: 50.0,
            heal_grace_ms: 2_000.0,
            election_ms: 1_500.0,
            min_ops_per_s: 5.0,
            robots_drive: true,
        }
    }
}

/// Whether a property held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Validity {
    /// It held.
    Valid,
    /// It was violated: see the counterexample.
    Invalid,
    /// The history cannot tell (the run did too little, or lacks what the checker needs).
    Unknown(String),
}

/// One checker's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The checker's name.
    pub checker: &'static str,
    /// Whether the property held.
    pub valid: Validity,
    /// What the checker counted.
    pub counts: BTreeMap<String, u64>,
    /// The few events that show the first violation, in time order (empty unless invalid).
    pub counterexample: Vec<Event>,
    /// Latency percentiles, the violations in full, and other figures.
    pub detail: serde_json::Value,
}

impl Verdict {
    fn new(checker: &'static str) -> Self {
        Self {
            checker,
            valid: Validity::Valid,
            counts: BTreeMap::new(),
            counterexample: Vec::new(),
            detail: serde_json::Value::Object(Default::default()),
        }
    }

    /// Adds `n` to the count `name`.
    fn count(&mut self, name: &str, n: u64) {
        *self.counts.entry(name.to_owned()).or_default() += n;
    }

    /// Sets `detail[key]`.
    fn detail(&mut self, key: &str, value: serde_json::Value) {
        if let serde_json::Value::Object(map) = &mut self.detail {
            map.insert(key.to_owned(), value);
        }
    }

    /// Marks the verdict invalid with its first counterexample (later ones go to detail).
    fn violated(&mut self, mut events: Vec<Event>) {
        if self.valid != Validity::Invalid {
            self.valid = Validity::Invalid;
            events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
            events.dedup();
            self.counterexample = events;
        }
    }

    /// Marks the verdict unknown unless it is already invalid (a seen violation stands).
    fn unknown(&mut self, reason: String) {
        if self.valid == Validity::Valid {
            self.valid = Validity::Unknown(reason);
        }
    }

    /// Whether the property held.
    pub fn is_valid(&self) -> bool {
        self.valid == Validity::Valid
    }
}

/// Every checker, in the report's order.
pub fn check_all(history: &History, params: &Params) -> Vec<Verdict> {
    vec![
        no_lost_revocation(history, params),
        no_stale_admission(history, params),
        fail_closed(history, params),
        bounded_control(history, params),
        control_loss(history, params),
        liveness(history, params),
        majority_available(history, params),
    ]
}
