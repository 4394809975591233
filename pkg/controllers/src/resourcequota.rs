//! The resource quota controller: keeps each ResourceQuota's `status.hard` equal to `spec.hard`
//! and `status.used` equal to what the namespace consumes of the resources named in `hard`
//! (object counts, pod compute requests and limits, service node ports and load balancers, PVC
//! storage), honouring the quota's scopes. Recomputed when pods, services, ConfigMaps, Secrets
//! or PVCs change and every 30 s. Also home of [`Quantity`], the resource quantity arithmetic
//! the HPA controller shares.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota,
    ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::{Context, ControllerError};

/// Full recomputation period (upstream `--resource-quota-sync-period` is 5 min; the brief asks 30 s).
const RESYNC: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Quantity
// ---------------------------------------------------------------------------------------------

/// How a quantity is rendered, as upstream's `resource.Format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `500m`, `2k`, `1M`.
    DecimalSI,
    /// `1Ki`, `1536Mi`.
    BinarySI,
    /// `1e3`.
    DecimalExponent,
}

/// A resource quantity held exactly in nano-units (values finer than 1n round up, as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;
const DECIMAL_SUFFIXES: [(&str, i32); 9] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];
const BINARY_SUFFIXES: [(&str, u32); 6] = [
    ("Ki", 1),
    ("Mi", 2),
    ("Gi", 3),
    ("Ti", 4),
    ("Pi", 5),
    ("Ei", 6),
];

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

/// `n / d` rounded away from zero.
fn div_round_up(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n > 0 {
        q + 1
    } else {
        q - 1
    }
}

impl Quantity {
    /// Zero, rendered `0`; adding to it adopts the addend's format, as upstream's `Add` does.
    pub(crate) fn zero() -> Quantity {
        Quantity {
            nanos: 0,
            format: Format::DecimalSI,
        }
    }

    /// An integer count (`3`).
    pub(crate) fn from_int(v: i64) -> Quantity {
        Quantity {
            nanos: v as i128 * NANO,
            format: Format::DecimalSI,
        }
    }

    /// Thousandths (`NewMilliQuantity(v, DecimalSI)`).
    pub(crate) fn from_milli(v: i64) -> Quantity {
        Quantity {
            nanos: v as i128 * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    /// Parses the Kubernetes quantity syntax: `<sign><digits>[.<digits>]<suffix>` with a decimal
    /// SI suffix, a binary suffix or an exponent (`1e3`, `1E-3`).
    pub(crate) fn parse(s: &str) -> Result<Quantity, String> {
        let err = || {
            format!("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {s:?}")
        };
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(err());
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 36 {
            return Err(format!("quantity {s:?} is too large"));
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| err())?
        };
        let scale = frac_part.len() as i32;
        let (exp10, binary_power) = if suffix.is_empty() {
            (0, 0)
        } else if let Some((_, p)) = BINARY_SUFFIXES.iter().find(|(n, _)| *n == suffix) {
            (0, *p)
        } else if let Some((_, e)) = DECIMAL_SUFFIXES.iter().find(|(n, _)| *n == suffix) {
            (*e, 0)
        } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
            let e: i32 = exp.parse().map_err(|_| err())?;
            if !(-40..=40).contains(&e) {
                return Err(format!("quantity {s:?} is out of range"));
            }
            (e, 0)
        } else {
            return Err(err());
        };
        let format = if binary_power > 0 {
            Format::BinarySI
        } else if suffix.starts_with(['e', 'E']) && suffix.len() > 1 {
            Format::DecimalExponent
        } else {
            Format::DecimalSI
        };
        let too_large = || format!("quantity {s:?} is too large");
        let mut n = mantissa
            .checked_mul(1024i128.pow(binary_power))
            .ok_or_else(too_large)?;
        let net = 9 + exp10 - scale;
        if net >= 0 {
            n = n
                .checked_mul(pow10(net as u32).ok_or_else(too_large)?)
                .ok_or_else(too_large)?;
        } else {
            n = match pow10((-net) as u32) {
                Some(d) => div_round_up(n, d),
                None => i128::from(n != 0),
            };
        }
        Ok(Quantity {
            nanos: if negative { -n } else { n },
            format,
        })
    }

    /// Adds `other`; a zero receiver takes `other`'s format.
    pub(crate) fn add(&mut self, other: &Quantity) {
        if self.nanos == 0 {
            self.format = other.format;
        }
        self.nanos += other.nanos;
    }

    pub(crate) fn is_positive(&self) -> bool {
        self.nanos > 0
    }

    /// The value in thousandths, rounded up (upstream `MilliValue`).
    pub(crate) fn milli_value(&self) -> i64 {
        div_round_up(self.nanos, 1_000_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// The canonical string as the API would store it.
    pub(crate) fn to_api(self) -> ApiQuantity {
        ApiQuantity(self.to_string())
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let mut format = self.format;
        if format == Format::BinarySI && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0)
        {
            // fractions and small values are clearer in decimal, as upstream decides
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let mut v = self.nanos / NANO;
            let mut power = 0usize;
            while power < BINARY_SUFFIXES.len() && v % 1024 == 0 {
                v /= 1024;
                power += 1;
            }
            let suffix = if power == 0 {
                ""
            } else {
                BINARY_SUFFIXES[power - 1].0
            };
            return write!(f, "{v}{suffix}");
        }
        // the largest power of 1000 (down to nano) that divides the value exactly
        let mut exp = -9i32;
        let mut mantissa = self.nanos;
        while mantissa % 1000 == 0 && exp < 18 {
            mantissa /= 1000;
            exp += 3;
        }
        if format == Format::DecimalExponent {
            return if exp == 0 {
                write!(f, "{mantissa}")
            } else {
                write!(f, "{mantissa}e{exp}")
            };
        }
        let suffix = DECIMAL_SUFFIXES
            .iter()
            .find(|(_, e)| *e == exp)
            .map(|(s, _)| *s)
            .unwrap_or("");
        write!(f, "{mantissa}{suffix}")
    }
}

/// Parses an API quantity, treating garbage as zero (validation already rejected it).
fn q(v: &ApiQuantity) -> Quantity {
    Quantity::parse(v.0.trim()).unwrap_or_else(|_| Quantity::zero())
}

// ---------------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------------

type Usage = BTreeMap<String, Quantity>;

fn add_usage(total: &mut Usage, name: &str, v: Quantity) {
    total
        .entry(name.to_string())
        .or_insert_with(Quantity::zero)
        .add(&v);
}

/// One scope requirement: `spec.scopes` entries (operator Exists) and `spec.scopeSelector`.
#[derive(Debug, Clone)]
struct ScopeRequirement {
    scope: String,
    operator: String,
    values: Vec<String>,
}

fn scopes_of(quota: &ResourceQuota) -> Vec<ScopeRequirement> {
    let Some(spec) = quota.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<ScopeRequirement> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| ScopeRequirement {
            scope: s.clone(),
            operator: "Exists".into(),
            values: Vec::new(),
        })
        .collect();
    for e in spec
        .scope_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref())
        .into_iter()
        .flatten()
    {
        out.push(ScopeRequirement {
            scope: e.scope_name.clone(),
            operator: e.operator.clone(),
            values: e.values.clone().unwrap_or_default(),
        });
    }
    out
}

/// Compute resources of one container: requests (defaulted from limits, as the API does) and limits.
fn container_resources(
    c: &k8s_openapi::api::core::v1::Container,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let res = c.resources.as_ref();
    let limits: BTreeMap<String, Quantity> = res
        .and_then(|r| r.limits.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), q(v)))
        .collect();
    let mut requests: BTreeMap<String, Quantity> = res
        .and_then(|r| r.requests.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), q(v)))
        .collect();
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert(*v);
    }
    (requests, limits)
}

/// Pod-level requests or limits: max(sum over app containers, each init container) + overhead,
/// as upstream's `PodRequests` / `PodLimits` (restartable sidecar init containers counted as app
/// containers).
fn pod_resources(pod: &Pod, limits: bool) -> BTreeMap<String, Quantity> {
    let Some(spec) = pod.spec.as_ref() else {
        return BTreeMap::new();
    };
    let pick = |c| {
        let (r, l) = container_resources(c);
        if limits {
            l
        } else {
            r
        }
    };
    let mut sum: BTreeMap<String, Quantity> = BTreeMap::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter().chain(sidecars) {
        for (k, v) in pick(c) {
            sum.entry(k).or_insert_with(Quantity::zero).add(&v);
        }
    }
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() != Some("Always"))
    {
        for (k, v) in pick(c) {
            let e = sum.entry(k).or_insert_with(Quantity::zero);
            if v.nanos > e.nanos {
                *e = v;
            }
        }
    }
    for (k, v) in spec.overhead.iter().flatten() {
        if limits && !sum.contains_key(k) {
            continue;
        }
        sum.entry(k.clone())
            .or_insert_with(Quantity::zero)
            .add(&q(v));
    }
    sum
}

/// Upstream `QuotaV1Pod`: pods that finished, or are past their deletion grace period, stop
/// counting against compute quota.
fn pod_counts_for_compute(pod: &Pod) -> bool {
    if mini_runtime::pod::is_terminal(pod) {
        return false;
    }
    if let (Some(ts), Some(grace)) = (
        pod.metadata.deletion_timestamp.as_ref(),
        pod.metadata.deletion_grace_period_seconds,
    ) {
        let deadline = ts.0.as_second() + grace;
        if deadline < k8s_openapi::jiff::Timestamp::now().as_second() {
            return false;
        }
    }
    true
}

/// BestEffort QoS: no container asks for or limits cpu or memory.
fn is_best_effort(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    !spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            let (r, l) = container_resources(c);
            ["cpu", "memory"].iter().any(|k| {
                r.get(*k).is_some_and(Quantity::is_positive)
                    || l.get(*k).is_some_and(Quantity::is_positive)
            })
        })
}

fn uses_cross_namespace_affinity(pod: &Pod) -> bool {
    let Some(aff) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return false;
    };
    let term_crosses = |t: &k8s_openapi::api::core::v1::PodAffinityTerm| {
        t.namespace_selector.is_some() || t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
    };
    let aff_terms = aff.pod_affinity.iter().flat_map(|a| {
        a.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .cloned()
            .chain(
                a.preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| w.pod_affinity_term.clone()),
            )
    });
    let anti_terms = aff.pod_anti_affinity.iter().flat_map(|a| {
        a.required_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .cloned()
            .chain(
                a.preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                    .map(|w| w.pod_affinity_term.clone()),
            )
    });
    aff_terms.chain(anti_terms).any(|t| term_crosses(&t))
}

fn pod_matches_scope(pod: &Pod, req: &ScopeRequirement) -> bool {
    let spec = pod.spec.as_ref();
    let deadline = spec.and_then(|s| s.active_deadline_seconds);
    match req.scope.as_str() {
        "Terminating" => deadline.is_some_and(|d| d >= 0),
        "NotTerminating" => deadline.is_none_or(|d| d < 0),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = spec
                .and_then(|s| s.priority_class_name.as_deref())
                .unwrap_or("");
            match req.operator.as_str() {
                "Exists" => !class.is_empty(),
                "In" => req.values.iter().any(|v| v == class),
                "NotIn" => req.values.iter().all(|v| v != class),
                // the key is always present in upstream's label set, so this never matches
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(pod),
        _ => false,
    }
}

/// Resources prefixed like `requests.` that pods account under their bare name too.
fn is_extended_or_prefixed(resource: &str) -> bool {
    resource.starts_with("hugepages-") || resource.contains('/')
}

/// Upstream `PodUsageFunc`: `count/pods` always; the compute resources only while the pod lives.
fn pod_usage(pod: &Pod) -> Usage {
    let mut u = Usage::new();
    u.insert("count/pods".into(), Quantity::from_int(1));
    if !pod_counts_for_compute(pod) {
        return u;
    }
    u.insert("pods".into(), Quantity::from_int(1));
    let requests = pod_resources(pod, false);
    let limits = pod_resources(pod, true);
    for (name, v) in &requests {
        match name.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                u.insert(name.clone(), *v);
                u.insert(format!("requests.{name}"), *v);
            }
            n if n.starts_with("hugepages-") => {
                u.insert(name.clone(), *v);
                u.insert(format!("requests.{name}"), *v);
            }
            n if is_extended_or_prefixed(n) => {
                u.insert(format!("requests.{name}"), *v);
            }
            _ => {}
        }
    }
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(v) = limits.get(name) {
            u.insert(format!("limits.{name}"), *v);
        }
    }
    u
}

/// Upstream `ServiceUsageFunc`.
fn service_usage(svc: &Service) -> Usage {
    let mut u = Usage::new();
    u.insert("services".into(), Quantity::from_int(1));
    u.insert("count/services".into(), Quantity::from_int(1));
    let Some(spec) = svc.spec.as_ref() else {
        return u;
    };
    let ports = spec.ports.as_ref().map(Vec::len).unwrap_or(0) as i64;
    match spec.type_.as_deref() {
        Some("NodePort") => {
            u.insert("services.nodeports".into(), Quantity::from_int(ports));
        }
        Some("LoadBalancer") => {
            let node_ports = if spec.allocate_load_balancer_node_ports == Some(false) {
                spec.ports
                    .iter()
                    .flatten()
                    .filter(|p| p.node_port.is_some_and(|n| n != 0))
                    .count() as i64
            } else {
                ports
            };
            u.insert("services.nodeports".into(), Quantity::from_int(node_ports));
            u.insert("services.loadbalancers".into(), Quantity::from_int(1));
        }
        _ => {}
    }
    u
}

/// Upstream PVC usage: the count, `requests.storage` and the per-storage-class variants.
fn pvc_usage(pvc: &PersistentVolumeClaim) -> Usage {
    let mut u = Usage::new();
    u.insert("persistentvolumeclaims".into(), Quantity::from_int(1));
    u.insert("count/persistentvolumeclaims".into(), Quantity::from_int(1));
    let spec = pvc.spec.as_ref();
    let class = spec
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("");
    if !class.is_empty() {
        u.insert(
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            Quantity::from_int(1),
        );
    }
    let storage = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(q);
    if let Some(storage) = storage {
        u.insert("requests.storage".into(), storage);
        if !class.is_empty() {
            u.insert(
                format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                storage,
            );
        }
    }
    u
}

/// Which objects a resource name in `hard` is computed from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Pods,
    Services,
    ConfigMaps,
    Secrets,
    Pvcs,
    ReplicationControllers,
    ResourceQuotas,
    /// `count/<plural>.<group>` (or a core plural not listed above).
    Objects {
        group: String,
        plural: String,
    },
}

fn source_of(resource: &str) -> Option<Source> {
    let core = |plural: &str| match plural {
        "pods" => Some(Source::Pods),
        "services" => Some(Source::Services),
        "configmaps" => Some(Source::ConfigMaps),
        "secrets" => Some(Source::Secrets),
        "persistentvolumeclaims" => Some(Source::Pvcs),
        "replicationcontrollers" => Some(Source::ReplicationControllers),
        "resourcequotas" => Some(Source::ResourceQuotas),
        _ => None,
    };
    if let Some(rest) = resource.strip_prefix("count/") {
        return match rest.split_once('.') {
            None => core(rest).or_else(|| {
                Some(Source::Objects {
                    group: String::new(),
                    plural: rest.to_string(),
                })
            }),
            Some((plural, group)) => Some(Source::Objects {
                group: group.to_string(),
                plural: plural.to_string(),
            }),
        };
    }
    if resource.ends_with(".storageclass.storage.k8s.io/requests.storage")
        || resource.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
        || resource == "requests.storage"
    {
        return Some(Source::Pvcs);
    }
    if let Some(s) = core(resource) {
        return Some(s);
    }
    if resource.starts_with("services.") {
        return Some(Source::Services);
    }
    if matches!(resource, "cpu" | "memory" | "ephemeral-storage")
        || resource.starts_with("requests.")
        || resource.starts_with("limits.")
        || resource.starts_with("hugepages-")
    {
        return Some(Source::Pods);
    }
    None
}

/// The pure part: `status.used` for `hard` given the namespace's objects, one usage map per
/// object of each source (absent sources mean "not listed", their resources are left out).
fn compute_used(
    hard: &BTreeMap<String, ApiQuantity>,
    scopes: &[ScopeRequirement],
    pods: Option<&[Pod]>,
    other: &BTreeMap<Source, Vec<Usage>>,
) -> BTreeMap<String, Quantity> {
    let mut total = Usage::new();
    let mut computable: BTreeSet<String> = BTreeSet::new();
    for name in hard.keys() {
        let Some(src) = source_of(name) else { continue };
        if src == Source::Pods {
            if pods.is_some() {
                computable.insert(name.clone());
            }
        } else if other.contains_key(&src) {
            computable.insert(name.clone());
        }
    }
    for name in &computable {
        total.insert(name.clone(), Quantity::zero());
    }
    for pod in pods.into_iter().flatten() {
        if !scopes.iter().all(|s| pod_matches_scope(pod, s)) {
            continue;
        }
        for (k, v) in pod_usage(pod) {
            if computable.contains(&k) {
                add_usage(&mut total, &k, v);
            }
        }
    }
    // only pods can match a scope: every other evaluator's objects are excluded by any scope
    if scopes.is_empty() {
        for usages in other.values() {
            for u in usages {
                for (k, v) in u {
                    if computable.contains(k) {
                        add_usage(&mut total, k, *v);
                    }
                }
            }
        }
    }
    total
}

fn count_usage(names: &[&str]) -> Usage {
    names
        .iter()
        .map(|n| (n.to_string(), Quantity::from_int(1)))
        .collect()
}

async fn list_all<K>(client: &kube::Client, namespace: &str) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default()).await?.items)
}

async fn count_objects(
    client: &kube::Client,
    namespace: &str,
    group: &str,
    plural: &str,
) -> Option<usize> {
    // the core group is "" for discovery too
    let resources = kube::discovery::group(client, group)
        .await
        .ok()?
        .recommended_resources();
    let (ar, caps) = resources.into_iter().find(|(ar, _)| ar.plural == plural)?;
    let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), namespace, &ar)
    } else {
        return None;
    };
    api.list_metadata(&ListParams::default())
        .await
        .ok()
        .map(|l| l.items.len())
}

async fn reconcile(
    quota: Arc<ResourceQuota>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let (Some(ns), Some(name)) = (
        quota.metadata.namespace.as_deref(),
        quota.metadata.name.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    if quota.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let scopes = scopes_of(&quota);
    let sources: BTreeSet<Source> = hard.keys().filter_map(|k| source_of(k)).collect();
    let client = &ctx.client;

    let pods = if sources.contains(&Source::Pods) {
        Some(list_all::<Pod>(client, ns).await?)
    } else {
        None
    };
    let mut other: BTreeMap<Source, Vec<Usage>> = BTreeMap::new();
    for src in &sources {
        let usages: Vec<Usage> = match src {
            Source::Pods => continue,
            Source::Services => list_all::<Service>(client, ns)
                .await?
                .iter()
                .map(service_usage)
                .collect(),
            Source::Pvcs => list_all::<PersistentVolumeClaim>(client, ns)
                .await?
                .iter()
                .map(pvc_usage)
                .collect(),
            Source::ConfigMaps => vec![
                count_usage(&["configmaps", "count/configmaps"]);
                list_all::<ConfigMap>(client, ns).await?.len()
            ],
            Source::Secrets => vec![
                count_usage(&["secrets", "count/secrets"]);
                list_all::<Secret>(client, ns).await?.len()
            ],
            Source::ReplicationControllers => {
                vec![
                    count_usage(&["replicationcontrollers", "count/replicationcontrollers"]);
                    list_all::<ReplicationController>(client, ns).await?.len()
                ]
            }
            Source::ResourceQuotas => vec![
                count_usage(&["resourcequotas", "count/resourcequotas"]);
                list_all::<ResourceQuota>(client, ns).await?.len()
            ],
            Source::Objects { group, plural } => {
                let Some(n) = count_objects(client, ns, group, plural).await else {
                    tracing::debug!(resource = %plural, group = %group, "quota names a resource discovery does not know");
                    continue;
                };
                let key = if group.is_empty() {
                    format!("count/{plural}")
                } else {
                    format!("count/{plural}.{group}")
                };
                vec![count_usage(&[key.as_str()]); n]
            }
        };
        other.insert(src.clone(), usages);
    }

    let used = compute_used(&hard, &scopes, pods.as_deref(), &other);
    // keep what we could not compute from the previous status, then mask to `hard`
    let mut new_used: BTreeMap<String, ApiQuantity> = quota
        .status
        .as_ref()
        .and_then(|s| s.used.clone())
        .unwrap_or_default();
    for (k, v) in used {
        new_used.insert(k, v.to_api());
    }
    new_used.retain(|k, _| hard.contains_key(k));
    let new_status = ResourceQuotaStatus {
        hard: Some(hard.clone()),
        used: Some(new_used),
    };
    let old = quota.status.clone().unwrap_or_default();
    let same = |a: &Option<BTreeMap<String, ApiQuantity>>,
                b: &Option<BTreeMap<String, ApiQuantity>>| {
        a.clone().unwrap_or_default() == b.clone().unwrap_or_default()
    };
    if !(same(&old.hard, &new_status.hard) && same(&old.used, &new_status.used)) {
        let mut updated = (*quota).clone();
        updated.status = Some(new_status);
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
        api.replace_status(name, &PostParams::default(), &updated)
            .await?;
        tracing::debug!(namespace = ns, quota = name, "quota status updated");
    }
    Ok(Action::requeue(RESYNC))
}

fn error_policy(quota: Arc<ResourceQuota>, err: &ControllerError, _ctx: Arc<Context>) -> Action {
    tracing::debug!(
        controller = "resourcequota",
        quota = quota.metadata.name.as_deref().unwrap_or_default(),
        error = %err,
        "sync failed"
    );
    Action::requeue(Duration::from_secs(1))
}

/// Every quota of the namespace `meta` lives in.
fn quotas_in(store: &Store<ResourceQuota>, meta: &ObjectMeta) -> Vec<ObjectRef<ResourceQuota>> {
    let Some(ns) = meta.namespace.as_deref() else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|q| q.metadata.namespace.as_deref() == Some(ns))
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

pub(crate) async fn run(ctx: Arc<Context>) -> Result<(), ControllerError> {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<ResourceQuota>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let (s1, s2, s3, s4, s5) = (
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        store,
    );
    let wc = watcher::Config::default;
    controller
        .watches(Api::<Pod>::all(client.clone()), wc(), move |o| {
            quotas_in(&s1, &o.metadata)
        })
        .watches(Api::<Service>::all(client.clone()), wc(), move |o| {
            quotas_in(&s2, &o.metadata)
        })
        .watches(Api::<ConfigMap>::all(client.clone()), wc(), move |o| {
            quotas_in(&s3, &o.metadata)
        })
        .watches(Api::<Secret>::all(client.clone()), wc(), move |o| {
            quotas_in(&s4, &o.metadata)
        })
        .watches(Api::<PersistentVolumeClaim>::all(client), wc(), move |o| {
            quotas_in(&s5, &o.metadata)
        })
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = "resourcequota", error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PodSpec, PodStatus, ResourceQuotaSpec, ResourceRequirements, ServicePort,
        ServiceSpec,
    };
    use kube::api::{DeleteParams, Patch, PatchParams};
    use tokio_util::sync::CancellationToken;

    fn sum(values: &[&str]) -> String {
        let mut total = Quantity::zero();
        for v in values {
            total.add(&Quantity::parse(v).unwrap());
        }
        total.to_string()
    }

    #[test]
    fn quantity_sum_renders_canonically_like_upstream() {
        assert_eq!(sum(&["100m", "0.5"]), "600m");
        assert_eq!(sum(&["1Gi", "512Mi"]), "1536Mi");
        assert_eq!(sum(&["1", "2"]), "3");
        assert_eq!(sum(&["1.5"]), "1500m");
        assert_eq!(sum(&["250m", "750m"]), "1");
        assert_eq!(sum(&["2000"]), "2k");
        assert_eq!(sum(&["1Gi", "1Gi"]), "2Gi");
        assert_eq!(sum(&["128974848"]), "128974848");
        assert_eq!(sum(&["129e6"]), "129e6");
        assert_eq!(sum(&["1M", "500k"]), "1500k");
        assert_eq!(sum(&[]), "0");
        assert_eq!(
            sum(&["0", "64Mi"]),
            "64Mi",
            "a zero sum adopts the addend's format"
        );
        assert_eq!(sum(&["500Mi", "0.5Gi"]), "1012Mi");
        assert_eq!(sum(&["512"]), "512");
        assert_eq!(
            sum(&["0.5Ki"]),
            "512",
            "small binary values render in decimal"
        );
        assert_eq!(
            sum(&["1Ki", "1m"]),
            "1024001m",
            "fractional binary values render in decimal"
        );
        assert_eq!(sum(&["-1", "500m"]), "-500m");
        assert_eq!(sum(&["1n"]), "1n");
        assert_eq!(sum(&["0.0000000001"]), "1n", "sub-nano precision rounds up");
    }

    #[test]
    fn quantity_parse_rejects_garbage_and_converts_to_milli() {
        for bad in ["", "abc", "1.2.3", "1Qi", "--1", "1e", ".", "1 Gi"] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Quantity::parse("250m").unwrap().milli_value(), 250);
        assert_eq!(Quantity::parse("2").unwrap().milli_value(), 2000);
        assert_eq!(Quantity::parse("1Ki").unwrap().milli_value(), 1_024_000);
        assert_eq!(Quantity::parse("1E").unwrap().to_string(), "1E");
        assert_eq!(Quantity::parse("1e3").unwrap().to_string(), "1e3");
        assert_eq!(Quantity::parse("1.5e3").unwrap().to_string(), "1500");
        assert_eq!(Quantity::from_milli(1500).to_string(), "1500m");
        assert_eq!(Quantity::parse("+.5").unwrap().to_string(), "500m");
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        Container {
            name: "c".into(),
            image: Some("busybox".into()),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, containers: Vec<Container>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn hard(kv: &[(&str, &str)]) -> BTreeMap<String, ApiQuantity> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
            .collect()
    }

    #[test]
    fn pod_usage_sums_requests_limits_and_skips_terminal_pods() {
        let pods = vec![
            pod(
                "a",
                vec![
                    container(&[("cpu", "100m"), ("memory", "1Gi")], &[("cpu", "1")]),
                    container(&[("cpu", "0.5"), ("memory", "512Mi")], &[]),
                ],
                "Running",
            ),
            pod(
                "b",
                vec![container(&[], &[("cpu", "200m"), ("memory", "128Mi")])],
                "Pending",
            ),
            pod("done", vec![container(&[("cpu", "5")], &[])], "Succeeded"),
        ];
        let h = hard(&[
            ("pods", "10"),
            ("count/pods", "10"),
            ("requests.cpu", "10"),
            ("cpu", "10"),
            ("requests.memory", "10Gi"),
            ("limits.cpu", "10"),
            ("limits.memory", "10Gi"),
        ]);
        let used = compute_used(&h, &[], Some(&pods), &BTreeMap::new());
        let s = |k: &str| used[k].to_string();
        assert_eq!(s("pods"), "2");
        assert_eq!(s("count/pods"), "3");
        assert_eq!(s("requests.cpu"), "800m", "limits default requests of b");
        assert_eq!(s("cpu"), "800m");
        assert_eq!(s("requests.memory"), "1664Mi");
        assert_eq!(s("limits.cpu"), "1200m");
        assert_eq!(s("limits.memory"), "128Mi");
    }

    #[test]
    fn scopes_select_pods_and_exclude_other_objects() {
        let mut terminating = pod("t", vec![container(&[("cpu", "1")], &[])], "Running");
        terminating.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        let best_effort = pod("be", vec![container(&[], &[])], "Running");
        let pods = vec![terminating, best_effort];
        let scope = |s: &str| ScopeRequirement {
            scope: s.into(),
            operator: "Exists".into(),
            values: vec![],
        };
        let h = hard(&[("pods", "10"), ("services", "5")]);
        let other = BTreeMap::from([(Source::Services, vec![service_usage(&Service::default())])]);
        let count = |scopes: &[ScopeRequirement]| {
            let u = compute_used(&h, scopes, Some(&pods), &other);
            (u["pods"].to_string(), u["services"].to_string())
        };
        assert_eq!(count(&[]), ("2".into(), "1".into()));
        assert_eq!(count(&[scope("Terminating")]), ("1".into(), "0".into()));
        assert_eq!(count(&[scope("NotTerminating")]), ("1".into(), "0".into()));
        assert_eq!(count(&[scope("BestEffort")]), ("1".into(), "0".into()));
        assert_eq!(
            count(&[scope("NotBestEffort"), scope("NotTerminating")]),
            ("0".into(), "0".into())
        );
    }

    #[test]
    fn service_usage_counts_node_ports_and_load_balancers() {
        let svc = |t: &str, ports: usize| Service {
            spec: Some(ServiceSpec {
                type_: Some(t.into()),
                ports: Some(vec![ServicePort::default(); ports]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let h = hard(&[
            ("services", "9"),
            ("services.nodeports", "9"),
            ("services.loadbalancers", "9"),
        ]);
        let other = BTreeMap::from([(
            Source::Services,
            vec![
                service_usage(&svc("ClusterIP", 1)),
                service_usage(&svc("NodePort", 2)),
                service_usage(&svc("LoadBalancer", 3)),
            ],
        )]);
        let used = compute_used(&h, &[], None, &other);
        assert_eq!(used["services"].to_string(), "3");
        assert_eq!(used["services.nodeports"].to_string(), "5");
        assert_eq!(used["services.loadbalancers"].to_string(), "1");
    }

    #[test]
    fn resource_names_map_to_their_sources() {
        assert_eq!(source_of("pods"), Some(Source::Pods));
        assert_eq!(source_of("requests.storage"), Some(Source::Pvcs));
        assert_eq!(source_of("requests.nvidia.com/gpu"), Some(Source::Pods));
        assert_eq!(source_of("count/secrets"), Some(Source::Secrets));
        assert_eq!(
            source_of("count/deployments.apps"),
            Some(Source::Objects {
                group: "apps".into(),
                plural: "deployments".into()
            })
        );
        assert_eq!(
            source_of("gold.storageclass.storage.k8s.io/requests.storage"),
            Some(Source::Pvcs)
        );
        assert_eq!(source_of("bogus"), None);
    }

    async fn eventually<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn quota_used_counts_pods_configmaps_services_and_requests() {
        let env = mini_testenv::TestEnv::start().await;
        let token = CancellationToken::new();
        let task = tokio::spawn(run(Arc::new(Context {
            client: env.controllers_client(),
            config: Default::default(),
            shutdown: token.clone(),
        })));
        let admin = env.admin_client();
        let quotas: Api<ResourceQuota> = Api::namespaced(admin.clone(), "default");
        let quota = ResourceQuota {
            metadata: ObjectMeta {
                name: Some("q".into()),
                ..Default::default()
            },
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard(&[
                    ("pods", "10"),
                    ("configmaps", "10"),
                    ("count/configmaps", "10"),
                    ("services", "5"),
                    ("requests.cpu", "4"),
                    ("requests.memory", "4Gi"),
                    ("limits.memory", "8Gi"),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        quotas.create(&PostParams::default(), &quota).await.unwrap();
        let used = |q: ResourceQuota| -> BTreeMap<String, String> {
            q.status
                .and_then(|s| s.used)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        };
        eventually("initial zero usage", || async {
            let u = used(quotas.get("q").await.unwrap());
            u.get("pods").map(String::as_str) == Some("0") && u.len() == 7
        })
        .await;
        let st = quotas.get("q").await.unwrap().status.unwrap();
        assert_eq!(st.hard.unwrap()["requests.memory"].0, "4Gi");

        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let mut p1 = pod(
            "p1",
            vec![container(
                &[("cpu", "100m"), ("memory", "1Gi")],
                &[("memory", "2Gi")],
            )],
            "Running",
        );
        p1.status = None;
        let mut p2 = pod(
            "p2",
            vec![container(
                &[("cpu", "0.5"), ("memory", "512Mi")],
                &[("memory", "1Gi")],
            )],
            "Running",
        );
        p2.status = None;
        pods.create(&PostParams::default(), &p1).await.unwrap();
        pods.create(&PostParams::default(), &p2).await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("cm1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let svcs: Api<Service> = Api::namespaced(admin.clone(), "default");
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("s1".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        svcs.create(&PostParams::default(), &svc).await.unwrap();
        // the test env may hold other services/configmaps (the kubernetes service)
        let base_svcs = svcs.list(&ListParams::default()).await.unwrap().items.len();
        let base_cms = cms.list(&ListParams::default()).await.unwrap().items.len();

        let expected = BTreeMap::from([
            ("pods".to_string(), "2".to_string()),
            ("configmaps".to_string(), base_cms.to_string()),
            ("count/configmaps".to_string(), base_cms.to_string()),
            ("services".to_string(), base_svcs.to_string()),
            ("requests.cpu".to_string(), "600m".to_string()),
            ("requests.memory".to_string(), "1536Mi".to_string()),
            ("limits.memory".to_string(), "3Gi".to_string()),
        ]);
        eventually("usage of the new objects", || async {
            used(quotas.get("q").await.unwrap()) == expected
        })
        .await;

        // a finished pod stops counting
        pods.patch_status(
            "p2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
        cms.delete("cm1", &DeleteParams::default()).await.unwrap();
        eventually(
            "usage after a pod finished and a configmap went away",
            || async {
                let u = used(quotas.get("q").await.unwrap());
                u["pods"] == "1"
                    && u["requests.cpu"] == "100m"
                    && u["requests.memory"] == "1Gi"
                    && u["limits.memory"] == "2Gi"
                    && u["configmaps"] == (base_cms - 1).to_string()
            },
        )
        .await;

        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("controller stops on shutdown")
            .unwrap()
            .unwrap();
    }
}
