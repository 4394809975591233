//! The controllers `mini server` runs in-process, as kube-controller-manager does: each one
//! lists and watches through the API (never the store), reconciles level-triggered and
//! idempotently, and writes back through the API like any client.

pub mod bootstrap_tokens;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslice;
mod error;
mod garbagecollector;
mod history;
mod hpa;
mod job;
mod namespace;
mod nodeipam;
mod nodelifecycle;
mod podgc;
mod replicaset;
mod resourcequota;
mod serviceaccount;
mod servicelb;
mod statefulset;
mod ttl;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use error::ControllerError;

/// Settings shared by the controllers.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Node podCIDRs are carved from this range.
    pub cluster_cidr: String,
    /// Prefix length of each node's podCIDR (24).
    pub node_cidr_mask_size: u8,
    /// A node whose lease is older than this becomes NotReady/Unknown (40 s).
    pub node_monitor_grace_period: Duration,
    /// Terminated pods kept before pod GC deletes the oldest (upstream 12 500).
    pub terminated_pod_gc_threshold: usize,
    /// Names from `CONTROLLERS` not to run.
    pub disabled: Vec<String>,
    /// The cluster CA bundle published as `kube-root-ca.crt` in every namespace.
    pub root_ca_pem: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            terminated_pod_gc_threshold: 12_500,
            disabled: Vec::new(),
            root_ca_pem: String::new(),
        }
    }
}

/// What every controller gets.
pub struct Context {
    pub client: kube::Client,
    pub config: ControllerConfig,
    pub shutdown: CancellationToken,
}

/// A workload's typed label selector as the matcher the controllers use; `what` names the
/// owner (`"statefulset ns/web"`) in the error.
pub(crate) fn label_selector(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    what: &str,
) -> Result<mini_api::LabelSelector, ControllerError> {
    let json = serde_json::to_value(selector).map_err(|e| ControllerError::Other(e.to_string()))?;
    mini_api::LabelSelector::from_json(&json).map_err(|e| ControllerError::Invalid {
        object: what.to_string(),
        reason: format!("invalid selector: {e}"),
    })
}

type RunFn = fn(Arc<Context>) -> futures::future::BoxFuture<'static, Result<(), ControllerError>>;

/// Every controller by the name `--disable-controller` takes.
pub const CONTROLLERS: &[&str] = &[
    "deployment",
    "replicaset",
    "replicationcontroller",
    "statefulset",
    "daemonset",
    "job",
    "cronjob",
    "ttl-after-finished",
    "podgc",
    "garbagecollector",
    "namespace",
    "nodelifecycle",
    "nodeipam",
    "endpoints",
    "endpointslice",
    "serviceaccount",
    "servicelb",
    "resourcequota",
    "disruption",
    "horizontalpodautoscaling",
    "tokencleaner",
];

fn runner(name: &str) -> Option<RunFn> {
    use futures::FutureExt;
    let f: RunFn = match name {
        "deployment" => |c| deployment::run(c).boxed(),
        "replicaset" => |c| replicaset::run(c).boxed(),
        "replicationcontroller" => |c| replicaset::run_replication_controllers(c).boxed(),
        "statefulset" => |c| statefulset::run(c).boxed(),
        "daemonset" => |c| daemonset::run(c).boxed(),
        "job" => |c| job::run(c).boxed(),
        "cronjob" => |c| cronjob::run(c).boxed(),
        "ttl-after-finished" => |c| ttl::run(c).boxed(),
        "podgc" => |c| podgc::run(c).boxed(),
        "garbagecollector" => |c| garbagecollector::run(c).boxed(),
        "namespace" => |c| namespace::run(c).boxed(),
        "nodelifecycle" => |c| nodelifecycle::run(c).boxed(),
        "nodeipam" => |c| nodeipam::run(c).boxed(),
        "endpoints" => |c| endpoints::run(c).boxed(),
        "endpointslice" => |c| endpointslice::run(c).boxed(),
        "serviceaccount" => |c| serviceaccount::run(c).boxed(),
        "servicelb" => |c| servicelb::run(c).boxed(),
        "resourcequota" => |c| resourcequota::run(c).boxed(),
        "disruption" => |c| disruption::run(c).boxed(),
        "horizontalpodautoscaling" => |c| hpa::run(c).boxed(),
        "tokencleaner" => |c| bootstrap_tokens::run(c).boxed(),
        _ => return None,
    };
    Some(f)
}

/// Runs every enabled controller until `shutdown`. A controller that fails is logged and
/// restarted after a back-off, so one broken loop never takes the others down.
pub async fn run(client: kube::Client, config: ControllerConfig, shutdown: CancellationToken) {
    let ctx = Arc::new(Context {
        client,
        config,
        shutdown: shutdown.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for name in CONTROLLERS {
        if ctx.config.disabled.iter().any(|d| d == name) {
            tracing::info!(controller = name, "disabled");
            continue;
        }
        let Some(f) = runner(name) else { continue };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                match f(ctx.clone()).await {
                    Ok(()) if ctx.shutdown.is_cancelled() => return,
                    Ok(()) => tracing::warn!(controller = name, "controller loop ended; restarting"),
                    Err(e) => tracing::error!(controller = name, error = %e, "controller failed; restarting"),
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
