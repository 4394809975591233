//! Core (`""` group) kinds: Pod, Node, Service, Event and friends.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::util::{
    age, arr_at, condition_true, container_cells, deleting, format_labels, get, int_at, map_len,
    name, opt_int, or, parse_time, quantity, since, since_time, str_at,
};
use crate::{col, wide, Col, Printer, AGE, CONTAINERS, CREATED_AT_PRINTER, IMAGES, NAME};

pub(crate) fn lookup(kind: &str) -> Option<Printer> {
    let p = |cols: &'static [Col], cells: crate::CellFn| Some(Printer { cols, cells });
    match kind {
        "Pod" => p(POD, pod_cells),
        "PodTemplate" => p(POD_TEMPLATE, pod_template_cells),
        "ReplicationController" => p(RC, rc_cells),
        "Service" => p(SERVICE, service_cells),
        "Endpoints" => p(ENDPOINTS, endpoints_cells),
        "Node" => p(NODE, node_cells),
        "Event" => p(EVENT, event_cells),
        "Namespace" => p(NAMESPACE, namespace_cells),
        "Secret" => p(SECRET, secret_cells),
        "ServiceAccount" => p(SERVICE_ACCOUNT, service_account_cells),
        "PersistentVolume" => p(PV, pv_cells),
        "PersistentVolumeClaim" => p(PVC, pvc_cells),
        "ComponentStatus" => p(COMPONENT_STATUS, component_status_cells),
        "ConfigMap" => p(CONFIG_MAP, config_map_cells),
        "ResourceQuota" => p(RESOURCE_QUOTA, resource_quota_cells),
        "LimitRange" => Some(CREATED_AT_PRINTER),
        _ => None,
    }
}

const POD: &[Col] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last restart happened.",
    ),
    AGE,
    wide("IP", "string", "The IP address allocated to the pod."),
    wide("Node", "string", "The node the pod is scheduled onto."),
    wide("Nominated Node", "string", "The node the scheduler nominated for preemption."),
    wide("Readiness Gates", "string", "How many of the pod's readiness gates are satisfied."),
];

fn terminated_at(cs: &Value) -> Option<DateTime<Utc>> {
    get(cs, &["lastState", "terminated"]).and_then(|t| parse_time(str_at(t, &["finishedAt"])))
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// "Signal:N" or "ExitCode:N" for a terminated state without a reason.
fn exit_text(term: &Value) -> String {
    let signal = int_at(term, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int_at(term, &["exitCode"]))
    }
}

/// The pod's Ready, Status and Restarts cells, following upstream's printPod.
fn pod_status(pod: &Value, now: DateTime<Utc>) -> (String, String, String) {
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let restartable: Vec<&str> = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .map(|c| str_at(c, &["name"]))
        .collect();
    let total = arr_at(pod, &["spec", "containers"]).len() + restartable.len();
    let conditions = arr_at(pod, &["status", "conditions"]);
    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut reason = or(status_reason, phase);
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, cs) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(cs, &["restartCount"]);
        restarts += count;
        last_restart = latest(last_restart, terminated_at(cs));
        let is_sidecar = restartable.contains(&str_at(cs, &["name"]));
        if is_sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = latest(last_sidecar_restart, terminated_at(cs));
        }
        let terminated = get(cs, &["state", "terminated"]);
        let waiting_reason = str_at(cs, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if is_sidecar && get(cs, &["started"]).and_then(Value::as_bool) == Some(true) {
            if get(cs, &["ready"]).and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(term) = terminated {
            let r = str_at(term, &["reason"]);
            reason = if r.is_empty() {
                format!("Init:{}", exit_text(term))
            } else {
                format!("Init:{r}")
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(cs, &["restartCount"]);
            last_restart = latest(last_restart, terminated_at(cs));
            let waiting_reason = str_at(cs, &["state", "waiting", "reason"]);
            let terminated = get(cs, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(term) = terminated {
                reason = or(str_at(term, &["reason"]), &exit_text(term));
            } else if get(cs, &["ready"]).and_then(Value::as_bool) == Some(true)
                && get(cs, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if deleting(pod) && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since_time(t, now)),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts_text)
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (ready, reason, restarts) = pod_status(pod, now);
    let ip = arr_at(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let gates_text = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(pod, &["status", "conditions"]);
        let satisfied = gates
            .iter()
            .filter(|g| condition_true(conditions, str_at(g, &["conditionType"])))
            .count();
        format!("{satisfied}/{}", gates.len())
    };
    vec![
        name(pod),
        Value::from(ready),
        Value::from(reason),
        Value::from(restarts),
        age(pod, now),
        Value::from(or(ip, "<none>")),
        Value::from(or(str_at(pod, &["spec", "nodeName"]), "<none>")),
        Value::from(or(str_at(pod, &["status", "nominatedNodeName"]), "<none>")),
        Value::from(gates_text),
    ]
}

const POD_TEMPLATE: &[Col] = &[
    NAME,
    col(
        "Containers",
        "string",
        "Names of each container in the template.",
    ),
    col(
        "Images",
        "string",
        "Images referenced by each container in the template.",
    ),
    col("Pod Labels", "string", "The labels for the pod template."),
];

fn pod_template_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(obj, &["template", "spec", "containers"]));
    let labels = format_labels(get(obj, &["template", "metadata", "labels"]));
    vec![name(obj), names, images, Value::from(labels)]
}

const RC: &[Col] = &[
    NAME,
    col("Desired", "integer", "Number of desired pods."),
    col("Current", "integer", "Number of pods currently running."),
    col("Ready", "integer", "Number of ready pods."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Label query over pods that should match the replicas count.",
    ),
];

fn rc_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name(obj),
        Value::from(opt_int(obj, &["spec", "replicas"]).unwrap_or(1)),
        Value::from(int_at(obj, &["status", "replicas"])),
        Value::from(int_at(obj, &["status", "readyReplicas"])),
        age(obj, now),
        names,
        images,
        Value::from(format_labels(get(obj, &["spec", "selector"]))),
    ]
}

const SERVICE: &[Col] = &[
    NAME,
    col(
        "Type",
        "string",
        "How the service is exposed (ClusterIP, NodePort, LoadBalancer, ExternalName).",
    ),
    col(
        "Cluster-IP",
        "string",
        "The IP address of the service inside the cluster.",
    ),
    col(
        "External-IP",
        "string",
        "IP addresses or hostnames the service is reachable at from outside.",
    ),
    col("Port(s)", "string", "The ports exposed by the service."),
    AGE,
    wide(
        "Selector",
        "string",
        "Pods with these labels receive the service's traffic.",
    ),
];

/// Sorted, de-duplicated load-balancer ingress IPs or hostnames.
pub(crate) fn load_balancer_ingress(status: Option<&Value>) -> String {
    let mut hosts: Vec<&str> = status
        .map(|s| arr_at(s, &["ingress"]))
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, &["ip"]);
            let host = str_at(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts.join(",")
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, &["spec", "type"]) {
        "" | "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(get(svc, &["status", "loadBalancer"]));
            if !external.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(','));
                }
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = arr_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let proto = or(str_at(p, &["protocol"]), "TCP");
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect();
    or(&pieces.join(","), "<none>")
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(svc, &["spec", "clusterIP"]));
    vec![
        name(svc),
        Value::from(or(str_at(svc, &["spec", "type"]), "ClusterIP")),
        Value::from(or(cluster_ip, "<none>")),
        Value::from(service_external_ip(svc)),
        Value::from(service_ports(svc)),
        age(svc, now),
        Value::from(format_labels(get(svc, &["spec", "selector"]))),
    ]
}

const ENDPOINTS: &[Col] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The addresses and ports backing the service.",
    ),
    AGE,
];

fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn format_endpoints(obj: &Value) -> String {
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addrs = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(host_port(str_at(a, &["ip"]), int_at(p, &["port"])));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), Value::from(format_endpoints(obj)), age(obj, now)]
}

const NODE: &[Col] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet version reported by the node."),
    wide("Internal-IP", "string", "The node's internal IP address."),
    wide("External-IP", "string", "The node's external IP address."),
    wide("OS-Image", "string", "OS image reported by the node."),
    wide(
        "Kernel-Version",
        "string",
        "Kernel version reported by the node.",
    ),
    wide(
        "Container-Runtime",
        "string",
        "Container runtime version reported by the node.",
    ),
];

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = get(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.to_string());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    or(&roles.join(","), "<none>")
}

fn node_address(node: &Value, kind: &str) -> String {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == kind)
        .map_or_else(
            || "<none>".to_string(),
            |a| str_at(a, &["address"]).to_string(),
        )
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut status: Vec<&str> = Vec::new();
    // Upstream indexes conditions by type, so the last Ready condition wins.
    if let Some(ready) = arr_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
    {
        status.push(if str_at(ready, &["status"]) == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if get(node, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let info = |field: &str| {
        Value::from(or(
            str_at(node, &["status", "nodeInfo", field]),
            "<unknown>",
        ))
    };
    vec![
        name(node),
        Value::from(status.join(",")),
        Value::from(node_roles(node)),
        age(node, now),
        Value::from(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(node_address(node, "InternalIP")),
        Value::from(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

pub(crate) const EVENT: &[Col] = &[
    col(
        "Last Seen",
        "string",
        "Time since the event was last observed.",
    ),
    col("Type", "string", "Type of the event (Normal, Warning)."),
    col(
        "Reason",
        "string",
        "Short machine-readable reason for the event.",
    ),
    col("Object", "string", "The object this event is about."),
    wide(
        "Subobject",
        "string",
        "The part of the object the event is about (fieldPath).",
    ),
    wide("Source", "string", "The component that reported the event."),
    col(
        "Message",
        "string",
        "Human-readable description of the event.",
    ),
    wide(
        "First Seen",
        "string",
        "Time since the event was first observed.",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    crate::Col {
        priority: 1,
        ..NAME
    },
];

pub(crate) fn event_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_ts = str_at(ev, &["firstTimestamp"]);
    let first = if parse_time(first_ts).is_some() {
        since(first_ts, now)
    } else {
        since(str_at(ev, &["eventTime"]), now)
    };
    let last_ts = str_at(ev, &["lastTimestamp"]);
    let mut last = if parse_time(last_ts).is_some() {
        since(last_ts, now)
    } else {
        first.clone()
    };
    let mut count = int_at(ev, &["count"]);
    if let Some(series) = get(ev, &["series"]) {
        last = since(str_at(series, &["lastObservedTime"]), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(ev, &["involvedObject", "kind"]).to_lowercase();
    let obj_name = str_at(ev, &["involvedObject", "name"]);
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let component = or(
        str_at(ev, &["source", "component"]),
        str_at(ev, &["reportingComponent"]),
    );
    let host = or(
        str_at(ev, &["source", "host"]),
        str_at(ev, &["reportingInstance"]),
    );
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        Value::from(last),
        Value::from(str_at(ev, &["type"])),
        Value::from(str_at(ev, &["reason"])),
        Value::from(target),
        Value::from(str_at(ev, &["involvedObject", "fieldPath"])),
        Value::from(source),
        Value::from(str_at(ev, &["message"]).trim()),
        Value::from(first),
        Value::from(count),
        name(ev),
    ]
}

const NAMESPACE: &[Col] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

fn namespace_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["status", "phase"])),
        age(obj, now),
    ]
}

const SECRET: &[Col] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "Number of keys in the secret."),
    AGE,
];

fn secret_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut keys: Vec<&String> = Vec::new();
    for field in ["data", "stringData"] {
        if let Some(m) = get(obj, &[field]).and_then(Value::as_object) {
            keys.extend(m.keys());
        }
    }
    keys.sort();
    keys.dedup();
    vec![
        name(obj),
        Value::from(or(str_at(obj, &["type"]), "Opaque")),
        Value::from(keys.len()),
        age(obj, now),
    ]
}

const SERVICE_ACCOUNT: &[Col] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Number of secrets listed on the service account.",
    ),
    AGE,
];

fn service_account_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(arr_at(obj, &["secrets"]).len()),
        age(obj, now),
    ]
}

const PV: &[Col] = &[
    NAME,
    col("Capacity", "string", "The storage capacity of the volume."),
    col(
        "Access Modes",
        "string",
        "The ways the volume can be mounted.",
    ),
    col(
        "Reclaim Policy",
        "string",
        "What happens to the volume when released from its claim.",
    ),
    col("Status", "string", "The phase of the volume."),
    col("Claim", "string", "The claim bound to this volume."),
    col("StorageClass", "string", "StorageClass of the pv"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    col("Reason", "string", "Reason the volume is in its phase."),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "Whether the volume is a filesystem or a raw block device.",
    ),
];

/// Access modes abbreviated in upstream's fixed order.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(full, _)| has(full))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta storage-class annotation, else `spec.storageClassName`.
fn storage_class(obj: &Value) -> String {
    if let Some(c) = get(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .and_then(Value::as_str)
    {
        return c.to_string();
    }
    str_at(obj, &["spec", "storageClassName"]).to_string()
}

fn pv_cells(pv: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = get(pv, &["spec", "claimRef"]).map_or_else(String::new, |c| {
        format!("{}/{}", str_at(c, &["namespace"]), str_at(c, &["name"]))
    });
    let phase = if deleting(pv) {
        "Terminating"
    } else {
        str_at(pv, &["status", "phase"])
    };
    vec![
        name(pv),
        Value::from(quantity(get(pv, &["spec", "capacity", "storage"]))),
        Value::from(access_modes(arr_at(pv, &["spec", "accessModes"]))),
        Value::from(str_at(pv, &["spec", "persistentVolumeReclaimPolicy"])),
        Value::from(phase),
        Value::from(claim),
        Value::from(storage_class(pv)),
        Value::from(or(
            str_at(pv, &["spec", "volumeAttributesClassName"]),
            "<unset>",
        )),
        Value::from(str_at(pv, &["status", "reason"])),
        age(pv, now),
        Value::from(or(str_at(pv, &["spec", "volumeMode"]), "<unset>")),
    ]
}

const PVC: &[Col] = &[
    NAME,
    col("Status", "string", "The phase of the claim."),
    col("Volume", "string", "The volume bound to this claim."),
    col(
        "Capacity",
        "string",
        "The actual capacity of the bound volume.",
    ),
    col(
        "Access Modes",
        "string",
        "The access modes of the bound volume.",
    ),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "Whether the claim wants a filesystem or a raw block device.",
    ),
];

fn pvc_cells(pvc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if deleting(pvc) {
        "Terminating"
    } else {
        str_at(pvc, &["status", "phase"])
    };
    let volume = str_at(pvc, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(pvc, &["status", "capacity", "storage"])),
            access_modes(arr_at(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name(pvc),
        Value::from(phase),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class(pvc)),
        Value::from(or(
            str_at(pvc, &["spec", "volumeAttributesClassName"]),
            "<unset>",
        )),
        age(pvc, now),
        Value::from(or(str_at(pvc, &["spec", "volumeMode"]), "<unset>")),
    ]
}

const COMPONENT_STATUS: &[Col] = &[
    NAME,
    col("Status", "string", "Status of the component conditions"),
    col("Message", "string", "Message of the component conditions"),
    col("Error", "string", "Error of the component conditions"),
];

fn component_status_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let healthy = arr_at(obj, &["conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => (
            if str_at(c, &["status"]) == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            str_at(c, &["message"]),
            str_at(c, &["error"]),
        ),
        None => ("Unknown", "", ""),
    };
    vec![
        name(obj),
        Value::from(status),
        Value::from(message),
        Value::from(error),
    ]
}

const CONFIG_MAP: &[Col] = &[
    NAME,
    col("Data", "string", "Number of keys in the config map."),
    AGE,
];

fn config_map_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let n = map_len(obj, &["data"]) + map_len(obj, &["binaryData"]);
    vec![name(obj), Value::from(n), age(obj, now)]
}

const RESOURCE_QUOTA: &[Col] = &[
    NAME,
    col(
        "Request",
        "string",
        "Used and hard request quotas (cpu, memory, object counts).",
    ),
    col("Limit", "string", "Used and hard limit quotas."),
    AGE,
];

fn resource_quota_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut requests: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    if let Some(hard) = get(obj, &["status", "hard"]).and_then(Value::as_object) {
        let mut resources: Vec<&String> = hard.keys().collect();
        resources.sort();
        for r in resources {
            let used = quantity(get(obj, &["status", "used", r]));
            let entry = format!("{r}: {used}/{}", quantity(hard.get(r)));
            let mut pieces = r.split('.');
            let first = pieces.next();
            if first == Some("limits") && pieces.next().is_some() {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
    }
    vec![
        name(obj),
        Value::from(requests.join(", ")),
        Value::from(limits.join(", ")),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"})
    }

    fn pod_row(pod: &Value) -> Vec<Value> {
        crate::cells("", "Pod", pod, now())
    }

    #[test]
    fn pod_running_one_of_one_shows_running_and_wide_cells() {
        let pod = json!({
            "metadata": meta("web-1"),
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "nginx"}]},
            "status": {
                "phase": "Running",
                "podIP": "10.42.0.5",
                "podIPs": [{"ip": "10.42.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2024-05-01T11:00:05Z"}}}]
            }
        });
        assert_eq!(
            pod_row(&pod),
            vec![
                json!("web-1"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("60m"),
                json!("10.42.0.5"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_crashloop_shows_reason_and_restarts_with_last_restart_age() {
        let pod = json!({
            "metadata": meta("crash"),
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "finishedAt": "2024-05-01T11:55:00Z"}}}]
            }
        });
        let row = pod_row(&pod);
        assert_eq!(row[1], json!("0/1"));
        assert_eq!(row[2], json!("CrashLoopBackOff"));
        assert_eq!(row[3], json!("3 (5m ago)"));
    }

    #[test]
    fn pod_restarts_without_finished_at_is_plain_count() {
        let pod = json!({
            "metadata": meta("p"),
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": true,
                "restartCount": 2, "state": {"running": {}}}]}
        });
        assert_eq!(pod_row(&pod)[3], json!("2"));
    }

    #[test]
    fn pod_waiting_on_init_container_shows_init_progress() {
        let pod = json!({
            "metadata": meta("init"),
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]},
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": [{"name": "setup", "ready": false, "restartCount": 0,
                    "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}]
            }
        });
        let row = pod_row(&pod);
        assert_eq!(row[1], json!("0/1"));
        assert_eq!(row[2], json!("Init:0/1"));
        assert_eq!(row[3], json!("0"));
    }

    #[test]
    fn pod_init_container_failing_shows_init_reason() {
        let pod = json!({
            "metadata": meta("init"),
            "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "app"}]},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "a", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]
            }
        });
        let row = pod_row(&pod);
        assert_eq!(row[2], json!("Init:CrashLoopBackOff"));
        assert_eq!(row[3], json!("4"));
        let failed = json!({
            "metadata": meta("init"),
            "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 2}}}]}
        });
        assert_eq!(pod_row(&failed)[2], json!("Init:ExitCode:2"));
    }

    #[test]
    fn pod_all_init_done_main_container_creating_shows_pod_initializing() {
        let pod = json!({
            "metadata": meta("p"),
            "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "app"}]},
            "status": {"phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        });
        assert_eq!(pod_row(&pod)[2], json!("PodInitializing"));
    }

    #[test]
    fn pod_sidecar_counts_toward_ready_and_total() {
        let pod = json!({
            "metadata": meta("p"),
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:30:00Z"}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}
        });
        let row = pod_row(&pod);
        assert_eq!(row[1], json!("2/2"));
        assert_eq!(row[2], json!("Running"));
        assert_eq!(row[3], json!("1 (30m ago)"));
    }

    #[test]
    fn pod_with_deletion_timestamp_is_terminating() {
        let mut m = meta("bye");
        m["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        let pod = json!({
            "metadata": m,
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "ready": true,
                "state": {"running": {}}}]}
        });
        assert_eq!(pod_row(&pod)[2], json!("Terminating"));
        let mut lost = pod.clone();
        lost["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_row(&lost)[2], json!("Unknown"));
        let mut done = pod;
        done["status"]["phase"] = json!("Succeeded");
        done["status"]["containerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        assert_eq!(pod_row(&done)[2], json!("Completed"));
    }

    #[test]
    fn pod_succeeded_shows_completed() {
        let pod = json!({
            "metadata": meta("job-x"),
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        });
        let row = pod_row(&pod);
        assert_eq!(row[1], json!("0/1"));
        assert_eq!(row[2], json!("Completed"));
    }

    #[test]
    fn pod_completed_container_with_running_sibling_is_not_ready() {
        let pod = json!({
            "metadata": meta("p"),
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "ready": true, "state": {"running": {}}}]}
        });
        let row = pod_row(&pod);
        assert_eq!(row[1], json!("1/2"));
        assert_eq!(row[2], json!("NotReady"));
    }

    #[test]
    fn pod_pending_container_creating_and_image_pull_errors() {
        let pod = json!({
            "metadata": meta("new"),
            "spec": {"nodeName": "n1", "containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}
        });
        let row = pod_row(&pod);
        assert_eq!(row[1], json!("0/1"));
        assert_eq!(row[2], json!("ContainerCreating"));
        assert_eq!(row[5], json!("<none>"));
        let mut pull = pod;
        pull["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] =
            json!("ErrImagePull");
        assert_eq!(pod_row(&pull)[2], json!("ErrImagePull"));
    }

    #[test]
    fn pod_unscheduled_pending_and_scheduling_gated() {
        let pod = json!({"metadata": meta("p"), "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending"}});
        assert_eq!(pod_row(&pod)[2], json!("Pending"));
        let gated = json!({"metadata": meta("p"), "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(pod_row(&gated)[2], json!("SchedulingGated"));
    }

    #[test]
    fn pod_evicted_reason_and_readiness_gates() {
        let pod = json!({"metadata": meta("p"),
            "spec": {"containers": [{"name": "a"}],
                     "readinessGates": [{"conditionType": "x/ready"}, {"conditionType": "y/ready"}]},
            "status": {"phase": "Failed", "reason": "Evicted", "conditions": [
                {"type": "x/ready", "status": "True"}]}});
        let row = pod_row(&pod);
        assert_eq!(row[2], json!("Evicted"));
        assert_eq!(row[8], json!("1/2"));
    }

    #[test]
    fn node_ready_with_control_plane_role() {
        let node = json!({
            "metadata": {"name": "server-1", "creationTimestamp": "2024-04-29T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "true",
                           "node-role.kubernetes.io/master": "true",
                           "kubernetes.io/hostname": "server-1"}},
            "spec": {},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"},
                               {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                              {"type": "Hostname", "address": "server-1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1+mini", "osImage": "Ubuntu 24.04",
                             "kernelVersion": "6.8.0", "containerRuntimeVersion": "containerd://1.7.0"}
            }
        });
        assert_eq!(
            crate::cells("", "Node", &node, now()),
            vec![
                json!("server-1"),
                json!("Ready"),
                json!("control-plane,master"),
                json!("2d"),
                json!("v1.33.1+mini"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Ubuntu 24.04"),
                json!("6.8.0"),
                json!("containerd://1.7.0"),
            ]
        );
    }

    #[test]
    fn node_cordoned_not_ready_without_roles() {
        let node = json!({
            "metadata": {"name": "agent-1", "creationTimestamp": "2024-05-01T11:00:00Z",
                         "labels": {"kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        });
        let row = crate::cells("", "Node", &node, now());
        assert_eq!(row[1], json!("NotReady,SchedulingDisabled"));
        assert_eq!(row[2], json!("worker"));
        assert_eq!(row[7], json!("<unknown>"));
        let bare = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        let row = crate::cells("", "Node", &bare, now());
        assert_eq!(row[1], json!("Unknown,SchedulingDisabled"));
        assert_eq!(row[2], json!("<none>"));
        assert_eq!(row[3], json!("<unknown>"));
    }

    fn svc(spec: Value, status: Value) -> Vec<Value> {
        let obj = json!({"metadata": meta("svc"), "spec": spec, "status": status});
        crate::cells("", "Service", &obj, now())
    }

    #[test]
    fn service_cluster_ip_type() {
        let row = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                   "selector": {"k8s-app": "kube-dns"}}),
            json!({}),
        );
        assert_eq!(
            row,
            vec![
                json!("svc"),
                json!("ClusterIP"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("53/UDP,53/TCP"),
                json!("60m"),
                json!("k8s-app=kube-dns"),
            ]
        );
    }

    #[test]
    fn service_node_port_and_headless() {
        let row = svc(
            json!({"type": "NodePort", "clusterIPs": ["10.43.1.1"], "externalIPs": ["1.2.3.4"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(row[3], json!("1.2.3.4"));
        assert_eq!(row[4], json!("80:30080/TCP"));
        assert_eq!(row[6], json!("<none>"));
        let headless = svc(
            json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}),
            json!({}),
        );
        assert_eq!(headless[2], json!("None"));
        assert_eq!(headless[4], json!("<none>"));
    }

    #[test]
    fn service_load_balancer_pending_and_assigned() {
        let spec = json!({"type": "LoadBalancer", "clusterIPs": ["10.43.2.2"],
                          "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]});
        assert_eq!(svc(spec.clone(), json!({}))[3], json!("<pending>"));
        let status = json!({"loadBalancer": {"ingress": [{"ip": "172.18.0.3"}, {"ip": "172.18.0.2"},
                                                         {"hostname": "lb.example.com"}]}});
        assert_eq!(
            svc(spec, status)[3],
            json!("172.18.0.2,172.18.0.3,lb.example.com")
        );
    }

    #[test]
    fn service_external_name() {
        let row = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(row[1], json!("ExternalName"));
        assert_eq!(row[2], json!("<none>"));
        assert_eq!(row[3], json!("db.example.com"));
    }

    #[test]
    fn endpoints_list_truncates_after_three() {
        let obj = json!({"metadata": meta("web"), "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}
        ]});
        let row = crate::cells("", "Endpoints", &obj, now());
        assert_eq!(
            row[1],
            json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...")
        );
        let v6 = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            crate::cells("", "Endpoints", &v6, now())[1],
            json!("[fd00::1]:80")
        );
        assert_eq!(
            crate::cells("", "Endpoints", &json!({}), now())[1],
            json!("<none>")
        );
    }

    #[test]
    fn event_row_has_wide_order_and_object_reference() {
        let ev = json!({
            "metadata": {"name": "web-1.17a", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z",
            "count": 4
        });
        assert_eq!(
            crate::cells("", "Event", &ev, now()),
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Successfully pulled image"),
                json!("60m"),
                json!(4),
                json!("web-1.17a"),
            ]
        );
        let cols = crate::columns("", "Event");
        assert_eq!(cols[0].name, "Last Seen");
        assert_eq!(cols[9].format, "name");
        assert_eq!(cols[9].priority, 1);
    }

    #[test]
    fn event_new_style_uses_event_time_and_series() {
        let ev = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:50:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2024-05-01T11:59:30.000000Z"},
            "reportingComponent": "scheduler"
        });
        let row = crate::cells("", "Event", &ev, now());
        assert_eq!(row[0], json!("30s"));
        assert_eq!(row[3], json!("node"));
        assert_eq!(row[5], json!("scheduler"));
        assert_eq!(row[7], json!("10m"));
        assert_eq!(row[8], json!(7));
    }

    #[test]
    fn config_map_secret_service_account_counts() {
        let cm = json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            crate::cells("", "ConfigMap", &cm, now()),
            vec![json!("cfg"), json!(3), json!("60m")]
        );
        let sec = json!({"metadata": meta("tls"), "type": "kubernetes.io/tls",
                         "data": {"tls.crt": "x", "tls.key": "y"}});
        assert_eq!(
            crate::cells("", "Secret", &sec, now()),
            vec![
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("60m")
            ]
        );
        let sa = json!({"metadata": meta("default")});
        assert_eq!(crate::cells("", "ServiceAccount", &sa, now())[1], json!(0));
        let ns = json!({"metadata": meta("kube-system"), "status": {"phase": "Active"}});
        assert_eq!(
            crate::cells("", "Namespace", &ns, now())[1],
            json!("Active")
        );
    }

    #[test]
    fn persistent_volume_and_claim() {
        let pv = json!({"metadata": meta("pv-1"),
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                     "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            crate::cells("", "PersistentVolume", &pv, now()),
            vec![
                json!("pv-1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("local-path"),
                json!("<unset>"),
                json!(""),
                json!("60m"),
                json!("Filesystem"),
            ]
        );
        let pending = json!({"metadata": meta("data"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path"},
            "status": {"phase": "Pending"}});
        let row = crate::cells("", "PersistentVolumeClaim", &pending, now());
        assert_eq!(
            row[1..6],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("local-path")
            ]
        );
        let bound = json!({"metadata": meta("data"),
            "spec": {"volumeName": "pv-1", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        let row = crate::cells("", "PersistentVolumeClaim", &bound, now());
        assert_eq!(row[2..5], [json!("pv-1"), json!("1Gi"), json!("RWO")]);
        assert_eq!(row[8], json!("Filesystem"));
    }

    #[test]
    fn resource_quota_splits_requests_and_limits() {
        let rq = json!({"metadata": meta("q"), "status": {
            "hard": {"pods": "10", "limits.memory": "2Gi", "requests.cpu": "1", "configmaps": "5"},
            "used": {"pods": "3", "limits.memory": "512Mi", "requests.cpu": "250m"}}});
        let row = crate::cells("", "ResourceQuota", &rq, now());
        assert_eq!(
            row[1],
            json!("configmaps: 0/5, pods: 3/10, requests.cpu: 250m/1")
        );
        assert_eq!(row[2], json!("limits.memory: 512Mi/2Gi"));
    }

    #[test]
    fn replication_controller_and_pod_template() {
        let rc = json!({"metadata": meta("rc"),
            "spec": {"replicas": 2, "selector": {"app": "x"},
                     "template": {"spec": {"containers": [{"name": "a", "image": "img:1"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            crate::cells("", "ReplicationController", &rc, now()),
            vec![
                json!("rc"),
                json!(2),
                json!(2),
                json!(1),
                json!("60m"),
                json!("a"),
                json!("img:1"),
                json!("app=x")
            ]
        );
        let pt = json!({"metadata": meta("pt"), "template": {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "a", "image": "i1"}, {"name": "b", "image": "i2"}]}}});
        assert_eq!(
            crate::cells("", "PodTemplate", &pt, now()),
            vec![json!("pt"), json!("a,b"), json!("i1,i2"), json!("app=x")]
        );
    }
}
