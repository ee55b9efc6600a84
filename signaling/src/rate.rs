//! A token bucket with an explicit clock, for per-connection frame rate limits, the gate
//! that turns it into the gateway's answer (a warning, then a cut-off), and the gate that
//! keeps a flood of denials from filling the audit ledger.

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

    /// Whether the bucket has refilled to its burst by `now_ms` (its client went quiet).
    pub fn is_full(&self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.tokens + elapsed * self.per_ms >= self.capacity
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

/// Token buckets by key (a client's address, a token), for limits per client rather than
/// per connection. At most `max_keys` are kept: when full, the buckets that have refilled
/// (their clients went quiet) go first, and if none has, all of them do (a flood of fresh
/// keys resets the limits rather than locking new clients out).
#[derive(Debug, Clone)]
pub struct KeyedBuckets<K> {
    burst: u32,
    per_second: u32,
    max_keys: usize,
    buckets: std::collections::HashMap<K, TokenBucket>,
}

impl<K: std::hash::Hash + Eq> KeyedBuckets<K> {
    /// `burst` at once and `per_second` sustained, per key.
    pub fn new(burst: u32, per_second: u32, max_keys: usize) -> Self {
        Self {
            burst,
            per_second,
            max_keys,
            buckets: Default::default(),
        }
    }

    /// Takes one token from `key`'s bucket at `now_ms` (a new key starts full).
    pub fn take(&mut self, key: K, now_ms: u64) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(now_ms));
            if self.buckets.len() >= self.max_keys {
                self.buckets.clear();
            }
        }
        let (burst, per_second) = (self.burst, self.per_second);
        (self.buckets.entry(key))
            .or_insert_with(|| TokenBucket::new(burst, per_second, now_ms))
            .take(now_ms)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Rate-limits one kind of audit record (join denials, which any token holder can cause at
/// will) so that a flood cannot fill the ledger; what it holds back is counted, and the
/// next record written says how many were.
#[derive(Debug, Clone)]
pub struct RecordGate {
    bucket: TokenBucket,
    suppressed: u64,
}

impl RecordGate {
    /// `burst` records at once, `per_second` sustained, from `now_ms`.
    pub fn new(burst: u32, per_second: u32, now_ms: u64) -> Self {
        Self {
            bucket: TokenBucket::new(burst, per_second, now_ms),
            suppressed: 0,
        }
    }

    /// For a record at `now_ms`: `Some(n)` to write it, noting the `n` held back since the
    /// last one written; `None` to hold it back.
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        if self.bucket.take(now_ms) {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket_and_quiet_keys_make_room_for_new_ones() {
        let mut keyed = KeyedBuckets::new(2, 10, 2);
        assert!(keyed.take("a", 0) && keyed.take("a", 0));
        assert!(!keyed.take("a", 0), "a's burst is spent");
        assert!(keyed.take("b", 0), "b is not held to a's limit");
        // Full of keys: a third waits until one bucket has refilled... or resets them all.
        assert!(keyed.take("c", 0));
        assert_eq!(keyed.len(), 1, "no bucket had refilled: all were dropped");
        assert!(keyed.take("a", 0), "a starts afresh after the reset");
        assert!(keyed.take("d", 1_000));
        assert_eq!(
            keyed.len(),
            1,
            "c and a refilled over a second and made room"
        );
    }

    #[test]
    fn a_flood_of_records_is_held_back_and_counted_in_the_next_one_written() {
        let mut gate = RecordGate::new(2, 10, 0);
        assert_eq!(gate.admit(0), Some(0));
        assert_eq!(gate.admit(0), Some(0));
        for _ in 0..1_000 {
            assert_eq!(gate.admit(50), None);
        }
        // 100 ms later one token is back: the record written tells of the 1,000.
        assert_eq!(gate.admit(150), Some(1_000));
        assert_eq!(gate.admit(150), None);
        assert_eq!(gate.admit(250), Some(1));
    }

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
