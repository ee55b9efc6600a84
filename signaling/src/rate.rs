//! A token bucket with an explicit clock, for per-connection frame rate limits.

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
}
