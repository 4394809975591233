//! mini's pod scheduler: upstream kube-scheduler's default profile, run in-process as an
//! ordinary API client. It list+watches nodes, pods and namespaces, keeps its own cache of what
//! is placed where (counting its own not-yet-confirmed bindings at once), picks a node for each
//! pending pod with upstream's filters and scores, and binds through `pods/binding`.
//! Preemption and priority classes are not implemented (pods are ordered by `spec.priority`).

mod algorithm;
mod cache;
mod filters;
mod info;
mod ippool;
mod quantity;
mod queue;
mod scheduler;
mod scores;
mod volumebinding;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use algorithm::num_feasible_nodes_to_find;

/// The scheduler name pods select by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// Upstream `percentageOfNodesToScore`; 0 means adaptive.
    pub percentage_of_nodes_to_score: u32,
    /// Bindings in flight at once.
    pub parallel_bindings: usize,
    /// Backoff after a failed attempt (an API error), doubling per attempt up to the maximum.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Unschedulable pods are retried at least this often even if nothing changed.
    pub unschedulable_flush: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            percentage_of_nodes_to_score: 0,
            parallel_bindings: 32,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_flush: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("api request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("watch failed: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
}

/// Schedules pods until `shutdown`. Logs nothing per pod above debug level.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    scheduler::run(client, config, shutdown).await
}
