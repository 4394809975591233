//! Kinds of the remaining API groups: networking, rbac, storage, discovery,
//! coordination, certificates, scheduling, node, flowcontrol, admission,
//! apiregistration and apiextensions.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::core::load_balancer_ingress;
use crate::util::{
    age, arr_at, format_label_selector, get, int_at, list_with_more, name, opt_bool, opt_int, or,
    str_at,
};
use crate::{col, wide, Col, Printer, AGE, CREATED_AT_PRINTER, NAME};

pub(crate) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    let p = |cols: &'static [Col], cells: crate::CellFn| Some(Printer { cols, cells });
    match (group, kind) {
        ("coordination.k8s.io", "Lease") => p(LEASE, lease_cells),
        ("discovery.k8s.io", "EndpointSlice") => p(ENDPOINT_SLICE, endpoint_slice_cells),
        ("networking.k8s.io", "Ingress") => p(INGRESS, ingress_cells),
        ("networking.k8s.io", "IngressClass") => p(INGRESS_CLASS, ingress_class_cells),
        ("networking.k8s.io", "NetworkPolicy") => p(NETWORK_POLICY, network_policy_cells),
        ("networking.k8s.io", "ServiceCIDR") => p(SERVICE_CIDR, service_cidr_cells),
        ("networking.k8s.io", "IPAddress") => p(IP_ADDRESS, ip_address_cells),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => Some(CREATED_AT_PRINTER),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            p(ROLE_BINDING, role_binding_cells)
        }
        ("storage.k8s.io", "StorageClass") => p(STORAGE_CLASS, storage_class_cells),
        ("storage.k8s.io", "CSIDriver") => p(CSI_DRIVER, csi_driver_cells),
        ("storage.k8s.io", "CSINode") => p(CSI_NODE, csi_node_cells),
        ("storage.k8s.io", "VolumeAttachment") => p(VOLUME_ATTACHMENT, volume_attachment_cells),
        ("certificates.k8s.io", "CertificateSigningRequest") => p(CSR, csr_cells),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(CREATED_AT_PRINTER),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => p(WEBHOOK, webhook_cells),
        ("scheduling.k8s.io", "PriorityClass") => p(PRIORITY_CLASS, priority_class_cells),
        ("node.k8s.io", "RuntimeClass") => p(RUNTIME_CLASS, runtime_class_cells),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => p(FLOW_SCHEMA, flow_schema_cells),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            p(PRIORITY_LEVEL, priority_level_cells)
        }
        ("apiregistration.k8s.io", "APIService") => p(API_SERVICE, api_service_cells),
        ("events.k8s.io", "Event") => p(crate::core::EVENT, events_v1_cells),
        ("registry.mini.dev", "Repository") => p(REPOSITORY, repository_cells),
        ("registry.mini.dev", "ImageTag") => p(IMAGE_TAG, image_tag_cells),
        _ => None,
    }
}

/// events.k8s.io/v1 Events print like core Events once their fields are
/// mapped back (upstream converts both to the same internal type).
fn events_v1_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut core = serde_json::Map::new();
    let renames = [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
    ];
    for (from, to) in renames {
        if let Some(v) = get(obj, &[from]) {
            core.insert(to.to_string(), v.clone());
        }
    }
    crate::core::event_cells(&Value::Object(core), now)
}

const REPOSITORY: &[Col] = &[
    NAME,
    col(
        "Repository",
        "string",
        "The repository's name in the registry.",
    ),
    col("Tags", "integer", "How many tags the repository has."),
    col(
        "Size",
        "string",
        "Bytes of the blobs its manifests reference.",
    ),
    col(
        "Last Push",
        "date",
        "Time since the last push to the repository.",
    ),
];

fn repository_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "repository"])),
        Value::from(int_at(obj, &["status", "tags"])),
        Value::from(human_size(int_at(obj, &["status", "size"]))),
        Value::from(crate::util::since(
            str_at(obj, &["status", "lastPush"]),
            now,
        )),
    ]
}

const IMAGE_TAG: &[Col] = &[
    NAME,
    col(
        "Repository",
        "string",
        "The repository's name in the registry.",
    ),
    col("Tag", "string", "The tag."),
    col(
        "Digest",
        "string",
        "The digest of the manifest the tag names.",
    ),
    col(
        "Size",
        "string",
        "Bytes of the manifest, its config and its layers.",
    ),
    col("Pushed", "date", "Time since the tag was pushed."),
];

fn image_tag_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let digest = str_at(obj, &["status", "digest"]);
    // like `docker images`: the first 12 hex digits
    let short = digest
        .split_once(':')
        .map(|(_, hex)| hex.get(..12).unwrap_or(hex))
        .unwrap_or(digest);
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "repository"])),
        Value::from(str_at(obj, &["spec", "tag"])),
        Value::from(short),
        Value::from(human_size(int_at(obj, &["status", "size"]))),
        Value::from(crate::util::since(str_at(obj, &["status", "pushed"]), now)),
    ]
}

/// Bytes in binary units with one decimal (`512B`, `1.5KiB`, `200.0MiB`).
pub(crate) fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

const LEASE: &[Col] = &[
    NAME,
    col("Holder", "string", "The identity of the lease holder."),
    AGE,
];

fn lease_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "holderIdentity"])),
        age(obj, now),
    ]
}

const ENDPOINT_SLICE: &[Col] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "The type of address carried by this slice.",
    ),
    col("Ports", "string", "Network ports exposed by the endpoints."),
    col(
        "Endpoints",
        "string",
        "Addresses of the endpoints in this slice.",
    ),
    AGE,
];

fn endpoint_slice_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports: Vec<String> = arr_at(obj, &["ports"])
        .iter()
        .map(|p| match opt_int(p, &["port"]) {
            Some(n) => n.to_string(),
            None => get(p, &["name"])
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string(),
        })
        .collect();
    let addresses: Vec<String> = arr_at(obj, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        name(obj),
        Value::from(str_at(obj, &["addressType"])),
        Value::from(list_with_more(&ports, 3)),
        Value::from(list_with_more(&addresses, 3)),
        age(obj, now),
    ]
}

const INGRESS: &[Col] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

fn ingress_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - MAX)
    } else {
        joined
    }
}

fn ingress_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let class = get(obj, &["spec", "ingressClassName"])
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports = if arr_at(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        Value::from(class),
        Value::from(ingress_hosts(arr_at(obj, &["spec", "rules"]))),
        Value::from(load_balancer_ingress(get(obj, &["status", "loadBalancer"]))),
        Value::from(ports),
        age(obj, now),
    ]
}

const INGRESS_CLASS: &[Col] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

fn ingress_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = get(obj, &["spec", "parameters"]).map_or_else(
        || "<none>".to_string(),
        |p| {
            let mut s = str_at(p, &["kind"]).to_string();
            if let Some(g) = get(p, &["apiGroup"]).and_then(Value::as_str) {
                s = format!("{s}.{g}");
            }
            format!("{s}/{}", str_at(p, &["name"]))
        },
    );
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "controller"])),
        Value::from(parameters),
        age(obj, now),
    ]
}

const NETWORK_POLICY: &[Col] = &[
    NAME,
    col("Pod-Selector", "string", "The pods this policy applies to."),
    AGE,
];

fn network_policy_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // podSelector is a required struct upstream; absent behaves as empty.
    let sel = get(obj, &["spec", "podSelector"])
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    vec![
        name(obj),
        Value::from(format_label_selector(Some(&sel))),
        age(obj, now),
    ]
}

const SERVICE_CIDR: &[Col] = &[
    NAME,
    col("CIDRs", "string", "The IP ranges of this ServiceCIDR."),
    AGE,
];

fn service_cidr_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let cidrs: Vec<&str> = arr_at(obj, &["spec", "cidrs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![name(obj), Value::from(cidrs.join(",")), age(obj, now)]
}

const IP_ADDRESS: &[Col] = &[
    NAME,
    col(
        "ParentRef",
        "string",
        "The object this IP address is allocated to.",
    ),
];

fn ip_address_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let parent = get(obj, &["spec", "parentRef"]).map_or_else(
        || "<none>".to_string(),
        |p| {
            let resource = str_at(p, &["resource"]);
            let group = str_at(p, &["group"]);
            let mut s = if group.is_empty() {
                resource.to_lowercase()
            } else {
                format!("{resource}.{group}").to_lowercase()
            };
            let ns = str_at(p, &["namespace"]);
            if !ns.is_empty() {
                s = format!("{s}/{ns}");
            }
            format!("{s}/{}", str_at(p, &["name"]))
        },
    );
    vec![name(obj), Value::from(parent)]
}

const ROLE_BINDING: &[Col] = &[
    NAME,
    col("Role", "string", "The role this binding grants."),
    AGE,
    wide("Users", "string", "Users in the binding"),
    wide("Groups", "string", "Groups in the binding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the binding",
    ),
];

fn role_binding_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(obj, &["roleRef", "kind"]),
        str_at(obj, &["roleRef", "name"])
    );
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sas = Vec::new();
    for s in arr_at(obj, &["subjects"]) {
        let n = str_at(s, &["name"]);
        match str_at(s, &["kind"]) {
            "User" => users.push(n.to_string()),
            "Group" => groups.push(n.to_string()),
            "ServiceAccount" => sas.push(format!("{}/{n}", str_at(s, &["namespace"]))),
            _ => {}
        }
    }
    vec![
        name(obj),
        Value::from(role),
        age(obj, now),
        Value::from(users.join(", ")),
        Value::from(groups.join(", ")),
        Value::from(sas.join(", ")),
    ]
}

const STORAGE_CLASS: &[Col] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        "The volume plugin that provisions volumes of this class.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        "Reclaim policy of dynamically provisioned volumes.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "When volumes are provisioned and bound.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "Whether volumes of this class can be expanded.",
    ),
    AGE,
];

fn storage_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let annotation =
        |k: &str| get(obj, &["metadata", "annotations", k]).and_then(Value::as_str) == Some("true");
    let mut n = str_at(obj, &["metadata", "name"]).to_string();
    if annotation("storageclass.kubernetes.io/is-default-class")
        || annotation("storageclass.beta.kubernetes.io/is-default-class")
    {
        n.push_str(" (default)");
    }
    vec![
        Value::from(n),
        Value::from(str_at(obj, &["provisioner"])),
        Value::from(or(str_at(obj, &["reclaimPolicy"]), "Delete")),
        Value::from(or(str_at(obj, &["volumeBindingMode"]), "Immediate")),
        Value::from(opt_bool(obj, &["allowVolumeExpansion"]).unwrap_or(false)),
        age(obj, now),
    ]
}

const CSI_DRIVER: &[Col] = &[
    NAME,
    col(
        "AttachRequired",
        "boolean",
        "Whether the driver needs an attach operation.",
    ),
    col(
        "PodInfoOnMount",
        "boolean",
        "Whether pod information is passed on mount.",
    ),
    col(
        "StorageCapacity",
        "boolean",
        "Whether the driver reports storage capacity.",
    ),
    col(
        "TokenRequests",
        "string",
        "Audiences of service account tokens passed to the driver.",
    ),
    col(
        "RequiresRepublish",
        "boolean",
        "Whether NodePublishVolume is called periodically.",
    ),
    col(
        "Modes",
        "string",
        "Volume lifecycle modes supported by the driver.",
    ),
    AGE,
];

fn csi_driver_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let flag = |f: &str, default: bool| Value::from(opt_bool(obj, &["spec", f]).unwrap_or(default));
    let modes: Vec<&str> = arr_at(obj, &["spec", "volumeLifecycleModes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let tokens = get(obj, &["spec", "tokenRequests"])
        .and_then(Value::as_array)
        .map_or_else(
            || "<unset>".to_string(),
            |t| {
                t.iter()
                    .map(|r| str_at(r, &["audience"]))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        );
    vec![
        name(obj),
        flag("attachRequired", true),
        flag("podInfoOnMount", false),
        flag("storageCapacity", false),
        Value::from(tokens),
        flag("requiresRepublish", false),
        Value::from(or(&modes.join(","), "<none>")),
        age(obj, now),
    ]
}

const CSI_NODE: &[Col] = &[
    NAME,
    col(
        "Drivers",
        "integer",
        "Drivers indicates the number of CSI drivers registered on the node",
    ),
    AGE,
];

fn csi_node_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(arr_at(obj, &["spec", "drivers"]).len()),
        age(obj, now),
    ]
}

const VOLUME_ATTACHMENT: &[Col] = &[
    NAME,
    crate::Col {
        format: "name",
        ..col(
            "Attacher",
            "string",
            "The volume driver that attaches the volume.",
        )
    },
    col("PV", "string", "The persistent volume being attached."),
    col("Node", "string", "The node the volume is attached to."),
    col("Attached", "boolean", "Whether the volume is attached."),
    AGE,
];

fn volume_attachment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "attacher"])),
        Value::from(str_at(obj, &["spec", "source", "persistentVolumeName"])),
        Value::from(str_at(obj, &["spec", "nodeName"])),
        Value::from(opt_bool(obj, &["status", "attached"]).unwrap_or(false)),
        age(obj, now),
    ]
}

const CSR: &[Col] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "The signer requested to sign the certificate.",
    ),
    col("Requestor", "string", "The user that created the request."),
    col(
        "RequestedDuration",
        "string",
        "The requested validity of the certificate.",
    ),
    col(
        "Condition",
        "string",
        "Approval and issuance state of the request.",
    ),
];

fn csr_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let conditions = arr_at(obj, &["status", "conditions"]);
    let has = |t: &str| conditions.iter().any(|c| str_at(c, &["type"]) == t);
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(obj, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    let duration = opt_int(obj, &["spec", "expirationSeconds"])
        .map_or_else(|| "<none>".to_string(), crate::human_duration);
    vec![
        name(obj),
        age(obj, now),
        Value::from(or(str_at(obj, &["spec", "signerName"]), "<none>")),
        Value::from(str_at(obj, &["spec", "username"])),
        Value::from(duration),
        Value::from(status),
    ]
}

const WEBHOOK: &[Col] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    AGE,
];

fn webhook_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(arr_at(obj, &["webhooks"]).len()),
        age(obj, now),
    ]
}

const PRIORITY_CLASS: &[Col] = &[
    NAME,
    col(
        "Value",
        "integer",
        "The priority value of pods using this class.",
    ),
    col(
        "Global-Default",
        "boolean",
        "Whether this is the default priority class.",
    ),
    AGE,
    wide(
        "PreemptionPolicy",
        "string",
        "Whether pods of this class may preempt others.",
    ),
];

fn priority_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(int_at(obj, &["value"])),
        Value::from(opt_bool(obj, &["globalDefault"]).unwrap_or(false)),
        age(obj, now),
        Value::from(str_at(obj, &["preemptionPolicy"])),
    ]
}

const RUNTIME_CLASS: &[Col] = &[
    NAME,
    col("Handler", "string", "The CRI handler for this class."),
    AGE,
];

fn runtime_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["handler"])),
        age(obj, now),
    ]
}

const FLOW_SCHEMA: &[Col] = &[
    NAME,
    col(
        "PriorityLevel",
        "string",
        "The priority level requests are assigned to.",
    ),
    col(
        "MatchingPrecedence",
        "string",
        "Lower values are matched first.",
    ),
    col(
        "DistinguisherMethod",
        "string",
        "How flows are distinguished.",
    ),
    AGE,
    col(
        "MissingPL",
        "string",
        "references a broken or non-existent PriorityLevelConfiguration",
    ),
];

fn flow_schema_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let dangling = arr_at(obj, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Dangling")
        .map_or("?", |c| str_at(c, &["status"]));
    let method =
        get(obj, &["spec", "distinguisherMethod"]).map_or("<none>", |m| str_at(m, &["type"]));
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "priorityLevelConfiguration", "name"])),
        Value::from(int_at(obj, &["spec", "matchingPrecedence"])),
        Value::from(method),
        age(obj, now),
        Value::from(dangling),
    ]
}

const PRIORITY_LEVEL: &[Col] = &[
    NAME,
    col("Type", "string", "Exempt or Limited."),
    col(
        "NominalConcurrencyShares",
        "string",
        "Share of the server's concurrency limit.",
    ),
    col("Queues", "string", "Number of queues."),
    col(
        "HandSize",
        "string",
        "Number of queues a flow is shuffle-sharded onto.",
    ),
    col(
        "QueueLengthLimit",
        "string",
        "Maximum requests waiting in one queue.",
    ),
    AGE,
];

fn priority_level_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let none = || Value::from("<none>");
    let (mut ncs, mut queues, mut hand, mut limit) = (none(), none(), none(), none());
    if let Some(limited) = get(obj, &["spec", "limited"]) {
        ncs = Value::from(int_at(limited, &["nominalConcurrencyShares"]));
        if let Some(q) = get(limited, &["limitResponse", "queuing"]) {
            queues = Value::from(int_at(q, &["queues"]));
            hand = Value::from(int_at(q, &["handSize"]));
            limit = Value::from(int_at(q, &["queueLengthLimit"]));
        }
    }
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "type"])),
        ncs,
        queues,
        hand,
        limit,
        age(obj, now),
    ]
}

const API_SERVICE: &[Col] = &[
    NAME,
    col(
        "Service",
        "string",
        "The reference to the service that hosts this API endpoint.",
    ),
    col("Available", "string", "Whether this service is available."),
    AGE,
];

fn api_service_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let service = get(obj, &["spec", "service"]).map_or_else(
        || "Local".to_string(),
        |s| format!("{}/{}", str_at(s, &["namespace"]), str_at(s, &["name"])),
    );
    let available = arr_at(obj, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Available")
        .map_or_else(
            || "Unknown".to_string(),
            |c| {
                let status = str_at(c, &["status"]);
                let reason = str_at(c, &["reason"]);
                if status != "True" && !reason.is_empty() {
                    format!("{status} ({reason})")
                } else {
                    status.to_string()
                }
            },
        );
    vec![
        name(obj),
        Value::from(service),
        Value::from(available),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::parse_time;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "creationTimestamp": "2024-05-01T11:58:30Z"})
    }

    #[test]
    fn events_v1_maps_to_core_event_row() {
        let ev = json!({"metadata": meta("web.1"), "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up", "reason": "ScalingReplicaSet", "type": "Normal",
            "eventTime": "2024-05-01T11:59:00.000000Z", "reportingController": "deployment-controller",
            "reportingInstance": "server-1"});
        assert_eq!(
            crate::cells("events.k8s.io", "Event", &ev, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller, server-1"),
                json!("Scaled up"),
                json!("60s"),
                json!(1),
                json!("web.1"),
            ]
        );
    }

    #[test]
    fn lease_and_endpoint_slice() {
        let lease =
            json!({"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "server-1_abc"}});
        assert_eq!(
            crate::cells("coordination.k8s.io", "Lease", &lease, now()),
            vec![json!("kube-scheduler"), json!("server-1_abc"), json!("90s")]
        );
        let slice = json!({"metadata": meta("web-x1"), "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "metrics"}, {}],
            "endpoints": [{"addresses": ["10.42.0.1"]}, {"addresses": ["10.42.0.2"]},
                          {"addresses": ["10.42.0.3"]}, {"addresses": ["10.42.0.4"]}]});
        assert_eq!(
            crate::cells("discovery.k8s.io", "EndpointSlice", &slice, now()),
            vec![
                json!("web-x1"),
                json!("IPv4"),
                json!("80,metrics,*"),
                json!("10.42.0.1,10.42.0.2,10.42.0.3 + 1 more..."),
                json!("90s"),
            ]
        );
        let empty = json!({"addressType": "IPv4"});
        let row = crate::cells("discovery.k8s.io", "EndpointSlice", &empty, now());
        assert_eq!(row[2..4], [json!("<unset>"), json!("<unset>")]);
    }

    #[test]
    fn ingress_class_hosts_address_ports() {
        let ing = json!({"metadata": meta("web"),
            "spec": {"ingressClassName": "traefik", "tls": [{"hosts": ["a.example.com"]}],
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}});
        assert_eq!(
            crate::cells("networking.k8s.io", "Ingress", &ing, now()),
            vec![
                json!("web"),
                json!("traefik"),
                json!("a.example.com,b.example.com"),
                json!("192.168.1.10"),
                json!("80, 443"),
                json!("90s"),
            ]
        );
        let bare = json!({"spec": {"rules": [{}]}});
        let row = crate::cells("networking.k8s.io", "Ingress", &bare, now());
        assert_eq!(
            row[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );
        let many = json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {"host": "e"}]}});
        assert_eq!(
            crate::cells("networking.k8s.io", "Ingress", &many, now())[2],
            json!("a,b,c + 2 more...")
        );
    }

    #[test]
    fn ingress_class_and_network_policy() {
        let ic = json!({"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            crate::cells("networking.k8s.io", "IngressClass", &ic, now())[1..3],
            [
                json!("k8s.io/ingress-nginx"),
                json!("IngressParameters.k8s.example.com/p")
            ]
        );
        let np = json!({"metadata": meta("deny"), "spec": {"podSelector": {}}});
        assert_eq!(
            crate::cells("networking.k8s.io", "NetworkPolicy", &np, now())[1],
            json!("<none>")
        );
        let np = json!({"spec": {"podSelector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["b", "a"]}], "matchLabels": {"app": "web"}}}});
        assert_eq!(
            crate::cells("networking.k8s.io", "NetworkPolicy", &np, now())[1],
            json!("app=web,tier in (a,b)")
        );
    }

    #[test]
    fn role_binding_role_and_subjects() {
        let rb = json!({"metadata": meta("view-all"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                         {"kind": "Group", "name": "devs"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]});
        assert_eq!(
            crate::cells(
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                &rb,
                now()
            ),
            vec![
                json!("view-all"),
                json!("ClusterRole/view"),
                json!("90s"),
                json!("alice, bob"),
                json!("devs"),
                json!("tools/ci"),
            ]
        );
        assert_eq!(
            crate::columns("rbac.authorization.k8s.io", "RoleBinding").len(),
            6
        );
    }

    #[test]
    fn storage_class_default_marker_and_defaults() {
        let sc = json!({"metadata": {"name": "local-path", "creationTimestamp": "2024-05-01T11:58:30Z",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true});
        assert_eq!(
            crate::cells("storage.k8s.io", "StorageClass", &sc, now()),
            vec![
                json!("local-path (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(true),
                json!("90s"),
            ]
        );
        let bare = json!({"metadata": {"name": "x"}, "provisioner": "p"});
        assert_eq!(
            crate::cells("storage.k8s.io", "StorageClass", &bare, now())[..5],
            [
                json!("x"),
                json!("p"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
    }

    #[test]
    fn csr_condition_and_duration() {
        let csr = json!({"metadata": meta("node-csr-1"),
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "username": "system:node:agent-1", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}});
        assert_eq!(
            crate::cells(
                "certificates.k8s.io",
                "CertificateSigningRequest",
                &csr,
                now()
            ),
            vec![
                json!("node-csr-1"),
                json!("90s"),
                json!("kubernetes.io/kube-apiserver-client-kubelet"),
                json!("system:node:agent-1"),
                json!("24h"),
                json!("Approved,Issued"),
            ]
        );
        let pending = json!({"spec": {"username": "u"}});
        let row = crate::cells(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &pending,
            now(),
        );
        assert_eq!(
            row[2..],
            [
                json!("<none>"),
                json!("u"),
                json!("<none>"),
                json!("Pending")
            ]
        );
    }

    #[test]
    fn api_service_local_and_remote() {
        let local = json!({"metadata": meta("v1.apps"), "spec": {},
            "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]}});
        assert_eq!(
            crate::cells("apiregistration.k8s.io", "APIService", &local, now()),
            vec![
                json!("v1.apps"),
                json!("Local"),
                json!("True"),
                json!("90s")
            ]
        );
        let remote = json!({"spec": {"service": {"namespace": "kube-system", "name": "metrics-server"}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]}});
        assert_eq!(
            crate::cells("apiregistration.k8s.io", "APIService", &remote, now())[1..3],
            [
                json!("kube-system/metrics-server"),
                json!("False (MissingEndpoints)")
            ]
        );
    }

    #[test]
    fn priority_class_webhooks_runtime_class() {
        let pc = json!({"metadata": meta("system-cluster-critical"), "value": 2000000000,
            "preemptionPolicy": "PreemptLowerPriority"});
        assert_eq!(
            crate::cells("scheduling.k8s.io", "PriorityClass", &pc, now()),
            vec![
                json!("system-cluster-critical"),
                json!(2000000000),
                json!(false),
                json!("90s"),
                json!("PreemptLowerPriority"),
            ]
        );
        let wh = json!({"metadata": meta("hooks"), "webhooks": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(
            crate::cells(
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                &wh,
                now()
            )[1],
            json!(2)
        );
        let rc = json!({"metadata": meta("nvidia"), "handler": "nvidia"});
        assert_eq!(
            crate::cells("node.k8s.io", "RuntimeClass", &rc, now())[1],
            json!("nvidia")
        );
    }
}

#[cfg(test)]
mod registry_printer_tests {
    use super::*;

    #[test]
    fn human_size_picks_binary_units() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1536), "1.5KiB");
        assert_eq!(human_size(200 * 1024 * 1024), "200.0MiB");
    }

    #[test]
    fn image_tag_cells_shorten_the_digest() {
        let obj = serde_json::json!({
            "metadata": {"name": "app:v1"},
            "spec": {"repository": "default/app", "tag": "v1"},
            "status": {"digest": format!("sha256:{}", "ab".repeat(32)), "size": 2048},
        });
        let cells = image_tag_cells(&obj, Utc::now());
        assert_eq!(cells[3], "abababababab");
        assert_eq!(cells[4], "2.0KiB");
    }
}
