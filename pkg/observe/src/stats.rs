//! The stores' own figures on the server's `/metrics`: what was ingested, refused and kept.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Observe;

/// Counters bumped by the ingestion endpoints.
#[derive(Default)]
pub(crate) struct IngestStats {
    pub(crate) samples: AtomicU64,
    pub(crate) sample_errors: AtomicU64,
    pub(crate) log_lines: AtomicU64,
    pub(crate) log_errors: AtomicU64,
    pub(crate) log_batches_refused: AtomicU64,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter<u64, AtomicU64> = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge<i64, AtomicI64> = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The figures as Prometheus text (ends with `# EOF`, which the API server strips).
pub(crate) fn render(observe: &Observe) -> String {
    let s = &observe.stats;
    let mut registry = Registry::default();
    counter(
        &mut registry,
        "mini_metrics_ingested_samples",
        "Samples the nodes sent that the metrics store accepted.",
        s.samples.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "mini_metrics_ingest_errors",
        "Sample batches the metrics store failed to store.",
        s.sample_errors.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "mini_logs_ingested_lines",
        "Log lines the nodes sent (before de-duplication).",
        s.log_lines.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "mini_logs_ingest_errors",
        "Log batches the log store failed to store.",
        s.log_errors.load(Ordering::Relaxed),
    );
    counter(
        &mut registry,
        "mini_logs_refused_batches",
        "Log batches refused because the log store was full (the nodes keep and resend them).",
        s.log_batches_refused.load(Ordering::Relaxed),
    );
    if let Some(f) = observe.forwarder.get() {
        replica_figures(&mut registry, f);
    }
    store_gauges(&mut registry, observe);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

fn replica_figures(registry: &mut Registry, f: &crate::replicate::Forwarder) {
    let st = &f.stats;
    counter(
        registry,
        "mini_observe_replica_forwarded_batches",
        "Sample and log batches stored here and then by a peer server.",
        st.forwarded.load(Ordering::Relaxed),
    );
    counter(
        registry,
        "mini_observe_replica_dropped_batches",
        "Batches dropped unsent to a peer server (its queue full, or the peer gone for good).",
        st.dropped.load(Ordering::Relaxed),
    );
    counter(
        registry,
        "mini_observe_replica_rejected_batches",
        "Batches a peer server refused for good.",
        st.rejected.load(Ordering::Relaxed),
    );
    counter(
        registry,
        "mini_observe_replica_failed_sends",
        "Posts to a peer server that failed (retried).",
        st.failed_sends.load(Ordering::Relaxed),
    );
    counter(
        registry,
        "mini_observe_replica_received_batches",
        "Batches peer servers forwarded here and this server stored.",
        st.received.load(Ordering::Relaxed),
    );
    let (batches, bytes) = f.queued();
    gauge(
        registry,
        "mini_observe_replica_queued_batches",
        "Batches waiting to be sent to peer servers.",
        batches as u64,
    );
    gauge(
        registry,
        "mini_observe_replica_queued_bytes",
        "Bytes waiting to be sent to peer servers.",
        bytes as u64,
    );
    gauge(
        registry,
        "mini_observe_replica_peers",
        "Peer servers this server replicates to.",
        f.peer_list().len() as u64,
    );
}

fn ratio(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn store_gauges(registry: &mut Registry, observe: &Observe) {
    let t = observe.tsdb.stats();
    gauge(
        registry,
        "mini_metrics_series",
        "Series in the metrics store.",
        t.series,
    );
    gauge(
        registry,
        "mini_metrics_disk_bytes",
        "Bytes the metrics store uses on disk.",
        t.bytes_on_disk,
    );
    gauge(
        registry,
        "mini_metrics_memory_bytes",
        "The metrics store's estimate of the memory it holds.",
        t.bytes_in_memory,
    );
    ratio(
        registry,
        "mini_metrics_bytes_per_sample",
        "Chunk bytes per stored raw sample.",
        t.bytes_per_sample,
    );
    counter(
        registry,
        "mini_metrics_dropped_points",
        "Points dropped as out of order or duplicate since start.",
        t.out_of_order_dropped + t.duplicates_dropped,
    );
    let l = observe.logs.stats();
    gauge(
        registry,
        "mini_logs_stored_lines",
        "Log lines kept.",
        l.lines,
    );
    gauge(
        registry,
        "mini_logs_stored_bytes",
        "Bytes the log store uses on disk.",
        l.bytes_stored,
    );
    gauge(
        registry,
        "mini_logs_raw_bytes",
        "Bytes of the kept log lines before compression.",
        l.bytes_raw,
    );
    ratio(
        registry,
        "mini_logs_compression_ratio",
        "Raw bytes over file bytes of the closed log segments.",
        l.compression_ratio,
    );
    counter(
        registry,
        "mini_logs_refused_lines",
        "Log lines refused because the log store was full, since start.",
        l.refused_full,
    );
    counter(
        registry,
        "mini_logs_duplicate_lines",
        "Log lines dropped as already stored (resent after a restart), since start.",
        l.duplicates,
    );
}
