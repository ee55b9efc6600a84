//! Wall-clock helpers shared by the server and the clients: milliseconds since the epoch
//! and RFC 3339 rendering, the two forms every timestamp in the API takes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// Now, as a duration since the Unix epoch.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now in milliseconds since the epoch.
pub fn now_ms() -> UnixMillis {
    unix_now().as_millis() as u64
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: UnixMillis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses RFC 3339 (UTC) into milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<UnixMillis, humantime::TimestampError> {
    let t = humantime::parse_rfc3339_weak(text)?;
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_milliseconds() {
        let ms = 1_764_000_000_123;
        assert_eq!(rfc3339(ms), "2025-11-24T16:00:00.123Z");
        assert_eq!(parse_rfc3339(&rfc3339(ms)).unwrap(), ms);
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
