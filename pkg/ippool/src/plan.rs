//! The allocator's decisions, as a pure function of the cluster's state: which pools are
//! usable (CIDR parses, overlaps neither the pod network, nor the Service network, nor an older
//! pool), which pod gets which address (a named one, or the lowest free one of its pool), which
//! allocations follow their pod to a new node, which are released, and what each waiting pod is
//! told. The controller (`controller.rs`) only carries these actions out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use mini_sys::netlink::Ipv4Net;

use crate::types::{
    allocation_name, overlaps, size, usable, AllocationOwner, IpAllocation, IpAllocationSpec,
    IpPool, IpPoolStatus, PoolCondition, KIND_POD, KIND_STATEFULSET,
};
use crate::{ADDRESS_ANNOTATION, ALLOCATED_ANNOTATION, POOL_ANNOTATION};

/// The networks a pool must stay out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Networks {
    /// The cluster CIDR (every node's pod range lies in it).
    pub cluster: Ipv4Net,
    /// The Service CIDR.
    pub service: Ipv4Net,
}

/// What the cluster looks like to the allocator.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub pods: Vec<Pod>,
    pub pools: Vec<IpPool>,
    pub allocations: Vec<IpAllocation>,
    /// `(namespace, name)` of every StatefulSet.
    pub stateful_sets: BTreeSet<(String, String)>,
    /// Node name → labels.
    pub nodes: BTreeMap<String, BTreeMap<String, String>>,
}

/// A pod an action is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One step for the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the allocation (create-if-absent), then annotate the pod with its address.
    Allocate {
        pod: PodRef,
        allocation: Box<IpAllocation>,
    },
    /// Set `ipam.mini.dev/allocated` on the pod.
    Annotate { pod: PodRef, address: String },
    /// The holder moved (new node) or is a new incarnation (new uid) of a StatefulSet pod.
    Update {
        name: String,
        spec: IpAllocationSpec,
    },
    /// Release an allocation whose owner is gone.
    Release { name: String, reason: String },
    /// Tell a pod why it waits (a Warning event).
    Warn {
        pod: PodRef,
        reason: &'static str,
        message: String,
    },
    /// Write a pool's status.
    PoolStatus { name: String, status: IpPoolStatus },
}

/// What a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub pool: Option<String>,
    pub address: Option<Ipv4Addr>,
}

/// The pod's request, `None` when it asks for nothing; `Err` names a malformed address.
pub fn request_of(pod: &Pod) -> Option<Result<Request, String>> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let pool = annotations.get(POOL_ANNOTATION).filter(|p| !p.is_empty());
    let address = annotations
        .get(ADDRESS_ANNOTATION)
        .filter(|a| !a.is_empty());
    if pool.is_none() && address.is_none() {
        return None;
    }
    let address = match address.map(|a| a.trim().parse::<Ipv4Addr>()) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            return Some(Err(format!(
                "{ADDRESS_ANNOTATION} {:?} is not an IPv4 address",
                address.expect("some")
            )))
        }
    };
    Some(Ok(Request {
        pool: pool.cloned(),
        address,
    }))
}

/// The StatefulSet controlling a pod.
pub fn stateful_set_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == KIND_STATEFULSET && o.controller == Some(true))
        .map(|o| o.name.clone())
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Pools by name: the usable CIDR, or why the pool is refused. Older pools win overlaps.
pub fn validate_pools(
    pools: &[IpPool],
    networks: &Networks,
) -> BTreeMap<String, Result<Ipv4Net, (&'static str, String)>> {
    let mut ordered: Vec<&IpPool> = pools.iter().collect();
    ordered.sort_by(|a, b| {
        let key = |p: &IpPool| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut accepted: Vec<(String, Ipv4Net)> = Vec::new();
    let mut out = BTreeMap::new();
    for pool in ordered {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let verdict = match pool.spec.cidr.trim().parse::<Ipv4Net>() {
            Err(_) => Err((
                "InvalidCIDR",
                format!(
                    "spec.cidr {:?} is not an IPv4 CIDR (a.b.c.d/n)",
                    pool.spec.cidr
                ),
            )),
            Ok(cidr) if cidr.addr != cidr.network() => Err((
                "InvalidCIDR",
                format!(
                    "spec.cidr {cidr} has host bits set: use {}/{}",
                    cidr.network(),
                    cidr.prefix_len
                ),
            )),
            Ok(cidr) if overlaps(cidr, networks.cluster) => Err((
                "OverlapsClusterCIDR",
                format!(
                    "spec.cidr {cidr} overlaps the cluster CIDR {} (the nodes' pod ranges): pick a range outside it",
                    networks.cluster
                ),
            )),
            Ok(cidr) if overlaps(cidr, networks.service) => Err((
                "OverlapsServiceCIDR",
                format!(
                    "spec.cidr {cidr} overlaps the service CIDR {}: pick a range outside it",
                    networks.service
                ),
            )),
            Ok(cidr) => match accepted.iter().find(|(_, other)| overlaps(cidr, *other)) {
                Some((other, other_cidr)) => Err((
                    "OverlapsPool",
                    format!(
                        "spec.cidr {cidr} overlaps IPPool {other} ({other_cidr}): pool addresses must be unique"
                    ),
                )),
                None => {
                    accepted.push((name.clone(), cidr));
                    Ok(cidr)
                }
            },
        };
        out.insert(name, verdict);
    }
    out
}

/// Whether a node's labels satisfy a pool's node selector.
pub fn node_matches(
    selector: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The lowest address of `cidr` not in `taken`.
pub fn pick_free(cidr: Ipv4Net, taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (first, last) = usable(cidr);
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
}

fn owns(allocation: &IpAllocation, pod: &Pod, stateful_set: Option<&str>) -> bool {
    let spec = &allocation.spec;
    match stateful_set {
        Some(_) => {
            spec.kind == KIND_STATEFULSET
                && Some(&spec.owner.namespace) == pod.metadata.namespace.as_ref()
                && Some(&spec.owner.name) == pod.metadata.name.as_ref()
        }
        None => spec.kind == KIND_POD && Some(&spec.owner.uid) == pod.metadata.uid.as_ref(),
    }
}

/// Every action that brings the cluster in line with the pods' requests.
pub fn plan(state: &State, networks: &Networks) -> Vec<Action> {
    let mut actions = Vec::new();
    let verdicts = validate_pools(&state.pools, networks);
    let pools: BTreeMap<String, &IpPool> = state
        .pools
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect();
    let mut taken: BTreeSet<Ipv4Addr> = state
        .allocations
        .iter()
        .filter_map(|a| a.spec.address.parse().ok())
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for a in &state.allocations {
        *counts.entry(a.spec.pool.clone()).or_default() += 1;
    }

    // releases first: owners gone
    let live_uids: BTreeSet<&str> = state
        .pods
        .iter()
        .filter(|p| !is_terminal(p))
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    for a in &state.allocations {
        let name = a.metadata.name.clone().unwrap_or_default();
        let gone = match a.spec.kind.as_str() {
            KIND_STATEFULSET => {
                let sts = a.spec.stateful_set.clone().unwrap_or_default();
                (!state
                    .stateful_sets
                    .contains(&(a.spec.owner.namespace.clone(), sts.clone())))
                .then(|| format!("StatefulSet {}/{sts} is gone", a.spec.owner.namespace))
            }
            _ => (!live_uids.contains(a.spec.owner.uid.as_str())).then(|| {
                format!(
                    "pod {}/{} (uid {}) is gone",
                    a.spec.owner.namespace, a.spec.owner.name, a.spec.owner.uid
                )
            }),
        };
        if let Some(reason) = gone {
            if let Ok(ip) = a.spec.address.parse::<Ipv4Addr>() {
                taken.remove(&ip);
            }
            if let Some(c) = counts.get_mut(&a.spec.pool) {
                *c = c.saturating_sub(1);
            }
            actions.push(Action::Release { name, reason });
        }
    }

    let mut pods: Vec<&Pod> = state.pods.iter().collect();
    pods.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    for pod in pods {
        let Some(request) = request_of(pod) else {
            continue;
        };
        if is_terminal(pod) {
            continue;
        }
        let me = pod_ref(pod);
        let request = match request {
            Ok(r) => r,
            Err(message) => {
                actions.push(Action::Warn {
                    pod: me,
                    reason: "IPAddressInvalid",
                    message,
                });
                continue;
            }
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let stateful_set = stateful_set_of(pod);
        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ALLOCATED_ANNOTATION))
            .cloned();
        if let Some(existing) = state
            .allocations
            .iter()
            .find(|a| owns(a, pod, stateful_set.as_deref()))
        {
            let mut spec = existing.spec.clone();
            if node.is_some() && spec.node != node {
                spec.node = node.clone();
            }
            if spec.owner.uid != me.uid {
                spec.owner.uid = me.uid.clone();
            }
            if spec != existing.spec {
                actions.push(Action::Update {
                    name: existing.metadata.name.clone().unwrap_or_default(),
                    spec,
                });
            }
            if annotated.as_deref() != Some(existing.spec.address.as_str()) {
                actions.push(Action::Annotate {
                    pod: me,
                    address: existing.spec.address.clone(),
                });
            }
            continue;
        }
        // new allocations once the pod has a node (routes and the pool's node selector need it)
        let Some(node) = node else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // the pool: named, or the one holding the asked address
        let pool_name = match (&request.pool, request.address) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(ip)) => verdicts
                .iter()
                .find(|(_, v)| v.as_ref().is_ok_and(|c| c.contains(ip)))
                .map(|(n, _)| n.clone()),
            (None, None) => None,
        };
        let Some(pool_name) = pool_name else {
            actions.push(Action::Warn {
                pod: me,
                reason: "IPAddressNotInPool",
                message: format!(
                    "no IPPool holds the address {} asked by {ADDRESS_ANNOTATION}; create a pool for it or name one with {POOL_ANNOTATION}",
                    request.address.map(|a| a.to_string()).unwrap_or_default()
                ),
            });
            continue;
        };
        let (Some(pool), Some(verdict)) = (pools.get(&pool_name), verdicts.get(&pool_name)) else {
            actions.push(Action::Warn {
                pod: me,
                reason: "IPPoolNotFound",
                message: format!("IPPool {pool_name:?} does not exist; the pod waits for it"),
            });
            continue;
        };
        let cidr = match verdict {
            Ok(cidr) => *cidr,
            Err((_, why)) => {
                actions.push(Action::Warn {
                    pod: me,
                    reason: "IPPoolInvalid",
                    message: format!("IPPool {pool_name} cannot be used: {why}"),
                });
                continue;
            }
        };
        if !node_matches(pool.spec.node_selector.as_ref(), state.nodes.get(&node)) {
            actions.push(Action::Warn {
                pod: me,
                reason: "IPPoolNodeMismatch",
                message: format!(
                    "node {node} does not match the node selector of IPPool {pool_name}; the pod must run on a matching node"
                ),
            });
            continue;
        }
        let address = match request.address {
            Some(ip) => {
                let (first, last) = usable(cidr);
                if !(first..=last).contains(&u32::from(ip)) {
                    actions.push(Action::Warn {
                        pod: me,
                        reason: "IPAddressNotInPool",
                        message: format!(
                            "address {ip} is not a usable address of IPPool {pool_name} ({cidr})"
                        ),
                    });
                    continue;
                }
                if taken.contains(&ip) {
                    let holder = state
                        .allocations
                        .iter()
                        .find(|a| a.spec.address == ip.to_string())
                        .map(|a| format!(" by {}/{}", a.spec.owner.namespace, a.spec.owner.name))
                        .unwrap_or_default();
                    actions.push(Action::Warn {
                        pod: me,
                        reason: "IPAddressInUse",
                        message: format!(
                            "address {ip} of IPPool {pool_name} is in use{holder}; the pod waits until it is released"
                        ),
                    });
                    continue;
                }
                ip
            }
            None => match pick_free(cidr, &taken) {
                Some(ip) => ip,
                None => {
                    actions.push(Action::Warn {
                        pod: me,
                        reason: "IPPoolExhausted",
                        message: format!(
                            "IPPool {pool_name} ({cidr}) has no free address ({} of {} allocated); the pod waits until one is released",
                            counts.get(&pool_name).copied().unwrap_or(0),
                            size(cidr)
                        ),
                    });
                    continue;
                }
            },
        };
        taken.insert(address);
        *counts.entry(pool_name.clone()).or_default() += 1;
        let allocation = IpAllocation {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(allocation_name(address)),
                ..Default::default()
            },
            spec: IpAllocationSpec {
                pool: pool_name,
                address: address.to_string(),
                kind: if stateful_set.is_some() {
                    KIND_STATEFULSET.into()
                } else {
                    KIND_POD.into()
                },
                owner: AllocationOwner {
                    namespace: me.namespace.clone(),
                    name: me.name.clone(),
                    uid: me.uid.clone(),
                },
                stateful_set,
                node: Some(node),
            },
        };
        actions.push(Action::Allocate {
            pod: me,
            allocation: Box::new(allocation),
        });
    }

    // pool status
    for pool in &state.pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let condition = match verdicts.get(&name) {
            Some(Ok(_)) => PoolCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Valid".into(),
                message: String::new(),
            },
            Some(Err((reason, message))) => PoolCondition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reason.to_string(),
                message: message.clone(),
            },
            None => continue,
        };
        let status = IpPoolStatus {
            size: verdicts
                .get(&name)
                .and_then(|v| v.as_ref().ok())
                .map(|c| size(*c))
                .unwrap_or(0),
            allocated: counts.get(&name).copied().unwrap_or(0),
            conditions: vec![condition],
        };
        if pool.status.as_ref() != Some(&status) {
            actions.push(Action::PoolStatus { name, status });
        }
    }
    actions
}

/// Pods by uid → the last warning reason told, so a waiting pod is not told the same every pass.
pub type Told = HashMap<String, &'static str>;

#[cfg(test)]
mod tests;
