//! What every benchmark reports with: latency histograms and their summaries, and the
//! sections of `docs/benchmarks.md` that each benchmark replaces.

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::Path;

/// Latency summary in microseconds.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Latency {
    /// Samples.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// Worst.
    pub(crate) max_us: u64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        }
    }
}

/// A histogram of microseconds, from 1 µs to a minute.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// Microseconds as milliseconds with two decimals.
pub(crate) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// Writes `value` as pretty JSON to `path`, creating its directory.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Replaces (or appends) the section between `<!-- bench:NAME -->` markers.
pub(crate) fn write_markdown_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- bench:{name} -->");
    let end = format!("<!-- /bench:{name} -->");
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmarks\n\nWritten by `tether bench …`; numbers from the 2-core dev machine, which is shared and noisy. Compare only figures measured in one run.\n\n".into()
    });
    let updated = replace_section(&current, &begin, &end, body);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, updated)?;
    Ok(())
}

fn replace_section(current: &str, begin: &str, end: &str, body: &str) -> String {
    let section = format!("{begin}\n{body}{end}\n");
    match (current.find(begin), current.find(end)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{}{}",
            &current[..a],
            section,
            &current[b + end.len()..].trim_start_matches('\n')
        ),
        _ => format!("{current}\n{section}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place_and_appended_when_missing() {
        let doc = "# B\n\n<!-- bench:a -->\nold\n<!-- /bench:a -->\ntail\n";
        let out = replace_section(doc, "<!-- bench:a -->", "<!-- /bench:a -->", "new\n");
        assert_eq!(
            out,
            "# B\n\n<!-- bench:a -->\nnew\n<!-- /bench:a -->\ntail\n"
        );
        let out = replace_section("# B\n", "<!-- bench:b -->", "<!-- /bench:b -->", "x\n");
        assert_eq!(out, "# B\n\n<!-- bench:b -->\nx\n<!-- /bench:b -->\n");
    }

    #[test]
    fn latency_summarises_a_histogram_in_microseconds() {
        let mut h = histogram();
        for us in 1..=100 {
            h.record(us).unwrap();
        }
        let l = Latency::from(&h);
        assert_eq!((l.count, l.p50_us, l.p99_us, l.max_us), (100, 50, 99, 100));
        assert_eq!(ms(1_234), "1.23");
    }
}
