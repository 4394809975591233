//! The kubelet Summary API (`/stats/summary`, what metrics.k8s.io and `kubectl top` read) and
//! the agent's own `/metrics`, both from mini-nodestats' sampler: the same samples the agent
//! ships to the server every 10 s; and `/stats/live`, read now without touching those rounds.

use std::sync::Arc;

use serde_json::Value;

/// The node API's view of the sampler.
#[derive(Debug)]
pub struct StatsSampler {
    sampler: Arc<mini_nodestats::Sampler>,
}

impl StatsSampler {
    pub fn new(sampler: Arc<mini_nodestats::Sampler>) -> Arc<Self> {
        Arc::new(StatsSampler { sampler })
    }

    /// The Summary document of the latest round (taking a round now if there is none yet).
    pub async fn summary(&self) -> Result<Value, String> {
        if let Some(s) = self.sampler.summary() {
            return Ok(s);
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.sampler
            .sample(now_ms)
            .await
            .map_err(|e| e.to_string())?;
        self.sampler
            .summary()
            .ok_or_else(|| "no stats sample yet; retry in a few seconds".to_string())
    }

    /// The node's and `pods`' cumulative CPU and working set, read now (not a round).
    pub async fn live(
        &self,
        pods: &[mini_nodestats::PodKey],
    ) -> Result<mini_nodestats::LiveReading, String> {
        self.sampler.live(pods).await.map_err(|e| e.to_string())
    }

    /// The agent's metrics in Prometheus text.
    pub fn metrics_text(&self) -> String {
        self.sampler.metrics_text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn summary_without_a_round_samples_once() {
        let fs = Arc::new(mini_nodestats::FakeFs::new());
        fs.set(
            "/proc/stat",
            "cpu  100 0 0 100 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\n",
        );
        fs.set("/proc/meminfo", "MemTotal: 10 kB\nMemAvailable: 4 kB\n");
        let sampler = mini_nodestats::Sampler::new(
            mini_nodestats::NodeStatsConfig::new("n1", std::path::Path::new("/data")),
            fs,
            None,
        );
        let stats = StatsSampler::new(sampler);
        let summary = stats.summary().await.expect("summary");
        assert_eq!(summary["node"]["nodeName"], "n1");
        assert_eq!(
            summary["node"]["cpu"]["usageCoreNanoSeconds"],
            1_000_000_000
        );
        assert_eq!(summary["node"]["memory"]["workingSetBytes"], 6 * 1024);
        assert!(stats
            .metrics_text()
            .contains("mini_nodestats_samples_total 1"));
    }

    #[tokio::test]
    async fn live_reads_now_and_leaves_the_rounds_alone() {
        let fs = Arc::new(mini_nodestats::FakeFs::new());
        fs.set("/proc/stat", "cpu  100 0 0 100 0 0 0 0 0 0\n");
        fs.set("/proc/meminfo", "MemTotal: 10 kB\nMemAvailable: 4 kB\n");
        let sampler = mini_nodestats::Sampler::new(
            mini_nodestats::NodeStatsConfig::new("n1", std::path::Path::new("/data")),
            fs.clone(),
            None,
        );
        let stats = StatsSampler::new(sampler);
        let before = stats.summary().await.expect("summary");
        fs.set("/proc/stat", "cpu  250 0 0 100 0 0 0 0 0 0\n");
        let live = stats.live(&[]).await.expect("live");
        assert_eq!(live.node.usage_core_nano_seconds, 2_500_000_000);
        assert_eq!(live.node.working_set_bytes, 6 * 1024);
        assert_eq!(stats.summary().await.expect("summary"), before);
        assert!(stats
            .metrics_text()
            .contains("mini_nodestats_samples_total 1"));
    }
}
