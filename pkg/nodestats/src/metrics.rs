//! The agent's own `/metrics` (Prometheus/OpenMetrics text via `prometheus_client`): process
//! metrics read from /proc/self (and the allocator's figures) at scrape time, and the sample
//! shipping counters.

use std::path::Path;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::hostfs::HostFs;
use crate::procfs;

/// Counters of the shipping loop.
#[derive(Debug, Clone, Default)]
pub struct ShippingMetrics {
    pub samples_taken: Counter,
    pub sample_errors: Counter,
    pub batches_sent: Counter,
    pub batches_failed: Counter,
    pub batches_dropped: Counter,
    pub batches_rejected: Counter,
    pub points_sent: Counter,
    pub queue_batches: Gauge,
}

/// What the shipping counters say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShippingCounts {
    pub batches_sent: u64,
    pub batches_failed: u64,
    pub batches_dropped: u64,
    pub batches_rejected: u64,
    pub queue_batches: i64,
}

impl ShippingMetrics {
    pub fn counts(&self) -> ShippingCounts {
        ShippingCounts {
            batches_sent: self.batches_sent.get(),
            batches_failed: self.batches_failed.get(),
            batches_dropped: self.batches_dropped.get(),
            batches_rejected: self.batches_rejected.get(),
            queue_batches: self.queue_batches.get(),
        }
    }
}

/// `process_*` metrics of this process, as the Prometheus client libraries name them.
struct ProcessCollector {
    fs: Arc<dyn HostFs>,
    /// The allocator's figures (`mini_sys::alloc::heap_usage`; a fixed value in tests).
    heap: fn() -> Option<mini_sys::alloc::HeapUsage>,
}

impl std::fmt::Debug for ProcessCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCollector").finish()
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ticks = self.fs.clock_ticks();
        let stat = self
            .fs
            .read(Path::new("/proc/self/stat"))
            .ok()
            .and_then(|t| procfs::parse_self_stat(&t, ticks));
        let boot = self
            .fs
            .read(Path::new("/proc/stat"))
            .ok()
            .and_then(|t| procfs::parse_stat(&t, ticks).boot_time_seconds);
        if let Some((cpu, start_after_boot)) = stat {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
            if let Some(boot) = boot {
                let g = ConstGauge::new(boot as f64 + start_after_boot);
                g.encode(encoder.encode_descriptor(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    None,
                    g.metric_type(),
                )?)?;
            }
        }
        let rss = self
            .fs
            .read(Path::new("/proc/self/status"))
            .ok()
            .and_then(|t| procfs::parse_status_rss(&t));
        if let Some(rss) = rss {
            let g = ConstGauge::new(rss as f64);
            g.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(heap) = (self.heap)() {
            for (name, help, value) in [
                (
                    "mini_process_heap_in_use_bytes",
                    "Bytes in live allocations of the malloc arenas.",
                    heap.in_use,
                ),
                (
                    "mini_process_heap_free_held_bytes",
                    "Bytes freed but still held by the malloc arenas.",
                    heap.free_held,
                ),
                (
                    "mini_process_heap_mmapped_bytes",
                    "Bytes in live allocations mmapped on their own.",
                    heap.mmapped,
                ),
            ] {
                let g = ConstGauge::new(value as f64);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// The `process_*` (and allocator) metrics of this process alone, in Prometheus text: for
/// processes whose `/metrics` another registry renders (the server's).
pub fn process_text(fs: Arc<dyn HostFs>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector {
        fs,
        heap: mini_sys::alloc::heap_usage,
    }));
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The registry behind the agent's `/metrics`.
pub(crate) fn registry(fs: Arc<dyn HostFs>, shipping: &ShippingMetrics) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector {
        fs,
        heap: mini_sys::alloc::heap_usage,
    }));
    let s = shipping;
    registry.register(
        "mini_nodestats_samples",
        "Sampling rounds taken.",
        s.samples_taken.clone(),
    );
    registry.register(
        "mini_nodestats_sample_errors",
        "Sampling rounds that failed.",
        s.sample_errors.clone(),
    );
    registry.register(
        "mini_nodestats_batches_sent",
        "Sample batches the server accepted.",
        s.batches_sent.clone(),
    );
    registry.register(
        "mini_nodestats_batches_failed",
        "Attempts to send a sample batch that failed (the batch stays queued).",
        s.batches_failed.clone(),
    );
    registry.register(
        "mini_nodestats_batches_dropped",
        "Sample batches dropped because the queue was full while the server was away.",
        s.batches_dropped.clone(),
    );
    registry.register(
        "mini_nodestats_batches_rejected",
        "Sample batches the server refused (400, 413, 422); they are not sent again.",
        s.batches_rejected.clone(),
    );
    registry.register(
        "mini_nodestats_points_sent",
        "Sample points the server accepted.",
        s.points_sent.clone(),
    );
    registry.register(
        "mini_nodestats_queue_batches",
        "Sample batches waiting for the server.",
        s.queue_batches.clone(),
    );
    registry
}

/// The registry as text.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the agent metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfs::FakeFs;

    #[test]
    fn render_process_and_shipping_metrics_are_named_as_prometheus() {
        let fs = Arc::new(FakeFs::new());
        fs.set(
            "/proc/self/stat",
            "42 (mini) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 1000000 500 0",
        );
        fs.set("/proc/stat", "cpu  1 2 3 4 5 6 7 8 0 0\nbtime 1700000000\n");
        fs.set("/proc/self/status", "Name:\tmini\nVmRSS:\t   2048 kB\n");
        let shipping = ShippingMetrics::default();
        shipping.batches_sent.inc_by(3);
        shipping.batches_dropped.inc();
        shipping.queue_batches.set(2);
        let text = render(&registry(fs, &shipping));
        assert!(text.contains("process_cpu_seconds_total 3.0"), "{text}");
        assert!(
            text.contains("process_start_time_seconds 1700000010.0"),
            "{text}"
        );
        assert!(
            text.contains("process_resident_memory_bytes 2097152.0"),
            "{text}"
        );
        assert!(
            text.contains("mini_nodestats_batches_sent_total 3"),
            "{text}"
        );
        assert!(
            text.contains("mini_nodestats_batches_dropped_total 1"),
            "{text}"
        );
        assert!(text.contains("mini_nodestats_queue_batches 2"), "{text}");
        assert_eq!(
            shipping.counts(),
            ShippingCounts {
                batches_sent: 3,
                batches_failed: 0,
                batches_dropped: 1,
                batches_rejected: 0,
                queue_batches: 2
            }
        );
    }

    #[test]
    fn process_collector_with_heap_figures_renders_them_as_gauges() {
        let fs = Arc::new(FakeFs::new());
        fs.set("/proc/self/status", "Name:\tmini\nVmRSS:\t   4096 kB\n");
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector {
            fs,
            heap: || {
                Some(mini_sys::alloc::HeapUsage {
                    in_use: 1000,
                    free_held: 200,
                    mmapped: 30,
                })
            },
        }));
        let text = render(&registry);
        for line in [
            "process_resident_memory_bytes 4194304.0",
            "mini_process_heap_in_use_bytes 1000.0",
            "mini_process_heap_free_held_bytes 200.0",
            "mini_process_heap_mmapped_bytes 30.0",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }

    #[test]
    fn process_text_on_this_process_has_its_resident_memory() {
        let text = process_text(Arc::new(crate::hostfs::RealFs));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert_eq!(
            text.contains("mini_process_heap_in_use_bytes "),
            cfg!(target_env = "gnu"),
            "{text}"
        );
    }
}
