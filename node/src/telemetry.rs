//! Logging and Prometheus metrics setup, and the gauges refreshed on each scrape.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tether_raft::RaftNode;
use tether_store::RevocationKind;

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Installs the `tracing` subscriber for a binary; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Copies Raft and store state into gauges.
pub fn update_gauges(raft: &RaftNode) {
    let m = raft.status();
    metrics::gauge!("tether_raft_term").set(m.term as f64);
    metrics::gauge!("tether_raft_leader").set(m.leader.unwrap_or(0) as f64);
    metrics::gauge!("tether_raft_is_leader").set(f64::from(u8::from(m.is_leader())));
    metrics::gauge!("tether_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("tether_raft_applied_index").set(m.applied_index.unwrap_or(0) as f64);
    let view = raft.view().read();
    for kind in RevocationKind::ALL {
        metrics::gauge!("tether_revocations_stored", "kind" => kind.as_str())
            .set(view.count(kind) as f64);
    }
}
