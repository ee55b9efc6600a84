//! A token bucket with an explicit clock, for per-connection frame rate limits, and the
//! gate that turns it into the gateway's answer (a warning, then a cut-off).

use crate::codes::{CloseCode, ErrorCode};
use crate::protocol::{error_frame, ServerFrame};

/// How many frames over the rate limit a connection may send before it is cut off.
pub const RATE_STRIKES: u32 = 20;

/// Allows `burst` frames at once and `per_second` sustained.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn new(burst: u32, per_second: u32, now_ms: u64) -> Self {
        Self {
            capacity: f64::from(burst),
            per_ms: f64::from(per_second) / 1000.0,
            tokens: f64::from(burst),
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one frame that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Handle it.
    Pass,
    /// Drop it and answer this `rate_limited` error; the connection stays.
    Refuse(ServerFrame),
    /// Drop it, close the connection with this code and reason, and stop reading.
    Cut(CloseCode, String),
}

/// A connection's frame rate limit: a token bucket, and strikes for frames over it. A strike
/// is answered with an error; the [`RATE_STRIKES`]th closes the connection. Strikes never
/// expire: a client that keeps flooding, however slowly, is cut off in the end.
#[derive(Debug, Clone)]
pub struct FrameGate {
    bucket: TokenBucket,
    strikes: u32,
}

impl FrameGate {
    /// A gate with a full bucket at `now_ms`.
    pub fn new(burst: u32, per_second: u32, now_ms: u64) -> Self {
        Self {
            bucket: TokenBucket::new(burst, per_second, now_ms),
            strikes: 0,
        }
    }

    /// The verdict on a frame arriving at `now_ms`.
    pub fn check(&mut self, now_ms: u64) -> Gate {
        if self.bucket.take(now_ms) {
            return Gate::Pass;
        }
        self.strikes += 1;
        if self.strikes >= RATE_STRIKES {
            Gate::Cut(CloseCode::RateLimited, "rate limit exceeded".into())
        } else {
            Gate::Refuse(error_frame(ErrorCode::RateLimited, "slow down"))
        }
    }

    /// Frames refused so far.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let mut b = TokenBucket::new(3, 10, 0);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert!(!b.take(50), "half a token after 50 ms at 10/s");
        assert!(b.take(100));
        assert!(!b.take(100));
        assert!(b.take(10_000) && b.take(10_000) && b.take(10_000));
        assert!(!b.take(10_000), "refill is capped at the burst");
    }

    #[test]
    fn a_flooder_is_warned_then_cut_off_at_the_twentieth_strike() {
        let mut g = FrameGate::new(2, 1, 0);
        assert_eq!((g.check(0), g.check(0)), (Gate::Pass, Gate::Pass));
        for strike in 1..RATE_STRIKES {
            assert_eq!(
                g.check(0),
                Gate::Refuse(ServerFrame::Error {
                    code: "rate_limited".into(),
                    message: "slow down".into()
                })
            );
            assert_eq!(g.strikes(), strike);
        }
        // Refills keep passing frames, and strikes are not forgiven.
        assert_eq!(g.check(1_000), Gate::Pass);
        assert_eq!(
            g.check(1_000),
            Gate::Cut(CloseCode::RateLimited, "rate limit exceeded".into())
        );
    }
}
