//! Prometheus metrics: request counts and latency by verb/resource/code, watch counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mini_store::{Deleted, KeyValue, ListPage, Revision, Store, StoreError, WatchReceiver};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    group: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    group: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    resource: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// Metrics text (Prometheus/OpenMetrics exposition) that another crate renders on demand.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

pub struct Metrics {
    registry: Registry,
    /// Rendered after the API server's own families, before the closing `# EOF`.
    sources: std::sync::RwLock<Vec<MetricsSource>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    watches: Family<WatchLabels, Gauge>,
    store_latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
}

/// Decrements the watch gauge when the watch ends.
pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let watches = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_request",
            "Requests by verb, group, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb, group and resource (watches: time to first byte)",
            latency.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Open watches by resource",
            watches.clone(),
        );
        let store_latency =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "store_operation_duration_seconds",
            "Store operation latency by operation",
            store_latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            watches,
            store_latency,
            sources: std::sync::RwLock::new(Vec::new()),
        }
    }

    /// Adds families that another crate renders (its own `prometheus_client` registry).
    pub fn add_source(&self, source: MetricsSource) {
        self.sources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(source);
    }

    pub fn observe_request(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        code: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
                code: code.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn watch_started(&self, resource: &str) -> WatchGuard {
        let g = self
            .watches
            .get_or_create(&WatchLabels {
                resource: resource.into(),
            })
            .clone();
        g.inc();
        WatchGuard(g)
    }

    pub fn render(&self) -> String {
        const EOF: &str = "# EOF\n";
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        let sources = self
            .sources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sources.is_empty() {
            return out;
        }
        out.truncate(out.strip_suffix(EOF).map_or(out.len(), str::len));
        for source in sources.iter() {
            let text = source();
            out.push_str(text.strip_suffix(EOF).unwrap_or(&text));
        }
        out.push_str(EOF);
        out
    }
}

/// A `Store` that records the latency of every operation.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: &Metrics) -> Self {
        MeteredStore {
            inner,
            latency: metrics.store_latency.clone(),
        }
    }

    fn observe(&self, operation: &str, started: Instant) {
        self.latency
            .get_or_create(&StoreLabels {
                operation: operation.into(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait::async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", t);
        r
    }
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let t = Instant::now();
        let r = self.inner.list(prefix, start_after, limit).await;
        self.observe("list", t);
        r
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.create(key, value).await;
        self.observe("create", t);
        r
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected).await;
        self.observe("update", t);
        r
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.observe("delete", t);
        r
    }
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, StoreError> {
        self.inner.watch(prefix, after)
    }
    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = self.inner.compact(revision).await;
        self.observe("compact", t);
        r
    }
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.inner.check_ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_with_source_keeps_one_eof_at_the_end() {
        let metrics = Metrics::new();
        metrics.observe_request("get", "", "pods", 200, Duration::from_millis(3));
        metrics.add_source(Arc::new(|| {
            "# TYPE mini_extra_total counter\nmini_extra_total 7\n# EOF\n".to_string()
        }));
        let text = metrics.render();
        assert!(text.ends_with("mini_extra_total 7\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.contains("apiserver_request_total"), "{text}");
    }
}
