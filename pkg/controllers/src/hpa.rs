//! The horizontal pod autoscaler controller (autoscaling/v2): reads the target's `scale`
//! subresource, computes the desired replica count from resource metrics (the metrics API's
//! PodMetrics over the pods' requests) with upstream's algorithm (tolerance, missing and unready
//! pods, scale-down stabilization, `behavior` rate policies), scales by patching the `scale`
//! subresource and keeps the HPA's status and conditions as upstream does. Without metrics it
//! reports `ScalingActive=False` and never invents data; it still moves the target into
//! `[minReplicas, maxReplicas]`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus,
    MetricTarget, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use mini_api::LabelSelector;
use mini_runtime::{EventRecorder, EventType};

use crate::resourcequota::Quantity;
use crate::{Context, ControllerError};

/// Upstream `--horizontal-pod-autoscaler-sync-period`.
const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// Upstream `--horizontal-pod-autoscaler-tolerance`.
const DEFAULT_TOLERANCE: f64 = 0.1;
/// Upstream `--horizontal-pod-autoscaler-downscale-stabilization`.
const DOWNSCALE_STABILIZATION_SECS: i64 = 300;
/// Without `behavior`, one sync scales up at most to max(2 × current, 4).
const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
const SCALE_UP_LIMIT_MINIMUM: f64 = 4.0;

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Per-pod usage of one resource in thousandths (millicores, millibytes), by pod name.
pub(crate) type PodMetricsInfo = BTreeMap<String, i64>;

/// Where resource metrics come from: the metrics API in production, synthetic data in tests.
pub(crate) trait MetricsClient: Send + Sync {
    /// Usage of `resource` per pod matched by `selector` (summed over the pod's containers, or
    /// only `container`); pods lacking the resource in a container are left out.
    fn resource_metric(
        &self,
        namespace: &str,
        selector: &str,
        resource: &str,
        container: Option<&str>,
    ) -> impl Future<Output = Result<PodMetricsInfo, String>> + Send;
}

/// Reads `metrics.k8s.io/v1beta1` PodMetrics through the API server.
pub(crate) struct ApiMetricsClient {
    client: kube::Client,
}

impl MetricsClient for ApiMetricsClient {
    async fn resource_metric(
        &self,
        namespace: &str,
        selector: &str,
        resource: &str,
        container: Option<&str>,
    ) -> Result<PodMetricsInfo, String> {
        let ar = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                let reason = match &e {
                    kube::Error::Api(s) if s.code == 404 => {
                        "the server could not find the requested resource (get pods.metrics.k8s.io)"
                            .to_string()
                    }
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                format!("unable to fetch metrics from resource metrics API: {reason}")
            })?;
        if list.items.is_empty() {
            return Err("no metrics returned from resource metrics API".into());
        }
        let mut out = PodMetricsInfo::new();
        for item in &list.items {
            let Some(name) = item.metadata.name.clone() else {
                continue;
            };
            if let Some(v) = pod_metric_value(&item.data, resource, container) {
                out.insert(name, v);
            }
        }
        Ok(out)
    }
}

/// Sums one resource over a PodMetrics' containers; `None` when a container lacks it (upstream
/// drops such pods) or the named container is absent.
fn pod_metric_value(
    data: &serde_json::Value,
    resource: &str,
    container: Option<&str>,
) -> Option<i64> {
    let mut sum = 0i64;
    let mut found = false;
    for c in data["containers"].as_array().into_iter().flatten() {
        if container.is_some_and(|want| c["name"].as_str() != Some(want)) {
            continue;
        }
        let usage = c["usage"][resource].as_str()?;
        sum += Quantity::parse(usage).ok()?.milli_value();
        found = true;
    }
    found.then_some(sum)
}

// ---------------------------------------------------------------------------------------------
// Replica calculation (upstream ReplicaCalculator)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Tolerances {
    down: f64,
    up: f64,
}

impl Tolerances {
    fn is_within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

#[derive(Debug, Default)]
struct PodGroups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

/// Upstream `groupPods`, simplified: a CPU sample is unready when the pod's Ready condition is
/// not True (upstream also looks at the start time and the metric window inside the first 5 min).
fn group_pods(pods: &[Pod], metrics: &PodMetricsInfo, resource: &str) -> PodGroups {
    let mut g = PodGroups::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some() || phase == Some("Failed") {
            g.ignored.insert(name);
            continue;
        }
        if phase == Some("Pending") {
            g.unready.insert(name);
            continue;
        }
        if !metrics.contains_key(&name) {
            g.missing.insert(name);
            continue;
        }
        if resource == "cpu" && !mini_runtime::pod::is_ready(pod) {
            g.unready.insert(name);
            continue;
        }
        g.ready += 1;
    }
    g
}

/// Upstream `calculatePodRequests`: each pod's request (thousandths) for `resource`.
fn pod_requests(
    pods: &[Pod],
    container: Option<&str>,
    resource: &str,
) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut sum = 0i64;
        if let Some(spec) = pod.spec.as_ref() {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                if container.is_some_and(|want| want != c.name) {
                    continue;
                }
                let request = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(resource))
                    .ok_or_else(|| {
                        format!(
                            "missing request for {resource} in container {} of Pod {name}",
                            c.name
                        )
                    })?;
                sum += Quantity::parse(&request.0)
                    .map_err(|e| {
                        format!(
                            "invalid request for {resource} in container {}: {e}",
                            c.name
                        )
                    })?
                    .milli_value();
            }
        }
        out.insert(name, sum);
    }
    Ok(out)
}

/// Upstream `GetResourceUtilizationRatio`: (ratio, utilization %, average raw usage).
fn utilization_ratio(
    metrics: &PodMetricsInfo,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut total, mut requested, mut n) = (0i64, 0i64, 0i64);
    for (pod, v) in metrics {
        let Some(r) = requests.get(pod) else { continue };
        total += v;
        requested += r;
        n += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = (total * 100 / requested) as i32;
    Ok((utilization as f64 / target as f64, utilization, total / n))
}

/// Upstream `GetMetricUsageRatio`: (ratio, average usage).
fn usage_ratio(metrics: &PodMetricsInfo, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().sum();
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target as f64, average)
}

/// The shared tail of upstream's calculators once the first ratio is known: returns the replica
/// count, re-running with missing/unready pods filled in conservatively.
fn finish_proposal(
    current: i32,
    ratio: f64,
    groups: &PodGroups,
    metrics: &mut PodMetricsInfo,
    tolerances: Tolerances,
    missing_on_scale_down: impl Fn(&str) -> i64,
    recompute: impl Fn(&PodMetricsInfo) -> Result<f64, String>,
) -> Result<i32, String> {
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if tolerances.is_within(ratio) {
            return Ok(current);
        }
        return Ok((ratio * groups.ready as f64).ceil() as i32);
    }
    if !groups.missing.is_empty() {
        for pod in &groups.missing {
            let v = if ratio < 1.0 {
                missing_on_scale_down(pod)
            } else {
                0
            };
            metrics.insert(pod.clone(), v);
        }
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let new_ratio = recompute(metrics)?;
    if tolerances.is_within(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(current);
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(current);
    }
    Ok(replicas)
}

/// Upstream `GetResourceReplicas` (Utilization target): (replicas, utilization %, raw average).
fn resource_replicas(
    current: i32,
    target_utilization: i32,
    resource: &str,
    container: Option<&str>,
    tolerances: Tolerances,
    pods: &[Pod],
    mut metrics: PodMetricsInfo,
) -> Result<(i32, i32, i64), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group_pods(pods, &metrics, resource);
    for pod in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(pod);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests = pod_requests(pods, container, resource)?;
    let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target_utilization)?;
    let fallback = target_utilization.max(100) as i64;
    let replicas = finish_proposal(
        current,
        ratio,
        &groups,
        &mut metrics,
        tolerances,
        |pod| requests.get(pod).copied().unwrap_or(0) * fallback / 100,
        |m| utilization_ratio(m, &requests, target_utilization).map(|(r, _, _)| r),
    )?;
    Ok((replicas, utilization, raw))
}

/// Upstream `GetRawResourceReplicas` (AverageValue target, thousandths): (replicas, average).
fn raw_resource_replicas(
    current: i32,
    target_milli: i64,
    resource: &str,
    tolerances: Tolerances,
    pods: &[Pod],
    mut metrics: PodMetricsInfo,
) -> Result<(i32, i64), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    if target_milli <= 0 {
        return Err("the average value target must be positive".into());
    }
    let groups = group_pods(pods, &metrics, resource);
    for pod in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(pod);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (ratio, usage) = usage_ratio(&metrics, target_milli);
    let replicas = finish_proposal(
        current,
        ratio,
        &groups,
        &mut metrics,
        tolerances,
        |_| target_milli,
        |m| Ok(usage_ratio(m, target_milli).0),
    )?;
    Ok((replicas, usage))
}

// ---------------------------------------------------------------------------------------------
// Stabilization and rate limits (upstream HorizontalController's memory)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Recommendation {
    replicas: i32,
    at: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
}

/// What the controller remembers per HPA between syncs (lost on restart, as upstream).
#[derive(Debug, Default)]
pub(crate) struct Memory {
    recommendations: HashMap<String, Vec<Recommendation>>,
    scale_up_events: HashMap<String, Vec<ScaleEvent>>,
    scale_down_events: HashMap<String, Vec<ScaleEvent>>,
}

impl Memory {
    fn forget_except(&mut self, live: &BTreeSet<String>) {
        self.recommendations.retain(|k, _| live.contains(k));
        self.scale_up_events.retain(|k, _| live.contains(k));
        self.scale_down_events.retain(|k, _| live.contains(k));
    }
}

fn before(now: Timestamp, secs: i64) -> Timestamp {
    now.checked_sub(SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MIN)
}

/// `behavior` with upstream's defaults filled in.
#[derive(Debug, Clone)]
struct Rules {
    window_secs: i64,
    select: String,
    policies: Vec<HPAScalingPolicy>,
    tolerance: Option<f64>,
}

fn policy(type_: &str, value: i32, period: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: period,
    }
}

fn resolve_rules(rules: Option<&HPAScalingRules>, up: bool) -> Rules {
    let default_policies = if up {
        vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]
    } else {
        vec![policy("Percent", 100, 15)]
    };
    let default_window = if up { 0 } else { DOWNSCALE_STABILIZATION_SECS };
    Rules {
        window_secs: rules
            .and_then(|r| r.stabilization_window_seconds)
            .map_or(default_window, i64::from),
        select: rules
            .and_then(|r| r.select_policy.clone())
            .unwrap_or_else(|| "Max".into()),
        policies: rules
            .and_then(|r| r.policies.clone())
            .unwrap_or(default_policies),
        tolerance: rules
            .and_then(|r| r.tolerance.as_ref())
            .and_then(|t| Quantity::parse(&t.0).ok())
            .map(|q| q.milli_value() as f64 / 1000.0),
    }
}

fn changes_in_period(events: &[ScaleEvent], period_secs: i32, now: Timestamp) -> i32 {
    let cutoff = before(now, period_secs as i64);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

fn scale_up_limit(
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
    now: Timestamp,
) -> i32 {
    let (mut result, min_change) = match rules.select.as_str() {
        "Disabled" => return current,
        "Min" => (i32::MAX, true),
        _ => (i32::MIN, false),
    };
    for p in &rules.policies {
        let start = current - changes_in_period(up, p.period_seconds, now)
            + changes_in_period(down, p.period_seconds, now);
        let proposed = if p.type_ == "Pods" {
            start + p.value
        } else {
            (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i32
        };
        result = if min_change {
            result.min(proposed)
        } else {
            result.max(proposed)
        };
    }
    result
}

fn scale_down_limit(
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
    now: Timestamp,
) -> i32 {
    let (mut result, min_change) = match rules.select.as_str() {
        "Disabled" => return current,
        "Min" => (i32::MIN, true),
        _ => (i32::MAX, false),
    };
    for p in &rules.policies {
        let start = current - changes_in_period(up, p.period_seconds, now)
            + changes_in_period(down, p.period_seconds, now);
        let proposed = if p.type_ == "Pods" {
            start - p.value
        } else {
            (start as f64 * (1.0 - p.value as f64 / 100.0)) as i32
        };
        result = if min_change {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------------

/// Upstream `setCondition`: the transition time moves only when the status flips; new types are
/// appended in the order they are first set.
fn set_condition(
    conds: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) {
    let now = Some(Time(Timestamp::now()));
    let idx = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conds.push(HorizontalPodAutoscalerCondition {
                type_: type_.into(),
                ..Default::default()
            });
            conds.len() - 1
        }
    };
    let c = &mut conds[idx];
    if c.status != status {
        c.last_transition_time = now;
    }
    c.status = status.into();
    c.reason = Some(reason.into());
    c.message = Some(message.into());
}

// ---------------------------------------------------------------------------------------------
// One sync, as a plan
// ---------------------------------------------------------------------------------------------

/// What one sync decided, before anything is written.
#[derive(Debug, Default)]
struct Plan {
    /// The replica count to record in status (and to scale to when `rescale`).
    desired: i32,
    rescale: bool,
    reason: String,
    metrics: Option<Vec<MetricStatus>>,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
    events: Vec<(EventType, String, String)>,
    /// Computing metrics failed outright; the error the sync reports.
    error: Option<String>,
}

/// The inputs of one sync apart from the metrics source and the memory.
struct Inputs<'a> {
    key: &'a str,
    hpa: &'a HorizontalPodAutoscaler,
    current: i32,
    selector: &'a str,
    pods: &'a [Pod],
    now: Timestamp,
}

/// The default metric when `spec.metrics` is empty (upstream defaults to 80 % CPU).
fn metric_specs(hpa: &HorizontalPodAutoscaler) -> Vec<MetricSpec> {
    let specs = hpa
        .spec
        .as_ref()
        .and_then(|s| s.metrics.clone())
        .unwrap_or_default();
    if !specs.is_empty() {
        return specs;
    }
    vec![MetricSpec {
        type_: "Resource".into(),
        resource: Some(k8s_openapi::api::autoscaling::v2::ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(80),
                ..Default::default()
            },
        }),
        ..Default::default()
    }]
}

/// A successful proposal for one metric.
struct Proposal {
    replicas: i32,
    name: String,
    status: MetricStatus,
}

/// A failed metric: the condition reason and the error.
struct MetricFailure {
    reason: &'static str,
    error: String,
}

async fn compute_for_metric<M: MetricsClient>(
    metrics: &M,
    spec: &MetricSpec,
    inp: &Inputs<'_>,
    tolerances: Tolerances,
) -> Result<Proposal, MetricFailure> {
    let ns = inp.hpa.metadata.namespace.as_deref().unwrap_or("default");
    let (name, container, target, reason) = match spec.type_.as_str() {
        "Resource" => {
            let Some(r) = spec.resource.as_ref() else {
                return Err(MetricFailure {
                    reason: "FailedGetResourceMetric",
                    error: "resource metric source is missing".into(),
                });
            };
            (
                r.name.clone(),
                None,
                r.target.clone(),
                "FailedGetResourceMetric",
            )
        }
        "ContainerResource" => {
            let Some(r) = spec.container_resource.as_ref() else {
                return Err(MetricFailure {
                    reason: "FailedGetContainerResourceMetric",
                    error: "container resource metric source is missing".into(),
                });
            };
            (
                r.name.clone(),
                Some(r.container.clone()),
                r.target.clone(),
                "FailedGetContainerResourceMetric",
            )
        }
        other => {
            let (reason, what) = match other {
                "Pods" => ("FailedGetPodsMetric", "pods"),
                "Object" => ("FailedGetObjectMetric", "object"),
                "External" => ("FailedGetExternalMetric", "external"),
                _ => {
                    return Err(MetricFailure {
                        reason: "InvalidMetricSourceType",
                        error: format!("unknown metric source type {other:?}"),
                    })
                }
            };
            return Err(MetricFailure {
                reason,
                error: format!(
                    "unable to get {what} metric: the custom and external metrics APIs are not served by this cluster"
                ),
            });
        }
    };
    let fail = |error: String| MetricFailure { reason, error };
    let value_status = |current: MetricValueStatus| match &container {
        None => MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: name.clone(),
                current,
            }),
            ..Default::default()
        },
        Some(c) => MetricStatus {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: name.clone(),
                container: c.clone(),
                current,
            }),
            ..Default::default()
        },
    };
    let label = match &container {
        None => format!("{name} resource"),
        Some(_) => format!("{name} container resource"),
    };
    if let Some(avg) = target.average_value.as_ref() {
        let target_milli = Quantity::parse(&avg.0)
            .map_err(|e| fail(format!("failed to get {name} usage: {e}")))?
            .milli_value();
        let info = metrics
            .resource_metric(ns, inp.selector, &name, container.as_deref())
            .await
            .map_err(|e| {
                fail(format!(
                    "failed to get {name} usage: unable to get metrics for resource {name}: {e}"
                ))
            })?;
        let (replicas, usage) =
            raw_resource_replicas(inp.current, target_milli, &name, tolerances, inp.pods, info)
                .map_err(|e| fail(format!("failed to get {name} usage: {e}")))?;
        return Ok(Proposal {
            replicas,
            name: label,
            status: value_status(MetricValueStatus {
                average_value: Some(Quantity::from_milli(usage).to_api()),
                ..Default::default()
            }),
        });
    }
    let Some(target_utilization) = target.average_utilization else {
        return Err(fail(
            "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set"
                .into(),
        ));
    };
    let info = metrics
        .resource_metric(ns, inp.selector, &name, container.as_deref())
        .await
        .map_err(|e| {
            fail(format!(
                "failed to get {name} utilization: unable to get metrics for resource {name}: {e}"
            ))
        })?;
    let (replicas, utilization, raw) = resource_replicas(
        inp.current,
        target_utilization,
        &name,
        container.as_deref(),
        tolerances,
        inp.pods,
        info,
    )
    .map_err(|e| fail(format!("failed to get {name} utilization: {e}")))?;
    Ok(Proposal {
        replicas,
        name: format!("{label} utilization (percentage of request)"),
        status: value_status(MetricValueStatus {
            average_utilization: Some(utilization),
            average_value: Some(Quantity::from_milli(raw).to_api()),
            ..Default::default()
        }),
    })
}

/// Upstream `computeReplicasForMetrics`: Ok((replicas, metric name)) or Err(error) after setting
/// the ScalingActive condition either way.
async fn compute_for_metrics<M: MetricsClient>(
    metrics: &M,
    inp: &Inputs<'_>,
    plan: &mut Plan,
    tolerances: Tolerances,
) -> Result<(i32, String), String> {
    if inp.selector.is_empty() {
        plan.events.push((
            EventType::Warning,
            "SelectorRequired".into(),
            "selector is required".into(),
        ));
        set_condition(
            &mut plan.conditions,
            "ScalingActive",
            "False",
            "InvalidSelector",
            "the HPA target's scale is missing a selector",
        );
        return Err("selector is required".into());
    }
    if let Err(e) = LabelSelector::parse(inp.selector) {
        let msg =
            format!("couldn't convert selector into a corresponding internal selector object: {e}");
        plan.events
            .push((EventType::Warning, "InvalidSelector".into(), msg.clone()));
        set_condition(
            &mut plan.conditions,
            "ScalingActive",
            "False",
            "InvalidSelector",
            &msg,
        );
        return Err(msg);
    }
    let specs = metric_specs(inp.hpa);
    let mut statuses = Vec::new();
    let mut replicas = 0;
    let mut metric = String::new();
    let mut invalid = 0usize;
    let mut first_failure: Option<MetricFailure> = None;
    for spec in &specs {
        match compute_for_metric(metrics, spec, inp, tolerances).await {
            Ok(p) => {
                statuses.push(p.status);
                if replicas == 0 || p.replicas > replicas {
                    replicas = p.replicas;
                    metric = p.name;
                }
            }
            Err(f) => {
                plan.events
                    .push((EventType::Warning, f.reason.to_string(), f.error.clone()));
                invalid += 1;
                if first_failure.is_none() {
                    first_failure = Some(f);
                }
            }
        }
    }
    plan.metrics = (!statuses.is_empty()).then_some(statuses);
    if let Some(f) = first_failure {
        if invalid >= specs.len() || replicas < inp.current {
            set_condition(
                &mut plan.conditions,
                "ScalingActive",
                "False",
                f.reason,
                &format!(
                    "the HPA was unable to compute the replica count: {}",
                    f.error
                ),
            );
            let resource_name = match f.reason {
                "FailedGetResourceMetric" | "FailedGetContainerResourceMetric" => {
                    "resource metric value"
                }
                _ => "metric value",
            };
            return Err(format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: failed to get {resource_name}: {}",
                specs.len(),
                f.error
            ));
        }
    }
    set_condition(
        &mut plan.conditions,
        "ScalingActive",
        "True",
        "ValidMetricFound",
        &format!("the HPA was able to successfully calculate a replica count from {metric}"),
    );
    Ok((replicas, metric))
}

/// Upstream `normalizeDesiredReplicas` (no `behavior`): scale-down stabilization over the
/// recommendations of the last 5 minutes, then the min/max and 2×-or-4 scale-up rules.
fn normalize_legacy(
    memory: &mut Memory,
    inp: &Inputs<'_>,
    plan: &mut Plan,
    prenormalized: i32,
    min: i32,
    max: i32,
) -> i32 {
    let recs = memory
        .recommendations
        .entry(inp.key.to_string())
        .or_default();
    let cutoff = before(inp.now, DOWNSCALE_STABILIZATION_SECS);
    let mut stabilized = prenormalized;
    let mut old: Option<usize> = None;
    for (i, r) in recs.iter().enumerate() {
        if r.at < cutoff {
            old = Some(i);
        } else if r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    let rec = Recommendation {
        replicas: prenormalized,
        at: inp.now,
    };
    match old {
        Some(i) => recs[i] = rec,
        None => recs.push(rec),
    }
    if stabilized != prenormalized {
        set_condition(
            &mut plan.conditions,
            "AbleToScale",
            "True",
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
        );
    } else {
        set_condition(
            &mut plan.conditions,
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
        );
    }
    let scale_up_limit =
        (SCALE_UP_LIMIT_FACTOR * inp.current as f64).max(SCALE_UP_LIMIT_MINIMUM) as i32;
    let (max_allowed, max_reason, max_msg) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    let (desired, reason, msg) = if stabilized < min {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if stabilized > max_allowed {
        (max_allowed, max_reason, max_msg)
    } else {
        (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    let limited = if desired == stabilized {
        "False"
    } else {
        "True"
    };
    set_condition(&mut plan.conditions, "ScalingLimited", limited, reason, msg);
    desired
}

/// Upstream `normalizeDesiredReplicasWithBehaviors`.
fn normalize_with_behavior(
    memory: &mut Memory,
    inp: &Inputs<'_>,
    plan: &mut Plan,
    prenormalized: i32,
    (min, max): (i32, i32),
    up: &Rules,
    down: &Rules,
) -> i32 {
    let current = inp.current;
    // stabilization: the lowest recommendation of the up window, the highest of the down window
    let up_cutoff = before(inp.now, up.window_secs);
    let down_cutoff = before(inp.now, down.window_secs);
    let recs = memory
        .recommendations
        .entry(inp.key.to_string())
        .or_default();
    let (mut up_rec, mut down_rec) = (prenormalized, prenormalized);
    let mut old: Option<usize> = None;
    for (i, r) in recs.iter().enumerate() {
        if r.at > up_cutoff {
            up_rec = up_rec.min(r.replicas);
        }
        if r.at > down_cutoff {
            down_rec = down_rec.max(r.replicas);
        }
        if r.at < up_cutoff && r.at < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    let rec = Recommendation {
        replicas: prenormalized,
        at: inp.now,
    };
    match old {
        Some(i) => recs[i] = rec,
        None => recs.push(rec),
    }
    if stabilized != prenormalized {
        let (reason, msg) = if prenormalized >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        set_condition(&mut plan.conditions, "AbleToScale", "True", reason, msg);
    } else {
        set_condition(
            &mut plan.conditions,
            "AbleToScale",
            "True",
            "ReadyForNewScale",
            "recommended size matches current size",
        );
    }
    // rate limits
    let ups = memory
        .scale_up_events
        .get(inp.key)
        .cloned()
        .unwrap_or_default();
    let downs = memory
        .scale_down_events
        .get(inp.key)
        .cloned()
        .unwrap_or_default();
    let mut result = (
        stabilized,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if stabilized > current {
        let limit = scale_up_limit(current, &ups, &downs, up, inp.now).max(current);
        let (allowed, reason, msg) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if stabilized > allowed {
            result = (allowed, reason, msg);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, &ups, &downs, down, inp.now).min(current);
        let (allowed, reason, msg) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if stabilized < allowed {
            result = (allowed, reason, msg);
        }
    }
    let limited = if result.0 == stabilized {
        "False"
    } else {
        "True"
    };
    set_condition(
        &mut plan.conditions,
        "ScalingLimited",
        limited,
        result.1,
        result.2,
    );
    result.0
}

fn tolerances_of(hpa: &HorizontalPodAutoscaler) -> Tolerances {
    let behavior = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
    let up = resolve_rules(behavior.and_then(|b| b.scale_up.as_ref()), true);
    let down = resolve_rules(behavior.and_then(|b| b.scale_down.as_ref()), false);
    Tolerances {
        down: down.tolerance.unwrap_or(DEFAULT_TOLERANCE),
        up: up.tolerance.unwrap_or(DEFAULT_TOLERANCE),
    }
}

/// Upstream `reconcileAutoscaler` from the point the scale is known, without side effects.
async fn plan<M: MetricsClient>(metrics: &M, memory: &Mutex<Memory>, inp: &Inputs<'_>) -> Plan {
    let spec = inp.hpa.spec.clone().unwrap_or_default();
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut plan = Plan {
        conditions: inp
            .hpa
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    set_condition(
        &mut plan.conditions,
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    );
    {
        let mut mem = memory.lock().expect("hpa memory poisoned");
        let recs = mem.recommendations.entry(inp.key.to_string()).or_default();
        if recs.is_empty() {
            recs.push(Recommendation {
                replicas: inp.current,
                at: inp.now,
            });
        }
    }
    let desired;
    if inp.current == 0 && min != 0 {
        desired = 0;
        set_condition(
            &mut plan.conditions,
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
    } else if inp.current > max {
        plan.reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
        set_condition(
            &mut plan.conditions,
            "ScalingLimited",
            "True",
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        );
    } else if inp.current < min {
        plan.reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
        set_condition(
            &mut plan.conditions,
            "ScalingLimited",
            "True",
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        );
    } else {
        let tolerances = tolerances_of(inp.hpa);
        let (proposed, metric) =
            match compute_for_metrics(metrics, inp, &mut plan, tolerances).await {
                Ok(v) => v,
                Err(e) => {
                    plan.desired = inp.hpa.status.as_ref().map_or(0, |s| s.desired_replicas);
                    plan.events.push((
                        EventType::Warning,
                        "FailedComputeMetricsReplicas".into(),
                        e.clone(),
                    ));
                    plan.error = Some(e);
                    return plan;
                }
            };
        let mut d = 0;
        let mut rescale_metric = String::new();
        if proposed > d {
            d = proposed;
            rescale_metric = metric;
        }
        if d > inp.current {
            plan.reason = format!("{rescale_metric} above target");
        }
        if d < inp.current {
            plan.reason = "All metrics below target".into();
        }
        let mut mem = memory.lock().expect("hpa memory poisoned");
        desired = match spec.behavior.as_ref() {
            None => normalize_legacy(&mut mem, inp, &mut plan, d, min, max),
            Some(b) => {
                let up = resolve_rules(b.scale_up.as_ref(), true);
                let down = resolve_rules(b.scale_down.as_ref(), false);
                normalize_with_behavior(&mut mem, inp, &mut plan, d, (min, max), &up, &down)
            }
        };
    }
    plan.rescale = desired != inp.current;
    plan.desired = if plan.rescale { desired } else { inp.current };
    if inp.current == 0 && min != 0 {
        plan.desired = 0;
    }
    plan
}

/// Upstream `storeScaleEvent` (only with `behavior`): remembers a rescale for the rate limits.
fn store_scale_event(
    memory: &mut Memory,
    hpa: &HorizontalPodAutoscaler,
    key: &str,
    prev: i32,
    new: i32,
    now: Timestamp,
) {
    let Some(b) = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref()) else {
        return;
    };
    let (rules, events, change) = if new > prev {
        (
            resolve_rules(b.scale_up.as_ref(), true),
            memory.scale_up_events.entry(key.to_string()).or_default(),
            new - prev,
        )
    } else {
        (
            resolve_rules(b.scale_down.as_ref(), false),
            memory.scale_down_events.entry(key.to_string()).or_default(),
            prev - new,
        )
    };
    let longest = rules
        .policies
        .iter()
        .map(|p| p.period_seconds)
        .max()
        .unwrap_or(0) as i64;
    let cutoff = before(now, longest);
    events.retain(|e| e.at > cutoff);
    events.push(ScaleEvent { change, at: now });
}

// ---------------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------------

struct State<M> {
    ctx: Arc<Context>,
    metrics: M,
    memory: Mutex<Memory>,
    recorder: EventRecorder,
    store: Store<HorizontalPodAutoscaler>,
}

/// The plural of a well-known scalable kind.
fn known_plural(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("apps", "Deployment") => Some("deployments"),
        ("apps", "ReplicaSet") => Some("replicasets"),
        ("apps", "StatefulSet") => Some("statefulsets"),
        ("", "ReplicationController") => Some("replicationcontrollers"),
        _ => None,
    }
}

/// The API resource `scaleTargetRef` points at (a fixed table, then discovery).
async fn target_resource(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> Result<ApiResource, String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if let Some(plural) = known_plural(group, kind) {
        return Ok(ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        });
    }
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .map(|(ar, _)| ar)
        .map_err(|e| format!("unable to determine resource for scale target reference: {e}"))
}

fn api_error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

async fn write_status(
    client: &kube::Client,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) -> Result<(), ControllerError> {
    if hpa.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let (Some(ns), Some(name)) = (
        hpa.metadata.namespace.as_deref(),
        hpa.metadata.name.as_deref(),
    ) else {
        return Ok(());
    };
    let mut updated = hpa.clone();
    updated.status = Some(status);
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .replace_status(name, &PostParams::default(), &updated)
        .await?;
    Ok(())
}

async fn reconcile<M: MetricsClient>(
    hpa: Arc<HorizontalPodAutoscaler>,
    state: Arc<State<M>>,
) -> Result<Action, ControllerError> {
    let (Some(ns), Some(name)) = (
        hpa.metadata.namespace.as_deref(),
        hpa.metadata.name.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = format!("{ns}/{name}");
    {
        let live: BTreeSet<String> = state
            .store
            .state()
            .iter()
            .filter_map(|h| {
                Some(format!(
                    "{}/{}",
                    h.metadata.namespace.as_deref()?,
                    h.metadata.name.as_deref()?
                ))
            })
            .chain(std::iter::once(key.clone()))
            .collect();
        state
            .memory
            .lock()
            .expect("hpa memory poisoned")
            .forget_except(&live);
    }
    let client = &state.ctx.client;
    let hpa_ref = kube::Resource::object_ref(hpa.as_ref(), &());
    let record = |t: EventType, reason: String, msg: String| {
        let hpa_ref = hpa_ref.clone();
        let state = state.clone();
        async move {
            if let Err(e) = state.recorder.record(&hpa_ref, t, &reason, &msg).await {
                tracing::debug!(error = %e, "recording an hpa event failed");
            }
        }
    };
    let old_status = hpa.status.clone().unwrap_or_default();
    let target = hpa
        .spec
        .as_ref()
        .map(|s| s.scale_target_ref.clone())
        .unwrap_or_default();
    let api_version = target.api_version.clone().unwrap_or_default();

    // the target's scale
    let scale = match target_resource(client, &api_version, &target.kind).await {
        Ok(ar) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .get_scale(&target.name)
            .await
            .map_err(|e| api_error_message(&e))
            .map(|s| (ar, s)),
        Err(e) => Err(e),
    };
    let (ar, scale) = match scale {
        Ok(v) => v,
        Err(e) => {
            record(EventType::Warning, "FailedGetScale".into(), e.clone()).await;
            let mut conditions = old_status.conditions.clone().unwrap_or_default();
            set_condition(
                &mut conditions,
                "AbleToScale",
                "False",
                "FailedGetScale",
                &format!("the HPA controller was unable to get the target's current scale: {e}"),
            );
            let status = HorizontalPodAutoscalerStatus {
                conditions: Some(conditions),
                ..old_status
            };
            write_status(client, &hpa, status).await?;
            return Err(ControllerError::Other(format!(
                "failed to query scale subresource for {}/{}: {e}",
                target.kind, target.name
            )));
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let selector = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let pods = if !selector.is_empty() && LabelSelector::parse(&selector).is_ok() {
        Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
    } else {
        Vec::new()
    };
    let now = Timestamp::now();
    let inputs = Inputs {
        key: &key,
        hpa: &hpa,
        current,
        selector: &selector,
        pods: &pods,
        now,
    };
    let mut plan = plan(&state.metrics, &state.memory, &inputs).await;
    for (t, reason, msg) in std::mem::take(&mut plan.events) {
        record(t, reason, msg).await;
    }
    let mut last_scale_time = old_status.last_scale_time.clone();
    if plan.rescale {
        let patch = serde_json::json!({"spec": {"replicas": plan.desired}});
        let result = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match result {
            Ok(_) => {
                set_condition(
                    &mut plan.conditions,
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    &format!(
                        "the HPA controller was able to update the target scale to {}",
                        plan.desired
                    ),
                );
                record(
                    EventType::Normal,
                    "SuccessfulRescale".into(),
                    format!("New size: {}; reason: {}", plan.desired, plan.reason),
                )
                .await;
                store_scale_event(
                    &mut state.memory.lock().expect("hpa memory poisoned"),
                    &hpa,
                    &key,
                    current,
                    plan.desired,
                    now,
                );
                last_scale_time = Some(Time(now));
                tracing::info!(hpa = %key, from = current, to = plan.desired, reason = %plan.reason, "rescaled");
            }
            Err(e) => {
                let msg = api_error_message(&e);
                record(
                    EventType::Warning,
                    "FailedRescale".into(),
                    format!(
                        "New size: {}; reason: {}; error: {msg}",
                        plan.desired, plan.reason
                    ),
                )
                .await;
                set_condition(
                    &mut plan.conditions,
                    "AbleToScale",
                    "False",
                    "FailedUpdateScale",
                    &format!("the HPA controller was unable to update the target scale: {msg}"),
                );
                plan.desired = old_status.desired_replicas;
                plan.error = Some(format!("failed to rescale {key}: {msg}"));
            }
        }
    }
    let status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(current),
        desired_replicas: plan.desired,
        last_scale_time,
        current_metrics: plan.metrics,
        conditions: Some(plan.conditions),
        observed_generation: hpa.metadata.generation,
    };
    write_status(client, &hpa, status).await?;
    match plan.error {
        // the status says why; retry on the normal period, like upstream's resync
        Some(e) => {
            tracing::debug!(hpa = %key, error = %e, "hpa sync incomplete");
            Ok(Action::requeue(SYNC_PERIOD))
        }
        None => Ok(Action::requeue(SYNC_PERIOD)),
    }
}

fn error_policy<M>(
    hpa: Arc<HorizontalPodAutoscaler>,
    err: &ControllerError,
    _state: Arc<State<M>>,
) -> Action {
    tracing::debug!(
        controller = "horizontal-pod-autoscaler",
        hpa = hpa.metadata.name.as_deref().unwrap_or_default(),
        error = %err,
        "sync failed"
    );
    Action::requeue(SYNC_PERIOD)
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        watcher::Config::default(),
    );
    let state = Arc::new(State {
        ctx: ctx.clone(),
        metrics: ApiMetricsClient {
            client: client.clone(),
        },
        memory: Mutex::new(Memory::default()),
        recorder: EventRecorder::new(client, "horizontal-pod-autoscaler"),
        store: controller.store(),
    });
    controller
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = "horizontal-pod-autoscaler", error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::autoscaling::v2::{
        CrossVersionObjectReference, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
        ResourceMetricSource,
    };
    use k8s_openapi::api::core::v1::{
        Container, Event, PodCondition, PodSpec, PodStatus, PodTemplateSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector as ApiSelector, ObjectMeta,
    };
    use tokio_util::sync::CancellationToken;

    /// Synthetic metrics: the same map whatever is asked, or an error.
    struct FakeMetrics(Result<PodMetricsInfo, String>);

    impl MetricsClient for FakeMetrics {
        async fn resource_metric(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Option<&str>,
        ) -> Result<PodMetricsInfo, String> {
            self.0.clone()
        }
    }

    fn fake(usage: &[(&str, i64)]) -> FakeMetrics {
        FakeMetrics(Ok(usage.iter().map(|(k, v)| (k.to_string(), *v)).collect()))
    }

    fn ready_pod(name: &str, cpu_request: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), ApiQuantity(cpu_request.into())),
                            ("memory".to_string(), ApiQuantity("100Mi".into())),
                        ])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn hpa(
        min: i32,
        max: i32,
        target: MetricTarget,
        behavior: Option<HorizontalPodAutoscalerBehavior>,
    ) -> HorizontalPodAutoscaler {
        let resource = if target.average_utilization.is_some() {
            "cpu"
        } else {
            "memory"
        };
        HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(HorizontalPodAutoscalerSpec {
                min_replicas: Some(min),
                max_replicas: max,
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: "web".into(),
                },
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: resource.into(),
                        target,
                    }),
                    ..Default::default()
                }]),
                behavior,
            }),
            ..Default::default()
        }
    }

    fn cpu_target(pct: i32) -> MetricTarget {
        MetricTarget {
            type_: "Utilization".into(),
            average_utilization: Some(pct),
            ..Default::default()
        }
    }

    fn pods(n: usize) -> Vec<Pod> {
        (0..n)
            .map(|i| ready_pod(&format!("p{i}"), "100m"))
            .collect()
    }

    fn usage(n: usize, milli: i64) -> FakeMetrics {
        FakeMetrics(Ok((0..n).map(|i| (format!("p{i}"), milli)).collect()))
    }

    async fn run_plan(
        metrics: &FakeMetrics,
        memory: &Mutex<Memory>,
        h: &HorizontalPodAutoscaler,
        current: i32,
        pods: &[Pod],
        now: Timestamp,
    ) -> Plan {
        let inputs = Inputs {
            key: "default/web",
            hpa: h,
            current,
            selector: "app=web",
            pods,
            now,
        };
        plan(metrics, memory, &inputs).await
    }

    fn cond(plan: &Plan, type_: &str) -> (String, String) {
        let c = plan
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {:?}", plan.conditions));
        (c.status.clone(), c.reason.clone().unwrap_or_default())
    }

    #[tokio::test]
    async fn hpa_cpu_above_target_scales_up_with_upstream_reason() {
        let memory = Mutex::new(Memory::default());
        let h = hpa(1, 10, cpu_target(50), None);
        // 2 pods at 75m of 100m = 75 % against 50 %: ratio 1.5, ceil(2 × 1.5) = 3
        let p = run_plan(&usage(2, 75), &memory, &h, 2, &pods(2), Timestamp::now()).await;
        assert!(p.rescale);
        assert_eq!(p.desired, 3);
        assert_eq!(
            p.reason,
            "cpu resource utilization (percentage of request) above target"
        );
        assert_eq!(
            cond(&p, "ScalingActive"),
            ("True".into(), "ValidMetricFound".into())
        );
        assert_eq!(
            cond(&p, "ScalingLimited"),
            ("False".into(), "DesiredWithinRange".into())
        );
        let m = p.metrics.unwrap();
        let current = &m[0].resource.as_ref().unwrap().current;
        assert_eq!(current.average_utilization, Some(75));
        assert_eq!(current.average_value.as_ref().unwrap().0, "75m");
    }

    #[tokio::test]
    async fn hpa_ratio_within_tolerance_keeps_replicas() {
        let memory = Mutex::new(Memory::default());
        let h = hpa(1, 10, cpu_target(50), None);
        // 54 % against 50 %: ratio 1.08, inside the 0.1 tolerance
        let p = run_plan(&usage(4, 54), &memory, &h, 4, &pods(4), Timestamp::now()).await;
        assert!(!p.rescale);
        assert_eq!(p.desired, 4);
        assert_eq!(
            cond(&p, "AbleToScale"),
            ("True".into(), "ReadyForNewScale".into())
        );
    }

    #[tokio::test]
    async fn hpa_scale_down_held_by_stabilization_then_released_after_window() {
        let memory = Mutex::new(Memory::default());
        let h = hpa(1, 10, cpu_target(50), None);
        let t0 = Timestamp::now();
        // first sync at 4 replicas records 4; utilization then collapses to 10 %
        let p = run_plan(&usage(4, 50), &memory, &h, 4, &pods(4), t0).await;
        assert!(!p.rescale);
        let later = t0.checked_add(SignedDuration::from_secs(60)).unwrap();
        let p = run_plan(&usage(4, 10), &memory, &h, 4, &pods(4), later).await;
        assert!(
            !p.rescale,
            "the 4 recommended a minute ago holds the scale-down"
        );
        assert_eq!(p.desired, 4);
        assert_eq!(
            cond(&p, "AbleToScale"),
            ("True".into(), "ScaleDownStabilized".into())
        );
        // past the 300 s window only the low recommendations remain: ceil(4 × 0.2) = 1
        let much_later = t0.checked_add(SignedDuration::from_secs(400)).unwrap();
        let p = run_plan(&usage(4, 10), &memory, &h, 4, &pods(4), much_later).await;
        assert!(p.rescale);
        assert_eq!(p.desired, 1);
        assert_eq!(p.reason, "All metrics below target");
    }

    #[tokio::test]
    async fn hpa_replicas_outside_min_max_are_clamped_even_without_metrics() {
        let memory = Mutex::new(Memory::default());
        let h = hpa(2, 5, cpu_target(50), None);
        let no_metrics = FakeMetrics(Err("unavailable".into()));
        let p = run_plan(&no_metrics, &memory, &h, 8, &pods(8), Timestamp::now()).await;
        assert_eq!((p.rescale, p.desired), (true, 5));
        assert_eq!(
            p.reason,
            "Current number of replicas above Spec.MaxReplicas"
        );
        assert_eq!(
            cond(&p, "ScalingLimited"),
            ("True".into(), "TooManyReplicas".into())
        );
        let p = run_plan(&no_metrics, &memory, &h, 1, &pods(1), Timestamp::now()).await;
        assert_eq!((p.rescale, p.desired), (true, 2));
        assert_eq!(
            p.reason,
            "Current number of replicas below Spec.MinReplicas"
        );
        // metric-driven proposals are clamped too: 300 % on 4 pods wants 24, max is 5
        let p = run_plan(&usage(4, 150), &memory, &h, 4, &pods(4), Timestamp::now()).await;
        assert_eq!((p.rescale, p.desired), (true, 5));
        assert_eq!(
            cond(&p, "ScalingLimited"),
            ("True".into(), "TooManyReplicas".into())
        );
        // and without behavior a single sync at most doubles (or reaches 4)
        let h = hpa(1, 100, cpu_target(50), None);
        let p = run_plan(&usage(3, 150), &memory, &h, 3, &pods(3), Timestamp::now()).await;
        assert_eq!(p.desired, 6);
        assert_eq!(
            cond(&p, "ScalingLimited"),
            ("True".into(), "ScaleUpLimit".into())
        );
    }

    #[tokio::test]
    async fn hpa_behavior_default_policies_limit_scale_up_and_scale_down() {
        let memory = Mutex::new(Memory::default());
        let behavior = HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                policies: Some(vec![policy("Pods", 1, 60)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let h = hpa(1, 100, cpu_target(50), Some(behavior));
        // 2 pods at 500 %: wants 20; default scale-up policies allow max(2 + 4, 2 × 2) = 6
        let now = Timestamp::now();
        let p = run_plan(&usage(2, 250), &memory, &h, 2, &pods(2), now).await;
        assert_eq!((p.rescale, p.desired), (true, 6));
        assert_eq!(
            cond(&p, "ScalingLimited"),
            ("True".into(), "ScaleUpLimit".into())
        );
        // a scale-down removes at most 1 pod per 60 s
        let p = run_plan(&usage(6, 5), &memory, &h, 6, &pods(6), now).await;
        assert_eq!((p.rescale, p.desired), (true, 5));
        assert_eq!(
            cond(&p, "ScalingLimited"),
            ("True".into(), "ScaleDownLimit".into())
        );
        store_scale_event(&mut memory.lock().unwrap(), &h, "default/web", 6, 5, now);
        let p = run_plan(&usage(5, 5), &memory, &h, 5, &pods(5), now).await;
        assert!(!p.rescale, "the period's budget is spent");
    }

    #[tokio::test]
    async fn hpa_average_value_target_and_missing_pods_follow_upstream() {
        let memory = Mutex::new(Memory::default());
        let target = MetricTarget {
            type_: "AverageValue".into(),
            average_value: Some(ApiQuantity("100Mi".into())),
            ..Default::default()
        };
        let h = hpa(1, 10, target, None);
        let mib = 1024 * 1024 * 1000; // one MiB in thousandths
                                      // 3 pods averaging 200Mi against 100Mi: 6
        let m = fake(&[("p0", 200 * mib), ("p1", 200 * mib), ("p2", 200 * mib)]);
        let p = run_plan(&m, &memory, &h, 3, &pods(3), Timestamp::now()).await;
        assert_eq!(p.desired, 6);
        assert_eq!(p.reason, "memory resource above target");
        // a pod without metrics counts as 0 on a scale-up: (200 + 200 + 0) / 3 = 133Mi → 4
        let m = fake(&[("p0", 200 * mib), ("p1", 200 * mib)]);
        let memory = Mutex::new(Memory::default());
        let p = run_plan(&m, &memory, &h, 3, &pods(3), Timestamp::now()).await;
        assert_eq!(p.desired, 4);
    }

    #[tokio::test]
    async fn hpa_metrics_unavailable_sets_scaling_active_false_and_keeps_replicas() {
        let memory = Mutex::new(Memory::default());
        let h = hpa(1, 10, cpu_target(50), None);
        let m = FakeMetrics(Err(
            "unable to fetch metrics from resource metrics API: nope".into(),
        ));
        let p = run_plan(&m, &memory, &h, 3, &pods(3), Timestamp::now()).await;
        assert!(!p.rescale);
        assert_eq!(
            cond(&p, "AbleToScale"),
            ("True".into(), "SucceededGetScale".into())
        );
        assert_eq!(
            cond(&p, "ScalingActive"),
            ("False".into(), "FailedGetResourceMetric".into())
        );
        assert!(p.metrics.is_none());
        assert!(p
            .events
            .iter()
            .any(|(t, r, _)| *t == EventType::Warning && r == "FailedGetResourceMetric"));
        assert!(p
            .error
            .unwrap()
            .starts_with("invalid metrics (1 invalid out of 1)"));
    }

    #[test]
    fn hpa_unready_pods_count_as_zero_on_scale_up() {
        let mut ps = pods(3);
        ps[2].status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let metrics: PodMetricsInfo = [("p0", 100), ("p1", 100), ("p2", 100)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let tol = Tolerances { down: 0.1, up: 0.1 };
        // ready pods at 100 %, target 50 %: ratio 2; with the unready pod at 0: 200/300 → 1.33 → 4
        let (replicas, utilization, _) =
            resource_replicas(3, 50, "cpu", None, tol, &ps, metrics).unwrap();
        assert_eq!((replicas, utilization), (4, 100));
    }

    #[test]
    fn hpa_pod_metric_sums_containers_and_skips_pods_missing_a_container_usage() {
        let data = serde_json::json!({"containers": [
            {"name": "a", "usage": {"cpu": "100m", "memory": "1Mi"}},
            {"name": "b", "usage": {"cpu": "0.2"}}]});
        assert_eq!(pod_metric_value(&data, "cpu", None), Some(300));
        assert_eq!(pod_metric_value(&data, "cpu", Some("b")), Some(200));
        assert_eq!(pod_metric_value(&data, "memory", None), None);
        assert_eq!(pod_metric_value(&data, "cpu", Some("c")), None);
    }

    async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn deployment(name: &str, replicas: i32) -> Deployment {
        let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: ApiSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "app".into(),
                            image: Some("nginx".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn hpa_without_pod_metrics_reports_scaling_inactive_and_does_not_scale() {
        let env = mini_testenv::TestEnv::start().await;
        let token = CancellationToken::new();
        let task = tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: Default::default(),
            shutdown: token.clone(),
        })));
        let admin = env.admin_client();
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
        deployments
            .create(&PostParams::default(), &deployment("web", 2))
            .await
            .unwrap();
        deployments
            .create(&PostParams::default(), &deployment("small", 1))
            .await
            .unwrap();
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(admin.clone(), "default");
        let mut web = hpa(1, 5, cpu_target(50), None);
        web.metadata.namespace = None;
        hpas.create(&PostParams::default(), &web).await.unwrap();
        let mut small = hpa(3, 5, cpu_target(50), None);
        small.metadata.name = Some("small".into());
        small.metadata.namespace = None;
        small.spec.as_mut().unwrap().scale_target_ref.name = "small".into();
        hpas.create(&PostParams::default(), &small).await.unwrap();

        let status = wait_for("web's ScalingActive condition", || async {
            let st = hpas.get("web").await.unwrap().status?;
            st.conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "ScalingActive")
                .then_some(st)
        })
        .await;
        let get = |t: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .cloned()
                .unwrap()
        };
        let active = get("ScalingActive");
        assert_eq!(active.status, "False");
        assert_eq!(active.reason.as_deref(), Some("FailedGetResourceMetric"));
        assert!(
            active.message.as_deref().unwrap().contains("metrics API"),
            "{active:?}"
        );
        let able = get("AbleToScale");
        assert_eq!(
            (able.status.as_str(), able.reason.as_deref()),
            ("True", Some("SucceededGetScale"))
        );
        assert_eq!(status.current_replicas, Some(2));
        assert!(status.current_metrics.is_none());
        assert_eq!(
            deployments.get("web").await.unwrap().spec.unwrap().replicas,
            Some(2)
        );

        let events: Api<Event> = Api::namespaced(admin.clone(), "default");
        wait_for("a FailedGetResourceMetric warning", || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=web"))
                .await
                .unwrap();
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedGetResourceMetric")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        })
        .await;

        // below minReplicas the target is raised even without metrics
        wait_for("small to be scaled to its minimum", || async {
            (deployments.get("small").await.unwrap().spec?.replicas == Some(3)).then_some(())
        })
        .await;
        let st = wait_for("small's status", || async {
            hpas.get("small")
                .await
                .unwrap()
                .status
                .filter(|s| s.last_scale_time.is_some())
        })
        .await;
        assert_eq!(st.desired_replicas, 3);
        wait_for("a SuccessfulRescale event", || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=small"))
                .await
                .unwrap();
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("SuccessfulRescale")
                        && e.message.as_deref() == Some("New size: 3; reason: Current number of replicas below Spec.MinReplicas")
                })
                .then_some(())
        })
        .await;
        // still unchanged after another look
        assert_eq!(
            deployments.get("web").await.unwrap().spec.unwrap().replicas,
            Some(2)
        );

        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("controller stops")
            .unwrap()
            .unwrap();
    }
}
