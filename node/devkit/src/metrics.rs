//! Reading a node's `/metrics` (Prometheus text): the unlabelled samples by name, and the
//! shares of a histogram's buckets. One parser for the tests and the bench harness.

use std::collections::HashMap;
use std::net::SocketAddr;

/// One scrape of a node's `/metrics`.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The exposition text.
    pub text: String,
}

/// Fetches `http://{http}/metrics`.
pub async fn scrape(http: SocketAddr) -> reqwest::Result<Scrape> {
    let text = (tether_api::tls::http())
        .get(format!("http://{http}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(Scrape { text })
}

impl Scrape {
    /// Every sample without labels, by metric name.
    pub fn unlabelled(&self) -> HashMap<String, f64> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// From histogram `name` (the series selected by `labels`, e.g. `path="local",`, or
    /// empty): the share of samples within `bound` seconds, and the smallest bucket bound
    /// holding 99% of them. `(0, 0)` when the histogram has no samples.
    pub fn histogram_shares(&self, name: &str, labels: &str, bound: f64) -> (f64, f64) {
        let prefix = format!("{name}_bucket{{{labels}le=\"");
        let buckets: Vec<(f64, f64)> = self
            .text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        let total = buckets.iter().map(|b| b.1).fold(0.0, f64::max);
        if total == 0.0 {
            return (0.0, 0.0);
        }
        let within = buckets
            .iter()
            .filter(|b| b.0 <= bound)
            .map(|b| b.1)
            .fold(0.0, f64::max);
        let p99 = buckets
            .iter()
            .find(|b| b.1 >= 0.99 * total)
            .map_or(f64::INFINITY, |b| b.0);
        (within / total, p99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE a gauge\na 3\nb{x=\"1\"} 4\nh_bucket{path=\"local\",le=\"0.001\"} 90\nh_bucket{path=\"local\",le=\"0.01\"} 100\nh_bucket{path=\"local\",le=\"+Inf\"} 100\n";

    #[test]
    fn unlabelled_samples_and_histogram_shares_are_read() {
        let s = Scrape { text: TEXT.into() };
        let m = s.unlabelled();
        assert_eq!(m.get("a"), Some(&3.0));
        assert!(!m.contains_key("b"));
        assert_eq!(
            s.histogram_shares("h", "path=\"local\",", 0.001),
            (0.9, 0.01)
        );
        assert_eq!(s.histogram_shares("nope", "", 1.0), (0.0, 0.0));
    }
}
