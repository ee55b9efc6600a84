//! The events file: JSON lines stamped with CLOCK_MONOTONIC in milliseconds, so events from
//! the robot, the console and the benchmark on one host line up on one clock.

use serde_json::{Map, Value};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Now on the system-wide monotonic clock (CLOCK_MONOTONIC), as time since its origin.
pub fn monotonic_now() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// Milliseconds, with microsecond precision, as written in `t_ms`.
pub fn millis(t: Duration) -> f64 {
    (t.as_micros() as f64) / 1000.0
}

/// Where event lines go: a file, or anything else that takes bytes (tests use sinks that
/// stall).
pub type EventSink = Box<dyn Write + Send>;

/// A shared, append-only events file; a no-op when no file was asked for.
///
/// Writing may block (a full disk, a stalled pipe): the safety guard therefore writes its
/// events from its own writer thread, never under the safety lock.
#[derive(Clone, Default)]
pub struct EventLog {
    file: Option<Arc<Mutex<EventSink>>>,
}

impl EventLog {
    /// Appends to `path` (created if missing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::to_sink(Box::new(file)))
    }

    /// Writes to `sink`.
    pub fn to_sink(sink: EventSink) -> Self {
        Self {
            file: Some(Arc::new(Mutex::new(sink))),
        }
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Records `event` at `t` with `fields` (an object; others are ignored). Each line is
    /// written whole with one `write`, so readers never see half a line.
    pub fn record(&self, t: Duration, event: &str, fields: Value) {
        let Some(file) = &self.file else { return };
        let mut line = Map::new();
        line.insert("t_ms".into(), Value::from(millis(t)));
        line.insert("event".into(), Value::from(event));
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::warn!(error = %e, "writing the events file");
        }
    }

    /// Records `event` now.
    pub fn now(&self, event: &str, fields: Value) {
        self.record(monotonic_now(), event, fields);
    }
}

/// Reads an events file as it grows (for benchmarks and tests): each call parses only the
/// whole lines appended since the last one.
#[derive(Debug)]
pub struct EventsReader {
    path: PathBuf,
    seen: Mutex<(u64, Vec<Value>)>,
}

impl EventsReader {
    /// A reader of `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            seen: Mutex::default(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every event so far.
    pub fn read(&self) -> Vec<Value> {
        self.with(|events| events.to_vec())
    }

    /// The first event so far for which `pred` holds.
    pub fn find(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.with(|events| events.iter().find(|e| pred(e)).cloned())
    }

    /// Reads what was appended since last time, then runs `f` on every event.
    fn with<T>(&self, f: impl FnOnce(&[Value]) -> T) -> T {
        use std::io::{BufRead, Seek};
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(mut file) = File::open(&self.path) {
            if file.seek(std::io::SeekFrom::Start(seen.0)).is_ok() {
                let mut reader = std::io::BufReader::new(file);
                let mut line = String::new();
                // Only whole lines: a line still being written is read next time.
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) && line.ends_with('\n')
                {
                    seen.0 += line.len() as u64;
                    if let Ok(v) = serde_json::from_str(&line) {
                        seen.1.push(v);
                    }
                    line.clear();
                }
            }
        }
        f(&seen.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_monotonic_milliseconds_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(&path).unwrap();
        let before = millis(monotonic_now());
        log.now("armed", serde_json::json!({"session_id": "ses_1"}));
        log.now("safe_stop", serde_json::json!({"cause": "boot"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "armed");
        assert_eq!(lines[0]["session_id"], "ses_1");
        let t = lines[1]["t_ms"].as_f64().unwrap();
        assert!(t >= before && t >= lines[0]["t_ms"].as_f64().unwrap());
        let reader = EventsReader::new(path.clone());
        assert_eq!(reader.read(), lines);
        log.now("auth_ok", serde_json::json!({}));
        assert_eq!(
            reader.find(|e| e["event"] == "auth_ok").unwrap()["event"],
            "auth_ok"
        );
        assert_eq!(reader.read().len(), 3);
    }
}
